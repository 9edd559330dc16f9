"""Snapshot format, promote, prune and verify against an in-memory blob store (the real S3 path, and saves
racing prunes through the endpoint, are in tests/e2e)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from dockercache.errors import ConfigError, StoreError
from dockercache.stores.s3.snapshots import LEASE_STALE, Retention, Snapshot, Snapshots, parse_snapshot

from .conftest import NOW, MemoryStore, digest_of, save_snapshot

PER_COMMIT = Retention(key="{pipeline}/{commit}", cache_from=("{pipeline}/latest",), default_branch="main")
"""The migration section's templates: every commit's key, one group per pipeline."""


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
    assert snaps.promote("p/main", "p/latest") == [("p/main/s/x", "p/latest/s/x")]
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
    dry = snaps.prune(keep=1, older_than=None, dry_run=True, now=NOW, retention=PER_COMMIT)
    assert dry.snapshots == ["p/one/s/x", "p/two/s/x"] and len(store.snapshots) == 3
    assert store.held_locks == set()  # a dry run takes no lock
    result = snaps.prune(keep=1, older_than=None, dry_run=False, now=NOW, retention=PER_COMMIT)
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


def test_prune_keeps_the_newest_n_keys_of_every_group() -> None:
    """``cache.prune --keep N`` keeps the newest N keys per group (here per pipeline, ``{pipeline}/{commit}``),
    not N in the whole bucket (every key under ``b/`` is older than every key under ``a/``, and one of each
    survives)."""
    store = MemoryStore()
    ages = {"a/1": 3, "a/2": 1, "b/1": 5, "b/2": 4}
    for key, days in ages.items():
        save_snapshot(
            store, f"{key}/s/x", f"manifest {key}".encode(), b"shared layer", modified=NOW - timedelta(days=days)
        )
    snaps = Snapshots(store)  # type: ignore[arg-type]
    result = snaps.prune(keep=1, older_than=None, dry_run=False, now=NOW, retention=PER_COMMIT)
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
    snaps = Snapshots(store)  # type: ignore[arg-type]
    result = snaps.prune(keep=1, older_than=None, dry_run=True, now=NOW, retention=PER_COMMIT)
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


# ------------------------------------------ prune with the README's key templates (issue 11, item 12)

PER_BRANCH = Retention(key="{pipeline}/{branch}", cache_from=("{pipeline}/latest",), default_branch="main")
"""The S3 store section's templates (and the defaults)."""


def keys_store(ages: dict[str, float]) -> MemoryStore:
    """A store with one snapshot per key, ``ages`` in days, each with a layer of its own and a shared one."""
    store = MemoryStore()
    for key, days in ages.items():
        save_snapshot(
            store, f"{key}/ruby/final", f"manifest {key}".encode(), b"shared", f"own {key}".encode(),
            modified=NOW - timedelta(days=days),
        )  # fmt: skip
    return store


def test_the_readme_templates_group_per_branch_and_protect_the_default_branch() -> None:
    assert PER_BRANCH.protected("app/main") == "default branch key"
    assert PER_BRANCH.protected("app/latest") == "cache_from key"
    assert PER_BRANCH.protected("other-pipeline/main") == "default branch key"  # a bucket several pipelines share
    assert PER_BRANCH.protected("app/feature-x") is None and PER_BRANCH.protected("app/main/x") is None
    assert PER_BRANCH.group("app/feature-x") == "app/feature-x"
    assert PER_BRANCH.group("hand/made/key") == "hand/made/key"  # not made by the template: its own group
    # Per-commit keys: no later build reads them, so the template protects none; they count per pipeline.
    assert PER_COMMIT.protected("app/0123456789ab") is None and PER_COMMIT.protected("app/latest") == "cache_from key"
    assert PER_COMMIT.group("app/0123456789ab") == "app/*"
    per_branch_commit = Retention(key="{pipeline}/{branch}-{commit}", default_branch="main")
    assert per_branch_commit.group("app/feature-x-0123456789ab") == "app/feature-x-*"
    assert Retention(key="{pipeline}.{branch}", default_branch="main").protected("appXmain") is None  # escaped


