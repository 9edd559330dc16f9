"""The pure core: resolved services and CI facts in, a build plan out.

A plan says, for every stage of every service, which target to build, which caches to read (in priority
order) and write, which tags to push, and the exact ``docker buildx build`` arguments. It does no I/O
except the injected ``exists`` check for local cache directories, so it is printed by ``plan`` and tested
without Docker.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ci import slugify
from .config import BuilderConfig, LocalCache, RegistryCache, S3Cache, Settings
from .errors import ConfigError
from .resolve import ResolvedService

CACHE_ONLY: Mapping[str, str] = {"type": "cacheonly"}


@dataclass(frozen=True)
class BuildOptions:
    """What the person asked for on the command line."""

    services: tuple[str, ...] = ()
    stage: str | None = None
    no_cache: bool = False
    push: bool = True
    cache_write: bool | None = None
    """None: follow settings.cache_write; True/False: the --cache-write/--no-cache-write flags."""


@dataclass(frozen=True)
class BuilderPlan:
    name: str
    driver: str
    driver_opts: Mapping[str, str]
    endpoint: str | None
    platforms: tuple[str, ...]
    ephemeral: bool

    @property
    def creatable(self) -> bool:
        """The docker driver has exactly one builder per Docker context; it cannot be created."""
        return self.driver != "docker"

    def create_argv(self) -> list[str]:
        argv = ["buildx", "create", "--name", self.name, "--driver", self.driver]
        for key, value in self.driver_opts.items():
            argv += ["--driver-opt", f"{key}={value}"]
        if self.platforms:
            argv += ["--platform", ",".join(self.platforms)]
        if self.endpoint:
            argv.append(self.endpoint)
        return argv


@dataclass(frozen=True)
class LocalSwap:
    """A local cache is exported to ``incoming`` and swapped into ``final`` only after a good export."""

    incoming: str
    final: str


@dataclass(frozen=True)
class S3Step:
    """Restore a stage's snapshot from S3 before the build, save the export after it."""

    store: str
    restore_keys: tuple[str, ...]
    restore_dir: str
    save_name: str | None
    export_dir: str
    refused: str | None = None
    """Why this build may not save (an untrusted branch and a shared key), shown in the plan."""


@dataclass(frozen=True)
class StageBuild:
    service: str
    stage: str
    target: str | None
    final: bool
    context: str
    dockerfile: str
    build_args: Mapping[str, str]
    cache_from: tuple[Mapping[str, str], ...]
    cache_to: Mapping[str, str] | None
    tags: tuple[str, ...]
    push: bool
    load: bool
    output: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    local_swap: LocalSwap | None = None
    s3: S3Step | None = None
    write_refused: str | None = None
    """Why this build writes no cache although writes are on (an untrusted branch and a shared ref)."""

    def argv(self, builder: str, metadata_file: str = "<metadata file>") -> list[str]:
        """The ``docker buildx build`` arguments, in the order python-on-whales passes them."""
        argv = ["buildx", "build", "--progress", "rawjson"]
        for key, value in self.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        argv += ["--builder", builder]
        if self.push:
            argv.append("--push")
        if self.load:
            argv.append("--load")
        argv += ["--metadata-file", metadata_file, "--file", self.dockerfile]
        if self.target:
            argv += ["--target", self.target]
        for source in self.cache_from:
            argv += ["--cache-from", format_attrs(source)]
        if self.cache_to:
            argv += ["--cache-to", format_attrs(self.cache_to)]
        if self.output:
            argv += ["--output", format_attrs(self.output)]
        if self.no_cache:
            argv.append("--no-cache")
        for tag in self.tags:
            argv += ["--tag", tag]
        argv.append(self.context)
        return argv


@dataclass(frozen=True)
class ServicePlan:
    name: str
    builds: tuple[StageBuild, ...]
    image: str | None
    metadata_key: str | None
    store: str


