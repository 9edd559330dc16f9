"""Just enough Dockerfile parsing to know its stages and which stages each one builds on.

Stage names let a typo in dockercache.toml fail before Docker runs; the dependencies (``FROM <stage>``,
``COPY --from=<stage>``, ``RUN --mount=...,from=<stage>``) say which cached stages can hold a target's
vertices, so a target reads only the caches of its own graph.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

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

    @property
    def label(self) -> str:
        """How BuildKit names the stage in progress output: its name, or ``stage-N``."""
        return self.name or f"stage-{self.index}"


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
            stages[-1] = Stage(last.index, last.name, last.base, tuple(dict.fromkeys(uses)))
        uses.clear()

    for line in logical_lines(text):
        match = _FROM.match(line)
        if match:
            close()
            name = match.group("name")
            stages.append(Stage(len(stages), name.lower() if name else None, match.group("image")))
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
