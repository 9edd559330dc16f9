"""Snapshot format, promote, prune and verify against an in-memory blob store (the real S3 path, and saves
racing prunes through the endpoint, are in tests/e2e)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from dockercache.errors import StoreError
from dockercache.snapshots import LEASE_STALE, Snapshot, Snapshots, parse_snapshot

from .conftest import NOW, MemoryStore, digest_of, save_snapshot


def test_parse_snapshot_reads_what_the_endpoint_writes_and_names_what_is_wrong() -> None:
    store = MemoryStore()
    blobs = save_snapshot(store, "p/main/s/x", b"manifest", b"layer")
    parsed = parse_snapshot(store.snapshots["p/main/s/x"][0])
    assert isinstance(parsed, Snapshot)
    assert dict(parsed.blobs) == blobs and parsed.manifest["digest"] == digest_of(b"manifest")
    assert parse_snapshot(b'{"index": ') == "has a broken index"
    document = json.loads(store.snapshots["p/main/s/x"][0])
    document["blobs"].pop(digest_of(b"manifest"))
    assert parse_snapshot(json.dumps(document).encode()) == "is inconsistent"


def test_a_snapshot_written_by_the_local_export_release_still_parses() -> None:
    """The earlier release stored BuildKit's local export index.json (a manifest list) and its blob dir."""
    old = {
        "version": 1,
        "name": "p/main/s/x",
        "index": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": digest_of(b"list"),
                    "size": 4,
                    "annotations": {"org.opencontainers.image.ref.name": "latest"},
                }
            ],
        },
        "blobs": {digest_of(b"list"): 4, digest_of(b"layer"): 5},
    }
    parsed = parse_snapshot(json.dumps(old).encode())
    assert isinstance(parsed, Snapshot)
    assert parsed.manifest["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_promote_copies_indexes_only() -> None:
    store = MemoryStore()
    save_snapshot(store, "p/main/s/x", b"m", b"l")
    snaps = Snapshots(store)  # type: ignore[arg-type]
    assert snaps.promote("p/main", "p/latest") == ["p/latest/s/x"]
    assert store.uploads == [] and store.snapshots["p/latest/s/x"] == store.snapshots["p/main/s/x"]
    with pytest.raises(StoreError, match="no snapshot under key 'p/nope'"):
        snaps.promote("p/nope", "p/latest")


def test_prune_keeps_newest_per_prefix_and_only_deletes_unreferenced_old_blobs() -> None:
    store = MemoryStore()
    for i, key in enumerate(["p/one", "p/two", "p/three"]):
        save_snapshot(store, f"{key}/s/x", f"m{i}".encode(), b"shared", f"own{i}".encode())
        body, _ = store.snapshots[f"{key}/s/x"]
        store.snapshots[f"{key}/s/x"] = (body, NOW - timedelta(days=3 - i))
    for digest in store.blobs:
        store.blob_dates[digest] = NOW - timedelta(days=3)
    fresh = digest_of(b"fresh-upload")
    store.blobs[fresh] = b"fresh-upload"
    store.blob_dates[fresh] = NOW  # a writer's blob whose index is not written yet
    snaps = Snapshots(store)  # type: ignore[arg-type]
    dry = snaps.prune(keep=1, older_than=None, dry_run=True, now=NOW)
    assert dry.snapshots == ["p/one/s/x", "p/two/s/x"] and len(store.snapshots) == 3
    assert store.held_locks == set()  # a dry run takes no lock
    result = snaps.prune(keep=1, older_than=None, dry_run=False, now=NOW)
    assert list(store.snapshots) == ["p/three/s/x"]
    assert fresh in store.blobs and len(result.blobs) == 4  # m0, own0, m1, own1
    assert snaps.verify() == []
    assert store.held_locks == set()  # the lock was released


def test_a_lease_keeps_the_blobs_a_save_in_progress_relies_on() -> None:
    store = MemoryStore()
    old = digest_of(b"old layer")
    store.blobs[old] = b"old layer"  # in no snapshot: an orphan, unless a save relies on it
    snaps = Snapshots(store)  # type: ignore[arg-type]
    lease = store.put_lease([old])
    assert snaps.prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0), now=NOW).blobs == []
    assert old in store.blobs
    store.delete_lease(lease)
    assert snaps.prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0), now=NOW).blobs == [old]
    assert old not in store.blobs


def test_a_stale_lease_protects_nothing_and_is_removed() -> None:
    store = MemoryStore()
    old = digest_of(b"old layer")
    store.blobs[old] = b"old layer"
    store.put_lease([old])  # written at NOW by a writer that died
    later = NOW + LEASE_STALE
    result = Snapshots(store).prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0), now=later)  # type: ignore[arg-type]
    assert result.blobs == [old] and store.leases_held == {}


