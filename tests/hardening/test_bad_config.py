"""Hardening, group bad-config: every broken dockercache.toml and Compose input under tests/fixtures/bad/.

Each must exit 2 with one line naming the file and the key, print no traceback, and run no Docker command
(reading a Compose file with `docker compose config` is the one exception: it builds and pushes nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import BAD, BIN, expectation
from ..conftest import run_cli as run


@pytest.mark.hardening("bad-config")
@pytest.mark.parametrize("command", ["check", "build"])
@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_exits_2_with_one_line_and_no_docker(
    path: Path, command: str, docker_shim: tuple[Path, Path]
) -> None:
    proc, calls = run([str(BIN / "dockercache"), command, "--config", path.name], path.parent, *docker_shim)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dockercache: error: ")
    assert path.name in lines[0] and expectation(path) in lines[0]
    assert all(call.startswith("compose ") and call.endswith(" config --format json") for call in calls), calls
    assert proc.stdout == ""


def test_at_least_forty_bad_inputs() -> None:
    assert len(BAD) >= 40
    assert sum(1 for p in BAD if p.stem.startswith("compose")) >= 5
