"""End-to-end: the local directory store (the default with no [caches] table), on the real Docker engine."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Project, Stack, fresh_agent

STAGES = ("base", "deps", "final")


def local_config(stack: Stack, extra: str = "") -> str:
    return f"""
[builder]
name = "default"
driver = "docker"

[services.ruby]
context = "."
stages = ["base", "deps"]
target = "final"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
{extra}"""


def cached(result: object) -> dict[str, tuple[int, int]]:
    return {
        s: (result.stage("ruby", s)["steps_cached"], result.stage("ruby", s)["steps_total"])  # type: ignore[attr-defined]
        for s in STAGES
    }


def index_files(root: Path) -> list[Path]:
    return sorted(root.rglob("index.json"))


def test_the_local_store_restores_on_an_agent_whose_build_cache_is_gone(project: Project, stack: Stack) -> None:
    project.write_config(local_config(stack))
    fresh_agent()
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert all(done == 0 for done, _ in cached(first).values())
    store = project.path / ".dockercache"
    indexes = index_files(store)
    assert indexes, f"no cache was written under {store}"
    for index in indexes:  # a complete BuildKit local export: every blob its index names is there
        blobs = index.parent / "blobs" / "sha256"
        for manifest in json.loads(index.read_text())["manifests"]:
            assert (blobs / manifest["digest"].removeprefix("sha256:")).is_file()
    assert not [p for p in store.rglob("*") if ".incoming" in p.name or ".old-" in p.name]  # nothing half-swapped
    # Docker's own build cache and images gone, the directory kept (a persistent agent volume): all from it.
    fresh_agent()
    second = project.build()
    assert second.returncode == 0, second.stderr
    assert {s: done == total for s, (done, total) in cached(second).items()} == dict.fromkeys(STAGES, True)
    assert second.json["services"][0]["steps_cached"] == second.json["services"][0]["steps_total"] > 0
