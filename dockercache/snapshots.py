"""S3 cache snapshots: save, restore, promote and prune, on top of a content-addressed blob store.

A snapshot is one BuildKit local cache export (``index.json`` + ``blobs/sha256/*``) for one service stage,
named ``<key>/<service>/<stage>`` (see :mod:`dockercache.stores.layout`).
Blobs are stored once under their digest and shared by every snapshot;
a snapshot's index is written only after all its blobs are in place, and a restore checks every blob's
sha256 against its name before BuildKit ever sees the directory. Anything wrong with a snapshot makes it a
cache miss with a warning, never a failed build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, TextIO

from .errors import StoreError
from .stores.layout import SnapshotName


class BlobCorrupt(StoreError):
    """A downloaded blob's sha256 is not its name."""


class BlobMissing(StoreError):
    """A blob a snapshot names is not in the store."""


FORMAT_VERSION = 1


class BlobStore(Protocol):
    """What snapshots need of a remote store (implemented by :class:`dockercache.s3.S3Store`)."""

    @property
    def url(self) -> str: ...

    def check(self) -> None: ...
    def list_blobs(self) -> dict[str, int]: ...
    def blob_times(self) -> dict[str, datetime]: ...
    def upload_blob(self, digest: str, path: Path, progress: Callable[[int], None] | None = None) -> None: ...
    def download_blob(self, digest: str, dest: Path, progress: Callable[[int], None] | None = None) -> int: ...
    def get_snapshot(self, name: str) -> bytes | None: ...
    def put_snapshot(self, name: str, body: bytes) -> None: ...
    def list_snapshots(self, key_prefix: str = "") -> Sequence[Any]: ...
    def copy_snapshot(self, source: str, target: str) -> None: ...
    def delete_snapshots(self, names: Iterable[str]) -> None: ...
    def delete_blobs(self, digests: Iterable[str]) -> None: ...


@dataclass
class Transfer:
    objects: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0


