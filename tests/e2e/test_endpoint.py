"""End-to-end: the registry endpoint (dockercache.stores.s3.endpoint) over HTTP, backed by a real S3 server (moto)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

import pytest

from dockercache.config.caches import S3Cache
from dockercache.stores.s3.client import S3Store
from dockercache.stores.s3.endpoint import Endpoint, repository_name
from dockercache.stores.s3.endpoint_access import Repository
from dockercache.stores.s3.snapshots import Snapshot, Snapshots, parse_snapshot

from .conftest import ACCESS_KEY, SECRET_KEY, Stack

KEY, SERVICE = "example/main", "ruby"
REPO = repository_name(KEY, SERVICE)
RO_KEY = "example/latest"
RO_REPO = repository_name(RO_KEY, SERVICE)
REPOSITORIES = {REPO: Repository(KEY, SERVICE, writable=True), RO_REPO: Repository(RO_KEY, SERVICE)}
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
Body = bytes | list[bytes] | None


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def blob_key(digest: str) -> str:
    return f"cache/blobs/sha256/{digest.removeprefix('sha256:')}"


class CountingStore(S3Store):
    """The real store, recording every blob it sends to S3; ``gate`` (if set) holds a send until it is set."""

    def __init__(self, config: S3Cache) -> None:
        super().__init__(config)
        self.sent: list[str] = []
        self.gate: threading.Event | None = None

    def upload_blob_fileobj(self, digest: str, fileobj: IO[bytes]) -> None:
        self.sent.append(digest)
        if self.gate is not None:
            assert self.gate.wait(30), "the second upload never arrived"
        super().upload_blob_fileobj(digest, fileobj)

    def put_blob_bytes(self, digest: str, body: bytes) -> None:
        self.sent.append(digest)
        super().put_blob_bytes(digest, body)


class CountingReads(S3Store):
    """The real store, recording every blob it reads whole."""

    def __init__(self, config: S3Cache) -> None:
        super().__init__(config)
        self.blob_reads: list[str] = []

    def get_blob_bytes(self, digest: str, limit: int) -> bytes | None:
        self.blob_reads.append(digest)
        return super().get_blob_bytes(digest, limit)


@dataclass
class Bucket:
    name: str
    client: Any
    config: S3Cache

    def objects(self, prefix: str = "cache/") -> dict[str, Any]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return {o["Key"]: o for page in pages for o in page.get("Contents", [])}

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def put_blob(self, data: bytes) -> str:
        """A blob written straight to S3 (as an earlier run would have), not through the endpoint."""
        self.client.put_object(Bucket=self.name, Key=blob_key(sha(data)), Body=data)
        return sha(data)

    def snapshot(self, stage: str) -> bytes | None:
        return self.read(f"cache/snapshots/{KEY}/{SERVICE}/{stage}.json")

    def wait_for_lease(self) -> None:
        for _ in range(600):
            if self.objects("cache/leases/"):
                return
            time.sleep(0.05)
        raise AssertionError("no lease was written")


def racing_prune(store: CountingStore, bucket: Bucket, digest: str) -> threading.Thread:
    """A prune that began before a save wrote its lease, so never saw it: it deletes ``digest`` once the lease
    is there (as if it had listed the leases just before), then ends."""
    lock = store.begin_prune()

    def run() -> None:
        try:
            bucket.wait_for_lease()
            store.delete_blobs([digest])
        finally:
            store.end_prune(lock)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def bucket(stack: Stack, s3_client: Any, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    name = f"endpoint-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    config = S3Cache(type="s3", bucket=name, prefix="cache", endpoint_url=stack.s3_endpoint, region="us-east-1")
    return Bucket(name, s3_client, config)


@pytest.fixture
def store(bucket: Bucket) -> CountingStore:
    return CountingStore(bucket.config)


@pytest.fixture
def endpoint(store: CountingStore) -> Iterator[Endpoint]:
    with Endpoint(store, REPOSITORIES, prune_wait=10) as ep:
        yield ep


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def code(self) -> str:
        return str(json.loads(self.body)["errors"][0]["code"])


def call(
    to: Endpoint | http.client.HTTPConnection, method: str, path: str, body: Body = None, content_type: str = ""
) -> Reply:
    """One request on a new connection to an endpoint, or on ``to``; chunked when ``body`` is a list of chunks."""
    conn = http.client.HTTPConnection(to.address, timeout=60) if isinstance(to, Endpoint) else to
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        chunked = body is not None and not isinstance(body, bytes)
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        if conn is not to:
            conn.close()


def start(ep: Endpoint, repo: str = REPO) -> str:
    """A new upload session's location."""
    reply = call(ep, "POST", f"/v2/{repo}/blobs/uploads/")
    assert reply.status == 202, reply.body
    location = reply.headers["Location"]
    assert location.startswith(f"/v2/{repo}/blobs/uploads/")
    return location


