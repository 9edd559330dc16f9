"""dockercache.stores: the cache entry, the S3 layout and names, the kinds behind one protocol."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockercache.config import LocalCache, RegistryCache, S3Cache
from dockercache.stores import KINDS, CacheEntry, CacheRequest, Keys, kind_for
from dockercache.stores.layout import S3Layout, SnapshotName

KEYS = Keys(pipeline="shop", commit="abc123", branch="feature-x", default_branch="main", writes_shared=False)


def request(store: RegistryCache | LocalCache | S3Cache, cache_write: bool = True) -> CacheRequest:
    return CacheRequest(
        service="web",
        store_name="cache",
        store=store,
        stage="final",
        graph=("deps",),
        keys=KEYS,
        cache_write=cache_write,
        root=Path("/src"),
        exists=lambda path: True,
    )


def test_one_encoder_for_bake_and_display() -> None:
    entry = CacheEntry.make("registry", {"ref": "r:5000/c:final-main", "mode": "max"})
    assert entry.encode() == str(entry) == "type=registry,ref=r:5000/c:final-main,mode=max"
    assert entry.location == "r:5000/c:final-main" and entry.get("mode") == "max" and entry.get("nope") is None
    assert entry.with_attrs(mode="min").encode() == "type=registry,ref=r:5000/c:final-main,mode=min"
    assert entry.to_json() == {"type": "registry", "ref": "r:5000/c:final-main", "mode": "max"}
    # A value with a comma cannot add an attribute: it is quoted as buildx's CSV reader expects.
    sneaky = CacheEntry.make("registry", {"ref": "r/c:x,ref=evil/repo:y"})
    assert sneaky.encode() == 'type=registry,"ref=r/c:x,ref=evil/repo:y"'


def test_snapshot_names_and_layout() -> None:
    name = SnapshotName.parse("shop/feature/x/web/final")
    assert (name.key, name.service, name.stage) == ("shop/feature/x", "web", "final")
    assert str(name) == "shop/feature/x/web/final"
    layout = S3Layout("/cache/")
    assert layout.blob("sha256:abc") == "cache/blobs/sha256/abc"
    assert layout.digest("cache/blobs/sha256/abc") == "sha256:abc"
    assert layout.snapshot(name) == "cache/snapshots/shop/feature/x/web/final.json"
    assert layout.snapshot_name("cache/snapshots/shop/feature/x/web/final.json") == str(name)
    assert layout.snapshot_name("cache/blobs/sha256/abc") is None
    assert layout.native == "cache/native/"
    assert S3Layout("").blob("sha256:abc") == "blobs/sha256/abc"


@pytest.mark.parametrize(
    ("store", "kind"),
    [
        (RegistryCache(type="registry", ref="r/c"), "registry"),
        (LocalCache(type="local"), "local"),
        (S3Cache(type="s3", bucket="b"), "s3"),
        (S3Cache(type="s3", bucket="b", native=True), "s3-native"),
    ],
)
def test_every_store_has_exactly_one_kind(store: RegistryCache | LocalCache | S3Cache, kind: str) -> None:
    assert kind_for(store).name == kind
    assert [k.name for k in KINDS if k.handles(store)] == [kind]
    caches = kind_for(store).plan(request(store))
    assert caches.kind == kind and caches.store == "cache" and caches.config is store
    # Every kind reads this target's own cache first, then those of the stages it builds on.
    assert caches.sources and "final" in caches.sources[0].location
    read_only = kind_for(store).plan(request(store, cache_write=False))
    assert read_only.sink is None


def test_a_feature_branch_writes_its_own_cache_only() -> None:
    registry = kind_for(RegistryCache(type="registry", ref="r/c")).plan(
        request(RegistryCache(type="registry", ref="r/c"))
    )
    assert registry.sink is not None and registry.sink.location == "r/c:final-feature-x"
    s3 = kind_for(S3Cache(type="s3", bucket="b")).plan(request(S3Cache(type="s3", bucket="b")))
    assert s3.step is not None and s3.step.to_json()["save"] == "shop/feature-x/web/final"
    assert s3.sink is not None and s3.sink.location == "s3-endpoint.dockercache.invalid/shop/feature-x/web:final"


def test_repository_names_are_valid_and_never_shared() -> None:
    from dockercache.endpoint import NAME, repository_name

    assert repository_name("shop/main", "web") == "shop/main/web"
    odd = repository_name("Shop/Feature_X", "web")
    assert re.fullmatch(NAME, odd) and odd.startswith("shop/feature-x/web-")
    assert repository_name("shop/feature-x", "web") != repository_name("shop/Feature-X", "web")


def test_cache_entries_are_quoted_as_go_csv_quotes_them() -> None:
    """buildx reads cache entries with Go's encoding/csv: a field is quoted only when it must be."""
    plain = CacheEntry.make("registry", {"ref": "Registry.example:5000/Team-X/cache:final-main"})
    assert plain.encode() == "type=registry,ref=Registry.example:5000/Team-X/cache:final-main"
    assert CacheEntry("local", ((" key", "v"),)).encode() == 'type=local," key=v"'
    assert CacheEntry("local", (("k", "line\nbreak"),)).encode() == 'type=local,"k=line\nbreak"'


def test_the_prefix_keeps_everything_but_its_slashes() -> None:
    layout = S3Layout("/X-team/cache-X/")
    assert layout.blob("sha256:abc") == "X-team/cache-X/blobs/sha256/abc"
    assert layout.snapshots == "X-team/cache-X/snapshots/"


def test_only_snapshot_indexes_have_snapshot_names() -> None:
    layout = S3Layout("cache")
    assert layout.snapshot_name("cache/snapshots/shop/main/web/final.json") == "shop/main/web/final"
    assert layout.snapshot_name("cache/snapshots/shop/main/web/final.json.tmp") is None
    assert layout.snapshot_name("cache/leases/abc.json") is None
    assert layout.lease("abc") == "cache/leases/abc.json"
    assert layout.prune_lock("abc") == "cache/locks/prune-abc.json"
