"""dockercache.adapters.oci (unit): the registry client against tiny registries in this process, and
Docker's credentials.

Each fake registry is an ``http.server`` on 127.0.0.1 whose answers a test writes as a function of the request;
tests/e2e/test_oci.py runs the client against the real registry (and one with htpasswd logins).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dockercache.adapters.oci import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Challenge,
    Manifest,
    Registry,
    RegistryError,
    docker_credentials,
    is_loopback,
    parse_challenges,
    sha256_digest,
)
from dockercache.errors import StoreError
from dockercache.secrets import Redactor

PASSWORD = "s3cret-Pa55word"
USER = "ci-user"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
REPO = "team/app-cache"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = sha256_digest(MANIFEST)
BLOB = b"a layer"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)

    @property
    def route(self) -> str:
        return urllib.parse.urlsplit(self.path).path


Reply = tuple[int, list[tuple[str, str]], bytes]
App = Callable[[Seen], Reply]


@dataclass
class Server:
    host: str
    seen: list[Seen]

    @property
    def url(self) -> str:
        return f"http://{self.host}"


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (the timeout test) is no failure of the server


@contextlib.contextmanager
def serve(app: App) -> Iterator[Server]:
    """A registry on 127.0.0.1 answering every request with ``app(request)``; every request is recorded."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Seen(self.command, self.path, dict(self.headers.items()), body)
            seen.append(request)
            status, headers, data = app(request)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield Server(f"127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()


def oci_error(status: int, code: str, message: str = "", headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps({"errors": [{"code": code, "message": message or code.lower()}]}).encode()
    return status, [("Content-Type", "application/json"), *(headers or [])], body


def manifest_reply(body: bytes = MANIFEST, media_type: str = OCI_MANIFEST) -> Reply:
    return 200, [("Content-Type", media_type), ("Docker-Content-Digest", sha256_digest(body))], body


# --- WWW-Authenticate ------------------------------------------------------------------------------------------

CHALLENGES = [
    (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"',
        [
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:samalba/my-app:pull,push",
                },
            )
        ],
    ),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ("basic realm=r", [Challenge("basic", {"realm": "r"})]),
    (
        'Bearer realm="a\\"b, c", error="insufficient_scope"',
        [Challenge("bearer", {"realm": 'a"b, c', "error": "insufficient_scope"})],
    ),
    ('BEARER Realm = "x" , Service=y', [Challenge("bearer", {"realm": "x", "service": "y"})]),
    (
        'Basic realm="x, y", Bearer realm="https://t/token",scope="repository:a:pull repository:b:pull"',
        [
            Challenge("basic", {"realm": "x, y"}),
            Challenge("bearer", {"realm": "https://t/token", "scope": "repository:a:pull repository:b:pull"}),
        ],
    ),
    ("Negotiate, Basic realm=r", [Challenge("negotiate", {}), Challenge("basic", {"realm": "r"})]),
    ("", []),
]