def upload(ep: Endpoint, data: bytes, digest: str | None = None) -> Reply:
    """POST, then one PUT with the whole body."""
    return call(ep, "PUT", f"{start(ep)}?digest={digest or sha(data)}", data)


def image_manifest(config: bytes, *layers: bytes) -> bytes:
    """What BuildKit writes for a registry cache with image-manifest=true."""
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": sha(layer), "size": len(layer)} for layer in layers],
    }
    return json.dumps(document).encode()


def put_manifest(ep: Endpoint, body: bytes, ref: str = "final", repo: str = REPO) -> Reply:
    return call(ep, "PUT", f"/v2/{repo}/manifests/{ref}", body, MANIFEST_TYPE)


def test_base_unknown_paths_and_delete(endpoint: Endpoint) -> None:
    base = call(endpoint, "GET", "/v2/")
    assert (base.status, base.headers["Docker-Distribution-API-Version"]) == (200, "registry/2.0")
    for path in ("/nothing", f"/v2/{REPO}/referrers/{sha(b'x')}", "/v2/_catalog", "/v2/UPPER/manifests/x"):
        reply = call(endpoint, "GET", path)
        assert (reply.status, reply.headers["Content-Type"]) == (404, "application/json") and reply.code, path
    digest = sha(b"x")
    for path in (f"/v2/{REPO}/blobs/{digest}", f"/v2/{REPO}/manifests/final", f"/v2/{REPO}/manifests/{digest}"):
        reply = call(endpoint, "DELETE", path)
        assert (reply.status, reply.code) == (405, "UNSUPPORTED"), path


def test_tls_probe_gets_an_http_answer_and_http_goes_on(endpoint: Endpoint) -> None:
    host, port = endpoint.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as probe:
        probe.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)))
        answer = b""
        while chunk := probe.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400"), answer
    assert call(endpoint, "GET", "/v2/").status == 200
    with socket.create_connection((host, int(port)), timeout=10):  # a client that connects and says nothing
        conn = http.client.HTTPConnection(endpoint.address, timeout=10)
        try:
            assert call(conn, "GET", "/v2/").status == 200  # does not stop the others
        finally:
            conn.close()


def patch_chunks(ep: Endpoint, data: bytes, digest: str | None = None) -> Reply:
    location = start(ep)
    for part in (data[:5], data[5:12]):
        reply = call(ep, "PATCH", location, part)
        assert reply.status == 202 and reply.headers["Location"] == location, reply.body
    assert call(ep, "PATCH", location, b"").headers["Range"] == "0-11"
    return call(ep, "PUT", f"{location}?digest={digest or sha(data)}", data[12:])


def put_chunked(ep: Endpoint, data: bytes, digest: str | None = None) -> Reply:
    return call(ep, "PUT", f"{start(ep)}?digest={digest or sha(data)}", [data[:7], data[7:20], data[20:]])


def monolithic(ep: Endpoint, data: bytes, digest: str | None = None) -> Reply:
    return call(ep, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest or sha(data)}", data)


