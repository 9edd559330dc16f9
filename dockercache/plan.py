"""The pure core: resolved services and CI facts in, a build plan out.

A plan is one bake definition: a target per (service, stage) with its context, Dockerfile, Dockerfile target,
args, tags, output (push, load or cache only) and its cache entries; a group per service and a default group
hold the targets ``build`` runs. ``build`` runs the default group as ``docker buildx bake`` in one BuildKit
session, where targets run concurrently as their graph allows and the vertices they share are solved once;
``plan --bake`` prints the same file.

Which targets run: the service's *leaves*, the stages no other selected stage builds on (the final image and,
say, a test stage beside it), plus stages whose image is pushed. A stage that a leaf builds on is built
inside that leaf, and its layers are in the leaf's ``mode=max`` cache. Running it as a target of its own
costs a second cache export and, on BuildKit 0.13, makes the leaves miss their own caches: the short job ends
first and cancels lazy cache records the leaf shares with it (seen in 40% of fresh-agent builds of
examples/ruby; 0% with leaves only). Its target stays in the file (``docker buildx bake -f FILE ruby-deps``).

Planning does no I/O except the injected ``exists`` check for local cache directories.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .ci import slugify
from .config import BuilderConfig, CacheStore, LocalCache, S3Cache, Settings
from .errors import ConfigError
from .reference import TAG
from .resolve import ResolvedService
from .stores import CacheEntry, CacheRequest, Keys, TargetCaches, kind_for, may_write_shared

Output = Literal["push", "load", "cacheonly"]
#: How each output is written in a bake file (the image exporter with push, the docker exporter, none).
BAKE_OUTPUT: Mapping[str, str] = {"push": "type=registry", "load": "type=docker", "cacheonly": "type=cacheonly"}
BAKE_FILE = "<bake file>"
METADATA_FILE = "<metadata file>"


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
    buildkitd_config: str | None = None
    """buildkitd.toml for a builder dockercache creates (the S3 store's endpoint as a plain-HTTP registry)."""

    @property
    def creatable(self) -> bool:
        """The docker driver has exactly one builder per Docker context; it cannot be created."""
        return self.driver != "docker"

    def create_argv(self, config_file: str = "BUILDKITD.toml") -> list[str]:
        """``docker buildx create`` for this builder; ``config_file`` holds :attr:`buildkitd_config`."""
        argv = ["buildx", "create", "--name", self.name, "--driver", self.driver]
        for key, value in self.driver_opts.items():
            argv += ["--driver-opt", f"{key}={value}"]
        if self.buildkitd_config is not None:
            argv += ["--buildkitd-config", config_file]
        if self.platforms:
            argv += ["--platform", ",".join(self.platforms)]
        if self.endpoint:
            argv.append(self.endpoint)
        return argv


def endpoint_builder(builder: BuilderPlan, stores: Sequence[CacheStore]) -> BuilderPlan:
    """A docker-container builder that must reach the S3 store's endpoint on the agent's loopback: host
    networking, and buildkitd.toml naming the endpoint's addresses as plain-HTTP registries."""
    from .stores.s3 import CONTAINER_PORTS

    lazy = [s for s in stores if isinstance(s, S3Cache) and not s.native]
    if builder.driver != "docker-container" or not lazy:
        return builder
    hosts = dict.fromkeys(s.listen or "" for s in lazy)
    addresses = [h for h in hosts if h] + ([f"127.0.0.1:{p}" for p in CONTAINER_PORTS] if "" in hosts else [])
    config = "".join(f'[registry."{a}"]\n  http = true\n  insecure = true\n\n' for a in addresses)
    return dataclasses.replace(
        builder,
        driver_opts={"network": "host", **builder.driver_opts},
        buildkitd_config=config,
    )


@dataclass(frozen=True)
class Target:
    """One bake target: a service's stage, built with its caches."""

    name: str
    """The bake target's name, ``<service>-<stage>`` (characters bake does not accept become ``_``)."""
    service: str
    stage: str
    """The Dockerfile stage's label (its name, or ``stage-N`` for an unnamed last stage)."""
    dockerfile_target: str | None
    """``target`` in the bake file (None: the Dockerfile's last stage, which has no name)."""
    final: bool
    context: str
    dockerfile: str
    args: Mapping[str, str]
    tags: tuple[str, ...]
    output: Output
    caches: TargetCaches
    graph: tuple[str, ...]
    """Every Dockerfile stage this target builds (itself included), in Dockerfile order."""
    identity: str
    """Targets with the same identity (context, Dockerfile, args) share their steps."""
    no_cache: bool = False
    runs: bool = True
    """In the default group: ``build`` runs it (a leaf, or a stage whose image is pushed)."""
    built_by: str = ""
    """The running target that builds this stage: itself, or the first leaf that builds on it."""

    @property
    def cache_from(self) -> tuple[CacheEntry, ...]:
        return self.caches.sources

    @property
    def cache_to(self) -> CacheEntry | None:
        return self.caches.sink

    @property
    def push(self) -> bool:
        return self.output == "push"

    def bake(self) -> dict[str, Any]:
        """This target as bake's JSON file format has it."""
        out: dict[str, Any] = {"context": self.context, "dockerfile": self.dockerfile}
        if self.dockerfile_target:
            out["target"] = self.dockerfile_target
        if self.args:
            out["args"] = dict(self.args)
        if self.tags:
            out["tags"] = list(self.tags)
        if self.caches.sources:
            out["cache-from"] = [e.encode() for e in self.caches.sources]
        if self.caches.sink:
            out["cache-to"] = [self.caches.sink.encode()]
        out["output"] = [BAKE_OUTPUT[self.output]]
        if self.no_cache:
            out["no-cache"] = True
        return {key: _literal(value) for key, value in out.items()}

    def to_json(self) -> dict[str, Any]:
        step = self.caches.step
        return {
            "name": self.name,
            "stage": self.stage,
            "target": self.dockerfile_target,
            "final": self.final,
            "graph": list(self.graph),
            "tags": list(self.tags),
            "output": self.output,
            "cache_from": [e.encode() for e in self.caches.sources],
            "cache_to": self.caches.sink.encode() if self.caches.sink else None,
            "write_refused": self.caches.refused,
            "runs": self.runs,
            "built_by": self.built_by,
            "store": {"name": self.caches.store, "kind": self.caches.kind, **(step.to_json() if step else {})},
        }


def _literal(value: Any) -> Any:
    """Strings as bake reads them literally: a bake file's strings are HCL templates, where ``${`` and ``%{``
    start an expression (a context path or build arg holding ``${HOME}`` would be expanded, or fail)."""
    if isinstance(value, str):
        return value.replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ServicePlan:
    name: str
    targets: tuple[Target, ...]
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
    bake_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Environment of the bake process beyond dockercache's own (``AWS_PROFILE`` for a native S3 store: buildx
    resolves the AWS credential chain itself and hands BuildKit the keys for ``type=s3``)."""

    @property
    def targets(self) -> tuple[Target, ...]:
        """Every (service, stage) of the plan, in order: services as given, stages in Dockerfile order."""
        return tuple(t for s in self.services for t in s.targets)

    @property
    def running(self) -> tuple[Target, ...]:
        """The targets ``build`` runs (the default group)."""
        return tuple(t for t in self.targets if t.runs)

    def bake_definition(self) -> dict[str, Any]:
        """The bake file ``build`` runs: every target; the default group and a group per service hold the
        targets that run."""
        groups = {"default": {"targets": [t.name for t in self.running]}}
        for svc in self.services:
            groups[svc.name] = {"targets": [t.name for t in svc.targets if t.runs]}
        return {"group": groups, "target": {t.name: t.bake() for t in self.targets}}

    def bake_argv(self, file: str = BAKE_FILE, metadata_file: str = METADATA_FILE) -> list[str]:
        """The ``docker buildx bake`` arguments: written here only, shown by ``plan``, run by ``build``."""
        return [
            "buildx",
            "bake",
            "--builder",
            self.builder.name,
            "--progress",
            "rawjson",
            "--file",
            file,
            "--metadata-file",
            metadata_file,
            "default",
        ]

    def with_targets(self, targets: Iterable[Target]) -> Plan:
        """The same plan with ``targets`` in place of those of the same name (the others unchanged)."""
        chosen = {t.name: t for t in targets}
        services = tuple(
            dataclasses.replace(s, targets=tuple(chosen.get(t.name, t) for t in s.targets)) for s in self.services
        )
        return dataclasses.replace(self, services=services)

    def only(self, targets: Iterable[Target]) -> Plan:
        """A plan that runs exactly ``targets`` (by name), as given; nothing else is in its file."""
        chosen = {t.name: dataclasses.replace(t, runs=True) for t in targets}
        services = tuple(
            dataclasses.replace(s, targets=tuple(chosen[t.name] for t in s.targets if t.name in chosen))
            for s in self.services
        )
        return dataclasses.replace(self, services=tuple(s for s in services if s.targets))

    def to_json(self) -> dict[str, Any]:
        return {
            "builder": {
                "name": self.builder.name,
                "driver": self.builder.driver,
                "ephemeral": self.builder.ephemeral,
                "create": self.builder.create_argv() if self.builder.creatable else None,
                "buildkitd_config": self.builder.buildkitd_config,
            },
            "commit": self.commit,
            "branch": self.branch,
            "default_branch": self.default_branch,
            "cache_write": self.cache_write,
            "cache_write_reason": self.cache_write_reason,
            "cache_errors": self.cache_errors,
            "logins": [{"registry": h, "username": u} for h, u in self.logins],
            "argv": ["docker", *self.bake_argv()],
            "bake_env": dict(self.bake_env),
            "bake": self.bake_definition(),
            "services": [
                {
                    "name": s.name,
                    "image": s.image,
                    "store": s.store,
                    "targets": [t.to_json() for t in s.targets],
                }
                for s in self.services
            ],
        }


def cache_write_decision(
    settings: Settings, options: BuildOptions, on_ci: bool, local_store: bool, pull_request: str | None = None
) -> tuple[bool, str]:
    """Whether this run writes caches, and why (shown in the plan)."""
    if options.cache_write is False:
        return False, "--no-cache-write"
    if settings.cache_write == "never":
        return False, "settings.cache_write = 'never'"
    if pull_request and settings.pull_request_writes == "none":
        return False, f"pull request #{pull_request}: settings.pull_request_writes = 'none'"
    if options.cache_write:
        return True, "--cache-write"
    if settings.cache_write == "always":
        return True, "settings.cache_write = 'always'"
    if local_store:
        return True, "local cache store"
    if on_ci and pull_request:
        return True, f"pull request #{pull_request}: its own refs and keys only (pr-{slugify(pull_request)})"
    if on_ci:
        return True, "running in CI"
    return False, "not in CI (a laptop reads shared caches; pass --cache-write to write)"


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
    pull_request: str | None = None
    """The pull request this build is for (an untrusted writer whatever its branch is called), or None."""
    base_branch: str | None = None
    """A pull request's base branch: whose caches it reads (else the default branch's)."""
    """Where stores that need local space (S3) keep their blob pool, restores and exports."""
    source: str = "dockercache.toml"
    """The configuration file, named in errors."""


_TARGET_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def target_name(service: str, stage: str) -> str:
    """A bake target name (bake accepts ``[a-zA-Z0-9_-]+``)."""
    return _TARGET_CHARS.sub("_", f"{service}-{stage}")


def selected_stages(svc: ResolvedService, stage: str | None) -> tuple[str, ...]:
    """The stages to build: all, or ``stage`` and the service's stages in its graph (--stage)."""
    if stage is None:
        return svc.stages
    if stage not in svc.stages:
        raise ConfigError(f"--stage: service '{svc.name}' has no stage '{stage}' (stages: {', '.join(svc.stages)})")
    return tuple(s for s in svc.stages if s in svc.graphs[stage])