def test_keep_1_with_the_readme_template_keeps_every_branch_and_the_default_branchs_keys() -> None:
    """The reported bug: ``key = "{pipeline}/{branch}"``, ``--keep 1`` planned to delete main's snapshots and
    keep only ``latest`` (the newest key under ``app/``)."""
    store = keys_store({"app/main": 5, "app/latest": 1, "app/feature-x": 3, "app/feature-y": 2})
    result = Snapshots(store).prune(keep=1, older_than=None, dry_run=True, now=NOW, retention=PER_BRANCH)  # type: ignore[arg-type]
    assert result.snapshots == [] and len(result.kept) == 4
    assert result.reasons == {
        "app/main/ruby/final": "default branch key",
        "app/latest/ruby/final": "cache_from key",
        "app/feature-x/ruby/final": "newest 1 of app/feature-x",
        "app/feature-y/ruby/final": "newest 1 of app/feature-y",
    }


def test_older_than_deletes_old_branches_never_the_default_branchs_keys_and_keeps_their_blobs() -> None:
    store = keys_store({"app/main": 30, "app/latest": 30, "app/feature-x": 20, "app/feature-y": 1})
    snaps = Snapshots(store)  # type: ignore[arg-type]
    result = snaps.prune(keep=None, older_than=timedelta(days=7), dry_run=False, now=NOW, retention=PER_BRANCH)
    assert result.snapshots == ["app/feature-x/ruby/final"]
    assert result.reasons["app/feature-x/ruby/final"] == "older than 7d"
    assert result.reasons["app/feature-y/ruby/final"] == "younger than 7d"
    assert sorted(store.snapshots) == ["app/feature-y/ruby/final", "app/latest/ruby/final", "app/main/ruby/final"]
    assert sorted(result.blobs) == sorted([digest_of(b"manifest app/feature-x"), digest_of(b"own app/feature-x")])
    assert digest_of(b"shared") in store.blobs and snaps.verify(deep=True) == []


def test_keep_n_counts_per_branch_when_the_template_has_commits() -> None:
    retention = Retention(key="{pipeline}/{branch}/{commit}", cache_from=("{pipeline}/latest",), default_branch="main")
    ages = {"app/main/c1": 9, "app/main/c2": 8, "app/main/c3": 7, "app/x/c4": 6, "app/x/c5": 5, "app/latest": 99}
    result = Snapshots(keys_store(ages)).prune(keep=2, older_than=None, dry_run=True, now=NOW, retention=retention)  # type: ignore[arg-type]
    assert result.snapshots == ["app/main/c1/ruby/final"]
    assert result.reasons["app/main/c1/ruby/final"] == "beyond the newest 2 of app/main/*"
    assert result.reasons["app/x/c4/ruby/final"] == "newest 2 of app/x/*"
    assert result.reasons["app/latest/ruby/final"] == "cache_from key"


def test_a_protected_key_goes_only_when_named_and_a_name_must_exist() -> None:
    store = keys_store({"app/main": 5, "app/latest": 1, "app/feature-x": 3})
    snaps = Snapshots(store)  # type: ignore[arg-type]
    named = Retention(PER_BRANCH.key, PER_BRANCH.cache_from, "main", frozenset({"app/latest"}))
    result = snaps.prune(keep=None, older_than=None, dry_run=False, grace=timedelta(0), now=NOW, retention=named)
    assert result.snapshots == ["app/latest/ruby/final"] and result.reasons[result.snapshots[0]] == "named by --delete"
    assert sorted(store.snapshots) == ["app/feature-x/ruby/final", "app/main/ruby/final"]
    assert result.reasons["app/feature-x/ruby/final"] == "not named by --delete"
    assert snaps.verify(deep=True) == []  # the blobs latest shared with what remains stayed
    with pytest.raises(ConfigError, match="--delete: no snapshot under key 'app/nope'"):
        snaps.prune(None, None, dry_run=False, now=NOW, retention=Retention(delete=frozenset({"app/nope"})))
    assert store.held_locks == set()


def test_retention_protects_exactly_the_keys_a_save_refuses_an_untrusted_branch() -> None:
    """One rule: prune protects what an untrusted branch's save may not write (stores.s3.save_key)."""
    from dockercache.config.caches import S3Cache
    from dockercache.stores import Keys
    from dockercache.stores.s3.keys import save_key

    keys = Keys("app", "0123456789ab", "feature-x", "main", writes_shared=False)
    cache_from = ("{pipeline}/latest",)
    for key in ("{pipeline}/{branch}", "{pipeline}/latest", "{pipeline}/{commit}", "{pipeline}/shared-{branch}"):
        _, refused = save_key(S3Cache(type="s3", bucket="b", key=key, cache_from=cache_from), keys)
        written = key.format(pipeline="app", branch="feature-x", commit="0123456789ab")
        assert bool(refused) == bool(Retention(key, cache_from, "main").protected(written)), key


