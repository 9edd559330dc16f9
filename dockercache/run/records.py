"""The records beside a build's caches (issue 29): read before the build, compared after it, written with the cache.

Before the build, each running target reads the record of the first of its cache sources that has one (its own
cache on this branch, else the next source in its order); the working tree's inputs are read once per Dockerfile
and context. After the build, each report row's first step that did not come from cache gets its cause
(:func:`dockercache.model.record.cause`), and each target whose cache was written (or kept: it holds this build's
steps too) gets the working tree's record, with the base image digests progress named, written where its cache is
(:class:`dockercache.stores.records.RecordStore`). A record is advice: one that cannot be read or written costs a
line of info, never the build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..model import Target
from ..model.record import Record, cause, from_another_branch, would_run
from ..output.console import Console
from ..output.misses import Cause, Miss
from ..output.results import StageResult
from ..output.tally import Step, Tally
from ..planning.steps import Files, new_salt, record_of, working_tree
from ..stores.records import RecordStore, Unreadable

MAX_READS = 3
"""Cache sources asked for a record per target, at most (the first that exists usually has one)."""


@dataclass(frozen=True)
class Found:
    """The record a target read, or why it has none."""

    record: Record | None
    place: str | None = None
    why: Cause | None = None


def find(store: RecordStore, target: Target) -> Found:
    """The record of the first of ``target``'s cache sources that has one."""
    kind = target.caches.kind
    if not store.keeps(kind):
        return Found(None, why=Cause("unrecorded", f"the {kind} cache store keeps no records yet"))
    places = [p for p in (store.source_place(kind, e) for e in target.caches.sources) if p]
    if not places:
        return Found(None, why=Cause("absent", "no cache to read (none of its caches exists yet)"))
    unreadable: Cause | None = None
    for place in places[:MAX_READS]:
        try:
            record = store.read(kind, place)
        except Unreadable as exc:
            unreadable = unreadable or Cause("unreadable", f"the record of its cache is unreadable ({exc})")
            continue
        if record is not None:
            return Found(record, place)
    return Found(None, why=unreadable or Cause("unrecorded", f"{places[0]} holds no record (written before records)"))


def _ran(steps: Sequence[Step]) -> Callable[[str], Sequence[tuple[int, str]]]:
    """The steps that ran in this build, by stage: (number, instruction), in order."""
    by_stage: dict[str, list[tuple[int, str]]] = {}
    for step in steps:
        by_stage.setdefault(step.stage or "", []).append((step.n, step.command))
    return lambda stage: sorted(set(by_stage.get(stage, ())))


