"""Hardening, group faults: failures at run time against the real stack.

Where a cache is at fault the build succeeds as a cache miss with a warning; where the build itself cannot
run it fails with one clear line; afterwards every snapshot S3 lists still restores completely.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..e2e.conftest import (
    COMMIT,
    DOCKERCACHE,
    ExtraRegistry,
    Project,
    S3Project,
    Stack,
    base_env,
    fresh_agent,
    registry_config,
    run_dockercache,
    s3_config,
)
from .faults import FaultyRegistry, FaultyS3

pytestmark = [pytest.mark.e2e, pytest.mark.hardening("faults")]


def verify_all(project: S3Project) -> None:
    result = project.run("cache.verify", "--deep")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 problem(s)" in result.stdout


def test_cache_registry_failing_during_export(project: Project, stack: Stack, extra_registry: ExtraRegistry) -> None:
    """The cache registry answers 500 to one of two cache manifests (deps runs as a target of its own because
    its image is pushed): that target reports no cache written, with a warning; the other's cache is written;
    the images still go out."""

    def fails(method: str, path: str) -> bool:
        return method == "PUT" and path.endswith("/manifests/final-main")

    with FaultyRegistry(extra_registry.host.replace("localhost", "127.0.0.1"), fails) as proxy:
        config = registry_config(stack, project.name, cache_host=proxy.host)
        project.write_config(config.replace("target = ", 'push_stages = ["deps"]\ntarget = '))
        fresh_agent()
        result = project.build()
    assert result.returncode == 0, result.stderr
    assert proxy.failed == [f"PUT /v2/{project.name}/cache/manifests/final-main"]
    deps_ref = f"{proxy.host}/{project.name}/cache:deps-main"
    assert result.stage("ruby", "deps")["cache_written"] == deps_ref
    assert result.stage("ruby", "base")["cache_written"] == deps_ref  # built inside deps
    final = result.stage("ruby", "final")
    assert final["cache_written"] is None, final
    assert any("exporting cache to registry" in w for w in final["cache_warnings"]), final
    assert "exporting cache to registry" in result.stderr
    assert stack.registry.tags(f"{project.name}/ruby") == sorted([COMMIT[:12], f"deps-{COMMIT[:12]}"])


def test_truncated_index_in_s3_is_a_miss(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    key = "cache/snapshots/example/main/ruby/final.json"
    body = s3_client.get_object(Bucket=s3_project.bucket, Key=key)["Body"].read()
    s3_client.put_object(Bucket=s3_project.bucket, Key=key, Body=body[: len(body) // 2])
    s3_project.fresh_agent()
    result = s3_project.build()
    assert result.returncode == 0, result.stderr
    assert "snapshot example/main/ruby/final" in result.stderr and "broken index" in result.stderr
    assert result.stage("ruby", "final")["s3"]["restored_from"] is None
    assert result.json["services"][0]["status"] == "ok"
    verify_all(s3_project)  # the rebuild saved a whole snapshot over the broken one


def test_s3_returning_errors_on_every_request(s3_project: S3Project, stack: Stack) -> None:
    with FaultyS3(stack.s3_endpoint, lambda method, path: True) as proxy:
        s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket, endpoint=proxy.endpoint))
        s3_project.fresh_agent()
        result = s3_project.build()
    assert result.returncode == 0, result.stderr
    assert "checking the bucket: 500" in result.stderr and "building without this cache" in result.stderr
    assert "save final" not in result.stderr  # no save is attempted against a store known to be broken
    assert proxy.failed
    assert result.json["services"][0]["status"] == "ok"
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket))
    verify_all(s3_project)


def test_s3_failing_writes_keep_the_previous_snapshot(s3_project: S3Project, stack: Stack, s3_client: Any) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    before = s3_client.get_object(Bucket=s3_project.bucket, Key="cache/snapshots/example/main/ruby/final.json")
    with FaultyS3(stack.s3_endpoint, lambda method, path: method in ("PUT", "POST")) as proxy:
        s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket, endpoint=proxy.endpoint))
        s3_project.fresh_agent()
        s3_project.touch_source()
        result = s3_project.build()
    assert result.returncode == 0, result.stderr
    assert result.stage("ruby", "final")["s3"]["restored_from"] == "example/main"  # reads still worked
    final = result.stage("ruby", "final")
    assert final["s3"]["saved"] is None and any("InternalError" in w for w in final["cache_warnings"])
    after = s3_client.get_object(Bucket=s3_project.bucket, Key="cache/snapshots/example/main/ruby/final.json")
    assert after["ETag"] == before["ETag"]
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket))
    verify_all(s3_project)


def test_s3_errors_are_fatal_on_request(s3_project: S3Project, stack: Stack) -> None:
    with FaultyS3(stack.s3_endpoint, lambda method, path: True) as proxy:
        s3_project.write_config(
            '[settings]\ncache_errors = "fail"\n'
            + s3_config(stack, s3_project.name, s3_project.bucket, endpoint=proxy.endpoint)
        )
        result = s3_project.build()
    assert result.returncode == 1
    assert "cache_errors = 'fail'" in result.stderr
    # Decided before the build: no image pushed, nothing recorded for later steps.
    assert (
        not re.search(r"^==> build( and push)?:", result.stderr, re.M)
        and stack.registry.tags(f"{s3_project.name}/ruby") == []
    )
    assert s3_project.meta_data() == {}
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket))
    verify_all(s3_project)


def test_two_agents_saving_the_same_key_at_once(s3_project: S3Project) -> None:
    s3_project.fresh_agent()
    first = [
        subprocess.Popen(
            [str(DOCKERCACHE), "build", "--json"],
            cwd=s3_project.path,
            # Two agents share this one Docker daemon here, so their images get different tags (commits);
            # both save the same snapshot key, example/main.
            env=s3_project.env(BUILDKITE_COMMIT=f"{i}" * 40),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in first]
    assert [p.returncode for p in first] == [0, 0], [o[1][-2000:] for o in outputs]
    assert all(json.loads(o[0])["services"][0]["status"] == "ok" for o in outputs)
    verify_all(s3_project)
    # Every stage's snapshot says which commit wrote it (one whole save, not a mix nobody can tell apart).
    listed = json.loads(s3_project.run("cache.list", "--json").stdout)["snapshots"]
    assert listed and all(s["commit"] in ("0" * 12, "1" * 12) for s in listed), listed
    s3_project.fresh_agent()
    again = s3_project.build()
    assert again.returncode == 0
    assert again.json["services"][0]["steps_cached"] == again.json["services"][0]["steps_total"]


def test_a_failed_build_is_exit_1_with_the_failing_step(project: Project) -> None:
    (project.path / "app" / "selftest.sh").write_text("echo broken >&2\nexit 7\n")
    result = run_dockercache("build", cwd=project.path, env=base_env())
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dockercache: error: ruby/final: build failed: [final 3/3] RUN sh /app/app/selftest.sh")
    assert "exit code: 7" in last
    assert "broken" in result.stderr  # the step's own output is shown


def test_unreachable_image_registry_fails_the_build_clearly(project: Project, stack: Stack) -> None:
    from ..e2e.conftest import free_port

    port = free_port()
    project.write_config(
        registry_config(stack, project.name).replace(f'image = "{stack.host}/', f'image = "localhost:{port}/')
    )
    result = run_dockercache("build", cwd=project.path, env=base_env())
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("dockercache: error")]
    assert len(errors) == 1
    assert errors[0].startswith(f"dockercache: error: ruby: push to localhost:{port} failed (")  # a push failure
    assert f"localhost:{port}/{project.name}/ruby" in errors[0] and "connection refused" in errors[0]
    assert "keeping the caches" not in result.stderr  # not a step that failed: nothing to tell apart


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB file system, for a spool that fills up (a tmpfs: this suite runs as root, as CI does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_upload_spool_is_a_cache_warning_never_a_failed_build(
    s3_project: S3Project, stack: Stack, s3_client: Any, small_spool: Path
) -> None:
    """The spool the endpoint hashes uploads in (by default in $TMPDIR) fills up (a 12 MB layer, 4 MB of room):
    the build succeeds and pushes, the save is a warning naming the spool and the error, no stage is blamed, and
    no snapshot names a blob that is not there. Then ``spool_dir`` elsewhere saves it."""
    dockerfile = s3_project.path / "Dockerfile"
    text = dockerfile.read_text().replace(
        'CMD ["sh"', 'RUN head -c 12000000 /dev/urandom > /usr/local/big.bin\nCMD ["sh"', 1
    )
    dockerfile.write_text(text)
    s3_project.fresh_agent()
    result = s3_project.build(TMPDIR=str(small_spool))
    assert result.returncode == 0, result.stderr
    assert "build failed" not in result.stderr and "Traceback" not in result.stderr
    final = result.stage("ruby", "final")
    assert final["status"] == "ok" and final["s3"]["saved"] is None
    assert any("no space left on device" in w and str(small_spool) in w for w in final["cache_warnings"]), final
    assert stack.registry.tags(f"{s3_project.name}/ruby")  # the image was pushed all the same
    assert s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/snapshots/").get("KeyCount", 0) == 0
    assert "uploads wait in the temporary directory" in s3_project.run("plan").stdout
    roomy = small_spool.parent / "roomy"
    roomy.mkdir()
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket, extra=f'spool_dir = "{roomy}"'))
    s3_project.fresh_agent()
    again = s3_project.build(TMPDIR=str(small_spool))
    assert again.returncode == 0, again.stderr
    assert f"uploads wait in {roomy}" in s3_project.run("plan").stdout
    assert again.stage("ruby", "final")["s3"]["saved"] == "example/main/ruby/final"
    assert list(roomy.iterdir()) == []  # nothing left in the spool
    verify_all(s3_project)