@pytest.mark.parametrize(("header", "expected"), CHALLENGES)
def test_www_authenticate_is_parsed(header: str, expected: list[Challenge]) -> None:
    parsed = parse_challenges(header)
    assert [(c.scheme, dict(c.params)) for c in parsed] == [(c.scheme, dict(c.params)) for c in expected]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("registry.example:5000", False),
        ("10.0.0.5:5000", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- manifests, blobs, tags ---------------------------------------------------------------------------------


def test_a_manifest_comes_back_byte_for_byte_with_its_digest() -> None:
    body = b'{"schemaVersion": 2,   "mediaType": "application/vnd.oci.image.manifest.v1+json"}\n'
    with serve(lambda r: manifest_reply(body)) as server:
        manifest = Registry(server.host, scheme="http").get_manifest(REPO, "final-main")
    assert manifest == Manifest(body, OCI_MANIFEST, sha256_digest(body))
    assert manifest.size == len(body)
    accepted = server.seen[0].headers["Accept"].split(", ")
    assert set(accepted) == {
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
    assert server.seen[0].route == f"/v2/{REPO}/manifests/final-main"
    assert "body" not in repr(manifest).split("Manifest(")[1].split(",")[0]


def test_a_missing_manifest_is_none() -> None:
    with serve(lambda r: oci_error(404, "MANIFEST_UNKNOWN")) as server:
        assert Registry(server.host, scheme="http").get_manifest(REPO, "nope") is None


def test_the_media_type_comes_from_the_document_when_the_header_is_generic() -> None:
    with serve(lambda r: manifest_reply(MANIFEST, "application/json")) as server:
        manifest = Registry(server.host, scheme="http").get_manifest(REPO, "x")
    assert manifest is not None and manifest.media_type == OCI_MANIFEST


def test_a_manifest_of_another_kind_is_an_error() -> None:
    body = json.dumps({"schemaVersion": 1}).encode()
    with (
        serve(lambda r: manifest_reply(body, "application/vnd.docker.distribution.manifest.v1+prettyjws")) as server,
        pytest.raises(RegistryError, match=r"not an OCI or Docker manifest \(media type .*v1\+prettyjws\)"),
    ):
        Registry(server.host, scheme="http").get_manifest(REPO, "x")


def test_bytes_that_do_not_match_the_digest_asked_for_are_an_error() -> None:
    other = sha256_digest(b"something else")
    with serve(lambda r: (200, [("Content-Type", OCI_MANIFEST)], MANIFEST)) as server:
        with pytest.raises(RegistryError, match=f"do not have digest {other}"):
            Registry(server.host, scheme="http").get_manifest(REPO, other)
        assert Registry(server.host, scheme="http").get_manifest(REPO, DIGEST) is not None


def test_a_digest_header_that_does_not_match_the_bytes_is_an_error() -> None:
    wrong = [("Content-Type", OCI_MANIFEST), ("Docker-Content-Digest", sha256_digest(b"x"))]
    with serve(lambda r: (200, wrong, MANIFEST)) as server, pytest.raises(RegistryError, match="do not have digest"):
        Registry(server.host, scheme="http").get_manifest(REPO, "x")


def test_put_manifest_sends_the_bytes_and_their_type_and_returns_the_digest() -> None:
    def app(r: Seen) -> Reply:
        return 201, [("Docker-Content-Digest", sha256_digest(r.body)), ("Location", "/x")], b""

    with serve(app) as server:
        digest = Registry(server.host, scheme="http").put_manifest(REPO, "copy", MANIFEST, OCI_MANIFEST)
    assert digest == DIGEST
    (put,) = server.seen
    assert (put.method, put.route, put.body, put.headers["Content-Type"]) == (
        "PUT",
        f"/v2/{REPO}/manifests/copy",
        MANIFEST,
        OCI_MANIFEST,
    )


def test_a_refused_manifest_names_host_repository_status_and_code() -> None:
    refusal = oci_error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry")
    with serve(lambda r: refusal) as server, pytest.raises(RegistryError) as caught:
        Registry(server.host, scheme="http").put_manifest(REPO, "copy", MANIFEST, OCI_MANIFEST)
    assert str(caught.value) == (
        f"registry {server.host}, repository {REPO}: PUT manifest copy: HTTP 400 MANIFEST_BLOB_UNKNOWN "
        "(blob unknown to registry)"
    )
    assert (caught.value.status, caught.value.code) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert isinstance(caught.value, StoreError)


def test_head_blob_is_its_size_or_none() -> None:
    def app(r: Seen) -> Reply:
        if r.route.endswith(BLOB_DIGEST):
            return 200, [("Content-Length", "1234"), ("Docker-Content-Digest", BLOB_DIGEST)], b""
        return 404, [], b""

    with serve(app) as server:
        registry = Registry(server.host, scheme="http")
        assert registry.head_blob(REPO, BLOB_DIGEST) == 1234
        assert registry.head_blob(REPO, sha256_digest(b"other")) is None
    assert {r.method for r in server.seen} == {"HEAD"}


def test_a_redirected_head_stays_a_head_and_leaves_the_credentials_behind() -> None:
    with serve(lambda r: (200, [("Content-Length", "7")], b"")) as storage:

        def app(r: Seen) -> Reply:
            if r.headers.get("Authorization") != BASIC:
                return 401, [("WWW-Authenticate", 'Basic realm="r"')], b""
            return 307, [("Location", f"{storage.url}/blob?sig=1")], b""

        with serve(app) as server:
            registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
            assert registry.head_blob(REPO, BLOB_DIGEST) == 7
    (redirected,) = storage.seen
    assert redirected.method == "HEAD" and "Authorization" not in redirected.headers


def test_put_blob_posts_then_puts_to_the_location_with_the_digest() -> None:
    def app(r: Seen) -> Reply:
        if r.method == "POST":
            return 202, [("Location", f"/v2/{REPO}/blobs/uploads/u1?_state=abc"), ("Range", "0-0")], b""
        return 201, [("Docker-Content-Digest", BLOB_DIGEST)], b""

    with serve(app) as server:
        Registry(server.host, scheme="http").put_blob(REPO, BLOB_DIGEST, BLOB)
    post, put = server.seen
    assert (post.method, post.route, post.body) == ("POST", f"/v2/{REPO}/blobs/uploads/", b"")
    assert (put.method, put.route, put.body) == ("PUT", f"/v2/{REPO}/blobs/uploads/u1", BLOB)
    assert put.query == {"_state": ["abc"], "digest": [BLOB_DIGEST]}


def test_put_blob_refuses_data_that_do_not_have_the_digest() -> None:
    with pytest.raises(ValueError, match="do not have digest"):
        Registry("localhost:1", scheme="http").put_blob(REPO, BLOB_DIGEST, b"other data")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((202, [], b""), True),
        (oci_error(404, "BLOB_UNKNOWN"), True),
        (oci_error(405, "UNSUPPORTED", "The operation is unsupported."), False),
        (oci_error(400, "UNSUPPORTED"), False),
    ],
)
def test_deletes(reply: Reply, expected: bool) -> None:
    with serve(lambda r: reply) as server:
        registry = Registry(server.host, scheme="http")
        assert registry.delete_blob(REPO, BLOB_DIGEST) is expected
        assert registry.delete_manifest(REPO, DIGEST) is expected
    assert [(r.method, r.route) for r in server.seen] == [
        ("DELETE", f"/v2/{REPO}/blobs/{BLOB_DIGEST}"),
        ("DELETE", f"/v2/{REPO}/manifests/{DIGEST}"),
    ]


