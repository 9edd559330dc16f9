"""dockercache.stores: the cache entry, the S3 layout and names, the kinds behind one protocol."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockercache.config.caches import LocalCache, RegistryCache, S3Cache
from dockercache.model import TargetCaches
from dockercache.output.console import Console
from dockercache.output.results import StageResult
from dockercache.stores import KINDS, CacheEntry, CacheRequest, Keys, RunContext, kind_for, local
from dockercache.stores.local import retention
from dockercache.stores.s3.layout import S3Layout, SnapshotName

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
        (LocalCache(type="local", path="cache"), "local"),
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
    from dockercache.stores.s3.endpoint import NAME, repository_name

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


# ------------------------------------------------------------------------------------ the local store's swap


def complete_export(lease: local.Lease, text: str) -> None:
    """What BuildKit's local export leaves: a blob, then the index naming it."""
    blob = text.encode()
    digest = hashlib.sha256(blob).hexdigest()
    (Path(lease.path) / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (Path(lease.path) / "blobs" / "sha256" / digest).write_bytes(blob)
    index = {"manifests": [{"digest": f"sha256:{digest}", "annotations": {"text": text}}]}
    (Path(lease.path) / "index.json").write_text(json.dumps(index))


def is_complete(directory: Path) -> bool:
    """Every blob the index names is there."""
    index = json.loads((directory / "index.json").read_text())
    return all((directory / "blobs" / "sha256" / m["digest"][7:]).is_file() for m in index["manifests"])


def write_version(final: Path, text: str) -> None:
    export = local.new_export_directory(str(final))
    complete_export(export, text)
    assert local.swap_in(export, str(final))
    export.release()
    local.clean(str(final))


def siblings(final: Path) -> list[str]:
    return sorted(p.name for p in final.parent.iterdir())


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaced versions go as soon as nobody holds them (the grace period is its own test)."""
    monkeypatch.setattr(retention, "GRACE", 0.0)


@pytest.mark.usefixtures("no_grace")
def test_a_swap_replaces_the_live_store_in_one_step_and_leaves_one_version(tmp_path: Path) -> None:
    final = tmp_path / "web" / "final"
    write_version(final, "one")
    assert final.is_symlink() and is_complete(final)
    write_version(final, "two")
    assert json.loads((final / "index.json").read_text())["manifests"][0]["annotations"]["text"] == "two"
    version = os.readlink(final)
    assert version.startswith("final.v-") and "/" not in version  # relative: the store may be mounted anywhere
    assert siblings(final) == sorted(["final", version])


@pytest.mark.usefixtures("no_grace")
def test_an_incomplete_export_is_never_swapped_in(tmp_path: Path) -> None:
    final = tmp_path / "final"
    write_version(final, "good")
    before = os.readlink(final)
    export = local.new_export_directory(str(final))
    (Path(export.path) / "blobs").mkdir()  # blobs written, the index never was
    assert not local.swap_in(export, str(final))
    export.remove()
    assert os.readlink(final) == before and is_complete(final)
    assert siblings(final) == sorted(["final", before])


def test_every_run_exports_into_a_directory_of_its_own(tmp_path: Path) -> None:
    final = tmp_path / "final"
    first, second = local.new_export_directory(str(final)), local.new_export_directory(str(final))
    assert first.path != second.path and all(".incoming-" in p for p in (first.path, second.path))
    local.clean(str(final))  # both held: neither is another run's leftover
    assert Path(first.path).is_dir() and Path(second.path).is_dir()
    first.release()  # as a killed run's locks are dropped by the kernel
    local.clean(str(final))
    assert not Path(first.path).exists() and Path(second.path).is_dir()


@pytest.mark.usefixtures("no_grace")
def test_a_version_a_reader_holds_survives_swaps_and_goes_once_released(tmp_path: Path) -> None:
    final = tmp_path / "final"
    write_version(final, "old")
    reader = local.pin(str(final))
    assert reader is not None and reader.path != str(final) and Path(reader.path).name.startswith("final.v-")
    write_version(final, "new")
    write_version(final, "newer")
    assert is_complete(Path(reader.path))  # a build still reading it keeps every blob
    assert json.loads((Path(reader.path) / "index.json").read_text())["manifests"][0]["annotations"]["text"] == "old"
    reader.release()
    local.clean(str(final))
    assert siblings(final) == sorted(["final", os.readlink(final)])


@pytest.mark.usefixtures("no_grace")
def test_leftovers_of_killed_runs_and_of_the_previous_release_are_removed(tmp_path: Path) -> None:
    final = tmp_path / "final"
    write_version(final, "live")
    for name in (
        "final.incoming",
        "final.old-42",
        "final.incoming-7-0123abcd",
        "final.v-7-0123abcd",
        "final.trash-7-0123abcd",
    ):
        (tmp_path / name / "blobs").mkdir(parents=True)
    os.symlink("final.v-7-0123abcd", tmp_path / "final.link-7-89abcdef")
    os.utime(tmp_path / "final.link-7-89abcdef", (0, 0), follow_symlinks=False)
    (tmp_path / "final-other.incoming-7-0123abcd").mkdir()  # another stage's: not this one's to judge
    local.clean(str(final))
    assert siblings(final) == sorted(["final", os.readlink(final), "final-other.incoming-7-0123abcd"])


@pytest.mark.usefixtures("no_grace")
def test_a_directory_of_the_previous_release_becomes_a_version(tmp_path: Path) -> None:
    final = tmp_path / "final"
    final.mkdir()
    export = local.Lease(str(final), None)
    complete_export(export, "legacy")
    reader = local.pin(str(final))  # moved aside and linked, then read from its new place
    assert reader is not None and final.is_symlink() and Path(reader.path) == final.resolve()
    assert is_complete(Path(reader.path))
    reader.release()
    legacy = tmp_path / "other" / "final"
    legacy.mkdir(parents=True)
    complete_export(local.Lease(str(legacy), None), "legacy")
    write_version(legacy, "new")  # a swap over a real directory moves it aside too (and it goes, replaced)
    assert legacy.is_symlink() and siblings(legacy) == sorted(["final", os.readlink(legacy)])
    assert json.loads((legacy / "index.json").read_text())["manifests"][0]["annotations"]["text"] == "new"


def test_a_replaced_version_is_kept_for_a_grace_period_then_removed(tmp_path: Path) -> None:
    final = tmp_path / "final"
    write_version(final, "old")
    old = os.readlink(final)
    write_version(final, "new")  # its clean finds the old version replaced: marked, kept
    assert old in siblings(final) and (tmp_path / old / local.RETIRED).is_file()
    local.clean(str(final))
    assert old in siblings(final)
    past = time.time() - local.GRACE - 1
    os.utime(tmp_path / old / local.RETIRED, (past, past))
    local.clean(str(final))
    assert siblings(final) == sorted(["final", os.readlink(final)])


def test_builds_seconds_apart_keep_at_most_two_replaced_versions(tmp_path: Path) -> None:
    """A long-lived agent building every few seconds: within the grace period only the newest replaced versions
    stay (30 builds had left 26 versions, 26 times the cache); one a reader holds stays whatever its age."""
    final = tmp_path / "final"
    write_version(final, "first")
    reader = local.pin(str(final))
    assert reader is not None
    for n in range(12):
        write_version(final, f"build-{n}")
    versions = [name for name in siblings(final) if name.startswith("final.v-")]
    assert len(versions) == 1 + local.KEEP_RETIRED + 1, versions  # live, the newest replaced, the one being read
    assert Path(reader.path).name in versions and is_complete(Path(reader.path))
    reader.release()
    local.clean(str(final))
    assert len([name for name in siblings(final) if name.startswith("final.v-")]) == 1 + local.KEEP_RETIRED


def test_a_reader_never_sees_a_half_swapped_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers swap over and over while readers look: ``final/index.json`` is always there, and the
    version a reader pinned (what BuildKit is given) stays complete for as long as it holds it."""
    final = tmp_path / "final"
    write_version(final, "first")
    stop = threading.Event()
    problems: list[str] = []

    def write(name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            write_version(final, f"{name}-{n}")

    def read() -> None:
        while not stop.is_set():
            try:  # through the symlink, as a person or a hand-run buildx would
                json.loads((final / "index.json").read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"the live store is missing or half-written: {exc}")
            lease = local.pin(str(final))
            if lease is None:
                problems.append("no version to pin")
                continue
            time.sleep(0.001)
            if not is_complete(Path(lease.path)):
                problems.append("a pinned version lost blobs")
            lease.release()

    threads = [
        threading.Thread(target=f, args=a) for f, a in ((write, ("a",)), (write, ("b",)), (read, ()), (read, ()))
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join()
    assert not problems, problems[:5]
    monkeypatch.setattr(retention, "GRACE", 0.0)
    local.clean(str(final))
    assert is_complete(final) and siblings(final) == sorted(["final", os.readlink(final)])


@dataclass(frozen=True)
class FakeTarget:
    """What the local runtime uses of a plan's target."""

    name: str
    caches: TargetCaches


@pytest.mark.usefixtures("no_grace")
def test_two_runs_at_once_read_a_pinned_version_and_export_into_their_own_directories(tmp_path: Path) -> None:
    final = tmp_path / "cache" / "web" / "final"
    write_version(final, "old")
    store = LocalCache(type="local", path="cache")
    plan = kind_for(store).plan(dataclasses.replace(request(store), root=tmp_path, graph=(), exists=os.path.isdir))
    assert plan.sources[0].get("src") == str(final) and plan.sink is not None
    assert plan.sink.get("dest") == f"{final}.incoming"  # the plan's name; each run makes its own
    target = FakeTarget("web-final", plan)
    runs = [local.LocalRuntime(RunContext(console=Console())) for _ in range(2)]
    results = [{"web-final": StageResult("web", "final", "final", True, name="web-final")} for _ in runs]
    first, second = (run.before([target], r)[0] for run, r in zip(runs, results, strict=True))
    old = final.resolve()
    assert [t.caches.sources[0].get("src") for t in (first, second)] == [str(old), str(old)]  # never the symlink
    dests = [t.caches.sink.get("dest") for t in (first, second)]
    assert dests[0] != dests[1] and all(Path(d).is_dir() for d in dests)
    assert [t.caches.step.incoming for t in (first, second)] == dests
    # The first run exports and swaps; the second, still building, keeps reading the old version.
    complete_export(local.Lease(dests[0], None), "new")
    results[0]["web-final"].exported = True
    runs[0].after([first], results[0])
    assert results[0]["web-final"].cache_written == str(final) and final.resolve() != old and is_complete(old)
    # The second run's export failed: its directory goes, and with nobody reading it, so does the old version.
    runs[1].after([second], results[1])
    assert results[1]["web-final"].cache_written is None
    assert siblings(final) == sorted(["final", os.readlink(final)]) and is_complete(final)
