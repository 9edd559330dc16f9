"""dockercache.adapters.docker's ``docker login``: its output never reaches stdout (a fake ``docker``, no daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest
from python_on_whales import DockerClient

from dockercache.adapters.docker import Docker
from dockercache.errors import EnvironmentProblem

FAKE = """#!/bin/sh
read -r password
echo "$*" > "$(dirname "$0")/args"
if [ "$password" = right-password ]; then
  echo "WARNING! Your password will be stored unencrypted." >&2
  echo "Login Succeeded"
else
  echo "Error response from daemon: login attempt to http://$5/v2/ failed with status: 401 Unauthorized" >&2
  exit 1
fi
"""


@pytest.fixture
def docker(tmp_path: Path) -> Docker:
    fake = tmp_path / "docker"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return Docker(DockerClient(client_call=[str(fake)]))


def test_login_succeeded_never_reaches_stdout(
    docker: Docker, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`docker login` prints "Login Succeeded" on stdout, which is the JSON document's under --json."""
    docker.login("registry.example:5000", "ci-bot", "right-password")
    out, err = capfd.readouterr()
    assert out == ""
    assert err == "WARNING! Your password will be stored unencrypted.\n"  # Docker's own warning is kept
    args = (tmp_path / "args").read_text().split()
    assert args == ["login", "--password-stdin", "--username", "ci-bot", "registry.example:5000"]


def test_a_refused_login_says_why(docker: Docker, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(EnvironmentProblem) as refused:
        docker.login("registry.example:5000", "ci-bot", "wrong-password")
    assert str(refused.value) == (
        "docker login to registry.example:5000 failed: Error response from daemon: login attempt to "
        "http://registry.example:5000/v2/ failed with status: 401 Unauthorized"
    )
    assert capfd.readouterr().out == ""
