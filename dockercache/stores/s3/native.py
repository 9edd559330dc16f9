"""Native S3 store: BuildKit's own ``type=s3`` cache (``native = true``).

BuildKit reads and writes the bucket itself, under ``PREFIX/native/``, so only builders that run their own
BuildKit (``docker-container``, ``remote``) can use it, and dockercache passes no credentials: the builder
takes them from its own environment. Snapshot names and trust rules are the S3 store's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ...config.caches import CacheStore, S3Cache
from ...errors import ConfigError
from ...model import TargetCaches
from ...model.entry import CacheEntry
from ..base import CacheRequest, KindDefaults, MountsPlaces, MountsRequest, NoRuntime, RunContext, StoreRuntime
from .keys import restore_keys, save_key
from .layout import S3Layout, SnapshotName
from .runtime import probe


class S3NativeKind(KindDefaults):
    name = "s3-native"

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, S3Cache) and store.native

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, S3Cache)
        attrs = {"bucket": store.bucket, "prefix": S3Layout(store.prefix).native}
        if store.region:
            attrs["region"] = store.region
        if store.endpoint_url:
            attrs["endpoint_url"] = store.endpoint_url
            attrs["use_path_style"] = "true"
        keys = restore_keys(store, request.keys)
        sources = tuple(
            CacheEntry.make("s3", attrs, name=str(SnapshotName(k, request.service, s)))
            for s in request.stages
            for k in keys
        )
        save, refused = save_key(store, request.keys)
        sink = None
        if request.cache_write and save:
            name = str(SnapshotName(save, request.service, request.stage))
            sink = CacheEntry.make(
                "s3",
                {**attrs, "name": name, "mode": store.mode, "compression": store.compression, "ignore-error": "true"},
            )
        return TargetCaches(self.name, request.store_name, sources, sink, refused, config=store)

    def runtime(self, context: RunContext) -> StoreRuntime:
        return NoRuntime()

    def bake_env(self, stores: Mapping[str, CacheStore]) -> dict[str, str]:
        """``AWS_PROFILE`` for the stores that name a profile: buildx resolves the AWS credential chain itself
        and hands BuildKit the keys for ``type=s3``, one profile per run."""
        profiles = {s.profile: name for name, s in stores.items() if isinstance(s, S3Cache) and s.profile}
        if len(profiles) > 1:
            raise ConfigError(
                f"native S3 stores {', '.join(map(str, profiles.values()))} name different AWS profiles; buildx "
                "resolves one profile per run (AWS_PROFILE)"
            )
        return {"AWS_PROFILE": next(iter(profiles))} if profiles else {}

    def mounts(self, request: MountsRequest) -> MountsPlaces:
        why = "a native S3 store (BuildKit's type=s3) cannot keep cache mounts; the registry endpoint can"
        return MountsPlaces(None, no_save=why)

    def probe(self, name: str, store: CacheStore, root: Path, env: Mapping[str, str]) -> str | None:
        return probe(name, store)


KIND = S3NativeKind()
