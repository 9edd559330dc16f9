"""The command line as people use it: the `dockercache` script and `invoke` with a one-line tasks.py.

Bad input must give one line naming the file and key, exit 2, no traceback, and run no Docker command
(reading a Compose file with `docker compose config` is the one exception: it builds and pushes nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import BIN, FIXTURES, ROOT
from .conftest import run_cli as run


def test_unknown_service_on_the_command_line(docker_shim: tuple[Path, Path]) -> None:
    proc, calls = run(
        [str(BIN / "dockercache"), "plan", "--service", "rubby"], ROOT / "examples" / "ruby", *docker_shim
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "dockercache: error: dockercache.toml: no service 'rubby' (did you mean 'ruby'?) (services: ruby)"
    )
    assert calls == []


def test_unknown_stage_on_the_command_line(docker_shim: tuple[Path, Path]) -> None:
    proc, calls = run([str(BIN / "dockercache"), "build", "--stage", "dep"], ROOT / "examples" / "ruby", *docker_shim)
    assert proc.returncode == 2
    assert "--stage: service 'ruby' has no stage 'dep'" in proc.stderr
    assert calls == []  # a usage error is found before any Docker command


def test_invoke_with_a_one_line_tasks_py(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    (tmp_path / "tasks.py").write_text("from dockercache.tasks import ns  # noqa: F401\n")
    (tmp_path / "dockercache.toml").write_text((FIXTURES / "good" / "minimal.toml").read_text())
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    listing, _ = run([str(BIN / "invoke"), "--list"], tmp_path, *docker_shim)
    assert listing.returncode == 0, listing.stderr
    for name in ("build", "plan", "check", "builder.create", "builder.remove"):
        assert name in listing.stdout
    plan, calls = run([str(BIN / "invoke"), "plan", "--service", "app"], tmp_path, *docker_shim)
    assert plan.returncode == 0, plan.stderr
    assert "docker buildx bake --builder dockercache --progress rawjson" in plan.stdout
    assert calls == []
    bad, _ = run([str(BIN / "invoke"), "build", "--service", "nope"], tmp_path, *docker_shim)
    assert bad.returncode == 2 and "no service 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_build_dry_run_prints_the_plan_and_runs_nothing(docker_shim: tuple[Path, Path]) -> None:
    proc, calls = run([str(BIN / "dockercache"), "build", "--dry-run"], ROOT / "examples" / "ruby", *docker_shim)
    assert proc.returncode == 0, proc.stderr
    assert "$ docker buildx bake --builder default --progress rawjson" in proc.stdout
    assert calls == []


def test_plan_bake_prints_the_bake_file_only(docker_shim: tuple[Path, Path]) -> None:
    import json

    proc, calls = run([str(BIN / "dockercache"), "plan", "--bake"], ROOT / "examples" / "ruby", *docker_shim)
    assert proc.returncode == 0, proc.stderr
    definition = json.loads(proc.stdout)
    assert definition["group"]["default"]["targets"] == ["ruby-final"]
    assert list(definition["target"]) == ["ruby-base", "ruby-deps", "ruby-final"]
    assert definition["target"]["ruby-final"]["target"] == "final"
    assert calls == []


def test_machine_output_is_redacted_too(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    """`--json` and `plan --bake` print the values of build args; one named like a secret is masked there too."""
    import json

    token = "npm_l1v3-t0k3n-value-9f8e7d"
    (tmp_path / "dockercache.toml").write_text('[services.app]\nargs = { NPM_TOKEN = "${NPM_TOKEN}" }\n')
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    for args in (["plan", "--json"], ["plan", "--bake"], ["plan"], ["build", "--dry-run"]):
        proc, calls = run([str(BIN / "dockercache"), *args], tmp_path, *docker_shim, env={"NPM_TOKEN": token})
        assert proc.returncode == 0, (args, proc.stderr)
        assert token not in proc.stdout + proc.stderr, args
        assert calls == []
        if "--json" in args or "--bake" in args:
            assert "NPM_TOKEN" in json.dumps(json.loads(proc.stdout)), args  # the arg is there, its value masked


def test_without_buildx_a_build_is_exit_3_in_one_line(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    """A Docker client without the buildx plugin: the environment cannot build (exit 3), no traceback."""
    import subprocess

    real = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = buildx ]; then echo "docker: \'buildx\' is not a docker command." >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    (fake / "docker").chmod(0o755)
    proc, _ = run([str(BIN / "dockercache"), "build"], ROOT / "examples" / "ruby", fake, tmp_path / "calls.log")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "dockercache: error: docker buildx is not available (install the buildx plugin)", lines
    assert "Traceback" not in proc.stderr


def test_a_configured_password_is_masked_wherever_it_would_print(
    tmp_path: Path, docker_shim: tuple[Path, Path]
) -> None:
    """A registry password is masked by its value, whatever the variable holding it is called."""
    password = "plain-named-variable-pw-5d1c"
    (tmp_path / "dockercache.toml").write_text(
        '[registries."registry.example.com"]\nusername = "ci"\npassword = "${REG_PW}"\n'
        '[services.app]\nargs = { MIRROR = "${REG_PW}" }\n'
    )
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    for args in (["plan", "--bake"], ["plan", "--json"], ["plan"]):
        proc, calls = run([str(BIN / "dockercache"), *args], tmp_path, *docker_shim, env={"REG_PW": password})
        assert proc.returncode == 0, (args, proc.stderr)
        assert password not in proc.stdout + proc.stderr, args
        assert calls == []


def test_contradictory_cache_write_flags_are_a_usage_error(docker_shim: tuple[Path, Path]) -> None:
    argv = [str(BIN / "dockercache"), "build", "--cache-write", "--no-cache-write"]
    proc, calls = run(argv, ROOT / "examples" / "ruby", *docker_shim)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dockercache: error: --cache-write and --no-cache-write contradict each other"
    assert calls == []


def test_short_secret_named_values_leave_machine_output_whole(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    """`DEPLOY_TOKEN=main` or `USE_API_KEY=true` are not secrets (under six characters, as Buildkite's agent
    decides): masking them renamed the branch and the `test` stage and broke the JSON. A real-length secret, even
    an ordinary word such as `password1`, is still masked everywhere."""
    import json

    (tmp_path / "dockercache.toml").write_text(
        '[services.app]\nstages = ["test"]\ntarget = "final"\nargs = { NPM_TOKEN = "${NPM_TOKEN}" }\n'
    )
    (tmp_path / "Dockerfile").write_text("FROM busybox AS test\nRUN true\nFROM test AS final\nARG NPM_TOKEN\n")
    env = {
        "DEPLOY_TOKEN": "main",
        "USE_API_KEY": "true",
        "CI_PASSWORD": "test",
        "NPM_TOKEN": "password1",
        "BUILDKITE_BRANCH": "main",
    }
    for args in (["plan", "--json"], ["build", "--dry-run", "--json"], ["plan", "--bake"], ["plan"]):
        proc, calls = run([str(BIN / "dockercache"), *args], tmp_path, *docker_shim, env=env)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "password1" not in proc.stdout + proc.stderr, args
        assert calls == []
        if args == ["plan"]:
            assert "on branch main" in proc.stdout and "  test: built inside bake target app-final" in proc.stdout
            continue
        document = json.loads(proc.stdout)
        bake = document if "--bake" in args else document["bake"]
        assert list(bake["target"]) == ["app-test", "app-final"], args
        assert bake["target"]["app-test"]["target"] == "test"
        assert bake["target"]["app-final"]["args"] == {"NPM_TOKEN": "[redacted]"}
        if "--bake" not in args:
            assert document["branch"] == "main" and document["default_branch"] == "main"
            assert [t["stage"] for t in document["services"][0]["targets"]] == ["test", "final"]


# ----------------------------------------------------- cache.promote / cache.prune: who may write what (issue 11)

S3_UNREACHABLE = """
[settings]
{settings}

