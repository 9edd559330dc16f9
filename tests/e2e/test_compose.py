"""Services taken from Compose files, read with the real `docker compose config`."""

from __future__ import annotations

import json

from .conftest import Project, Stack, base_env, run_dockercache


def compose_config(stack: Stack, project: Project, files: str = "") -> str:
    return f"""
[builder]
name = "default"
driver = "docker"

[caches.default]
type = "registry"
ref = "{stack.host}/{project.name}/cache"

[services.ruby]
compose_service = "app"
{files}
stages = ["base", "deps"]
image = "{stack.host}/{project.name}/ruby"
"""


def test_compose_service_supplies_context_target_and_args(project: Project, stack: Stack) -> None:
    project.write_config(compose_config(stack, project))
    env = base_env(DOCKERCACHE_BASE_IMAGE=stack.base_image)
    plan = run_dockercache("plan", "--json", cwd=project.path, env=env)
    assert plan.returncode == 0, plan.stderr
    document = json.loads(plan.stdout)
    assert [t["target"] for t in document["services"][0]["targets"]] == ["base", "deps", "final"]
    final = document["bake"]["target"]["ruby-final"]
    assert final["args"] == {"BASE_IMAGE": stack.base_image}
    assert final["context"] == str(project.path.resolve())
    result = run_dockercache("build", "--json", cwd=project.path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.json["services"][0]["status"] == "ok"
    assert stack.registry.tags(f"{project.name}/ruby")


def test_compose_file_from_environment(project: Project, stack: Stack) -> None:
    (project.path / "compose.yaml").rename(project.path / "ci-compose.yml")
    project.write_config(compose_config(stack, project))
    missing = run_dockercache("plan", cwd=project.path)
    assert missing.returncode == 2 and "compose_files: no Compose file given" in missing.stderr
    found = run_dockercache("plan", cwd=project.path, env=base_env(COMPOSE_FILE="ci-compose.yml"))
    assert found.returncode == 0, found.stderr
    assert "final (final): bake target ruby-final" in found.stdout
