"""Reading buildx's ``--progress=rawjson`` stream: which steps ran, which came from cache, what failed.

The stream is a sequence of pretty-printed JSON objects (BuildKit SolveStatus: vertexes, statuses, logs),
possibly followed by plain text when a build fails. Pure: feed it text, read the tallies.

A bake of several targets interleaves them in one stream: buildx prefixes each vertex name with its target
(``[ruby-final deps 2/2] RUN ...``, ``[ruby-final] exporting cache to registry``), a vertex that several
targets share carries one name per target, and the same Dockerfile step can show up as several vertices
(one per target's build context). :class:`Tally` attributes it all back to targets, counting every step once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Sequence
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
_TARGET_PREFIX = re.compile(r"^\[(?P<target>[A-Za-z0-9_-]+)(?P<sep>\] | )")
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


@dataclass(frozen=True)
class Step:
    """A Dockerfile instruction as progress names it: ``[<stage> <n>/<m>] <instruction>``."""

    stage: str
    n: int
    command: str

    @classmethod
    def parse(cls, name: str) -> Step | None:
        """The step a vertex name stands for; None for anything else, and for FROM (a source, never cached)."""
        match = _STEP.match(name)
        if not match or match.group("cmd").startswith("FROM "):
            return None
        return cls(match.group("stage"), int(match.group("n")), match.group("cmd"))


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


def is_cache_vertex(name: str) -> bool:
    return name.startswith((_CACHE_IMPORT, _CACHE_EXPORT))


def first_line(text: str) -> str:
    """The first line of ``text`` (an error's). A cut at a line break only: a secret of one line is kept whole
    or dropped whole, and the redactor masks each line of a secret of several on its own."""
    return text.strip().splitlines()[0] if text.strip() else text


@dataclass
class BuildEvents:
    """The state of one buildx run, folded from its SolveStatus objects."""

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
            name = str(raw.get("name", ""))
            vertex = self.vertexes.setdefault(digest, Vertex(digest, name))
            if name not in vertex.names:
                vertex.names.append(name)
            was_complete = vertex.completed is not None
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
            stream = log.get("stream")
            target.add_log(stream if isinstance(stream, int) else 1, data)
        return done

    def last_error_line(self) -> str | None:
        """buildx's own last word on a failed run (``ERROR: ...``), else its last line of text."""
        for line in reversed(self.text):
            if line.startswith("ERROR:"):
                return line.removeprefix("ERROR:").strip()
        return self.text[-1] if self.text else None


# ----------------------------------------------------------------------------------------- attribution


@dataclass(frozen=True)
class TargetInfo:
    """What attribution needs to know of a bake target."""

    name: str
    stage: str
    identity: str
    """Targets with the same identity (context, Dockerfile, args) share their Dockerfile steps."""
    graph: tuple[str, ...]
    """The Dockerfile stages this target builds, itself included."""


@dataclass
class Failure:
    """A vertex that failed: the step's name without the target prefix, its error, its output."""

    targets: list[str]
    name: str
    error: str
    logs: list[str]
    stage: str | None
    """The Dockerfile stage of the failing step, when it is one."""

    def describe(self) -> str:
        return f"{self.name}: {first_line(self.error)}"


@dataclass
class _Observation:
    target: str
    name: str
    """The vertex name without its target prefix."""
    vertex: Vertex


def _cached(observations: Sequence[_Observation]) -> bool:
    """No vertex standing for the step ran, and one finished from cache.

    With several targets BuildKit merges equal vertices: the duplicates it drops show up errored
    (``context canceled``) or never started; they did not run, and they are not the step's outcome.
    """
    finished = [o.vertex for o in observations if o.vertex.completed]
    ran = any(not v.cached and not v.error for v in finished)
    return not ran and any(v.cached for v in finished)


_Attribution = tuple[dict[str, dict[str, StepCount]], dict[str, tuple[datetime, datetime]]]
"""Per target: step counts by Dockerfile stage; and the first start and last end of the steps it owns."""


class Tally:
    """Per target: steps cached and total, time, cache problems, export outcome and failures.

    Every Dockerfile step counts once in the whole run: in the target of the step's own stage when that stage
    is a target, else in the first target (plan order: services as given, stages in Dockerfile order) whose
    graph contains it. Targets with the same context, Dockerfile and args (two services built from one
    Dockerfile) share their steps the same way. A step is cached when no vertex that stands for it ran.
    """

    def __init__(self, targets: Sequence[TargetInfo]) -> None:
        self.targets = list(targets)
        self._by_name = {t.name: t for t in self.targets}
        self._order = {t.name: i for i, t in enumerate(self.targets)}
        self.runs: list[tuple[BuildEvents, list[_Observation]]] = []
        self._attributed: _Attribution | None = None

    def _split(self, name: str, ran: Sequence[str]) -> tuple[str | None, str]:
        if len(ran) == 1:
            return ran[0], name  # buildx prefixes names only when a bake has several targets
        match = _TARGET_PREFIX.match(name)
        if match and match.group("target") in self._by_name:
            rest = name[match.end() :]
            return match.group("target"), rest if match.group("sep") == "] " else f"[{rest}"
        return None, name

    def add(self, events: BuildEvents, ran: Sequence[str]) -> None:
        """Fold in one buildx run of the targets named ``ran``."""
        observations = []
        for vertex in events.vertexes.values():
            for name in vertex.names:
                target, rest = self._split(name, ran)
                if target is not None:
                    observations.append(_Observation(target, rest, vertex))
        self.runs.append((events, observations))
        self._attributed = None

    def drop_last(self) -> None:
        """Forget the last run (one that failed for reasons of BuildKit's own and is run again)."""
        self.runs.pop()
        self._attributed = None

    def _observations(self) -> Iterator[_Observation]:
        for _, observations in self.runs:
            yield from observations

    def _owner(self, identity: str, stage: str, seen_in: set[str]) -> str:
        same = [t for t in self.targets if t.identity == identity]
        for candidates in (
            [t for t in same if t.stage == stage],
            [t for t in same if stage in t.graph],
            [t for t in same if t.name in seen_in],
        ):
            if candidates:
                return candidates[0].name
        return min(seen_in, key=self._order.__getitem__)

    def _attribute(self) -> _Attribution:
        """Steps per target and the span of the steps each owns (computed once for the runs added)."""
        if self._attributed is not None:
            return self._attributed
        found: dict[tuple[str, str, int], list[_Observation]] = {}
        for obs in self._observations():
            step = Step.parse(obs.name)
            if step is not None:
                identity = self._by_name[obs.target].identity
                found.setdefault((identity, step.stage, step.n), []).append(obs)
        counts: dict[str, dict[str, StepCount]] = {t.name: {} for t in self.targets}
        spans: dict[str, tuple[datetime, datetime]] = {}
        for (identity, stage, _), observations in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            owner = self._owner(identity, stage, {o.target for o in observations})
            count = counts[owner].setdefault(stage, StepCount())
            count.total += 1
            count.cached += _cached(observations)
            count.seconds += max(o.vertex.seconds for o in observations)
            for v in (o.vertex for o in observations if o.vertex.started and o.vertex.completed):
                assert v.started and v.completed
                first, last = spans.get(owner, (v.started, v.completed))
                spans[owner] = (min(first, v.started), max(last, v.completed))
        self._attributed = (counts, spans)
        return counts, spans

    def steps(self) -> dict[str, dict[str, StepCount]]:
        """Per target, per Dockerfile stage: steps total and cached, and their time."""
        counts, _ = self._attribute()
        graph_order = {t.name: {s: i for i, s in enumerate(t.graph)} for t in self.targets}
        return {
            name: dict(sorted(stages.items(), key=lambda kv: graph_order[name].get(kv[0], len(graph_order[name]))))
            for name, stages in counts.items()
        }

    def seconds(self) -> dict[str, float]:
        """Per target: from its first vertex's start to its last one's end, summed over runs; for a stage that
        ran inside another target, from the first to the last of the steps counted for it."""
        out = dict.fromkeys(self._by_name, 0.0)
        ran: set[str] = set()
        for _, observations in self.runs:
            spans: dict[str, tuple[datetime, datetime]] = {}
            for obs in observations:
                v = obs.vertex
                if v.started and v.completed:
                    first, last = spans.get(obs.target, (v.started, v.completed))
                    spans[obs.target] = (min(first, v.started), max(last, v.completed))
            for name, (first, last) in spans.items():
                out[name] += (last - first).total_seconds()
                ran.add(name)
        _, owned = self._attribute()
        for name, (first, last) in owned.items():
            if name not in ran:
                out[name] = (last - first).total_seconds()
        return out

    def cache_problems(self, run: int = -1) -> dict[str, list[str]]:
        """Per target: cache imports and exports that failed in a run (BuildKit goes on without them).

        A cache ref that does not exist yet (a new branch, a first build) is a plain miss, not a problem. An
        import that several targets share is reported once, at the first of them.
        """
        out: dict[str, list[str]] = {t.name: [] for t in self.targets}
        first_seen: dict[str, str] = {}
        _, observations = self.runs[run]
        for obs in sorted(observations, key=lambda o: self._order[o.target]):
            v = obs.vertex
            # A ref that does not exist yet is a miss on import only: an export answered "not found" wrote nothing.
            miss = obs.name.startswith(_CACHE_IMPORT) and v.error is not None and v.error.rstrip().endswith("not found")
            problem = v.error and is_cache_vertex(obs.name) and not miss
            if problem and first_seen.setdefault(v.digest, obs.target) == obs.target:
                out[obs.target].append(f"{obs.name}: {first_line(v.error or '')}")
        return out

    def imported(self, run: int = -1) -> dict[str, list[str]]:
        """Per target: the cache refs whose manifest BuildKit read in a run (the sources its hits can come from),
        in the order it read them."""
        out: dict[str, list[str]] = {t.name: [] for t in self.targets}
        _, observations = self.runs[run]
        for obs in observations:
            if obs.name.startswith(_CACHE_IMPORT) and obs.vertex.completed and not obs.vertex.error:
                ref = obs.name.removeprefix(_CACHE_IMPORT).strip()
                if ref not in out[obs.target]:
                    out[obs.target].append(ref)
        return out

    def exported(self, run: int = -1) -> dict[str, bool]:
        """Per target: whether a cache export finished without error in a run."""
        out = dict.fromkeys(self._by_name, False)
        _, observations = self.runs[run]
        failed = set()
        for obs in observations:
            if obs.name.startswith(_CACHE_EXPORT):
                if obs.vertex.error:
                    failed.add(obs.target)
                elif obs.vertex.completed:
                    out[obs.target] = True
        return {name: ok and name not in failed for name, ok in out.items()}

    def failures(self, run: int = -1) -> list[Failure]:
        """The vertices that failed in a run (not cache transfers, not the cancellations that followed)."""
        _, observations = self.runs[run]
        by_vertex: dict[str, Failure] = {}
        for obs in sorted(observations, key=lambda o: self._order[o.target]):
            v = obs.vertex
            if not v.error or is_cache_vertex(obs.name) or "context canceled" in v.error or v.error == "canceled":
                continue
            failure = by_vertex.get(v.digest)
            if failure is None:
                step = Step.parse(obs.name)
                failure = Failure([], obs.name, v.error, v.output(), step.stage if step else None)
                by_vertex[v.digest] = failure
            failure.targets.append(obs.target)
        return list(by_vertex.values())