@dataclass(frozen=True)
class Plan:
    builder: BuilderPlan
    services: tuple[ServicePlan, ...]
    commit: str
    branch: str
    default_branch: str
    cache_write: bool
    cache_write_reason: str
    cache_errors: str
    logins: tuple[tuple[str, str], ...] = ()
    """Registries logged in to before building: (host, user name); passwords are never part of a plan."""

    def to_json(self) -> dict[str, Any]:
        return {
            "builder": {
                "name": self.builder.name,
                "driver": self.builder.driver,
                "ephemeral": self.builder.ephemeral,
                "create": self.builder.create_argv() if self.builder.creatable else None,
            },
            "commit": self.commit,
            "branch": self.branch,
            "default_branch": self.default_branch,
            "cache_write": self.cache_write,
            "cache_write_reason": self.cache_write_reason,
            "cache_errors": self.cache_errors,
            "logins": [{"registry": h, "username": u} for h, u in self.logins],
            "services": [
                {
                    "name": s.name,
                    "image": s.image,
                    "store": s.store,
                    "builds": [
                        {
                            "stage": b.stage,
                            "target": b.target,
                            "final": b.final,
                            "tags": list(b.tags),
                            "push": b.push,
                            "cache_from": [dict(c) for c in b.cache_from],
                            "cache_to": dict(b.cache_to) if b.cache_to else None,
                            "write_refused": b.write_refused,
                            "s3": None
                            if b.s3 is None
                            else {
                                "store": b.s3.store,
                                "restore_keys": list(b.s3.restore_keys),
                                "save": b.s3.save_name,
                                "refused": b.s3.refused,
                            },
                            "argv": ["docker", *b.argv(self.builder.name)],
                        }
                        for b in s.builds
                    ],
                }
                for s in self.services
            ],
        }


def format_attrs(attrs: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in attrs.items())


def _bool(value: bool) -> str:
    return "true" if value else "false"


def cache_write_decision(settings: Settings, options: BuildOptions, on_ci: bool, local_store: bool) -> tuple[bool, str]:
    """Whether this run writes caches, and why (shown in the plan)."""
    if options.cache_write is False:
        return False, "--no-cache-write"
    if settings.cache_write == "never":
        return False, "settings.cache_write = 'never'"
    if options.cache_write:
        return True, "--cache-write"
    if settings.cache_write == "always":
        return True, "settings.cache_write = 'always'"
    if local_store:
        return True, "local cache store"
    if on_ci:
        return True, "running in CI"
    return False, "not in CI (a laptop reads shared caches; pass --cache-write to write)"


def may_write_shared(branch: str, default_branch: str, settings: Settings) -> bool:
    """Only the default branch (and explicitly trusted branches) write the cache other branches read."""
    return branch == default_branch or any(fnmatch.fnmatchcase(branch, p) for p in settings.trusted_branches)


@dataclass(frozen=True)
class PlanInputs:
    """Everything the planner needs, gathered by the caller."""

    services: tuple[ResolvedService, ...]
    builder: BuilderConfig
    settings: Settings
    root: Path
    commit: str
    branch: str
    default_branch: str
    on_ci: bool
    job_id: str | None = None
    pipeline: str = "pipeline"
    cache_dir: Path = Path(".dockercache")
    """Where S3 stores keep their local blob pool, restores and exports."""