FLOWS = [upload, patch_chunks, put_chunked, monolithic]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.__name__)
def test_upload_flows_store_the_exact_bytes(
    flow: Any, endpoint: Endpoint, store: CountingStore, bucket: Bucket
) -> None:
    data = b"layer bytes " + uuid.uuid4().bytes * 50
    reply = flow(endpoint, data)
    assert reply.status == 201, reply.body
    assert reply.headers["Docker-Content-Digest"] == sha(data)
    assert reply.headers["Location"] == f"/v2/{REPO}/blobs/{sha(data)}"
    assert bucket.read(blob_key(sha(data))) == data
    assert store.sent == [sha(data)] and endpoint.traffic.uploaded == {sha(data): len(data)}
    again = flow(endpoint, data)  # this run has it now: not sent again
    assert again.status == 201 and store.sent == [sha(data)]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.__name__)
def test_wrong_digest_is_refused_and_nothing_is_written(
    flow: Any, endpoint: Endpoint, store: CountingStore, bucket: Bucket
) -> None:
    data = b"what the client sends " * 10
    reply = flow(endpoint, data, sha(data + b"!"))
    assert (reply.status, reply.code) == (400, "DIGEST_INVALID"), reply.body
    assert bucket.objects() == {} and store.sent == [] and endpoint.traffic.uploaded == {}


def test_blob_already_in_s3_is_not_written_again(endpoint: Endpoint, store: CountingStore, bucket: Bucket) -> None:
    data = b"uploaded by an earlier run"
    digest = bucket.put_blob(data)
    before = bucket.objects()[blob_key(digest)]
    for reply in (upload(endpoint, data), monolithic(endpoint, data)):
        assert (reply.status, reply.headers["Docker-Content-Digest"]) == (201, digest)
    after = bucket.objects()[blob_key(digest)]
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert store.sent == [] and endpoint.traffic.uploaded == {}


def test_mount_of_a_stored_blob_needs_no_session(endpoint: Endpoint, store: CountingStore, bucket: Bucket) -> None:
    digest = bucket.put_blob(b"a layer another repository has")
    mounted = call(endpoint, "POST", f"/v2/{REPO}/blobs/uploads/?mount={digest}&from=other")
    assert mounted.status == 201 and mounted.headers["Location"] == f"/v2/{REPO}/blobs/{digest}"
    assert mounted.headers["Docker-Upload-UUID"] is None
    data = b"a layer nobody has"
    fallback = call(endpoint, "POST", f"/v2/{REPO}/blobs/uploads/?mount={sha(data)}&from=other")
    assert fallback.status == 202 and fallback.headers["Docker-Upload-UUID"], fallback.body
    assert fallback.headers["Location"] == f"/v2/{REPO}/blobs/uploads/{fallback.headers['Docker-Upload-UUID']}"
    done = call(endpoint, "PUT", f"{fallback.headers['Location']}?digest={sha(data)}", data)
    assert done.status == 201 and bucket.read(blob_key(sha(data))) == data
    assert store.sent == [sha(data)]


def test_head_and_get_blob(stack: Stack, endpoint: Endpoint, bucket: Bucket) -> None:
    data = b"cached layer " * 100
    digest = bucket.put_blob(data)
    head = call(endpoint, "HEAD", f"/v2/{REPO}/blobs/{digest}")
    assert (head.status, head.headers["Content-Length"], head.body) == (200, str(len(data)), b"")
    assert head.headers["Docker-Content-Digest"] == digest
    absent = sha(b"never stored")
    assert call(endpoint, "HEAD", f"/v2/{RO_REPO}/blobs/{absent}").status == 404
    get = call(endpoint, "GET", f"/v2/{RO_REPO}/blobs/{digest}")
    assert get.status == 307, get.body
    location = get.headers["Location"]
    assert location.startswith(f"{stack.s3_endpoint}/{bucket.name}/{blob_key(digest)}?")
    assert "Signature" in location
    with urllib.request.urlopen(location, timeout=30) as response:
        assert response.read() == data
    assert endpoint.traffic.redirects == [(RO_REPO, digest, len(data))]
    missing = call(endpoint, "GET", f"/v2/{REPO}/blobs/{absent}")
    assert (missing.status, missing.code) == (404, "BLOB_UNKNOWN")


