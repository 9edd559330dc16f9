"""End-to-end: the S3 store served to real BuildKit through dockercache's registry endpoint (lazy reads).

The endpoint by itself (every route, uploads, leases) is tests/e2e/test_endpoint.py; here it runs inside real
builds: what BuildKit fetches, what it does when S3 fails under it, what it may write, and prune racing it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dockercache.config.caches import S3Cache
from dockercache.config.model import BUILDKIT_IMAGE
from dockercache.stores.s3.client import S3Store
from dockercache.stores.s3.endpoint import Endpoint, repository_name
from dockercache.stores.s3.endpoint_access import Repository
from dockercache.stores.s3.snapshots import Snapshots

from ..hardening.faults import FaultyS3
from .conftest import ACCESS_KEY, SECRET_KEY, S3Project, Stack, docker, s3_config

SNAPSHOT = "cache/snapshots/example/main/ruby/final.json"


def snapshot(client: Any, bucket: str, key: str = SNAPSHOT) -> dict[str, Any]:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[no-any-return]


def store(stack: Stack, bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return S3Store(
        S3Cache(type="s3", bucket=bucket, prefix="cache", endpoint_url=stack.s3_endpoint, region="us-east-1")
    )


def all_snapshots(client: Any, bucket: str) -> list[dict[str, Any]]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix="cache/snapshots/").get("Contents", [])
    return [snapshot(client, bucket, o["Key"]) for o in listed]


def is_sum_of(total: int, count: int, sizes: Iterable[int]) -> bool:
    """Whether ``total`` bytes is what ``count`` distinct blobs of these sizes add up to: the reported bytes
    are the sizes of the blobs fetched, not a count of something else (or zero)."""
    return total > 0 and any(sum(c) == total for c in itertools.combinations(sorted(sizes), count))


@pytest.mark.usefixtures("agent")
def test_a_fresh_agent_fetches_only_the_blobs_its_build_needs(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    saved = snapshot(s3_client, s3_project.bucket)
    total_bytes = sum(saved["blobs"].values())
    # Only the deps stage, on a fresh agent: its steps come from the snapshot without the final image's layers.
    s3_project.fresh_agent()
    deps = s3_project.build("--stage", "deps")
    assert deps.returncode == 0, deps.stderr
    row = deps.stage("ruby", "deps")
    assert (row["steps_cached"], row["steps_total"]) == (3, 3)
    down = sum(deps.stage("ruby", s)["s3"]["down"]["bytes"] for s in ("base", "deps"))
    fetched = sum(deps.stage("ruby", s)["s3"]["down"]["objects"] for s in ("base", "deps"))
    assert fetched < len(saved["blobs"]) and down < total_bytes / 2, (fetched, down, total_bytes)
    assert is_sum_of(down, fetched, saved["blobs"].values()), (down, fetched, saved["blobs"])
    # The whole image, pushed: more blobs, but each at most once, and never more than the snapshot holds.
    s3_project.fresh_agent()
    full = s3_project.build()
    assert full.returncode == 0, full.stderr
    final = full.stage("ruby", "final")["s3"]
    assert 0 < final["down"]["objects"] <= len(saved["blobs"]) and final["down"]["bytes"] <= total_bytes
    all_down = [full.stage("ruby", s)["s3"]["down"] for s in ("base", "deps", "final")]
    objects, size = sum(d["objects"] for d in all_down), sum(d["bytes"] for d in all_down)
    every = {d: n for doc in all_snapshots(s3_client, s3_project.bucket) for d, n in doc["blobs"].items()}
    assert is_sum_of(size, objects, every.values()), (size, objects, every)
    assert full.json["services"][0]["steps_cached"] == full.json["services"][0]["steps_total"]


@pytest.mark.usefixtures("agent")
@pytest.mark.hardening("faults")
def test_s3_failing_blob_gets_during_a_build_is_a_miss_not_an_outage(
    s3_project: S3Project, stack: Stack, s3_client: Any
) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    saved = snapshot(s3_client, s3_project.bucket)
    manifest = saved["index"]["manifests"][0]["digest"]
    body = s3_client.get_object(Bucket=s3_project.bucket, Key=f"cache/blobs/sha256/{manifest[7:]}")["Body"].read()
    layers = {d["digest"][7:] for d in json.loads(body)["layers"]}

    def fails(method: str, path: str) -> bool:
        # BuildKit's presigned GETs of layer blobs (the cache manifest and config still answer).
        return method == "GET" and "Signature=" in path and any(layer in path for layer in layers)

    with FaultyS3(stack.s3_endpoint, fails) as proxy:
        s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket, endpoint=proxy.endpoint))
        s3_project.fresh_agent()
        result = s3_project.build()
    assert proxy.failed, "BuildKit never fetched a layer through S3"
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "building again without it" in line]
    assert len(warnings) == 1 and "cache store 's3': fetching cache blob sha256:" in warnings[0]
    assert "500" in warnings[0] and result.json["services"][0]["status"] == "ok"
    # Nothing of the presigned URLs (signature, key id) reaches the output.
    output = result.stdout + result.stderr
    assert "Signature=" not in output.replace("Signature=[redacted]", "") and ACCESS_KEY not in output
    # The rebuilt cache was saved again, whole.
    assert result.stage("ruby", "final")["s3"]["saved"] == "example/main/ruby/final"
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket))
    assert s3_project.run("cache.verify", "--deep").returncode == 0


@pytest.mark.hardening("poisoning")
def test_buildkit_cannot_write_a_key_the_run_may_only_read(
    stack: Stack, tmp_path: Path, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint refuses the write itself (403), whatever cache-to BuildKit is given."""
    bucket = f"t{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    (tmp_path / "Dockerfile").write_text(f"FROM {stack.base_image}\nRUN echo {uuid.uuid4().hex} > /x\n")
    repo = repository_name("example/main", "ruby")
    with Endpoint(store(stack, bucket, monkeypatch), {repo: Repository("example/main", "ruby")}) as endpoint:
        ref = f"{endpoint.address}/{repo}:final"
        build = docker(
            "buildx",
            "build",
            "--builder",
            "default",
            "--cache-to",
            f"type=registry,ref={ref},mode=max,image-manifest=true,oci-mediatypes=true",
            str(tmp_path),
            check=False,
        )
        assert build.returncode != 0 and "403" in build.stderr, build.stderr[-2000:]
        assert endpoint.traffic.saved == {}
    listing = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listing == [], [o["Key"] for o in listing]  # not a blob, not an index


