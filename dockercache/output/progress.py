"""The state of one buildx run, folded from its ``--progress=rawjson`` stream: every vertex (started, completed,
cached, its error and last lines of output), buildx's own plain text, and the blob transfers a watchdog reads.

The stream's objects are BuildKit SolveStatus (vertexes, statuses, logs), split out of the text by
:class:`~dockercache.output.rawjson.RawJsonDecoder`. Pure: feed it objects, read the state; which target a
vertex counts for is :mod:`.tally`'s.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_LOG_LINES = 40


@dataclass
class Vertex:
    digest: str
    name: str
    names: list[str] = field(default_factory=list)
    """Every name the vertex was reported under (one per bake target that shares it)."""
    started: datetime | None = None
    completed: datetime | None = None
    cached: bool = False
    error: str | None = None
    logs: list[str] = field(default_factory=list)
    """The last MAX_LOG_LINES whole lines of the step's output."""
    partial: dict[int, str] = field(default_factory=dict)
    """Per output stream, a line still arriving (no line break yet)."""

    @property
    def seconds(self) -> float:
        if self.started and self.completed:
            return max(0.0, (self.completed - self.started).total_seconds())
        return 0.0

    def add_log(self, stream: int, data: str) -> None:
        """Fold in a chunk of output. BuildKit sends output in chunks that may end mid-line; a line is kept
        whole, so that a value in it (a secret the redactor masks) is never split across two lines."""
        lines = (self.partial.pop(stream, "") + data).splitlines(keepends=True)
        if lines and lines[-1].splitlines()[0] == lines[-1]:  # no line break yet: more of it may follow
            self.partial[stream] = lines.pop()
        self.logs.extend(line.splitlines()[0] for line in lines)
        del self.logs[:-MAX_LOG_LINES]

    def output(self) -> list[str]:
        """The last MAX_LOG_LINES lines of output, a line still without its line break included."""
        return [*self.logs, *self.partial.values()][-MAX_LOG_LINES:]


def cancelled(error: str | None) -> bool:
    """An error that only says the vertex was stopped: by bake when another target failed, or by BuildKit when
    another session solving the same vertex went away (it may then solve the vertex again, successfully)."""
    return error is not None and ("context canceled" in error or error.strip() == "canceled")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    # Go writes nanoseconds; Python's fromisoformat takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def first_line(text: str) -> str:
    """The first line of ``text`` (an error's). A cut at a line break only: a secret of one line is kept whole
    or dropped whole, and the redactor masks each line of a secret of several on its own."""
    return text.strip().splitlines()[0] if text.strip() else text


@dataclass
class Transfer:
    """A blob BuildKit is fetching (a cache layer, an image layer): a status named by the blob's digest."""

    id: str
    vertex: str
    current: int = 0
    total: int | None = None
    done: bool = False
    moved: float = 0.0
    """When ``current`` last changed (or the transfer was first seen), by the events' clock."""
    seen: float = 0.0
    """When BuildKit last reported it (it does every fraction of a second while a fetch is open)."""

    def describe(self, seconds: float) -> str:
        so_far = f"{self.current} of {self.total} bytes" if self.total else f"{self.current} bytes"
        return f"blob {self.id} made no progress for {seconds:.0f} s ({so_far})"


_BLOB_STATUS = re.compile(r"sha256:[0-9a-f]{64}")
REPORTED_WITHIN = 5.0
"""Seconds within which BuildKit has reported a fetch for it to count as open (it does so every 150 ms or so)."""