[caches.s3]
type = "s3"
bucket = "b"
endpoint_url = "http://127.0.0.1:9"
key = "{{pipeline}}/{{branch}}"
cache_from = ["{{pipeline}}/latest"]

[services.app]
"""
"""An S3 store nobody answers for: a refused command stops before touching it (exit 2); an allowed one gets as
far as finding it unreachable (a StoreError, exit 1)."""


def ci_env(branch: str, **extra: str) -> dict[str, str]:
    return {
        "BUILDKITE": "true",
        "BUILDKITE_BRANCH": branch,
        "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "main",
        "BUILDKITE_PIPELINE_SLUG": "app",
        "BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "BUILDKITE_PULL_REQUEST": "false",
        **extra,
    }


def s3_project(tmp_path: Path, settings: str = "") -> Path:
    (tmp_path / "dockercache.toml").write_text(S3_UNREACHABLE.format(settings=settings))
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    return tmp_path


def maintenance(path: Path, env: dict[str, str], command: str, **options: Any) -> str:
    """Run cmd_promote or cmd_prune in process: 'allowed' when it got as far as S3, else the refusal."""
    import io

    from dockercache import commands
    from dockercache.errors import ConfigError, StoreError
    from dockercache.output.console import Console

    environment = commands.Environment(env=env, cwd=path, console=Console(io.StringIO(), io.StringIO()))
    try:
        if command == "promote":
            args = {"source": None, "target": None, "store": None, "dry_run": False, **options}
            commands.cmd_promote(environment, None, **args)
        else:
            args = {"store": None, "keep": None, "older_than": None, "grace": "1h", "dry_run": False, **options}
            commands.cmd_prune(environment, None, **args)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    except StoreError as exc:
        assert "unreachable" in str(exc)
        return "allowed"
    raise AssertionError("an unreachable store did not stop the command")


def test_promote_to_a_key_the_default_branch_reads_is_refused_on_a_feature_branch_in_ci(tmp_path: Path) -> None:
    path = s3_project(tmp_path)
    feature = ci_env("feature/x")
    for options in ({}, {"target": "{pipeline}/latest"}, {"dry_run": True}):
        assert maintenance(path, feature, "promote", **options) == (
            f"{path / 'dockercache.toml'}: settings.trusted_branches: branch 'feature/x' may not promote to "
            "'app/latest' (cache_from key: default branch 'main' reads it); only the default branch and "
            "trusted branches write it: add 'feature/x' to settings.trusted_branches to allow it"
        )
    assert "'app/main' (default branch key: default branch 'main' reads it)" in maintenance(
        path, feature, "promote", target="app/main"
    )
    # A key no default-branch build reads, it may write; the default branch writes any.
    assert maintenance(path, feature, "promote", target="app/feature-x-copy") == "allowed"
    assert maintenance(path, ci_env("main"), "promote") == "allowed"
    assert "--target: '../x' is not a snapshot key" in maintenance(path, feature, "promote", target="../x")


def test_a_pull_request_may_promote_to_no_shared_key_whatever_its_branch_or_trust(tmp_path: Path) -> None:
    path = s3_project(tmp_path, 'trusted_branches = ["release/*"]')
    for branch in ("main", "release/2.0"):
        pr = ci_env(branch, BUILDKITE_PULL_REQUEST="17")
        assert f"pull request #17 (branch '{branch}') may not promote to 'app/latest'" in maintenance(
            path, pr, "promote"
        )
        assert "only their own key (app/pr-17)" in maintenance(path, pr, "promote", target="app/feature-y")
        assert maintenance(path, pr, "promote", source="app/x", target="app/pr-17") == "allowed"
    assert maintenance(path, ci_env("release/2.0"), "promote") == "allowed"  # trusted, not a pull request
    none = s3_project(tmp_path, 'pull_request_writes = "none"')
    pr = ci_env("feature/y", BUILDKITE_PULL_REQUEST="17")
    assert "pull_request_writes: pull request #17 writes no cache" in maintenance(
        none, pr, "promote", source="app/x", target="app/pr-17"
    )


def test_off_ci_promote_follows_the_branch_git_is_on(tmp_path: Path) -> None:
    """As a build's save on a laptop: git's branch decides (a laptop on main may promote)."""
    import subprocess

    path = s3_project(tmp_path)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "feature/x"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    assert "branch 'feature/x' may not promote to" in maintenance(path, {}, "promote")
    subprocess.run([*git, "checkout", "-q", "-b", "main"], check=True)
    assert maintenance(path, {}, "promote") == "allowed"


def test_prune_deletes_a_protected_key_only_when_named_and_only_from_a_trusted_branch(tmp_path: Path) -> None:
    path = s3_project(tmp_path)
    feature = ci_env("feature/x")
    assert "branch 'feature/x' may not delete 'app/latest'" in maintenance(
        path, feature, "prune", delete=["{pipeline}/latest"]
    )
    assert maintenance(path, ci_env("main"), "prune", delete=["app/latest"]) == "allowed"
    assert maintenance(path, feature, "prune", delete=["app/feature-x"]) == "allowed"
    assert "give --keep N and/or --older-than AGE" in maintenance(path, feature, "prune")


def test_a_refused_promote_is_one_line_and_exit_2(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    path = s3_project(tmp_path)
    for task in ("cache.promote", "cache.prune --delete app/latest"):
        proc, calls = run([str(BIN / "dockercache"), *task.split()], path, *docker_shim, env=ci_env("feature/x"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("dockercache: error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "branch 'feature/x'" in proc.stderr and "'app/latest'" in proc.stderr and calls == []


def test_an_error_in_a_collapsed_group_opens_it_in_buildkite(tmp_path: Path) -> None:
    """cache_errors = "fail" with S3 unreachable stops in the restore group: Buildkite's "^^^ +++" opens it."""
    import io

    import pytest

    from dockercache import commands
    from dockercache.errors import DockercacheError
    from dockercache.model import BuildOptions
    from dockercache.output.console import Console

    class Daemon:
        def ping(self) -> None:
            pass

        def read_manifest(self, ref: str) -> None:
            return None

    path = s3_project(tmp_path, 'cache_errors = "fail"')
    err = io.StringIO()
    console = Console(io.StringIO(), err, buildkite=True)
    environment = commands.Environment(env=ci_env("main"), cwd=path, docker=Daemon(), console=console)  # type: ignore[arg-type]
    with pytest.raises(DockercacheError):
        commands.cmd_build(environment, None, BuildOptions(), as_json=False)
    assert err.getvalue().splitlines()[-1] == "^^^ +++", err.getvalue()


