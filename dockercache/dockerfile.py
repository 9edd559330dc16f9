"""Just enough Dockerfile parsing to know its stages (so a typo in a stage name fails before Docker runs)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str

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
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current)
    return lines


def parse_stages(text: str) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        match = _FROM.match(line)
        if match:
            name = match.group("name")
            stages.append(Stage(len(stages), name.lower() if name else None, match.group("image")))
    return tuple(stages)
