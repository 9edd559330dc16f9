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

from ..secrets import shorten
from .progress import BuildEvents, Vertex, cancelled
from .tally import TARGET_PREFIX, Failure, Tally, TargetInfo

UP_AND_CLEAR = "\x1b[{n}F"
CLEAR_LINE = "\x1b[2K"
SPINNER = "|/-\\"
TICK = 0.25


@dataclass
class TargetLine:
    name: str
    started: float | None = None
    finished: float | None = None
    current: str | None = None
    cached: int = 0
    total: int = 0
    failed: bool = False
    cancelled: bool = False
    """Stopped before it finished: bake cancelled it (another target failed), or the run was interrupted."""
    exported: bool = False
    """An export of its (image, cache) finished: with nothing else running, the target is done."""
    stopped: bool = False
    """A step or export of it was cancelled (an interrupt, bake stopping it): never shown as a success."""


def owner(vertex_name: str, targets: Sequence[str]) -> str | None:
    """The bake target a vertex name carries (``[ruby-final deps 2/3] RUN ...``); with one target, that one."""
    if len(targets) == 1:
        return targets[0]
    match = TARGET_PREFIX.match(vertex_name)
    if match and match.group("target") in targets:
        return match.group("target")
    return None


def _strip_target(name: str, target: str) -> str:
    """``[ruby-final deps 2/3] RUN x`` -> ``[deps 2/3] RUN x``."""
    return re.sub(rf"^\[{re.escape(target)} ", "[", name, count=1).replace(f"[{target}]", "").strip()


_EXPORTS = ("exporting to ", "exporting cache", "pushing ", "writing image", "naming to ")
"""The vertexes a target ends with: its image and cache exports."""


@dataclass
class LiveDisplay:
    """Folds the run's vertexes into one line per target and redraws them in place.

    A line's steps are counted as the report counts them (:class:`~dockercache.output.tally.Tally`, with the runs
    before this one): the steps of the target's own row and of the rows of the stages it builds that run no
    target of their own, so the lines add up to the report's table. A target is shown finished once an export
    of its finished and nothing of it runs, and in the last frame (:meth:`finish`).

    Every line is masked by ``redact`` (the console's redactor) before it is cut to ``width``: a step's name
    can carry a build arg's value.
    """

    targets: Sequence[str]
    stream: TextIO
    redact: Callable[[str], str]
    clock: Callable[[], float] = time.monotonic
    width: int = 120
    tally: Tally | None = None
    """The run's tally (every target of the plan, the runs so far); without one, each target alone."""
    lines: dict[str, TargetLine] = field(default_factory=dict)
    drawn: int = 0
    frame: int = 0

    def __post_init__(self) -> None:
        self.lines = {t: TargetLine(t) for t in self.targets}
        if self.tally is None:
            self.tally = Tally([TargetInfo(t, t, t, ()) for t in self.targets])
        self._lock = threading.Lock()
        self._seen = -1
        self._failures: list[Failure] = []

    def _line_of(self, tally: Tally) -> dict[str, str]:
        """The line each target's row adds to: its own, else the first target of this run of the same
        Dockerfile that builds its stage (the target it is built in)."""
        out = {}
        running = [t for t in tally.targets if t.name in self.lines]
        for info in tally.targets:
            if info.name in self.lines:
                out[info.name] = info.name
                continue
            host = next((t for t in running if t.identity == info.identity and info.stage in t.graph), None)
            if host is not None:
                out[info.name] = host.name
        return out

    def update(self, events: BuildEvents) -> None:
        """Recompute every target's line from the run's vertexes so far (when they changed)."""
        if events.changes == self._seen:
            return
        now = self.clock()
        assert self.tally is not None
        tally = self.tally.with_run(events, self.targets)
        counts: dict[str, tuple[int, int]] = dict.fromkeys(self.lines, (0, 0))
        steps = tally.steps()
        for name, line_name in self._line_of(tally).items():
            cached, total = counts[line_name]
            for count in steps[name].values():
                cached, total = cached + count.cached, total + count.total
            counts[line_name] = (cached, total)
        with self._lock:
            self._seen = events.changes
            self._failures = tally.failures()
            per_target: dict[str, list[tuple[Vertex, str]]] = {t: [] for t in self.targets}
            for vertex in events.vertexes.values():
                for name in vertex.names or [vertex.name]:
                    target = owner(name, self.targets)
                    if target is not None and all(v is not vertex for v, _ in per_target[target]):
                        per_target[target].append((vertex, _strip_target(name, target)))
            for target, vertexes in per_target.items():
                line = self.lines[target]
                if vertexes and line.started is None:
                    line.started = now
                line.cached, line.total = counts[target]
                line.failed = any(target in f.targets for f in self._failures)
                line.exported = any(v.completed and not v.error and n.startswith(_EXPORTS) for v, n in vertexes)
                line.stopped = any(cancelled(v.error) for v, _ in vertexes)
                running = [n for v, n in vertexes if v.started and not v.completed]
                line.current = running[-1] if running else None
                # Done: it failed, or it exported with no step left running, none cancelled, and a step counted
                # (an export seen before its steps are is no "+ 0/0 steps cached" flash).
                done = not running and (line.failed or (line.exported and not line.stopped and line.total > 0))
                if done and line.finished is None:
                    line.finished = now
                elif not done:
                    line.finished = None

    def finish(self, succeeded: Mapping[str, bool] | None = None) -> None:
        """The last frame: every target as bake's verdict has it (``succeeded``; a vertex error, as a cache
        import's miss, is not one). A target that did not succeed is failed when a step of its failed (or one
        of a stage it builds), else cancelled; when no step failed at all, every one is failed, as the report
        has it. Without a verdict (the run was interrupted), a target not finished by then is cancelled."""
        now = self.clock()
        with self._lock:
            assert self.tally is not None
            graphs = {t.name: t.graph for t in self.tally.targets}
            stages = {f.stage for f in self._failures if f.stage}
            for line in self.lines.values():
                if succeeded is not None and not succeeded.get(line.name, True):
                    hit = line.failed or bool(stages & set(graphs.get(line.name, ())))
                    line.failed = hit or not self._failures
                    line.cancelled = not line.failed
                elif succeeded is None and (line.finished is None or line.stopped):
                    line.cancelled = True
                elif succeeded is not None:
                    line.failed = False
                if line.finished is None:
                    line.finished = now
                line.current = None
        self.draw()

    def render(self) -> list[str]:
        """The frame: a line per target, masked, then cut to ``width``."""
        now = self.clock()
        out = []
        for line in self.lines.values():
            elapsed = ((line.finished or now) - line.started) if line.started is not None else 0.0
            if line.finished is not None:
                mark = "x" if line.failed else "-" if line.cancelled else "+"
                what = ", cancelled" if line.cancelled and not line.failed else ""
                text = f" {mark} {line.name}  {line.cached}/{line.total} steps cached{what}  {elapsed:.1f}s"
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
