"""Snapshot logic against an in-memory blob store (the real S3 path is in tests/e2e/test_s3_store.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dockercache.errors import StoreError
from dockercache.snapshots import BlobCorrupt, BlobMissing, Snapshots

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


@dataclass
class Info:
    name: str
    modified: datetime
    size: int

    @property
    def key(self) -> str:
        return self.name.rsplit("/", 2)[0]


@dataclass
class MemoryStore:
    blobs: dict[str, bytes] = field(default_factory=dict)
    blob_dates: dict[str, datetime] = field(default_factory=dict)
    snapshots: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    uploads: list[str] = field(default_factory=list)
    lists: int = 0
    url: str = "mem://"

    def list_blobs(self) -> dict[str, int]:
        self.lists += 1
        return {d: len(b) for d, b in self.blobs.items()}

    def blob_times(self) -> dict[str, datetime]:
        return {d: self.blob_dates.get(d, NOW - timedelta(days=30)) for d in self.blobs}

    def upload_blob(self, digest: str, path: Path, progress: Callable[[int], None] | None = None) -> None:
        self.uploads.append(digest)
        self.blobs[digest] = path.read_bytes()

    def download_blob(self, digest: str, dest: Path, progress: Callable[[int], None] | None = None) -> int:
        if digest not in self.blobs:
            raise BlobMissing(f"blob {digest} is missing")
        data = self.blobs[digest]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise BlobCorrupt(f"blob {digest} is corrupt")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return len(data)

    def get_snapshot(self, name: str) -> bytes | None:
        return self.snapshots[name][0] if name in self.snapshots else None

    def put_snapshot(self, name: str, body: bytes) -> None:
        self.snapshots[name] = (body, NOW)

    def list_snapshots(self, key_prefix: str = "") -> list[Info]:
        return [Info(n, t, len(b)) for n, (b, t) in self.snapshots.items() if n.startswith(key_prefix)]

    def copy_snapshot(self, source: str, target: str) -> None:
        self.snapshots[target] = self.snapshots[source]

    def delete_snapshots(self, names: Iterable[str]) -> None:
        for n in names:
            self.snapshots.pop(n, None)

    def delete_blobs(self, digests: Iterable[str]) -> None:
        for d in digests:
            self.blobs.pop(d, None)


def export(directory: Path, *contents: bytes) -> Path:
    """A BuildKit-style local cache export: blobs, and an index naming the first blob as the manifest."""
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    digests = []
    for data in contents:
        hexdigest = hashlib.sha256(data).hexdigest()
        (blob_dir / hexdigest).write_bytes(data)
        digests.append(f"sha256:{hexdigest}")
    (directory / "index.json").write_text(json.dumps({"manifests": [{"digest": digests[0]}]}))
    return directory


def test_save_uploads_only_missing_blobs_and_lists_once(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path / "agent")  # type: ignore[arg-type]
    first = snaps.save(export(tmp_path / "e1", b"manifest-1", b"layer-a", b"layer-b"), "p/main/svc/deps", {})
    assert (first.objects, first.skipped) == (3, 0)
    second = snaps.save(export(tmp_path / "e2", b"manifest-2", b"layer-a", b"layer-b"), "p/main/svc/deps", {})
    assert (second.objects, second.skipped, second.bytes) == (1, 2, len(b"manifest-2"))
    assert store.lists == 1


def test_index_is_written_after_blobs_and_export_without_index_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path / "agent")  # type: ignore[arg-type]
    broken = export(tmp_path / "e", b"m", b"l")
    (broken / "index.json").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        snaps.save(broken, "p/main/s/x", {})
    assert store.snapshots == {} and store.uploads == []


def test_restore_falls_through_corrupt_and_missing_to_next_key(tmp_path: Path) -> None:
    store = MemoryStore()
    writer = Snapshots(store, tmp_path / "w")  # type: ignore[arg-type]
    writer.save(export(tmp_path / "a", b"m-a", b"shared", b"only-a"), "p/a/s/x", {})
    writer.save(export(tmp_path / "b", b"m-b", b"shared", b"only-b"), "p/b/s/x", {})
    writer.save(export(tmp_path / "c", b"m-c", b"shared"), "p/c/s/x", {})
    only_a = "sha256:" + hashlib.sha256(b"only-a").hexdigest()
    only_b = "sha256:" + hashlib.sha256(b"only-b").hexdigest()
    store.blobs[only_a] = b"garbage"
    del store.blobs[only_b]
    warnings: list[str] = []
    reader = Snapshots(store, tmp_path / "r")  # type: ignore[arg-type]
    key, got = reader.restore(["p/missing", "p/a", "p/b", "p/c"], "s", "x", warnings.append)
    assert key == "p/c"
    assert any("corrupt" in w for w in warnings) and any("missing" in w for w in warnings)
    assert only_a not in store.blobs  # the corrupt blob was removed so a later save re-uploads it
    restored = reader.restore_dir("s", "x")
    assert json.loads((restored / "index.json").read_text())["manifests"][0]["digest"].startswith("sha256:")
    assert len(list((restored / "blobs" / "sha256").iterdir())) == 2
    assert got.objects <= 2


def test_restore_of_broken_index_is_a_miss(tmp_path: Path) -> None:
    store = MemoryStore()
    store.snapshots["p/main/s/x"] = (b'{"index": ', NOW)
    warnings: list[str] = []
    key, _ = Snapshots(store, tmp_path).restore(["p/main"], "s", "x", warnings.append)  # type: ignore[arg-type]
    assert key is None and "broken index" in warnings[0]


def test_promote_copies_indexes_only(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path)  # type: ignore[arg-type]
    snaps.save(export(tmp_path / "e", b"m", b"l"), "p/main/s/x", {})
    uploads = list(store.uploads)
    assert snaps.promote("p/main", "p/latest") == ["p/latest/s/x"]
    assert store.uploads == uploads and store.snapshots["p/latest/s/x"] == store.snapshots["p/main/s/x"]
    with pytest.raises(StoreError, match="no snapshot under key 'p/nope'"):
        snaps.promote("p/nope", "p/latest")


def test_prune_keeps_newest_per_prefix_and_only_deletes_unreferenced_old_blobs(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path)  # type: ignore[arg-type]
    for i, key in enumerate(["p/one", "p/two", "p/three"]):
        snaps.save(
            export(tmp_path / key.replace("/", "_"), f"m{i}".encode(), b"shared", f"own{i}".encode()), f"{key}/s/x", {}
        )
        body, _ = store.snapshots[f"{key}/s/x"]
        store.snapshots[f"{key}/s/x"] = (body, NOW - timedelta(days=3 - i))
    fresh = "sha256:" + hashlib.sha256(b"fresh-upload").hexdigest()
    store.blobs[fresh] = b"fresh-upload"
    store.blob_dates[fresh] = NOW  # a writer's blob whose index is not written yet
    dry = snaps.prune(keep=1, older_than=None, dry_run=True, now=NOW)
    assert dry.snapshots == ["p/one/s/x", "p/two/s/x"] and len(store.snapshots) == 3
    result = snaps.prune(keep=1, older_than=None, dry_run=False, now=NOW)
    assert list(store.snapshots) == ["p/three/s/x"]
    assert fresh in store.blobs and len(result.blobs) == 4  # m0, own0, m1, own1
    assert Snapshots(store, tmp_path / "v").verify() == []  # type: ignore[arg-type]


def test_transfer_progress_prints_plain_lines_off_a_terminal() -> None:
    import io

    from dockercache.snapshots import TransferProgress

    stream = io.StringIO()
    progress = TransferProgress("upload p/main/s/x", 4_000_000, stream, interval=0.0)
    progress(1_000_000)
    progress(3_000_000)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "  upload p/main/s/x: 25% (1.0 MB of 4.0 MB)",
        "  upload p/main/s/x: 100% (4.0 MB of 4.0 MB)",
    ]
