"""Cache stores: one module per kind (registry, local; s3/store and s3/native) behind one small protocol.

A new kind is a new module with a ``KIND`` object (see :mod:`dockercache.stores.base`) and one line in
:data:`KINDS`. The planner asks :func:`kind_for` to plan a target's caches; the runner drives a
:class:`Stores` over every target without knowing which kinds they use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config.caches import CacheStore
from ..model import TargetCaches
from ..model.entry import CacheEntry
from . import local, registry
from .base import (
    BlobStoreFactory,
    CacheRequest,
    Digests,
    Keys,
    MountsTransport,
    RunContext,
    StoreKind,
    StoreRuntime,
    may_write_shared,
)
from .records import RecordStore
from .s3 import native as s3_native
from .s3 import store as s3

if TYPE_CHECKING:
    from ..model import Target
    from ..output.results import StageResult
    from .s3.endpoint import Endpoint

__all__ = [
    "KINDS",
    "BlobStoreFactory",
    "CacheEntry",
    "CacheRequest",
    "Keys",
    "RunContext",
    "StoreKind",
    "Stores",
    "TargetCaches",
    "kind_for",
    "may_write_shared",
]

KINDS: tuple[StoreKind, ...] = (registry.KIND, local.KIND, s3.KIND, s3_native.KIND)


def mounts_transport(kind: str, docker: Digests, endpoint: Callable[[str], Any]) -> MountsTransport | None:
    """How the cache mounts' helper builds reach the stores of kind ``kind`` (None: it keeps none)."""
    return next((k.mounts_transport(docker, endpoint) for k in KINDS if k.name == kind), None)


def kind_for(store: CacheStore) -> StoreKind:
    for kind in KINDS:
        if kind.handles(store):
            return kind
    raise TypeError(f"no store kind handles {store!r}")  # a bug: every configured type has a kind


class Stores:
    """Every store a build uses, driven together: the runner's only view of them."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._runtimes: dict[str, StoreRuntime] = {}

    def _runtime(self, kind: str) -> StoreRuntime:
        if kind not in self._runtimes:
            self._runtimes[kind] = next(k for k in KINDS if k.name == kind).runtime(self.context)
        return self._runtimes[kind]

    def _by_kind(self, targets: Sequence[Target]) -> dict[str, list[Target]]:
        groups: dict[str, list[Target]] = {}
        for target in targets:
            groups.setdefault(target.caches.kind, []).append(target)
        return groups

    def open(self, targets: Sequence[Target]) -> None:
        """Let every store start connecting in the background (see StoreRuntime.open)."""
        for kind, group in self._by_kind(targets).items():
            self._runtime(kind).open(group)

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        """Prepare every target; returns them in the same order, adjusted by their stores."""
        prepared: dict[str, Target] = {}
        for kind, group in self._by_kind(targets).items():
            for target in self._runtime(kind).before(group, results):
                prepared[target.name] = target
        return [prepared[t.name] for t in targets]

    def logins(self) -> dict[str, tuple[str, str]]:
        """Every store's logins for this run's buildx alone (see StoreRuntime.logins)."""
        found: dict[str, tuple[str, str]] = {}
        for runtime in self._runtimes.values():
            found.update(runtime.logins())
        return found

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        for kind, group in self._by_kind(targets).items():
            self._runtime(kind).fresh_sinks(group)

    def refused_saves(self, targets: Sequence[Target]) -> dict[str, str]:
        """{target name: why} for every save to try once more (see StoreRuntime.refused_saves)."""
        found: dict[str, str] = {}
        for kind, group in self._by_kind(targets).items():
            found.update(self._runtime(kind).refused_saves(group))
        return found

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        for kind, group in self._by_kind(targets).items():
            self._runtime(kind).after(group, results)

    def abort(self, targets: Sequence[Target]) -> None:
        """After an interrupt: every store stops and cleans up what this run started, and records nothing."""
        for kind, group in self._by_kind(targets).items():
            self._runtime(kind).abort(group)

    def import_failed(self, targets: Sequence[Target], error: str) -> dict[str, str]:
        """{store name: reason} for every store whose cache import made the run fail (see StoreRuntime)."""
        found: dict[str, str] = {}
        for kind, group in self._by_kind(targets).items():
            found.update(self._runtime(kind).import_failed(group, error))
        return found

    def endpoint(self, store_name: str) -> Endpoint | None:
        """The registry endpoint serving store ``store_name`` in this run (between before and after), if any."""
        found = (runtime.endpoint(store_name) for runtime in self._runtimes.values())
        return next((endpoint for endpoint in found if endpoint is not None), None)

    def records(self) -> RecordStore:
        """Where the records beside this run's caches are read and written (with the registry store's clients)."""
        return RecordStore(getattr(self._runtimes.get("registry"), "client", None))

    def meta_data(self, service: str, targets: Sequence[Target], results: Mapping[str, StageResult]) -> dict[str, str]:
        values: dict[str, str] = {}
        for kind, group in self._by_kind([t for t in targets if t.service == service]).items():
            values.update(self._runtime(kind).meta_data(service, group, results))
        return values