USAGE_ERRORS = [
    (["bulid"], "dockercache: error: no task 'bulid' (did you mean 'build'?); dockercache --list lists the tasks"),
    (["build", "nope"], "dockercache: error: dockercache.toml: no service 'nope' (services: ruby)"),
    (["check", "ruby"], "dockercache: error: no task 'ruby'; dockercache --list lists the tasks"),
    (
        ["build", "--servise", "ruby"],
        "dockercache: error: unknown option --servise for build (did you mean --service?); "
        "dockercache build --help lists its options",
    ),
    (
        ["plan", "--bogus"],
        "dockercache: error: unknown option --bogus for plan; dockercache plan --help lists its options",
    ),
    (["build", "--service"], "dockercache: error: build --service needs a value"),
    (["build", "--service", "--push"], "dockercache: error: build --service needs a value"),
    (["plan", "--service", ""], "dockercache: error: plan --service needs a value"),
    (["--bogus", "plan"], "dockercache: error: unknown option --bogus (dockercache --help lists the options)"),
    (["build", "--push", "--no-push"], "dockercache: error: --push and --no-push contradict each other"),
    (
        ["build", "--progress", "fancy"],
        "dockercache: error: --progress: 'fancy' is not one of auto, tty, plain, quiet",
    ),
    (
        ["plan", "--cache-write", "--no-cache-write"],
        "dockercache: error: --cache-write and --no-cache-write contradict each other",
    ),
]


