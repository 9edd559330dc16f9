"""Hardening, group secrets: with AWS keys, a registry password and a token-like build arg set, no secret value
appears in stdout, stderr, the plan, --json output, Buildkite meta-data or annotations, or the arguments of
any process dockercache starts (sampled from /proc while the build runs)."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..e2e.conftest import (
    ACCESS_KEY,
    DOCKERCACHE,
    SECRET_KEY,
    S3Project,
    Stack,
    free_port,
    s3_config,
    sample_cmdlines,
)

pytestmark = [pytest.mark.e2e, pytest.mark.hardening("secrets")]

PASSWORD = "reg-Pa55w0rd-" + "7c1e9a"
USER = "ci-bot"
NPM_TOKEN = "npm_" + "q8Zr3uT1wP0sYk2m"


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    root = tmp_path / "auth-registry"
    root.mkdir()
    htpasswd = subprocess.run(["htpasswd", "-iBn", USER], input=PASSWORD, capture_output=True, text=True, check=True)
    (root / "htpasswd").write_text(htpasswd.stdout)
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
        f"auth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://localhost:{port}/v2/", timeout=1)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                break
        except OSError:
            time.sleep(0.1)
    yield f"localhost:{port}"
    process.terminate()
    process.wait(10)


def test_no_secret_anywhere(s3_project: S3Project, stack: Stack, auth_registry: str, tmp_path: Path) -> None:
    config = s3_config(stack, s3_project.name, s3_project.bucket).replace(
        f'image = "{stack.host}/', f'image = "{auth_registry}/'
    )
    config = f'[registries."{auth_registry}"]\nusername = "{USER}"\npassword = "${{REGISTRY_PASSWORD}}"\n' + config
    # A token passed as a build arg travels in the bake file, never in a process's arguments.
    config = config.replace("args = {", 'args = { NPM_TOKEN = "${NPM_TOKEN}", ')
    s3_project.write_config(config)
    env = s3_project.env(REGISTRY_PASSWORD=PASSWORD, NPM_TOKEN=NPM_TOKEN, DOCKER_CONFIG=str(tmp_path / "docker-config"))
    s3_project.fresh_agent()
    stop = threading.Event()
    seen: list[str] = []
    sampler = threading.Thread(target=sample_cmdlines, args=(stop, seen))
    sampler.start()
    try:
        build = subprocess.run(
            [str(DOCKERCACHE), "build", "--json"],
            cwd=s3_project.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        stop.set()
        sampler.join()
    assert build.returncode == 0, build.stderr
    assert f"logging in to {auth_registry} as {USER}" in build.stderr
    assert any("buildx bake" in line for line in seen), "the sampler must have seen the build running"
    outputs: list[str] = [build.stdout, build.stderr]
    for args in (["plan"], ["plan", "--json"], ["check"], ["cache.list"], ["cache.verify"]):
        proc = subprocess.run(
            [str(DOCKERCACHE), *args],
            cwd=s3_project.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]
    outputs += [p.read_text() for p in s3_project.stub_dir.iterdir()]  # meta-data, annotations, calls
    for secret in (PASSWORD, SECRET_KEY, ACCESS_KEY, NPM_TOKEN):
        for text in outputs:
            assert secret not in text
        for cmdline in seen:
            assert secret not in cmdline, cmdline
    assert f"{USER}@{auth_registry} (password on stdin)" in outputs[2]


def test_a_secret_in_a_build_arg_is_redacted_from_output(s3_project: S3Project, stack: Stack) -> None:
    """Build args are visible in `docker history`, so use --secret for real; dockercache still masks a
    value named like a secret wherever it would print it."""
    s3_project.write_config(
        s3_config(stack, s3_project.name, s3_project.bucket).replace(
            "args = {", 'args = { NPM_TOKEN = "${NPM_TOKEN}", '
        )
    )
    env: dict[str, Any] = {"NPM_TOKEN": "npm_abcdefghijklmnop"}
    for args in (["plan", "--bake"], ["plan", "--json"]):
        plan = s3_project.run(*args, **env)
        assert plan.returncode == 0, plan.stderr
        assert "npm_abcdefghijklmnop" not in plan.stdout and '"NPM_TOKEN": "[redacted]"' in plan.stdout


API_KEY = "apikeySECRET456xyzQ9wLmN3pR7tV2bC8dF0gH"  # 40 characters, named like a secret (MY_API_KEY)


def pieces(secret: str, text: str) -> list[str]:
    """The 6-character pieces of ``secret`` that ``text`` shows (a longer piece shows one of them)."""
    return [secret[i : i + 6] for i in range(len(secret) - 5) if secret[i : i + 6] in text]


def test_a_secret_across_the_cut_of_a_long_step_line_shows_nowhere(s3_project: S3Project, stack: Stack) -> None:
    """BuildKit writes a build arg's value into a step's name (``RUN echo "... $MY_API_KEY"``). The plain
    progress line is cut to 110 characters: cut before it was masked, 36 of the 40 characters were printed.

    One step puts the value across that cut (whichever target's name prefixes it: ``[base 4/5]`` to
    ``[ruby-final base 4/5]``); a second, failing, puts it across the 300-character cut of the annotation's
    error. No 6 characters of it appear in stdout, stderr, --json, the annotation or the meta-data."""
    dockerfile = s3_project.path / "Dockerfile"
    padding = "-".join(["padding"] * 9)[:70]
    steps = (
        "ARG MY_API_KEY\n"
        f'RUN echo "{padding} $MY_API_KEY and a tail long enough to be cut after masking"\n'
        f'RUN echo "{"-".join(["more"] * 60)[:255]} $MY_API_KEY and the rest" && false\n'
    )
    dockerfile.write_text(dockerfile.read_text().replace("WORKDIR /app\n", f"WORKDIR /app\n{steps}", 1))
    config = s3_config(stack, s3_project.name, s3_project.bucket)
    s3_project.write_config(config.replace("args = {", 'args = { MY_API_KEY = "${MY_API_KEY}", '))
    s3_project.fresh_agent()
    build = s3_project.build(MY_API_KEY=API_KEY)
    assert build.returncode == 1, build.stderr  # the second step fails, as meant
    document = build.json
    assert "exit code: 1" in (document["error"] or ""), document["error"]
    cut = [line for line in build.stderr.splitlines() if padding in line and line.endswith("...")]
    assert cut, build.stderr  # the step's line was shortened: the cut this test is about happened
    annotations = s3_project.annotations()
    assert annotations and any("failed: `" in a["body"] for a in annotations.values()), annotations
    recorded = "".join(p.read_text() for p in s3_project.stub_dir.iterdir())
    for where, text in (("stdout", build.stdout), ("stderr", build.stderr), ("agent", recorded)):
        assert pieces(API_KEY, text) == [], (where, pieces(API_KEY, text))