def make_plan(inputs: PlanInputs, options: BuildOptions, exists: Callable[[str], bool] = os.path.isdir) -> Plan:
    default_branch = inputs.settings.default_branch or inputs.default_branch
    branch_slug = slugify(inputs.branch)
    default_slug = slugify(default_branch)
    writes_shared = may_write_shared(inputs.branch, default_branch, inputs.settings)
    local_only = all(isinstance(s.store, LocalCache) for s in inputs.services)
    cache_write, reason = cache_write_decision(inputs.settings, options, inputs.on_ci, local_only)
    builder_name = inputs.builder.name
    if inputs.builder.ephemeral:
        builder_name = f"{builder_name}-{slugify(inputs.job_id or str(os.getpid()), 40)}"
    builder = BuilderPlan(
        name=builder_name,
        driver=inputs.builder.driver,
        driver_opts=inputs.builder.driver_opts,
        endpoint=inputs.builder.endpoint,
        platforms=inputs.builder.platforms,
        ephemeral=inputs.builder.ephemeral,
    )
    keys = KeyContext(inputs.pipeline, inputs.commit, branch_slug, default_slug, writes_shared)
    services = []
    for svc in inputs.services:
        stages = svc.stages
        if options.stage is not None:
            if options.stage not in stages:
                raise ConfigError(
                    f"--stage: service '{svc.name}' has no stage '{options.stage}' (stages: {', '.join(stages)})"
                )
            stages = stages[: stages.index(options.stage) + 1]
        builds = []
        for index, stage in enumerate(stages):
            final = stage == svc.stages[-1]
            target = svc.final_target if final else stage
            cache_from, cache_to, swap, s3, refused = _caches(
                svc, stages[: index + 1], keys, cache_write, inputs.root, inputs.cache_dir, exists
            )
            tags: tuple[str, ...] = ()
            push = load = False
            output: Mapping[str, str] = {}
            image = svc.image or svc.name
            tag_names = svc.tags or (inputs.commit,)
            if final:
                tags = tuple(f"{image}:{t}" for t in tag_names)
            elif stage in svc.push_stages:
                tags = tuple(f"{image}:{svc.stage_tag.format(stage=stage, tag=t)}" for t in tag_names)
            if tags:
                push = bool(svc.image) and options.push
                load = not push
            else:
                output = CACHE_ONLY
            builds.append(
                StageBuild(
                    service=svc.name,
                    stage=stage,
                    target=target,
                    final=final,
                    context=str(svc.context),
                    dockerfile=str(svc.dockerfile),
                    build_args=svc.args,
                    cache_from=cache_from,
                    cache_to=cache_to,
                    tags=tags,
                    push=push,
                    load=load,
                    output=output,
                    no_cache=options.no_cache,
                    local_swap=swap,
                    s3=s3,
                    write_refused=refused,
                )
            )
        services.append(
            ServicePlan(
                name=svc.name,
                builds=tuple(builds),
                image=svc.image,
                metadata_key=svc.metadata_key,
                store=svc.store_name or "built-in local",
            )
        )
    return Plan(
        builder=builder,
        services=tuple(services),
        commit=inputs.commit,
        branch=inputs.branch,
        default_branch=default_branch,
        cache_write=cache_write,
        cache_write_reason=reason,
        cache_errors=inputs.settings.cache_errors,
    )


def registry_ref(store: RegistryCache, service: str, stage: str, branch_slug: str) -> str:
    repo = store.ref.format(service=service)
    tag = slugify(store.tag.format(service=service, stage=stage, branch=branch_slug), 128)
    return f"{repo}:{tag}"


@dataclass(frozen=True)
class KeyContext:
    pipeline: str
    commit: str
    branch: str
    default_branch: str
    writes_shared: bool


def snapshot_key(template: str, pipeline: str, branch: str, commit: str) -> str:
    return template.format(pipeline=pipeline, branch=branch, commit=commit)


def s3_local_root(store: S3Cache, cache_dir: Path) -> Path:
    base = Path(store.local_dir) if store.local_dir else cache_dir
    return base / "s3" / store.bucket / (store.prefix.strip("/").replace("/", "_") or "_")


Caches = tuple[tuple[Mapping[str, str], ...], Mapping[str, str] | None, LocalSwap | None, S3Step | None, str | None]
"""Sources, sink, local swap, S3 step, and why a write was refused (None: not refused)."""


