"""Hardening, group secrets: under --json, stdout carries the JSON document and nothing else, and masking
secrets never breaks it.

`docker login` printed "Login Succeeded" into the middle of `build --json`; a variable named like a secret whose
value is an ordinary short word (`DEPLOY_TOKEN=main`) was masked wherever the word appeared, renaming branches
and stages and breaking the JSON. Short values are left alone (as Buildkite's agent does); a real secret is
still masked everywhere, and the document is masked value by value so it always parses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..e2e.conftest import Project, Stack, base_env, run_dockercache
from .test_secrets import PASSWORD, USER, auth_registry  # noqa: F401 (auth_registry is a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.hardening("secrets")]


def test_build_json_with_a_registry_login_is_one_json_document(
    project: Project,
    stack: Stack,
    auth_registry: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = (project.path / "dockercache.toml").read_text()
    project.write_config(
        f'[registries."{auth_registry}"]\nusername = "{USER}"\npassword = "${{REGISTRY_PASSWORD}}"\n'
        + config.replace(f'image = "{stack.host}/', f'image = "{auth_registry}/')
    )
    build = project.build(REGISTRY_PASSWORD=PASSWORD, DOCKER_CONFIG=str(tmp_path / "docker-config"))
    assert build.returncode == 0, build.stderr
    assert f"logging in to {auth_registry} as {USER}" in build.stderr
    document = json.loads(build.stdout)  # the whole of stdout, nothing before or after it
    assert "Login Succeeded" not in build.stdout
    final = document["services"][0]["image"]
    assert final["pushed"] and final["tags"][0].startswith(f"{auth_registry}/"), final
    assert PASSWORD not in build.stdout + build.stderr


def test_ordinary_words_in_secret_named_variables_leave_json_and_names_intact(project: Project) -> None:
    """`main`, `true`, `deps`, `final` in secret-named variables are not secrets (under six characters); a
    secret that is an ordinary word of six or more (`password1`) is masked everywhere; one that reads like
    JSON syntax cannot break the document."""
    config = (project.path / "dockercache.toml").read_text()
    project.write_config(config.replace("args = {", 'args = { NPM_TOKEN = "${NPM_TOKEN}", '))
    env = {
        "DEPLOY_TOKEN": "main",
        "USE_API_KEY": "true",
        "CI_PASSWORD": "final",
        "CACHE_SECRET": "deps",
        "NPM_TOKEN": "password1",
        "ODD_SECRET": '"status": "ok"',
    }
    build = project.build(**env)
    assert build.returncode == 0, build.stderr
    document = json.loads(build.stdout)
    stages = document["services"][0]["stages"]
    assert [(s["stage"], s["status"]) for s in stages] == [("base", "ok"), ("deps", "ok"), ("final", "ok")]
    assert build.stage("ruby", "final")["cache_written"].endswith("/cache:final-main")
    assert document["services"][0]["image"]["tags"] == [f"localhost:5000/{project.name}/ruby:0123456789ab"]

    plan = run_dockercache("plan", "--json", cwd=project.path, env=base_env(**env))
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["branch"] == "main" and planned["default_branch"] == "main"
    assert [t["stage"] for t in planned["services"][0]["targets"]] == ["base", "deps", "final"]
    assert planned["bake"]["target"]["ruby-final"]["args"]["NPM_TOKEN"] == "[redacted]"

    text = run_dockercache("plan", cwd=project.path, env=base_env(**env))
    assert text.returncode == 0, text.stderr
    assert "on branch main (default branch main)" in text.stdout and "  final (final):" in text.stdout
    for output in (build, plan, text):
        assert "password1" not in output.stdout + output.stderr, output.argv
