"""Platforms: the bake field, a multi-platform image the builder can build, and a clear error where it cannot.

These machines build linux/amd64 (and its v2/v3 micro-architecture levels) and have no QEMU emulation, so
arm64 is the platform the builder cannot build.
"""

from __future__ import annotations

import json
import re

import pytest

from .conftest import COMMIT, Project, Stack, fresh_agent, registry_config, run_dockercache

pytestmark = pytest.mark.e2e


def with_platforms(config: str, *platforms: str) -> str:
    listed = ", ".join(f'"{p}"' for p in platforms)
    return config.replace('target = "final"', f'target = "final"\nplatforms = [{listed}]', 1)


def test_a_two_platform_image_is_built_pushed_and_cached(project: Project, stack: Stack) -> None:
    project.write_config(with_platforms(registry_config(stack, project.name), "linux/amd64", "linux/amd64/v2"))
    bake = run_dockercache("plan", "--bake", cwd=project.path)
    assert json.loads(bake.stdout)["target"]["ruby-final"]["platforms"] == ["linux/amd64", "linux/amd64/v2"]
    first = project.build()
    assert first.returncode == 0, first.stderr
    _, index = stack.registry.manifest(f"{project.name}/ruby", COMMIT[:12])
    platforms = sorted(
        "/".join(filter(None, (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))))
        for m in index["manifests"]
        if m["platform"]["os"] != "unknown"  # attestation manifests
    )
    assert platforms == ["linux/amd64", "linux/amd64/v2"]
    fresh_agent()
    again = project.build()
    assert again.returncode == 0, again.stderr
    deps = again.stage("ruby", "deps")
    assert deps["steps_cached"] == deps["steps_total"] > 0, deps


@pytest.mark.parametrize("platforms", [("linux/arm64",), ("linux/amd64", "linux/arm64")], ids=["arm64", "both"])
def test_a_platform_the_builder_cannot_build_is_exit_3_in_one_line(
    project: Project, stack: Stack, platforms: tuple[str, ...]
) -> None:
    project.write_config(with_platforms(registry_config(stack, project.name), *platforms))
    result = run_dockercache("build", cwd=project.path)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dockercache: error:")]
    assert len(errors) == 1, result.stderr
    assert "builder 'default' cannot build linux/arm64 (it builds linux/amd64" in errors[0], result.stderr
    assert not re.search(r"^==> build( and push)?:", result.stderr, re.M)  # stopped before bake ran
    assert stack.registry.tags(f"{project.name}/ruby") == []
