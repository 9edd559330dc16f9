"""dockercache.adapters.buildkite: the agent is used only under Buildkite, and through its documented CLI.

Runs the stand-in agent in tests/bin (it keeps its state and every call in $BUILDKITE_AGENT_STUB_DIR).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dockercache.adapters.buildkite import Agent, AgentError, annotation_context, job_log_url
from dockercache.model.metadata import compose_plugin_key, image_metadata_key

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


# ------------------------------------------------------------------- the docker-compose plugin's meta-data key
# buildkite-plugins/docker-compose-buildkite-plugin, lib/metadata.bash ``prebuilt_image_meta_data_key`` (commit
# 69bd3fa5a94a9caacff1b6d90c2c7001fdf61e3a); its tests/metadata.bats checks the same cases.

PLAIN = "docker-compose-plugin-built-image-tag-ruby"


@pytest.mark.parametrize(
    ("files", "key"),
    [
        pytest.param((), PLAIN, id="the plugin's default file (config unset)"),
        pytest.param(("docker-compose.yml",), PLAIN, id="the default file given explicitly"),
        pytest.param(("docker-compose.ci.yml",), f"{PLAIN}-docker-compose.ci.yml", id="one other file"),
        pytest.param(
            ("docker-compose.yml", "docker-compose.ci.yml"),
            f"{PLAIN}-docker-compose.yml-docker-compose.ci.yml",
            id="several files, the default one among them, in order",
        ),
        pytest.param(
            ("ci/docker-compose.yml", "ci/compose.override.yaml"),
            f"{PLAIN}-ci/docker-compose.yml-ci/compose.override.yaml",
            id="paths with directories and extensions kept as written",
        ),
        pytest.param(("./docker-compose.yml",), f"{PLAIN}-./docker-compose.yml", id="no normalisation of paths"),
        pytest.param(("compose.yaml",), f"{PLAIN}-compose.yaml", id="Compose's own default is not the plugin's"),
        pytest.param(("a.yml:b.yml",), f"{PLAIN}-a.yml:b.yml", id="a COMPOSE_FILE value is kept whole"),
        pytest.param(("my compose.yml",), f"{PLAIN}-my-compose.yml", id="names split at whitespace"),
    ],
)
def test_compose_plugin_key_follows_the_plugins_derivation(files: tuple[str, ...], key: str) -> None:
    assert compose_plugin_key("ruby", files) == key
    assert image_metadata_key("docker-compose", "ruby", files) == key


def test_compose_plugin_key_of_a_matrix_variant_uses_its_name() -> None:
    assert compose_plugin_key("ruby[3.3]", ()) == "docker-compose-plugin-built-image-tag-ruby[3.3]"
    assert (
        compose_plugin_key("ruby[3.3]", ("docker-compose.ci.yml",))
        == "docker-compose-plugin-built-image-tag-ruby[3.3]-docker-compose.ci.yml"
    )


def test_a_key_of_ones_own_ignores_the_compose_files() -> None:
    assert image_metadata_key("ruby-image", "ruby", ("docker-compose.ci.yml",)) == "ruby-image"
    assert image_metadata_key(None, "ruby", ("docker-compose.ci.yml",)) is None


class ComposeOnly:
    """Docker as ``plan`` uses it for a Compose service: ``docker compose config`` only."""

    def __init__(self) -> None:
        self.files: list[list[str]] = []

    def compose_config(self, files: Any, root: Path) -> dict[str, Any]:
        self.files.append([f.name for f in files])
        return {"services": {"ruby": {"build": {"context": str(root)}}}}


def plan_keys(
    root: Path,
    raw: dict[str, Any],
    env: dict[str, str] | None = None,
    files: tuple[str, ...] = ("docker-compose.yml", "docker-compose.ci.yml", "compose.yaml"),
) -> dict[str, Any]:
    """``plan --json``'s meta-data key per service, for dockercache.toml ``raw`` in ``root`` with ``files``."""
    from dockercache.adapters.ci import CIContext
    from dockercache.commands import Environment, plan_for
    from dockercache.config.load import parse_config
    from dockercache.config.model import CONFIG_NAME
    from dockercache.model import BuildOptions
    from dockercache.output.console import Console

    variables = {"BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567", "BUILDKITE_BRANCH": "main"}
    env = {**variables, **(env or {})}
    (root / "Dockerfile").write_text("FROM busybox\n")
    for name in files:
        (root / name).write_text("services: {}\n")
    config = parse_config(raw, variables, root / CONFIG_NAME)
    environment = Environment(env=env, cwd=root, docker=ComposeOnly(), console=Console())  # type: ignore[arg-type]
    plan = plan_for(environment, config, CIContext(env=env, cwd=root), BuildOptions())
    return {s["name"]: s["metadata_key"] for s in plan.to_json()["services"]}


