"""S3 cache snapshots: their format, and promote, prune and verify on top of a content-addressed blob store.

A snapshot is one BuildKit cache (a cache manifest and the blobs it names) for one service stage, named
``<key>/<service>/<stage>`` (see :mod:`dockercache.stores.layout`). Blobs are stored once under their digest
and shared by every snapshot. Builds read and write snapshots through the registry endpoint
(:mod:`dockercache.endpoint`), which writes a snapshot's index only after every blob it names is in place.
The index is an OCI image index naming the manifest (the same form BuildKit's local cache export writes,
so snapshots written by earlier releases, from a ``type=local`` export, still restore), plus the blob list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Protocol

from .errors import StoreError
from .stores.layout import SnapshotName


class BlobCorrupt(StoreError):
    """A downloaded blob's sha256 is not its name."""


class BlobMissing(StoreError):
    """A blob a snapshot names is not in the store."""


FORMAT_VERSION = 1
LEASE_STALE = timedelta(days=1)
"""A lease this old was left by a writer that died; prune no longer honours it and removes it."""


class LeaseInfo(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def modified(self) -> datetime: ...
    @property
    def blobs(self) -> tuple[str, ...]: ...


class BlobStore(Protocol):
    """What snapshots and the endpoint need of a remote store (implemented by :class:`dockercache.s3.S3Store`)."""

    @property
    def url(self) -> str: ...

    def check(self) -> None: ...
    def list_blobs(self) -> dict[str, int]: ...
    def blob_times(self) -> dict[str, datetime]: ...
    def head_blob(self, digest: str) -> int | None: ...
    def presign_blob(self, digest: str, seconds: int) -> str: ...
    def get_blob_bytes(self, digest: str, limit: int) -> bytes | None: ...
    def put_blob_bytes(self, digest: str, body: bytes) -> None: ...
    def upload_blob_fileobj(self, digest: str, fileobj: IO[bytes]) -> None: ...
    def download_blob(self, digest: str, dest: Path) -> int: ...
    def get_snapshot(self, name: str) -> bytes | None: ...
    def put_snapshot(self, name: str, body: bytes) -> None: ...
    def list_snapshots(self, key_prefix: str = "") -> Sequence[Any]: ...
    def copy_snapshot(self, source: str, target: str) -> None: ...
    def delete_snapshots(self, names: Iterable[str]) -> None: ...
    def delete_blobs(self, digests: Iterable[str]) -> None: ...
    def put_lease(self, blobs: Sequence[str]) -> str: ...
    def delete_lease(self, lease_id: str) -> None: ...
    def leases(self) -> Sequence[LeaseInfo]: ...
    def begin_prune(self) -> str: ...
    def end_prune(self, lock_id: str) -> None: ...
    def prune_locks(self) -> set[str]: ...


@dataclass(frozen=True)
class Snapshot:
    """A parsed snapshot index: the OCI index naming the cache manifest, and every blob (with sizes)."""

    index: Mapping[str, Any]
    blobs: Mapping[str, int]

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The cache manifest's descriptor (digest, mediaType, size)."""
        return self.index["manifests"][0]  # type: ignore[no-any-return]

    @property
    def manifest_body(self) -> bytes | None:
        """The cache manifest itself when the index embeds it (the descriptor's ``data``) and it hashes to
        its digest; None otherwise (then it is read from its blob)."""
        data = self.manifest.get("data")
        if not isinstance(data, str):
            return None
        try:
            body = base64.b64decode(data, validate=True)
        except ValueError:
            return None
        return body if f"sha256:{hashlib.sha256(body).hexdigest()}" == self.manifest.get("digest") else None


def parse_snapshot(body: bytes) -> Snapshot | str:
    """The snapshot in ``body``, or why it cannot be used ("has a broken index", "is inconsistent")."""
    try:
        document = json.loads(body)
        index = document["index"]
        blobs = {str(d): int(s) for d, s in document["blobs"].items()}
        if not isinstance(index, dict) or not blobs:
            raise ValueError
        referenced = [str(m["digest"]) for m in index.get("manifests", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "has a broken index"
    if not referenced or any(d not in blobs for d in referenced):
        return "is inconsistent"
    return Snapshot(index, blobs)


def snapshot_document(
    name: SnapshotName, meta: Mapping[str, str], index: Mapping[str, Any], blobs: Mapping[str, int]
) -> bytes:
    document = {
        "version": FORMAT_VERSION,
        "name": str(name),
        "created": datetime.now(timezone.utc).isoformat(),
        **dict(meta),
        "index": dict(index),
        "blobs": dict(sorted(blobs.items())),
    }
    return json.dumps(document, sort_keys=True).encode()


@dataclass
class Snapshots:
    """Promote, prune and verify for one store."""

    store: BlobStore

    def verify(self, deep: bool = False) -> list[str]:
        remote = self.store.list_blobs()
        problems = []
        with tempfile.TemporaryDirectory(prefix="dockercache-verify-") as scratch:
            for info in self.store.list_snapshots():
                problem = verify_snapshot(self.store, info.name, remote, deep, Path(scratch))
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
        blobs no remaining snapshot references, no save in progress relies on (its lease), and older than
        ``grace`` (a writer's fresh uploads survive).

        A prune holds a lock for its length: a save that writes its lease meanwhile waits for the lock to go
        before it checks its blobs are there, so a blob this prune deletes is never named by a new snapshot.
        """
        lock = None if dry_run else self.store.begin_prune()
        try:
            return self._prune(keep, older_than, dry_run, grace, now or datetime.now(timezone.utc))
        finally:
            if lock is not None:
                self.store.end_prune(lock)

    def _prune(
        self, keep: int | None, older_than: timedelta | None, dry_run: bool, grace: timedelta, now: datetime
    ) -> PruneResult:
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
            found = parse_snapshot(body) if body is not None else None
            if isinstance(found, Snapshot):  # a broken snapshot protects nothing; it restores as a miss anyway
                referenced.update(found.blobs)
        blob_sizes = self.store.list_blobs()
        blob_times = self.store.blob_times()
        # Leases are read after the lock is taken and the blobs listed: a save whose lease came later waits
        # for this prune to end and then finds out what it deleted.
        stale_leases = []
        for lease in self.store.leases():
            if now - lease.modified >= LEASE_STALE:
                stale_leases.append(lease.id)
            else:
                referenced.update(lease.blobs)
        orphans = [d for d, t in blob_times.items() if d not in referenced and now - t >= grace]
        result = PruneResult(
            snapshots=sorted(doomed),
            blobs=sorted(orphans),
            bytes=sum(blob_sizes.get(d, 0) for d in orphans),
            kept=sorted(remaining),
        )
        if not dry_run:
            if doomed:
                self.store.delete_snapshots(doomed)
            if orphans:
                self.store.delete_blobs(orphans)
            for lease_id in stale_leases:
                self.store.delete_lease(lease_id)
        return result


def verify_snapshot(store: BlobStore, name: str, remote: Mapping[str, int], deep: bool, scratch: Path) -> str | None:
    """Why snapshot ``name`` would not restore, or None (``deep``: download every blob and check its sha256)."""
    body = store.get_snapshot(name)
    if body is None:
        return f"{name}: vanished"
    found = parse_snapshot(body)
    if isinstance(found, str):
        return f"{name}: {found.removeprefix('has a ')}"
    for digest, size in found.blobs.items():
        if digest not in remote:
            return f"{name}: blob {digest} is missing"
        if remote[digest] != size:
            return f"{name}: blob {digest} has {remote[digest]} bytes, expected {size}"
        if deep:
            try:
                store.download_blob(digest, scratch / digest.removeprefix("sha256:"))
            except StoreError as exc:
                return f"{name}: {exc}"
            finally:
                (scratch / digest.removeprefix("sha256:")).unlink(missing_ok=True)
    return None


@dataclass
class PruneResult:
    snapshots: list[str]
    blobs: list[str]
    bytes: int
    kept: list[str]
