"""From configuration to concrete build inputs: paths, Dockerfile stages, Compose services.

This is the only step between the pure plan and the configuration that reads the disk (Dockerfiles) and,
for Compose services, asks ``docker compose config``. It still runs no build and needs no Docker daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CacheStore, Config, LocalCache, ServiceConfig, default_cache_name, suggest
from .dockerfile import Stage, global_args, parse_stages, same_name, stage_graph, unset_base
from .errors import ConfigError

ComposeReader = Callable[[Sequence[Path], Path], Mapping[str, Any]]
COMPOSE_DEFAULTS = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
BUILTIN_STORE = LocalCache(type="local")


@dataclass(frozen=True)
class ResolvedService:
    name: str
    context: Path
    dockerfile: Path
    stages: tuple[str, ...]
    """Targets to build in order; the last one is the service's final target."""
    final_target: str | None
    """``--target`` of the final build (None: the Dockerfile's last stage, which has no name)."""
    args: Mapping[str, str]
    image: str | None
    tags: tuple[str, ...]
    push_stages: tuple[str, ...]
    stage_tag: str
    store_name: str | None
    store: CacheStore
    metadata_key: str | None
    graphs: Mapping[str, tuple[str, ...]]
    """Per stage to build: the Dockerfile stages it builds too (itself included), in Dockerfile order."""


def compose_files(config: Config, service: ServiceConfig, env: Mapping[str, str]) -> tuple[Path, ...]:
    """Compose files for a service: its own, the top-level ones, $COMPOSE_FILE, then the default names."""
    names: Sequence[str] = service.compose_files or config.compose_files
    if not names and env.get("COMPOSE_FILE"):
        names = env["COMPOSE_FILE"].split(env.get("COMPOSE_PATH_SEPARATOR", os.pathsep))
    if names:
        files = tuple(config.root / n for n in names)
        for f in files:
            if not f.is_file():
                raise ConfigError(f"{config.path}: compose_files: compose file {f} does not exist")
        return files
    for name in COMPOSE_DEFAULTS:
        if (config.root / name).is_file():
            return (config.root / name,)
    raise ConfigError(
        f"{config.path}: compose_files: no Compose file given and none of {', '.join(COMPOSE_DEFAULTS)} "
        f"in {config.root}"
    )


def _from_compose(
    config: Config, name: str, svc: ServiceConfig, env: Mapping[str, str], read: ComposeReader
) -> tuple[Path, Path, str | None, dict[str, str]]:
    files = compose_files(config, svc, env)
    where = f"{config.path}: services.{name}.compose_service"
    try:
        document = read(files, config.root)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    shown = ", ".join(f.name for f in files)
    services = document.get("services") or {}
    assert svc.compose_service is not None
    entry = services.get(svc.compose_service)
    if entry is None:
        raise ConfigError(
            f"{where}: no service '{svc.compose_service}' in {shown} (services: {', '.join(services) or 'none'})"
        )
    build = entry.get("build")
    if not isinstance(build, dict) or "context" not in build:
        raise ConfigError(f"{where}: {shown}: services.{svc.compose_service}.build: missing (nothing to build)")
    context = Path(build["context"])
    if not context.is_absolute():
        context = config.root / context
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    args = {str(k): "" if v is None else str(v) for k, v in (build.get("args") or {}).items()}
    return context, dockerfile, build.get("target"), args


