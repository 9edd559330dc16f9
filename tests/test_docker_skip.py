"""dockercache.adapters.docker's registry look-up and retag for skip_unchanged, against a stand-in docker CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from dockercache.adapters.docker import Docker
from dockercache.errors import EnvironmentProblem

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'


@pytest.fixture
def docker(tmp_path: Path) -> tuple[Docker, Path]:
    calls = tmp_path / "calls"
    (tmp_path / "manifest").write_bytes(MANIFEST)
    script = tmp_path / "docker"
    script.write_text(
        f"""#!/bin/sh
echo "$*" >> {calls}
case "$*" in
  "buildx imagetools inspect --raw reg/app:dc-known") printf %s "$(cat {tmp_path / "manifest"})" ;;
  "buildx imagetools inspect --raw "*) echo "ERROR: reg/app:dc-missing: not found" >&2; exit 1 ;;
  "buildx imagetools create"*"--tag reg/app:denied"*) echo "ERROR: push access denied" >&2; exit 1 ;;
  "buildx imagetools create"*) echo "pushed" >&2 ;;
esac
"""
    )
    script.chmod(0o755)
    return Docker(DockerClient(client_call=[str(script)])), calls


def test_a_manifest_digest_is_the_sha256_of_the_raw_bytes_and_none_when_absent(docker: tuple[Docker, Path]) -> None:
    client, calls = docker
    assert client.manifest_digest("reg/app:dc-known") == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert client.manifest_digest("reg/app:dc-missing") is None
    assert calls.read_text().splitlines() == [
        "buildx imagetools inspect --raw reg/app:dc-known",
        "buildx imagetools inspect --raw reg/app:dc-missing",
    ]


def test_a_retag_is_one_imagetools_create_with_every_tag(docker: tuple[Docker, Path]) -> None:
    client, calls = docker
    client.retag("reg/app:dc-known", ["reg/app:abc", "reg/app:latest"])
    assert calls.read_text().splitlines() == [
        "buildx imagetools create --tag reg/app:abc --tag reg/app:latest reg/app:dc-known"
    ]
    with pytest.raises(EnvironmentProblem, match="cannot retag reg/app:dc-known: push access denied"):
        client.retag("reg/app:dc-known", ["reg/app:denied"])
