"""dockercache.buildkite: the agent is used only under Buildkite, and through its documented CLI.

Runs the stand-in agent in tests/bin (it keeps its state and every call in $BUILDKITE_AGENT_STUB_DIR).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dockercache.buildkite import Agent, AgentError

from .conftest import ROOT

STUB_BIN = ROOT / "tests" / "bin"


def env_for(state: Path, path: str | None = None, **more: str) -> dict[str, str]:
    """An environment with the stand-in agent first on PATH (and the rest of PATH, for its python3)."""
    return {
        "PATH": path if path is not None else f"{STUB_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "BUILDKITE_AGENT_STUB_DIR": str(state),
        **more,
    }


def calls(state: Path) -> list[dict[str, Any]]:
    log = state / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    found = Agent.detect(env_for(tmp_path, BUILDKITE="true"))
    assert found is not None
    return found


def test_detect_needs_buildkite_true_and_the_agent_on_path(tmp_path: Path) -> None:
    """README: Buildkite steps run only under ``BUILDKITE=true`` AND ``buildkite-agent`` on PATH."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    assert Agent.detect(env_for(tmp_path)) is None  # agent on PATH, BUILDKITE unset
    assert Agent.detect(env_for(tmp_path, BUILDKITE="false")) is None
    assert Agent.detect(env_for(tmp_path, BUILDKITE="1")) is None
    assert Agent.detect(env_for(tmp_path, path=str(empty), BUILDKITE="true")) is None  # no agent on PATH
    found = Agent.detect(env_for(tmp_path, BUILDKITE="true"))
    assert found is not None and found.binary == str(STUB_BIN / "buildkite-agent")
    assert found.env is not None and found.env["BUILDKITE_AGENT_STUB_DIR"] == str(tmp_path)
    assert calls(tmp_path) == []  # detecting runs nothing


def test_meta_data_set_sends_the_value_on_stdin(agent: Agent, tmp_path: Path) -> None:
    """The value never appears in the agent's arguments (it may be long, or sensitive)."""
    agent.meta_data_set("ruby-image", "reg.test/ruby:0123456789ab")
    (call,) = calls(tmp_path)
    assert call == {"argv": ["meta-data", "set", "ruby-image"], "stdin": "reg.test/ruby:0123456789ab"}
    assert json.loads((tmp_path / "meta-data.json").read_text()) == {"ruby-image": "reg.test/ruby:0123456789ab"}


def test_meta_data_get_is_none_when_the_key_was_never_set(agent: Agent, tmp_path: Path) -> None:
    """``meta-data exists`` exits 100 for an unknown key: that is an answer (None), not an error, and no
    ``get`` follows (which would fail)."""
    assert agent.meta_data_get("dockercache-s3-key-ruby") is None
    assert [c["argv"] for c in calls(tmp_path)] == [["meta-data", "exists", "dockercache-s3-key-ruby"]]
    agent.meta_data_set("dockercache-s3-key-ruby", "shop/main")
    assert agent.meta_data_get("dockercache-s3-key-ruby") == "shop/main"
    assert [c["argv"][:2] for c in calls(tmp_path)][-2:] == [["meta-data", "exists"], ["meta-data", "get"]]


def test_a_failing_agent_command_raises_agent_error_naming_it(agent: Agent, tmp_path: Path) -> None:
    with pytest.raises(AgentError, match=r"^buildkite-agent meta-data set exited 1: fatal: value must not be empty$"):
        agent.meta_data_set("ruby-image", "")  # the agent refuses empty values
    broken = Agent(str(tmp_path / "no-such-agent"), env_for(tmp_path))
    with pytest.raises(AgentError, match=r"^buildkite-agent meta-data exists: "):
        broken.meta_data_get("k")
    failing = tmp_path / "failing-agent"
    failing.write_text("#!/bin/sh\necho 'agent: no access token' >&2\nexit 7\n")
    failing.chmod(0o755)
    with pytest.raises(AgentError, match=r"^buildkite-agent annotate --style exited 7: agent: no access token$"):
        Agent(str(failing), env_for(tmp_path)).annotate("body", "info", "dockercache-ruby")


def test_annotate_sends_the_body_on_stdin(agent: Agent, tmp_path: Path) -> None:
    agent.annotate("| stage |", "info", "dockercache-ruby")
    agent.annotate("\nmore", "info", "dockercache-ruby", append=True)
    assert [c["argv"] for c in calls(tmp_path)] == [
        ["annotate", "--style", "info", "--context", "dockercache-ruby"],
        ["annotate", "--style", "info", "--context", "dockercache-ruby", "--append"],
    ]
    annotations = json.loads((tmp_path / "annotations.json").read_text())
    assert annotations == {"dockercache-ruby": {"style": "info", "body": "| stage |\nmore"}}