def test_plan_json_shows_the_key_from_the_compose_files_the_service_reads(tmp_path: Path) -> None:
    """README's migration example: ``compose_files = ["docker-compose.ci.yml"]`` is the plugin's
    ``config: docker-compose.ci.yml``, whose later steps look the image up under the suffixed key."""
    compose = {"compose_service": "ruby", "image": "reg.test/ruby", "metadata_key": "docker-compose"}
    top = {"compose_files": ["docker-compose.ci.yml"], "services": {"ruby": compose}}
    assert plan_keys(tmp_path, top) == {"ruby": f"{PLAIN}-docker-compose.ci.yml"}
    own = {"services": {"ruby": {**compose, "compose_files": ["docker-compose.yml", "docker-compose.ci.yml"]}}}
    assert plan_keys(tmp_path, {**top, **own}) == {"ruby": f"{PLAIN}-docker-compose.yml-docker-compose.ci.yml"}
    matrix = {**compose, "matrix": {"RUBY": ["3.3"]}}
    assert plan_keys(tmp_path, {**top, "services": {"ruby": matrix}}) == {
        "ruby[3.3]": "docker-compose-plugin-built-image-tag-ruby[3.3]-docker-compose.ci.yml"
    }


def test_plan_json_key_with_compose_file_or_the_default_file_found(tmp_path: Path) -> None:
    """No compose_files: $COMPOSE_FILE as the plugin reads it (whole), else the file Compose found."""
    raw = {"services": {"ruby": {"compose_service": "ruby", "metadata_key": "docker-compose"}}}
    assert plan_keys(tmp_path, raw) == {"ruby": f"{PLAIN}-compose.yaml"}  # found before docker-compose.yml
    (tmp_path / "compose.yaml").unlink()
    assert plan_keys(tmp_path, raw, files=("docker-compose.yml",)) == {"ruby": PLAIN}
    env = {"COMPOSE_FILE": "docker-compose.yml:docker-compose.ci.yml", "COMPOSE_PATH_SEPARATOR": ":"}
    assert plan_keys(tmp_path, raw, env) == {"ruby": f"{PLAIN}-docker-compose.yml:docker-compose.ci.yml"}
    assert plan_keys(tmp_path, raw, {"COMPOSE_FILE": "docker-compose.yml"}) == {"ruby": PLAIN}


def test_plan_json_key_of_a_service_that_is_no_compose_service_is_the_plain_one(tmp_path: Path) -> None:
    """Its image was built from context and dockerfile: the old plugin user's later steps read it with the
    plugin's default file, so it goes under the plain key, even with top-level compose_files set."""
    raw = {"compose_files": ["docker-compose.ci.yml"], "services": {"ruby": {"metadata_key": "docker-compose"}}}
    assert plan_keys(tmp_path, raw) == {"ruby": PLAIN}
    assert plan_keys(tmp_path, {"services": {"ruby": {"metadata_key": "ruby-image"}}}) == {"ruby": "ruby-image"}
    assert plan_keys(tmp_path, {"services": {"ruby": {}}}) == {"ruby": None}


@pytest.mark.parametrize(
    ("env", "context"),
    [
        ({}, "dockercache-ruby"),
        ({"BUILDKITE_JOB_ID": "j1"}, "dockercache-ruby-j1"),
        ({"BUILDKITE_JOB_ID": "j1", "BUILDKITE_STEP_ID": "s1"}, "dockercache-ruby-s1"),
        ({"BUILDKITE_STEP_ID": "s1", "BUILDKITE_STEP_KEY": "build"}, "dockercache-ruby-build"),
        ({"BUILDKITE_STEP_ID": "s1", "BUILDKITE_PARALLEL_JOB": "0"}, "dockercache-ruby-s1-p0"),
    ],
)
def test_annotation_context_is_per_service_and_job(env: dict[str, str], context: str) -> None:
    assert annotation_context("ruby", env) == context


def test_matrix_jobs_of_one_step_get_contexts_of_their_own_and_a_retry_keeps_its_own() -> None:
    step = {"BUILDKITE_STEP_ID": "s1"}
    a = annotation_context("ruby", {**step, "BUILDKITE_JOB_ID": "j1", "BUILDKITE_MATRIX": "3.2"})
    b = annotation_context("ruby", {**step, "BUILDKITE_JOB_ID": "j2", "BUILDKITE_MATRIX": "3.3"})
    retry = annotation_context("ruby", {**step, "BUILDKITE_JOB_ID": "j3", "BUILDKITE_MATRIX": "3.2"})
    setup = annotation_context("ruby", {**step, "BUILDKITE_MATRIX_SETUP_OS": "linux"})
    assert len({a, b, setup}) == 3 and a == retry and a.startswith("dockercache-ruby-s1-m")


def test_job_log_url_needs_the_build_url_and_the_job() -> None:
    assert (
        job_log_url({"BUILDKITE_BUILD_URL": "https://b/x/builds/1", "BUILDKITE_JOB_ID": "j"})
        == "https://b/x/builds/1#j"
    )
    assert job_log_url({"BUILDKITE_BUILD_URL": "https://b/x/builds/1"}) is None
