"""An OCI distribution endpoint on loopback, backed by an S3 store: BuildKit imports S3 caches lazily.

BuildKit reads a ``type=registry`` cache lazily (only the blobs a build needs) but a ``type=local`` one whole.
So for the length of a build dockercache serves the S3 layout (:mod:`dockercache.stores.layout`) as a
registry on ``127.0.0.1`` and a free port:

- ``GET /v2/``; ``HEAD``/``GET`` manifests by tag (a snapshot: repository = snapshot key and service, tag =
  stage) and by digest;
- ``HEAD`` blobs from one bucket listing per run; ``GET`` blobs as a ``307`` to a short-lived presigned S3
  URL, so the bytes go from S3 to BuildKit and never through this process;
- uploads (``POST`` with ``?digest=`` or ``?mount=``, ``PATCH``, ``PUT``) spooled to disk while hashed and
  sent to S3 under their digest only once it is checked; a blob the store has is never sent again;
- ``PUT`` manifest by tag writes the snapshot index last, only when every blob it names is in S3 (a lease
  tells a concurrent prune what the save relies on); a manifest naming an absent blob is refused with
  ``MANIFEST_BLOB_UNKNOWN`` and no snapshot changes.

Only the repositories the run was granted exist; writes to any but the writable ones are refused (403).
Credentials stay in this process (boto3's chain); BuildKit only sees presigned URLs for single blobs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .errors import StoreError
from .snapshots import Snapshot, parse_snapshot, snapshot_document
from .stores.layout import SnapshotName

if TYPE_CHECKING:
    from .snapshots import BlobStore

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
ROUTE = re.compile(rf"^/v2/(?P<name>{NAME})/(?P<kind>manifests|blobs/uploads|blobs)(?:/(?P<ref>[^/]*))?$")
MANIFEST_LIMIT = 4 * 1024 * 1024
SPOOL_IN_MEMORY = 8 * 1024 * 1024
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
PRESIGN_SECONDS = 900
PRUNE_WAIT_SECONDS = 120.0
IDLE_SECONDS = 120.0
LIST_INSTEAD_OF_HEADS = 1000
"""A save checks its blobs with one listing of the bucket while it holds at most this many blobs (one page of
ListObjectsV2), else with a HEAD per blob."""
"""A connection that sends nothing for this long is closed (its thread would otherwise wait for ever)."""


def repository_name(key: str, service: str) -> str:
    """The repository serving snapshot key ``key`` of ``service``: lower case, valid in a reference; a
    suffix of the original's hash when characters had to change (two keys never share a name)."""
    raw = f"{key}/{service}"
    parts = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") or "x" for p in raw.split("/") if p]
    name = "/".join(parts)
    if name != raw:
        name += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return name


@dataclass(frozen=True)
class Repository:
    """A repository the run may use: the snapshots of one key and service."""

    key: str
    service: str
    writable: bool = False


class OciError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()


@dataclass
class Traffic:
    """What went through the endpoint, for the report (all under the endpoint's lock)."""

    redirects: list[tuple[str, str, int]] = field(default_factory=list)
    """(repository, digest, size) of every blob GET answered with a presigned URL."""
    heads: list[tuple[str, str]] = field(default_factory=list)
    uploaded: dict[str, int] = field(default_factory=dict)
    """Blobs this run sent to S3, by digest."""
    manifests: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    """(repository, tag) -> the blobs of the manifest served or saved under it."""
    saved: dict[tuple[str, str], SnapshotName] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Upload:
    repository: str
    spool: IO[bytes]
    sha: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, chunk: bytes) -> None:
        self.spool.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


