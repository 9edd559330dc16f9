"""End-to-end (issue 29): every cache miss names its cause. examples/ruby with a registry store, built again after
a one-file change, a lockfile change and a build-arg change: the report, ``--json``'s ``misses`` and ``dockercache
explain`` name the file, the lockfile and the argument; the record beside the cache holds no argument's value."""

from __future__ import annotations

import base64
import gzip
from typing import Any

from .conftest import Project, Stack, base_env, registry_config, run_dockercache


def misses(result: Any) -> dict[str, dict[str, Any]]:
    return {m["target"]: m for m in result.json["misses"]}


def record(project: Project, stack: Stack) -> bytes:
    """The record beside the cache: a tag beside the cache ref, the record in an annotation."""
    _, manifest = stack.registry.manifest(f"{project.name}/cache", "final-main.why")
    return gzip.decompress(base64.b64decode(manifest["annotations"]["org.dockercache.record"]))


def test_each_miss_names_the_file_the_lockfile_and_the_build_arg(project: Project, stack: Stack) -> None:
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert {m["kind"] for m in first.json["misses"]} == {"absent"}  # a first build: no cache to read
    assert stack.registry.tags(f"{project.name}/cache") == ["final-main", "final-main.why"]
    assert b"COPY Gemfile Gemfile.lock ./" in record(project, stack)

    again = project.build()
    assert again.returncode == 0 and again.json["misses"] == [], again.json["misses"]

    project.touch_source()  # app/main.sh
    explained = run_dockercache("explain", "--json", cwd=project.path, env=base_env())
    assert explained.returncode == 0, explained.stderr
    assert [(m["target"], m["paths"]) for m in explained.json["misses"]] == [("ruby/final", ["app/main.sh"])]
    one_file = project.build()
    assert one_file.returncode == 0, one_file.stderr
    found = misses(one_file)
    assert list(found) == ["ruby/final"], found
    assert found["ruby/final"]["step"] == "COPY app/ /app/app/"
    assert (found["ruby/final"]["kind"], found["ruby/final"]["paths"]) == ("files", ["app/main.sh"])

    with (project.path / "Gemfile.lock").open("a") as f:
        f.write("json 2.7.1\n")
    lockfile = project.build()
    assert lockfile.returncode == 0, lockfile.stderr
    found = misses(lockfile)
    assert (found["ruby/deps"]["kind"], found["ruby/deps"]["paths"]) == ("files", ["Gemfile.lock"])
    assert found["ruby/deps"]["cause"] == "`Gemfile.lock` changed"
    assert found["ruby/final"]["kind"] == "earlier" and found["ruby/final"]["paths"] == ["Gemfile.lock"]

    project.write_config(
        registry_config(stack, project.name).replace("args = {", f'args = {{ TEST_RUN = "{project.name}-2",', 1)
    )
    plain = run_dockercache("build", cwd=project.path, env=base_env())
    assert plain.returncode == 0, plain.stderr
    assert "  ruby/base: missed at `RUN mkdir" in plain.stdout and "build arg `TEST_RUN` changed" in plain.stdout
    assert f"{project.name}-2" not in plain.stdout and f"{project.name}-2".encode() not in record(project, stack)