def test_usage_errors_are_one_line_with_a_hint_and_exit_2(docker_shim: tuple[Path, Path]) -> None:
    for argv, line in USAGE_ERRORS:
        proc, calls = run([str(BIN / "dockercache"), *argv], ROOT / "examples" / "ruby", *docker_shim)
        assert (proc.returncode, proc.stderr.strip()) == (2, line), argv
        assert calls == []  # nothing built: `build --service` with no value used to build every service


def test_config_before_the_task_is_dockercaches_config(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    (tmp_path / "ci.toml").write_text((FIXTURES / "good" / "minimal.toml").read_text())
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    for argv in (["--config", "ci.toml", "check"], ["-f", "ci.toml", "check"], ["--config=ci.toml", "check"]):
        proc, _ = run([str(BIN / "dockercache"), *argv], tmp_path, *docker_shim)
        assert (proc.returncode, proc.stdout.strip()) == (0, "ci.toml: ok (1 service)"), proc.stderr
    missing, _ = run([str(BIN / "dockercache"), "--config", "nope.toml", "plan"], tmp_path, *docker_shim)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "dockercache: error: nope.toml: no such configuration file (from --config)"


def test_help_shows_dockercaches_tasks_and_options_not_invokes_runner_options(docker_shim: tuple[Path, Path]) -> None:
    proc, _ = run([str(BIN / "dockercache"), "--help"], ROOT / "examples" / "ruby", *docker_shim)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: dockercache [--config FILE] TASK [--task-options] ...")
    for shown in ("--config FILE", "--version", "build ", "cache.prune", "check "):
        assert shown in proc.stdout
    for hidden in ("--prompt-for-sudo-password", "--pty", "--echo", "--hide", "--warn-only", "--write-pyc"):
        assert hidden not in proc.stdout


def test_a_tasks_help_lists_every_option_with_its_help_and_no_invoke_runner_text(
    docker_shim: tuple[Path, Path],
) -> None:
    """`dockercache build --help`: every option and its help; no `[--core-opts]`, `Docstring:`, `--, --x`."""
    from dockercache.tasks import HELP

    proc, _ = run([str(BIN / "dockercache"), "build", "--help"], ROOT / "examples" / "ruby", *docker_shim)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: dockercache build [SERVICE ...] [--options]\n")
    for hidden in ("[--core-opts]", "Docstring:", "--, ", "STRING"):
        assert hidden not in proc.stdout
    text = " ".join(proc.stdout.split())
    for option in ("service", "stage", "config", "dry-run", "no-cache", "push", "no-push", "json", "progress"):
        assert f"--{option}" in text and " ".join(HELP[option].split()) in text, option
    assert "--no-cache-write Read caches only" in text
    again, _ = run([str(BIN / "dockercache"), "--help", "plan"], ROOT / "examples" / "ruby", *docker_shim)
    assert "Print the bake file that build runs" in " ".join(again.stdout.split())


def test_a_reader_that_stops_early_ends_the_output_quietly(docker_shim: tuple[Path, Path]) -> None:
    """`dockercache plan | head -1`: no BrokenPipeError traceback, the status of a tool stopped by SIGPIPE."""
    script = f"set -o pipefail; {BIN / 'dockercache'} plan --json | true"
    proc, _ = run(["bash", "-c", script], ROOT / "examples" / "ruby", *docker_shim)
    assert proc.stderr == "" and proc.returncode in (0, 141)


def test_your_own_tasks_beside_dockercaches_and_its_config_in_invoke_yaml(
    tmp_path: Path, docker_shim: tuple[Path, Path]
) -> None:
    """README "Your own tasks": a tasks.py that adds a task to dockercache's collection lists and runs both;
    ``dockercache.config`` in invoke.yaml (or the collection's configure) is the default --config."""
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "dockercache.toml").write_text((FIXTURES / "good" / "minimal.toml").read_text())
    (tmp_path / "ci" / "Dockerfile").write_text("FROM busybox AS final\n")
    (tmp_path / "tasks.py").write_text(
        "from invoke import task\n"
        "from dockercache.tasks import collection\n\n\n"
        "@task\n"
        "def lint(c):\n"
        '    print("linted")\n\n\n'
        "ns = collection()\n"
        "ns.add_task(lint)\n"
    )
    listing, _ = run([str(BIN / "invoke"), "--list"], tmp_path, *docker_shim)
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[0] for line in listing.stdout.splitlines()[1:] if line.strip()}
    assert {"lint", "build", "plan", "check", "cache.prune"} <= names
    lint, _ = run([str(BIN / "invoke"), "lint"], tmp_path, *docker_shim)
    assert (lint.returncode, lint.stdout) == (0, "linted\n")
    lost, _ = run([str(BIN / "invoke"), "check"], tmp_path, *docker_shim)
    assert lost.returncode == 2 and "dockercache.toml: not found" in lost.stderr
    (tmp_path / "invoke.yaml").write_text("dockercache:\n  config: ci/dockercache.toml\n")
    found, _ = run([str(BIN / "invoke"), "check"], tmp_path, *docker_shim)
    assert (found.returncode, found.stdout.strip()) == (0, "ci/dockercache.toml: ok (1 service)"), found.stderr
    given, _ = run([str(BIN / "invoke"), "check", "--config", "nope.toml"], tmp_path, *docker_shim)
    assert given.returncode == 2 and "nope.toml: no such configuration file" in given.stderr  # the flag wins