def resolve_service(
    config: Config, name: str, env: Mapping[str, str], read_compose: ComposeReader | None = None
) -> ResolvedService:
    svc = config.service(name)
    where = f"{config.path}: services.{name}"
    target = svc.target
    args: dict[str, str] = {}
    if svc.compose_service:
        if read_compose is None:
            raise ConfigError(f"{where}.compose_service: Compose is not available here")
        context, dockerfile, compose_target, args = _from_compose(config, name, svc, env, read_compose)
        target = target or compose_target
    else:
        context = config.root / (svc.context or ".")
        dockerfile = context / (svc.dockerfile or "Dockerfile")
        if not context.is_dir():
            raise ConfigError(f"{where}.context: directory {context} does not exist")
    args.update(svc.args)
    file_key = "compose_service" if svc.compose_service else "dockerfile"
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(f"{where}.{file_key}: Dockerfile {dockerfile} does not exist or cannot be read") from None
    dockerfile_stages = parse_stages(text)
    if not dockerfile_stages:
        raise ConfigError(f"{where}.dockerfile: {dockerfile} has no FROM instruction")
    _check_dockerfile(text, dockerfile_stages, args, dockerfile, f"{where}.{file_key}", where)
    named = [s.name for s in dockerfile_stages if s.name]
    for key, stage in [*((f"stages[{i}]", s) for i, s in enumerate(svc.stages)), ("target", target)]:
        if stage is not None and stage.lower() not in named:
            raise ConfigError(
                f"{where}.{key}: no stage '{stage}' in {dockerfile}{suggest(stage.lower(), named)}"
                f" (stages: {', '.join(named) or 'none named'})"
            )
    stages = [s.lower() for s in svc.stages]
    if target is None:
        final_label = dockerfile_stages[-1].label
        final_target = dockerfile_stages[-1].name
    else:
        final_label = final_target = target.lower()
    order = [s.label for s in dockerfile_stages]
    positions = [order.index(s) for s in stages]
    if positions != sorted(positions):
        raise ConfigError(f"{where}.stages: stages must follow their order in {dockerfile} ({', '.join(order)})")
    if final_label in stages:
        if stages[-1] != final_label:
            raise ConfigError(f"{where}.stages: the final target '{final_label}' must come last")
        stages.pop()
    elif positions and order.index(final_label) < positions[-1]:
        raise ConfigError(f"{where}.target: '{final_label}' comes before stage '{stages[-1]}' in {dockerfile}")
    store_name = default_cache_name(config, svc)
    store = config.caches[store_name] if store_name else BUILTIN_STORE
    built = (*stages, final_label)
    return ResolvedService(
        name=name,
        context=context,
        dockerfile=dockerfile,
        stages=built,
        final_target=final_target,
        args=args,
        image=svc.image,
        tags=svc.tags,
        push_stages=tuple(s.lower() for s in svc.push_stages),
        stage_tag=svc.stage_tag,
        store_name=store_name,
        store=store,
        metadata_key=svc.metadata_key,
        graphs={label: stage_graph(dockerfile_stages, label) for label in built},
    )


def _check_dockerfile(
    text: str, stages: tuple[Stage, ...], args: Mapping[str, str], dockerfile: Path, at: str, where: str
) -> None:
    """What BuildKit would reject only once the build runs: two stages of one name, a FROM with no image."""
    twins = same_name(stages)
    if twins:
        first, second = (s.spelled for s in twins)
        if first == second:
            raise ConfigError(f"{at}: stage name '{first}' is used twice in {dockerfile}")
        raise ConfigError(
            f"{at}: stages '{first}' and '{second}' of {dockerfile} differ only in case "
            "(Docker stage names are case-insensitive: they are the same stage)"
        )
    unset = unset_base(text, stages, args)
    if unset:
        stage, name = unset
        if name not in global_args(text):
            raise ConfigError(
                f"{at}: FROM {stage.base} uses ${name}, which no ARG before the first FROM of {dockerfile} "
                "declares (BuildKit leaves it empty)"
            )
        raise ConfigError(
            f"{where}.args.{name}: missing: FROM {stage.base} needs it, and ARG {name} has no default in "
            f"{dockerfile} (set this build argument, or give the ARG a default)"
        )


def resolve_services(
    config: Config,
    names: Sequence[str],
    env: Mapping[str, str],
    read_compose: ComposeReader | None = None,
) -> tuple[ResolvedService, ...]:
    """The named services (all of them when ``names`` is empty), in the order given."""
    chosen = list(names) or list(config.services)
    return tuple(resolve_service(config, n, env, read_compose) for n in dict.fromkeys(chosen))
