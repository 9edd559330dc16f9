"""Skip unchanged builds: a key over everything that decides a service's image, computed before building.

The key covers the Dockerfile, the build context as BuildKit receives it (walked and digested by
:mod:`dockercache.planning.context`), build args, the Dockerfile targets the service runs and pushes, platforms,
secret and SSH ids (never their values), labels and attestations (but the revision and creation labels, which
change on every commit), and the digests the base images resolve to now. When the image repository already
holds an image tagged with the key (``dc-<key>``, pushed beside the build's own tags), the runner retags it
instead of building (see :mod:`dockercache.run.unchanged`).

This module parses the Dockerfile's text for what the key must pin (its base images, after ARG expansion for each
platform, and its ``# syntax=`` frontend), and puts the key together (:class:`KeyInputs`, :func:`key_tag`).
Where it cannot tell exactly what BuildKit would fetch, it errs towards a different key (a build): an input
it cannot pin (``ADD`` of a URL without ``--checksum``, a ``--from`` image whose variables have no value)
raises :class:`~dockercache.model.skip.Unavailable`, and the service is built.

Pure: no Docker, no network, no file read.
"""

from __future__ import annotations

import hashlib
import json
import platform as host_platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model.skip import TAG_PREFIX, Unavailable
from .dockerfile import PLATFORM_ARGS, expand, global_args, logical_lines, parse_stages, split_instruction

KEY_VERSION = 1
TAG_KEY_LENGTH = 32
"""Hex digits of the key in the tag (128 bits)."""
#: Labels that differ on every commit: a skipped build keeps the ones of the image it retags.
VOLATILE_LABELS = frozenset({"org.opencontainers.image.revision", "org.opencontainers.image.created"})


# ------------------------------------------------------------------------------------------ the Dockerfile


def native_platform() -> str:
    """The platform a builder on this machine builds for when none is given."""
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm/v7"}
    return f"linux/{arch.get(machine, machine)}"


def platform_args(target: str, build: str) -> dict[str, str]:
    """BuildKit's automatic platform arguments for a target and build platform (``linux/arm/v7``)."""
    values = dict(PLATFORM_ARGS)
    for prefix, value in (("TARGET", target), ("BUILD", build)):
        os_name, _, rest = value.partition("/")
        arch, _, variant = rest.partition("/")
        values.update(
            {f"{prefix}PLATFORM": value, f"{prefix}OS": os_name, f"{prefix}ARCH": arch, f"{prefix}VARIANT": variant}
        )
    return values