def related_stages(svc: ResolvedService, selected: Sequence[str], stage: str) -> tuple[str, ...]:
    """The service's other stages whose caches can hold vertices of ``stage``: those it builds on (nearest
    first), then the selected stages that build on some of the same stages, then the other stages that do
    (``--stage deps`` reads the final image's cache, which holds the dependencies).

    The second kind matters because build runs leaves only: a test stage and the final image both build on
    the dependencies, and when a run that changed them failed in the tests, only the final image's cache
    holds the new dependencies. In one BuildKit session a vertex two targets share is solved by one of them,
    with that target's cache sources only; so each must be able to find it.
    """
    graph = svc.graphs[stage]
    below = [s for s in reversed(svc.stages) if s != stage and s in graph]
    order = [*selected, *(s for s in svc.stages if s not in selected)]
    beside = [s for s in order if s != stage and s not in below and set(svc.graphs[s]) & set(graph)]
    return (*below, *beside)


def make_plan(inputs: PlanInputs, options: BuildOptions, exists: Callable[[str], bool] = os.path.isdir) -> Plan:
    default_branch = inputs.settings.default_branch or inputs.default_branch
    pr = inputs.pull_request
    keys = Keys(
        pipeline=inputs.pipeline,
        commit=inputs.commit,
        # A pull request writes under its own name: a fork's branch may be called main.
        branch=f"pr-{slugify(pr)}" if pr else slugify(inputs.branch),
        default_branch=slugify(inputs.base_branch or default_branch) if pr else slugify(default_branch),
        writes_shared=not pr and may_write_shared(inputs.branch, default_branch, inputs.settings),
    )
    local_only = all(isinstance(s.store, LocalCache) for s in inputs.services)
    cache_write, reason = cache_write_decision(inputs.settings, options, inputs.on_ci, local_only, pr)
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
    builder = endpoint_builder(builder, [s.store for s in inputs.services])
    untagged = next((s for s in inputs.services if not s.tags), None)
    if untagged and not TAG.fullmatch(inputs.commit):
        raise ConfigError(
            f"{inputs.source}: services.{untagged.name}.tags: the default tag, the commit {inputs.commit!r} "
            "(from ${BUILDKITE_COMMIT} or git), is not a valid image tag; set tags"
        )
    services = []
    for svc in inputs.services:
        targets = []
        identity = json.dumps([str(svc.context), str(svc.dockerfile), sorted(svc.args.items())])
        selected = selected_stages(svc, options.stage)
        for stage in selected:
            request = CacheRequest(
                service=svc.name,
                store_name=svc.store_name or "built-in local",
                store=svc.store,
                stage=stage,
                graph=related_stages(svc, selected, stage),
                keys=keys,
                cache_write=cache_write,
                root=inputs.root,
                exists=exists,
            )
            targets.append(_target(svc, stage, inputs.commit, options, kind_for(svc.store).plan(request), identity))
        services.append(
            ServicePlan(
                name=svc.name,
                targets=_mark_running(targets),
                image=svc.image,
                metadata_key=svc.metadata_key,
                store=svc.store_name or "built-in local",
            )
        )
    _check_names(services, inputs.source)
    return Plan(
        builder=builder,
        services=tuple(services),
        commit=inputs.commit,
        branch=inputs.branch,
        default_branch=default_branch,
        cache_write=cache_write,
        cache_write_reason=reason,
        cache_errors=inputs.settings.cache_errors,
        bake_env=_bake_env(inputs.services),
    )