def test_manifest_put_writes_a_snapshot_that_a_later_run_serves(
    endpoint: Endpoint, store: CountingStore, bucket: Bucket
) -> None:
    config, layer = b'{"layers": []}', b"layer " * 64
    assert upload(endpoint, config).status == upload(endpoint, layer).status == 201
    body = image_manifest(config, layer)
    reply = put_manifest(endpoint, body)
    assert reply.status == 201, reply.body
    digest = reply.headers["Docker-Content-Digest"]
    assert digest == sha(body) and bucket.read(blob_key(digest)) == body
    raw = bucket.snapshot("final")
    assert raw is not None
    snapshot = parse_snapshot(raw)
    assert isinstance(snapshot, Snapshot), snapshot
    assert dict(snapshot.blobs) == {sha(config): len(config), sha(layer): len(layer), digest: len(body)}
    assert (snapshot.manifest["digest"], snapshot.manifest["mediaType"]) == (digest, MANIFEST_TYPE)
    assert bucket.objects("cache/leases/") == {}
    # The snapshot carries the manifest (the descriptor's data): a later run serves it by tag without reading
    # its blob, which stays for lookups by digest.
    assert snapshot.manifest_body == body
    later_store = CountingReads(bucket.config)
    later = Endpoint(later_store, {REPO: Repository(KEY, SERVICE)})
    with later:
        assert call(later, "GET", f"/v2/{REPO}/manifests/final").body == body
        assert later_store.blob_reads == []
        for ref in ("final", digest):
            served = call(later, "GET", f"/v2/{REPO}/manifests/{ref}")
            assert served.status == 200, (ref, served.body)
            assert (served.body, served.headers["Content-Type"]) == (body, MANIFEST_TYPE)
            assert served.headers["Docker-Content-Digest"] == digest
        head = call(later, "HEAD", f"/v2/{REPO}/manifests/final")
        assert (head.status, head.headers["Content-Length"]) == (200, str(len(body)))
        assert call(later, "GET", f"/v2/{REPO}/manifests/other").status == 404
        assert later.traffic.manifests[(REPO, "final")] == frozenset(snapshot.blobs)


def test_manifest_naming_an_absent_blob_changes_no_snapshot(endpoint: Endpoint, bucket: Bucket) -> None:
    config, layer = b"{}", b"layer"
    assert upload(endpoint, config).status == upload(endpoint, layer).status == 201
    assert put_manifest(endpoint, image_manifest(config, layer)).status == 201
    endpoint.allow_again([(REPO, "final")])  # a tag is written once per run unless granted again
    earlier = bucket.snapshot("final")
    absent = b"a layer that was never uploaded"
    broken = image_manifest(config, layer, absent)
    for tag in ("final", "other"):
        reply = put_manifest(endpoint, broken, tag)
        assert (reply.status, reply.code) == (400, "MANIFEST_BLOB_UNKNOWN"), reply.body
        assert json.loads(reply.body)["errors"][0]["detail"] == {"digest": sha(absent)}
    assert bucket.snapshot("final") == earlier and bucket.snapshot("other") is None
    assert bucket.read(blob_key(sha(broken))) is None and bucket.objects("cache/leases/") == {}


def test_writes_outside_the_writable_repository_are_refused(
    endpoint: Endpoint, store: CountingStore, bucket: Bucket
) -> None:
    data = b"a layer"
    digest = bucket.put_blob(data)
    before = bucket.objects()
    body = image_manifest(data)
    for method, path, payload in [
        ("POST", f"/v2/{RO_REPO}/blobs/uploads/", None),
        ("POST", f"/v2/{RO_REPO}/blobs/uploads/?mount={digest}&from={REPO}", None),
        ("PUT", f"/v2/{RO_REPO}/manifests/final", body),
    ]:
        reply = call(endpoint, method, path, payload)
        assert (reply.status, reply.code) == (403, "DENIED"), (method, path, reply.body)
    for method, path, payload in [
        ("POST", "/v2/not/served/blobs/uploads/", None),
        ("PUT", "/v2/not/served/manifests/final", body),
        ("GET", "/v2/not/served/manifests/final", None),
        ("GET", f"/v2/not/served/blobs/{digest}", None),
    ]:
        reply = call(endpoint, method, path, payload)
        assert (reply.status, reply.code) == (404, "NAME_UNKNOWN"), (method, path, reply.body)
    assert bucket.objects() == before and store.sent == []


