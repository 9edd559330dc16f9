"""The run's Docker configuration: the user's own plus the run's logins, which nothing else sees."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from dockercache.adapters.dockerconfig import run_config
from dockercache.errors import EnvironmentProblem


def user_config(tmp_path: Path, document: dict[str, object]) -> Path:
    home = tmp_path / "docker"
    (home / "buildx" / "instances").mkdir(parents=True)
    (home / "buildx" / "instances" / "ci").write_text("{}")
    (home / "cli-plugins").mkdir()
    (home / "config.json").write_text(json.dumps(document))
    return home


def ask(env: dict[str, str], helper: str, host: str, command: str = "get") -> subprocess.CompletedProcess[str]:
    """Run a credential helper as the Docker CLI does: the command as argument, the server on stdin."""
    return subprocess.run(
        [f"docker-credential-{helper}", command],
        input=host,
        capture_output=True,
        text=True,
        env={"PATH": env["PATH"]},
        check=False,
    )


def test_the_runs_logins_are_credential_helpers_beside_the_users_own(tmp_path: Path) -> None:
    """A credsStore (Docker Desktop, pass) answers every host without a helper: so each endpoint gets a helper,
    and the user's logins, helpers, builders and plugins stay as they are."""
    document = {"auths": {"ghcr.io": {"auth": "dXNlcjpwdw=="}}, "credsStore": "desktop", "credHelpers": {"x.io": "ecr"}}
    home = user_config(tmp_path, document)
    secret = "s3cr3t-of-the-run-0123456789"
    with run_config({"127.0.0.1:47310": ("dockercache", secret)}, {"DOCKER_CONFIG": str(home), "PATH": "/bin"}) as env:
        config = Path(env["DOCKER_CONFIG"])
        written = json.loads((config / "config.json").read_text())
        assert written["auths"] == document["auths"] and written["credsStore"] == "desktop"
        helper = written["credHelpers"]["127.0.0.1:47310"]
        assert written["credHelpers"]["x.io"] == "ecr"
        answer = ask(env, helper, "127.0.0.1:47310")
        assert answer.returncode == 0 and json.loads(answer.stdout) == {
            "ServerURL": "127.0.0.1:47310",
            "Username": "dockercache",
            "Secret": secret,
        }
        assert ask(env, helper, "127.0.0.1:47310", "list").returncode != 0  # nothing but get
        assert (config / "buildx" / "instances" / "ci").read_text() == "{}"  # the same builders
        assert (config / "cli-plugins").resolve() == (home / "cli-plugins").resolve()
        assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((config / "config.json").stat().st_mode) == 0o600
        assert secret not in json.dumps(env)  # never in the environment (nor, so, in a process's arguments)
        assert env["PATH"].endswith(":/bin")
    assert not config.exists()  # gone with the run
    assert json.loads((home / "config.json").read_text()) == document  # the user's own never changed


def test_without_logins_nothing_is_made(tmp_path: Path) -> None:
    with run_config({}, {"DOCKER_CONFIG": str(tmp_path / "none")}) as env:
        assert env == {}


def test_no_user_configuration_at_all(tmp_path: Path) -> None:
    with run_config({"127.0.0.1:1": ("u", "secret-value")}, {"HOME": str(tmp_path), "PATH": "/bin"}) as env:
        written = json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text())
        assert list(written) == ["credHelpers"] and list(written["credHelpers"]) == ["127.0.0.1:1"]


def test_an_unreadable_user_configuration_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "docker"
    home.mkdir()
    (home / "config.json").write_text("{not json")
    with (
        pytest.raises(EnvironmentProblem, match=r"config.json: cannot read Docker's configuration"),
        run_config({"127.0.0.1:1": ("u", "secret-value")}, {"DOCKER_CONFIG": str(home)}),
    ):
        pass


def test_several_endpoints_each_get_their_own_helper(tmp_path: Path) -> None:
    logins = {"127.0.0.1:1": ("dockercache", "first-secret"), "127.0.0.1:2": ("dockercache", "second-secret")}
    with run_config(logins, {"HOME": str(tmp_path), "PATH": os.defpath}) as env:
        helpers = json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text())["credHelpers"]
        answers = {host: json.loads(ask(env, helper, host).stdout)["Secret"] for host, helper in helpers.items()}
        assert answers == {"127.0.0.1:1": "first-secret", "127.0.0.1:2": "second-secret"}
