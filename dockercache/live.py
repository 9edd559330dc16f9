"""The live progress display on a terminal: one line per bake target with its current step and a timer;
a finished target collapses to its cached/total line (as ``docker buildx``'s own display does).

Plain lines (one per finished step) stay the output when stderr is not a terminal or on CI; ``--progress``
chooses (``auto``, ``tty``, ``plain``, ``quiet``). Written by hand with two ANSI sequences (cursor up, clear
line): a library such as rich would add 100 ms of import to every run for the same few lines.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from .progress import BuildEvents, Step, Vertex
from .secrets import shorten

UP_AND_CLEAR = "\x1b[{n}F"
CLEAR_LINE = "\x1b[2K"
SPINNER = "|/-\\"
TICK = 0.25

_TARGET = re.compile(r"^\[(?P<target>[A-Za-z0-9_.-]+)[ \]]")


@dataclass
class TargetLine:
    name: str
    started: float | None = None
    finished: float | None = None
    current: str | None = None
    cached: int = 0
    total: int = 0
    failed: bool = False


def owner(vertex_name: str, targets: Sequence[str]) -> str | None:
    """The bake target a vertex name carries (``[ruby-final deps 2/3] RUN ...``); with one target, that one."""
    if len(targets) == 1:
        return targets[0]
    match = _TARGET.match(vertex_name)
    if match and match.group("target") in targets:
        return match.group("target")
    return None


def _strip_target(name: str, target: str) -> str:
    """``[ruby-final deps 2/3] RUN x`` -> ``[deps 2/3] RUN x``."""
    return re.sub(rf"^\[{re.escape(target)} ", "[", name, count=1).replace(f"[{target}]", "").strip()


@dataclass
class LiveDisplay:
    """Folds the run's vertexes into one line per target and redraws them in place.

    Every line is masked by ``redact`` (the console's redactor) before it is cut to ``width``: a step's name
    can carry a build arg's value.
    """

    targets: Sequence[str]
    stream: TextIO
    redact: Callable[[str], str]
    clock: Callable[[], float] = time.monotonic
    width: int = 120
    lines: dict[str, TargetLine] = field(default_factory=dict)
    drawn: int = 0
    frame: int = 0

    def __post_init__(self) -> None:
        self.lines = {t: TargetLine(t) for t in self.targets}
        self._lock = threading.Lock()

    def update(self, events: BuildEvents) -> None:
        """Recompute every target's line from the run's vertexes so far."""
        now = self.clock()
        with self._lock:
            per_target: dict[str, list[Vertex]] = {t: [] for t in self.targets}
            for vertex in events.vertexes.values():
                for name in vertex.names or [vertex.name]:
                    target = owner(name, self.targets)
                    if target is not None:
                        per_target[target].append(vertex)
                        break
            for target, vertexes in per_target.items():
                line = self.lines[target]
                if vertexes and line.started is None:
                    line.started = now
                steps = [v for v in vertexes if Step.parse(_strip_target(v.name, target))]
                line.total = len(steps)
                line.cached = sum(1 for v in steps if v.cached)
                line.failed = any(v.error for v in vertexes)
                running = [v for v in vertexes if v.started and not v.completed]
                line.current = _strip_target(running[-1].name, target) if running else None
                done = bool(vertexes) and not running and all(v.completed for v in vertexes)
                if done and line.finished is None:
                    line.finished = now
                elif not done:
                    line.finished = None

    def finish(self, succeeded: Mapping[str, bool] | None = None) -> None:
        """The last frame: every target as finished (or failed)."""
        now = self.clock()
        with self._lock:
            for line in self.lines.values():
                if line.finished is None:
                    line.finished = now
                if succeeded is not None:  # bake's own verdict: a vertex error (a cache import miss) is not one
                    line.failed = not succeeded.get(line.name, True)
                line.current = None
        self.draw()

    def render(self) -> list[str]:
        """The frame: a line per target, masked, then cut to ``width``."""
        now = self.clock()
        out = []
        for line in self.lines.values():
            elapsed = ((line.finished or now) - line.started) if line.started is not None else 0.0
            if line.finished is not None:
                mark = "x" if line.failed else "+"
                text = f" {mark} {line.name}  {line.cached}/{line.total} steps cached  {elapsed:.1f}s"
            elif line.started is None:
                text = f"   {line.name}  waiting"
            else:
                spin = SPINNER[self.frame % len(SPINNER)]
                step = f"  {line.current}" if line.current else ""
                text = f" {spin} {line.name}  {elapsed:.1f}s{step}"
            out.append(shorten(text, self.width, self.redact))
        return out

    def draw(self) -> None:
        with self._lock:
            self.frame += 1
            rendered = self.render()
            prefix = UP_AND_CLEAR.format(n=self.drawn) if self.drawn else ""
            self.stream.write(prefix + "".join(f"{CLEAR_LINE}{text}\n" for text in rendered))
            self.stream.flush()
            self.drawn = len(rendered)


class Ticker:
    """Redraws a display every TICK seconds (the timers move while a long step runs) until stopped."""

    def __init__(self, display: LiveDisplay, interval: float = TICK) -> None:
        self.display = display
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dockercache-live", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.display.draw()

    def __enter__(self) -> Ticker:
        self.display.draw()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