class TransferProgress:
    """A bar on a terminal; in CI a plain line every few seconds."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if not self.tty else 0.2
        self.done = 0
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._show()

    def _show(self, end: str = "") -> None:
        pct = min(100, self.done * 100 // self.total)
        if self.tty:
            bar = "#" * (pct // 4)
            self.stream.write(f"\r  {self.label} [{bar:<25}] {pct:3d}% {_mb(self.done)}/{_mb(self.total)}{end}")
        else:
            self.stream.write(f"  {self.label}: {pct}% ({_mb(self.done)} of {_mb(self.total)})\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._show(end="\n")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def local_blobs(directory: Path) -> dict[str, Path]:
    blob_dir = directory / "blobs" / "sha256"
    if not blob_dir.is_dir():
        return {}
    return {f"sha256:{p.name}": p for p in blob_dir.iterdir() if p.is_file() and not p.name.startswith(".")}


@dataclass
class RemoteBlobs:
    """The store's blob listing, taken once per run and kept current as this run uploads."""

    store: BlobStore
    _known: dict[str, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> dict[str, int]:
        with self._lock:
            if self._known is None:
                self._known = self.store.list_blobs()
            return self._known

    def add(self, digest: str, size: int) -> None:
        with self._lock:
            if self._known is not None:
                self._known[digest] = size

    def discard(self, digest: str) -> None:
        with self._lock:
            if self._known is not None:
                self._known.pop(digest, None)


@dataclass
class Snapshots:
    """Snapshot operations for one store, with a local blob pool under ``local``."""

    store: BlobStore
    local: Path
    transfers: int = 8
    progress_stream: TextIO | None = None
    remote: RemoteBlobs = field(init=False)

    def __post_init__(self) -> None:
        self.remote = RemoteBlobs(self.store)

    @property
    def pool(self) -> Path:
        return self.local / "pool" / "sha256"

    # ---------------------------------------------------------------------------------------------- save

    def save(self, export: Path, name: SnapshotName, meta: Mapping[str, str]) -> Transfer:
        """Upload ``export``'s blobs that the store lacks, then (and only then) write the snapshot index."""
        index_path = export / "index.json"
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            raise StoreError(f"{export}: the cache export is incomplete (no readable index.json)") from None
        blobs = local_blobs(export)
        if not blobs:
            raise StoreError(f"{export}: the cache export has no blobs")
        referenced = {m.get("digest") for m in index.get("manifests", [])}
        absent = [d for d in referenced if d not in blobs]
        if absent:
            raise StoreError(f"{export}: index.json names {absent[0]}, which the export does not contain")
        remote = self.remote.get()
        stats = Transfer()
        todo = []
        for digest, path in sorted(blobs.items()):
            size = path.stat().st_size
            if remote.get(digest) == size:
                stats.skipped += 1
                stats.skipped_bytes += size
            else:
                todo.append((digest, path, size))
        progress = TransferProgress(f"upload {name}", sum(s for _, _, s in todo), self.progress_stream)

        def upload(item: tuple[str, Path, int]) -> None:
            digest, path, size = item
            if sha256_file(path) != digest:
                raise StoreError(f"{path}: local blob does not match its name {digest}; not uploading")
            self.store.upload_blob(digest, path, progress)
            self.remote.add(digest, size)

        self._parallel(upload, todo)
        progress.close()
        stats.objects = len(todo)
        stats.bytes = sum(s for _, _, s in todo)
        document = {
            "version": FORMAT_VERSION,
            "name": str(name),
            "created": datetime.now(timezone.utc).isoformat(),
            **dict(meta),
            "index": index,
            "blobs": {d: p.stat().st_size for d, p in sorted(blobs.items())},
        }
        self.store.put_snapshot(str(name), json.dumps(document, sort_keys=True).encode())
        self._adopt(blobs)
        return stats

    def _adopt(self, blobs: Mapping[str, Path]) -> None:
        """Move exported blobs into the local pool, so a later restore on this agent downloads nothing."""
        self.pool.mkdir(parents=True, exist_ok=True)
        for digest, path in blobs.items():
            target = self.pool / digest.removeprefix("sha256:")
            if not target.exists():
                try:
                    os.replace(path, target)
                except OSError:
                    shutil.copyfile(path, target)

    # ------------------------------------------------------------------------------------------- restore

    def restore(
        self, candidates: Sequence[str], service: str, stage: str, target: Path, warn: Callable[[str], None]
    ) -> tuple[str | None, Transfer]:
        """Restore the first complete, verified snapshot of ``service/stage`` among the keys ``candidates``
        into the directory ``target``.

        Returns the key restored from (None: a miss) and what was downloaded. A missing or corrupt blob or a
        broken index makes that snapshot a miss with a warning, and the next candidate is tried.
        """
        stats = Transfer()
        shutil.rmtree(target, ignore_errors=True)
        for key in dict.fromkeys(candidates):
            name = str(SnapshotName(key, service, stage))
            body = self.store.get_snapshot(name)
            if body is None:
                continue
            try:
                document = json.loads(body)
                index = document["index"]
                blobs = {str(d): int(s) for d, s in document["blobs"].items()}
                if not isinstance(index, dict) or not blobs:
                    raise ValueError
                referenced = [m["digest"] for m in index.get("manifests", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                warn(f"snapshot {name} in {self.store.url} has a broken index: ignored (cache miss)")
                continue
            if not referenced or any(d not in blobs for d in referenced):
                warn(f"snapshot {name} in {self.store.url} is inconsistent: ignored (cache miss)")
                continue
            remote = self.remote.get()
            missing = [d for d in blobs if d not in remote and not self._in_pool(d, blobs[d])]
            if missing:
                warn(f"snapshot {name}: blob {missing[0]} is missing from {self.store.url}: ignored (cache miss)")
                continue
            try:
                got = self._fetch(name, blobs)
            except StoreError as exc:
                warn(f"snapshot {name}: {exc}: ignored (cache miss)")
                continue
            stats.objects += got.objects
            stats.bytes += got.bytes
            stats.skipped += got.skipped
            stats.skipped_bytes += got.skipped_bytes
            self._materialise(target, index, blobs)
            return key, stats
        return None, stats

    def _in_pool(self, digest: str, size: int) -> bool:
        path = self.pool / digest.removeprefix("sha256:")
        return path.is_file() and path.stat().st_size == size

    def _fetch(self, name: str, blobs: Mapping[str, int]) -> Transfer:
        stats = Transfer()
        todo = []
        for digest, size in blobs.items():
            if self._in_pool(digest, size):
                stats.skipped += 1
                stats.skipped_bytes += size
            else:
                todo.append(digest)
        progress = TransferProgress(f"download {name}", sum(blobs[d] for d in todo), self.progress_stream)

        def download(digest: str) -> None:
            try:
                self.store.download_blob(digest, self.pool / digest.removeprefix("sha256:"), progress)
            except BlobCorrupt:
                # A corrupt blob breaks every snapshot naming it, and a later save would trust it by name:
                # remove it, so the next save uploads a good copy.
                self.store.delete_blobs([digest])
                self.remote.discard(digest)
                raise

        self._parallel(download, todo)
        progress.close()
        stats.objects = len(todo)
        stats.bytes = sum(blobs[d] for d in todo)
        return stats

    def _materialise(self, target: Path, index: Mapping[str, Any], blobs: Mapping[str, int]) -> None:
        """Lay out a BuildKit local cache directory: blobs first (hard links into the pool), index.json last."""
        staging = target.with_name(f"{target.name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        blob_dir = staging / "blobs" / "sha256"
        blob_dir.mkdir(parents=True)
        for digest in blobs:
            source = self.pool / digest.removeprefix("sha256:")
            dest = blob_dir / source.name
            try:
                os.link(source, dest)
            except OSError:
                shutil.copyfile(source, dest)
        (staging / "index.json").write_text(json.dumps(index))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)

    def _parallel(self, fn: Callable[[Any], None], items: Sequence[Any]) -> None:
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(self.transfers, len(items))) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()

    # ------------------------------------------------------------------------------ promote, prune, verify

    def verify(self, deep: bool = False) -> list[str]:
        remote = self.store.list_blobs()
        problems = []
        for info in self.store.list_snapshots():
            problem = verify_snapshot(self.store, info.name, remote, deep, self.pool)
            if problem:
                problems.append(problem)
        return problems

    def promote(self, source_key: str, target_key: str) -> list[str]:
        """Copy every snapshot under ``source_key`` to ``target_key``; blobs are shared, so none move."""
        names = [SnapshotName.parse(s.name) for s in self.store.list_snapshots(source_key.rstrip("/") + "/")]
        names = [n for n in names if n.key == source_key]
        if not names:
            raise StoreError(f"{self.store.url}: no snapshot under key '{source_key}'")
        copied = []
        for name in names:
            target = SnapshotName(target_key, name.service, name.stage)
            self.store.copy_snapshot(str(name), str(target))
            copied.append(str(target))
        return copied

    def prune(
        self,
        keep: int | None,
        older_than: timedelta | None,
        dry_run: bool,
        grace: timedelta = timedelta(hours=1),
        now: datetime | None = None,
    ) -> PruneResult:
        """Per key prefix, keep the newest ``keep`` keys and those younger than ``older_than``; then delete
        blobs no remaining snapshot references (and older than ``grace``, so a writer's fresh uploads survive).
        """
        now = now or datetime.now(timezone.utc)
        snapshots = self.store.list_snapshots()
        by_key: dict[str, list[Any]] = {}
        for s in snapshots:
            by_key.setdefault(s.key, []).append(s)
        groups: dict[str, list[str]] = {}
        for key in by_key:
            groups.setdefault(key.rsplit("/", 1)[0] if "/" in key else "", []).append(key)
        doomed_keys: list[str] = []
        for keys in groups.values():
            newest = sorted(keys, key=lambda k: max(s.modified for s in by_key[k]), reverse=True)
            for rank, key in enumerate(newest):
                age = now - max(s.modified for s in by_key[key])
                kept_by_count = keep is not None and rank < keep
                kept_by_age = older_than is not None and age < older_than
                if not (kept_by_count or kept_by_age):
                    doomed_keys.append(key)
        doomed = [s.name for k in doomed_keys for s in by_key[k]]
        remaining = [s.name for s in snapshots if s.name not in set(doomed)]
        referenced: set[str] = set()
        for name in remaining:
            body = self.store.get_snapshot(name)
            if body is None:
                continue
            try:
                referenced.update(json.loads(body)["blobs"])
            except (ValueError, KeyError, TypeError):
                continue  # a broken snapshot protects nothing; it restores as a miss anyway
        blob_times = self.store.blob_times()
        orphans = [d for d, t in blob_times.items() if d not in referenced and now - t >= grace]
        freed = self.remote.get() if orphans else {}
        result = PruneResult(
            snapshots=sorted(doomed),
            blobs=sorted(orphans),
            bytes=sum(freed.get(d, 0) for d in orphans),
            kept=sorted(remaining),
        )
        if not dry_run:
            if doomed:
                self.store.delete_snapshots(doomed)
            if orphans:
                self.store.delete_blobs(orphans)
        return result


def verify_snapshot(store: BlobStore, name: str, remote: Mapping[str, int], deep: bool, pool: Path) -> str | None:
    """Why snapshot ``name`` would not restore, or None."""
    body = store.get_snapshot(name)
    if body is None:
        return f"{name}: vanished"
    try:
        document = json.loads(body)
        blobs = {str(d): int(s) for d, s in document["blobs"].items()}
        referenced = [m["digest"] for m in document["index"]["manifests"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{name}: broken index"
    if not referenced or any(d not in blobs for d in referenced):
        return f"{name}: index names a manifest it does not list"
    for digest, size in blobs.items():
        if digest not in remote:
            return f"{name}: blob {digest} is missing"
        if remote[digest] != size:
            return f"{name}: blob {digest} has {remote[digest]} bytes, expected {size}"
        if deep:
            try:
                store.download_blob(digest, pool / digest.removeprefix("sha256:"))
            except StoreError as exc:
                return f"{name}: {exc}"
    return None


@dataclass
class PruneResult:
    snapshots: list[str]
    blobs: list[str]
    bytes: int
    kept: list[str]
