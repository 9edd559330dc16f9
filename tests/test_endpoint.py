"""dockercache.stores.s3.endpoint (unit): the S3 store served to BuildKit as a registry, over a store in memory.

Talks HTTP to a started endpoint on 127.0.0.1; tests/e2e/test_endpoint.py does the same against S3 and BuildKit.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockercache.config.caches import S3Cache
from dockercache.config.model import BuilderConfig, Settings
from dockercache.errors import StoreError
from dockercache.model import BuildOptions
from dockercache.output.results import StageResult
from dockercache.planning.plan import PlanInputs, make_plan
from dockercache.planning.resolve import ResolvedService
from dockercache.stores.s3.endpoint import PRESIGN_SECONDS, Endpoint, repository_name
from dockercache.stores.s3.endpoint_access import Repository
from dockercache.stores.s3.layout import SnapshotName
from dockercache.stores.s3.runtime import report_traffic
from dockercache.stores.s3.snapshots import Snapshot, parse_snapshot

from .conftest import MemoryStore, digest_of, save_snapshot

REPO = repository_name("shop/main", "app")
LAYERS = [f"layer {i}".encode() for i in range(5)]


@dataclass
class CountingStore(MemoryStore):
    """A store in memory that counts what the endpoint asks of S3 (``lists``: bucket listings)."""

    heads: list[str] = field(default_factory=list)
    presigned: list[tuple[str, int]] = field(default_factory=list)

    def head_blob(self, digest: str) -> int | None:
        self.heads.append(digest)
        return super().head_blob(digest)

    def presign_blob(self, digest: str, seconds: int) -> str:
        self.presigned.append((digest, seconds))
        return super().presign_blob(digest, seconds)


@pytest.fixture
def store() -> CountingStore:
    store = CountingStore()
    save_snapshot(store, "shop/main/app/final", b'{"manifest": "final"}', *LAYERS)
    return store


@pytest.fixture
def endpoint(store: CountingStore) -> Iterator[Endpoint]:
    with Endpoint(store, {REPO: Repository("shop/main", "app")}) as running:  # as the S3 runtime makes it
        yield running


def request(endpoint: Endpoint, method: str, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(endpoint.address, timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_blob_heads_are_answered_from_one_bucket_listing(endpoint: Endpoint, store: CountingStore) -> None:
    """README: blob HEADs are answered from one bucket listing per run, never a HEAD to S3 each."""
    digests = [digest_of(layer) for layer in LAYERS]
    absent = digest_of(b"not in the bucket")
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda d: request(endpoint, "HEAD", f"/v2/{REPO}/blobs/{d}"), [*digests, absent] * 3))
    assert [a.status for a in answers] == ([200] * len(digests) + [404]) * 3
    assert [a.getheader("Content-Length") for a in answers[: len(digests)]] == [str(len(x)) for x in LAYERS]
    assert answers[0].getheader("Docker-Content-Digest") == digests[0]
    assert store.lists == 1
    assert store.heads == []
    assert len(endpoint.traffic.heads) == 18


def test_a_blob_get_is_a_redirect_presigned_for_fifteen_minutes(endpoint: Endpoint, store: CountingStore) -> None:
    """README: a blob GET is answered with a 307 to a presigned URL valid for 15 minutes; the bytes never
    go through dockercache."""
    digest = digest_of(LAYERS[0])
    answer = request(endpoint, "GET", f"/v2/{REPO}/blobs/{digest}")
    assert answer.status == 307
    assert answer.getheader("Location") == f"mem://blobs/{digest}?X-Amz-Signature=secret"
    assert answer.getheader("Content-Length") == "0"
    assert store.presigned == [(digest, 900)] and PRESIGN_SECONDS == 900
    assert endpoint.traffic.redirects == [(REPO, digest, len(LAYERS[0]))]
    assert request(endpoint, "GET", f"/v2/{REPO}/blobs/{digest_of(b'absent')}").status == 404
    assert len(store.presigned) == 1 and store.lists == 1


def test_the_reports_lookups_are_the_heads_buildkit_sent(endpoint: Endpoint, store: CountingStore) -> None:
    """README: the report gains per stage the blobs fetched from S3 (objects, bytes) and the lookups: one
    per blob HEAD, in the row of the stage whose snapshot holds the blob."""
    manifest = request(endpoint, "GET", f"/v2/{REPO}/manifests/final")
    assert manifest.status == 200
    heads = [digest_of(layer) for layer in LAYERS[:3]] + [digest_of(b"absent")]
    for digest in heads:
        request(endpoint, "HEAD", f"/v2/{REPO}/blobs/{digest}")
    for layer in LAYERS[:2]:
        request(endpoint, "GET", f"/v2/{REPO}/blobs/{digest_of(layer)}")
    endpoint.stop()
    plan = make_plan(s3_inputs(), BuildOptions())
    results = {t.name: StageResult(t.service, t.stage, t.dockerfile_target, t.final, name=t.name) for t in plan.targets}
    report_traffic(endpoint, plan.targets, results)
    final = results["app-final"]
    assert (final.s3_lookups, final.down_objects, final.down_bytes) == (4, 2, len(LAYERS[0]) + len(LAYERS[1]))
    assert sum(r.s3_lookups for r in results.values()) == len(heads) == len(endpoint.traffic.heads)
    assert final.to_json()["s3"]["down"] == {"objects": 2, "bytes": 14, "lookups": 4}
    assert store.lists == 1 and store.heads == []


def test_a_cache_mount_archive_fetched_counts_in_no_stage_row(store: CountingStore) -> None:
    """The mounts snapshot's blobs are the service's cache_mounts report's, not the first stage's download."""
    archive = b"cache mount archive"
    save_snapshot(store, "shop/main/app/_mounts", b'{"manifest": "mounts"}', archive)
    with Endpoint(store, {REPO: Repository("shop/main", "app")}) as endpoint:
        assert request(endpoint, "GET", f"/v2/{REPO}/manifests/_mounts").status == 200
        assert request(endpoint, "GET", f"/v2/{REPO}/blobs/{digest_of(archive)}").status == 307
        assert request(endpoint, "GET", f"/v2/{REPO}/manifests/final").status == 200
        assert request(endpoint, "GET", f"/v2/{REPO}/blobs/{digest_of(LAYERS[0])}").status == 307
    plan = make_plan(s3_inputs(), BuildOptions())
    results = {t.name: StageResult(t.service, t.stage, t.dockerfile_target, t.final, name=t.name) for t in plan.targets}
    report_traffic(endpoint, plan.targets, results)
    assert [(r.stage, r.down_objects, r.down_bytes) for r in results.values()] == [
        ("deps", 0, 0),
        ("final", 1, len(LAYERS[0])),
    ]


def s3_inputs() -> PlanInputs:
    svc = ResolvedService(
        name="app",
        context=Path("/src"),
        dockerfile=Path("/src/Dockerfile"),
        stages=("deps", "final"),
        final_target="final",
        args={},
        image=None,
        tags=(),
        push_stages=(),
        stage_tag="{stage}-{tag}",
        store_name="s3",
        store=S3Cache(type="s3", bucket="b", key="{pipeline}/{branch}"),
        metadata_key=None,
        graphs={"deps": ("deps",), "final": ("deps", "final")},
    )
    return PlanInputs(
        services=(svc,),
        builder=BuilderConfig(name="default", driver="docker"),
        settings=Settings(),
        root=Path("/src"),
        commit="abc123",
        branch="main",
        default_branch="main",
        on_ci=True,
        pipeline="shop",
    )


def test_the_manifest_is_served_from_the_snapshot_without_another_listing(
    endpoint: Endpoint, store: CountingStore
) -> None:
    """Looking the snapshot up checks its blobs against the listing; the HEADs that follow reuse it."""
    answer = request(endpoint, "GET", f"/v2/{REPO}/manifests/final")
    assert answer.status == 200 and answer.getheader("Docker-Content-Digest") == digest_of(b'{"manifest": "final"}')
    request(endpoint, "HEAD", f"/v2/{REPO}/blobs/{digest_of(LAYERS[0])}")
    assert store.lists == 1 and store.heads == []


# ---------------------------------------------------------------------------------- held index writes

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def cache_manifest(*blobs: bytes) -> bytes:
    """What BuildKit PUTs for a cache with image-manifest=true (the first blob as its config)."""
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": digest_of(blobs[0]), "size": 1},
        "layers": [
            {"mediaType": "application/octet-stream", "digest": digest_of(b), "size": len(b)} for b in blobs[1:]
        ],
    }
    return json.dumps(document).encode()


def put(endpoint: Endpoint, path: str, body: bytes) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(endpoint.address, timeout=10)
    conn.request("PUT", path, body=body, headers={"Content-Type": MANIFEST_TYPE})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


WRITABLE = {REPO: Repository("shop/main", "app", writable=True, tags=frozenset({"deps", "final"}))}
NEW = cache_manifest(*LAYERS[:3])


def snapshot_digest(store: MemoryStore, stage: str = "final") -> str:
    found = parse_snapshot(store.snapshots[f"shop/main/app/{stage}"][0])
    assert isinstance(found, Snapshot)
    return str(found.manifest["digest"])


def test_a_held_save_writes_its_index_only_when_published(store: CountingStore) -> None:
    """hold: the PUT answers 201 and stores the manifest blob, but the index waits (with its lease) for
    publish(), after which the traffic is what an unheld save leaves."""
    old = snapshot_digest(store)
    with Endpoint(store, WRITABLE, hold=True) as endpoint:
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201
        assert snapshot_digest(store) == old and digest_of(NEW) in store.blobs
        assert len(store.leases_held) == 1 and endpoint.pending() == [(REPO, "final")]
        assert endpoint.traffic.saved == {} and (REPO, "final") not in endpoint.traffic.manifests
        assert endpoint.publish() == []
        assert snapshot_digest(store) == digest_of(NEW) and store.leases_held == {} and endpoint.pending() == []
        assert endpoint.publish() == []
    unheld_store = CountingStore()
    save_snapshot(unheld_store, "shop/main/app/final", b'{"manifest": "final"}', *LAYERS)
    with Endpoint(unheld_store, WRITABLE) as unheld:
        assert put(unheld, f"/v2/{REPO}/manifests/final", NEW).status == 201
    assert endpoint.traffic == unheld.traffic
    assert endpoint.traffic.saved == {(REPO, "final"): SnapshotName("shop/main", "app", "final")}


@pytest.mark.parametrize("how", ["discard", "stop"])
def test_held_writes_dropped_by_discard_or_stop_leave_no_trace(store: CountingStore, how: str) -> None:
    old = snapshot_digest(store)
    endpoint = Endpoint(store, WRITABLE, hold=True)
    with endpoint:
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201
        if how == "discard":
            endpoint.discard()
            assert endpoint.publish() == []
    assert snapshot_digest(store) == old and store.leases_held == {} and endpoint.pending() == []
    assert endpoint.traffic.saved == {} and endpoint.traffic.problems == []


def test_publish_checks_the_blobs_again_and_says_what_it_could_not_write(store: CountingStore) -> None:
    old = snapshot_digest(store)
    with Endpoint(store, WRITABLE, hold=True) as endpoint:
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201
        assert put(endpoint, f"/v2/{REPO}/manifests/deps", cache_manifest(LAYERS[0], LAYERS[1])).status == 201
        del store.blobs[digest_of(LAYERS[2])]  # gone although leased (a lease older than a day, say)
        problem = (
            f"save of snapshot shop/main/app/final not written: blob {digest_of(LAYERS[2])} is no longer in mem://"
        )
        assert endpoint.publish() == [problem]
        assert problem in endpoint.traffic.problems and store.leases_held == {}
        assert snapshot_digest(store) == old and snapshot_digest(store, "deps") == digest_of(
            cache_manifest(*LAYERS[:2])
        )
        assert list(endpoint.traffic.saved) == [(REPO, "deps")]
        # Nothing was written under "final": its permit is back, and a later save of it goes through.
        store.blobs[digest_of(LAYERS[2])] = LAYERS[2]
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201
        assert put(endpoint, f"/v2/{REPO}/manifests/deps", NEW).status == 403
        assert endpoint.publish() == [] and snapshot_digest(store) == digest_of(NEW)


def test_publish_reports_a_store_that_fails(store: CountingStore) -> None:
    with Endpoint(store, WRITABLE, hold=True) as endpoint:
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201

        def refuse(name: str, body: bytes) -> None:
            raise StoreError(f"mem://: writing snapshot {name}: AccessDenied")

        store.put_snapshot = refuse  # type: ignore[method-assign]
        assert endpoint.publish() == [
            "save of snapshot shop/main/app/final not written: mem://: writing snapshot shop/main/app/final: "
            "AccessDenied"
        ]
        assert store.leases_held == {} and endpoint.traffic.saved == {}


def test_a_tag_held_then_written_again_keeps_only_the_later_write(store: CountingStore) -> None:
    with Endpoint(store, WRITABLE, hold=True) as endpoint:
        assert put(endpoint, f"/v2/{REPO}/manifests/final", cache_manifest(*LAYERS[:2])).status == 201
        endpoint.allow_again([(REPO, "final")])  # the runner's second bake of the same targets
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201
        assert endpoint.pending() == [(REPO, "final")] and len(store.leases_held) == 1
        assert endpoint.publish() == [] and snapshot_digest(store) == digest_of(NEW)


@pytest.mark.parametrize("published", [True, False])
def test_the_report_counts_a_held_save_once_published(store: CountingStore, published: bool) -> None:
    with Endpoint(store, WRITABLE, hold=True) as endpoint:
        assert put(endpoint, f"/v2/{REPO}/manifests/final", NEW).status == 201
        if published:
            endpoint.publish()
    plan = make_plan(s3_inputs(), BuildOptions())
    results = {t.name: StageResult(t.service, t.stage, t.dockerfile_target, t.final, name=t.name) for t in plan.targets}
    report_traffic(endpoint, plan.targets, results)
    assert bool(results["app-final"].s3_saved) is published
