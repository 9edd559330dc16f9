"""Just enough Dockerfile parsing to know its stages and which stages each one builds on.

Stage names let a typo in dockercache.toml fail before Docker runs; the dependencies (``FROM <stage>``,
``COPY --from=<stage>``, ``RUN --mount=...,from=<stage>``) say which cached stages can hold a target's
vertices, so a target reads only the caches of its own graph. Two mistakes are found here too: a ``FROM ${ARG}``
whose variable has no value (BuildKit fails mid-build: "base name should not be blank") and two stages whose
names differ only in case (one stage to BuildKit, which compares names case-insensitively; BuildKit 0.13
builds such a file without a word, from whichever stage it picks).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from ..reference import REFERENCE

_FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?\s*$", re.IGNORECASE)
_COPY_FROM = re.compile(r"^(?:COPY|ADD)\s+(?:--\S+\s+)*?--from=(?P<source>\S+)", re.IGNORECASE)
_INSTRUCTION = re.compile(r"^(?P<keyword>[A-Za-z]+)\s+(?P<rest>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str
    uses: tuple[str, ...] = ()
    """Other stages (by name, lower case, or by index as a string) this one copies or mounts from."""
    spelled: str | None = None
    """The name as the Dockerfile writes it (``name`` is lower case)."""

    @property
    def label(self) -> str:
        """How BuildKit names the stage in progress output: its name, or ``stage-N``."""
        return self.name or f"stage-{self.index}"


def split_instruction(rest: str) -> tuple[list[str], list[str]]:
    """An instruction's arguments (after its keyword): its leading ``--flags`` and its other words (the JSON form
    of ADD, COPY and RUN too; words that do not parse are split at spaces)."""
    rest = rest.strip()
    words: list[str]
    if rest.startswith("["):
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
    return flags, words


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comments, as the Dockerfile frontend does."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # before an instruction or inside a continued one: BuildKit skips both
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current)
    return lines


#: The Dockerfile frontend's instructions (docs.docker.com/reference/dockerfile).
INSTRUCTIONS = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
]
_DIRECTIVE = re.compile(r"^#\s*(?P<key>[A-Za-z]+)\s*=\s*(?P<value>.*?)\s*$")
_HEREDOC = re.compile(r"<<-?(?P<quote>[\"']?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=quote)")
_OWN_FRONTEND = re.compile(r"^(docker\.io/)?docker/dockerfile(-upstream)?([:@]|$)")


def syntax_problems(text: str) -> list[tuple[int, str]]:
    """What the Dockerfile frontend would refuse to parse, as ``(line number, problem)``: an unknown
    instruction (``RUNN``), a ``FROM`` without an image, an instruction before the first ``FROM`` other than
    ``ARG``. Heredocs and the ``escape`` directive are honoured; a file for another frontend (``# syntax=``
    naming something other than docker/dockerfile) is not read."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:  # parser directives: only at the very top
        directive = _DIRECTIVE.match(raw.strip())
        if directive is None:
            break
        key, value = directive.group("key").lower(), directive.group("value")
        if key == "escape" and value in ("`", "\\"):
            escape = value
        if key == "syntax" and not _OWN_FRONTEND.match(value):
            return []
    problems: list[tuple[int, str]] = []
    current, start, seen_from = "", 0, False
    heredocs: list[str] = []
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if heredocs:
            if stripped == heredocs[0]:
                heredocs.pop(0)
            continue
        if not stripped or stripped.startswith("#"):
            continue
        start = start or number
        if stripped.endswith(escape):
            current += stripped[: -len(escape)] + " "
            continue
        current += stripped
        problem = _instruction_problem(current, seen_from)
        if problem:
            problems.append((start, problem))
        seen_from = seen_from or current.split()[0].upper() == "FROM"
        heredocs = [m.group("word") for m in _HEREDOC.finditer(current)]
        current, start = "", 0
    if current.strip():
        problem = _instruction_problem(current, seen_from)
        if problem:
            problems.append((start, problem))
    if not seen_from:  # no FROM at all: said once, by the caller
        problems = [(n, p) for n, p in problems if not p.endswith(_BEFORE_FROM)]
    return problems


_BEFORE_FROM = " before the first FROM (only ARG may come before it)"


def _instruction_problem(line: str, seen_from: bool) -> str | None:
    keyword, *rest = line.split(None, 1)
    upper = keyword.upper()
    if upper not in INSTRUCTIONS:
        close = difflib.get_close_matches(upper, INSTRUCTIONS, n=1, cutoff=0.6)
        return f"unknown instruction '{keyword}'" + (f" (did you mean {close[0]}?)" if close else "")
    if upper == "FROM" and not [w for w in (rest[0].split() if rest else []) if not w.startswith("--")]:
        return "FROM without an image (FROM <image> [AS <name>])"
    if not seen_from and upper not in ("FROM", "ARG"):
        return f"{upper}{_BEFORE_FROM}"
    return None


def _mount_sources(rest: str) -> list[str]:
    """``from=`` of every ``--mount`` flag of a RUN instruction."""
    try:
        words = shlex.split(rest)
    except ValueError:
        words = rest.split()
    sources = []
    for word in words:
        if not word.startswith("--"):
            break
        if word.startswith("--mount="):
            for part in word.removeprefix("--mount=").split(","):
                key, _, value = part.partition("=")
                if key.strip().lower() == "from" and value:
                    sources.append(value)
    return sources