def test_a_denied_delete_is_an_error() -> None:
    with (
        serve(lambda r: oci_error(403, "DENIED", "requested access to the resource is denied")) as server,
        pytest.raises(RegistryError, match=r"DELETE blob sha256:\w+: HTTP 403 DENIED"),
    ):
        Registry(server.host, scheme="http").delete_blob(REPO, BLOB_DIGEST)


def test_a_manifest_is_deleted_by_digest_only() -> None:
    with pytest.raises(ValueError, match="not a digest"):
        Registry("localhost:1", scheme="http").delete_manifest(REPO, "latest")


@pytest.mark.parametrize("repo", ["Team/app", "../etc", "team//app", "team/app/", "a?b", ""])
def test_repository_names_are_checked(repo: str) -> None:
    with pytest.raises(ValueError, match="not a repository name"):
        Registry("localhost:1", scheme="http").get_manifest(repo, "latest")


def test_tags_follow_the_link_pages() -> None:
    pages = {
        "": (["a", "b"], f'</v2/{REPO}/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c", "d"], f'<http://HOST/v2/{REPO}/tags/list?n=2&last=d>; rel="next"'),
        "d": (["e"], None),
    }

    def app(r: Seen) -> Reply:
        tags, link = pages[r.query.get("last", [""])[0]]
        headers = [("Content-Type", "application/json")]
        if link:
            headers.append(("Link", link.replace("HOST", r.headers["Host"])))
        return 200, headers, json.dumps({"name": REPO, "tags": tags}).encode()

    with serve(app) as server:
        assert Registry(server.host, scheme="http").tags(REPO) == ["a", "b", "c", "d", "e"]
    assert [r.path for r in server.seen] == [
        f"/v2/{REPO}/tags/list",
        f"/v2/{REPO}/tags/list?n=2&last=b",
        f"/v2/{REPO}/tags/list?n=2&last=d",
    ]


def test_a_next_page_on_another_host_is_refused() -> None:
    link = f'<http://elsewhere.example/v2/{REPO}/tags/list?last=b>; rel="next"'
    with (
        serve(lambda r: (200, [("Link", link)], b'{"tags": ["a"]}')) as server,
        pytest.raises(RegistryError, match="next page is on another host"),
    ):
        Registry(server.host, scheme="http").tags(REPO)


def test_a_link_back_to_a_page_already_read_ends_the_list() -> None:
    link = f'</v2/{REPO}/tags/list>; rel="next"'
    with serve(lambda r: (200, [("Link", link)], b'{"tags": ["a"]}')) as server:
        assert Registry(server.host, scheme="http").tags(REPO) == ["a"]
    assert len(server.seen) == 1


def test_tags_of_an_unknown_repository_or_none_are_empty() -> None:
    with serve(lambda r: oci_error(404, "NAME_UNKNOWN")) as server:
        assert Registry(server.host, scheme="http").tags(REPO) == []
    with serve(lambda r: (200, [], b'{"name": "x", "tags": null}')) as server:
        assert Registry(server.host, scheme="http").tags(REPO) == []


# --- scheme -----------------------------------------------------------------------------------------------------


def test_a_loopback_registry_without_tls_is_spoken_to_in_plain_http() -> None:
    with serve(lambda r: manifest_reply()) as server:
        registry = Registry(server.host)  # auto: HTTPS first, then HTTP for loopback
        assert registry.base_url == f"https://{server.host}"
        assert registry.get_manifest(REPO, "x") is not None
        assert registry.base_url == f"http://{server.host}"
        assert registry.get_manifest(REPO, "x") is not None
    assert len(server.seen) == 2  # the failed handshake is no request


def test_requests_side_by_side_all_move_to_plain_http_with_the_first() -> None:
    """Probes ask a registry several things at once: every first handshake fails, one request moves the
    registry to plain HTTP, and the others follow it instead of failing (they used to: a probe then could not
    tell whether a cache ref was there)."""
    started = threading.Barrier(4)

    class Handshakes(urllib.request.BaseHandler):
        def https_open(self, request: urllib.request.Request) -> object:
            started.wait(timeout=10)  # every request has tried TLS before any falls back
            raise urllib.error.URLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))

    with serve(lambda r: manifest_reply()) as server:
        opener = urllib.request.build_opener(Handshakes(), urllib.request.HTTPHandler())
        registry = Registry(server.host, opener=opener)
        with ThreadPoolExecutor(max_workers=4) as pool:
            found = list(pool.map(lambda tag: registry.get_manifest(REPO, tag), ["a", "b", "c", "d"]))
    assert all(m is not None for m in found)
    assert registry.base_url == f"http://{server.host}"
    assert len(server.seen) == 4