def _caches(
    svc: ResolvedService,
    stages: Sequence[str],
    keys: KeyContext,
    cache_write: bool,
    root: Path,
    cache_dir: Path,
    exists: Callable[[str], bool],
) -> Caches:
    """Cache sources (this stage first, then earlier stages; this branch before the default) and sink."""
    store = svc.store
    stage = stages[-1]
    sources: list[Mapping[str, str]] = []
    sink: Mapping[str, str] | None = None
    if isinstance(store, RegistryCache):
        refs: list[str] = []
        for s in reversed(stages):
            refs.append(registry_ref(store, svc.name, s, keys.branch))
            refs.append(registry_ref(store, svc.name, s, keys.default_branch))
        refs += [r.format(service=svc.name, stage=stage) for r in store.extra_from]
        sources = [{"type": "registry", "ref": r} for r in dict.fromkeys(refs)]
        write_ref = registry_ref(store, svc.name, stage, keys.default_branch if keys.writes_shared else keys.branch)
        if cache_write and not keys.writes_shared:
            # Whatever the tag template says, an untrusted branch never writes a ref the default branch reads.
            shared_refs = {registry_ref(store, svc.name, s, keys.default_branch) for s in stages}
            shared_refs |= {r.format(service=svc.name, stage=stage) for r in store.extra_from}
            if write_ref in shared_refs:
                refusal = f"'{write_ref}' is read by the default branch; branch '{keys.branch}' may not write it"
                return tuple(sources), None, None, None, refusal
        if cache_write:
            sink = {
                "type": "registry",
                "ref": write_ref,
                "mode": store.mode,
                "image-manifest": _bool(store.image_manifest),
                "oci-mediatypes": _bool(store.oci_mediatypes),
                "compression": store.compression,
                "ignore-error": "true",
            }
            if store.force_compression:
                sink = {**sink, "force-compression": "true"}
        return tuple(sources), sink, None, None, None
    if isinstance(store, S3Cache):
        return _s3_caches(svc, store, stages, keys, cache_write, cache_dir)
    base = (root / store.path / svc.name).resolve()
    for s in reversed(stages):
        directory = str(base / s)
        if exists(directory):
            sources.append({"type": "local", "src": directory})
    if not cache_write:
        return tuple(sources), None, None, None, None
    final = str(base / stage)
    swap = LocalSwap(incoming=f"{final}.incoming", final=final)
    sink = {
        "type": "local",
        "dest": swap.incoming,
        "mode": store.mode,
        "compression": store.compression,
        "ignore-error": "true",
    }
    return tuple(sources), sink, swap, None, None


def _s3_caches(
    svc: ResolvedService,
    store: S3Cache,
    stages: Sequence[str],
    keys: KeyContext,
    cache_write: bool,
    cache_dir: Path,
) -> Caches:
    stage = stages[-1]

    def key(template: str, branch: str) -> str:
        return snapshot_key(template, keys.pipeline, branch, keys.commit)

    restore_keys = tuple(
        dict.fromkeys(
            [
                *(key(t, keys.branch) for t in store.cache_from),
                key(store.key, keys.branch),
                key(store.key, keys.default_branch),
            ]
        )
    )
    save: str | None = key(store.key, keys.default_branch if keys.writes_shared else keys.branch)
    # Keys the default branch reads: an untrusted branch never writes them, whatever the templates say.
    # (A per-commit key is not among them: the default branch reads its own commits' keys.)
    protected = {key(t, keys.default_branch) for t in (store.key, *store.cache_from) if "{commit}" not in t}
    refused = None
    if not keys.writes_shared and save in protected:
        refused = f"'{save}' is read by the default branch; branch '{keys.branch}' may not write it"
        save = None
    if store.native:
        attrs = {"type": "s3", "bucket": store.bucket, "prefix": f"{store.prefix.strip('/')}/native/"}
        if store.region:
            attrs["region"] = store.region
        if store.endpoint_url:
            attrs["endpoint_url"] = store.endpoint_url
            attrs["use_path_style"] = "true"
        sources = tuple({**attrs, "name": f"{k}/{svc.name}/{s}"} for s in reversed(stages) for k in restore_keys)
        sink = None
        if cache_write and save:
            sink = {
                **attrs,
                "name": f"{save}/{svc.name}/{stage}",
                "mode": store.mode,
                "compression": store.compression,
                "ignore-error": "true",
            }
        return sources, sink, None, None, refused
    local = s3_local_root(store, cache_dir)
    restore_dir = local / "restore" / svc.name
    local_sources = tuple({"type": "local", "src": str(restore_dir / s)} for s in reversed(stages))
    export_dir = local / "export" / svc.name / stage
    local_sink: Mapping[str, str] | None = None
    if cache_write and save:
        local_sink = {
            "type": "local",
            "dest": str(export_dir),
            "mode": store.mode,
            "compression": store.compression,
            "ignore-error": "true",
        }
    step = S3Step(
        store=svc.store_name or "s3",
        restore_keys=restore_keys,
        restore_dir=str(restore_dir / stage),
        save_name=f"{save}/{svc.name}/{stage}" if local_sink else None,
        export_dir=str(export_dir),
        refused=refused,
    )
    return local_sources, local_sink, None, step, refused
