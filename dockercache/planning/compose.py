"""Which Compose files a service reads, and how the docker-compose plugin names them in its meta-data key."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config.model import Config
from ..config.services import ServiceConfig
from ..errors import ConfigError
from ..reference import REFERENCE, reference_problem

COMPOSE_DEFAULTS = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


def compose_files(config: Config, service: ServiceConfig, env: Mapping[str, str]) -> tuple[Path, ...]:
    """Compose files for a service: its own, the top-level ones, $COMPOSE_FILE, then the default names."""
    names: Sequence[str] = service.compose_files or config.compose_files
    if not names and env.get("COMPOSE_FILE"):
        names = env["COMPOSE_FILE"].split(env.get("COMPOSE_PATH_SEPARATOR", os.pathsep))
    if names:
        files = tuple(config.compose_dir / n for n in names)
        for f in files:
            if not f.is_file():
                raise ConfigError(f"{config.path}: compose_files: compose file {f} does not exist")
        return files
    for name in COMPOSE_DEFAULTS:
        if (config.compose_dir / name).is_file():
            return (config.compose_dir / name,)
    raise ConfigError(
        f"{config.path}: compose_files: no Compose file given and none of {', '.join(COMPOSE_DEFAULTS)} "
        f"in {config.compose_dir}"
    )


def compose_plugin_names(config: Config, service: ServiceConfig, env: Mapping[str, str]) -> tuple[str, ...]:
    """The files ``compose_files`` reads, named as the docker-compose plugin names them in its meta-data key:
    as written in dockercache.toml (relative to it), $COMPOSE_FILE whole (the plugin does not split it at the
    separator: lib/shared.bash, ``docker_compose_config_files``), or the default file found."""
    names = service.compose_files or config.compose_files
    if names:
        return tuple(names)
    if env.get("COMPOSE_FILE"):
        return (env["COMPOSE_FILE"],)
    return tuple(f.name for f in compose_files(config, service, env))


def compose_image(value: str, where: str) -> tuple[str, tuple[str, ...]]:
    """A Compose ``image:`` as an image repository and the tag it names (none: no tag)."""
    match = REFERENCE.fullmatch(value)
    if match is None:
        raise ConfigError(f"{where}: {value!r}: {reference_problem(value)}")
    return match.group("name"), (match.group("tag"),) if match.group("tag") else ()
