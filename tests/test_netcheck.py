from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dockercache.adapters.netcheck import answers, registry_host, unreachable, url_host


def test_registry_host() -> None:
    assert registry_host("localhost:5000/cache/x:tag") == ("localhost", 5000)
    assert registry_host("123.dkr.ecr.eu-west-1.amazonaws.com/cache:x") == (
        "123.dkr.ecr.eu-west-1.amazonaws.com",
        443,
    )
    assert registry_host("library/ubuntu:22.04") == ("registry-1.docker.io", 443)
    assert registry_host("ubuntu") == ("registry-1.docker.io", 443)


def test_url_host() -> None:
    assert url_host("http://127.0.0.1:5002") == ("127.0.0.1", 5002)
    assert url_host("https://s3.amazonaws.com") == ("s3.amazonaws.com", 443)


class Registry401(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)  # what a registry that wants a login answers: alive
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def listening(on_accept: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server that hands each connection to ``on_accept``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                held.append(conn)
                on_accept(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_a_plain_http_registry_is_alive_whatever_it_answers() -> None:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Registry401)) as port:
        assert unreachable("127.0.0.1", port) is None
        assert answers("127.0.0.1", port) == (None, True)  # plain HTTP: a client may skip the TLS handshake


def test_a_tls_registry_is_alive(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry401)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server) as port:
        assert unreachable("127.0.0.1", port) is None
        assert answers("127.0.0.1", port) == (None, False)


def test_a_server_that_accepts_and_never_answers_is_down() -> None:
    """It passes a TCP check, but would cost a build about 20 s per stage inside BuildKit."""
    with listening(lambda conn: None) as port:
        assert unreachable("127.0.0.1", port, timeout=0.5) == "no answer within 0.5s"


def test_a_server_that_closes_every_connection_is_down() -> None:
    with listening(lambda conn: conn.close()) as port:
        assert unreachable("127.0.0.1", port) == "closed the connection without answering"


def test_a_closed_port_and_an_unknown_host_are_down() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    assert unreachable("127.0.0.1", port) == "Connection refused"
    assert (unreachable("no-such-host.invalid", 443) or "").startswith("unknown host")
