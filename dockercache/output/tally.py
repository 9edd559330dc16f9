"""Attributing a bake's vertices back to its targets: steps cached and total, time, cache problems, exports and
failures, every Dockerfile step counted once in the whole run (:class:`Tally`).

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

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .progress import BuildEvents, Vertex, cancelled, first_line

_STEP = re.compile(
    r"^\[(?:(?P<platform>[^\s\]/]+/[^\s\]]+) )?(?:(?P<stage>[^\s\]/]+) +)?\s*(?P<n>\d+)/(?P<m>\d+)\] "
    r"(?P<cmd>.*)$",
    re.DOTALL,
)
_UNNAMED = re.compile(r"stage-\d+")
"""dockercache's label of an unnamed stage (:attr:`dockercache.planning.dockerfile.Stage.label`)."""
_CACHE_IMPORT = "importing cache manifest from "
_CACHE_EXPORT = "exporting cache"
#: The bake target buildx puts before a vertex's name when a run has several (``[ruby-final deps 2/3] RUN ...``;
#: target names are ``[A-Za-z0-9_-]``, :func:`dockercache.model.target_name`).
TARGET_PREFIX = re.compile(r"^\[(?P<target>[A-Za-z0-9_-]+)(?P<sep>\] | )")


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


@dataclass
class StepCount:
    total: int = 0
    cached: int = 0
    seconds: float = 0.0


def is_cache_vertex(name: str) -> bool:
    return name.startswith((_CACHE_IMPORT, _CACHE_EXPORT))


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
    misses: dict[str, list[Step]] = field(default_factory=dict)
    """Per target: the steps it owns that did not come from cache (ran, failed or never finished), as named."""


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
        match = TARGET_PREFIX.match(name)
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
            else:
                step = Step.parse(observations[0].name)
                if step is not None:
                    result.misses.setdefault(owner, []).append(Step(owners[owner], step.n, step.command))
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

    def misses(self) -> dict[str, list[Step]]:
        """Per target: the steps it counts that did not come from cache, in its graph's order then by number (the
        stage of each is the one it is counted in)."""
        order = {t.name: {s: i for i, s in enumerate(t.graph)} for t in self.targets}
        return {
            name: sorted(steps, key=lambda s: (order[name].get(s.stage or "", len(order[name])), s.n))
            for name, steps in self._attribute().misses.items()
        }

    def bases(self) -> dict[str, dict[str, str]]:
        """Per target: what each Dockerfile stage's ``FROM`` resolved to, as progress names it (``[base 1/3] FROM
        host/image:tag@sha256:...``): stage label -> reference with digest."""
        out: dict[str, dict[str, str]] = {t.name: {} for t in self.targets}
        for obs in self._observations():
            match = _STEP.match(obs.name)
            if match and match.group("cmd").startswith("FROM ") and obs.vertex.completed and not obs.vertex.error:
                label = match.group("stage") or self._label(self._by_name[obs.target], Step(None, 0, "")) or ""
                out[obs.target].setdefault(label, match.group("cmd").removeprefix("FROM ").strip())
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
