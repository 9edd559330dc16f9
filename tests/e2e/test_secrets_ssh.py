"""End-to-end: BuildKit secrets and SSH agents reach ``RUN --mount=type=secret|ssh`` steps, and nothing else.

A secret's value goes to BuildKit from the environment or a file only: bake's ``secret`` field names the
variable or the path (``id=npm,env=NPM_AUTH``), so no process argument, plan, bake file, ``--json`` document
or line of output holds it. A step that prints it anyway is masked by the run's redactor, which knows the
values of the service's secrets whatever their variables are called.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Result, Stack, base_env, docker, run_dockercache, sample_cmdlines

# Variables named like nothing secret: only the secrets' own entries tell the redactor about them.
NPM_VALUE = "npm_" + "Zq81xTv0pLr7"
NETRC_VALUE = "machine example.com login ci password " + "nEtRc-9f3k2"
COMMIT12 = "0123456789ab"


def make_project(root: Path, stack: Stack, dockerfile: str, service: str) -> Path:
    """A one-stage project of this test's own (an ARG makes its steps miss any build cache of other tests)."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}} AS final\nARG TEST_RUN\n{dockerfile}")
    (root / "dockercache.toml").write_text(
        f"""
[builder]
name = "default"
driver = "docker"

[services.app]
args = {{ BASE_IMAGE = "{stack.base_image}", TEST_RUN = "{uuid.uuid4().hex}" }}
{service}
"""
    )
    return root


def image_file(tag: str, path: str) -> str:
    return docker("run", "--rm", "--entrypoint", "cat", tag, path).stdout.strip()


SECRET_STEPS = (
    "RUN --mount=type=secret,id=npm,required=true sha256sum /run/secrets/npm | cut -d' ' -f1 > /npm.sha\n"
    "RUN --mount=type=secret,id=netrc,required=true sha256sum /run/secrets/netrc | cut -d' ' -f1 > /netrc.sha\n"
)
SECRETS = 'secrets = { npm = { env = "NPM_AUTH" }, netrc = { file = "secrets/netrc" } }'


@pytest.mark.e2e
def test_a_secret_reaches_its_run_step_and_no_argument_plan_or_output(stack: Stack, tmp_path: Path) -> None:
    root = make_project(tmp_path / "app", stack, SECRET_STEPS, SECRETS)
    (root / "secrets").mkdir()
    (root / "secrets" / "netrc").write_text(NETRC_VALUE)
    env = base_env(NPM_AUTH=NPM_VALUE)
    tag = f"app:{COMMIT12}"
    docker("image", "rm", "--force", tag, check=False)
    stop = threading.Event()
    seen: list[str] = []
    sampler = threading.Thread(target=sample_cmdlines, args=(stop, seen))
    sampler.start()
    try:
        build = run_dockercache("build", "--json", cwd=root, env=env)
    finally:
        stop.set()
        sampler.join()
    assert build.returncode == 0, build.stderr
    assert any("buildx bake" in line for line in seen), "the sampler must have seen the build running"
    # The step saw the values: the image holds their hashes.
    assert image_file(tag, "/npm.sha") == hashlib.sha256(NPM_VALUE.encode()).hexdigest()
    assert image_file(tag, "/netrc.sha") == hashlib.sha256(NETRC_VALUE.encode()).hexdigest()

    plans = {
        args: run_dockercache(*args, cwd=root, env=env) for args in (("plan",), ("plan", "--json"), ("plan", "--bake"))
    }
    for result in plans.values():
        assert result.returncode == 0, result.stderr
    secret_field = ["id=npm,env=NPM_AUTH", f"id=netrc,src={(root / 'secrets' / 'netrc').resolve()}"]
    assert plans["plan", "--bake"].json["target"]["app-final"]["secret"] == secret_field
    (target,) = plans["plan", "--json"].json["services"][0]["targets"]
    assert target["secrets"] == secret_field
    outputs = [build.stdout, build.stderr, *(r.stdout + r.stderr for r in plans.values())]
    for value in (NPM_VALUE, NETRC_VALUE):
        for text in outputs:
            assert value not in text
        for cmdline in seen:
            assert value not in cmdline, cmdline