def test_a_lease_keeps_a_prune_from_deleting_what_a_save_names(store: CountingStore, bucket: Bucket) -> None:
    config, layer = bucket.put_blob(b"old config"), bucket.put_blob(b"old layer")
    orphan = bucket.put_blob(b"named by nobody")
    leases_during_prune: list[dict[str, Any]] = []
    pruned: list[list[str]] = []

    class PruneAfterLease(Endpoint):
        def _await_prunes(self) -> None:
            leases_during_prune.append(bucket.objects("cache/leases/"))
            result = Snapshots(self.store).prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0))
            pruned.append(result.blobs)
            super()._await_prunes()

    with PruneAfterLease(store, REPOSITORIES) as ep:
        reply = put_manifest(ep, image_manifest(b"old config", b"old layer"))
    assert reply.status == 201, reply.body
    assert len(leases_during_prune[0]) == 1
    assert pruned == [[orphan]]  # the prune ran, and deleted all it could
    blobs = {blob_key(d) for d in (config, layer, sha(image_manifest(b"old config", b"old layer")))}
    assert set(bucket.objects("cache/blobs/")) == blobs
    assert Snapshots(store).verify() == []
    assert bucket.objects("cache/leases/") == {} and bucket.objects("cache/locks/") == {}


# A save checks its blobs with one listing while the bucket is small, else with a HEAD per blob: both ways.
CHECKS = pytest.mark.parametrize("list_limit", [0, 1000], ids=["heads", "listing"])


@CHECKS
def test_a_save_waits_for_a_running_prune_then_sees_what_it_deleted(
    store: CountingStore, bucket: Bucket, list_limit: int
) -> None:
    config, layer = b"old config", b"old layer"
    bucket.put_blob(config)
    pruner = racing_prune(store, bucket, bucket.put_blob(layer))
    with Endpoint(store, REPOSITORIES, prune_wait=10, list_limit=list_limit) as ep:
        assert len(ep.known()) == 2  # the run's first listing, taken before the prune deleted the layer
        reply = put_manifest(ep, image_manifest(config, layer))
    pruner.join(30)
    assert (reply.status, reply.code) == (400, "MANIFEST_BLOB_UNKNOWN"), reply.body
    assert bucket.snapshot("final") is None
    assert bucket.objects("cache/leases/") == {} and bucket.objects("cache/locks/") == {}


@CHECKS
def test_a_prune_that_missed_the_lease_cannot_take_what_this_run_uploaded(
    store: CountingStore, bucket: Bucket, list_limit: int
) -> None:
    # With --grace shorter than the build (or a build longer than the default 1h), a prune that missed the
    # lease deletes a layer this run uploaded: the save must not trust its own uploads.
    config, layer = b"config", b"layer uploaded by this run"
    with Endpoint(store, REPOSITORIES, prune_wait=10, list_limit=list_limit) as endpoint:
        endpoint.known()
        assert upload(endpoint, config).status == upload(endpoint, layer).status == 201
        pruner = racing_prune(store, bucket, sha(layer))
        reply = put_manifest(endpoint, image_manifest(config, layer))
    pruner.join(30)
    assert (reply.status, reply.code) == (400, "MANIFEST_BLOB_UNKNOWN"), (reply.status, reply.body)
    assert bucket.snapshot("final") is None and Snapshots(store).verify() == []


def test_without_a_lease_prune_deletes_an_unreferenced_blob(store: CountingStore, bucket: Bucket) -> None:
    unleased, leased = bucket.put_blob(b"nobody relies on this"), bucket.put_blob(b"a save relies on this")
    lease = store.put_lease([leased])
    result = Snapshots(store).prune(keep=0, older_than=None, dry_run=False, grace=timedelta(0))
    assert result.blobs == [unleased]
    assert set(bucket.objects("cache/blobs/")) == {blob_key(leased)}
    store.delete_lease(lease)