def test_https_only_does_not_fall_back() -> None:
    with (
        serve(lambda r: manifest_reply()) as server,
        pytest.raises(RegistryError, match=rf"registry {server.host}, repository {REPO}: GET manifest x: "),
    ):
        Registry(server.host, scheme="https").get_manifest(REPO, "x")
    assert server.seen == []


class FakeNetwork(urllib.request.BaseHandler):
    """An opener's handler: TLS fails everywhere; plain HTTP answers a tag list."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def https_open(self, request: urllib.request.Request) -> object:
        self.urls.append(request.full_url)
        raise urllib.error.URLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))

    def http_open(self, request: urllib.request.Request) -> object:
        self.urls.append(request.full_url)
        headers = http.client.HTTPMessage()
        headers["Content-Type"] = "application/json"
        response = urllib.response.addinfourl(io.BytesIO(b'{"tags": ["t"]}'), headers, request.full_url, 200)
        response.msg = "OK"  # type: ignore[attr-defined]  # what HTTPErrorProcessor reads
        return response


def opener_with(handler: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    opener = urllib.request.OpenerDirector()
    opener.add_handler(handler)
    opener.add_handler(urllib.request.HTTPErrorProcessor())
    return opener


def test_a_remote_registry_falls_back_to_http_only_when_listed_insecure() -> None:
    network = FakeNetwork()
    with pytest.raises(RegistryError, match=r"registry registry\.example:5000, repository team/app-cache: GET tags"):
        Registry("registry.example:5000", opener=opener_with(network)).tags(REPO)
    assert network.urls == [f"https://registry.example:5000/v2/{REPO}/tags/list"]

    network = FakeNetwork()
    assert Registry("registry.example:5000", insecure=True, opener=opener_with(network)).tags(REPO) == ["t"]
    assert network.urls == [
        f"https://registry.example:5000/v2/{REPO}/tags/list",
        f"http://registry.example:5000/v2/{REPO}/tags/list",
    ]


def test_docker_hub_is_asked_at_its_api_host() -> None:
    network = FakeNetwork()
    with pytest.raises(RegistryError, match=r"registry docker\.io, repository library/busybox"):
        Registry("docker.io", opener=opener_with(network)).tags("library/busybox")
    assert network.urls == ["https://registry-1.docker.io/v2/library/busybox/tags/list"]


def test_a_silent_registry_is_a_timeout_error() -> None:
    def app(r: Seen) -> Reply:
        time.sleep(1)
        return manifest_reply()

    with serve(app) as server, pytest.raises(RegistryError, match=r"GET manifest x: no answer within 0.2s$"):
        Registry(server.host, scheme="http", timeout=0.2).get_manifest(REPO, "x")


def test_a_registry_that_is_not_there_is_one_line() -> None:
    with serve(lambda r: manifest_reply()) as server:
        host = server.host
    with pytest.raises(RegistryError, match=rf"^registry {host}, repository {REPO}: GET manifest x: cannot connect"):
        Registry(host).get_manifest(REPO, "x")


# --- authentication -------------------------------------------------------------------------------------------


class TokenServer:
    """A registry with a token server (``/token``): ``Bearer`` challenges, tokens per scope, ``revoke``."""

    def __init__(
        self, users: dict[str, str] | None = None, challenge_scope: str | None = None, grant: str | None = None
    ) -> None:
        self.users = users or {}
        self.challenge_scope = challenge_scope
        self.grant = grant  # the scope of every token issued, whatever was asked for
        self.issued: dict[str, str] = {}  # token -> scope
        self.revoked: set[str] = set()

    def __call__(self, r: Seen) -> Reply:
        if r.route == "/token":
            return self.token(r)
        authorization = r.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ")
        scope = self.needed(r)
        if token not in self.issued or token in self.revoked or scope not in self.issued[token].split():
            realm = f"http://{r.headers['Host']}/token"
            challenge = f'Bearer realm="{realm}",service="test-registry",scope="{scope}"'
            return oci_error(401, "UNAUTHORIZED", "authentication required", [("WWW-Authenticate", challenge)])
        if r.method == "PUT":
            return 201, [("Docker-Content-Digest", sha256_digest(r.body))], b""
        if r.method == "DELETE":
            return 202, [], b""
        return manifest_reply()

    def needed(self, r: Seen) -> str:
        if self.challenge_scope:
            return self.challenge_scope
        repo = r.route.removeprefix("/v2/").partition("/manifests/")[0]
        actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(r.method, "pull,push")
        return f"repository:{repo}:{actions}"

    def token(self, r: Seen) -> Reply:
        form = urllib.parse.parse_qs(r.body.decode()) if r.method == "POST" else r.query
        if r.method == "POST":
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != ["identity-token-42"]:
                return 401, [], b""
        elif "Authorization" in r.headers:
            user, _, password = (
                base64.b64decode(r.headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
            )
            if self.users.get(user) != password:
                return 401, [("Content-Type", "application/json")], b'{"details": "incorrect username or password"}'
        scope = self.grant or " ".join(form.get("scope", []))
        token = f"token-{len(self.issued) + 1}-{'x' * 20}"
        self.issued[token] = scope
        key = "access_token" if r.method == "POST" else "token"
        return 200, [("Content-Type", "application/json")], json.dumps({key: token, "expires_in": 300}).encode()


def test_the_bearer_flow_with_basic_credentials_at_the_realm() -> None:
    app = TokenServer(users={USER: PASSWORD})
    with serve(app) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
        assert registry.get_manifest(REPO, "x") is not None
        first, token_request, retried = server.seen
        assert "Authorization" not in first.headers  # the first request: no credentials
        assert token_request.route == "/token" and token_request.headers["Authorization"] == BASIC
        assert token_request.query == {"service": ["test-registry"], "scope": [f"repository:{REPO}:pull"]}
        assert retried.headers["Authorization"] == "Bearer token-1-" + "x" * 20

        assert registry.get_manifest(REPO, "y") is not None  # the token is kept: one request
        assert len(server.seen) == 4 and server.seen[3].headers["Authorization"] == retried.headers["Authorization"]

        registry.put_manifest(REPO, "copy", MANIFEST, OCI_MANIFEST)  # another scope: a token asked for first
        token_request, put = server.seen[4:]
        assert token_request.query["scope"] == [f"repository:{REPO}:pull,push"]
        assert put.method == "PUT" and put.headers["Authorization"] == "Bearer token-2-" + "x" * 20


def test_the_bearer_flow_anonymously() -> None:
    with serve(TokenServer()) as server:
        assert Registry(server.host, scheme="http").get_manifest(REPO, "x") is not None
    assert "Authorization" not in server.seen[1].headers


def test_a_refused_token_is_asked_for_again_once() -> None:
    app = TokenServer(users={USER: PASSWORD})
    with serve(app) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
        registry.get_manifest(REPO, "x")
        app.revoked.update(app.issued)  # expired
        assert registry.get_manifest(REPO, "x") is not None
    assert [r.route == "/token" for r in server.seen[3:]] == [False, True, False]


def test_a_token_without_the_rights_is_an_error_after_one_retry() -> None:
    app = TokenServer(users={USER: PASSWORD}, grant="repository:other:pull")
    with serve(app) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
        with pytest.raises(RegistryError, match=r"GET manifest x: HTTP 401 UNAUTHORIZED \(authentication required\)$"):
            registry.get_manifest(REPO, "x")
        with pytest.raises(RegistryError, match="HTTP 401"):
            registry.get_manifest(REPO, "x")
    # a fresh token refused is final; the next request asks for a new one once (it may have expired)
    assert [r.route == "/token" for r in server.seen] == [False, True, False, False, True, False]


def test_the_scope_a_challenge_names_is_the_one_asked_for_and_remembered() -> None:
    app = TokenServer(users={USER: PASSWORD}, challenge_scope=f"repository:{REPO}:*")
    with serve(app) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
        assert registry.delete_manifest(REPO, DIGEST) is True
        assert registry.delete_blob(REPO, BLOB_DIGEST) is True
    tokens = [r for r in server.seen if r.route == "/token"]
    assert [t.query["scope"] for t in tokens] == [[f"repository:{REPO}:*"]]
    assert len(server.seen) == 4  # delete (401), token, delete, delete


def test_credentials_the_token_server_refuses_are_one_line_without_them() -> None:
    with serve(TokenServer(users={USER: "another"})) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
        with pytest.raises(RegistryError) as caught:
            registry.get_manifest(REPO, "x")
    message = str(caught.value)
    assert message == (
        f"registry {server.host}, repository {REPO}: token for repository:{REPO}:pull from {server.host}: "
        "HTTP 401 (the credentials were refused)"
    )
    assert caught.value.status == 401


def test_an_identity_token_is_exchanged_as_docker_does(tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {"HOST": {"identitytoken": "identity-token-42"}}})
    with serve(TokenServer()) as server:
        (tmp_path / "config.json").write_text((tmp_path / "config.json").read_text().replace("HOST", server.host))
        registry = Registry.from_docker_config(server.host, {"DOCKER_CONFIG": str(tmp_path)}, scheme="http")
        assert registry.get_manifest(REPO, "x") is not None
    exchange = server.seen[1]
    assert exchange.method == "POST" and "Authorization" not in exchange.headers
    form = urllib.parse.parse_qs(exchange.body.decode())
    assert form["grant_type"] == ["refresh_token"] and form["scope"] == [f"repository:{REPO}:pull"]
    assert form["service"] == ["test-registry"]


def basic_app(r: Seen) -> Reply:
    if r.headers.get("Authorization") != BASIC:
        return oci_error(401, "UNAUTHORIZED", "authentication required", [("WWW-Authenticate", 'Basic realm="test"')])
    return manifest_reply()


def test_the_basic_flow() -> None:
    with serve(basic_app) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD))
        assert registry.get_manifest(REPO, "x") is not None
        assert registry.get_manifest(REPO, "y") is not None
    assert [r.headers.get("Authorization") for r in server.seen] == [None, BASIC, BASIC]


def test_credentials_are_looked_up_only_when_a_registry_asks() -> None:
    asked: list[int] = []

    def lookup() -> tuple[str, str]:
        asked.append(1)
        return USER, PASSWORD

    with serve(lambda r: manifest_reply()) as server:
        Registry(server.host, scheme="http", credentials=lookup).get_manifest(REPO, "x")
    assert asked == []
    with serve(basic_app) as server:
        registry = Registry(server.host, scheme="http", credentials=lookup)
        registry.get_manifest(REPO, "x")
        registry.get_manifest(REPO, "x")
    assert asked == [1]


def test_without_credentials_a_401_says_so() -> None:
    with serve(basic_app) as server, pytest.raises(RegistryError) as caught:
        Registry(server.host, scheme="http").get_manifest(REPO, "x")
    assert str(caught.value) == (
        f"registry {server.host}, repository {REPO}: GET manifest x: HTTP 401 UNAUTHORIZED (authentication required)"
        f"; no credentials known for {server.host}"
    )


def test_no_secret_in_errors_reprs_or_messages_a_registry_echoes() -> None:
    """A registry that quotes the request's Authorization header in its error message."""

    def echo(r: Seen) -> Reply:
        if "Authorization" not in r.headers:
            return 401, [("WWW-Authenticate", 'Basic realm="x"')], b""
        return oci_error(403, "DENIED", f"denied for {r.headers['Authorization']} ({PASSWORD})")

    redactor = Redactor()
    with serve(echo) as server:
        registry = Registry(server.host, scheme="http", credentials=(USER, PASSWORD), redactor=redactor)
        with pytest.raises(RegistryError) as caught:
            registry.get_manifest(REPO, "x")
    encoded = BASIC.removeprefix("Basic ")
    for text in (str(caught.value), repr(caught.value), repr(registry)):
        assert PASSWORD not in text and encoded not in text
    assert "HTTP 403 DENIED (denied for Basic [redacted] ([redacted]))" in str(caught.value)
    assert redactor(f"{PASSWORD} {encoded}") == "[redacted] [redacted]"


