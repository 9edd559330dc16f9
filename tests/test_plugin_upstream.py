"""The plugin against the plugins it replaces, case by case from their own tests: docker-compose-buildkite-plugin
v5.14 (tests/metadata.bats, tests/docker-compose-config.bats, tests/push.bats; lib/shared.bash, lib/metadata.bash)
and envato/docker-cache-buildkite-plugin v0.1.0 (hooks/command, README's example pipeline). Issue 27."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dockercache import commands, plugin
from dockercache.errors import ConfigError
from dockercache.model import Plan
from dockercache.output.console import Console

from .conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PREFIX = "docker-compose-plugin-built-image-tag-"
V20, V21 = "tests/composefiles/docker-compose.v2.0.yml", "tests/composefiles/docker-compose.v2.1.yml"
LLAMAS = "llamas1.yml-llamas2.yml"
ECR_IMAGE = "somewhere.dkr.ecr.some-region.amazonaws.com/blah"  # tests/composefiles/docker-compose.config.v3.2.yml


class FakeDocker:
    """An engine on the classic image store; ``docker compose config`` answers ``services``."""

    def __init__(self, services: Mapping[str, Any]) -> None:
        self.services = services
        self.compose: list[list[str]] = []

    def containerd_image_store(self) -> bool:
        return False

    def compose_config(self, files: Sequence[Path], project_dir: Path) -> Mapping[str, Any]:
        self.compose.append([str(f) for f in files])
        return {"services": self.services}


def checkout(tmp_path: Path, *files: str) -> Path:
    path = tmp_path / "checkout"
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text("FROM scratch AS final\nCOPY Dockerfile /\n")
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("services: {}\n")
    return path


def plan(
    cwd: Path,
    options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    services: Mapping[str, Any] | None = None,
    **env: str,
) -> tuple[Plan, FakeDocker]:
    """The plan the plugin would build (its dry run), with the Compose service(s) ``services``."""
    build = {"build": {"context": str(cwd), "target": "final"}}
    docker = FakeDocker(services or {options.get("service", "app"): build})
    plans: list[Plan] = []
    monkeypatch.setattr(commands, "render_plan", lambda p: plans.append(p) or "")
    environ = {
        "BUILDKITE_PLUGIN_CONFIGURATION": json.dumps({**options, "dry_run": True}),
        "BUILDKITE_COMMIT": COMMIT,
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_PIPELINE_SLUG": "example",
        **env,
    }
    console = Console(io.StringIO(), io.StringIO())
    environment = commands.Environment(env=environ, cwd=cwd, docker=docker, console=console)  # type: ignore[arg-type]
    assert plugin.run(environment) == 0
    return plans[0], docker


# Every case of metadata.bats' prebuilt_image_meta_data_key, and docker-compose-config.bats' colon-separated one.
KEY_CASES = [
    ("Image service tag with default config", {}, {}, f"{PREFIX}service"),
    ("single non-default config", {"config": V20}, {}, f"{PREFIX}service-{V20}"),
    ("multiple non-default config", {"config": [V20, V21]}, {}, f"{PREFIX}service-{V20}-{V21}"),
    ("colon delimited config files (item 1)", {"config": "llamas1.yml:llamas2.yml"}, {}, f"{PREFIX}service-{LLAMAS}"),
    ("COMPOSE_PATH_SEPARATOR", {"config": "llamas1.yml;llamas2.yml"}, {"COMPOSE_PATH_SEPARATOR": ";"},
     f"{PREFIX}service-{LLAMAS}"),
    ("$COMPOSE_FILE, whole", {}, {"COMPOSE_FILE": "llamas1.yml:llamas2.yml"},
     f"{PREFIX}service-llamas1.yml:llamas2.yml"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "options", "env", "key"), KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_the_compose_plugins_key(
    case: str, options: dict[str, Any], env: dict[str, str], key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = checkout(tmp_path, "docker-compose.yml", "compose.yaml", V20, V21, "llamas1.yml", "llamas2.yml")
    built, docker = plan(cwd, {"service": "service", "s3_bucket": "b", **options}, monkeypatch, **env)
    assert built.services[0].image_meta_data_key == key
    config = options.get("config")
    names = plugin.compose_names(config, env) if config else None
    expected = names or (env["COMPOSE_FILE"].split(":") if "COMPOSE_FILE" in env else ["docker-compose.yml"])
    assert docker.compose == [[str(cwd / n) for n in expected]]


def test_both_default_files_the_plugins_read_docker_compose_yml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: ``compose.yaml`` beside ``docker-compose.yml``: both plugins read the latter (key ``svc``)."""
    cwd = checkout(tmp_path, "compose.yaml", "docker-compose.yml")
    built, docker = plan(cwd, {"service": "svc"}, monkeypatch)
    assert docker.compose == [[str(cwd / "docker-compose.yml")]]
    assert built.services[0].image_meta_data_key == f"{PREFIX}svc"
    alone = checkout(tmp_path / "alone", "compose.yaml")  # no docker-compose.yml: Compose's own default
    _, docker = plan(alone, {"service": "svc"}, monkeypatch)
    assert docker.compose == [[str(alone / "compose.yaml")]]