@pytest.mark.hardening("faults")
def test_prune_racing_a_save_never_leaves_a_snapshot_naming_a_deleted_blob(
    s3_project: S3Project, stack: Stack, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    snaps = Snapshots(store(stack, s3_project.bucket, monkeypatch))
    # The feature build restores main's snapshot; meanwhile main's index goes (retention) and a prune with
    # no grace runs over and over, deleting every blob no index or lease holds.
    s3_client.delete_object(Bucket=s3_project.bucket, Key=SNAPSHOT)
    done = threading.Event()
    deleted: list[str] = []

    def prune_loop() -> None:
        while not done.is_set():
            deleted.extend(
                snaps.prune(keep=None, older_than=timedelta(hours=1), dry_run=False, grace=timedelta(0)).blobs
            )

    pruner = threading.Thread(target=prune_loop)
    pruner.start()
    try:
        s3_project.fresh_agent()
        s3_project.touch_source()
        feature = s3_project.build(BUILDKITE_BRANCH="feature/x")
    finally:
        done.set()
        pruner.join(timeout=60)
    assert deleted, "the prune never deleted anything: no race happened"
    assert feature.returncode == 0, feature.stderr
    # Whatever the interleaving: every snapshot in the store names only blobs that are there.
    verify = s3_project.run("cache.verify", "--deep")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/leases/").get("KeyCount") == 0


@pytest.mark.usefixtures("agent")
def test_a_snapshot_saved_by_the_previous_release_still_restores(
    s3_project: S3Project, s3_client: Any, tmp_path: Path
) -> None:
    """The previous release saved BuildKit's local cache export (index.json and its blob directory)."""
    export = tmp_path / "export"
    s3_project.fresh_agent()
    build = docker(
        "buildx",
        "build",
        "--builder",
        "default",
        "--target",
        "final",
        f"--build-arg=BASE_IMAGE={s3_project_base(s3_project)}",
        "--cache-to",
        f"type=local,dest={export},mode=max",
        str(s3_project.path),
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    blobs = {}
    for path in (export / "blobs" / "sha256").iterdir():
        s3_client.put_object(Bucket=s3_project.bucket, Key=f"cache/blobs/sha256/{path.name}", Body=path.read_bytes())
        blobs[f"sha256:{path.name}"] = path.stat().st_size
    document = {
        "version": 1,
        "name": "example/main/ruby/final",
        "created": "2026-11-20T00:00:00+00:00",
        "service": "ruby",
        "stage": "final",
        "index": json.loads((export / "index.json").read_text()),
        "blobs": blobs,
    }
    s3_client.put_object(Bucket=s3_project.bucket, Key=SNAPSHOT, Body=json.dumps(document).encode())
    s3_project.fresh_agent()
    result = s3_project.build()
    assert result.returncode == 0, result.stderr
    assert result.stage("ruby", "final")["s3"]["restored_from"] == "example/main"
    assert result.json["services"][0]["steps_cached"] == result.json["services"][0]["steps_total"]


def s3_project_base(project: S3Project) -> str:
    text = (project.path / "dockercache.toml").read_text()
    return text.split('BASE_IMAGE = "', 1)[1].split('"', 1)[0]


def test_docker_container_builder_reaches_the_endpoint(s3_project: S3Project, tmp_path: Path) -> None:
    """Created with host networking and a buildkitd.toml naming the endpoint's ports as plain-HTTP registries
    (a docker-container builder cannot boot here: it pulls moby/buildkit; so the arguments are the test)."""
    name = f"dc-{uuid.uuid4().hex[:8]}"
    shim = tmp_path / "shim"
    shim.mkdir()
    real = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    (shim / "docker").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shim}/calls\n'
        'prev=""; for a in "$@"; do [ "$prev" = "--buildkitd-config" ] && cp "$a" '
        f'{shim}/buildkitd.toml; prev="$a"; done\n'
        f'exec {real} "$@"\n'
    )
    (shim / "docker").chmod(0o755)
    config = (s3_project.path / "dockercache.toml").read_text()
    s3_project.write_config(
        config.replace('name = "default"\ndriver = "docker"', f'name = "{name}"\ndriver = "docker-container"')
    )
    try:
        created = s3_project.run("builder.create", PATH=f"{shim}:{os.environ['PATH']}")
        # Created, then booted (which pulls moby/buildkit: exit 3 here, and the builder is removed again).
        assert created.returncode == 3 and f"builder '{name}' cannot boot" in created.stderr, created.stderr
        calls = (shim / "calls").read_text().splitlines()
        assert f"buildx inspect --bootstrap {name}" in calls and f"buildx rm {name}" in calls
        create = next(c for c in calls if c.startswith("buildx create"))
        assert create.split()[:11] == [
            "buildx",
            "create",
            "--name",
            name,
            "--driver",
            "docker-container",
            "--driver-opt",
            "network=host",
            "--driver-opt",
            f"image={BUILDKIT_IMAGE}",  # pinned (issue 27)
            "--buildkitd-config",
        ]
        toml = (shim / "buildkitd.toml").read_text()
        assert '[registry."127.0.0.1:47310"]\n  http = true\n  insecure = true\n' in toml
        assert toml.count("[registry.") == 16
    finally:
        docker("buildx", "rm", "--force", name, check=False)
