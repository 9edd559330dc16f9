"""S3 store: BuildKit local-cache exports kept in S3 as deduplicated blobs plus one snapshot index per stage.

Before the run each target's snapshot is restored into a directory (the key an earlier step of this Buildkite
build recorded, then ``cache_from``, then this branch's key, then the default branch's: the first complete,
verified one wins) that BuildKit reads as a ``type=local`` cache; after it, each exported directory is saved
(blobs first, the index last). The layout in the bucket is :mod:`dockercache.stores.layout`; the transfers
are :mod:`dockercache.snapshots` over the boto3 adapter :mod:`dockercache.s3`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import CacheStore, S3Cache
from ..errors import StoreError
from .base import CacheRequest, Keys, RunContext, StoreRuntime, StoreStep, TargetCaches
from .entry import CacheEntry
from .layout import SnapshotName
from .local import describe, fresh_directory

if TYPE_CHECKING:
    from ..plan import Target
    from ..report import StageResult
    from ..snapshots import BlobStore, Snapshots

#: The Buildkite meta-data key that carries the snapshot key a service saved to later steps of the build.
S3_KEY = "dockercache-s3-key-{service}"


@dataclass(frozen=True)
class S3Step(StoreStep):
    restore_keys: tuple[str, ...]
    """Keys to restore from, in order (the meta-data key recorded by an earlier step comes first at run time)."""
    restore_dir: str
    save: SnapshotName | None
    export_dir: str

    def summary(self) -> list[tuple[str, str]]:
        lines = [("restore:", f"{', '.join(self.restore_keys)} (first complete snapshot)")]
        if self.save:
            lines.append(("save:", str(self.save)))
        return lines


def snapshot_key(template: str, keys: Keys, branch: str) -> str:
    return template.format(pipeline=keys.pipeline, branch=branch, commit=keys.commit)


def local_root(store: S3Cache, cache_dir: Path) -> Path:
    """The agent's working space for one S3 store: blob pool, restored and exported directories."""
    base = Path(store.local_dir) if store.local_dir else cache_dir
    return base / "s3" / store.bucket / (store.prefix.strip("/").replace("/", "_") or "_")


def restore_keys(store: S3Cache, keys: Keys) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            [
                *(snapshot_key(t, keys, keys.branch) for t in store.cache_from),
                snapshot_key(store.key, keys, keys.branch),
                snapshot_key(store.key, keys, keys.default_branch),
            ]
        )
    )


def save_key(store: S3Cache, keys: Keys) -> tuple[str | None, str | None]:
    """The key this build saves to, or None and why not (an untrusted branch and a key the default reads)."""
    save = snapshot_key(store.key, keys, keys.default_branch if keys.writes_shared else keys.branch)
    # Keys the default branch reads: an untrusted branch never writes them, whatever the templates say.
    # (A per-commit key is not among them: the default branch reads its own commits' keys.)
    protected = {
        snapshot_key(t, keys, keys.default_branch) for t in (store.key, *store.cache_from) if "{commit}" not in t
    }
    if not keys.writes_shared and save in protected:
        return None, f"'{save}' is read by the default branch; branch '{keys.branch}' may not write it"
    return save, None


class S3Kind:
    name = "s3"

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, S3Cache) and not store.native

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, S3Cache)
        local = local_root(store, request.cache_dir)
        restore = local / "restore" / request.service
        export_dir = local / "export" / request.service / request.stage
        save, refused = save_key(store, request.keys)
        sources = tuple(CacheEntry.make("local", src=str(restore / s)) for s in request.stages)
        sink = None
        if request.cache_write and save:
            attrs = {"dest": str(export_dir), "mode": store.mode, "compression": store.compression}
            sink = CacheEntry.make("local", {**attrs, "ignore-error": "true"})
        step = S3Step(
            restore_keys=restore_keys(store, request.keys),
            restore_dir=str(restore / request.stage),
            save=SnapshotName(save, request.service, request.stage) if sink and save else None,
            export_dir=str(export_dir),
        )
        return TargetCaches(self.name, request.store_name, sources, sink, refused, step, store)

    def runtime(self, context: RunContext) -> StoreRuntime:
        return S3Runtime(context)


def open_snapshots(name: str, config: S3Cache, cache_dir: Path, context: RunContext | None = None) -> Snapshots:
    """The snapshots of one S3 store, its endpoint and bucket checked first (boto3 is imported only here)."""
    from ..netcheck import unreachable, url_host
    from ..snapshots import Snapshots

    blob_store: BlobStore
    if context is not None and context.blob_store is not None:
        blob_store = context.blob_store(name, config)
    else:
        from ..s3 import S3Store

        blob_store = S3Store(config)
        if config.endpoint_url:
            why = unreachable(*url_host(config.endpoint_url))
            if why:
                raise StoreError(f"{blob_store.url}: endpoint {config.endpoint_url} unreachable ({why})")
    blob_store.check()
    return Snapshots(blob_store, local_root(config, cache_dir), config.transfers)


