"""dockercache.adapters.process and docker: running docker, with real child processes (no Docker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dockercache.adapters.docker import parse_platforms
from dockercache.adapters.process import ProcessFailed, stop_process_group, stream_process


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_lines_of_both_streams_then_the_exit_status() -> None:
    lines = list(stream_process(["sh", "-c", "echo out; echo err >&2; echo more"]))
    assert sorted(lines) == ["err\n", "more\n", "out\n"]
    with pytest.raises(ProcessFailed) as failed:
        list(stream_process(["sh", "-c", "echo progress; echo 'ERROR: it broke' >&2; exit 3"]))
    assert failed.value.return_code == 3
    assert failed.value.stderr == "ERROR: it broke\n"


def test_closing_early_stops_the_whole_process_group() -> None:
    """The child and what it started (buildx's own children) stop when the reader stops reading."""
    lines = stream_process(["sh", "-c", "sleep 60 & echo $$ $!; wait"])
    shell, grandchild = (int(p) for p in next(lines).split())
    assert alive(shell) and alive(grandchild)
    started = time.monotonic()
    lines.close()  # type: ignore[attr-defined]
    while (alive(shell) or alive(grandchild)) and time.monotonic() - started < 5:
        time.sleep(0.05)  # SIGKILL is delivered, not yet acted on
    assert not alive(shell) and not alive(grandchild)


def test_a_child_ignoring_sigint_is_killed_after_the_grace_period() -> None:
    process = subprocess.Popen(["sh", "-c", "trap '' INT; sleep 60"], start_new_session=True)
    time.sleep(0.2)  # the trap is set
    started = time.monotonic()
    stop_process_group(process, grace=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert process.returncode == -9


def test_platforms_of_every_node_in_order_each_once() -> None:
    text = """Name:          dc
Driver:        docker-container

Nodes:
Name:      dc0
Status:    running
Platforms: linux/amd64*, linux/amd64/v2, linux/386
Name:      dc1
Platforms: linux/arm64, linux/amd64
"""
    assert parse_platforms(text) == ("linux/amd64", "linux/amd64/v2", "linux/386", "linux/arm64")
    assert parse_platforms("Name: dc\nDriver: docker-container\n") == ()


def test_a_build_does_not_import_python_on_whales_until_it_needs_its_models() -> None:
    """Start-up time: the adapter runs the docker CLI itself for what a build does on its way to the bake;
    python-on-whales (about 0.1-0.3 s to import) is imported by builder listing and Compose only."""
    code = (
        "import sys\n"
        "import dockercache.commands, dockercache.run.runner\n"
        "from dockercache.adapters.docker import Docker\n"
        "docker = Docker()\n"
        "assert docker.docker_cmd == ['docker']\n"
        "assert 'python_on_whales' not in sys.modules, 'imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
