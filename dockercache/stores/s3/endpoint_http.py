"""HTTP for the registry endpoint (:mod:`dockercache.stores.s3.endpoint`): requests parsed strictly, OCI errors out.

The handler knows no store. It reads how the request's body is framed (a malformed ``Content-Length`` or chunk
size is a ``400`` that closes the connection), asks the registry behind it (:class:`Registry`) to authorize
the request, routes it, and streams bodies to the registry as they arrive. The registry keeps its blob
upload sessions apart (:mod:`dockercache.stores.s3.endpoint_uploads`); what any of them refuses is an
:class:`OciError`, which the handler answers in the distribution spec's error format.

A request refused before its body was read has a small body skipped, so the connection serves the next one;
otherwise the connection closes once the answer is out, after a moment in which what the client still sends
is read and dropped (closing a socket with unread data resets it, and the client would lose the answer).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from ...errors import StoreError

NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
ROUTE = re.compile(
    rf"^/v2/(?P<name>{NAME})/(?P<kind>manifests|blobs/uploads|blobs|tags|referrers)(?:/(?P<ref>[^/]*))?$"
)
MANIFEST_LIMIT = 4 * 1024 * 1024
IDLE_SECONDS = 120.0
"""A connection that sends nothing for this long is closed (its thread would otherwise wait for ever)."""
SKIP_LIMIT = 1024 * 1024
"""A refused request's body up to this size is read and dropped, and the connection stays open."""
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024
"""After an answer that closes the connection mid-body, what the client still sends is dropped for at most
this long and this much."""
LENGTH = re.compile(r"[0-9]{1,19}")
RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class OciError(Exception):
    """An answer in the distribution spec's error format: status, code (``MANIFEST_UNKNOWN``...), message,
    and headers of its own (a challenge, an upload's range)."""

    def __init__(
        self, status: int, code: str, message: str, detail: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()


class Registry(Protocol):
    """What the handler asks of the registry (:class:`dockercache.stores.s3.endpoint.Endpoint`); each raises
    :class:`OciError` to refuse."""

    def authorize(self, authorization: str | None) -> None: ...
    def get_manifest(self, name: str, reference: str) -> tuple[str, bytes, str]: ...
    def check_manifest_put(self, name: str, reference: str) -> None: ...
    def put_manifest(self, name: str, reference: str, media_type: str, body: bytes) -> str: ...
    def tags(self, name: str) -> list[str]: ...
    def head_blob(self, name: str, digest: str) -> int: ...
    def blob_url(self, name: str, digest: str) -> str: ...
    def mount(self, name: str, digest: str) -> bool: ...
    def start_upload(self, name: str) -> str: ...
    def upload_size(self, name: str, session: str) -> int: ...
    def append(
        self, name: str, session: str, chunks: Iterable[bytes], span: tuple[int, int] | None, length: int | None
    ) -> int: ...
    def finish_upload(self, name: str, session: str, digest: str) -> None: ...
    def cancel_upload(self, name: str, session: str) -> None: ...
    def problem(self, message: str) -> None: ...


def content_range(text: str | None) -> tuple[int, int] | None:
    """(start, end) of a ``Content-Range: start-end`` (inclusive); a malformed one is refused (416)."""
    if text is None:
        return None
    match = RANGE.fullmatch(text.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise OciError(416, "BLOB_UPLOAD_INVALID", f"malformed Content-Range {text[:60]!r}")
    return int(match[1]), int(match[2])


def make_server(address: tuple[str, int], registry: Registry) -> ThreadingHTTPServer:
    """A server on ``address`` answering for ``registry`` (call ``serve_forever``)."""
    handler = type("Handler", (_Handler,), {"registry": registry})
    return _Server(address, handler)


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dockercache"
    registry: Registry
    _body_state = "unread"
    """unread, reading, done, or broken (its framing cannot be parsed: the connection must close)."""
    _length: int | None = 0
    """The body's Content-Length; None when chunked."""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines hold nothing worth printing, and presigned URLs must never be

    # ------------------------------------------------------------------------------------------- answers

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
        headers = {**error.headers, "Content-Type": "application/json", "Content-Length": str(len(body))}
        self._send(error.status, headers, body)

    def _refuse(self, error: OciError) -> None:
        """Answer ``error``: skip a small unread body, else close (so the next request on this connection is
        not parsed out of the middle of this one's body) and let the client read the answer first."""
        if self._body_state == "unread" and self._length is not None and self._length <= SKIP_LIMIT:
            self._drain()
        elif self._body_state != "done":
            self.close_connection = True
        self._error(error)
        if self.close_connection and self._body_state != "done":
            self._linger()

    def _linger(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            deadline, dropped = time.monotonic() + LINGER_SECONDS, 0
            while time.monotonic() < deadline and dropped < LINGER_BYTES:
                data = self.connection.recv(1024 * 1024)
                if not data:
                    return
                dropped += len(data)

    # ---------------------------------------------------------------------------------------------- bodies

    def _framing(self) -> None:
        """How the body is framed (``_length``); a framing that cannot be parsed is a 400 that closes."""
        encoding = self.headers.get("Transfer-Encoding")
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                self._body_state = "broken"
                raise OciError(400, "BLOB_UPLOAD_INVALID", f"unsupported Transfer-Encoding {encoding!r}")
            self._length = None
        elif lengths:
            if len(set(lengths)) != 1 or not LENGTH.fullmatch(lengths[0]):
                self._body_state = "broken"
                raise OciError(400, "SIZE_INVALID", f"malformed Content-Length {', '.join(lengths)!r}")
            self._length = int(lengths[0])

    def _chunks(self) -> Iterator[bytes]:
        """The request body as it arrives (see :meth:`_raw_chunks`); marked read once all of it came."""
        yield from self._raw_chunks()
        self._body_state = "done"

    def _raw_chunks(self) -> Iterator[bytes]:
        """The request body, Content-Length or chunked (Go's client streams uploads chunked)."""
        self._body_state = "reading"
        if self._length is not None:
            yield from self._exactly(self._length)
            return
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ConnectionError("the client hung up mid-upload")
            size = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not CHUNK_SIZE.fullmatch(size):
                raise self._malformed(f"malformed chunk size {line[:40]!r}")
            if int(size, 16) == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._exactly(int(size, 16))
            if self.rfile.readline(8) not in (b"\r\n", b"\n"):
                raise self._malformed("a chunk does not end where its size says")

    def _malformed(self, message: str) -> OciError:
        self._body_state = "broken"
        return OciError(400, "BLOB_UPLOAD_INVALID", message)

    def _exactly(self, count: int) -> Iterator[bytes]:
        while count:
            chunk = self.rfile.read(min(count, 1024 * 1024))
            if not chunk:
                raise ConnectionError("the client hung up mid-upload")
            count -= len(chunk)
            yield chunk

    def _body(self, limit: int) -> bytes:
        if self._length is not None and self._length > limit:
            raise OciError(413, "SIZE_INVALID", f"body larger than {limit} bytes")
        data = bytearray()
        for chunk in self._chunks():
            data += chunk
            if len(data) > limit:
                raise OciError(413, "SIZE_INVALID", f"body larger than {limit} bytes")
        return bytes(data)

    def _drain(self) -> None:
        for _ in self._chunks():
            pass

    # ------------------------------------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        self._body_state, self._length = "unread", 0
        try:
            try:
                self._framing()
                self.registry.authorize(self.headers.get("Authorization"))
                self._route()
            except StoreError as exc:
                self.registry.problem(str(exc))
                raise OciError(503, "UNAVAILABLE", str(exc)) from None
        except OciError as error:
            try:
                self._refuse(error)
            except (OSError, ValueError):
                self.close_connection = True
        except (OSError, ValueError):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path in ("/v2", "/v2/"):
            self._drain()
            if self.command not in ("GET", "HEAD"):
                raise OciError(405, "UNSUPPORTED", "method not allowed")
            self._send(200, {"Content-Type": "application/json"}, b"{}")
            return
        if url.path.rstrip("/") == "/v2/_catalog":
            raise OciError(404, "UNSUPPORTED", "listing repositories (/v2/_catalog) is not supported")
        route = ROUTE.match(url.path)
        if route is None:
            code = "NAME_INVALID" if url.path.startswith("/v2/") else "UNSUPPORTED"
            raise OciError(404, code, f"no such repository or route: {url.path[:200]}")
        name, kind, ref = route["name"], route["kind"], route["ref"]
        method = getattr(self, f"_{kind.replace('/', '_')}_{self.command.lower()}", None)
        if method is None or (ref is None and kind != "blobs/uploads"):
            raise OciError(405, "UNSUPPORTED", f"{self.command} is not supported on {kind}")
        method(name, ref or "", query)

    # -------------------------------------------------------------------------------------------- routes

    def _manifests_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        media_type, body, digest = self.registry.get_manifest(name, ref)
        self._send(200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, body)

    _manifests_head = _manifests_get

    def _manifests_put(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self.registry.check_manifest_put(name, ref)  # refused before the body is read
        body = self._body(MANIFEST_LIMIT)
        media_type = self.headers.get("Content-Type", "")
        digest = self.registry.put_manifest(name, ref, media_type, body)
        self._send(201, {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest})

    def _tags_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        if ref != "list":
            raise OciError(404, "UNSUPPORTED", f"no such route: /v2/{name}/tags/{ref[:100]}")
        tags = [t for t in self.registry.tags(name) if t > query.get("last", "")]
        headers = {"Content-Type": "application/json"}
        if "n" in query:
            if not query["n"].isdigit():
                raise OciError(400, "PAGINATION_NUMBER_INVALID", f"n={query['n'][:20]!r} is not a number")
            limit = int(query["n"])
            if len(tags) > limit:
                tags = tags[:limit]
                last = quote(tags[-1]) if tags else ""
                headers["Link"] = f'</v2/{name}/tags/list?n={limit}&last={last}>; rel="next"'
        self._send(200, headers, json.dumps({"name": name, "tags": tags}).encode())

    _tags_head = _tags_get

    def _referrers_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        raise OciError(404, "UNSUPPORTED", "the referrers API is not supported")

    def _blobs_head(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        size = self.registry.head_blob(name, ref)
        headers = {
            "Content-Length": str(size),
            "Docker-Content-Digest": ref,
            "Content-Type": "application/octet-stream",
        }
        self._send(200, headers)

    def _blobs_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._send(307, {"Location": self.registry.blob_url(name, ref), "Docker-Content-Digest": ref})

    def _created(self, name: str, digest: str) -> None:
        self._send(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _accepted(self, name: str, session: str, status: int = 202) -> None:
        size = self.registry.upload_size(name, session)
        headers = {
            "Location": f"/v2/{name}/blobs/uploads/{session}",
            "Docker-Upload-UUID": session,
            "Range": f"0-{max(size - 1, 0)}",
        }
        self._send(status, headers)

    def _receive(self, name: str, session: str, ranged: bool) -> None:
        """The body into upload ``session``; a chunk's ``Content-Range`` is checked unless the body is empty."""
        span = content_range(self.headers.get("Content-Range")) if ranged and self._length != 0 else None
        self.registry.append(name, session, self._chunks(), span, self._length)

    def _blobs_uploads_post(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        if ref:
            raise OciError(405, "UNSUPPORTED", "POST to an upload session")
        mount = query.get("mount")
        if mount and self.registry.mount(name, mount):
            self._drain()
            self._created(name, mount)
            return
        session = self.registry.start_upload(name)
        try:
            self._receive(name, session, ranged=False)
            if "digest" in query:
                self.registry.finish_upload(name, session, query["digest"])
                self._created(name, query["digest"])
                return
        except BaseException:
            with contextlib.suppress(OciError):  # the client never learnt the session: drop it
                self.registry.cancel_upload(name, session)
            raise
        self._accepted(name, session)

    def _blobs_uploads_patch(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._receive(name, ref, ranged=True)
        self._accepted(name, ref)

    def _blobs_uploads_put(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._receive(name, ref, ranged=True)
        digest = query.get("digest", "")
        self.registry.finish_upload(name, ref, digest)
        self._created(name, digest)

    def _blobs_uploads_get(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._accepted(name, ref, status=204)

    def _blobs_uploads_delete(self, name: str, ref: str, query: Mapping[str, str]) -> None:
        self._drain()
        self.registry.cancel_upload(name, ref)
        self._send(204)