class Endpoint:
    """The registry for one run. ``with Endpoint(...) as e: e.address`` is ``127.0.0.1:PORT``."""

    def __init__(
        self,
        store: BlobStore,
        repositories: Mapping[str, Repository],
        meta: Mapping[str, str] | None = None,
        listen: Sequence[tuple[str, int]] = (("127.0.0.1", 0),),
        presign_seconds: int = PRESIGN_SECONDS,
        prune_wait: float = PRUNE_WAIT_SECONDS,
        list_limit: int = LIST_INSTEAD_OF_HEADS,
    ) -> None:
        self.store = store
        self.repositories = dict(repositories)
        self.meta = dict(meta or {})
        self.listen = listen
        self.presign_seconds = presign_seconds
        self.prune_wait = prune_wait
        self.list_limit = list_limit
        self.traffic = Traffic()
        self._lock = threading.Lock()
        self._listing = threading.Lock()
        self._known: dict[str, int] | None = None
        self._snapshots: dict[SnapshotName, Snapshot | str | None] = {}
        self._manifests: dict[str, tuple[str, bytes]] = {}
        self._uploads: dict[str, Upload] = {}
        self._digest_locks: dict[str, threading.Lock] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- life cycle

    def start(self) -> str:
        """Bind to the first free address of ``listen`` and serve in a thread; returns ``host:port``."""
        error: OSError | None = None
        for address in self.listen:
            try:
                self._server = _Server(address, _handler(self))
                break
            except OSError as exc:
                error = exc
        if self._server is None:
            raise error or OSError("no address to listen on")
        server = self._server  # stop() waits up to one poll interval for the loop to notice
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="dockercache-endpoint", daemon=True
        )
        self._thread.start()
        return self.address

    @property
    def address(self) -> str:
        assert self._server is not None, "the endpoint is not started"
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for upload in self._uploads.values():
            upload.spool.close()
        self._uploads.clear()

    def __enter__(self) -> Endpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ what S3 holds

    def known(self) -> dict[str, int]:
        """Every blob in the store by digest: one listing per run, kept current with this run's uploads."""
        with self._listing:  # not under _lock: requests that need no listing are served meanwhile
            if self._known is None:
                listed = self.store.list_blobs()
                with self._lock:
                    self._known = listed
            return self._known

    def snapshot(self, name: SnapshotName) -> Snapshot | str | None:
        """The snapshot ``name`` if it can be served, a reason when it cannot, None when there is none."""
        with self._lock:
            if name in self._snapshots:
                return self._snapshots[name]
        body = self.store.get_snapshot(str(name))
        found: Snapshot | str | None = None
        if body is not None:
            found = parse_snapshot(body)
            if isinstance(found, str):
                found = f"snapshot {name} in {self.store.url} {found}"
            elif found.manifest_body is not None:  # embedded: BuildKit's first request costs no S3 round trip
                media_type = found.manifest.get("mediaType") or "application/vnd.oci.image.manifest.v1+json"
                with self._lock:
                    self._manifests.setdefault(found.manifest["digest"], (media_type, found.manifest_body))
            if isinstance(found, Snapshot):
                known = self.known()
                missing = [d for d in found.blobs if d not in known]
                if missing:
                    found = f"snapshot {name}: blob {missing[0]} is missing from {self.store.url}"
        with self._lock:
            self._snapshots[name] = found
        return found

    def served(self, digest: str) -> bool:
        """Whether BuildKit was sent to S3 for this blob in this run."""
        with self._lock:
            return any(d == digest for _, d, _ in self.traffic.redirects)

    def forget(self, digest: str) -> None:
        """The blob is gone from the store (removed as corrupt): answer 404 for it from now on."""
        with self._lock:
            if self._known is not None:
                self._known.pop(digest, None)
            self._snapshots.clear()

    def _repository(self, name: str, write: bool = False) -> Repository:
        repo = self.repositories.get(name)
        if repo is None:
            raise OciError(404, "NAME_UNKNOWN", f"repository {name} is not served in this run")
        if write and not repo.writable:
            raise OciError(403, "DENIED", f"this run may not write snapshot key '{repo.key}'")
        return repo

    # ---------------------------------------------------------------------------------------- manifests

    @staticmethod
    def _reference(reference: str) -> None:
        if not DIGEST.fullmatch(reference) and not TAG.fullmatch(reference):
            raise OciError(400, "TAG_INVALID", f"{reference!r} is neither a tag nor a digest")

    def get_manifest(self, name: str, reference: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest by tag or digest."""
        repo = self._repository(name)
        self._reference(reference)
        if DIGEST.fullmatch(reference):
            media_type, body = self._manifest_blob(reference, None)
            return media_type, body, reference
        found = self.snapshot(SnapshotName(repo.key, repo.service, reference))
        if not isinstance(found, Snapshot):  # the run warned about a broken one when it planned its sources
            raise OciError(404, "MANIFEST_UNKNOWN", f"no snapshot {repo.key}/{repo.service}/{reference}")
        descriptor = found.manifest
        media_type, body = self._manifest_blob(descriptor["digest"], descriptor.get("mediaType"))
        with self._lock:
            self.traffic.manifests[(name, reference)] = frozenset(found.blobs)
        return media_type, body, descriptor["digest"]

    def _manifest_blob(self, digest: str, media_type: str | None) -> tuple[str, bytes]:
        with self._lock:
            if digest in self._manifests:
                return self._manifests[digest]
        body = self.store.get_blob_bytes(digest, MANIFEST_LIMIT)
        if body is None or f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
            if body is not None:
                self._problem(f"manifest {digest} in {self.store.url} is corrupt")
            raise OciError(404, "MANIFEST_UNKNOWN", f"manifest {digest} is not in the store")
        if media_type is None:
            with contextlib.suppress(ValueError, AttributeError):
                media_type = json.loads(body).get("mediaType")
        entry = (media_type or "application/vnd.oci.image.manifest.v1+json", body)
        with self._lock:
            self._manifests[digest] = entry
        return entry

    def put_manifest(self, name: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest; by tag, write the snapshot index once every blob it names is in S3."""
        repo = self._repository(name, write=True)
        self._reference(reference)
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if DIGEST.fullmatch(reference) and reference != digest:
            raise OciError(400, "DIGEST_INVALID", f"manifest body hashes to {digest}, not {reference}")
        try:
            document = json.loads(body)
            media_type = document.get("mediaType") or media_type
            descriptors = [document["config"], *document["layers"]] if "config" in document else []
            descriptors += document.get("manifests", [])
            sizes = {str(d["digest"]): int(d["size"]) for d in descriptors}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OciError(400, "MANIFEST_INVALID", "not a JSON image manifest or index") from None
        if not sizes or not all(DIGEST.fullmatch(d) for d in sizes):
            raise OciError(400, "MANIFEST_INVALID", "the manifest names no blobs, or an invalid digest")
        if DIGEST.fullmatch(reference):
            self._put_blob_bytes(digest, body)
            return digest
        snapshot = SnapshotName(repo.key, repo.service, reference)
        blobs = {**sizes, digest: len(body)}
        lease = self._lease(blobs)
        try:
            self._await_prunes()
            self._check_present(sizes)
            self._put_blob_bytes(digest, body)
            # The manifest travels inside the snapshot too (an OCI descriptor's ``data``), so serving it
            # needs no request of its own; the blob stays for lookups by digest and for older releases.
            data = base64.b64encode(body).decode()
            descriptor = {"mediaType": media_type, "digest": digest, "size": len(body), "data": data}
            index = {
                "schemaVersion": 2,
                "mediaType": INDEX_TYPE,
                "manifests": [{**descriptor, "annotations": {REF_NAME: reference}}],
            }
            meta = {**self.meta, "service": repo.service, "stage": reference}
            self.store.put_snapshot(str(snapshot), snapshot_document(snapshot, meta, index, blobs))
        finally:
            self.store.delete_lease(lease)
        with self._lock:
            self.traffic.saved[(name, reference)] = snapshot
            self.traffic.manifests[(name, reference)] = frozenset(blobs)
            self._snapshots.pop(snapshot, None)
            self._manifests[digest] = (media_type, body)
        return digest

    def _lease(self, blobs: Mapping[str, int]) -> str:
        """Tell prune what this save relies on, before checking that it is all there."""
        return self.store.put_lease(sorted(blobs))

    def _await_prunes(self) -> None:
        """Wait for the prunes that hold a lock now, after the lease is written.

        A prune writes its lock before it reads the leases, and a save writes its lease before it looks for
        locks: so either this save sees the prune's lock, or the prune sees this save's lease (and keeps its
        blobs). A prune seen here may have missed the lease: once it ends, the presence check that follows
        sees whatever it deleted. Prunes that lock later see the lease; they are not waited for.
        """
        deadline = time.monotonic() + self.prune_wait
        running = self.store.prune_locks()
        while running:
            if time.monotonic() > deadline:
                raise OciError(503, "UNAVAILABLE", f"a prune of {self.store.url} is still running")
            time.sleep(0.5)
            running &= self.store.prune_locks()

    def _check_present(self, sizes: Mapping[str, int]) -> None:
        """Every blob named is in S3 now (the run's first listing can be stale; a prune with no grace period
        may even have taken what this run uploaded a moment ago): list the bucket again while it is small,
        else HEAD each blob."""
        with self._lock:
            small = self._known is not None and len(self._known) <= self.list_limit
        if small:
            listed = self.store.list_blobs()
            missing = sorted(d for d in sizes if d not in listed)
        else:
            others = list(sizes)
            with ThreadPoolExecutor(max_workers=min(8, max(1, len(others)))) as pool:
                present = dict(zip(others, pool.map(self.store.head_blob, others), strict=True))
            missing = sorted(d for d, size in present.items() if size is None)
        if missing:
            with self._lock:
                if self._known is not None:
                    for d in missing:
                        self._known.pop(d, None)
            raise OciError(
                400, "MANIFEST_BLOB_UNKNOWN", f"blob {missing[0]} is not in the store", {"digest": missing[0]}
            )

    # -------------------------------------------------------------------------------------------- blobs

    def head_blob(self, name: str, digest: str) -> int:
        self._repository(name)
        size = self.known().get(digest)
        with self._lock:
            self.traffic.heads.append((name, digest))
        if size is None:
            raise OciError(404, "BLOB_UNKNOWN", f"blob {digest} is not in the store")
        return size

    def blob_url(self, name: str, digest: str) -> str:
        self._repository(name)
        size = self.known().get(digest)
        if size is None:
            raise OciError(404, "BLOB_UNKNOWN", f"blob {digest} is not in the store")
        url = self.store.presign_blob(digest, self.presign_seconds)
        with self._lock:
            self.traffic.redirects.append((name, digest, size))
        return url

    def start_upload(self, name: str) -> str:
        self._repository(name, write=True)
        session = uuid.uuid4().hex
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="dockercache-upload-")  # noqa: SIM115 - closed when the upload ends
        with self._lock:
            self._uploads[session] = Upload(name, spool)
        return session

    def upload(self, name: str, session: str) -> Upload:
        self._repository(name, write=True)
        with self._lock:
            upload = self._uploads.get(session)
        if upload is None or upload.repository != name:
            raise OciError(404, "BLOB_UPLOAD_UNKNOWN", f"no upload {session}")
        return upload

    def cancel_upload(self, name: str, session: str) -> None:
        upload = self.upload(name, session)
        with self._lock:
            self._uploads.pop(session, None)
        upload.spool.close()

    def finish_upload(self, name: str, session: str, digest: str) -> None:
        """The upload is complete: check its digest, then send it to S3 unless the store has it."""
        upload = self.upload(name, session)
        with self._lock:
            self._uploads.pop(session, None)
        try:
            if not DIGEST.fullmatch(digest) or upload.digest != digest:
                raise OciError(400, "DIGEST_INVALID", f"the upload hashes to {upload.digest}, not {digest}")
            upload.spool.seek(0)
            self._commit(digest, upload.size, lambda: self.store.upload_blob_fileobj(digest, upload.spool))
        finally:
            upload.spool.close()

    def mount(self, name: str, digest: str) -> bool:
        """Cross-repository mount: every repository shares the store's blobs, so it is there or not."""
        self._repository(name, write=True)
        return DIGEST.fullmatch(digest) is not None and digest in self.known()

    def _put_blob_bytes(self, digest: str, body: bytes) -> None:
        self._commit(digest, len(body), lambda: self.store.put_blob_bytes(digest, body))

    def _commit(self, digest: str, size: int, send: Callable[[], None]) -> None:
        with self._lock:
            lock = self._digest_locks.setdefault(digest, threading.Lock())
        with lock:  # two uploads of one blob in this run: the second finds it known
            if self.known().get(digest) == size:
                return
            send()
            with self._lock:
                assert self._known is not None
                self._known[digest] = size
                self.traffic.uploaded[digest] = size

    def _problem(self, message: str) -> None:
        with self._lock:
            if message not in self.traffic.problems:
                self.traffic.problems.append(message)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def finish_request(self, request: Any, client_address: Any) -> None:
        # In the connection's own thread (a client that connects and says nothing must not stop the others).
        # BuildKit speaks TLS first, even to loopback, and falls back to plain HTTP only when the answer to
        # its ClientHello looks like HTTP: give it one.
        request.settimeout(IDLE_SECONDS)
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first == b"\x16":
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-request is not this process's problem


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.endpoint = endpoint
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dockercache"
    endpoint: Endpoint

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines hold nothing worth printing, and presigned URLs must never be

    # ------------------------------------------------------------------------------------------- plumbing

    def _send(self, status: int, headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, error: OciError) -> None:
        body = error.body()
        self._send(error.status, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)

    def _chunks(self) -> Iterator[bytes]:
        """The request body as it arrives (see :meth:`_raw_chunks`); marked read once all of it came."""
        yield from self._raw_chunks()
        self._body_state = "done"

    def _raw_chunks(self) -> Iterator[bytes]:
        """The request body, Content-Length or chunked (Go's client streams uploads chunked)."""
        self._body_state = "reading"
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._exactly(int(self.headers.get("Content-Length") or 0))
            return
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._exactly(size)
            self.rfile.readline(8)

    def _exactly(self, count: int) -> Iterator[bytes]:
        while count:
            chunk = self.rfile.read(min(count, 1024 * 1024))
            if not chunk:
                raise ConnectionError("the client hung up mid-upload")
            count -= len(chunk)
            yield chunk

    def _body(self, limit: int) -> bytes:
        data = bytearray()
        for chunk in self._chunks():
            data += chunk
            if len(data) > limit:
                raise OciError(413, "SIZE_INVALID", f"body larger than {limit} bytes")
        return bytes(data)

    def _drain(self) -> None:
        for _ in self._chunks():
            pass

    def _dispatch(self) -> None:
        self._body_state = "unread"
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/v2", "/v2/"):
                self._drain()
                if self.command not in ("GET", "HEAD"):
                    raise OciError(405, "UNSUPPORTED", "method not allowed")
                self._send(200, {"Content-Type": "application/json"}, b"{}")
                return
            route = ROUTE.match(url.path)
            if route is None:
                self._drain()
                raise OciError(404, "NAME_INVALID" if url.path.startswith("/v2/") else "UNSUPPORTED", "not found")
            name, kind, ref = route["name"], route["kind"], route["ref"]
            method = getattr(self, f"_{kind.replace('/', '_')}_{self.command.lower()}", None)
            if method is None or (ref is None and kind != "blobs/uploads"):
                self._drain()
                raise OciError(405, "UNSUPPORTED", f"{self.command} is not supported on {kind}")
            method(name, ref or "", query)
        except OciError as error:
            # Refused before the body was read: skip a small one, else hang up (so the next request on this
            # connection is not parsed out of the middle of this one's body).
            small = int(self.headers.get("Content-Length") or 0) <= 1024 * 1024
            if self._body_state == "unread" and small and "chunked" not in self.headers.get("Transfer-Encoding", ""):
                self._drain()
            elif self._body_state != "done":
                self.close_connection = True
            self._error(error)
        except StoreError as exc:
            self.endpoint._problem(str(exc))
            self._error(OciError(503, "UNAVAILABLE", str(exc)))
        except (ConnectionError, ValueError):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

    # -------------------------------------------------------------------------------------------- routes

    def _manifests_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        media_type, body, digest = self.endpoint.get_manifest(name, ref)
        self._send(200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, body)

    _manifests_head = _manifests_get

    def _manifests_put(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        body = self._body(MANIFEST_LIMIT)
        media_type = self.headers.get("Content-Type", "")
        digest = self.endpoint.put_manifest(name, ref, media_type, body)
        self._send(201, {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest})

    def _blobs_head(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        size = self.endpoint.head_blob(name, ref)
        headers = {
            "Content-Length": str(size),
            "Docker-Content-Digest": ref,
            "Content-Type": "application/octet-stream",
        }
        self._send(200, headers)

    def _blobs_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._send(307, {"Location": self.endpoint.blob_url(name, ref), "Docker-Content-Digest": ref})

    def _created(self, name: str, digest: str) -> None:
        self._send(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _accepted(self, name: str, session: str) -> None:
        upload = self.endpoint.upload(name, session)
        headers = {
            "Location": f"/v2/{name}/blobs/uploads/{session}",
            "Docker-Upload-UUID": session,
            "Range": f"0-{max(upload.size - 1, 0)}",
        }
        self._send(202, headers)

    def _blobs_uploads_post(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        if ref:
            self._drain()
            raise OciError(405, "UNSUPPORTED", "POST to an upload session")
        mount = query.get("mount")
        if mount and self.endpoint.mount(name, mount):
            self._drain()
            self._created(name, mount)
            return
        session = self.endpoint.start_upload(name)
        upload = self.endpoint.upload(name, session)
        for chunk in self._chunks():
            upload.write(chunk)
        if "digest" in query:
            self.endpoint.finish_upload(name, session, query["digest"])
            self._created(name, query["digest"])
            return
        self._accepted(name, session)

    def _blobs_uploads_patch(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        upload = self.endpoint.upload(name, ref)
        for chunk in self._chunks():
            upload.write(chunk)
        self._accepted(name, ref)

    def _blobs_uploads_put(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        upload = self.endpoint.upload(name, ref)
        for chunk in self._chunks():
            upload.write(chunk)
        digest = query.get("digest", "")
        self.endpoint.finish_upload(name, ref, digest)
        self._created(name, digest)

    def _blobs_uploads_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        upload = self.endpoint.upload(name, ref)
        self._send(204, {"Location": f"/v2/{name}/blobs/uploads/{ref}", "Range": f"0-{max(upload.size - 1, 0)}"})

    def _blobs_uploads_delete(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._drain()
        self.endpoint.cancel_upload(name, ref)
        self._send(204)
