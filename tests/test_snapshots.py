"""Snapshot logic against an in-memory blob store (the real S3 path is in tests/e2e/test_s3_store.py)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from dockercache.errors import StoreError
from dockercache.snapshots import Snapshots
from dockercache.stores.layout import SnapshotName

from .conftest import NOW, MemoryStore, export


def name(text: str) -> SnapshotName:
    return SnapshotName.parse(text)


def test_save_uploads_only_missing_blobs_and_lists_once(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path / "agent")  # type: ignore[arg-type]
    first = snaps.save(export(tmp_path / "e1", b"manifest-1", b"layer-a", b"layer-b"), name("p/main/svc/deps"), {})
    assert (first.objects, first.skipped) == (3, 0)
    second = snaps.save(export(tmp_path / "e2", b"manifest-2", b"layer-a", b"layer-b"), name("p/main/svc/deps"), {})
    assert (second.objects, second.skipped, second.bytes) == (1, 2, len(b"manifest-2"))
    assert store.lists == 1


def test_index_is_written_after_blobs_and_export_without_index_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path / "agent")  # type: ignore[arg-type]
    broken = export(tmp_path / "e", b"m", b"l")
    (broken / "index.json").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        snaps.save(broken, name("p/main/s/x"), {})
    assert store.snapshots == {} and store.uploads == []


def test_restore_falls_through_corrupt_and_missing_to_next_key(tmp_path: Path) -> None:
    store = MemoryStore()
    writer = Snapshots(store, tmp_path / "w")  # type: ignore[arg-type]
    writer.save(export(tmp_path / "a", b"m-a", b"shared", b"only-a"), name("p/a/s/x"), {})
    writer.save(export(tmp_path / "b", b"m-b", b"shared", b"only-b"), name("p/b/s/x"), {})
    writer.save(export(tmp_path / "c", b"m-c", b"shared"), name("p/c/s/x"), {})
    only_a = "sha256:" + hashlib.sha256(b"only-a").hexdigest()
    only_b = "sha256:" + hashlib.sha256(b"only-b").hexdigest()
    store.blobs[only_a] = b"garbage"
    del store.blobs[only_b]
    warnings: list[str] = []
    reader = Snapshots(store, tmp_path / "r")  # type: ignore[arg-type]
    restored = tmp_path / "restored"
    key, got = reader.restore(["p/missing", "p/a", "p/b", "p/c"], "s", "x", restored, warnings.append)
    assert key == "p/c"
    assert any("corrupt" in w for w in warnings) and any("missing" in w for w in warnings)
    assert only_a not in store.blobs  # the corrupt blob was removed so a later save re-uploads it
    assert json.loads((restored / "index.json").read_text())["manifests"][0]["digest"].startswith("sha256:")
    assert len(list((restored / "blobs" / "sha256").iterdir())) == 2
    # p/a's attempt left its good blobs in the agent's pool: only p/c's own manifest is downloaded.
    assert (got.objects, got.skipped) == (1, 1)


def test_restore_of_broken_index_is_a_miss(tmp_path: Path) -> None:
    store = MemoryStore()
    store.snapshots["p/main/s/x"] = (b'{"index": ', NOW)
    warnings: list[str] = []
    key, _ = Snapshots(store, tmp_path).restore(["p/main"], "s", "x", tmp_path / "r", warnings.append)  # type: ignore[arg-type]
    assert key is None and "broken index" in warnings[0]


def test_promote_copies_indexes_only(tmp_path: Path) -> None:
    store = MemoryStore()
    snaps = Snapshots(store, tmp_path)  # type: ignore[arg-type]
    snaps.save(export(tmp_path / "e", b"m", b"l"), name("p/main/s/x"), {})
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
            export(tmp_path / key.replace("/", "_"), f"m{i}".encode(), b"shared", f"own{i}".encode()),
            name(f"{key}/s/x"),
            {},
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