def test_json_is_always_one_document_on_stdout_also_on_errors(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    """README: with --json, stdout is one JSON document whatever happens: usage and configuration errors too
    (with their exit_code and error); stderr keeps the one-line error."""
    import json

    example = ROOT / "examples" / "ruby"
    cases = [
        (["build", "--json", "--bogus"], example, 2, "unknown option --bogus for build"),
        (["build", "--json", "--service"], example, 2, "build --service needs a value"),
        (["plan", "--json", "--service", "nope"], example, 2, "no service 'nope'"),
        (["build", "--json", "--push", "--no-push"], example, 2, "--push and --no-push contradict each other"),
        (["check", "--json"], tmp_path, 2, "dockercache.toml: not found"),
        (["cache.list", "--json"], example, 2, "no S3 cache store"),
    ]
    for argv, cwd, code, error in cases:
        proc, calls = run([str(BIN / "dockercache"), *argv], cwd, *docker_shim)
        document = json.loads(proc.stdout)
        assert proc.returncode == code == document["exit_code"], (argv, proc.stdout, proc.stderr)
        assert error in document["error"] and error in proc.stderr, (argv, document)
        assert calls == []
    ok, _ = run([str(BIN / "dockercache"), "check", "--json"], example, *docker_shim)
    assert json.loads(ok.stdout) == {
        "exit_code": 0,
        "config": "dockercache.toml",
        "services": ["ruby"],
        "lint": None,
        "remote": None,
    }
