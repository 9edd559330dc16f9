"""`check --remote`: every cache store and registry the configuration names, tried without building, against a
real S3 server (moto) and a real HTTP server standing in for a registry; a bucket that does not exist is
named as such."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from dockercache.commands import Environment, cmd_check
from dockercache.output.console import Console


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    class V2(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v2/" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), V2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CONFIG = """
[caches.s3]
type = "s3"
bucket = "{bucket}"
endpoint_url = "{endpoint}"
region = "us-east-1"

[caches.registry]
type = "registry"
ref = "{registry}/cache/{{service}}"

[caches.local]
type = "local"

[registries."{dead}"]
username = "ci"
password = "${{REGISTRY_PASSWORD}}"

[services.app]
context = "."
cache = "s3"
image = "{push}/shop/app"
"""


def check(tmp_path: Path, as_json: bool = False, **values: str) -> tuple[int, str]:
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    (tmp_path / "dockercache.toml").write_text(CONFIG.format(**values))
    out = io.StringIO()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "REGISTRY_PASSWORD": "pw-123456"}
    environment = Environment(env=env, cwd=tmp_path, docker=None, console=Console(out, io.StringIO()))
    code = cmd_check(environment, None, as_json=as_json, remote=True)
    return code, out.getvalue()


def test_every_store_and_registry_is_tried_and_a_missing_bucket_is_named(
    tmp_path: Path, moto_url: str, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"127.0.0.1:{closed_port()}"
    values = {"endpoint": moto_url, "registry": registry, "dead": dead}
    code, out = check(tmp_path, bucket="acme-ci-cache", push=dead, **values)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith("dockercache.toml: ok (1 service)")
    assert (
        lines[1] == "caches.s3: s3://acme-ci-cache/dockercache: bucket acme-ci-cache does not exist (region us-east-1)"
    )
    assert lines[2:4] == ["caches.registry: reachable", "caches.local: reachable"]
    assert lines[4].startswith(f"registries.{dead}: unreachable (") and "refused" in lines[4].lower()
    # Where the image is pushed is tried too: a build would fail there, after all its work.
    assert lines[5].startswith(f"services.app.image: push registry {dead} unreachable (") and "refused" in lines[5]
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket="acme-ci-cache")
    values["dead"] = registry
    code, out = check(tmp_path, True, bucket="acme-ci-cache", push=registry, **values)
    document = json.loads(out)
    assert code == 0 == document["exit_code"]
    assert document["remote"] == {
        "caches.s3": {"ok": True, "problem": None},
        "caches.registry": {"ok": True, "problem": None},
        "caches.local": {"ok": True, "problem": None},
        f"registries.{registry}": {"ok": True, "problem": None},
        "services.app.image": {"ok": True, "problem": None},
    }