@pytest.mark.e2e
def test_a_step_that_prints_a_secret_shows_it_masked(stack: Stack, tmp_path: Path) -> None:
    """A failing step's output is printed; the secret's value in it (from a variable not named like a secret,
    and from a file) is masked."""
    steps = (
        "RUN --mount=type=secret,id=npm --mount=type=secret,id=netrc cat /run/secrets/npm /run/secrets/netrc; exit 3\n"
    )
    root = make_project(tmp_path / "app", stack, steps, SECRETS)
    (root / "secrets").mkdir()
    (root / "secrets" / "netrc").write_text(NETRC_VALUE + "\n")
    env = base_env(NPM_AUTH=NPM_VALUE)
    for args in (("build",), ("build", "--json")):
        build = run_dockercache(*args, cwd=root, env=env)
        assert build.returncode == 1, build.stderr
        assert "[redacted]" in build.stderr, build.stderr
        for value in (NPM_VALUE, NETRC_VALUE):
            assert value not in build.stdout + build.stderr


@pytest.mark.e2e
def test_an_unset_secret_variable_or_missing_file_is_exit_2_before_docker_runs(stack: Stack, tmp_path: Path) -> None:
    root = make_project(tmp_path / "app", stack, SECRET_STEPS, SECRETS)
    missing_file = run_dockercache("build", cwd=root, env=base_env(NPM_AUTH=NPM_VALUE))
    assert missing_file.returncode == 2
    assert missing_file.stderr.strip() == (
        f"dockercache: error: dockercache.toml: services.app.secrets.netrc.file: {root.resolve() / 'secrets/netrc'} "
        "does not exist or is not a file (the value of secret 'netrc')"
    )
    (root / "secrets").mkdir()
    (root / "secrets" / "netrc").write_text(NETRC_VALUE)
    unset = run_dockercache("build", cwd=root, env=base_env())
    assert unset.returncode == 2
    assert unset.stderr.strip() == (
        "dockercache: error: dockercache.toml: services.app.secrets.npm.env: $NPM_AUTH is not set (it holds the "
        "value of secret 'npm')"
    )


# ------------------------------------------------------------------------------------------------- ssh

SSH_STEP = 'RUN --mount=type=ssh,required=true test -S "$SSH_AUTH_SOCK" && echo forwarded > /ssh\n'


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[str]:
    """A real ssh-agent holding a fresh key; its socket."""
    if shutil.which("ssh-agent") is None:
        pytest.skip("ssh-agent is not installed (the bake field and the error are tested without it)")
    socket = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(socket), "-s"], capture_output=True, text=True, check=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subprocess.run(
            ["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(socket)}, capture_output=True, check=True
        )
        yield str(socket)
    finally:
        os.kill(pid, signal.SIGTERM)


@pytest.mark.e2e
def test_ssh_default_forwards_the_agent_to_its_run_step(stack: Stack, tmp_path: Path, ssh_agent: str) -> None:
    root = make_project(tmp_path / "app", stack, SSH_STEP, 'ssh = ["default"]')
    tag = f"app:{COMMIT12}"
    docker("image", "rm", "--force", tag, check=False)
    env = base_env(SSH_AUTH_SOCK=ssh_agent)
    plan = run_dockercache("plan", "--bake", cwd=root, env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.json["target"]["app-final"]["ssh"] == ["default"]
    build = run_dockercache("build", "--json", cwd=root, env=env)
    assert build.returncode == 0, build.stderr
    assert image_file(tag, "/ssh") == "forwarded"


@pytest.mark.e2e
def test_ssh_default_without_an_agent_is_exit_2_before_docker_runs(stack: Stack, tmp_path: Path) -> None:
    """Also where ssh-agent is not installed: the bake field, and the error when $SSH_AUTH_SOCK is unset."""
    root = make_project(tmp_path / "app", stack, SSH_STEP, 'ssh = ["default", "key=id_test"]')
    (root / "id_test").write_text("not a real key\n")
    plan = run_dockercache("plan", "--bake", cwd=root, env=base_env(SSH_AUTH_SOCK=str(root / "Dockerfile")))
    assert plan.returncode == 0, plan.stderr
    assert plan.json["target"]["app-final"]["ssh"] == ["default", f"key={root.resolve() / 'id_test'}"]
    env = {k: v for k, v in base_env().items() if k != "SSH_AUTH_SOCK"}
    for command in ("check", "build"):
        result: Result = run_dockercache(command, cwd=root, env=env)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "dockercache: error: dockercache.toml: services.app.ssh[0]: 'default' forwards the SSH agent, but "
            "$SSH_AUTH_SOCK is not set (start ssh-agent, or give ID=PATH to a key or socket)"
        )
