"""Reachability of cache endpoints, checked before a build so an outage is a quick, reported cache miss."""

from __future__ import annotations

import socket
import ssl
import time
from urllib.parse import urlsplit


def registry_host(ref: str) -> tuple[str, int]:
    """The registry host and port of an image reference (Docker Hub when the first part is no host)."""
    first, sep, _ = ref.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return "registry-1.docker.io", 443
    host, colon, port = first.rpartition(":")
    if colon and port.isdigit():
        return host, int(port)
    return first, 443


def url_host(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def unreachable(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when the server answers HTTP (any status, over TLS or plain HTTP), else why not: connection
    refused, unknown host, or a server that accepts connections but says nothing (which would cost a build
    about 20 s per stage inside BuildKit)."""
    return answers(host, port, timeout)[0]


def answers(host: str, port: int, timeout: float = 3.0) -> tuple[str | None, bool]:
    """As :func:`unreachable`, and whether the server answered in plain HTTP (a client that knows it spares
    itself a TLS handshake that fails)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            answer = _over_tls(sock, host, deadline)
        if answer is _CLOSED:  # no TLS there: ask in plain HTTP, as BuildKit falls back to for such a registry
            with socket.create_connection((host, port), timeout=_left(deadline)) as sock:
                answer = _PLAIN if _http(sock, host, deadline) is _ALIVE else _CLOSED
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})", False
    except TimeoutError:
        return f"no answer within {timeout:g}s", False
    except OSError as exc:
        return exc.strerror or str(exc), False
    if answer is _CLOSED:
        return "closed the connection without answering", False
    return None, answer is _PLAIN


_ALIVE, _CLOSED, _PLAIN = object(), object(), object()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _over_tls(sock: socket.socket, host: str, deadline: float) -> object:
    """A TLS handshake, then ``GET /v2/``. A server that answers the handshake with anything but TLS (a
    plain-HTTP registry says 400) is alive; one that closes the connection is asked again in plain HTTP."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA certificates loaded: they take 10-20 ms
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # alive or not is the question here, not who it is
    sock.settimeout(_left(deadline))
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        return _CLOSED
    except ssl.SSLError:
        return _PLAIN  # it answered, in plain HTTP
    with tls:
        return _http(tls, host, deadline)


def _http(sock: socket.socket, host: str, deadline: float) -> object:
    sock.settimeout(_left(deadline))
    sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    try:
        first = sock.recv(5)
    except (ConnectionResetError, ssl.SSLEOFError):
        return _CLOSED
    return _ALIVE if first.startswith(b"HTTP/") or (first and b"HTTP/".startswith(first)) else _CLOSED
