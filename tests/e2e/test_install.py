"""How the README says dockercache is installed today (no PyPI package yet): ``pip install`` of a checkout's path
and of its git URL, each into a fresh virtualenv, then its ``dockercache`` script runs. ``--no-deps`` keeps it
to dockercache itself (its dependencies are PyPI's own); pip reads the package index for the build backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT


def readme_install_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"pip install (\S+)", text)


@pytest.mark.parametrize("form", ["path", "git"])
def test_the_readmes_install_command_installs_a_working_dockercache(form: str, tmp_path: Path) -> None:
    said = readme_install_lines()
    assert said[0] == "/path/to/dockercache", said  # the quickstart's first word on it: a path, not PyPI
    assert '"git+https://github.com/acme/dockercache"' in said  # the workflow's: a git URL
    assert "no PyPI package yet" in (ROOT / "README.md").read_text()
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    if form == "path":
        source = str(ROOT)
    else:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        source = f"git+file://{ROOT}@{head.stdout.strip()}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # this checkout on the path: "satisfied"
    proc = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "pip"), "install", "-q", "--no-deps", source],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "dockercache"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert version.stdout.startswith("dockercache 0."), version.stderr