def test_concurrent_uploads_of_one_blob_send_it_once(store: CountingStore, bucket: Bucket) -> None:
    data = b"the same layer from two pushes " * 1000
    entered = threading.Semaphore(0)

    class Counting(Endpoint):
        def finish_upload(self, name: str, session: str, digest: str) -> None:
            entered.release()
            super().finish_upload(name, session, digest)

    store.gate = threading.Event()
    replies: list[Reply] = []
    with Counting(store, REPOSITORIES) as ep:
        threads = [threading.Thread(target=lambda: replies.append(upload(ep, data))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in range(2):
            assert entered.acquire(timeout=30)
        store.gate.set()  # both uploads are finishing: the first one's send goes on now
        for thread in threads:
            thread.join(60)
    assert [r.status for r in replies] == [201, 201]
    assert store.sent == [sha(data)] and ep.traffic.uploaded == {sha(data): len(data)}
    assert bucket.read(blob_key(sha(data))) == data


@pytest.mark.parametrize(
    "method, path",
    [("POST", f"/v2/{RO_REPO}/blobs/uploads/?digest={sha(b'x')}"), ("PATCH", f"/v2/{REPO}/blobs/uploads/gone")],
    ids=["post-read-only", "patch-unknown-session"],
)
def test_a_refused_upload_leaves_the_connection_usable(endpoint: Endpoint, method: str, path: str) -> None:
    conn = http.client.HTTPConnection(endpoint.address, timeout=10)
    try:
        refused = call(conn, method, path, b"an upload's body")
        assert refused.status in (403, 404), refused.body
        assert call(conn, "GET", "/v2/").status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("ref", ["", "..", "a:b"], ids=["empty", "dots", "colon"])
def test_a_manifest_put_under_an_invalid_tag_writes_no_snapshot(endpoint: Endpoint, bucket: Bucket, ref: str) -> None:
    config, layer = b"{}", b"layer"
    assert upload(endpoint, config).status == upload(endpoint, layer).status == 201
    reply = put_manifest(endpoint, image_manifest(config, layer), ref)
    assert bucket.objects("cache/snapshots/") == {}, reply.status
    assert reply.status in (400, 404)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.__name__)
def test_a_blob_above_the_threshold_goes_up_in_parts(flow: Any, bucket: Bucket) -> None:
    """multipart_threshold_mb = 5: a 12 MB layer goes to S3 as a multipart upload (8 MB parts), byte-exact."""
    config = dataclasses.replace(bucket.config, multipart_threshold_mb=5)
    data = os.urandom(12 * 1024 * 1024)
    with Endpoint(CountingStore(config), REPOSITORIES) as ep:
        reply = flow(ep, data)
    assert reply.status == 201, reply.body
    key = blob_key(sha(data))
    assert bucket.objects()[key]["ETag"].strip('"').endswith("-2")  # S3's ETag of a 2-part upload
    assert bucket.read(key) == data
    small = b"under the threshold" * 100
    with Endpoint(CountingStore(config), REPOSITORIES) as ep:
        assert flow(ep, small).status == 201
    assert "-" not in bucket.objects()[blob_key(sha(small))]["ETag"]  # one PUT


def test_tags_list_names_the_stages_with_a_snapshot(endpoint: Endpoint, bucket: Bucket) -> None:
    """One listing of the key's snapshots; a longer key that starts with this one's is another repository."""
    config, layer = b"{}", b"layer"
    assert upload(endpoint, config).status == upload(endpoint, layer).status == 201
    for tag in ("final", "deps"):
        assert put_manifest(endpoint, image_manifest(config, layer), tag).status == 201
    body = bucket.snapshot("final")
    assert body is not None
    bucket.client.put_object(Bucket=bucket.name, Key=f"cache/snapshots/{KEY}/{SERVICE}/x/y.json", Body=body)
    listed = call(endpoint, "GET", f"/v2/{REPO}/tags/list")
    assert (listed.status, json.loads(listed.body)) == (200, {"name": REPO, "tags": ["deps", "final"]})
    empty = call(endpoint, "GET", f"/v2/{RO_REPO}/tags/list")
    assert json.loads(empty.body) == {"name": RO_REPO, "tags": []}


def test_a_held_save_keeps_its_lease_until_published(store: CountingStore, bucket: Bucket) -> None:
    config, layer = b"{}", b"a held layer"
    with Endpoint(store, REPOSITORIES, hold=True) as ep:
        assert upload(ep, config).status == upload(ep, layer).status == 201
        reply = put_manifest(ep, image_manifest(config, layer))
        assert reply.status == 201, reply.body
        assert bucket.snapshot("final") is None and len(bucket.objects("cache/leases/")) == 1
        assert bucket.read(blob_key(sha(image_manifest(config, layer)))) == image_manifest(config, layer)
        assert ep.publish() == []
        assert bucket.snapshot("final") is not None and bucket.objects("cache/leases/") == {}
        assert call(ep, "GET", f"/v2/{REPO}/manifests/final").body == image_manifest(config, layer)
    assert Snapshots(store).verify() == []


def test_with_a_secret_nothing_is_read_or_written_without_it(store: CountingStore, bucket: Bucket) -> None:
    secret = uuid.uuid4().hex
    auth = "Basic " + base64.b64encode(f"dockercache:{secret}".encode()).decode()
    config, layer = bucket.put_blob(b"{}"), bucket.put_blob(b"a layer")
    body = image_manifest(b"{}", b"a layer")
    before = bucket.objects()
    with Endpoint(store, REPOSITORIES, secret=secret) as ep:
        conn = http.client.HTTPConnection(ep.address, timeout=30)
        try:
            for method, path, payload in [
                ("GET", f"/v2/{RO_REPO}/blobs/{layer}", None),
                ("POST", f"/v2/{REPO}/blobs/uploads/?digest={sha(b'x')}", b"x"),
                ("PUT", f"/v2/{REPO}/manifests/final", body),
            ]:
                reply = call(conn, method, path, payload)
                assert (reply.status, reply.code) == (401, "UNAUTHORIZED"), (method, path)
                assert reply.headers["WWW-Authenticate"] == 'Basic realm="dockercache"'
            assert bucket.objects() == before and ep.traffic.redirects == []
            conn.request("PUT", f"/v2/{REPO}/manifests/final", body, {"Authorization": auth})
            response = conn.getresponse()
            assert (response.status, response.read()) == (201, b"")
        finally:
            conn.close()
    assert bucket.snapshot("final") is not None and config in ep.traffic.manifests[(REPO, "final")]


def test_a_save_refused_by_a_racing_prune_is_recorded_for_a_retry(store: CountingStore, bucket: Bucket) -> None:
    config, layer = b"old config", b"old layer"
    bucket.put_blob(config)
    pruner = racing_prune(store, bucket, bucket.put_blob(layer))
    with Endpoint(store, REPOSITORIES, prune_wait=10) as ep:
        ep.known()
        reply = put_manifest(ep, image_manifest(config, layer))
        pruner.join(30)
        assert (reply.status, reply.code) == (400, "MANIFEST_BLOB_UNKNOWN"), reply.body
        reason = (
            f"save of snapshot {KEY}/{SERVICE}/final refused: blob {sha(layer)} was deleted by a prune of "
            f"s3://{bucket.name}/cache that ran meanwhile (MANIFEST_BLOB_UNKNOWN)"
        )
        assert ep.traffic.refused == {(REPO, "final"): reason} and reason in ep.traffic.problems
        assert call(ep, "HEAD", f"/v2/{REPO}/blobs/{sha(layer)}").status == 404  # so BuildKit uploads it again
        assert upload(ep, layer).status == 201
        assert put_manifest(ep, image_manifest(config, layer)).status == 201
    assert ep.traffic.refused == {} and bucket.snapshot("final") is not None
