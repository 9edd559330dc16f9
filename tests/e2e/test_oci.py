"""dockercache.adapters.oci against real registries: the stack's (distribution, deletes enabled), one with deletes
disabled, and one with htpasswd logins whose credentials come from a Docker configuration's ``auths``."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from dockercache.adapters.oci import OCI_MANIFEST, Registry, RegistryError, sha256_digest

from .conftest import Stack, free_port

USER = "oci-user"
PASSWORD = "oci-Pa55word-e2e"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def unique_repo() -> str:
    return f"dockercache-oci/t{uuid.uuid4().hex[:10]}"


def image(name: str) -> tuple[bytes, bytes, bytes]:
    """A config blob, a layer blob and an OCI image manifest naming both, written as no serialiser would."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    layer = f"not really a tar: {name}".encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256_digest(config.encode()), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": sha256_digest(layer), "size": len(layer)}],
    }
    return config.encode(), layer, (json.dumps(manifest, indent=3) + "\n\n").encode()


def push(registry: Registry, repo: str, tag: str) -> tuple[bytes, bytes, bytes, str]:
    config, layer, manifest = image(repo)
    for blob in (config, layer):
        registry.put_blob(repo, sha256_digest(blob), blob)
    return config, layer, manifest, registry.put_manifest(repo, tag, manifest, OCI_MANIFEST)


def test_push_copy_inspect_and_delete(stack: Stack) -> None:
    registry = Registry(stack.host)
    repo = unique_repo()
    assert registry.get_manifest(repo, "first") is None
    assert registry.tags(repo) == []
    assert registry.base_url == f"http://{stack.host}"  # loopback without TLS: plain HTTP after one handshake

    config, layer, body, digest = push(registry, repo, "first")
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert registry.head_blob(repo, sha256_digest(config)) == len(config)
    assert registry.head_blob(repo, sha256_digest(layer)) == len(layer)

    manifest = registry.get_manifest(repo, "first")
    assert manifest is not None
    assert (manifest.body, manifest.media_type, manifest.digest) == (body, OCI_MANIFEST, digest)
    assert stack.registry.manifest(repo, "first")[0] == digest  # as the registry itself names it

    assert registry.put_manifest(repo, "second", manifest.body, manifest.media_type) == digest  # a copy
    copy = registry.get_manifest(repo, "second")
    assert copy is not None and copy.body == body and copy.digest == digest
    assert registry.get_manifest(repo, digest) == manifest
    assert sorted(registry.tags(repo)) == ["first", "second"]
    assert sorted(stack.registry.tags(repo)) == ["first", "second"]

    assert registry.delete_blob(repo, sha256_digest(layer)) is True
    assert registry.head_blob(repo, sha256_digest(layer)) is None
    assert registry.head_blob(repo, sha256_digest(config)) == len(config)
    assert registry.delete_blob(repo, sha256_digest(layer)) is True  # gone already: still gone

    assert registry.delete_manifest(repo, digest) is True
    assert registry.get_manifest(repo, "first") is None
    assert registry.get_manifest(repo, "second") is None
    assert registry.get_manifest(repo, digest) is None
    assert registry.tags(repo) == []
    assert registry.delete_blob(repo, sha256_digest(config)) is True  # leave the stack's registry as it was


def test_a_manifest_naming_a_missing_blob_is_refused_in_one_line(stack: Stack) -> None:
    registry = Registry(stack.host)
    repo = unique_repo()
    _, _, body = image(repo)
    with pytest.raises(RegistryError) as caught:
        registry.put_manifest(repo, "broken", body, OCI_MANIFEST)
    assert str(caught.value).startswith(
        f"registry {stack.host}, repository {repo}: PUT manifest broken: HTTP 400 MANIFEST_BLOB_UNKNOWN"
    )
    assert "\n" not in str(caught.value)


def start_registry(root: Path, *, delete: bool = True, htpasswd: Path | None = None) -> Generator[str, None, None]:
    """A registry of this test's own on a free port: its host, while the generator is open."""
    port = free_port()
    root.mkdir()
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
        f"  delete:\n    enabled: {'true' if delete else 'false'}\n{auth}http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the test's registry did not start")
        yield f"localhost:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., str]]:
    running: list[Generator[str, None, None]] = []

    def start(name: str, *, delete: bool = True, htpasswd: Path | None = None) -> str:
        generator = start_registry(tmp_path / name, delete=delete, htpasswd=htpasswd)
        running.append(generator)
        return next(generator)

    yield start
    for generator in running:
        generator.close()


def test_a_registry_without_deletes_says_no(registry_factory: Callable[..., str]) -> None:
    host = registry_factory("no-deletes", delete=False)
    registry = Registry(host)
    repo = unique_repo()
    _, layer, _, digest = push(registry, repo, "kept")
    assert registry.delete_blob(repo, sha256_digest(layer)) is False
    assert registry.delete_manifest(repo, digest) is False
    assert registry.head_blob(repo, sha256_digest(layer)) == len(layer)
    assert registry.tags(repo) == ["kept"]


@pytest.fixture
def auth_registry(registry_factory: Callable[..., str], tmp_path: Path) -> str:
    htpasswd = tmp_path / "htpasswd"
    line = subprocess.run(["htpasswd", "-iBn", USER], input=PASSWORD, capture_output=True, text=True, check=True)
    htpasswd.write_text(line.stdout)
    return registry_factory("auth", htpasswd=htpasswd)


def docker_config(directory: Path, host: str, user: str, password: str) -> dict[str, str]:
    directory.mkdir()
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {f"http://{host}": {"auth": encoded}}}))
    return {"DOCKER_CONFIG": str(directory), "HOME": str(directory)}


def test_basic_logins_from_docker_config_auths(auth_registry: str, tmp_path: Path) -> None:
    environ = docker_config(tmp_path / "docker", auth_registry, USER, PASSWORD)
    registry = Registry.from_docker_config(auth_registry, environ)
    repo = unique_repo()
    _, layer, body, digest = push(registry, repo, "first")
    manifest = registry.get_manifest(repo, "first")
    assert manifest is not None and (manifest.body, manifest.digest) == (body, digest)
    assert registry.put_manifest(repo, "second", manifest.body, manifest.media_type) == digest
    assert sorted(registry.tags(repo)) == ["first", "second"]
    assert registry.head_blob(repo, sha256_digest(layer)) == len(layer)
    assert registry.delete_manifest(repo, digest) is True
    assert registry.tags(repo) == []

    with pytest.raises(urllib.error.HTTPError) as anonymous:  # the registry really wants a login
        urllib.request.urlopen(f"http://{auth_registry}/v2/{repo}/tags/list", timeout=5)
    assert anonymous.value.code == 401


def test_refused_or_missing_credentials_are_one_line_without_the_password(auth_registry: str, tmp_path: Path) -> None:
    environ = docker_config(tmp_path / "docker", auth_registry, USER, "wrong-" + PASSWORD)
    with pytest.raises(RegistryError) as refused:
        Registry.from_docker_config(auth_registry, environ).tags(unique_repo())
    message = str(refused.value)
    assert (
        message.startswith(f"registry {auth_registry}, repository dockercache-oci/")
        and "HTTP 401 UNAUTHORIZED" in message
    )
    assert PASSWORD not in message and base64.b64encode(f"{USER}:wrong-{PASSWORD}".encode()).decode() not in message

    with pytest.raises(RegistryError, match=f"HTTP 401 UNAUTHORIZED .*; no credentials known for {auth_registry}$"):
        Registry.from_docker_config(auth_registry, {"DOCKER_CONFIG": str(tmp_path / "empty")}).tags(unique_repo())