class S3Runtime:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._open: dict[str, Snapshots] = {}
        self._broken: dict[str, str] = {}

    def _snapshots(self, target: Target) -> Snapshots | None:
        name = target.caches.store
        if name in self._broken:
            return None
        if name not in self._open:
            config = target.caches.config
            assert isinstance(config, S3Cache)
            try:
                self._open[name] = open_snapshots(name, config, self.context.cache_dir, self.context)
            except StoreError as exc:
                self._broken[name] = str(exc)
                self.context.console.warn(f"{exc}: building without this cache")
                return None
        return self._open[name]

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        console = self.context.console
        for service in dict.fromkeys(t.service for t in targets):
            console.section(f":s3: {service}: restore caches")
            recorded = self.context.meta_data_get(S3_KEY.format(service=service))
            # Only the targets that run: a stage built inside one is in that target's snapshot.
            for target in (t for t in targets if t.service == service and t.runs):
                self._restore(target, results[target.name], recorded)
        prepared = []
        for target in targets:
            try:
                self.fresh_sinks([target])
            except OSError as exc:
                results[target.name].warn(self.context.console, f"cache directory unusable: {describe(exc)}")
                target = dataclasses.replace(target, caches=dataclasses.replace(target.caches, sink=None))
            prepared.append(target)
        # A stage whose restore missed leaves no directory: do not make BuildKit look for it.
        return [
            dataclasses.replace(
                t,
                caches=dataclasses.replace(
                    t.caches,
                    sources=tuple(e for e in t.caches.sources if e.type != "local" or os.path.isdir(e.location)),
                ),
            )
            for t in prepared
        ]

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        for target in targets:
            if isinstance(target.caches.step, S3Step) and target.caches.sink:
                fresh_directory(target.caches.step.export_dir)

    def _restore(self, target: Target, result: StageResult, recorded: str | None) -> None:
        step = target.caches.step
        assert isinstance(step, S3Step)
        shutil.rmtree(step.restore_dir, ignore_errors=True)
        snapshots = self._snapshots(target)
        if snapshots is None:
            result.cache_warnings.append(f"cache store '{target.caches.store}' unavailable")
            return
        keys = [recorded, *step.restore_keys] if recorded else list(step.restore_keys)
        try:
            key, got = snapshots.restore(
                keys,
                target.service,
                target.stage,
                Path(step.restore_dir),
                lambda m: result.warn(self.context.console, m),
            )
        except (StoreError, OSError) as exc:
            shutil.rmtree(step.restore_dir, ignore_errors=True)
            result.warn(self.context.console, f"{describe(exc)}: restoring nothing (cache miss)")
            return
        result.restored_from = key
        result.down_objects, result.down_bytes = got.objects, got.bytes
        if key:
            self.context.console.info(
                f"  {target.stage}: restored {key} ({got.objects} blobs, {got.bytes / 1e6:.1f} MB downloaded, "
                f"{got.skipped} already on disk)"
            )
        else:
            self.context.console.info(f"  {target.stage}: no snapshot under {', '.join(keys)} (cache miss)")

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        for target in targets:
            step = target.caches.step
            assert isinstance(step, S3Step)
            try:
                if step.save and results[target.name].exported and target.caches.store not in self._broken:
                    self._save(target, step, step.save, results[target.name])
            finally:
                shutil.rmtree(step.export_dir, ignore_errors=True)

    def _save(self, target: Target, step: S3Step, name: SnapshotName, result: StageResult) -> None:
        snapshots = self._snapshots(target)
        if snapshots is None:
            return
        self.context.console.section(f":s3: {target.service}: save {target.stage}", collapsed=True)
        meta = {
            "service": target.service,
            "stage": target.stage,
            "commit": self.context.commit,
            "branch": self.context.branch,
        }
        try:
            sent = snapshots.save(Path(step.export_dir), name, meta)
        except (StoreError, OSError) as exc:
            result.warn(self.context.console, f"saving {name}: {describe(exc)}")
            return
        result.s3_saved = result.cache_written = str(name)
        result.up_objects, result.up_bytes = sent.objects, sent.bytes
        self.context.console.info(
            f"  saved {name}: {sent.objects} new blobs ({sent.bytes / 1e6:.1f} MB) uploaded, "
            f"{sent.skipped} already in the store"
        )

    def meta_data(self, service: str, targets: Sequence[Target], results: Mapping[str, StageResult]) -> dict[str, str]:
        saved = [
            t.caches.step.save
            for t in targets
            if isinstance(t.caches.step, S3Step) and t.caches.step.save and results[t.name].s3_saved
        ]
        return {S3_KEY.format(service=service): saved[-1].key} if saved else {}


KIND = S3Kind()