# --- Docker's credentials --------------------------------------------------------------------------------------


def write_config(directory: Path, document: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document))


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("registry.example:5000", "registry.example:5000"),
        ("https://registry.example:5000", "registry.example:5000"),
        ("http://registry.example:5000/v2/", "registry.example:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("https://index.docker.io/v1/", "registry-1.docker.io"),
    ],
)
def test_auths_entries_as_docker_matches_them(tmp_path: Path, key: str, host: str) -> None:
    write_config(tmp_path, {"auths": {"other.example": auth("no", "no"), key: auth(USER, PASSWORD)}})
    assert docker_credentials(host, {"DOCKER_CONFIG": str(tmp_path)}) == (USER, PASSWORD)


def test_auths_entries_of_other_forms(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "auths": {
                "a.example": {"username": USER, "password": PASSWORD},
                "b.example": {"identitytoken": "id-token-123"},
                "c.example": {},
                "d.example": {"auth": "not base64!"},
                "e.example": auth(USER, "with:colon"),
            }
        },
    )
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert docker_credentials("a.example", env) == (USER, PASSWORD)
    assert docker_credentials("b.example", env) == ("<token>", "id-token-123")
    assert docker_credentials("c.example", env) is None
    assert docker_credentials("d.example", env) is None
    assert docker_credentials("e.example", env) == (USER, "with:colon")
    assert docker_credentials("unknown.example", env) is None


