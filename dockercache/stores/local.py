"""Local store: BuildKit's ``type=local`` cache in a directory per service stage (the built-in default).

A target reads the directories of its own stage and of the cached stages in its graph that exist, and exports
into ``<dir>.incoming``, a fresh, empty directory (so the cache never grows without bound), which is swapped
into place only after a complete export: a directory never points at blobs that are not there.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import CacheStore, LocalCache
from .base import CacheRequest, NoRuntime, RunContext, StoreRuntime, StoreStep, TargetCaches
from .entry import CacheEntry

if TYPE_CHECKING:
    from ..plan import Target
    from ..report import StageResult


@dataclass(frozen=True)
class LocalSwap(StoreStep):
    """The export goes to ``incoming``; ``final`` is replaced by it only after a good export."""

    incoming: str
    final: str

    def summary(self) -> list[tuple[str, str]]:
        return [("swap:", f"{self.incoming} -> {self.final} (after a complete export)")]


class LocalKind:
    name = "local"

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, LocalCache)

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, LocalCache)
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

    def runtime(self, context: RunContext) -> StoreRuntime:
        return LocalRuntime(context)


class LocalRuntime(NoRuntime):
    def __init__(self, context: RunContext) -> None:
        self.context = context

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        prepared = []
        for target in targets:
            swap = target.caches.step
            if isinstance(swap, LocalSwap):
                try:
                    fresh_directory(swap.incoming)
                except OSError as exc:
                    results[target.name].warn(self.context.console, f"cache directory unusable: {describe(exc)}")
                    caches = dataclasses.replace(target.caches, sink=None, step=None)
                    target = dataclasses.replace(target, caches=caches)
            prepared.append(target)
        return prepared

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        for target in targets:
            if isinstance(target.caches.step, LocalSwap):
                fresh_directory(target.caches.step.incoming)

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        for target in targets:
            swap = target.caches.step
            if not isinstance(swap, LocalSwap):
                continue
            result = results[target.name]
            if not result.exported:
                shutil.rmtree(swap.incoming, ignore_errors=True)
                continue
            try:
                if swap_in(swap.incoming, swap.final):
                    result.cache_written = swap.final
            except OSError as exc:
                result.warn(self.context.console, f"local cache not updated: {describe(exc)}")


def fresh_directory(path: str) -> None:
    """An export always goes into an empty directory, so a cache never grows without bound."""
    shutil.rmtree(path, ignore_errors=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def swap_in(incoming: str, final: str) -> bool:
    """Replace a local cache directory only with a complete export: never point at missing data."""
    if not os.path.isfile(os.path.join(incoming, "index.json")):
        shutil.rmtree(incoming, ignore_errors=True)
        return False
    trash = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.rename(final, trash)
    os.rename(incoming, final)
    shutil.rmtree(trash, ignore_errors=True)
    return True


KIND = LocalKind()