def parse_stages(text: str) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    uses: list[str] = []

    def close() -> None:
        if stages:
            last = stages[-1]
            stages[-1] = dataclasses.replace(last, uses=tuple(dict.fromkeys(uses)))
        uses.clear()

    for line in logical_lines(text):
        match = _FROM.match(line)
        if match:
            close()
            name = match.group("name")
            stages.append(Stage(len(stages), name.lower() if name else None, match.group("image"), spelled=name))
            continue
        copy = _COPY_FROM.match(line)
        if copy:
            uses.append(copy.group("source").lower())
            continue
        instruction = _INSTRUCTION.match(line)
        if instruction and instruction.group("keyword").upper() == "RUN":
            uses.extend(s.lower() for s in _mount_sources(instruction.group("rest")))
    close()
    return tuple(stages)


def stage_graph(stages: tuple[Stage, ...], label: str) -> tuple[str, ...]:
    """The labels of the stages that building ``label`` builds too (itself included), in Dockerfile order.

    A reference that names no stage (an image, a build context) adds nothing; stages can only refer to
    stages before them, as the Dockerfile frontend requires.
    """
    by_ref: dict[str, Stage] = {}
    for stage in stages:
        by_ref[str(stage.index)] = stage
        if stage.name:
            by_ref[stage.name] = stage
    start = next((s for s in stages if s.label == label), None)
    if start is None:
        return ()
    seen: set[int] = set()
    todo = [start]
    while todo:
        stage = todo.pop()
        if stage.index in seen:
            continue
        seen.add(stage.index)
        for ref in (stage.base.lower(), *stage.uses):
            parent = by_ref.get(ref)
            if parent is not None and parent.index < stage.index:
                todo.append(parent)
    return tuple(s.label for s in stages if s.index in seen)


def same_name(stages: tuple[Stage, ...]) -> tuple[Stage, Stage] | None:
    """Two stages BuildKit takes for one: their names are equal, or differ only in case."""
    seen: dict[str, Stage] = {}
    for stage in stages:
        if stage.name is None:
            continue
        if stage.name in seen:
            return seen[stage.name], stage
        seen[stage.name] = stage
    return None


#: Arguments BuildKit gives FROM lines itself (with values like these).
PLATFORM_ARGS: Mapping[str, str] = {
    "BUILDPLATFORM": "linux/amd64",
    "BUILDOS": "linux",
    "BUILDARCH": "amd64",
    "BUILDVARIANT": "",
    "TARGETPLATFORM": "linux/amd64",
    "TARGETOS": "linux",
    "TARGETARCH": "amd64",
    "TARGETVARIANT": "",
}


def global_args(text: str) -> dict[str, str | None]:
    """The ARGs declared before the first FROM (the only ones FROM lines see), with their defaults (None:
    none), in order."""
    declared: dict[str, str | None] = {}
    for line in logical_lines(text):
        instruction = _INSTRUCTION.match(line)
        keyword = instruction.group("keyword").upper() if instruction else ""
        if keyword == "FROM":
            break
        if keyword != "ARG" or instruction is None:
            continue
        rest = instruction.group("rest")
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        for word in words:
            name, equals, default = word.partition("=")
            declared[name] = default if equals else None
    return declared


def from_values(declared: Mapping[str, str | None], build_args: Mapping[str, str]) -> dict[str, str]:
    """The variables a FROM line sees: BuildKit's platform arguments, then every global ARG, its build
    argument or else its default. A declared ARG without either is unset (absent here), as is any other name."""
    values = dict(PLATFORM_ARGS)
    for name, default in declared.items():
        if name in build_args:
            values[name] = build_args[name]
        elif default is not None:
            values[name] = expand(default, values)[0]
    return values


_WORD_VARIABLE = re.compile(
    r"\\(?P<escaped>.)"
    r"|\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+?])(?P<word>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))",
    re.DOTALL,
)


def expand(word: str, values: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """``word`` as the Dockerfile frontend expands it (``$A``, ``${A}``, ``${A:-x}``, ``${A-x}``, ``${A:+x}``,
    ``${A+x}``, ``${A:?x}``), and the variables it needed that had no value (unset or empty)."""
    empty: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return match.group("escaped")
        name = match.group("name") or match.group("bare")
        value = values.get(name)
        op, alternative = match.group("op"), match.group("word") or ""
        given = bool(value) if op and op.startswith(":") else value is not None  # ':' also treats '' as unset
        if op in (":-", "-"):
            return value or "" if given else expand(alternative, values)[0]
        if op in (":+", "+"):
            return expand(alternative, values)[0] if given else ""
        if op in (":?", "?") and given:
            return value or ""
        if op or not value:
            empty.append(name)
        return value or ""

    return _WORD_VARIABLE.sub(replace, word), tuple(dict.fromkeys(empty))


def unset_base(text: str, stages: tuple[Stage, ...], build_args: Mapping[str, str]) -> tuple[Stage, str] | None:
    """The first stage whose ``FROM`` BuildKit would reject for a variable without a value, and that variable:
    a base that expands to nothing, or to no image reference and no stage name (``registry/:tag``)."""
    values = from_values(global_args(text), build_args)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        base, missing = expand(stage.base, values)
        if not missing:
            continue
        if not base or (base.lower() not in names and not REFERENCE.fullmatch(base.lower())):
            return stage, missing[0]
    return None
