"""Builders: created when missing, reused when present, ephemeral ones removed even when the build fails.

A docker-container builder can be created here but not booted (booting pulls moby/buildkit from Docker Hub,
which these machines cannot reach), so a build on it fails: exactly the case where cleanup matters.
"""

from __future__ import annotations

import uuid

import pytest

from .conftest import Project, base_env, docker, run_dockercache


def builders() -> dict[str, str]:
    out = docker("buildx", "ls").stdout.splitlines()[1:]  # NAME/NODE  DRIVER/ENDPOINT ...
    rows = [line.split() for line in out if line and not line[0].isspace()]
    return {row[0].rstrip("*"): row[1] for row in rows if len(row) >= 2}


def container_config(name: str, ephemeral: bool) -> str:
    return f"""
[builder]
name = "{name}"
driver = "docker-container"
driver_opts = {{ network = "host" }}
ephemeral = {str(ephemeral).lower()}

[services.ruby]
context = "."
stages = ["base"]
target = "final"
"""


@pytest.mark.hardening("faults")
def test_a_builder_that_cannot_boot_is_exit_3_and_the_one_made_is_removed(project: Project) -> None:
    """The README's [builder] example where the BuildKit image cannot be pulled: exit 3, one line naming why,
    no build attempted, and the builder this run created removed (a builder that was there is kept)."""
    name = f"dc-{uuid.uuid4().hex[:8]}"
    project.write_config(container_config(name, ephemeral=False))
    for command in ("builder.create", "build"):
        result = run_dockercache(command, cwd=project.path)
        assert result.returncode == 3, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("dockercache: error:")]
        assert len(errors) == 1 and errors[0].startswith(f"dockercache: error: builder '{name}' cannot boot: "), errors
        assert f"removed builder '{name}' (it could not boot)" in result.stderr
        assert "base 0/0" not in result.stdout and name not in builders()
    docker("buildx", "create", "--name", name, "--driver", "docker-container")  # someone's own, never booted
    try:
        kept = run_dockercache("build", cwd=project.path)
        assert kept.returncode == 3 and f"builder '{name}' cannot boot" in kept.stderr
        assert builders().get(name) == "docker-container"
        removed = run_dockercache("builder.remove", cwd=project.path)
        assert removed.returncode == 0 and name not in builders()
    finally:
        docker("buildx", "rm", name, check=False)


@pytest.mark.hardening("faults")
def test_ephemeral_builder_is_removed_when_the_build_fails(project: Project) -> None:
    project.write_config(container_config("dc-job", ephemeral=True))
    job = uuid.uuid4().hex[:8]
    before = set(builders())
    result = run_dockercache("build", cwd=project.path, env=base_env(BUILDKITE_JOB_ID=job))
    assert result.returncode == 3, result.stderr
    assert f"created builder 'dc-job-{job}' (driver docker-container)" in result.stderr
    assert f"removed builder 'dc-job-{job}'" in result.stderr
    assert f"dockercache: error: builder 'dc-job-{job}' cannot boot: " in result.stderr
    assert "keeping the caches" not in result.stderr  # nothing built, nothing to keep
    assert set(builders()) == before


@pytest.mark.hardening("faults")
def test_existing_builder_with_another_driver_is_a_clear_error(project: Project) -> None:
    name = f"dc-{uuid.uuid4().hex[:8]}"
    docker("buildx", "create", "--name", name, "--driver", "docker-container")
    try:
        project.write_config(
            container_config(name, ephemeral=False)
            .replace("docker-container", "remote")
            .replace('driver_opts = { network = "host" }', 'endpoint = "tcp://127.0.0.1:1"')
        )
        result = run_dockercache("build", cwd=project.path)
        assert result.returncode == 3
        assert (
            f"builder '{name}' exists with driver 'docker-container', but builder.driver is 'remote'" in result.stderr
        )
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        docker("buildx", "rm", "--force", name, check=False)


@pytest.mark.hardening("faults")
def test_docker_daemon_not_running_is_exit_3(project: Project) -> None:
    result = run_dockercache("build", cwd=project.path, env=base_env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert result.returncode == 3
    assert result.stderr.strip().startswith("dockercache: error: Docker daemon not reachable")
    assert len(result.stderr.strip().splitlines()) == 1