def test_the_config_directory_defaults_to_home(tmp_path: Path) -> None:
    write_config(tmp_path / ".docker", {"auths": {"a.example": auth(USER, PASSWORD)}})
    assert docker_credentials("a.example", {"HOME": str(tmp_path)}) == (USER, PASSWORD)
    assert docker_credentials("a.example", {"HOME": str(tmp_path / "nobody")}) is None


def test_an_unreadable_config_is_one_line_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auths": {"a.example": ' + json.dumps(auth(USER, PASSWORD)) + "")
    with pytest.raises(RegistryError, match=r"^registry a.example: cannot read Docker's configuration .*config.json"):
        docker_credentials("a.example", {"DOCKER_CONFIG": str(tmp_path)})


HELPER = """#!/bin/sh
printf '%s\\n' "$*" >> "$HELPER_LOG.argv"
host=$(cat)
printf '%s\\n' "$host" >> "$HELPER_LOG.stdin"
case "$host" in
  registry.example:5000) echo '{"ServerURL":"x","Username":"helper-user","Secret":"helper-secret"}';;
  tokens.example) echo '{"ServerURL":"tokens.example","Username":"<token>","Secret":"identity-token-42"}';;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"hub","Secret":"hub-secret"}';;
  broken.example) echo 'not json';;
  *) echo "credentials not found in native keychain"; exit 1;;
esac
"""


