"""End-to-end: paths with commas (a checkout directory, a Dockerfile, a local store) build and restore.

buildx reads ``--cache-from``/``--cache-to`` values as CSV, so a directory whose name holds a comma must reach
it as a quoted field (``"src=/a,b/cache"``); unquoted, the comma would start a new attribute. And a bake
file's strings are HCL templates: a ``${`` in a path must reach bake escaped (``$${``).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .conftest import Project, Stack, copy_example, fresh_agent
from .test_local_store import STAGES, cached, index_files


@pytest.mark.e2e
@pytest.mark.hardening("faults")
def test_a_checkout_path_with_commas_builds_and_restores_from_its_local_store(stack: Stack, tmp_path: Path) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    path = tmp_path / "checkout,ref=elsewhere" / "ruby,app"
    copy_example(path, name)
    (path / "Dockerfile").rename(path / "ci,Dockerfile")
    project = Project(path, name)
    project.write_config(f"""
[builder]
name = "default"
driver = "docker"

[caches.default]
type = "local"
path = "cache,$${{dir}}"  # the directory cache,${{dir}}

[services.ruby]
context = "."
dockerfile = "ci,Dockerfile"
stages = ["base", "deps"]
target = "final"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
""")
    fresh_agent()
    first = project.build()
    assert first.returncode == 0, first.stderr
    store = path / "cache,${dir}"
    assert index_files(store), f"no cache was written under {store}"
    assert not (path / "checkout").exists() and not list(tmp_path.glob("*/cache*"))  # nowhere but the store
    fresh_agent()
    second = project.build()
    assert second.returncode == 0, second.stderr
    assert {s: done == total for s, (done, total) in cached(second).items()} == dict.fromkeys(STAGES, True)