@dataclass
class BuildEvents:
    """The state of one buildx run, folded from its SolveStatus objects.

    A vertex's state is its latest completion, and a completion without error is final: BuildKit can report a
    vertex shared by several sessions as cancelled (``context canceled``) and then, solved again, as completed;
    it is a success, and a cancellation reported after that (another session's) does not undo it.
    """

    vertexes: dict[str, Vertex] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    changes: int = field(default=0, init=False)
    """How many vertex updates were folded in (a display redraws only when it moved)."""
    transfers: dict[str, Transfer] = field(default_factory=dict)
    """Blob fetches by vertex and digest, with when each last moved (:meth:`stalled`)."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _reported: set[str] = field(default_factory=set, init=False, repr=False)
    _held: dict[str, Vertex] = field(default_factory=dict, init=False, repr=False)

    def apply(self, item: dict[str, Any] | str) -> list[Vertex]:
        """Fold one object (or text line) in; returns the vertexes whose final state came with it, each once.

        Final: completed without error, or with an error other than a cancellation. A cancelled vertex is held
        back until it completes again (BuildKit solving it once more) or the stream ends (:meth:`finish`).
        """
        if isinstance(item, str):
            if item.strip():
                self.text.append(item)
            return []
        done: list[Vertex] = []
        for raw in item.get("vertexes") or []:
            digest = raw.get("digest")
            if not isinstance(digest, str):
                continue
            self.changes += 1
            name = str(raw.get("name", ""))
            vertex = self.vertexes.setdefault(digest, Vertex(digest, name))
            if name not in vertex.names:
                vertex.names.append(name)
            self._fold(vertex, raw)
            if vertex.completed and digest not in self._reported:
                if cancelled(vertex.error):
                    self._held[digest] = vertex
                else:
                    self._held.pop(digest, None)
                    self._reported.add(digest)
                    done.append(vertex)
        for status in item.get("statuses") or []:
            self._transfer(status)
        for log in item.get("logs") or []:
            target = self.vertexes.get(str(log.get("vertex")))
            if target is None:
                continue
            try:
                data = base64.b64decode(log.get("data") or "").decode(errors="replace")
            except (binascii.Error, ValueError):
                continue
            stream = log.get("stream")
            target.add_log(stream if isinstance(stream, int) else 1, data)
        return done

    def _transfer(self, status: dict[str, Any]) -> None:
        name, vertex = str(status.get("id", "")), str(status.get("vertex", ""))
        if not _BLOB_STATUS.fullmatch(name):
            return  # not a blob fetch (reading the bake file, extracting a layer: no bytes to watch)
        transfer = self.transfers.setdefault(f"{vertex} {name}", Transfer(name, vertex, moved=self.clock()))
        transfer.seen = self.clock()
        current = status.get("current")
        if isinstance(current, int) and current != transfer.current:
            transfer.current, transfer.moved = current, self.clock()
        if isinstance(status.get("total"), int):
            transfer.total = status["total"]
        if status.get("completed"):
            transfer.done = True

    def stalled(self, seconds: float) -> Transfer | None:
        """A blob fetch BuildKit still reports as open that made no progress for ``seconds`` (None: all move).

        Not its vertex's state: BuildKit reports a lazily fetched cache layer under the vertex that resolved it,
        long completed. A fetch it stopped reporting is not one it waits for. Safe to call from another thread
        than the one folding events in."""
        now = self.clock()
        for transfer in list(self.transfers.values()):
            open_now = not transfer.done and now - transfer.seen <= REPORTED_WITHIN
            if open_now and now - transfer.moved > seconds:
                return transfer
        return None

    @staticmethod
    def _fold(vertex: Vertex, raw: dict[str, Any]) -> None:
        started, completed = _time(raw.get("started")), _time(raw.get("completed"))
        error = str(raw["error"]) if raw.get("error") else None
        succeeded = vertex.completed is not None and vertex.error is None
        if succeeded and (error is not None or completed is None):
            vertex.cached = vertex.cached or bool(raw.get("cached"))
            return  # a success is final; an error or a start reported after it is another session's
        again = completed is None and started and vertex.completed and started > vertex.completed
        if again and cancelled(vertex.error):
            vertex.started, vertex.completed, vertex.error = started, None, None  # solved again after a cancellation
        vertex.started = vertex.started or started
        if completed:
            vertex.completed = completed
            if started:
                vertex.started = started
            vertex.error = error
        elif error:
            vertex.error = error
        vertex.cached = vertex.cached or bool(raw.get("cached"))

    def finish(self, items: Iterable[dict[str, Any] | str] = ()) -> list[Vertex]:
        """Fold in the stream's last items; returns the vertexes whose final state came with them, then the
        cancelled ones held back, but not those of which another vertex of the same name completed (a duplicate
        BuildKit merged away: the step itself did not stop)."""
        done = [vertex for item in items for vertex in self.apply(item)]
        succeeded = {n for v in self.vertexes.values() if v.completed and not v.error for n in v.names}
        for digest, vertex in list(self._held.items()):
            del self._held[digest]
            self._reported.add(digest)
            if not set(vertex.names) <= succeeded:
                done.append(vertex)
        return done

    def last_error_line(self) -> str | None:
        """buildx's own last word on a failed run (``ERROR: ...``), else its last line of text."""
        for line in reversed(self.text):
            if line.startswith("ERROR:"):
                return line.removeprefix("ERROR:").strip()
        return self.text[-1] if self.text else None