@pytest.fixture
def helper_env(tmp_path: Path) -> dict[str, str]:
    """A PATH with ``docker-credential-x`` on it (it logs its arguments and standard input) and a config dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-x"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    return {
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HELPER_LOG": str(tmp_path / "helper"),
    }


def helper_calls(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """What the helper was run with (one line per call) and what it read on its standard input."""
    logs = [Path(env["HELPER_LOG"] + suffix) for suffix in (".argv", ".stdin")]
    argv, stdin = (log.read_text().splitlines() if log.exists() else [] for log in logs)
    return argv, stdin


def test_a_cred_helper_gets_the_host_on_stdin(helper_env: dict[str, str]) -> None:
    write_config(
        Path(helper_env["DOCKER_CONFIG"]),
        {"credHelpers": {"registry.example:5000": "x"}, "auths": {"registry.example:5000": auth("file", "file")}},
    )
    assert docker_credentials("registry.example:5000", helper_env) == ("helper-user", "helper-secret")
    assert helper_calls(helper_env) == (["get"], ["registry.example:5000"])


def test_a_creds_store_answers_for_every_host_without_a_helper(helper_env: dict[str, str]) -> None:
    write_config(
        Path(helper_env["DOCKER_CONFIG"]),
        {
            "credsStore": "x",
            "credHelpers": {"other.example": "missing-helper"},
            "auths": {"file.example": auth(USER, PASSWORD), "https://index.docker.io/v1/": {}},
        },
    )
    assert docker_credentials("registry.example:5000", helper_env) == ("helper-user", "helper-secret")
    assert docker_credentials("docker.io", helper_env) == ("hub", "hub-secret")
    assert docker_credentials("tokens.example", helper_env) == ("<token>", "identity-token-42")
    assert docker_credentials("file.example", helper_env) is None  # the store found none: as Docker, no fallback
    assert docker_credentials("broken.example", helper_env) is None
    assert docker_credentials("other.example", helper_env) is None  # a helper that is not installed
    argv, stdin = helper_calls(helper_env)
    assert stdin == [
        "registry.example:5000",
        "https://index.docker.io/v1/",
        "tokens.example",
        "file.example",
        "broken.example",
    ]
    assert set(argv) == {"get"}


def test_a_helper_name_that_is_a_path_is_not_run(helper_env: dict[str, str], tmp_path: Path) -> None:
    write_config(Path(helper_env["DOCKER_CONFIG"]), {"credsStore": "../bin/docker-credential-x"})
    assert docker_credentials("registry.example:5000", helper_env) is None
    assert helper_calls(helper_env) == ([], [])


def test_a_registry_logs_in_with_what_the_helper_gives(helper_env: dict[str, str]) -> None:
    basic = "Basic " + base64.b64encode(b"helper-user:helper-secret").decode()

    def app(r: Seen) -> Reply:
        if r.headers.get("Authorization") != basic:
            return 401, [("WWW-Authenticate", 'Basic realm="test"')], b""
        return manifest_reply()

    with serve(app) as server:
        write_config(Path(helper_env["DOCKER_CONFIG"]), {"credHelpers": {server.host: "x"}})
        helper = Path(helper_env["PATH"].split(":")[0]) / "docker-credential-x"
        helper.write_text(HELPER.replace("registry.example:5000)", f"{server.host})"))
        registry = Registry.from_docker_config(server.host, helper_env, scheme="http")
        assert registry.get_manifest(REPO, "x") is not None
        assert registry.get_manifest(REPO, "y") is not None
    assert helper_calls(helper_env) == (["get"], [server.host])
