"""End-to-end: matrix variants of examples/ruby, built in one bake run against the real Docker and registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import COMMIT, STUB_AGENT, Project, Stack, docker, fresh_agent, registry_config, run_dockercache

VARIANTS = ("3.2", "3.3")
STAGES = ("base", "deps", "final")


def matrix_project(project: Project, stack: Stack) -> None:
    """The example with a matrix over RUBY_VERSION, which only its final stage reads (so base and deps are
    the same steps for both variants) and writes into the image."""
    dockerfile = project.path / "Dockerfile"
    text = dockerfile.read_text()
    anchor = "RUN sh /app/app/selftest.sh\n"
    assert anchor in text
    dockerfile.write_text(
        text.replace(anchor, f'{anchor}ARG RUBY_VERSION\nRUN echo "ruby $RUBY_VERSION" > /app/matrix-version\n')
    )
    config = registry_config(stack, project.name).replace(
        "[services.ruby]\n",
        '[services.ruby]\nmatrix = { RUBY_VERSION = ["3.2", "3.3"] }\nmetadata_key = "ruby-image"\n',
    )
    project.write_config(config)


def test_two_variants_build_in_one_bake_run_with_their_own_tags_args_and_caches(
    project: Project, stack: Stack, tmp_path: Path
) -> None:
    matrix_project(project, stack)
    bake = run_dockercache("plan", "--bake", cwd=project.path)
    assert bake.returncode == 0, bake.stderr
    assert json.loads(bake.stdout)["group"]["default"]["targets"] == ["ruby-3_2-final", "ruby-3_3-final"]

    fresh_agent()
    agent = tmp_path / "agent"
    result = project.build(
        BUILDKITE="true", PATH=f"{STUB_AGENT}:{os.environ['PATH']}", BUILDKITE_AGENT_STUB_DIR=str(agent)
    )
    assert result.returncode == 0, result.stderr
    services = result.json["services"]
    assert [s["name"] for s in services] == ["ruby[3.2]", "ruby[3.3]"]
    # One bake run: both variants' steps are in one progress stream, each under its own bake target.
    assert "[ruby-3_2-final " in result.stderr and "[ruby-3_3-final " in result.stderr
    assert result.stderr.count(":docker: build and push:") == 1, result.stderr
    assert "+++ :docker: build and push: ruby[3.2] (final), ruby[3.3] (final)\n" in result.stderr

    # Each variant pushed under its own tag, with its own build arg inside.
    repo = f"{project.name}/ruby"
    tags = [f"{COMMIT[:12]}-{v}" for v in VARIANTS]
    assert stack.registry.tags(repo) == tags
    digests = []
    for svc, variant, tag in zip(services, VARIANTS, tags, strict=True):
        digest, _ = stack.registry.manifest(repo, tag)
        assert svc["image"]["digest"] == digest and svc["image"]["pushed"] is True
        digests.append(digest)
        ran = docker("run", "--rm", f"{stack.host}/{repo}:{tag}", "cat", "/app/matrix-version")
        assert ran.stdout.strip() == f"ruby {variant}"
    assert digests[0] != digests[1]

    # Each variant wrote a cache of its own; the report's rows say which.
    cache = f"{project.name}/cache"
    # each beside its record (why steps missed, issue 29)
    assert stack.registry.tags(cache) == sorted(f"final-main-{v}{why}" for v in VARIANTS for why in ("", ".why"))
    for variant in VARIANTS:
        for stage in STAGES:
            assert (
                result.stage(f"ruby[{variant}]", stage)["cache_written"] == f"{stack.host}/{cache}:final-main-{variant}"
            )
    # Meta-data under a key per variant (the configured key and the id), and an annotation each.
    meta = json.loads((agent / "meta-data.json").read_text())
    assert meta["ruby-image-3.2"] == f"{stack.host}/{repo}:{tags[0]}"
    assert meta["ruby-image-3.3"] == f"{stack.host}/{repo}:{tags[1]}"
    annotations = json.loads((agent / "annotations.json").read_text())
    assert {"dockercache-ruby[3.2]", "dockercache-ruby[3.3]"} <= set(annotations)

    # A fresh agent rebuilds both variants entirely from their caches.
    fresh_agent()
    again = project.build()
    assert again.returncode == 0, again.stderr
    # Every step counts once: the base steps both variants share (one vertex BuildKit solves once, named for
    # both) in the first variant's rows; deps, whose COPY reads each target's own context transfer, is solved
    # once per variant and counted in each.
    totals = {svc["name"]: (svc["steps_cached"], svc["steps_total"]) for svc in again.json["services"]}
    assert totals == {"ruby[3.2]": (9, 9), "ruby[3.3]": (7, 7)}, again.stdout
    assert all(svc["status"] == "ok" for svc in again.json["services"])
    assert stack.registry.tags(cache) == sorted(f"final-main-{v}{why}" for v in VARIANTS for why in ("", ".why"))


def test_one_variant_is_selected_by_its_name(project: Project, stack: Stack) -> None:
    matrix_project(project, stack)
    result = project.build("--service", "ruby[3.3]", "--no-push")
    assert result.returncode == 0, result.stderr
    assert [s["name"] for s in result.json["services"]] == ["ruby[3.3]"]
    ran = docker("run", "--rm", f"{stack.host}/{project.name}/ruby:{COMMIT[:12]}-3.3", "cat", "/app/matrix-version")
    assert ran.stdout.strip() == "ruby 3.3"
    assert stack.registry.tags(f"{project.name}/ruby") == []
