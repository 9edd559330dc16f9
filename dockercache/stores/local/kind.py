"""The local store kind: a target's caches planned as stage directories, and a run's use of them.

Planning names ``src=<stage dir>`` for every cached stage directory that exists and, when the target writes
its cache, an export to ``<stage dir>.incoming`` (:class:`LocalSwap`). At run time each source is pinned to
the version it resolves to, leased for the run; each export goes to a fresh directory of the run's own, and
after the bake a complete export that adds something is swapped in, then the stage directory cleaned
(:mod:`.versions`, :mod:`.retention`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config.caches import CacheStore, LocalCache, local_store_path
from ...model import StoreStep, TargetCaches
from ...model.entry import CacheEntry
from ..base import (
    CacheRequest,
    Digests,
    KindDefaults,
    MountsPlaces,
    MountsRequest,
    MountsTransport,
    NoRuntime,
    RunContext,
    StoreRuntime,
    branch_places,
)
from .mounts import LocalMounts
from .retention import clean
from .versions import Lease, adds_nothing_to_live, empty_directory, new_export_directory, pin, swap_in

if TYPE_CHECKING:
    from ...model import Target
    from ...output.results import StageResult


@dataclass(frozen=True)
class LocalSwap(StoreStep):
    """The export goes to a directory of the run's own (``incoming`` in the plan, ``incoming-<pid>-<random>`` when
    it runs); ``final`` is pointed at it only after a good export."""

    incoming: str
    final: str

    def summary(self) -> list[tuple[str, str]]:
        return [("swap:", f"{self.incoming}-<run> -> {self.final} (after a complete export)")]


class LocalKind(KindDefaults):
    name = "local"
    on_agent = True

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, LocalCache)

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, LocalCache) and store.path is not None, "resolving a service fills in the path"
        base = (request.root / store.path / request.service).resolve()
        directories = [str(base / s) for s in request.stages]
        sources = tuple(CacheEntry.make("local", src=d) for d in directories if request.exists(d))
        plan = TargetCaches(self.name, request.store_name, sources, config=store)
        if not request.cache_write:
            return plan
        final = str(base / request.stage)
        swap = LocalSwap(incoming=f"{final}.incoming", final=final)
        attrs = {"dest": swap.incoming, "mode": store.mode, "compression": store.compression, "ignore-error": "true"}
        sink = CacheEntry.make("local", attrs)
        return dataclasses.replace(plan, sink=sink, step=swap)

    def mounts(self, request: MountsRequest) -> MountsPlaces:
        """A directory per branch beside the store's own (:func:`mounts_dir`), exported by the helper build."""
        store = request.store
        assert isinstance(store, LocalCache)
        return branch_places("local", request, lambda branch: mounts_dir(store, request.root, request.service, branch))

    def mounts_transport(self, docker: Digests, endpoint: Callable[[str], Any]) -> MountsTransport:
        return LocalMounts()

    def probe(self, name: str, store: CacheStore, root: Path, env: Mapping[str, str]) -> str | None:
        assert isinstance(store, LocalCache)
        directory = local_store_path(store, root, env)
        existing = next((p for p in (directory, *directory.parents) if p.exists()), directory)
        return None if os.access(existing, os.W_OK) else f"{existing} is not writable"

    def runtime(self, context: RunContext) -> StoreRuntime:
        return LocalRuntime(context)


class LocalRuntime(NoRuntime):
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._reading: dict[str, Lease | None] = {}
        """Stage directory -> the version this run reads (None: none to read)."""
        self._writing: dict[str, Lease] = {}
        """Target name -> this run's export directory."""

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        prepared = []
        for target in targets:
            caches = dataclasses.replace(target.caches, sources=tuple(self._pinned(target.caches.sources)))
            swap, sink = caches.step, caches.sink
            if isinstance(swap, LocalSwap) and sink is not None:
                try:
                    lease = new_export_directory(swap.final)
                except OSError as exc:
                    results[target.name].warn(self.context.console, f"cache directory unusable: {describe(exc)}")
                    caches = dataclasses.replace(caches, sink=None, step=None)
                else:
                    self._writing[target.name] = lease
                    caches = dataclasses.replace(
                        caches,
                        sink=sink.with_attrs(dest=lease.path),
                        step=dataclasses.replace(swap, incoming=lease.path),
                    )
            prepared.append(dataclasses.replace(target, caches=caches))
        return prepared

    def _pinned(self, sources: Sequence[CacheEntry]) -> Iterator[CacheEntry]:
        """Each source pointed at the version it resolves to now, leased for the run; gone ones left out."""
        for entry in sources:
            directory = entry.get("src")
            if entry.type != "local" or directory is None:
                yield entry
                continue
            if directory not in self._reading:
                try:
                    self._reading[directory] = pin(directory)
                except OSError:  # unreadable: BuildKit finds nothing there either, a miss
                    self._reading[directory] = Lease(directory, None)
            lease = self._reading[directory]
            if lease is not None:
                yield entry.with_attrs(src=lease.path)

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        for target in targets:
            lease = self._writing.get(target.name)
            if lease is not None:
                # What cannot be removed makes the export incomplete or fail: it is never swapped in.
                with contextlib.suppress(OSError):
                    empty_directory(lease.path)

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        self._stop_reading()  # the builds are over: what this run read may go now
        for target in targets:
            swap = target.caches.step
            if not isinstance(swap, LocalSwap):
                continue
            lease = self._writing.pop(target.name, None)
            result = results[target.name]
            swapped = False
            kept = lease is not None and result.exported and adds_nothing_to_live(lease.path, swap.final)
            if kept:
                result.kept = f"kept {swap.final}: {kept}, so it restores at least as much"
                self.context.console.info(f"{target.name}: {result.kept}")
            try:
                swapped = lease is not None and result.exported and not kept and swap_in(lease, swap.final)
            except OSError as exc:
                result.warn(self.context.console, f"local cache not updated: {describe(exc)}")
            finally:
                if lease is not None and swapped:
                    lease.release()
                elif lease is not None:
                    lease.remove()
            if swapped:
                result.cache_written = swap.final
            clean(swap.final)

    def abort(self, targets: Sequence[Target]) -> None:
        """Interrupted: this run's exports are removed, its leases dropped; the live stores stay as they were."""
        self._stop_reading()
        for lease in self._writing.values():
            lease.remove()
        self._writing.clear()

    def _stop_reading(self) -> None:
        for lease in self._reading.values():
            if lease is not None:
                lease.release()
        self._reading.clear()


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def mounts_dir(store: LocalCache, root: Path, service: str, branch: str) -> str:
    """``<the store's directory>.mounts/<service>/<branch>``, beside the store's own."""
    assert store.path is not None, "resolving a service fills in the path"
    directory = (root / store.path).resolve()
    return str(directory.with_name(directory.name + ".mounts") / service / branch)


KIND = LocalKind()
