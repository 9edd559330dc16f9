"""One ``docker buildx bake`` run, followed as it goes: its bake file written where only this user reads it, its
progress stream decoded into vertices (printed as they finish, or drawn live), a watchdog that stops it when a
blob transfer stalls, and what it left behind (:class:`BakeRun`). Whether to run it again is :mod:`.build`'s."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BuildFailed
from ..model import Plan
from ..output.console import Console, GroupKind
from ..output.live import Ticker
from ..output.progress import BuildEvents
from ..output.rawjson import RawJsonDecoder
from ..output.results import RunResult
from ..output.tally import Tally
from ..timeline import Timeline
from .port import DockerPort


@dataclasses.dataclass
class BakeRun:
    """One ``docker buildx bake`` run: did it succeed, and what it left in its metadata file."""

    succeeded: bool
    events: BuildEvents
    metadata: dict[str, Any]
    stderr: str = ""
    stalled: str | None = None
    """Why it was stopped: a blob transfer that made no progress for ``settings.stall_seconds``."""


class Watchdog:
    """Stops a bake run whose blob transfers stall (a half-dead connection to a cache would hold the build for
    ever): a thread looks every second, and stops the run when a transfer made no progress for ``seconds``."""

    def __init__(self, events: BuildEvents, seconds: float, stop: Callable[[], None] | None) -> None:
        self.events, self.seconds, self.stop = events, seconds, stop
        self.stalled: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dockercache-watchdog", daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.seconds / 4)):
            transfer = self.events.stalled(self.seconds)
            if transfer is not None:
                self.stalled = transfer.describe(self.seconds)
                if self.stop is not None:
                    self.stop()
                return

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@dataclasses.dataclass
class Baker:
    """Runs ``docker buildx bake`` for a plan with the build's Docker environment (``env``: the stores' own
    logins, :func:`dockercache.adapters.dockerconfig.run_config`), timing it in ``timeline``."""

    docker: DockerPort
    console: Console
    timeline: Timeline
    env: Mapping[str, str]

    def __call__(self, plan: Plan, tally: Tally, run: RunResult, what: str, group: GroupKind = "expanded") -> BakeRun:
        """Bake the plan's running targets under a log group saying ``what``; the run is added to ``tally`` and
        its wall time to ``run.buildx_seconds``."""
        targets = plan.running
        names = ", ".join(f"{s.name} ({', '.join(t.stage for t in s.targets if t.runs)})" for s in plan.services)
        pushes = any(t.push for t in targets)
        self.console.section(f":docker: {what}{' and push' if pushes else ''}: {names}", group)
        events = BuildEvents()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="dockercache-") as tmp:
            # Build args travel in this file, never in process arguments: private to this user, removed after.
            bake_file = Path(tmp) / "bake.json"
            bake_file.touch(mode=0o600)
            bake_file.write_text(json.dumps(plan.bake_definition(), indent=2))
            metadata_file = Path(tmp) / "metadata.json"
            env = {**plan.bake_env, **self.env}
            self.timeline.bake_started()
            chunks = self.docker.bake(plan.bake_argv(str(bake_file), str(metadata_file)), env)
            try:
                succeeded, stderr, stalled = self._follow(chunks, events, plan, tally)
            finally:
                run.buildx_seconds += time.monotonic() - started
                self.timeline.bake_ended()
            metadata = _read_json(metadata_file)
        tally.add(events, [t.name for t in targets])
        return BakeRun(succeeded and stalled is None, events, metadata, stderr, stalled)

    def _follow(
        self, chunks: Iterator[str], events: BuildEvents, plan: Plan, tally: Tally
    ) -> tuple[bool, str, str | None]:
        """Fold buildx's stream into ``events`` until it ends; whether it succeeded, what it said on stderr, and
        why the watchdog stopped it (None: it did not)."""
        targets = plan.running
        decoder = RawJsonDecoder()
        succeeded, stderr, stopped = True, "", True
        live = self.console.live([t.name for t in targets], tally)
        ticker = Ticker(live) if live is not None else contextlib.nullcontext()
        watchdog = Watchdog(events, plan.stall_seconds, getattr(chunks, "stop", None))
        try:
            with ticker, watchdog:
                for chunk in chunks:
                    self.timeline.bake_byte()
                    for item in decoder.feed(chunk):
                        for vertex in events.apply(item):
                            self.console.step(vertex)
                        if live is not None:
                            live.update(events)
            stopped = False
        except BuildFailed as exc:
            succeeded, stderr, stopped = False, exc.stderr, False
        finally:
            _close(chunks)  # an interrupt stops buildx here and now, not when the generator is collected
            for vertex in events.finish(decoder.close()):
                self.console.step(vertex)
            if live is not None:
                live.update(events)
                live.finish(None if stopped else {t.name: succeeded for t in targets})
        return succeeded, stderr, watchdog.stalled


def _close(chunks: Iterator[str]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