def test_the_key_carries_the_compose_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 3: service ``web`` building Compose service ``app`` records the image where the compose plugin's
    later step looks for ``app`` (tests/push.bats: ``...-built-image-tag-app``)."""
    cwd = checkout(tmp_path, "docker-compose.yml")
    (cwd / "dockercache.toml").write_text(
        '[services.web]\ncompose_service = "app"\nimage = "reg.test/web"\nmetadata_key = "docker-compose"\n'
    )
    built, _ = plan(cwd, {"service": "web"}, monkeypatch, {"app": {"build": {"context": str(cwd)}}})
    assert built.services[0].image_meta_data_key == f"{PREFIX}app"


def test_compose_files_are_found_in_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 4: ``dockercache_config: ci/dockercache.toml`` with ``config: docker-compose.yml``: the checkout's file,
    as plugin.yml says; the file's own compose_files (relative to it) are the same files, named from the checkout."""
    cwd = checkout(tmp_path, "docker-compose.yml", "docker-compose.ci.yml", "ci/docker-compose.yml")
    (cwd / "ci" / "dockercache.toml").write_text(
        '[services.app]\ncompose_service = "app"\ncompose_files = ["../docker-compose.ci.yml"]\n'
        'metadata_key = "docker-compose"\n'
    )
    options = {"service": "app", "dockercache_config": "ci/dockercache.toml"}
    built, docker = plan(cwd, {**options, "config": "docker-compose.yml"}, monkeypatch)
    assert docker.compose == [[str(cwd / "docker-compose.yml")]]
    assert built.services[0].image_meta_data_key == f"{PREFIX}app"
    built, docker = plan(cwd, options, monkeypatch)
    assert docker.compose == [[str(cwd / "docker-compose.ci.yml")]]
    assert built.services[0].image_meta_data_key == f"{PREFIX}app-docker-compose.ci.yml"


def test_image_name_defaults_to_the_full_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 6: the old plugin's ``image_name`` default is ``${BUILDKITE_COMMIT}``, all of it."""
    cwd = checkout(tmp_path, "docker-compose.yml")
    built, _ = plan(cwd, {"service": "app", "image_repository": "reg.test/app"}, monkeypatch)
    final = built.services[0].targets[-1]
    assert final.tags == (f"reg.test/app:{COMMIT}",)


def test_the_compose_image_is_pushed_under_the_compose_plugins_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 10, tests/push.bats "Push a single service with an image in its config": no image_repository, the
    Compose service's ``image:`` is pushed and recorded under ``docker-compose-plugin-built-image-tag-app``."""
    cwd = checkout(tmp_path, "docker-compose.yml")
    services = {"app": {"build": {"context": str(cwd)}, "image": ECR_IMAGE}, "cache": {"image": "memcached:1.4.35"}}
    built, _ = plan(cwd, {"service": "app"}, monkeypatch, services)
    svc = built.services[0]
    assert (svc.image, svc.image_meta_data_key) == (ECR_IMAGE, f"{PREFIX}app")
    assert svc.targets[-1].tags == (f"{ECR_IMAGE}:{COMMIT}",) and svc.targets[-1].push
    tagged = {"app": {"build": {"context": str(cwd)}, "image": "reg.test/app:v2"}}
    built, _ = plan(cwd, {"service": "app"}, monkeypatch, tagged)
    assert built.services[0].targets[-1].tags == ("reg.test/app:v2",)  # the tag it names


