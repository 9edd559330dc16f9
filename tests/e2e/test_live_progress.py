"""End to end: `dockercache build` on a terminal (a pseudo-terminal), off CI, draws the live display: a line
per bake target redrawn in place, collapsing to its cached/total line; no per-step lines. In a pipe: the
per-step lines, no display."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

from dockercache.output.live import CLEAR_LINE

from .conftest import DOCKERCACHE, Project, Stack, base_env, fresh_agent, run_dockercache


def on_a_terminal(project: Project, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in base_env().items() if k != "CI"}  # a laptop: no CI variable
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(DOCKERCACHE), "build", *args], cwd=project.path, env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: the process is done
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(master)
    return code, output.decode(errors="replace")


def test_a_terminal_gets_the_live_display_and_a_pipe_the_step_lines(project: Project, stack: Stack) -> None:
    fresh_agent()
    code, text = on_a_terminal(project, "--service", "ruby")
    assert code == 0, text
    # Off CI the image is loaded, not pushed (--push pushes), and the run says so once.
    assert "not on CI: images are loaded, not pushed (--push to push them)" in text
    assert stack.registry.tags(f"{project.name}/ruby") == []
    assert CLEAR_LINE in text and "\x1b[1F" in text  # one target, redrawn in place
    frames = [re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", line).strip() for line in text.replace("\r", "").split("\n")]
    finished = [line for line in frames if line.startswith("+ ruby-final") or line.startswith("+ ruby ")]
    assert finished and "steps cached" in finished[-1], frames
    assert "DONE " not in text and "CACHED " not in text  # no per-step lines on a terminal
    piped = run_dockercache("build", "--service", "ruby", cwd=project.path, env=base_env())
    assert piped.returncode == 0, piped.stderr
    assert stack.registry.tags(f"{project.name}/ruby") != []  # CI pushes
    assert CLEAR_LINE not in piped.stderr and "CACHED " in piped.stderr