def test_verify_names_missing_corrupt_and_resized_blobs() -> None:
    store = MemoryStore()
    save_snapshot(store, "p/a/s/x", b"m-a", b"layer-a")
    save_snapshot(store, "p/b/s/x", b"m-b", b"layer-b")
    save_snapshot(store, "p/c/s/x", b"m-c", b"layer-c")
    del store.blobs[digest_of(b"layer-a")]
    store.blobs[digest_of(b"layer-b")] = b"LAYER-B"  # same size, other content
    snaps = Snapshots(store)  # type: ignore[arg-type]
    shallow = snaps.verify()
    assert shallow == [f"p/a/s/x: blob {digest_of(b'layer-a')} is missing"]
    deep = snaps.verify(deep=True)
    assert len(deep) == 2 and "corrupt" in deep[1] and deep[1].startswith("p/b/s/x")
    store.snapshots["p/c/s/x"] = (b'{"index": ', NOW)
    assert "p/c/s/x: broken index" in snaps.verify()


def test_an_embedded_manifest_is_used_only_when_it_hashes_to_its_digest() -> None:
    import base64
    import hashlib

    body = b'{"schemaVersion": 2, "layers": []}'
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"

    def snapshot(data: object) -> Snapshot:
        descriptor = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1}
        if data is not None:
            descriptor["data"] = data
        parsed = parse_snapshot(json.dumps({"index": {"manifests": [descriptor]}, "blobs": {digest: 1}}).encode())
        assert isinstance(parsed, Snapshot)
        return parsed

    assert snapshot(base64.b64encode(body).decode()).manifest_body == body
    assert snapshot(None).manifest_body is None  # written by an earlier release: read from its blob
    assert snapshot(base64.b64encode(body + b" ").decode()).manifest_body is None  # tampered
    assert snapshot("not base64!").manifest_body is None
    assert snapshot(42).manifest_body is None


def test_prune_keeps_the_newest_n_keys_of_every_key_prefix() -> None:
    """README: ``cache.prune --keep N`` keeps the newest N keys per key prefix, not N in the whole bucket
    (here every key under ``b/`` is older than every key under ``a/``, and one of each survives)."""
    store = MemoryStore()
    ages = {"a/1": 3, "a/2": 1, "b/1": 5, "b/2": 4}
    for key, days in ages.items():
        save_snapshot(
            store, f"{key}/s/x", f"manifest {key}".encode(), b"shared layer", modified=NOW - timedelta(days=days)
        )
    result = Snapshots(store).prune(keep=1, older_than=None, dry_run=False, now=NOW)  # type: ignore[arg-type]
    assert result.snapshots == ["a/1/s/x", "b/1/s/x"] and result.kept == ["a/2/s/x", "b/2/s/x"]
    assert sorted(store.snapshots) == ["a/2/s/x", "b/2/s/x"]
    assert sorted(result.blobs) == sorted([digest_of(b"manifest a/1"), digest_of(b"manifest b/1")])
    assert digest_of(b"shared layer") in store.blobs


def test_prune_judges_a_key_by_its_newest_snapshot() -> None:
    """A key is as new as the newest of its service/stage snapshots."""
    store = MemoryStore()
    save_snapshot(store, "p/old/s/x", b"m-old-x", modified=NOW - timedelta(days=9))
    save_snapshot(store, "p/old/s/y", b"m-old-y", modified=NOW - timedelta(hours=1))
    save_snapshot(store, "p/new/s/x", b"m-new-x", modified=NOW - timedelta(days=2))
    result = Snapshots(store).prune(keep=1, older_than=None, dry_run=True, now=NOW)  # type: ignore[arg-type]
    assert result.kept == ["p/old/s/x", "p/old/s/y"] and result.snapshots == ["p/new/s/x"]


def test_a_lease_younger_than_a_day_protects_its_blobs_and_an_older_one_does_not() -> None:
    """README: a lease older than a day was left by a killed writer; prune removes it (and the blobs it alone
    protected). A younger one belongs to a save that may still be running."""
    store = MemoryStore()
    old = digest_of(b"old layer")
    store.blobs[old] = b"old layer"  # in no snapshot
    store.put_lease([old])  # written at NOW
    snaps = Snapshots(store)  # type: ignore[arg-type]
    young = snaps.prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0), now=NOW + timedelta(hours=23))
    assert young.blobs == [] and old in store.blobs and list(store.leases_held) == ["lease0"]
    stale = snaps.prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0), now=NOW + timedelta(hours=25))
    assert stale.blobs == [old] and old not in store.blobs and store.leases_held == {}


def test_a_dry_run_prune_removes_no_stale_lease() -> None:
    store = MemoryStore()
    store.put_lease([digest_of(b"x")])
    Snapshots(store).prune(keep=0, older_than=None, dry_run=True, now=NOW + timedelta(days=2))  # type: ignore[arg-type]
    assert list(store.leases_held) == ["lease0"]
