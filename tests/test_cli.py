"""The command line as people use it: the `dockercache` script and `invoke` with a one-line tasks.py.

Bad input must give one line naming the file and key, exit 2, no traceback, and run no Docker command
(reading a Compose file with `docker compose config` is the one exception: it builds and pushes nothing).
"""

from __future__ import annotations

from pathlib import Path

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
