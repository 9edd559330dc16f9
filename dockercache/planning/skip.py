"""Skip unchanged builds: a key over everything that decides a service's image, computed before building.

The key covers the Dockerfile, the build context as BuildKit receives it, build args, the Dockerfile targets
the service runs and pushes, platforms, secret and SSH ids (never their values), labels and attestations
(but the revision and creation labels, which change on every commit), and the digests the base images
resolve to now. When the image repository already holds an image tagged with the key (``dc-<key>``, pushed
beside the build's own tags), the runner retags it instead of building (see :mod:`dockercache.run.runner`).

The context is what BuildKit's file transfer (tonistiigi/fsutil) sends: ``<Dockerfile>.dockerignore`` beside
the Dockerfile, else ``.dockerignore`` at the context's root, read and matched as moby/patternmatcher does
(``**``, ``!`` exceptions, a leading ``/``, parents matching for their contents). Entries count with their
path, type, permission bits, symlink target, hard-link source and content; never their times or owners.
Where this module cannot tell exactly what BuildKit would send or fetch, it errs towards a different key
(a build): an excluded directory is walked whenever the patterns have exceptions, even where fsutil would
prune it; and an input it cannot pin (``ADD`` of a URL without ``--checksum``, an unreadable file, a
``--from`` image whose variables have no value) raises :class:`Unavailable`, and the service is built.

Pure apart from reading the context and the Dockerfile: no Docker, no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as host_platform
import re
import shlex
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..model.skip import TAG_PREFIX, ContextScan, Entry
from .dockerfile import PLATFORM_ARGS, expand, global_args, logical_lines, parse_stages

KEY_VERSION = 1
TAG_KEY_LENGTH = 32
"""Hex digits of the key in the tag (128 bits)."""
#: Labels that differ on every commit: a skipped build keeps the ones of the image it retags.
VOLATILE_LABELS = frozenset({"org.opencontainers.image.revision", "org.opencontainers.image.created"})
_CHUNK = 1 << 20


class Unavailable(Exception):
    """No key can be computed (the service is built): the reason, one line."""


# ------------------------------------------------------------------------------------------ ignore files


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a slash-separated path."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    text = "/".join(parts)
    if rooted:
        return "/" + text
    return text or "."


def read_ignore(text: str) -> tuple[str, ...]:
    """The patterns of an ignore file, as moby/patternmatcher's ``ignorefile.ReadAll`` returns them: a BOM
    and ``#`` comment lines dropped, whitespace trimmed, each pattern cleaned, a leading ``/`` removed."""
    patterns: list[str] = []
    for number, line in enumerate(text.split("\n")):
        line = line.removesuffix("\r")
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return tuple(patterns)


_REGEX_ESCAPE = frozenset(".+()|{}$")


@dataclass(frozen=True)
class Pattern:
    """One pattern, compiled as patternmatcher's ``Pattern.compile`` does (an exact, prefix or suffix match
    where it can, a regular expression otherwise)."""

    text: str
    exclusion: bool
    kind: Literal["exact", "prefix", "suffix", "regexp"]
    regex: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, raw: str) -> Pattern:
        text = clean(raw.strip())
        exclusion = text.startswith("!")
        if exclusion:
            if len(text) == 1:
                raise Unavailable('illegal exclusion pattern "!" in the ignore file')
            text = text[1:]
        regex = "^"
        kind: Literal["exact", "prefix", "suffix", "regexp"] = "exact"
        i = pos = 0
        while pos < len(text):
            ch = text[pos]
            pos += 1
            if ch == "*":
                if pos < len(text) and text[pos] == "*":
                    pos += 1
                    if pos < len(text) and text[pos] == "/":
                        pos += 1
                    if pos >= len(text):  # "**" at the end matches everything below, as in .gitignore
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            regex += ".*"
                            kind = "regexp"
                    else:  # any number of directories, none included
                        regex += "(.*/)?"
                        kind = "regexp"
                    if i == 0:
                        kind = "suffix"
                else:
                    regex += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                regex += "[^/]"
                kind = "regexp"
            elif ch in _REGEX_ESCAPE:
                regex += "\\" + ch
            elif ch == "\\":
                if pos < len(text):
                    regex += "\\" + text[pos]
                    pos += 1
                    kind = "regexp"
                else:
                    regex += "\\\\"
            elif ch in "[]":
                regex += ch
                kind = "regexp"
            else:
                regex += ch
            i += 1
        compiled = None
        if kind == "regexp":
            try:
                compiled = re.compile(regex + "$")
            except re.error:
                raise Unavailable(f"invalid pattern {raw.strip()!r} in the ignore file") from None
        return cls(text, exclusion, kind, compiled)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


MatchInfo = tuple[bool, ...]
"""Per pattern, whether a directory matched it (its contents then match it too)."""


