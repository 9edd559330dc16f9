"""Why a target missed its cache, as a person and ``--json`` see it (issue 29): per report row, the first step that
did not come from cache and its cause, most specific first (:class:`Miss`); the lines printed under the report's
table and the annotation's (:func:`miss_lines`, :func:`miss_markdown`).

The causes are worked out by :mod:`dockercache.model.record` (pure: the record kept beside the cache against the
working tree) and filled in by :mod:`dockercache.run.records` after a build, or by ``dockercache explain``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

CauseKind = Literal[
    "files", "arg", "base", "instruction", "earlier", "absent", "unreadable", "unrecorded", "not-hit", "unknown"
]
#: Every kind of cause, most specific first.
CAUSE_KINDS: tuple[CauseKind, ...] = (
    "files",
    "arg",
    "base",
    "instruction",
    "earlier",
    "absent",
    "unreadable",
    "unrecorded",
    "not-hit",
    "unknown",
)
STEP_WIDTH = 60
"""The longest instruction a line quotes (the rest becomes ``...``)."""


@dataclass(frozen=True)
class Cause:
    """Why one step missed: its kind (:data:`CAUSE_KINDS`), a phrase, and the paths it names (files changed)."""

    kind: CauseKind
    text: str
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Miss:
    """A report row's first step that did not come from cache, and why."""

    service: str
    stage: str
    """The row (the target's stage); the step may be in a stage it builds on (``step_stage``)."""
    step: str
    """The instruction as progress names it (``COPY app/ /app/app/``)."""
    step_stage: str
    cause: Cause

    @property
    def target(self) -> str:
        return f"{self.service}/{self.stage}"

    def line(self) -> str:
        where = f"{self.step_stage}: " if self.step_stage != self.stage else ""
        return f"{self.target}: missed at `{where}{short(self.step)}`: {self.cause.text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "service": self.service,
            "stage": self.stage,
            "step_stage": self.step_stage,
            "step": self.step,
            "kind": self.cause.kind,
            "cause": self.cause.text,
            "paths": list(self.cause.paths),
        }


def short(text: str, width: int = STEP_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def files_phrase(changed: Iterable[str], added: Iterable[str], removed: Iterable[str], shown: int = 3) -> str:
    """``app/main.rb changed, lib/x.rb added (and 2 more files)``: the first few by name, then a count."""
    named = [(p, "changed") for p in changed] + [(p, "added") for p in added] + [(p, "removed") for p in removed]
    parts = [f"`{path}` {what}" for path, what in named[:shown]]
    rest = len(named) - shown
    text = ", ".join(parts)
    if rest > 0:
        text += f" (and {rest} more file{'s' if rest != 1 else ''})"
    return text


def miss_lines(misses: Iterable[Miss]) -> list[str]:
    """The lines under the report's table: one per missed row."""
    return [f"  {m.line()}" for m in misses]


def miss_markdown(misses: Iterable[Miss]) -> list[str]:
    """The annotation's lines: one per missed row."""
    out = []
    for m in misses:
        where = f"{m.step_stage}: " if m.step_stage != m.stage else ""
        step = short(m.step).replace("`", "'")
        out.append(f"- :mag: **{m.stage}** missed at `{where}{step}`: {m.cause.text}")
    return out
