"""End-to-end: cache mounts (``RUN --mount=type=cache``) survive a fresh agent, with the registry and local stores.

The project's dependency step is a stand-in for a package manager: slow (8 s) with an empty cache mount, fast
when the mount holds what it left there. Each test builds once, wipes the agent (build cache, cache mounts and
images; the local store's directory stays, as an agent volume would), changes the dependency file so the layer
cache misses that step, and builds again: the step must find its cache mount filled.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from dockercache.config.caches import LocalCache, local_store_path

from .conftest import ACCESS_KEY, SECRET_KEY, Result, Stack, base_env, docker, fresh_agent, run_dockercache

SLEEP = 8


def write_project(path: Path, name: str) -> str:
    """A project whose dependency step leaves ``HIT``/``MISS`` in /result; the mount's target (its id) is the
    test's own, so no other build on this daemon shares it."""
    target = f"/cache-{name}"
    (path / "deps.txt").write_text("rack 1.0\n")
    (path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\n"
        "FROM ${BASE_IMAGE} AS deps\n"
        f"ARG TEST_RUN={name}\n"
        "COPY deps.txt /deps.txt\n"
        f"RUN --mount=type=cache,target={target},uid=0 sh -c 'if [ -f {target}/pkgs ]; then echo HIT > /result; "
        f"else sleep {SLEEP}; echo data > {target}/pkgs; echo MISS > /result; fi; cat /deps.txt >> /result'\n"
        "FROM deps AS final\n"
        "RUN cat /result\n"
    )
    return target


def config(stack: Stack, name: str, store: str, enabled: bool = True) -> str:
    return f"""
[settings]
cache_mounts = {"true" if enabled else "false"}
cache_mounts_image = "{stack.base_image}"

[builder]
name = "default"
driver = "docker"

[caches.default]
{store}

[services.app]
context = "."
args = {{ BASE_IMAGE = "{stack.base_image}" }}
tags = ["{name}"]
"""


def user_cache(path: Path) -> Path:
    """Where a project's built-in-path local store lives in these tests (``$DOCKERCACHE_CACHE_DIR``)."""
    return path.parent / f"{path.name}-user-cache"


def build(path: Path, **env: str) -> Result:
    env.setdefault("DOCKERCACHE_CACHE_DIR", str(user_cache(path)))
    result = run_dockercache("build", "--json", cwd=path, env=base_env(**env))
    assert result.returncode == 0, result.stderr
    return result


def step_seconds(result: Result) -> float:
    """The dependency step's time, from the progress line dockercache prints for it."""
    match = re.search(r"DONE ([\d.]+)s\s+\[deps \d+/\d+\] RUN --mount=type=cache", result.stderr)
    assert match, result.stderr
    return float(match.group(1))


def seen(name: str) -> str:
    """What the dependency step found: HIT or MISS (the image is loaded into Docker, as ``app:<tag>``)."""
    return docker("run", "--rm", f"app:{name}", "head", "-n1", "/result").stdout.strip()


def change_dependencies(path: Path) -> None:
    with (path / "deps.txt").open("a") as f:
        f.write(f"rails {uuid.uuid4().hex[:6]}\n")


def mounts(result: Result) -> dict[str, object]:
    value = result.json["services"][0]["cache_mounts"]
    assert isinstance(value, dict)
    return value


def persisted_and_not(path: Path, stack: Stack, name: str, store: str, **env: str) -> Result:
    """Build, fresh agent, dependency change, build again (with persistence); then the same without it."""
    target = write_project(path, name)
    (path / "dockercache.toml").write_text(config(stack, name, store))
    fresh_agent()
    first = build(path, **env)
    assert seen(name) == "MISS"
    saved = mounts(first)
    assert list(saved["saved"]) == [target] and saved["saved_bytes"] > 0, first.stderr  # type: ignore[index,operator,call-overload]
    fresh_agent()
    change_dependencies(path)
    second = build(path, BUILDKITE_BRANCH="topic", **env)
    assert seen(name) == "HIT", second.stderr  # the functional check: the step found its cache filled
    with_mounts = step_seconds(second)
    # Without persistence, on a fresh agent after another dependency change: the step starts empty.
    (path / "dockercache.toml").write_text(config(stack, name, store, enabled=False))
    fresh_agent()
    change_dependencies(path)
    third = build(path, **env)
    assert seen(name) == "MISS"
    assert third.json["services"][0]["cache_mounts"] is None
    without = step_seconds(third)
    print(f"\n{name}: dependency step on a fresh agent: {with_mounts:.1f}s with cache mounts, {without:.1f}s without")
    return second


def test_registry_store_restores_cache_mounts_on_a_fresh_agent(stack: Stack, tmp_path: Path) -> None:
    name = f"m{uuid.uuid4().hex[:10]}"
    store = f'type = "registry"\nref = "{stack.host}/{name}/cache"'
    second = persisted_and_not(tmp_path, stack, name, store)
    report = mounts(second)
    # A new branch starts from the default branch's archives and writes its own.
    assert report["restored_from"] == f"{stack.host}/{name}/cache:mounts-app-main (branch main)", second.stderr
    assert report["restored_bytes"] > 0  # type: ignore[operator]
    assert report["saved_to"] == f"{stack.host}/{name}/cache:mounts-app-topic (branch topic)"
    assert {"mounts-app-main", "mounts-app-topic"} <= set(stack.registry.tags(f"{name}/cache"))
    assert "cache mounts: restored 1 of 1" in second.stderr


