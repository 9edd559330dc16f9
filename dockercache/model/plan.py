"""Plans and their targets: the bake file's targets, a service's group, the builder, and what the person asked for."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..config.services import split_variant
from . import buildx
from .entry import CacheEntry, TargetCaches
from .metadata import image_metadata_key
from .mounts import MountsPlan
from .skip import SkipSetting

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
    push: bool | None = None
    """None: push on CI only (a laptop loads its images unless asked: --push); True/False: --push/--no-push."""
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
    keep_storage: str | None = None
    """The size a successful build prunes the builder's build cache down to (None: BuildKit's own GC)."""

    @property
    def creatable(self) -> bool:
        """The docker driver has exactly one builder per Docker context; it cannot be created."""
        return self.driver != "docker"

    def create_argv(self, config_file: str = "BUILDKITD.toml") -> list[str]:
        """``docker buildx create`` for this builder; ``config_file`` holds :attr:`buildkitd_config`."""
        config = config_file if self.buildkitd_config is not None else None
        return buildx.create(self.name, self.driver, self.driver_opts, config, self.platforms, self.endpoint)

    def prune_argv(self) -> list[str] | None:
        """``docker buildx prune`` down to :attr:`keep_storage`, or None when there is no bound (or the builder is
        removed after the build anyway)."""
        if self.keep_storage is None or self.ephemeral:
            return None
        return buildx.prune(self.name, self.keep_storage)


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
    """Targets with the same identity (context, Dockerfile, args, platforms) share their steps."""
    no_cache: bool = False
    runs: bool = True
    """In the default group: ``build`` runs it (a leaf, or a stage whose image is pushed)."""
    built_by: str = ""
    """The running target that builds this stage: itself, or the first leaf that builds on it."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Image labels (config only: they change no layer and no cache key), on tagged targets."""
    attest: tuple[str, ...] = ()
    """bake's ``attest`` entries (provenance, SBOM), on pushed targets."""
    secrets: tuple[str, ...] = ()
    """bake's ``secret`` entries, ``id=npm,env=NPM_TOKEN`` or ``id=netrc,src=/abs/path``: where BuildKit reads
    each value, never the value."""
    ssh: tuple[str, ...] = ()
    """bake's ``ssh`` entries: ``default`` (the agent at $SSH_AUTH_SOCK) or ``ID=/abs/path``."""
    platforms: tuple[str, ...] = ()
    """bake's ``platforms``: ``os/arch[/variant]`` (empty: the builder's own)."""

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
        if self.platforms:
            out["platforms"] = list(self.platforms)
        if self.tags:
            out["tags"] = list(self.tags)
        if self.caches.sources:
            out["cache-from"] = [e.encode() for e in self.caches.sources]
        if self.caches.sink:
            out["cache-to"] = [self.caches.sink.encode()]
        out["output"] = [BAKE_OUTPUT[self.output]]
        if self.no_cache:
            out["no-cache"] = True
        if self.secrets:
            out["secret"] = list(self.secrets)
        if self.ssh:
            out["ssh"] = list(self.ssh)
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.attest:
            out["attest"] = list(self.attest)
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
            "secrets": list(self.secrets),
            "ssh": list(self.ssh),
            "platforms": list(self.platforms),
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
    skip: SkipSetting | None = None
    """skip_unchanged: whether this run may skip the service, why (not), and what its key covers."""
    compose_files: tuple[str, ...] = ()
    """The Compose files the docker-compose plugin's meta-data key is made of (``ResolvedService.compose_files``)."""
    compose_service: str | None = None
    """The Compose service built: the docker-compose plugin's key carries its name, not the service's."""
    cache_mounts: MountsPlan | None = None
    """cache_mounts: the service's ``RUN --mount=type=cache`` directories, where they are restored from and saved to."""

    @property
    def image_meta_data_key(self) -> str | None:
        """The Buildkite meta-data key that receives the pushed image (None: no key)."""
        base, variant = split_variant(self.name)
        name = f"{self.compose_service or base}{f'[{variant}]' if variant else ''}"
        return image_metadata_key(self.metadata_key, name, self.compose_files)


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
    stall_seconds: float = 60.0
    """A blob transfer that makes no progress for this long is abandoned (``settings.stall_seconds``)."""
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
            groups[group_name(svc.name)] = {"targets": [t.name for t in svc.targets if t.runs]}
        for svc in self.services:  # a matrix service's group holds its variants'
            base, variant = split_variant(svc.name)
            if variant is not None:
                groups.setdefault(base, {"targets": []})["targets"] += groups[group_name(svc.name)]["targets"]
        definition: dict[str, Any] = {"group": groups, "target": {t.name: t.bake() for t in self.targets}}
        mounts = {s.name: s.cache_mounts.to_json() for s in self.services if s.cache_mounts is not None}
        if mounts:  # bake ignores keys it does not know: what dockercache's helper builds do around the bake run
            definition["x-dockercache-cache-mounts"] = _literal(mounts)
        return definition

    def bake_argv(self, file: str = BAKE_FILE, metadata_file: str = METADATA_FILE) -> list[str]:
        """The ``docker buildx bake`` arguments (:mod:`.buildx`), shown by ``plan``, run by ``build``."""
        return buildx.bake(self.builder.name, file, metadata_file)

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
                "prune": self.builder.prune_argv(),
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
                    "metadata_key": s.image_meta_data_key,
                    "store": s.store,
                    "skip_unchanged": s.skip.to_json() if s.skip else None,
                    "cache_mounts": s.cache_mounts.to_json() if s.cache_mounts else None,
                    "targets": [t.to_json() for t in s.targets],
                }
                for s in self.services
            ],
        }


_TARGET_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def target_name(service: str, stage: str) -> str:
    """A bake target name (bake accepts ``[a-zA-Z0-9_-]+``); a variant's (``ruby[3.3]``) is ``ruby-3_3-final``."""
    return _TARGET_CHARS.sub("_", f"{group_name(service)}-{stage}")


def group_name(service: str) -> str:
    """A service's bake group: its name; a matrix variant's ``ruby[3.3]`` is ``ruby-3_3`` (and ``ruby`` holds
    every variant's targets). Two names that meet are refused (:func:`_check_names`)."""
    base, variant = split_variant(service)
    return service if variant is None else _TARGET_CHARS.sub("_", f"{base}-{variant}")
