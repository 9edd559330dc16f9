"""Reading buildx's ``--progress=rawjson`` stream: which steps ran, which came from cache, what failed.

The stream is a sequence of pretty-printed JSON objects (BuildKit SolveStatus: vertexes, statuses, logs),
possibly followed by plain text when a build fails. Pure: feed it text, read the tallies.

A bake of several targets interleaves them in one stream: buildx prefixes each vertex name with its target
(``[ruby-final deps 2/2] RUN ...``, ``[ruby-final] exporting cache to registry``), a vertex that several
targets share carries one name per target, and the same Dockerfile step can show up as several vertices
(one per target's build context). :class:`Tally` attributes it all back to targets, counting every step once.

How BuildKit's Dockerfile frontend names a step: ``[<platform> <stage> <n>/<m>] <instruction>``, the platform
only when several are built, the stage only when it has a name (an unnamed stage's steps are ``[2/3] RUN ...``;
some versions may write dockercache's own label, ``[stage-0 2/3]``: both are read), and ``n`` padded with spaces
to the width of ``m`` (``[deps  2/12]``, ``[ 2/12]``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_STEP = re.compile(
    r"^\[(?:(?P<platform>[^\s\]/]+/[^\s\]]+) )?(?:(?P<stage>[^\s\]/]+) +)?\s*(?P<n>\d+)/(?P<m>\d+)\] "
    r"(?P<cmd>.*)$",
    re.DOTALL,
)
_UNNAMED = re.compile(r"stage-\d+")
"""dockercache's label of an unnamed stage (:attr:`dockercache.planning.dockerfile.Stage.label`)."""
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
    """A Dockerfile instruction as progress names it: ``[<stage> <n>/<m>] <instruction>``, or ``[<n>/<m>] ...``
    in a stage without a name (``stage`` None)."""

    stage: str | None
    n: int
    command: str

    @classmethod
    def parse(cls, name: str) -> Step | None:
        """The step a vertex name stands for; None for anything else, and for FROM (a source, never cached)."""
        match = _STEP.match(name)
        if not match or match.group("cmd").startswith("FROM "):
            return None
        return cls(match.group("stage"), int(match.group("n")), match.group("cmd"))


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
    run: int
    """The index of the buildx run in :attr:`Tally.runs`."""
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


@dataclass
class _Attribution:
    counts: dict[str, dict[str, StepCount]]
    """Per target: step counts by Dockerfile stage."""
    spans: dict[str, tuple[datetime, datetime]]
    """Per target: the first start and last end of the steps it owns."""
    hits: dict[str, list[list[_Observation]]]
    """Per target: the steps it owns that came from cache, each as the observations of it."""
    shared: dict[str, list[str]]
    """Per target: the targets that count steps it shares with them (in another service's Dockerfile)."""


class _Groups:
    """Union-find over hashable keys: the keys that stand for one step end up in one group."""

    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, key: object) -> object:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: object, b: object) -> None:
        self.parent[self.find(a)] = self.find(b)


