"""The Buildkite plugin's hook (hooks/command), tested with bats (tests/bats): run here so that the one test
command covers it. Without bats: skipped on a laptop, a failure in CI (scripts/stack.sh installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_hook_bats() -> None:
    bats = shutil.which("bats")
    if bats is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bats is not installed (bash scripts/stack.sh up installs Debian's bats)")
        pytest.skip("bats is not installed (bash scripts/stack.sh up installs Debian's bats)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}
    env["DOCKERCACHE_TEST_PYTHON"] = sys.executable
    proc = subprocess.run(
        [bats, "--tap", str(ROOT / "tests" / "bats")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
