from __future__ import annotations

import socket

from dockercache.netcheck import registry_host, unreachable, url_host


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


def test_unreachable_real_sockets() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert unreachable("127.0.0.1", port) is None
    server.close()
    assert unreachable("127.0.0.1", port) is not None
