"""scripts/stack.sh up, run twice against the running stack, installs nothing the second time (nor the first:
everything is there) and says what it found; its own copy of the script, state and virtualenv, so the shared
ones are left alone. apt-get and the virtualenv's python are stand-ins that record their calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..conftest import ROOT


def test_up_twice_installs_nothing_the_second_time_and_says_what_it_found(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "stack.sh", root / "scripts" / "stack.sh")
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    calls = tmp_path / "calls"
    calls.touch()
    stubs = tmp_path / "bin"
    venv = tmp_path / "venv"
    for script in (stubs / "apt-get", venv / "bin" / "python"):
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f'#!/bin/sh\necho "{script.name} $*" >>{calls}\n')
        script.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "DOCKERCACHE_STACK_DIR": str(tmp_path / "state"),
        "DOCKERCACHE_VENV": str(venv),
    }

    def up() -> tuple[str, list[str]]:
        before = calls.read_text().splitlines()
        proc = subprocess.run(
            ["bash", str(root / "scripts" / "stack.sh"), "up"], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stderr, calls.read_text().splitlines()[len(before) :]

    _, installed = up()
    assert [c for c in installed if c.startswith("apt-get")] == []  # everything is there: no apt-get
    assert [c.split()[:4] for c in installed] == [["python", "-m", "pip", "install"]] * 2  # a new virtualenv
    second, again = up()
    assert again == [], second
    last = second.strip().splitlines()[-1]
    assert last.startswith("[stack] started: nothing; found: packages, Docker engine, registry localhost:"), last
    assert "S3 (moto)" in last and "base image" in last and str(venv) in last
    assert not list((tmp_path / "state").glob("*.pid"))  # it started nothing: down would stop nothing