class Tally:
    """Per target: steps cached and total, time, cache problems, export outcome and failures.

    Every Dockerfile step counts once in the whole run: in the target of the step's own stage when that stage
    is a target, else in the first target (plan order: services as given, stages in Dockerfile order) whose
    graph contains it. Targets with the same context, Dockerfile and args (two services built from one
    Dockerfile) share their steps the same way. So do services with different Dockerfiles whose steps are the
    same (the same base steps): BuildKit solves such a step once, as one vertex reported under each target's
    name, and it counts once, in the first target in plan order that owns it by the rules above (``cache_read``
    of that target names where it came from). A step is cached when no vertex that stands for it ran.

    A step of an unnamed stage (``[2/3] RUN ...``) belongs to dockercache's label for it, ``stage-N``: the
    target's own stage when it is unnamed, else the last unnamed stage of its graph (progress does not say
    which unnamed stage a step is in; a Dockerfile with several of them in one graph has their steps counted
    apart, under one label).
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
                    observations.append(_Observation(len(self.runs), target, rest, vertex))
        self.runs.append((events, observations))
        self._attributed = None

    def with_run(self, events: BuildEvents, ran: Sequence[str]) -> Tally:
        """A tally of the runs so far and one more still under way (the live display's), this one unchanged."""
        tally = Tally(self.targets)
        tally.runs = list(self.runs)
        tally.add(events, ran)
        return tally

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

    @staticmethod
    def _label(target: TargetInfo, step: Step) -> str:
        """The stage a step is counted in: its name, or the label of the unnamed stage it is in."""
        if step.stage is not None:
            return step.stage
        unnamed = [s for s in target.graph if _UNNAMED.fullmatch(s)]
        return target.stage if target.stage in unnamed or not unnamed else unnamed[-1]

    def _attribute(self) -> _Attribution:
        """Steps per target, the span of the steps each owns and their hits (computed once for the runs added).

        The observations of one step are those of the same step of the same Dockerfile (identity, stage,
        number) and those of the same vertex (one digest in a run, whatever the names and Dockerfiles that
        share it).
        """
        if self._attributed is not None:
            return self._attributed
        groups = _Groups()
        steps: list[tuple[_Observation, str, tuple[str, str, int, str]]] = []
        for obs in self._observations():
            step = Step.parse(obs.name)
            if step is None:
                continue
            info = self._by_name[obs.target]
            label = self._label(info, step)
            # Unnamed stages share one label: their steps stay apart by instruction.
            key = (info.identity, label, step.n, "" if step.stage is not None else step.command)
            groups.union(key, ("vertex", obs.run, obs.vertex.digest))
            steps.append((obs, label, key))
        found: dict[object, list[tuple[_Observation, str, tuple[str, str, int, str]]]] = {}
        for entry in steps:
            found.setdefault(groups.find(entry[2]), []).append(entry)
        names = [t.name for t in self.targets]
        result = _Attribution({n: {} for n in names}, {}, {n: [] for n in names}, {n: [] for n in names})
        for entries in sorted(found.values(), key=lambda es: min((e[1], e[2][2]) for e in es)):
            owners: dict[str, str] = {}  # candidate owner: the stage label it counts the step in
            for identity, label in dict.fromkeys((e[2][0], e[1]) for e in entries):
                seen_in = {e[0].target for e in entries if e[2][0] == identity}
                owners.setdefault(self._owner(identity, label, seen_in), label)
            owner = min(owners, key=self._order.__getitem__)
            for other in owners:
                if other != owner and owner not in result.shared[other]:
                    result.shared[other].append(owner)
            observations = [e[0] for e in entries]
            count = result.counts[owner].setdefault(owners[owner], StepCount())
            count.total += 1
            if _cached(observations):
                count.cached += 1
                result.hits[owner].append(observations)
            count.seconds += max(o.vertex.seconds for o in observations)
            for v in (o.vertex for o in observations if o.vertex.started and o.vertex.completed):
                assert v.started and v.completed
                first, last = result.spans.get(owner, (v.started, v.completed))
                result.spans[owner] = (min(first, v.started), max(last, v.completed))
        self._attributed = result
        return result

    def steps(self) -> dict[str, dict[str, StepCount]]:
        """Per target, per Dockerfile stage: steps total and cached, and their time."""
        counts = self._attribute().counts
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
        for name, (first, last) in self._attribute().spans.items():
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

    def cache_read(self) -> dict[str, list[str]]:
        """Per target: the cache refs its cached steps came from (none when it had no hit).

        BuildKit does not say which imported cache answered a hit. So for each hit these are the refs whose
        manifest the owning target imported successfully, in the order BuildKit read them, in the run where it met
        the step; for a step the owning target did not meet itself (a stage built inside other targets runs no
        import of its own), the refs of the targets that met it, in plan order (BuildKit answers a vertex
        several targets share from the caches of all of them). A hit the builder's local cache answered, with
        nothing imported, names no ref.
        """
        out: dict[str, list[str]] = {t.name: [] for t in self.targets}
        imported = [self.imported(run) for run in range(len(self.runs))]
        for name, hits in self._attribute().hits.items():
            readers: set[tuple[int, str]] = set()
            for observations in hits:
                own = [o for o in observations if o.target == name]
                readers.update((o.run, o.target) for o in own or observations)
            ordered = sorted(readers, key=lambda r: (r[0], self._order[r[1]]))
            out[name] = list(dict.fromkeys(ref for run, target in ordered for ref in imported[run][target]))
        return out

    def shared(self) -> dict[str, list[str]]:
        """Per target: the targets that count the steps it shares with them (same steps of another Dockerfile,
        solved once: counted in the first target in plan order, not again here)."""
        return {name: list(owners) for name, owners in self._attribute().shared.items()}

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
            if not v.error or is_cache_vertex(obs.name) or cancelled(v.error):
                continue
            failure = by_vertex.get(v.digest)
            if failure is None:
                step = Step.parse(obs.name)
                stage = self._label(self._by_name[obs.target], step) if step else None
                failure = Failure([], obs.name, v.error, v.output(), stage)
                by_vertex[v.digest] = failure
            failure.targets.append(obs.target)
        return list(by_vertex.values())
