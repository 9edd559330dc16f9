"""End-to-end: skip_unchanged against the real registry.

A build pushes its image and the key's tag (``dc-<key>``); the next build with nothing changed runs no bake at
all and retags that image to its own tags; an ignored file changes nothing; a source file or a build argument
builds again.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from .conftest import COMMIT, STUB_AGENT, Project, Result, Stack, base_env, run_dockercache

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def skip_config(stack: Stack, name: str, extra_args: str = "") -> str:
    return f"""
[settings]
skip_unchanged = true

[builder]
name = "default"
driver = "docker"

[caches.default]
type = "registry"
ref = "{stack.host}/{name}/cache"

[services.ruby]
context = "."
stages = ["base", "deps"]
target = "final"
image = "{stack.host}/{name}/ruby"
metadata_key = "ruby-image"
args = {{ BASE_IMAGE = "{stack.base_image}"{extra_args} }}
"""


def image_manifest(stack: Stack, repo: str, tag: str) -> str:
    """The digest of the image manifest a tag resolves to (through an index: its one runnable image)."""
    digest, body = stack.registry.manifest(repo, tag)
    if body.get("mediaType") in (MANIFEST, DOCKER_MANIFEST) or "layers" in body:
        return str(digest)
    images = [m for m in body["manifests"] if (m.get("platform") or {}).get("os") != "unknown"]
    assert len(images) == 1, body
    return str(images[0]["digest"])


def build(project: Project, stub: Path, commit: str) -> Result:
    env = base_env(
        BUILDKITE="true",
        BUILDKITE_AGENT_STUB_DIR=str(stub),
        BUILDKITE_COMMIT=commit,
        PATH=f"{STUB_AGENT}:{os.environ['PATH']}",
    )
    return run_dockercache("build", "--json", cwd=project.path, env=env)


def meta_data(stub: Path) -> dict[str, Any]:
    path = stub / "meta-data.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def test_nothing_changed_retags_the_image_and_a_change_builds(project: Project, stack: Stack, tmp_path: Path) -> None:
    repo = f"{project.name}/ruby"
    project.write_config(skip_config(stack, project.name))
    with (project.path / ".dockerignore").open("a") as f:
        f.write("*.md\n")
    (project.path / "NOTES.md").write_text("ignored by the build\n")
    plan = run_dockercache("plan", "--json", cwd=project.path, env=base_env())
    skip = plan.json["services"][0]["skip_unchanged"]
    assert skip["enabled"] is True and skip["inputs"]["files"] >= 5, skip
    assert skip["inputs"]["base_images"] == [{"ref": stack.base_image, "digest": None}]
    no_push = run_dockercache("plan", "--no-push", cwd=project.path, env=base_env())
    assert "skip unchanged: off (nothing is pushed (--no-push" in no_push.stdout, no_push.stdout
    commits = iter(f"{n:x}{uuid.uuid4().hex}{COMMIT}"[:40] for n in range(1, 10))

    # 1. A first build pushes the image and, beside it, the key's tag.
    first_commit = next(commits)
    first = build(project, tmp_path / "bk1", first_commit)
    assert first.returncode == 0, first.stderr
    service = first.json["services"][0]
    key = service["skip"]["key"]
    assert service["status"] == "ok" and service["skip"]["status"] == "built", service["skip"]
    assert service["skip"]["inputs"]["base_images"][stack.base_image].startswith("sha256:")
    digest = service["image"]["digest"]
    assert digest and f"dc-{key[:32]}" in stack.registry.tags(repo)
    built = image_manifest(stack, repo, first_commit[:12])
    assert image_manifest(stack, repo, f"dc-{key[:32]}") == built

    # 2. Nothing changed, a new commit: no bake, the image retagged, meta-data as a build sets it.
    second_commit = next(commits)
    second = build(project, tmp_path / "bk2", second_commit)
    assert second.returncode == 0, second.stderr
    service = second.json["services"][0]
    assert service["status"] == "skipped" and service["skip"]["status"] == "skipped (unchanged)", service
    assert service["skip"]["key"] == key
    assert {s["status"] for s in service["stages"]} == {"skipped"}
    assert second.json["buildx_seconds"] == 0 and "buildx bake" not in second.stderr
    assert service["image"]["digest"] == digest and service["image"]["pushed"] is True
    assert image_manifest(stack, repo, second_commit[:12]) == built  # no layer moved, the same image
    assert meta_data(tmp_path / "bk2") == {"ruby-image": f"{stack.host}/{repo}:{second_commit[:12]}"}
    text = run_dockercache("build", cwd=project.path, env=base_env(BUILDKITE_COMMIT=next(commits)))  # the table
    assert text.returncode == 0, text.stderr
    assert "skipped (unchanged)" in text.stdout and f"key dc-{key[:32]}" in text.stdout, text.stdout

    # 3. An ignored file changed: still skipped.
    (project.path / "NOTES.md").write_text("changed, still ignored\n")
    ignored = build(project, tmp_path / "bk3", next(commits))
    assert ignored.json["services"][0]["status"] == "skipped", ignored.json["services"][0]["skip"]

    # 4. A source file changed: built, under a new key.
    project.touch_source()
    changed = build(project, tmp_path / "bk4", next(commits))
    assert changed.returncode == 0, changed.stderr
    service = changed.json["services"][0]
    assert service["status"] == "ok" and service["skip"]["key"] != key, service["skip"]
    assert changed.json["buildx_seconds"] > 0
    new_key = service["skip"]["key"]

    # 5. A build argument changed: built.
    project.write_config(skip_config(stack, project.name, ', EXTRA = "1"'))
    argument = build(project, tmp_path / "bk5", next(commits))
    assert argument.returncode == 0, argument.stderr
    service = argument.json["services"][0]
    assert service["status"] == "ok" and service["skip"]["key"] not in (key, new_key), service["skip"]
