"""Reachability of cache endpoints, checked before a build so an outage is a quick, reported cache miss."""

from __future__ import annotations

import socket
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
    """None when a TCP connection opens, else why not (connection refused, timed out, unknown host)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)
