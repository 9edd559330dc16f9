"""Reading buildx's ``--progress=rawjson`` stream: which steps ran, which came from cache, what failed.

The stream is a sequence of pretty-printed JSON objects (BuildKit SolveStatus: vertexes, statuses, logs),
possibly followed by plain text when a build fails. Pure: feed it text, read the tallies.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_STEP = re.compile(
    r"^\[(?:(?P<platform>[a-z0-9]+/[a-z0-9]+(?:/[a-z0-9]+)?) )?(?P<stage>[^\s\]]+) (?P<n>\d+)/(?P<m>\d+)\] "
    r"(?P<cmd>.*)$",
    re.DOTALL,
)
_CACHE_IMPORT = "importing cache manifest from "
_CACHE_EXPORT = "exporting cache"
MAX_LOG_LINES = 40


@dataclass
class Vertex:
    digest: str
    name: str
    started: datetime | None = None
    completed: datetime | None = None
    cached: bool = False
    error: str | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def step(self) -> re.Match[str] | None:
        return _STEP.match(self.name)

    @property
    def is_step(self) -> bool:
        """A Dockerfile instruction that makes a layer; FROM is a source, never 'cached', so not counted."""
        match = self.step
        return bool(match) and not match.group("cmd").startswith("FROM ")  # type: ignore[union-attr]

    @property
    def stage(self) -> str | None:
        match = self.step
        return match.group("stage") if match else None

    @property
    def seconds(self) -> float:
        if self.started and self.completed:
            return max(0.0, (self.completed - self.started).total_seconds())
        return 0.0


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    # Go writes nanoseconds; Python's fromisoformat takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class RawJsonDecoder:
    """Turns chunks of the stream into JSON objects and plain-text lines."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> Iterator[dict[str, Any] | str]:
        self._buffer += text
        while True:
            stripped = self._buffer.lstrip()
            if not stripped:
                self._buffer = ""
                return
            if stripped[0] == "{":
                try:
                    obj, end = self._decoder.raw_decode(stripped)
                except json.JSONDecodeError:
                    self._buffer = stripped
                    return  # an object still arriving
                self._buffer = stripped[end:]
                if isinstance(obj, dict):
                    yield obj
                continue
            line, sep, rest = stripped.partition("\n")
            if not sep:
                self._buffer = stripped
                return
            self._buffer = rest
            yield line.rstrip()

    def close(self) -> Iterator[dict[str, Any] | str]:
        rest, self._buffer = self._buffer.strip(), ""
        if rest:
            try:
                obj = json.loads(rest)
            except json.JSONDecodeError:
                yield from rest.splitlines()
            else:
                if isinstance(obj, dict):
                    yield obj


@dataclass
class StepCount:
    total: int = 0
    cached: int = 0
    seconds: float = 0.0


@dataclass
class BuildEvents:
    """The state of one build, folded from its SolveStatus objects."""

    vertexes: dict[str, Vertex] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)

    def apply(self, item: dict[str, Any] | str) -> list[Vertex]:
        """Fold one object (or text line) in; returns the vertexes that completed with it."""
        if isinstance(item, str):
            if item.strip():
                self.text.append(item)
            return []
        done: list[Vertex] = []
        for raw in item.get("vertexes") or []:
            digest = raw.get("digest")
            if not isinstance(digest, str):
                continue
            vertex = self.vertexes.setdefault(digest, Vertex(digest, str(raw.get("name", ""))))
            was_complete = vertex.completed is not None
            vertex.name = str(raw.get("name", vertex.name))
            vertex.started = vertex.started or _time(raw.get("started"))
            completed = _time(raw.get("completed"))
            if completed:
                vertex.completed = completed
                started = _time(raw.get("started"))
                if started:
                    vertex.started = started
            vertex.cached = vertex.cached or bool(raw.get("cached"))
            if raw.get("error"):
                vertex.error = str(raw["error"])
            if vertex.completed and not was_complete:
                done.append(vertex)
        for log in item.get("logs") or []:
            target = self.vertexes.get(str(log.get("vertex")))
            if target is None:
                continue
            try:
                data = base64.b64decode(log.get("data") or "").decode(errors="replace")
            except (binascii.Error, ValueError):
                continue
            target.logs.extend(data.splitlines())
            del target.logs[:-MAX_LOG_LINES]
        return done

    def steps(self) -> list[Vertex]:
        return [v for v in self.vertexes.values() if v.is_step]

    def by_stage(self) -> dict[str, StepCount]:
        """Step counts per Dockerfile stage label, in first-seen order."""
        out: dict[str, StepCount] = {}
        for vertex in self.steps():
            count = out.setdefault(vertex.stage or "?", StepCount())
            count.total += 1
            count.cached += vertex.cached
            count.seconds += vertex.seconds
        return out

    def _cache_errors(self) -> list[Vertex]:
        return [v for v in self.vertexes.values() if v.error and v.name.startswith((_CACHE_IMPORT, _CACHE_EXPORT))]

    def cache_problems(self) -> list[str]:
        """Cache imports and exports that failed (BuildKit goes on without them when ignore-error=true).

        A cache ref that does not exist yet (a new branch, a first build) is a plain miss, not a problem.
        """
        return [
            f"{v.name}: {first_line(v.error or '')}"
            for v in self._cache_errors()
            if not (v.error or "").rstrip().endswith("not found")
        ]

    def cache_misses(self) -> list[str]:
        """Cache refs that were asked for but do not exist (yet)."""
        return [
            v.name.removeprefix(_CACHE_IMPORT)
            for v in self._cache_errors()
            if (v.error or "").rstrip().endswith("not found")
        ]

    def failure(self) -> str | None:
        """The reason the build failed: the failing step and its error, else buildx's last text line."""
        for vertex in self.vertexes.values():
            if vertex.error and not vertex.name.startswith((_CACHE_IMPORT, _CACHE_EXPORT)):
                if "context canceled" in vertex.error:
                    continue
                return f"{vertex.name}: {first_line(vertex.error)}"
        for line in reversed(self.text):
            if line.startswith("ERROR:"):
                return line.removeprefix("ERROR:").strip()
        return self.text[-1] if self.text else None

    def failed_vertex(self) -> Vertex | None:
        for vertex in self.vertexes.values():
            if vertex.error and vertex.logs:
                return vertex
        return None


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
