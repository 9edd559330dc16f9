"""End-to-end: one bake session per build, against the real Docker engine and registry.

Several services and stages build together; every step counts once; a failing target does not cost the
caches of the work that succeeded.
"""

from __future__ import annotations

import re

from .conftest import COMMIT, Project, Stack, fresh_agent

SHARED_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS base
ARG TEST_RUN
RUN echo one > /one
RUN echo two > /two

FROM base AS web
RUN echo web > /web

FROM base AS worker
RUN echo worker > /worker
"""


def shared_config(stack: Stack, name: str) -> str:
    return f"""
[builder]
name = "default"
driver = "docker"

[caches.default]
type = "registry"
ref = "{stack.host}/{name}/cache/{{service}}"

[services.web]
stages = ["base"]
target = "web"
image = "{stack.host}/{name}/web"
args = {{ BASE_IMAGE = "{stack.base_image}" }}

[services.worker]
stages = ["base"]
target = "worker"
image = "{stack.host}/{name}/worker"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
"""


def steps(result: object) -> dict[str, tuple[int, int]]:
    return {
        f"{svc['name']}/{s['stage']}": (s["steps_cached"], s["steps_total"])
        for svc in result.json["services"]  # type: ignore[attr-defined]
        for s in svc["stages"]
    }


def test_two_services_sharing_stages_build_together_and_count_each_step_once(project: Project, stack: Stack) -> None:
    # TEST_RUN: this test's own cache keys (see copy_example in conftest.py).
    (project.path / "Dockerfile").write_text(SHARED_DOCKERFILE.replace("ARG TEST_RUN", f"ARG TEST_RUN={project.name}"))
    project.write_config(shared_config(stack, project.name))
    fresh_agent()
    first = project.build()
    assert first.returncode == 0, first.stderr
    # Four steps in the Dockerfile: base's two count once, in the first service that builds base.
    assert steps(first) == {"web/base": (0, 2), "web/web": (0, 1), "worker/base": (0, 0), "worker/worker": (0, 1)}
    assert sum(total for _, total in steps(first).values()) == 4
    assert [s["status"] for svc in first.json["services"] for s in svc["stages"]] == ["ok"] * 4
    assert len(re.findall(r"^==> build( and push)?:", first.stderr, re.M)) == 1  # one bake run, one log group
    for svc in ("web", "worker"):
        assert stack.registry.tags(f"{project.name}/{svc}") == [COMMIT[:12]]
        # base is inside it; beside it, its record (why steps missed)
        assert stack.registry.tags(f"{project.name}/cache/{svc}") == [f"{svc}-main", f"{svc}-main.why"]
    fresh_agent()
    again = project.build()
    assert again.returncode == 0, again.stderr
    assert steps(again) == {"web/base": (2, 2), "web/web": (1, 1), "worker/base": (0, 0), "worker/worker": (1, 1)}


FAILING_TEST_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS base
ARG TEST_RUN
RUN echo base > /base

FROM base AS deps
COPY Gemfile.lock /deps.lock
RUN sleep 1 && cp /deps.lock /installed

FROM deps AS test
COPY app/ /app/
RUN sh /app/tests.sh

FROM deps AS final
COPY lib/ /lib/
RUN cat /installed > /final
"""


def test_a_failing_test_stage_keeps_the_dependency_cache(project: Project, stack: Stack) -> None:
    dockerfile = FAILING_TEST_DOCKERFILE.replace("ARG TEST_RUN", f"ARG TEST_RUN={project.name}")
    (project.path / "Dockerfile").write_text(dockerfile)
    (project.path / "app" / "tests.sh").write_text("test -s /installed && echo 'tests ok'\n")
    config = (
        (project.path / "dockercache.toml")
        .read_text()
        .replace('stages = ["base", "deps"]', 'stages = ["base", "deps", "test"]')
    )
    project.write_config(config)
    fresh_agent()
    assert project.build().returncode == 0
    repo = f"{project.name}/cache"
    final_before, _ = stack.registry.manifest(repo, "final-main")
    images_before = stack.registry.tags(f"{project.name}/ruby")

    # A commit that changes the dependencies and breaks the tests.
    with (project.path / "Gemfile.lock").open("a") as f:
        f.write("newgem (1.0.0)\n")
    tests = project.path / "app" / "tests.sh"
    good = tests.read_text()
    tests.write_text("echo 'test failed' >&2\nexit 4\n")
    fresh_agent()
    failed = project.build()
    assert failed.returncode == 1
    stages = {s["stage"]: s for s in failed.json["services"][0]["stages"]}
    assert stages["test"]["status"] == "failed" and "exit code: 4" in stages["test"]["error"], failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("dockercache: error: ruby/test: build failed:")
    assert "==> output of [test 2/2] RUN sh /app/tests.sh (target ruby-test)" in failed.stderr
    assert "test failed" in failed.stderr
    # The dependencies were installed once; their cache was written although the run failed (in the final
    # image's cache, the largest that does not build on the failed stage) ...
    for stage in ("base", "deps", "final"):
        assert stages[stage]["status"] == "cancelled", failed.stderr
        assert stages[stage]["cache_written"] == f"{stack.host}/{repo}:final-main", failed.stderr
    assert stack.registry.manifest(repo, "final-main")[0] != final_before
    # ... and nothing was pushed for a failed run.
    assert stack.registry.tags(f"{project.name}/ruby") == images_before

    # The fix: the next fresh agent does not install the dependencies again.
    tests.write_text(good)
    fresh_agent()
    fixed = project.build()
    assert fixed.returncode == 0, fixed.stderr
    fixed_stages = {s["stage"]: s for s in fixed.json["services"][0]["stages"]}
    assert (fixed_stages["deps"]["steps_cached"], fixed_stages["deps"]["steps_total"]) == (2, 2)
    assert (fixed_stages["final"]["steps_cached"], fixed_stages["final"]["steps_total"]) == (2, 2)
