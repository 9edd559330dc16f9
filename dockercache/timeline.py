"""Where a build's time goes: dockercache's own steps before and after the bake, and the bake it drives.

``build --json`` carries it as ``timings``: from the process's start (the interpreter's start-up and imports
included, as a user waits for them) to the first byte bake printed, the bake, and what came after it; and each
step inside, by name, with its start (seconds since the process started) and its length. Own time is the wall
time minus the bake's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere 0, so timings start at the first mark)."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
        return max(0.0, now - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime, in ticks
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Timeline:
    """Marks on one clock whose zero is the process's start."""

    origin: float = field(default_factory=lambda: time.monotonic() - process_age())
    steps: list[tuple[str, float, float]] = field(default_factory=list)
    """(name, start, seconds) of each step, in the order they ended."""
    first_bake_byte: float | None = None
    bake: tuple[float, float] | None = None
    """(start, end) of the bake runs: the first one's start, the last one's end."""

    def now(self) -> float:
        return time.monotonic() - self.origin

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = self.now()
        try:
            yield
        finally:
            self.steps.append((name, started, self.now() - started))

    def bake_started(self) -> None:
        started = self.now()
        self.bake = (self.bake[0] if self.bake else started, started)

    def bake_byte(self) -> None:
        if self.first_bake_byte is None:
            self.first_bake_byte = self.now()

    def bake_ended(self) -> None:
        if self.bake is not None:
            self.bake = (self.bake[0], self.now())

    def to_json(self, buildx_seconds: float) -> dict[str, Any]:
        total = self.now()
        start, end = self.bake or (total, total)
        return {
            "total": round(total, 3),
            "to_first_bake_byte": round(self.first_bake_byte, 3) if self.first_bake_byte is not None else None,
            "before_bake": round(start, 3),
            "bake": round(buildx_seconds, 3),
            "after_bake": round(total - end, 3),
            "own": round(total - buildx_seconds, 3),
            "steps": [{"name": n, "start": round(s, 3), "seconds": round(d, 3)} for n, s, d in self.steps],
        }
