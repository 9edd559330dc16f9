"""dockercache.argv: the console script's everyday calls, read without Invoke, read as Invoke reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke.parser import Parser

from dockercache.argv import QUICK_TASKS, REPEATABLE, SHORT_VALUES, TASK_NAMES, normalize_argv, quick_parse
from dockercache.tasks import collection

from .conftest import ROOT

CONTEXTS = collection().to_contexts()


def invoke_reading(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """The task and the arguments Invoke's parser gives it (those given on the command line)."""
    parsed = Parser(contexts=CONTEXTS).parse_argv(normalize_argv(argv))
    assert len(parsed) == 1, parsed
    task = parsed[0]
    return str(task.name), {name.replace("-", "_"): arg.value for name, arg in task.args.items() if arg.got_value}


def test_the_task_names_and_options_are_the_collections() -> None:
    assert sorted(TASK_NAMES) == sorted(str(c.name) for c in CONTEXTS)
    for context in CONTEXTS:
        if context.name in QUICK_TASKS:
            takes_value, switches = QUICK_TASKS[str(context.name)]
            flags = {flag.removeprefix("--"): arg for flag, arg in context.flags.items() if flag.startswith("--")}
            assert {f for f, arg in flags.items() if arg.takes_value} == takes_value
            assert {f for f, arg in flags.items() if not arg.takes_value} == switches
            assert {f for f, arg in flags.items() if arg.kind is list} == REPEATABLE & set(flags)
            shorts = {f"-{a}" for arg in context.args.values() if arg.takes_value for a in arg.nicknames}
            assert shorts == SHORT_VALUES[str(context.name)]


@pytest.mark.parametrize(
    "argv",
    [
        ["build"],
        ["plan"],
        ["build", "--service", "ruby"],
        ["build", "--service=ruby", "--service", "ruby[3.3]", "--json"],
        ["build", "--stage", "deps", "--config", "ci/dockercache.toml", "--no-push", "--progress", "plain"],
        ["--config", "x.toml", "build", "--dry-run", "--no-cache"],
        ["-f", "x.toml", "plan", "--bake"],
        ["--config=x.toml", "plan", "--json", "--push", "--cache-write"],
        ["build", "--no-cache-write", "--push", "--no-push"],  # a contradiction the task itself reports
        ["build", "web"],  # the Compose habit: docker compose build web
        ["build", "web", "--json", "api", "--progress", "plain"],
        ["plan", "--stage", "deps", "web"],
        ["--config", "x.toml", "build", "web"],
    ],
)
def test_an_everyday_call_is_read_as_invoke_reads_it(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    quick = quick_parse(argv)
    assert quick is not None
    assert quick == invoke_reading(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["build", "--help"],
        ["-l"],
        ["check"],
        ["cache.list"],
        ["build", "-s", "ruby"],  # short options: Invoke's
        ["check", "ruby"],  # a word that is no option: Invoke's hint
        ["build", "-t", "deps", "ruby"],  # a short option's value is no service
        ["build", "--service"],  # a value missing: Invoke's usage error
        ["build", "--service", "--json"],
        ["build", "--service", ""],
        ["build", "--stage", "a", "--stage", "b"],
        ["build", "--bake"],  # plan's option, not build's
        ["build", "--json=yes"],
        ["build", "--servce", "ruby"],  # a typo: Invoke's "did you mean"
        ["build", "plan"],
    ],
)
def test_everything_else_is_left_to_invoke(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    assert quick_parse(argv) is None


def test_invokes_own_configuration_files_send_every_call_to_invoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dockercache.config`` may be set in ~/.invoke.yaml: then Invoke, which reads it, reads the call."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert quick_parse(["build"]) is not None
    (tmp_path / ".invoke.yaml").write_text("dockercache:\n  config: ci/dockercache.toml\n")
    assert quick_parse(["build"]) is None


def test_build_and_plan_do_not_import_invoke_and_other_tasks_do() -> None:
    """Invoke's import is about 0.1 s of every run; the everyday commands do without it."""

    def imports(*args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "dockercache.cli", *args],
            cwd=ROOT / "examples" / "ruby",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    assert " invoke" not in imports("plan")
    assert " invoke" not in imports("build", "--dry-run", "--json")
    assert " invoke" not in imports("--version")
    assert " invoke" in imports("check")


@pytest.mark.parametrize(
    ("argv", "services"),
    [
        (["build", "web"], ["web"]),
        (["build", "web", "api", "--json"], ["web", "api"]),
        (["build", "--progress", "plain", "web"], ["web"]),
        (["build", "-t", "deps", "web"], ["web"]),
        (["build", "-r", "plain", "--service", "api", "web"], ["api", "web"]),
        (["plan", "web", "check"], ["web"]),
    ],
)
def test_a_bare_word_after_build_or_plan_is_a_service_for_both_readings(
    argv: list[str], services: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dockercache build web`` builds service web, whichever parser reads the call."""
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    parsed = Parser(contexts=CONTEXTS).parse_argv(normalize_argv(argv))
    assert parsed[0].args["service"].value == services
    quick = quick_parse(argv)
    if quick is not None:
        assert quick[1]["service"] == services