class Records:
    """A build's records: :meth:`before` the build, :meth:`after` it."""

    def __init__(self, console: Console, store: RecordStore, branch: str, commit: str) -> None:
        self.console = console
        self.store = store
        self.branch = branch
        self.commit = commit
        self.found: dict[str, Found] = {}
        self._trees: dict[tuple[str, str], tuple[str, Files | None]] = {}

    def tree(self, target: Target) -> tuple[str, Files | None]:
        key = (target.context, target.dockerfile)
        if key not in self._trees:
            self._trees[key] = working_tree(Path(target.context), Path(target.dockerfile))
        return self._trees[key]

    def now(self, target: Target, salt: str) -> Record:
        text, files = self.tree(target)
        return record_of(text, target.args, target.graph, files, salt)

    def before(self, targets: Sequence[Target]) -> None:
        """Read the record of every running target's cache (at once), and the working tree."""
        running = [t for t in targets if t.runs and not t.no_cache]
        if not running:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
            found = pool.map(lambda t: find(self.store, t), running)
            for target in running:
                with contextlib.suppress(OSError):
                    self.tree(target)
            self.found = dict(zip((t.name for t in running), found, strict=True))

    def after(self, targets: Sequence[Target], tally: Tally, results: Mapping[str, StageResult]) -> None:
        """Name each row's first miss, then write the records of the caches written."""
        try:
            self._explain(targets, tally.misses(), results)
            self._write(targets, tally.bases(), results)
        except OSError:  # no Dockerfile or context to read any more: nothing to explain or record
            return
        except Exception as exc:  # a record is advice: it never costs the build
            self.console.info(f"cache records: {exc.__class__.__name__}: {exc}")

    def _explain(
        self, targets: Sequence[Target], misses: Mapping[str, Sequence[Step]], results: Mapping[str, StageResult]
    ) -> None:
        by_name = {t.name: t for t in targets}
        for target in targets:
            steps = misses.get(target.name) or []
            reader = by_name.get(target.built_by) if not target.runs else target
            if not steps or reader is None or reader.name not in self.found:
                continue
            first = steps[0]
            ran = _ran(
                [s for other in targets if other.identity == target.identity for s in misses.get(other.name) or []]
            )
            found = self.found[reader.name]
            why = found.why or Cause("unknown", "no record")
            if found.record is not None:
                now = self.now(reader, found.record.salt)
                why = cause(first.stage or target.stage, first.n, now, found.record, ran)
                why = from_another_branch(why, found.record.branch, self.branch)
            stage = first.stage or target.stage
            results[target.name].miss = Miss(target.service, target.stage, first.command, stage, why)

    def _write(
        self, targets: Sequence[Target], bases: Mapping[str, Mapping[str, str]], results: Mapping[str, StageResult]
    ) -> None:
        jobs = []
        for target in targets:
            result = results[target.name]
            place = self.store.sink_place(target)
            if not target.runs or place is None or not (result.cache_written or result.kept):
                continue
            record = self.now(target, new_salt()).with_bases(bases.get(target.name, {}))
            jobs.append((target, place, Record(record.salt, record.stages, self.branch, self.commit)))
        if not jobs:
            return

        def write(job: tuple[Target, str, Record]) -> None:
            target, place, record = job
            try:
                self.store.write(target.caches.kind, place, record)
            except (StoreError, OSError, ValueError) as exc:
                self.console.info(f"{target.name}: cache record not written: {exc}")

        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            list(pool.map(write, jobs))


def predict(records: Records, targets: Sequence[Target]) -> list[tuple[Target, Miss | None, Found]]:
    """``explain``: per report row, the first step the working tree would not find in the cache it reads, and why
    (None: every step would come from cache), from the records and the working tree, without building."""
    records.before(targets)
    by_name = {t.name: t for t in targets}
    out: list[tuple[Target, Miss | None, Found]] = []
    for target in targets:
        reader = target if target.runs else by_name.get(target.built_by)
        found = records.found.get(reader.name) if reader is not None else None
        if reader is None or found is None:
            continue
        rows = {t.stage for t in targets if t.service == target.service}
        covered = [s for s in target.graph if s == target.stage or s not in rows]
        if found.record is None:
            stage_now = records.now(reader, "").stages.get(target.stage)
            steps = [s for s in stage_now.steps if not s.instruction.startswith("FROM ")] if stage_now else []
            text = steps[0].instruction if steps else target.stage
            out.append((target, Miss(target.service, target.stage, text, target.stage, found.why or _NONE), found))
            continue
        now = records.now(reader, found.record.salt)
        runs = would_run(now, found.record)
        first = next(((s, runs[s][0]) for s in covered if s in runs), None)
        if first is None:
            out.append((target, None, found))
            continue
        stage, (n, text) = first
        why = cause(stage, n, now, found.record, _lookup(runs))
        why = from_another_branch(why, found.record.branch, records.branch)
        out.append((target, Miss(target.service, target.stage, text, stage, why), found))
    return out


def _lookup(runs: Mapping[str, Sequence[tuple[int, str]]]) -> Callable[[str], Sequence[tuple[int, str]]]:
    return lambda label: runs.get(label, ())


_NONE = Cause("unknown", "no record")