_SYNTAX = re.compile(r"^#\s*syntax\s*=\s*(\S+)\s*$", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^#\s*[A-Za-z_]+\s*=")
_URL = re.compile(r"^(?:https?://|git@|git://)|\.git(?:#|$)", re.IGNORECASE)


def syntax_image(text: str) -> str | None:
    """The frontend image of a ``# syntax=`` directive (directives come first, before any other line)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        match = _SYNTAX.match(stripped)
        if match:
            return match.group(1)
        if not _DIRECTIVE.match(stripped):
            return None
    return None


def _instructions(text: str) -> list[tuple[str, list[str], list[str]]]:
    """Each instruction: its keyword (upper case), its leading ``--flags`` and its other words."""
    out = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        flags, words = split_instruction(rest)
        out.append((keyword.upper(), flags, words))
    return out


def remote_sources(text: str) -> tuple[str, ...]:
    """``ADD`` sources fetched from the network without a ``--checksum`` to pin them: their content cannot
    be known before building."""
    found: list[str] = []
    for keyword, flags, words in _instructions(text):
        if keyword != "ADD" or any(f.lower().startswith("--checksum=") for f in flags):
            continue
        found += [w for w in words[:-1] if _URL.search(w)]
    return tuple(found)


def _sources(flags: Sequence[str]) -> list[str]:
    """``--from=`` of COPY/ADD and ``from=`` of every ``--mount`` of RUN."""
    values = []
    for flag in flags:
        name, _, value = flag.partition("=")
        if name.lower() == "--from" and value:
            values.append(value)
        elif name.lower() == "--mount":
            for part in value.split(","):
                key, _, source = part.partition("=")
                if key.strip().lower() == "from" and source:
                    values.append(source)
    return values


def base_images(
    text: str, args: Mapping[str, str], stages: Iterable[str], platforms: Sequence[str] = ()
) -> tuple[str, ...]:
    """The images the given stages (labels) build or copy from, after ARG expansion for each platform
    (``FROM scratch`` and other stages excluded), and the ``# syntax=`` frontend; in order, once each."""
    parsed = parse_stages(text)
    wanted = set(stages)
    declared = global_args(text)
    sources: dict[int, list[str]] = {}
    index = -1
    for keyword, flags, _ in _instructions(text):
        if keyword == "FROM":
            index += 1
        elif keyword in ("COPY", "ADD", "RUN") and index >= 0:
            sources.setdefault(index, []).extend(_sources(flags))
    images: list[str] = []
    syntax = syntax_image(text)
    if syntax:
        images.append(syntax)
    build = native_platform()
    for target in platforms or (build,):
        values = platform_args(target, build)
        for name, default in declared.items():
            if name in PLATFORM_ARGS:
                continue  # BuildKit sets these for each platform
            if name in args:
                values[name] = args[name]
            elif default is not None:
                values[name] = expand(default, values)[0]
        for stage in parsed:
            if stage.label not in wanted:
                continue
            earlier = {s.name for s in parsed[: stage.index] if s.name}
            for n, ref in enumerate([stage.base, *sources.get(stage.index, [])]):
                expanded, missing = expand(ref, values)
                if missing and (not expanded or expanded.endswith((":", "@", "/"))):
                    raise Unavailable(f"'{ref}' (stage {stage.label}) needs ${missing[0]}, which has no value here")
                lowered = expanded.lower()
                if (n == 0 and lowered == "scratch") or lowered in earlier:
                    continue
                if n > 0 and lowered.isdigit() and int(lowered) < stage.index:
                    continue
                if expanded not in images:
                    images.append(expanded)
    return tuple(images)


# ------------------------------------------------------------------------------------------ the key


def _ids(entries: Iterable[str]) -> list[str]:
    """The ids of bake ``secret``/``ssh`` entries (``id=npm,env=X`` or ``default``, ``ID=/path``)."""
    ids = []
    for entry in entries:
        fields = dict(part.partition("=")[::2] for part in entry.split(","))
        ids.append(fields.get("id") or entry.split("=", 1)[0])
    return sorted(set(ids))


@dataclass(frozen=True)
class KeyInputs:
    """Everything the key covers, values that may be secret reduced to digests or ids."""

    dockerfile: str
    """sha256 of the Dockerfile's bytes."""
    context: str
    """:func:`dockercache.planning.context.context_digest`."""
    patterns: tuple[str, ...]
    args: Mapping[str, str]
    targets: tuple[tuple[str, str], ...]
    """(Dockerfile target, output) of every target the service runs."""
    bases: Mapping[str, str]
    """Image reference: the digest it resolves to now."""
    platforms: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    """bake ``secret`` entries (only their ids count)."""
    ssh: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    attest: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        return {
            "version": KEY_VERSION,
            "dockerfile": self.dockerfile,
            "context": self.context,
            "ignore": list(self.patterns),
            "args": sorted(self.args.items()),
            "targets": [list(t) for t in self.targets],
            "bases": sorted(self.bases.items()),
            "platforms": list(self.platforms) or [native_platform()],
            "secrets": _ids(self.secrets),
            "ssh": _ids(self.ssh),
            "labels": sorted((k, v) for k, v in self.labels.items() if k not in VOLATILE_LABELS),
            "attest": sorted(self.attest),
        }

    def key(self) -> str:
        text = json.dumps(self.document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8", errors="surrogateescape")).hexdigest()


def key_tag(key: str, stage: str | None = None) -> str:
    """The tag that marks an image built from ``key``: ``dc-<key>`` (a pushed stage: ``dc-<key>-<stage>``)."""
    tag = f"{TAG_PREFIX}{key[:TAG_KEY_LENGTH]}"
    return f"{tag}-{stage}" if stage else tag


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
