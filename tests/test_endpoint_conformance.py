"""dockercache.stores.s3.endpoint against the OCI distribution spec and its own rules, in process, over
a store in memory.

Each row is one request (method, path, headers, body) and what must come back (status, OCI error code,
headers); the rows run against an endpoint that asks for credentials, serving a writable repository that
may save the tags ``final`` and ``deps`` and a read-only one. Malformed framing is sent over a raw socket.
Sequences (a tag written twice, a save refused after a prune, an attack) follow the table.
"""

from __future__ import annotations

import base64
import errno
import http.client
import io
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from dockercache.stores.s3.endpoint import Endpoint, repository_name
from dockercache.stores.s3.endpoint_access import Repository
from dockercache.stores.s3.layout import SnapshotName
from dockercache.stores.s3.snapshots import BlobStore, Snapshot, parse_snapshot, snapshot_document

from .conftest import NOW, MemoryStore, digest_of, save_snapshot

SECRET = "s3cr3t-for-tests"
KEY, RO_KEY, SERVICE = "shop/main", "shop/latest", "app"
REPO, RO = repository_name(KEY, SERVICE), repository_name(RO_KEY, SERVICE)
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
LAYERS = [b"layer one", b"layer two"]
CONFIG = b'{"layers": [{"blob": "sha256:0"}], "records": []}'  # a BuildKit cache config: JSON, not a manifest
UPLOADED = b"hello"
"""What the table's open upload holds before each row."""
STORE_METHODS = frozenset(n for n in vars(BlobStore) if not n.startswith("_"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTH = basic("dockercache", SECRET)


def manifest(*blobs: bytes, media_type: str | None = MANIFEST_TYPE) -> bytes:
    """An image manifest naming ``blobs`` (the first as its config)."""
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": digest_of(blobs[0]), "size": 1},
        "layers": [
            {"mediaType": "application/octet-stream", "digest": digest_of(b), "size": len(b)} for b in blobs[1:]
        ],
    }
    if media_type:
        document["mediaType"] = media_type
    return json.dumps(document).encode()


FINAL = manifest(CONFIG, *LAYERS)
OTHER = manifest(CONFIG, LAYERS[0])
"""Another manifest of blobs the store has: what a second, different write of a tag would say."""


@dataclass
class FakeStore(MemoryStore):
    """The store in memory, recording every call the endpoint makes; ``prunes``: prune_locks() answers in turn
    (then none), each taking ``prune_takes`` from the store as it is seen."""

    calls: list[str] = field(default_factory=list)
    prunes: list[set[str]] = field(default_factory=list)
    prune_takes: list[str] = field(default_factory=list)

    def __getattribute__(self, name: str) -> Any:
        if name in STORE_METHODS:
            object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)

    def prune_locks(self) -> set[str]:
        if self.prunes:
            for digest in self.prune_takes:
                self.blobs.pop(digest, None)
            return self.prunes.pop(0)
        return set()

    def state(self) -> tuple[Any, ...]:
        return dict(self.blobs), dict(self.snapshots), dict(self.leases_held)


def seeded() -> FakeStore:
    store = FakeStore(url="mem://bucket/cache")
    save_snapshot(store, f"{KEY}/{SERVICE}/final", FINAL, CONFIG, *LAYERS)
    save_snapshot(store, f"{KEY}/{SERVICE}/deps", manifest(CONFIG, LAYERS[0]), CONFIG, LAYERS[0])
    save_snapshot(store, f"{RO_KEY}/{SERVICE}/final", FINAL, CONFIG, *LAYERS)
    save_snapshot(store, f"{KEY}/{SERVICE}/sub/x/y", manifest(CONFIG), CONFIG)  # key shop/main/app/sub: not a tag
    store.calls.clear()
    return store


def repositories(tags: frozenset[str] = frozenset({"final", "deps"})) -> dict[str, Repository]:
    return {REPO: Repository(KEY, SERVICE, writable=True, tags=tags), RO: Repository(RO_KEY, SERVICE)}


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def code(self) -> str | None:
        if not self.body or self.headers.get("Content-Type") != "application/json":
            return None
        errors = json.loads(self.body).get("errors")
        return str(errors[0]["code"]) if errors else None

    @property
    def message(self) -> str:
        return str(json.loads(self.body)["errors"][0]["message"])


