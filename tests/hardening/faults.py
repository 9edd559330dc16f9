"""Fault injection helpers: proxies in front of S3 and a registry that answer errors on request."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

S3_ERROR = (
    "application/xml",
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected fault</Message></Error>',
)
REGISTRY_ERROR = ("application/json", b'{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}')


@dataclass(frozen=True)
class Fault:
    """What a proxy answers instead: ``status`` with its error body, or (``corrupt``) the upstream's answer
    with one byte changed, the length kept."""

    status: int = 500
    corrupt: bool = False
    body: tuple[str, bytes] | None = None
    stall: bool = False
    """The upstream's answer, its headers and the first half of its body; then nothing (a half-dead
    connection), until the proxy stops."""


class FaultyProxy:
    """Forwards HTTP to ``upstream`` (host, port), except requests ``fails(method, path)`` picks: a 500
    (``True``) or the ``Fault`` it returns.

    ``tls_probe``: answer a connection whose first byte is 0x16 (a TLS ClientHello) with
    ``HTTP/1.0 400 Bad Request`` and close it. BuildKit speaks TLS first even to a loopback registry and
    falls back to plain HTTP only when that answer looks like HTTP.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        fails: Callable[[str, str], bool | Fault],
        error: tuple[str, bytes],
        tls_probe: bool = False,
    ) -> None:
        self.upstream = upstream
        self.fails = fails
        self.failed: list[str] = []
        self.stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
                self.send_header("Content-Length", length if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self) -> None:
                body = self._body()
                fault = proxy.fails(self.command, self.path)
                if fault is True:
                    fault = Fault()
                if isinstance(fault, Fault):
                    proxy.failed.append(f"{self.command} {self.path}")
                    if not fault.corrupt and not fault.stall:
                        content_type, data = fault.body or error
                        self._reply(fault.status, [("Content-Type", content_type)], data)
                        return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if isinstance(fault, Fault) and fault.corrupt and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                conn.close()
                if isinstance(fault, Fault) and fault.stall:
                    self._stall(response.status, response.getheaders(), data)
                    return
                self._reply(response.status, response.getheaders(), data)

            def _stall(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                proxy.stopping.wait(600)
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                if tls_probe:
                    try:
                        first = request.recv(1, socket.MSG_PEEK)
                    except OSError:
                        first = b""
                    if first == b"\x16":
                        with contextlib.suppress(OSError):
                            request.sendall(
                                b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                        self.shutdown_request(request)
                        return
                super().process_request(request, client_address)

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients (boto3 retrying, BuildKit) hang up on injected errors; that is the point

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def FaultyS3(upstream: str, fails: Callable[[str, str], bool | Fault]) -> FaultyProxy:
    """A proxy in front of an S3 endpoint (``http://host:port``) answering S3's XML errors."""
    parts = urlsplit(upstream)
    return FaultyProxy((parts.hostname or "127.0.0.1", parts.port or 80), fails, S3_ERROR)


def FaultyRegistry(upstream: str, fails: Callable[[str, str], bool | Fault]) -> FaultyProxy:
    """A proxy in front of a registry (``host:port``) that BuildKit can reach over plain HTTP."""
    host, port = upstream.rsplit(":", 1)
    return FaultyProxy((host, int(port)), fails, REGISTRY_ERROR, tls_probe=True)
