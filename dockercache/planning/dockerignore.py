"""``.dockerignore`` as BuildKit reads and matches it: ``<Dockerfile>.dockerignore`` beside the Dockerfile, else
``.dockerignore`` at the context's root, read and matched as moby/patternmatcher does (``**``, ``!`` exceptions,
a leading ``/``, parents matching for their contents). A pattern that cannot be compiled raises
:class:`~dockercache.model.skip.Unavailable` (the service is built). Pure: nothing here reads a file but
:func:`ignore_file`'s existence checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..model.skip import Unavailable


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