def call(
    to: Endpoint | http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | list[bytes] | None = None,
    headers: dict[str, str] | None = None,
    auth: str | None = AUTH,
) -> Reply:
    """One request, on a new connection to ``to`` or on ``to``; chunked when ``body`` is a list of chunks."""
    conn = http.client.HTTPConnection(to.address, timeout=10) if isinstance(to, Endpoint) else to
    sent = {**({"Authorization": auth} if auth else {}), **(headers or {})}
    try:
        chunked = isinstance(body, list)
        if chunked:
            sent["Transfer-Encoding"] = "chunked"
        conn.request(method, path, body=body, headers=sent, encode_chunked=chunked)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        if conn is not to:
            conn.close()


def raw(endpoint: Endpoint, request: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Send ``request`` as is; returns (status, error body, all that came back) once the endpoint closes the
    connection (a socket timeout here means it kept it open)."""
    host, port = endpoint.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else {}, answer


def start_upload(endpoint: Endpoint, data: bytes = UPLOADED) -> str:
    reply = call(endpoint, "POST", f"/v2/{REPO}/blobs/uploads/")
    assert reply.status == 202, reply.body
    location = reply.headers["Location"]
    if data:
        assert call(endpoint, "PATCH", location, data).status == 202
    return location


@pytest.fixture
def store() -> FakeStore:
    return seeded()


@pytest.fixture
def endpoint(store: FakeStore) -> Any:
    with Endpoint(store, repositories(), secret=SECRET, prune_wait=5) as running:
        yield running


# --------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    id: str
    method: str
    path: str
    status: int
    code: str | None = None
    expect: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | list[bytes] | None = None
    auth: str | None = AUTH
    size: int | None = len(UPLOADED)
    """What the open upload holds after the row (None: it is gone)."""


CHALLENGE = {"WWW-Authenticate": 'Basic realm="dockercache"'}
LAYER = digest_of(LAYERS[0])
ROWS = [
    # 1. authentication: every request, /v2/ included; the challenge is Basic; nothing read or written
    Row("auth-base-none", "GET", "/v2/", 401, "UNAUTHORIZED", CHALLENGE, auth=None),
    Row("auth-base-wrong", "GET", "/v2/", 401, "UNAUTHORIZED", CHALLENGE, auth=basic("dockercache", "guess")),
    Row("auth-base-prefix", "GET", "/v2/", 401, "UNAUTHORIZED", auth=basic("dockercache", SECRET[:-1])),
    Row("auth-base-bearer", "GET", "/v2/", 401, "UNAUTHORIZED", auth=f"Bearer {SECRET}"),
    Row("auth-base-garbage", "GET", "/v2/", 401, "UNAUTHORIZED", auth="Basic !!!not-base64"),
    Row("auth-base-no-colon", "GET", "/v2/", 401, "UNAUTHORIZED", auth="Basic " + base64.b64encode(b"x").decode()),
    Row("auth-base-ok", "GET", "/v2/", 200, expect={"Docker-Distribution-API-Version": "registry/2.0"}),
    Row("auth-any-user", "GET", "/v2/", 200, auth=basic("someone", SECRET)),
    Row("auth-lowercase-scheme", "GET", "/v2/", 200, auth=AUTH.replace("Basic", "basic")),
    Row("auth-manifest-get", "GET", f"/v2/{REPO}/manifests/final", 401, "UNAUTHORIZED", CHALLENGE, auth=None),
    Row("auth-manifest-head", "HEAD", f"/v2/{REPO}/manifests/final", 401, None, CHALLENGE, auth=None),
    Row("auth-blob-get", "GET", f"/v2/{RO}/blobs/{LAYER}", 401, "UNAUTHORIZED", auth=None),
    Row("auth-blob-head", "HEAD", f"/v2/{RO}/blobs/{LAYER}", 401, None, CHALLENGE, auth=None),
    Row("auth-upload-post", "POST", f"/v2/{REPO}/blobs/uploads/", 401, "UNAUTHORIZED", auth=None, body=b"x" * 10),
    Row("auth-upload-patch", "PATCH", "{upload}", 401, "UNAUTHORIZED", auth=None, body=b"more"),
    Row("auth-upload-put", "PUT", "{upload}?digest=" + digest_of(UPLOADED), 401, "UNAUTHORIZED", auth=None),
    Row("auth-upload-delete", "DELETE", "{upload}", 401, "UNAUTHORIZED", auth=None),
    Row("auth-manifest-put", "PUT", f"/v2/{REPO}/manifests/final", 401, "UNAUTHORIZED", auth=None, body=FINAL),
    Row("auth-tags", "GET", f"/v2/{REPO}/tags/list", 401, "UNAUTHORIZED", auth=None),
    Row("auth-catalog", "GET", "/v2/_catalog", 401, "UNAUTHORIZED", auth=None),
    # 2. write permits: only the tags the run saves, only in the writable repository
    Row("permit-other-tag", "PUT", f"/v2/{REPO}/manifests/base", 403, "DENIED", body=FINAL),
    Row("permit-read-only", "PUT", f"/v2/{RO}/manifests/final", 403, "DENIED", body=FINAL),
    Row("permit-read-only-post", "POST", f"/v2/{RO}/blobs/uploads/", 403, "DENIED"),
    Row("permit-read-only-mount", "POST", f"/v2/{RO}/blobs/uploads/?mount={LAYER}&from={REPO}", 403, "DENIED"),
    # 5a. chunks in order: Content-Range must start where the upload ends
    Row("range-next", "PATCH", "{upload}", 202, None, {"Range": "0-9"}, {"Content-Range": "5-9"}, b"world", size=10),
    Row(
        "range-duplicate",
        "PATCH",
        "{upload}",
        416,
        "BLOB_UPLOAD_INVALID",
        {"Range": "0-4"},
        {"Content-Range": "0-4"},
        b"hello",
    ),
    Row(
        "range-gap",
        "PATCH",
        "{upload}",
        416,
        "BLOB_UPLOAD_INVALID",
        {"Range": "0-4"},
        {"Content-Range": "7-11"},
        b"world",
    ),
    Row("range-overlap", "PATCH", "{upload}", 416, "BLOB_UPLOAD_INVALID", {}, {"Content-Range": "3-7"}, b"lowor"),
    Row("range-length", "PATCH", "{upload}", 416, "BLOB_UPLOAD_INVALID", {}, {"Content-Range": "5-20"}, b"world"),
    Row(
        "range-malformed", "PATCH", "{upload}", 416, "BLOB_UPLOAD_INVALID", {}, {"Content-Range": "five-nine"}, b"world"
    ),
    Row("range-backwards", "PATCH", "{upload}", 416, "BLOB_UPLOAD_INVALID", {}, {"Content-Range": "9-5"}, b"world"),
    Row(
        "range-chunked-short",
        "PATCH",
        "{upload}",
        416,
        "BLOB_UPLOAD_INVALID",
        {},
        {"Content-Range": "5-12"},
        [b"wor", b"ld"],
    ),
    Row(
        "range-chunked-ok",
        "PATCH",
        "{upload}",
        202,
        None,
        {"Range": "0-9"},
        {"Content-Range": "5-9"},
        [b"wor", b"ld"],
        size=10,
    ),
    Row("range-none-streams", "PATCH", "{upload}", 202, None, {"Range": "0-9"}, body=b"world", size=10),
    Row(
        "range-put",
        "PUT",
        "{upload}?digest=" + digest_of(b"helloworld"),
        416,
        "BLOB_UPLOAD_INVALID",
        {},
        {"Content-Range": "0-4"},
        b"world",
    ),
    Row(
        "range-put-ok",
        "PUT",
        "{upload}?digest=" + digest_of(b"helloworld"),
        201,
        None,
        {},
        {"Content-Range": "5-9"},
        b"world",
        size=None,
    ),
    # 5b. manifests by digest are manifests only
    Row("by-digest-layer", "GET", f"/v2/{REPO}/manifests/{LAYER}", 404, "MANIFEST_UNKNOWN"),
    Row("by-digest-layer-head", "HEAD", f"/v2/{REPO}/manifests/{LAYER}", 404),
    Row("by-digest-config", "GET", f"/v2/{REPO}/manifests/{digest_of(CONFIG)}", 404, "MANIFEST_UNKNOWN"),
    Row(
        "by-digest-manifest",
        "GET",
        f"/v2/{REPO}/manifests/{digest_of(FINAL)}",
        200,
        None,
        {"Content-Type": MANIFEST_TYPE},
    ),
    # 5f. tags, catalog, referrers
    Row("tags", "GET", f"/v2/{REPO}/tags/list", 200, None, {"Content-Type": "application/json"}),
    Row(
        "tags-page",
        "GET",
        f"/v2/{REPO}/tags/list?n=1",
        200,
        None,
        {"Link": f'</v2/{REPO}/tags/list?n=1&last=deps>; rel="next"'},
    ),
    Row("tags-unserved", "GET", "/v2/not/served/tags/list", 404, "NAME_UNKNOWN"),
    Row("catalog", "GET", "/v2/_catalog", 404, "UNSUPPORTED"),
    Row("referrers", "GET", f"/v2/{REPO}/referrers/{digest_of(FINAL)}", 404, "UNSUPPORTED"),
    # 5e. what one upload may hold (this endpoint: 64 bytes)
    Row("too-large", "PATCH", "{upload}", 413, "SIZE_INVALID", body=b"x" * 60, size=None),
    Row("too-large-chunked", "PATCH", "{upload}", 413, "SIZE_INVALID", body=[b"x" * 40, b"x" * 40], size=None),
]
TAG_BODIES = {"tags": ["deps", "final"], "tags-page": ["deps"]}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_the_table(row: Row) -> None:
    store = seeded()
    with Endpoint(store, repositories(), secret=SECRET, max_upload_bytes=64) as endpoint:
        location = start_upload(endpoint)
        session = location.rsplit("/", 1)[1]
        before, store.calls[:] = store.state(), []
        reply = call(endpoint, row.method, row.path.replace("{upload}", location), row.body, row.headers, row.auth)
        assert (reply.status, reply.code if row.method != "HEAD" else None) == (row.status, row.code), reply.body
        for header, value in row.expect.items():
            assert reply.headers[header] == value, header
        if row.status == 401:
            assert store.calls == [] and store.state() == before, "a request without the secret reached the store"
        if row.status >= 400:
            assert store.state() == before and not store.uploads
        if row.id in TAG_BODIES:
            assert json.loads(reply.body) == {"name": REPO, "tags": TAG_BODIES[row.id]}
        status = call(endpoint, "GET", location)
        if row.size is None:
            assert status.status == 404 and session not in endpoint.uploads.sessions
        else:
            assert status.status == 204 and endpoint.uploads.sessions[session].size == row.size


# ------------------------------------------------------------------------- malformed framing, raw socket


def _patch(location: str, framing: bytes, body: bytes) -> bytes:
    return b"PATCH %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n%s\r\n%s" % (
        location.encode(),
        AUTH.encode(),
        framing,
        body,
    )


MALFORMED = [
    ("length-letters", b"Content-Length: abc\r\n", b"hello", "SIZE_INVALID"),
    ("length-negative", b"Content-Length: -1\r\n", b"hello", "SIZE_INVALID"),
    ("length-empty", b"Content-Length: \r\n", b"hello", "SIZE_INVALID"),
    ("length-plus", b"Content-Length: +5\r\n", b"hello", "SIZE_INVALID"),
    ("length-twice", b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!", "SIZE_INVALID"),
    ("chunk-size-letters", b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", "BLOB_UPLOAD_INVALID"),
    ("chunk-size-negative", b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n", "BLOB_UPLOAD_INVALID"),
    ("chunk-too-long", b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n", "BLOB_UPLOAD_INVALID"),
    ("encoding-gzip", b"Transfer-Encoding: gzip\r\n", b"hello", "BLOB_UPLOAD_INVALID"),
]


@pytest.mark.parametrize(("framing", "body", "code"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_body_framing_is_a_400_that_closes_the_connection(
    endpoint: Endpoint, framing: bytes, body: bytes, code: str
) -> None:
    location = start_upload(endpoint)
    status, error, answer = raw(endpoint, _patch(location, framing, body))
    assert (status, error["errors"][0]["code"]) == (400, code), answer
    assert answer.count(b"HTTP/1.1") == 1  # nothing of the body was taken for a request of its own
    assert endpoint.uploads.sessions[location.rsplit("/", 1)[1]].size == len(UPLOADED)  # nothing appended


def test_a_malformed_length_on_any_route_is_refused_too(endpoint: Endpoint) -> None:
    request = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: 1e3\r\n\r\n" % AUTH.encode()
    status, error, _ = raw(endpoint, request)
    assert (status, error["errors"][0]["code"]) == (400, "SIZE_INVALID")


# ------------------------------------------------------------------------------------ upload sessions


def test_an_idle_upload_expires(store: FakeStore) -> None:
    with Endpoint(store, repositories(), upload_idle=0.2) as endpoint:
        location = start_upload(endpoint)
        spool = next(iter(endpoint.uploads.sessions.values())).spool
        time.sleep(0.3)
        reply = call(endpoint, "PATCH", location, b"more")
        assert (reply.status, reply.code) == (404, "BLOB_UPLOAD_UNKNOWN")
        assert endpoint.uploads.sessions == {} and spool.closed


def test_open_uploads_are_bounded_and_idle_ones_make_room(store: FakeStore) -> None:
    with Endpoint(store, repositories(), max_uploads=2, upload_idle=1.0) as endpoint:
        first = start_upload(endpoint)
        start_upload(endpoint)
        refused = call(endpoint, "POST", f"/v2/{REPO}/blobs/uploads/", b"a body")
        assert (refused.status, refused.code) == (429, "TOOMANYREQUESTS"), refused.body
        assert "2 uploads are open" in refused.message and len(endpoint.uploads.sessions) == 2
        time.sleep(0.7)
        assert call(endpoint, "PATCH", first, b"!").status == 202  # the first is in use; the second goes idle
        time.sleep(0.5)
        assert call(endpoint, "POST", f"/v2/{REPO}/blobs/uploads/").status == 202
        assert len(endpoint.uploads.sessions) == 2 and call(endpoint, "GET", first).status == 204


def test_an_upload_keeps_at_most_a_megabyte_in_memory(endpoint: Endpoint) -> None:
    small, large = start_upload(endpoint), start_upload(endpoint)
    assert call(endpoint, "PATCH", small, b"x" * (1024 * 1024 - 100)).status == 202
    assert call(endpoint, "PATCH", large, b"x" * (1024 * 1024)).status == 202  # with the 5 before: past 1 MB
    spools = {location: endpoint.uploads.sessions[location.rsplit("/", 1)[1]].spool for location in (small, large)}
    assert [spools[loc]._rolled for loc in (small, large)] == [False, True]


class FullDisk(io.BytesIO):
    """A spool on a disk that fills up after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_full_spool_disk_is_a_507_naming_the_directory(store: FakeStore, chunked: bool) -> None:
    with Endpoint(store, repositories(), spool_dir="/var/spool/ci") as endpoint:
        endpoint.uploads.spool = lambda: FullDisk(100)  # type: ignore[method-assign]
        location = start_upload(endpoint)
        conn = http.client.HTTPConnection(endpoint.address, timeout=10)
        try:
            body = [b"y" * 80, b"y" * 80] if chunked else b"y" * 200
            reply = call(conn, "PATCH", location, body)
            assert (reply.status, reply.code) == (507, "BLOB_UPLOAD_INVALID"), reply.body
            assert "no space left on device in /var/spool/ci" in reply.message
        finally:
            conn.close()
        assert endpoint.uploads.sessions == {} and call(endpoint, "GET", location).status == 404
        assert any("no space left on device in /var/spool/ci" in p for p in endpoint.traffic.problems)
        assert call(endpoint, "GET", "/v2/").status == 200  # the endpoint goes on


@pytest.mark.parametrize("megabytes", [2, 24])
def test_a_spool_directory_that_cannot_be_written_is_a_500_naming_it(
    store: FakeStore, tmp_path: Any, megabytes: int
) -> None:
    """Past its first megabyte an upload goes to disk, which fails here: the answer reaches the client even
    while it is still sending the rest (the endpoint reads and drops it before closing)."""
    missing = tmp_path / "gone"
    with Endpoint(store, repositories(), spool_dir=str(missing)) as endpoint:
        location = start_upload(endpoint)
        reply = call(endpoint, "PATCH", location, b"z" * (megabytes * 1024 * 1024))
        assert (reply.status, reply.code) == (500, "BLOB_UPLOAD_INVALID"), reply.body
        assert f"no such file or directory in {missing}" in reply.message
        assert endpoint.uploads.sessions == {} and endpoint.traffic.problems == [reply.message]


def test_a_monolithic_post_too_large_opens_no_session(store: FakeStore) -> None:
    with Endpoint(store, repositories(), max_upload_bytes=8) as endpoint:
        reply = call(endpoint, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest_of(b'x' * 9)}", b"x" * 9)
        assert (reply.status, reply.code) == (413, "SIZE_INVALID")
        assert endpoint.uploads.sessions == {} and store.uploads == []


# ------------------------------------------------------------------------------- manifests by digest


def test_a_manifest_by_digest_keeps_the_type_it_was_stored_with(store: FakeStore) -> None:
    """A manifest without a mediaType of its own, stored as a manifest list: a guess made for one request by
    digest never becomes the type served by tag, and once the snapshot says, the digest is served as stored."""
    body = json.dumps({"schemaVersion": 2, "manifests": [{"digest": digest_of(CONFIG), "size": 1}]}).encode()
    store.blobs[digest_of(body)] = body
    index = {"schemaVersion": 2, "manifests": [{"mediaType": LIST_TYPE, "digest": digest_of(body), "size": 1}]}
    blobs = {digest_of(body): len(body), digest_of(CONFIG): len(CONFIG)}
    name = SnapshotName(KEY, SERVICE, "final")
    store.snapshots[str(name)] = (snapshot_document(name, {}, index, blobs), NOW)
    with Endpoint(store, repositories()) as endpoint:
        guess = call(endpoint, "GET", f"/v2/{REPO}/manifests/{digest_of(body)}")
        assert (guess.status, guess.headers["Content-Type"]) == (200, INDEX_TYPE)  # its shape: an index
        by_tag = call(endpoint, "GET", f"/v2/{REPO}/manifests/final")
        assert (by_tag.status, by_tag.headers["Content-Type"], by_tag.body) == (200, LIST_TYPE, body)
        again = call(endpoint, "GET", f"/v2/{REPO}/manifests/{digest_of(body)}")
        assert again.headers["Content-Type"] == LIST_TYPE


def test_a_manifest_put_by_tag_is_served_by_digest_with_its_put_type(store: FakeStore) -> None:
    body = manifest(CONFIG, *LAYERS, media_type=None)
    with Endpoint(store, repositories()) as endpoint:
        put = call(endpoint, "PUT", f"/v2/{REPO}/manifests/deps", body, {"Content-Type": DOCKER_TYPE + "; x=y"})
        assert put.status == 201, put.body
        served = call(endpoint, "GET", f"/v2/{REPO}/manifests/{digest_of(body)}")
        assert (served.status, served.headers["Content-Type"]) == (200, DOCKER_TYPE)


# ------------------------------------------------------------------------------------------ sequences


def test_an_attack_without_credentials_changes_nothing_and_a_tag_is_written_once(
    endpoint: Endpoint, store: FakeStore
) -> None:
    before = store.state()
    for method, path, body in [
        ("GET", f"/v2/{REPO}/manifests/final", None),
        ("POST", f"/v2/{REPO}/blobs/uploads/", b"payload"),
        ("PUT", f"/v2/{REPO}/manifests/base", FINAL),
        ("PUT", f"/v2/{REPO}/manifests/zzz", FINAL),
    ]:
        reply = call(endpoint, method, path, body, auth=None)
        assert (reply.status, reply.code) == (401, "UNAUTHORIZED"), (method, path)
    assert store.calls == [] and store.state() == before and endpoint.uploads.sessions == {}
    for tag in ("base", "zzz"):
        reply = call(endpoint, "PUT", f"/v2/{REPO}/manifests/{tag}", FINAL)
        assert (reply.status, reply.code) == (403, "DENIED")
        assert f"tag '{tag}' of repository {REPO}" in reply.message
    assert store.state() == before
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", FINAL).status == 201
    written = store.state()
    again = call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", OTHER)
    assert (again.status, again.code) == (403, "DENIED") and "already" in again.message
    # The same manifest pushed twice (the docker driver pushes an image through BuildKit, then once more
    # itself): answered, and nothing written again.
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", FINAL).status == 201
    assert store.state() == written
    assert endpoint.traffic.saved == {(REPO, "final"): endpoint.traffic.saved[(REPO, "final")]}


def test_allow_again_grants_a_used_permit_once_more(endpoint: Endpoint) -> None:
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", FINAL).status == 201
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", OTHER).status == 403
    endpoint.allow_again([(REPO, "final")])
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", OTHER).status == 201
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", FINAL).status == 403
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/deps", FINAL).status == 201  # a permit per tag


def test_a_failed_put_does_not_use_the_permit(endpoint: Endpoint, store: FakeStore) -> None:
    absent = b"a layer never uploaded"
    broken = call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", manifest(CONFIG, absent))
    assert (broken.status, broken.code) == (400, "MANIFEST_BLOB_UNKNOWN")
    invalid = call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", b"not json")
    assert (invalid.status, invalid.code) == (400, "MANIFEST_INVALID")
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", FINAL).status == 201


def test_a_writable_repository_without_tags_takes_any_tag_once(store: FakeStore) -> None:
    with Endpoint(store, repositories(tags=frozenset())) as endpoint:
        for tag in ("base", "zzz"):
            assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/{tag}", FINAL).status == 201
            assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/{tag}", OTHER).status == 403


def test_permit_grants_a_tag_the_plan_did_not_name(endpoint: Endpoint, store: FakeStore) -> None:
    """The cache mounts' helper build writes ``_mounts``: permitted, it may, once per permit."""
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/_mounts", FINAL).status == 403
    endpoint.permit([(REPO, "_mounts"), (RO, "_mounts"), ("not/served", "_mounts")])
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/_mounts", FINAL).status == 201
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/_mounts", OTHER).status == 403
    endpoint.permit([(REPO, "_mounts")])
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/_mounts", FINAL).status == 201
    assert call(endpoint, "PUT", f"/v2/{RO}/manifests/_mounts", FINAL).status == 403  # still read-only
    assert endpoint.repositories[REPO].tags == {"final", "deps", "_mounts"}
    with Endpoint(store, repositories(tags=frozenset())) as any_tag:
        any_tag.permit([(REPO, "_mounts")])
        assert any_tag.repositories[REPO].tags == frozenset()  # still any tag, not that one only
        assert call(any_tag, "PUT", f"/v2/{REPO}/manifests/other", FINAL).status == 201


# (store set-up, the reason's end): a prune seen while saving, a blob this run uploaded, one nobody had
REFUSALS = [
    ("prune-seen", "was deleted by a prune of mem://bucket/cache that ran meanwhile (MANIFEST_BLOB_UNKNOWN)"),
    ("uploaded", "was deleted by a prune of mem://bucket/cache that ran meanwhile (MANIFEST_BLOB_UNKNOWN)"),
    ("never-there", "is not in mem://bucket/cache (MANIFEST_BLOB_UNKNOWN)"),
]


@pytest.mark.parametrize(("case", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_save_refused_for_a_missing_blob_says_why_and_the_retry_saves(
    endpoint: Endpoint, store: FakeStore, case: str, reason: str
) -> None:
    layer = b"a layer of this build"
    before = store.state()
    if case == "prune-seen":
        store.blobs[digest_of(layer)] = layer  # an earlier run's, in this run's listing
        store.prunes, store.prune_takes = [{"prune-1"}], [digest_of(layer)]
    elif case == "uploaded":
        location = start_upload(endpoint, b"")
        assert call(endpoint, "PUT", f"{location}?digest={digest_of(layer)}", layer).status == 201
        del store.blobs[digest_of(layer)]  # a prune that never saw this run's lease
    assert call(endpoint, "HEAD", f"/v2/{REPO}/blobs/{digest_of(CONFIG)}").status == 200  # the run's listing
    body = manifest(CONFIG, layer)
    refused = call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", body)
    assert (refused.status, refused.code) == (400, "MANIFEST_BLOB_UNKNOWN"), refused.body
    expected = f"save of snapshot {KEY}/{SERVICE}/final refused: blob {digest_of(layer)} {reason}"
    assert endpoint.traffic.refused == {(REPO, "final"): expected}
    assert expected in endpoint.traffic.problems and refused.message == expected
    assert store.snapshots == before[1] and store.leases_held == {}
    # BuildKit's next push: HEAD says 404 (the blob is forgotten), so it uploads again, and the save goes on.
    assert call(endpoint, "HEAD", f"/v2/{REPO}/blobs/{digest_of(layer)}").status == 404
    location = start_upload(endpoint, b"")
    assert call(endpoint, "PUT", f"{location}?digest={digest_of(layer)}", layer).status == 201
    assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", body).status == 201
    assert endpoint.traffic.refused == {} and store.leases_held == {}


def test_a_tag_written_in_this_run_reads_back_while_its_index_is_held(store: FakeStore) -> None:
    """The ``docker`` driver pushes an image through BuildKit and then once more itself, reading the tag back:
    the held write is what it reads (not the previous snapshot, not a 404), and the same push again writes
    nothing; nothing is in S3 until publish."""
    name = f"{KEY}/{SERVICE}/deps"
    previous = store.snapshots[name]  # the seeded store has a snapshot under the tag already (one layer)
    with Endpoint(store, repositories(), secret=SECRET, hold=True) as endpoint:
        assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/deps", FINAL).status == 201
        read = call(endpoint, "GET", f"/v2/{REPO}/manifests/deps")
        assert (read.status, read.body, read.headers["Docker-Content-Digest"]) == (200, FINAL, digest_of(FINAL))
        assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/deps", FINAL).status == 201
        assert store.snapshots[name] == previous
        assert endpoint.publish() == []
        assert store.snapshots[name] != previous and digest_of(FINAL) in store.snapshots[name][0].decode()


# ------------------------------------------------------------------------- a cache never gets worse, or older


def test_a_save_that_adds_nothing_keeps_the_snapshot_there(store: FakeStore) -> None:
    """BuildKit 0.13 exports a build whose steps all came from a cache without its intermediate records: fewer
    layers than the cache it read. Published over it, the next dependency change would miss a stage that did not
    change; so the richer snapshot stays, and the report says why."""
    name = f"{KEY}/{SERVICE}/final"
    previous = store.snapshots[name]  # FINAL: the config and both layers
    poorer = manifest(CONFIG, LAYERS[0])
    with Endpoint(store, repositories(), secret=SECRET, hold=True) as endpoint:
        assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", poorer).status == 201
        assert endpoint.publish() == []
        assert store.snapshots[name] == previous
        assert (REPO, "final") not in endpoint.traffic.saved
        assert "adds nothing to it (1 layers, all in the 2 there)" in endpoint.traffic.kept[(REPO, "final")]
    richer = manifest(CONFIG, *LAYERS, b"layer three")
    store.blobs[digest_of(b"layer three")] = b"layer three"
    with Endpoint(store, repositories(), secret=SECRET, hold=True) as endpoint:
        assert call(endpoint, "PUT", f"/v2/{REPO}/manifests/final", richer).status == 201
        assert endpoint.publish() == []
        assert store.snapshots[name] != previous and endpoint.traffic.kept == {}


def test_a_save_never_replaces_one_a_later_build_made(store: FakeStore) -> None:
    """Two agents save one key at once: the build that started later keeps its snapshot, whichever publishes
    last, and the snapshot says which commit wrote it."""
    richer = manifest(CONFIG, *LAYERS, b"layer three")
    store.blobs[digest_of(b"layer three")] = b"layer three"
    name = f"{KEY}/{SERVICE}/final"
    early = Endpoint(
        store, repositories(), meta={"commit": "a" * 40, "started": "2026-12-07T10:00:00+00:00"}, hold=True
    )
    late = Endpoint(store, repositories(), meta={"commit": "b" * 40, "started": "2026-12-07T10:00:05+00:00"}, hold=True)
    with early, late:
        assert call(early, "PUT", f"/v2/{REPO}/manifests/final", richer).status == 201
        assert call(late, "PUT", f"/v2/{REPO}/manifests/final", richer).status == 201
        assert late.publish() == [] and early.publish() == []
        assert (
            "a build that started later (commit bbbbbbbbbbbb) saved it meanwhile" in early.traffic.kept[(REPO, "final")]
        )
    snapshot = parse_snapshot(store.snapshots[name][0])
    assert isinstance(snapshot, Snapshot) and snapshot.meta["commit"] == "b" * 40
