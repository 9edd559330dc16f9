"""S3 store: BuildKit caches kept in S3 as deduplicated blobs plus one snapshot index per stage, served to
BuildKit as a registry on loopback for the length of a build (:mod:`dockercache.stores.s3.endpoint`).

Each target reads the snapshots of the keys an earlier step of this Buildkite build recorded, then
``cache_from``, then this branch's key, then the default branch's (as several ``type=registry`` cache
sources), for its own stage and the stages it builds on; BuildKit fetches only the blobs it needs, straight
from S3 through presigned URLs. It writes its own stage's snapshot through the same endpoint, which writes the
index only after every blob is in S3. The layout in the bucket is :mod:`dockercache.stores.s3.layout`.

Here is the kind, which plans a target's caches: its keys and trust are :mod:`.keys`, and what the run does
with the plan (open the store, serve it, publish, report) is :mod:`.runtime`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...config.caches import CacheStore, S3Cache
from ...model import BuilderPlan, TargetCaches
from ..base import (
    CacheRequest,
    Digests,
    KindDefaults,
    MountsPlaces,
    MountsRequest,
    MountsTransport,
    RunContext,
    StoreRuntime,
)
from .keys import CONTAINER_PORTS, ENDPOINT, S3Step, mounts_places, restore_keys, save_key, source
from .layout import SnapshotName
from .mounts import S3Mounts
from .runtime import S3Runtime, probe


class S3Kind(KindDefaults):
    name = "s3"

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, S3Cache) and not store.native

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, S3Cache)
        host = store.listen or ENDPOINT
        keys = restore_keys(store, request.keys)
        save, refused = save_key(store, request.keys)
        sources = tuple(source(host, k, request.service, s) for k in keys for s in request.stages)
        sink = None
        if request.cache_write and save:
            sink = source(host, save, request.service, request.stage).with_attrs(
                mode=store.mode,
                **{"image-manifest": "true", "oci-mediatypes": "true"},
                compression=store.compression,
                **{"ignore-error": "true"},
            )
        step = S3Step(
            restore_keys=keys,
            stages=request.stages,
            save=SnapshotName(save, request.service, request.stage) if sink and save else None,
            spool=str((request.root / store.spool_dir).resolve()) if store.spool_dir else None,
        )
        return TargetCaches(self.name, request.store_name, sources, sink, refused, step, store)

    def runtime(self, context: RunContext) -> StoreRuntime:
        return S3Runtime(context)

    def builder(self, builder: BuilderPlan, stores: Sequence[CacheStore]) -> BuilderPlan:
        """A docker-container builder must reach the endpoint on the agent's loopback: host networking, and
        buildkitd.toml naming the endpoint's addresses as plain-HTTP registries."""
        if builder.driver != "docker-container" or not stores:
            return builder
        hosts = dict.fromkeys(s.listen or "" for s in stores if isinstance(s, S3Cache))
        addresses = [h for h in hosts if h] + ([f"127.0.0.1:{p}" for p in CONTAINER_PORTS] if "" in hosts else [])
        config = "".join(f'[registry."{a}"]\n  http = true\n  insecure = true\n\n' for a in addresses)
        return dataclasses.replace(
            builder, driver_opts={"network": "host", **builder.driver_opts}, buildkitd_config=config
        )

    def mounts(self, request: MountsRequest) -> MountsPlaces:
        """The snapshot ``<key>/<service>/_mounts`` under the store's keys, through the run's endpoint."""
        return mounts_places(request)

    def mounts_transport(self, docker: Digests, endpoint: Callable[[str], Any]) -> MountsTransport:
        return S3Mounts(endpoint)

    def probe(self, name: str, store: CacheStore, root: Path, env: Mapping[str, str]) -> str | None:
        return probe(name, store)


KIND = S3Kind()
