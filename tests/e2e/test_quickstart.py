"""The README's quickstart, run as written in a temporary project (a copy of examples/ruby's Dockerfile and
sources, with no dockercache.toml): init, check, plan and build, with caches in the built-in local store.

Two deviations, both said here: the install line (``pip install /path/to/dockercache``) is not run, the
project's virtualenv already has dockercache installed from this checkout and its ``dockercache`` script is the
one used; and after ``dockercache init`` the ``[builder]`` lines it writes commented out are uncommented, as
the README says to do on an engine that cannot pull ``moby/buildkit`` (these machines pull nothing)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from ..conftest import ROOT
from .conftest import DOCKERCACHE, Stack, copy_example, docker, docker_env

MARKED = re.compile(r"<!-- quickstart -->\n```sh\n(.*?)```\n<!-- /quickstart -->", re.DOTALL)


def quickstart() -> list[list[str]]:
    """The README's quickstart commands, each split as the shell would (comments dropped)."""
    match = MARKED.search((ROOT / "README.md").read_text())
    assert match, "README.md has no <!-- quickstart --> sh block"
    return [
        shlex.split(line, comments=True) for line in match.group(1).splitlines() if shlex.split(line, comments=True)
    ]


def laptop_env(cache: Path) -> dict[str, str]:
    """A laptop's environment: no CI variables (so the build loads its image and writes the local store)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BUILDKITE", "DOCKERCACHE_", "GITHUB_", "GITLAB_", "CI_")) and k != "CI"
    }
    env["DOCKERCACHE_CACHE_DIR"] = str(cache)  # the built-in local store, kept in the test's directory
    return docker_env(env)


def test_the_readme_quickstart_builds_a_project_of_ones_own(stack: Stack, tmp_path: Path) -> None:
    commands = quickstart()
    assert [c[:2] for c in commands] == [
        ["pip", "install"],
        ["cd", "your-project"],
        ["dockercache", "init"],
        ["dockercache", "check"],
        ["dockercache", "plan"],
        ["dockercache", "build"],
    ], commands
    assert len(commands) <= 6  # about five commands, the install included

    project = tmp_path / "your-project"
    copy_example(project, f"q{tmp_path.name[-12:]}")
    for name in ("dockercache.toml", "compose.yaml", "tasks.py"):
        (project / name).unlink(missing_ok=True)
    env = laptop_env(tmp_path / "cache")
    cwd = tmp_path
    outputs = []
    for argv in commands:
        if argv[0] == "pip":  # installed already: the virtualenv's dockercache, from this checkout
            assert DOCKERCACHE.is_file()
            continue
        if argv[0] == "cd":
            cwd = cwd / argv[1]
            continue
        proc = subprocess.run(
            [str(DOCKERCACHE), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert proc.returncode == 0, f"{shlex.join(argv)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
        if argv[1] == "init":
            config = project / "dockercache.toml"
            text = config.read_text()
            assert "[services.your-project]" in text and '# name = "default"' in text
            config.write_text(
                text.replace("# [builder]\n", "[builder]\n")
                .replace('# name = "default"\n', 'name = "default"\n')
                .replace('# driver = "docker"\n', 'driver = "docker"\n')
            )
    init, check, plan, build = outputs
    assert "wrote dockercache.toml" in init
    assert "ok (1 service)" in check
    assert "your-project" in plan and "docker buildx bake" in plan
    assert "your-project: 3 stages" in build, build
    assert list((tmp_path / "cache").rglob("index.json")), "nothing was cached in the local store"
    docker("image", "rm", "--force", "your-project:dev", check=False)