def _bake_env(services: Sequence[ResolvedService]) -> dict[str, str]:
    profiles = {
        s.store.profile: s.store_name
        for s in services
        if isinstance(s.store, S3Cache) and s.store.native and s.store.profile
    }
    if len(profiles) > 1:
        raise ConfigError(
            f"native S3 stores {', '.join(map(str, profiles.values()))} name different AWS profiles; buildx "
            "resolves one profile per run (AWS_PROFILE)"
        )
    return {"AWS_PROFILE": next(iter(profiles))} if profiles else {}


def _target(
    svc: ResolvedService, stage: str, commit: str, options: BuildOptions, caches: TargetCaches, identity: str
) -> Target:
    final = stage == svc.stages[-1]
    image = svc.image or svc.name
    tag_names = svc.tags or (commit,)
    tags: tuple[str, ...] = ()
    if final:
        tags = tuple(f"{image}:{t}" for t in tag_names)
    elif stage in svc.push_stages:
        tags = tuple(f"{image}:{svc.stage_tag.format(stage=stage, tag=t)}" for t in tag_names)
    output: Output = "cacheonly"
    if tags:
        output = "push" if svc.image and options.push else "load"
    return Target(
        name=target_name(svc.name, stage),
        service=svc.name,
        stage=stage,
        dockerfile_target=svc.final_target if final else stage,
        final=final,
        # Absolute: bake reads a relative dockerfile against the context, and a kept bake file may move.
        context=str(svc.context.resolve()),
        dockerfile=str(svc.dockerfile.resolve()),
        args=svc.args,
        tags=tags,
        output=output,
        caches=caches,
        graph=svc.graphs[stage],
        identity=identity,
        no_cache=options.no_cache,
    )


def _mark_running(targets: Sequence[Target]) -> tuple[Target, ...]:
    """Run the leaves and the stages whose image is pushed; every other stage is built by the first leaf
    (in Dockerfile order) that builds on it."""
    marked = []
    for target in targets:
        leaf = not any(target.stage in other.graph for other in targets if other is not target)
        marked.append(dataclasses.replace(target, runs=leaf or bool(target.tags)))
    running = [t for t in marked if t.runs]
    return tuple(
        dataclasses.replace(t, built_by=t.name if t.runs else next(r.name for r in running if t.stage in r.graph))
        for t in marked
    )


def _check_names(services: Sequence[ServicePlan], source: str) -> None:
    """Bake has one namespace for groups and targets: two names that meet would build the wrong thing."""
    owners: dict[str, str] = {"default": "the default group"}
    for svc in services:
        for name, owner in [(svc.name, f"service '{svc.name}'")] + [
            (t.name, f"stage '{t.stage}' of service '{svc.name}'") for t in svc.targets
        ]:
            if name in owners and owners[name] != owner:
                raise ConfigError(
                    f"{source}: services.{svc.name}: {owner} and {owners[name]} both become bake target or group "
                    f"'{name}'; rename one of them"
                )
            owners[name] = owner
