"""End-to-end: Buildkite steps with an agent that fails (the stand-in's contract, but every call exits 1)."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import S3Project


def test_a_failing_agent_is_a_warning_never_a_failed_build(s3_project: S3Project, tmp_path: Path) -> None:
    broken = tmp_path / "broken-agent"
    broken.mkdir()
    calls = tmp_path / "agent-calls"
    agent = broken / "buildkite-agent"
    agent.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho "fatal: could not reach the agent API" >&2\nexit 1\n')
    agent.chmod(0o755)
    s3_project.fresh_agent()
    result = s3_project.build(PATH=f"{broken}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert result.json["services"][0]["status"] == "ok"
    commands = calls.read_text().splitlines()
    # It was asked for the recorded key, to set meta-data and to annotate; each failure is one warning line.
    assert any(c.startswith("meta-data exists") for c in commands), commands
    assert any(c.startswith("meta-data set") for c in commands), commands
    assert any(c.startswith("annotate") for c in commands), commands
    warnings = [line for line in result.stderr.splitlines() if "could not reach the agent API" in line]
    assert warnings and all(line.startswith("dockercache: warning: buildkite-agent") for line in warnings), warnings
    assert result.stage("ruby", "final")["s3"]["saved"] == "example/main/ruby/final"  # the build's work stands
