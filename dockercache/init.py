"""``dockercache init``: a commented dockercache.toml for the project in a directory, ready for ``check``.

Pure: :func:`render` turns what was found (the Dockerfile's stages, or the Compose services that build) into
the file's text; :func:`write` refuses to overwrite one that exists.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adapters.ci import slugify
from .config.model import CONFIG_NAME
from .errors import ConfigError
from .planning.compose import COMPOSE_DEFAULTS, compose_image
from .planning.dockerfile import parse_stages, stage_graph

DOCKERFILE = "Dockerfile"


@dataclass(frozen=True)
class Found:
    """A service to configure: from a Dockerfile (``stages``, ``target``) or a Compose service."""

    name: str
    compose_service: str | None = None
    dockerfile: str | None = None
    stages: tuple[str, ...] = ()
    target: str | None = None
    side: tuple[str, ...] = ()
    """Named stages the target does not build (a test stage, ...): built only when listed."""
    image: str | None = None
    """A Compose service's ``image:`` (where ``build`` pushes), kept as Compose names it."""


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_string(name)


def _stages(
    text: str, dockerfile: str, target: str | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """The named stages ``target`` (default: the last stage) builds on, the named stages it does not, and the
    target's name as the Dockerfile spells it (None: the last stage, unnamed)."""
    stages = parse_stages(text)
    if not stages:
        raise ConfigError(f"{dockerfile}: no FROM line: not a Dockerfile dockercache can build")
    last = next((s for s in stages if target is not None and s.name == target.lower()), stages[-1])
    graph = stage_graph(stages, last.label)
    spelled = {s.label: s.spelled or s.label for s in stages}
    others = [s for s in stages if s.index != last.index and s.name]
    before = tuple(spelled[s.label] for s in others if s.label in graph)
    side = tuple(spelled[s.label] for s in others if s.label not in graph)
    return before, side, last.spelled if last.name else None


def from_dockerfile(name: str, text: str, dockerfile: str = DOCKERFILE) -> Found:
    """The service a Dockerfile makes: its last stage as the target, the named stages it builds on as stages."""
    before, side, target = _stages(text, dockerfile)
    return Found(
        name=slugify(name).lower(),
        dockerfile=None if dockerfile == DOCKERFILE else dockerfile,
        stages=before,
        target=target,
        side=side,
    )


def from_compose(document: Mapping[str, Any]) -> list[Found]:
    """Every Compose service that builds (``build:``), in the file's order, with its ``image:`` and the named
    stages of its Dockerfile that its target builds on (where ``docker compose config`` says where it is)."""
    services = document.get("services")
    if not isinstance(services, dict):
        return []
    found = []
    for name, svc in services.items():
        if not isinstance(svc, dict) or not svc.get("build"):
            continue
        build = svc["build"] if isinstance(svc["build"], dict) else {}
        stages: tuple[str, ...] = ()
        side: tuple[str, ...] = ()
        if "context" in build:
            path = Path(str(build["context"])) / str(build.get("dockerfile") or DOCKERFILE)
            with contextlib.suppress(OSError, UnicodeDecodeError, ConfigError):  # `check` will say what is wrong
                stages, side, _ = _stages(path.read_text(encoding="utf-8"), str(path), build.get("target"))
        image = str(svc["image"]) if svc.get("image") else None
        found.append(Found(slugify(name).lower(), compose_service=name, stages=stages, side=side, image=image))
    return found


def render(found: Sequence[Found], source: str) -> str:
    """The file: what it was made from, the services, and the choices a newcomer makes next, commented."""
    lines = [
        f"# dockercache.toml, written by `dockercache init` from {source}.",
        "# Next: `dockercache check` (validates it), `dockercache plan` (what a build would do),",
        "# `dockercache build` (builds; pushes only on CI or with --push). docs/configuration.md explains every key.",
        "",
        "# Where caches go. With no [caches] table: a directory in ~/.cache/dockercache, which is all a laptop",
        "# needs. On CI agents that start empty, a registry or S3 store:",
        "# [caches.default]",
        '# type = "registry"',
        '# ref = "registry.example.com/myteam/cache/{service}"',
        "# or:",
        '# type = "s3"',
        '# bucket = "my-ci-cache"',
        '# key = "{pipeline}/{branch}"',
        "",
        "# The builder. Default: a docker-container builder named dockercache (pulls moby/buildkit once). The Docker",
        "# engine's own builder needs no pull, and exports caches when it uses the containerd image store:",
        "# [builder]",
        '# name = "default"',
        '# driver = "docker"',
    ]
    for item in found:
        lines += ["", f"[services.{_key(item.name)}]"]
        if item.compose_service is not None:
            lines.append(
                f"compose_service = {_toml_string(item.compose_service)}  # context, target, args from Compose"
            )
            lines += _stage_lines(item)
            try:
                repository, tags = compose_image(item.image or "", "image")
            except ConfigError:
                repository, tags = "", ()
            if repository:
                lines.append(f"image = {_toml_string(repository)}  # Compose's image: where build pushes")
                if tags:
                    lines.append(f"tags = [{_toml_string(tags[0])}]")
                continue
        else:
            lines.append('context = "."')
            if item.dockerfile:
                lines.append(f"dockerfile = {_toml_string(item.dockerfile)}")
            lines += _stage_lines(item)
            if item.target:
                lines.append(f"target = {_toml_string(item.target)}")
        lines.append(f'# image = "registry.example.com/myteam/{item.name}"  # where build pushes its image')
    return "\n".join(lines) + "\n"


def _stage_lines(item: Found) -> list[str]:
    lines = []
    if item.stages:
        listed = ", ".join(_toml_string(s) for s in item.stages)
        lines.append(f"stages = [{listed}]  # built and cached on their own, in order, before target")
    if item.side:
        listed = ", ".join(_toml_string(s) for s in item.side)
        lines.append(f"# stages the target does not build (a test stage?), to add to stages: {listed}")
    return lines


def ignore_store(directory: Path, store: Path) -> str | None:
    """The built-in local store's directory is inside the project (``$XDG_CACHE_HOME`` in the checkout, as some
    CI setups have it): add it to the project's ``.gitignore`` unless listed. The line added, else None."""
    try:
        inside = store.resolve().relative_to(directory.resolve())
    except ValueError:
        return None
    line = f"/{inside.as_posix()}/"
    ignore = directory / ".gitignore"
    present = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
    if any(entry.strip() in (line, line.rstrip("/"), line.lstrip("/"), line.strip("/")) for entry in present):
        return None
    text = ignore.read_text(encoding="utf-8") if ignore.is_file() else ""
    ignore.write_text(f"{text}{'' if not text or text.endswith(chr(10)) else chr(10)}{line}\n", encoding="utf-8")
    return line


def discover(directory: Path, compose_reader: Any = None) -> tuple[list[Found], str]:
    """What to configure in ``directory``: its Compose file's building services, else its Dockerfile."""
    compose = next((directory / n for n in COMPOSE_DEFAULTS if (directory / n).is_file()), None)
    if compose is not None and compose_reader is not None:
        found = from_compose(compose_reader([compose], directory))
        if found:
            return found, compose.name
    dockerfile = directory / DOCKERFILE
    if not dockerfile.is_file():
        raise ConfigError(
            f"{directory}: no {DOCKERFILE} and no Compose file with a service that builds: nothing to configure"
        )
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{dockerfile}: cannot read: {exc}") from None
    return [from_dockerfile(directory.resolve().name, text)], DOCKERFILE


def write(directory: Path, text: str) -> Path:
    """Write ``dockercache.toml`` in ``directory``; never over one that exists."""
    target = directory / CONFIG_NAME
    try:
        with target.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{CONFIG_NAME}: exists already; not overwritten (remove it to start again)") from None
    return target