def test_errors_without_a_dockercache_toml_name_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 9: options alone; an error found while planning names the option, not a dockercache.toml."""
    cwd = checkout(tmp_path)
    with pytest.raises(ConfigError) as error:
        plan(cwd, {"service": "app", "config": "missing.yml"}, monkeypatch)
    message = str(error.value)
    assert message.startswith("plugin option config (compose_files): compose file "), message
    assert "dockercache.toml" not in message
    with pytest.raises(ConfigError) as error:
        plan(cwd, {"service": "app"}, monkeypatch)  # no Compose file at all
    assert "dockercache.toml" not in str(error.value)
    assert str(error.value).startswith("plugin options: compose_files: no Compose file given")


# ------------------------------------------------------------------------------------------ without service


def promote_run(
    tmp_path: Path, options: dict[str, Any], meta: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[str, str]], str]:
    """The plugin run with the stand-in agent holding ``meta``; the promotes it asked for, and its stderr."""
    state = tmp_path / "agent"
    state.mkdir(parents=True)
    (state / "meta-data.json").write_text(json.dumps(meta))
    calls: list[tuple[str, str]] = []

    def promote_config(environment: Any, cfg: Any, ci: Any, source: str, target: str, *args: Any) -> int:
        calls.append((source, target))
        return 0

    monkeypatch.setattr(commands, "promote_config", promote_config)
    env = {
        "BUILDKITE": "true",
        "BUILDKITE_AGENT_STUB_DIR": str(state),
        "PATH": f"{ROOT / 'tests' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "BUILDKITE_PLUGIN_CONFIGURATION": json.dumps(options),
        "BUILDKITE_COMMIT": COMMIT,
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_PIPELINE_SLUG": "example",
    }
    err = io.StringIO()
    environment = commands.Environment(env=env, cwd=checkout(tmp_path), console=Console(io.StringIO(), err))
    assert plugin.run(environment) == 0
    return calls, err.getvalue()


UPDATE_STEP = {"s3_bucket": "example-bucket", "s3_key": "example/latest", "metadata_key": "docker-cache-image-ruby"}
"""The old plugin README's "update image cache" step (no service), ${...} expanded by the agent."""


def test_without_service_the_old_plugin_copied_the_snapshot_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 5: hooks/command's ``pull_image``, then ``mv``: the key under ``<metadata_key>-s3`` copied to s3_key."""
    meta = {"docker-cache-image-ruby": "x", "docker-cache-image-ruby-s3": f"example/{COMMIT}"}
    calls, _ = promote_run(tmp_path, UPDATE_STEP, meta, monkeypatch)
    assert calls == [(f"example/{COMMIT}", "example/latest")]


def test_without_service_or_its_key_the_builds_own_snapshot_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's steps name two meta-data keys; the build step's snapshot key, as dockercache recorded it."""
    meta = {"dockercache-s3-key-ruby": f"example/{COMMIT}", "ruby-image": "reg.test/ruby:1"}
    calls, _ = promote_run(tmp_path, UPDATE_STEP, meta, monkeypatch)
    assert calls == [(f"example/{COMMIT}", "example/latest")]


def test_without_service_and_nothing_recorded_cache_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old plugin's fallback is ``cache_from`` (default ``$BUILDKITE_PIPELINE_SLUG/latest``): to itself, nothing."""
    calls, err = promote_run(tmp_path, UPDATE_STEP, {}, monkeypatch)
    assert calls == []
    assert "nothing to promote to 'example/latest'" in err
    calls, _ = promote_run(tmp_path / "2", {**UPDATE_STEP, "s3_key": f"example/{COMMIT}"}, {}, monkeypatch)
    assert calls == [("example/latest", f"example/{COMMIT}")]


def test_the_docs_say_what_the_old_plugin_ran() -> None:
    """Item 8: envato's hooks/command ran ``docker buildx create --driver docker-container`` and ``buildx bake``;
    the docs said it used ``docker build`` (and built with the engine's builder "as" it did)."""
    text = (ROOT / "docs" / "buildkite.md").read_text() + (ROOT / "README.md").read_text()
    assert "old plugin's `docker build`" not in text
    assert (
        "`docker buildx create --driver\ndocker-container`" in text
        or "docker buildx create --driver docker-container" in text
    )
