"""An S3 store's cache mounts: the snapshot ``<key>/<service>/_mounts``, which the helper builds read and push
through the run's endpoint like any cache (its blobs content-addressed beside the caches', its index last)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..base import MountsSource
from .layout import MOUNTS_STAGE, SnapshotName, repository_name

if TYPE_CHECKING:
    from ...model import MountsPlan, Place
    from .snapshots import Snapshot


class MountsEndpoint(Protocol):
    """What an S3 store's mounts need of the run's endpoint (:class:`dockercache.stores.s3.endpoint.Endpoint`)."""

    @property
    def address(self) -> str: ...
    def snapshot(self, name: SnapshotName) -> Snapshot | str | None: ...
    def permit(self, pairs: Iterable[tuple[str, str]]) -> None: ...


def endpoint_ref(endpoint: MountsEndpoint, key: str, service: str) -> str:
    """The mounts image of snapshot key ``key`` as the endpoint serves it (``<address>/<repository>:_mounts``)."""
    return f"{endpoint.address}/{repository_name(key, service)}:{MOUNTS_STAGE}"


class S3Mounts:
    """The helper builds bind-mount the snapshot's image from the endpoint and push a new one to it."""

    def __init__(self, endpoint: Callable[[str], MountsEndpoint | None]) -> None:
        self.endpoint = endpoint
        """The endpoint serving an S3 store in this run, by store name (None: the store is unavailable)."""

    def _serving(self, mounts: MountsPlan) -> MountsEndpoint:
        endpoint = self.endpoint(mounts.store)
        assert endpoint is not None, "ready() said so"
        return endpoint

    def ready(self, mounts: MountsPlan) -> str | None:
        return None if self.endpoint(mounts.store) is not None else f"cache store '{mounts.store}' unavailable"

    def find(self, mounts: MountsPlan, place: Place) -> MountsSource | str | None:
        assert place.key is not None
        endpoint = self._serving(mounts)
        snapshot = endpoint.snapshot(SnapshotName(place.key, mounts.service, MOUNTS_STAGE))
        if snapshot is None or isinstance(snapshot, str):
            return snapshot
        return MountsSource(image=endpoint_ref(endpoint, place.key, mounts.service))  # by tag: just checked

    def output(self, mounts: MountsPlan, out: Path) -> str:
        assert mounts.save_to is not None and mounts.save_to.key is not None
        endpoint = self._serving(mounts)
        endpoint.permit([(repository_name(mounts.save_to.key, mounts.service), MOUNTS_STAGE)])
        ref = endpoint_ref(endpoint, mounts.save_to.key, mounts.service)
        return f"type=registry,name={ref},compression=zstd,oci-mediatypes=true"

    def publish(self, mounts: MountsPlan, out: Path, index: Mapping[str, Any]) -> None:
        pass  # the endpoint wrote the snapshot's index once every blob was in S3