def test_a_key_the_agent_expanded_with_this_builds_commit_is_a_per_commit_key() -> None:
    """The old plugin's ``s3_key: "${BUILDKITE_PIPELINE_SLUG}/${BUILDKITE_COMMIT}"`` reaches dockercache expanded
    (the plugin's options): as a ``{commit}`` key, an untrusted branch writes its own key in its place (the
    default branch reads this commit's key when it builds it); another commit's key stays refused."""
    from dockercache.config.caches import S3Cache
    from dockercache.stores import Keys
    from dockercache.stores.s3.keys import save_key

    full = "0123456789ab" + "c" * 28
    keys = Keys("app", full[:12], "feature-x", "main", writes_shared=False)
    assert save_key(S3Cache(type="s3", bucket="b", key=f"app/{full}"), keys) == ("app/feature-x", None)
    trusted = Keys("app", full[:12], "main", "main", writes_shared=True)
    assert save_key(S3Cache(type="s3", bucket="b", key=f"app/{full}"), trusted) == (f"app/{full}", None)
    other = "f" * 40
    assert save_key(S3Cache(type="s3", bucket="b", key=f"app/{other}"), keys)[0] is None
    assert save_key(S3Cache(type="s3", bucket="b", key="app/0123456"), keys)[0] is None  # not a full commit


# ---------------------------------------------------- promote: never writes a snapshot that does not restore


def test_a_dry_run_promote_writes_nothing() -> None:
    store = MemoryStore()
    save_snapshot(store, "p/main/s/x", b"m", b"l")
    save_snapshot(store, "p/main/s/y", b"m2", b"l")
    pairs = Snapshots(store).promote("p/main", "p/latest", dry_run=True)  # type: ignore[arg-type]
    assert pairs == [("p/main/s/x", "p/latest/s/x"), ("p/main/s/y", "p/latest/s/y")]
    assert sorted(store.snapshots) == ["p/main/s/x", "p/main/s/y"] and store.leases_held == {}


def test_promote_of_a_snapshot_with_a_missing_blob_writes_nothing() -> None:
    store = MemoryStore()
    save_snapshot(store, "p/main/s/x", b"m", b"l")
    save_snapshot(store, "p/main/s/y", b"m2", b"gone")
    save_snapshot(store, "p/latest/s/x", b"old", b"old layer")
    before = dict(store.snapshots)
    del store.blobs[digest_of(b"gone")]
    with pytest.raises(StoreError, match=r"snapshot p/main/s/y: blob sha256:\w+ is missing: nothing promoted"):
        Snapshots(store).promote("p/main", "p/latest")  # type: ignore[arg-type]
    assert store.snapshots == before and store.leases_held == {}
    with pytest.raises(ConfigError, match="is the source key itself"):
        Snapshots(store).promote("p/main", "p/main")  # type: ignore[arg-type]


def test_promote_holds_a_lease_on_what_it_copies_and_waits_for_a_running_prune() -> None:
    """A prune that runs while a promote copies a key it is deleting must see the promote's lease (or the
    promote must see the prune's lock and wait for it): else the new key names deleted blobs."""

    leased_at_write: list[set[str]] = []

    class Recording(MemoryStore):
        def put_snapshot(self, name: str, body: bytes) -> None:
            leased_at_write.append({d for lease in self.leases_held.values() for d in lease.blobs})
            super().put_snapshot(name, body)

    store = Recording()
    blobs = save_snapshot(store, "p/c1/s/x", b"m", b"l")
    Snapshots(store).promote("p/c1", "p/latest")  # type: ignore[arg-type]
    assert leased_at_write == [set(blobs)] and store.leases_held == {}
    store.begin_prune()  # a prune that never ends
    with pytest.raises(StoreError, match="a prune is still running"):
        Snapshots(store).promote("p/c1", "p/latest", prune_wait=0)  # type: ignore[arg-type]
    assert store.leases_held == {}