@dataclass(frozen=True)
class Ignore:
    """A list of patterns matched as patternmatcher's ``MatchesUsingParentResults`` does, which is what
    BuildKit's context transfer calls for every path it walks."""

    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> Ignore:
        return cls(tuple(Pattern.compile(p) for p in patterns if p.strip()))

    @property
    def exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def match(self, path: str, parent: MatchInfo = ()) -> tuple[bool, MatchInfo]:
        """Whether ``path`` (slash-separated, relative to the context) is excluded, and what its contents
        inherit. ``parent`` is its directory's result (empty at the top, where parents are matched here)."""
        matched = False
        info: list[bool] = []
        for i, pattern in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                hit = pattern.match(path)
                if not hit and not parent:
                    parts = path.split("/")[:-1]
                    hit = any(pattern.match("/".join(parts[: n + 1])) for n in range(len(parts)))
            info.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def excluded(self, path: str) -> bool:
        """``path`` as BuildKit would judge it walking down to it (every parent first)."""
        parent: MatchInfo = ()
        parts = path.split("/")
        result = False
        for n in range(len(parts)):
            result, parent = self.match("/".join(parts[: n + 1]), parent)
        return result


def ignore_file(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file BuildKit uses: ``<Dockerfile>.dockerignore`` beside the Dockerfile, else the
    context's ``.dockerignore``."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------------------------ the context


def scan_context(context: Path, dockerfile: Path) -> ContextScan:
    """Walk the context as BuildKit's transfer would (lstat only, in name order), the ignore file applied."""
    try:
        dockerfile_bytes = dockerfile.read_bytes()
        ignore_path = ignore_file(context, dockerfile)
        patterns = read_ignore(ignore_path.read_text(encoding="utf-8", errors="replace")) if ignore_path else ()
    except OSError as exc:
        raise Unavailable(f"cannot read {exc.filename}: {exc.strerror}") from None
    ignore = Ignore.parse(patterns)
    entries: list[Entry] = []
    inodes: dict[tuple[int, int], str] = {}
    root = context.resolve()

    def include(entry: Entry, ancestors: list[list[Any]]) -> None:
        """Emit ``entry`` after the excluded directories above it not sent yet (fsutil sends the parents
        of every path it includes)."""
        for ancestor in ancestors:
            if not ancestor[1]:
                entries.append(ancestor[0])
                ancestor[1] = True
        entries.append(entry)

    def walk(directory: Path, prefix: str, parent: MatchInfo, ancestors: list[list[Any]]) -> None:
        try:
            children = sorted(os.scandir(directory), key=lambda d: d.name)
        except OSError as exc:
            raise Unavailable(f"cannot list {directory}: {exc.strerror}") from None
        for child in children:
            path = f"{prefix}{child.name}"
            try:
                info = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise Unavailable(f"cannot stat {child.path}: {exc.strerror}") from None
            excluded, inherited = ignore.match(path, parent) if ignore.patterns else (False, ())
            is_dir = stat.S_ISDIR(info.st_mode)
            if excluded and not (is_dir and ignore.exclusions):
                continue  # an excluded directory is walked only for exceptions (fsutil may prune more)
            entry = _entry(path, child.path, info, inodes)
            if not excluded:
                include(entry, ancestors)
                if entry.kind == "file" and info.st_nlink > 1:
                    inodes.setdefault((info.st_dev, info.st_ino), path)
            if is_dir:
                walk(Path(child.path), f"{path}/", inherited, [*ancestors, [entry, not excluded]])

    walk(root, "", (), [])
    return ContextScan(context, dockerfile, dockerfile_bytes, ignore_path, patterns, tuple(entries))


def _entry(path: str, full: str, info: os.stat_result, inodes: Mapping[tuple[int, int], str]) -> Entry:
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        return Entry(path, "dir", mode)
    if stat.S_ISLNK(info.st_mode):
        try:
            return Entry(path, "symlink", mode, link=os.readlink(full))
        except OSError as exc:
            raise Unavailable(f"cannot read symlink {full}: {exc.strerror}") from None
    if stat.S_ISREG(info.st_mode):
        first = inodes.get((info.st_dev, info.st_ino)) if info.st_nlink > 1 else None
        if first is not None:
            return Entry(path, "hardlink", mode, link=first)
        return Entry(path, "file", mode, size=info.st_size)
    return Entry(path, "other", mode, link=f"{stat.S_IFMT(info.st_mode)}:{info.st_rdev}")


def file_digest(path: Path) -> str:
    """sha256 of a file's content, read once in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def context_digest(scan: ContextScan, read: Callable[[Path], str] = file_digest) -> str:
    """One digest over every entry of the scan: path, type, mode, link, and each regular file's content."""
    digest = hashlib.sha256()
    for entry in scan.entries:
        content = read(scan.root / entry.path) if entry.kind == "file" else ""
        line = json.dumps([entry.path, entry.kind, entry.mode, entry.link, content], separators=(",", ":"))
        digest.update(line.encode("utf-8", errors="surrogateescape") + b"\n")
    return digest.hexdigest()


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
        rest = rest.strip()
        if rest.startswith("["):  # the JSON form of ADD, COPY, RUN
            try:
                words = [str(w) for w in json.loads(rest)]
            except ValueError:
                words = rest.split()
        else:
            try:
                words = shlex.split(rest)
            except ValueError:
                words = rest.split()
        flags = []
        while words and words[0].startswith("--"):
            flags.append(words.pop(0))
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
    """:func:`context_digest`."""
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


# ------------------------------------------------------------------------------------------ the plan's view