def test_mounts_are_not_saved_again_when_nothing_that_mounts_them_ran(stack: Stack, tmp_path: Path) -> None:
    """Nothing changed, fresh agent: every step comes from the layer cache, so the helper does not archive and
    push the mounts again (about 1.5 s on the cache-mounts benchmark's project); the saved image stays."""
    name = f"m{uuid.uuid4().hex[:10]}"
    write_project(tmp_path, name)
    (tmp_path / "dockercache.toml").write_text(config(stack, name, f'type = "registry"\nref = "{stack.host}/{name}/c"'))
    fresh_agent()
    first = build(tmp_path)
    assert mounts(first)["saved_bytes"] > 0 and mounts(first)["unchanged"] is False  # type: ignore[operator]
    before = stack.registry.manifest(f"{name}/c", "mounts-app-main")[0]
    fresh_agent()
    again = build(tmp_path)
    report = mounts(again)
    assert report["unchanged"] is True and report["saved_to"] is None, again.stderr
    assert report["restored_bytes"] > 0  # restored before the build, as always: it cannot know yet
    assert "not saved again: every step that mounts them came from the layer cache" in again.stderr
    assert stack.registry.manifest(f"{name}/c", "mounts-app-main")[0] == before


def test_local_store_restores_cache_mounts_on_a_fresh_agent(stack: Stack, tmp_path: Path) -> None:
    name = f"m{uuid.uuid4().hex[:10]}"
    second = persisted_and_not(tmp_path, stack, name, 'type = "local"')
    report = mounts(second)
    store = local_store_path(LocalCache(type="local"), tmp_path, {"DOCKERCACHE_CACHE_DIR": str(user_cache(tmp_path))})
    mounts_dir = store.with_name(store.name + ".mounts")
    main = mounts_dir / "app" / "main"
    assert report["restored_from"] == f"{main} (branch main)"
    assert main.is_symlink() and (main / "index.json").is_file()
    assert (mounts_dir / "app" / "topic").is_symlink()
    assert not (tmp_path / ".dockercache").exists()
    assert not [p for p in main.parent.iterdir() if ".incoming-" in p.name]  # never half-written


def test_s3_store_keeps_cache_mounts_as_a_snapshot_that_prune_and_verify_know(
    stack: Stack, tmp_path: Path, s3_client: Any
) -> None:
    name = f"m{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=name)
    store = f'type = "s3"\nbucket = "{name}"\nprefix = "cache"\nendpoint_url = "{stack.s3_endpoint}"\n'
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    second = persisted_and_not(tmp_path, stack, name, store, **env)
    report = mounts(second)
    index = "cache/snapshots/example/{}/app/_mounts.json"
    assert report["restored_from"] == f"s3://{name}/{index.format('main')} (branch main)", second.stderr
    assert report["restored_bytes"] > 0 and report["saved_to"] == f"s3://{name}/{index.format('topic')} (branch topic)"  # type: ignore[operator]
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=name)["Contents"]}
    assert {index.format("main"), index.format("topic")} <= keys
    # The archives were fetched by BuildKit from S3 through the endpoint; they count in no stage's download.
    assert "cache mounts: restored 1 of 1" in second.stderr
    assert not any(k.startswith("cache/leases/") for k in keys)
    # A snapshot like any other: verify reads its blobs back, prune keeps them (they are referenced) ...
    run = lambda *a: run_dockercache(*a, cwd=tmp_path, env=base_env(**env))  # noqa: E731
    verify = run("cache.verify", "--deep")
    assert verify.returncode == 0, verify.stderr
    pruned = run("cache.prune", "--keep", "5", "--grace", "0s", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.json["blobs_deleted"] > 0, pruned.stdout  # the layers the last build replaced: it did prune
    body = s3_client.get_object(Bucket=name, Key=index.format("main"))["Body"].read()
    archives = [f"cache/blobs/sha256/{d.removeprefix('sha256:')}" for d in json.loads(body)["blobs"]]
    left = {o["Key"] for o in s3_client.list_objects_v2(Bucket=name)["Contents"]}
    assert len(archives) >= 2 and set(archives) <= left  # the mounts image: its config, layer and manifest
    # ... so a fresh agent on the default branch, after another dependency change, still finds them.
    fresh_agent()
    change_dependencies(tmp_path)
    (tmp_path / "dockercache.toml").write_text(config(stack, name, store))
    fourth = build(tmp_path, **env)
    assert seen(name) == "HIT", fourth.stderr
    assert mounts(fourth)["restored_from"] == f"s3://{name}/{index.format('main')} (branch main)"


def test_plan_shows_the_cache_mounts_and_where_they_go(stack: Stack, tmp_path: Path) -> None:
    name = f"m{uuid.uuid4().hex[:10]}"
    target = write_project(tmp_path, name)
    (tmp_path / "dockercache.toml").write_text(config(stack, name, f'type = "registry"\nref = "{stack.host}/{name}/c"'))
    shown = run_dockercache("plan", cwd=tmp_path, env=base_env(BUILDKITE_BRANCH="topic"))
    assert shown.returncode == 0, shown.stderr
    assert f"  cache mounts: {target} (deps)" in shown.stdout
    assert f"    restore from: {stack.host}/{name}/c:mounts-app-topic (branch topic)" in shown.stdout
    bake = run_dockercache("plan", "--bake", cwd=tmp_path, env=base_env())
    mounts_shown = bake.json["x-dockercache-cache-mounts"]["app"]
    assert mounts_shown["save_to"]["location"] == f"{stack.host}/{name}/c:mounts-app-main"
    assert mounts_shown["image"] == stack.base_image
