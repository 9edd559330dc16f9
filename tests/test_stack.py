"""scripts/stack.sh down: it stops what up started, by the process id it recorded, and nothing else.

(tests/e2e/test_stack.py runs ``up`` twice against the running stack: the second run installs nothing.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import ROOT

STACK = ROOT / "scripts" / "stack.sh"


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat, as stack.sh records it beside the id."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_down_stops_only_the_processes_up_recorded_by_pid_never_by_name(tmp_path: Path) -> None:
    ours = subprocess.Popen(["sleep", "300"])  # stands for the registry up started
    theirs = subprocess.Popen(["sleep", "300"])  # the same command line, started by someone else
    reused = subprocess.Popen(["sleep", "300"])  # a recorded id now held by another process
    try:
        (tmp_path / "registry.pid").write_text(f"{ours.pid} {start_time(ours.pid)}\n")
        (tmp_path / "s3.pid").write_text(f"{reused.pid} 1\n")
        env = {**os.environ, "DOCKERCACHE_STACK_DIR": str(tmp_path)}
        proc = subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == f"[stack] stopped: registry (pid {ours.pid})\n"
        assert ours.wait(timeout=10) is not None
        assert theirs.poll() is None and reused.poll() is None
        assert not list(tmp_path.glob("*.pid"))
        again = subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=60)
        assert again.stderr.startswith("[stack] stopped: nothing")
    finally:
        for process in (ours, theirs, reused):
            process.kill()
            process.wait()


def test_a_static_busybox_needs_no_apt_get_under_pipefail() -> None:
    """`ldd` exits 1 on a static binary: read under pipefail, its status made every run call apt-get."""
    text = STACK.read_text()
    assert "ldd /bin/busybox 2>&1 | grep" not in text
    assert "pkill" not in text and "/var/run/docker.pid" not in text
