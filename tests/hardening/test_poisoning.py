"""Hardening, group poisoning: an untrusted branch cannot write what the default branch reads, whatever its
configuration says, unless an explicit trusted-branch rule allows it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from typing import Any

import pytest

from dockercache.stores.s3.layout import repository_name

from ..e2e.conftest import (
    DOCKERCACHE,
    Project,
    S3Project,
    Stack,
    base_env,
    fresh_agent,
    registry_config,
    run_dockercache,
    s3_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.hardening("poisoning")]


def shared_tag_config(stack: Stack, name: str, trusted: str = "") -> str:
    settings = f'cache_write = "always"\n{trusted}'
    return registry_config(stack, name, settings=settings).replace('ref = "', 'tag = "{stage}-shared"\nref = "', 1)


def digests(stack: Stack, repo: str) -> dict[str, str]:
    return {t: stack.registry.manifest(repo, t)[0] for t in stack.registry.tags(repo)}


def test_untrusted_branch_cannot_write_a_shared_registry_ref(project: Project, stack: Stack) -> None:
    project.write_config(shared_tag_config(stack, project.name))
    fresh_agent()
    assert project.build().returncode == 0
    repo = f"{project.name}/cache"
    before = digests(stack, repo)
    assert sorted(before) == ["final-shared", "final-shared.why"]  # the cache and its record (issue 29)
    fresh_agent()
    project.touch_source("evil")
    result = project.build("--cache-write", BUILDKITE_BRANCH="attacker/pr")
    assert result.returncode == 0, result.stderr
    assert digests(stack, repo) == before
    assert all(s["cache_written"] is None for s in result.json["services"][0]["stages"])
    shown = run_dockercache("plan", cwd=project.path, env=base_env(BUILDKITE_BRANCH="attacker/pr"))
    assert "no write:" in shown.stdout and "may not write it" in shown.stdout


def test_trusted_branch_rule_allows_shared_writes(project: Project, stack: Stack) -> None:
    project.write_config(shared_tag_config(stack, project.name, 'trusted_branches = ["release/*"]'))
    fresh_agent()
    assert project.build().returncode == 0
    repo = f"{project.name}/cache"
    before = digests(stack, repo)
    fresh_agent()
    project.touch_source("release")
    result = project.build(BUILDKITE_BRANCH="release/2.0")
    assert result.returncode == 0, result.stderr
    assert digests(stack, repo)["final-shared"] != before["final-shared"]


def test_untrusted_branch_cannot_write_a_shared_s3_key(s3_project: S3Project, stack: Stack, s3_client: Any) -> None:
    s3_project.write_config(
        '[settings]\ncache_write = "always"\n'
        + s3_config(stack, s3_project.name, s3_project.bucket, extra='key = "{pipeline}/latest"')
    )
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    key = "cache/snapshots/example/latest/ruby/final.json"
    before = s3_client.get_object(Bucket=s3_project.bucket, Key=key)["ETag"]
    s3_project.new_build()
    s3_project.fresh_agent()
    s3_project.touch_source("evil")
    result = s3_project.build("--cache-write", BUILDKITE_BRANCH="attacker/pr")
    assert result.returncode == 0, result.stderr
    assert all(s["s3"]["saved"] is None for s in result.json["services"][0]["stages"])
    assert s3_client.get_object(Bucket=s3_project.bucket, Key=key)["ETag"] == before
    assert "dockercache-s3-key-ruby" not in s3_project.meta_data()


def test_a_pull_request_from_a_branch_called_main_writes_only_its_own_refs(project: Project, stack: Stack) -> None:
    """BUILDKITE_PULL_REQUEST=17 on a fork's `main`: it restores the default branch's cache, writes final-pr-17,
    and the shared final-main stays as it was; `plan` says why."""
    project.write_config(registry_config(stack, project.name))
    fresh_agent()
    assert project.build().returncode == 0
    repo = f"{project.name}/cache"
    before = digests(stack, repo)
    assert sorted(before) == ["final-main", "final-main.why"]
    fresh_agent()
    project.touch_source("from a fork")
    pr = {"BUILDKITE_BRANCH": "main", "BUILDKITE_PULL_REQUEST": "17", "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "main"}
    result = project.build(**pr)
    assert result.returncode == 0, result.stderr
    after = digests(stack, repo)
    assert after["final-main"] == before["final-main"] and "final-pr-17" in after
    assert after["final-main.why"] == before["final-main.why"] and "final-pr-17.why" in after  # records: the same rules
    assert result.stage("ruby", "deps")["steps_cached"] == result.stage("ruby", "deps")["steps_total"]  # restored
    shown = run_dockercache("plan", cwd=project.path, env=base_env(**pr))
    assert "pull request #17: its own refs and keys only (pr-17)" in shown.stdout


def test_a_pull_request_build_through_the_s3_endpoint_writes_only_its_own_key(
    s3_project: S3Project, s3_client: Any
) -> None:
    """The S3 store's side of the same rule: a pull request from a fork's `main` reads the default branch's
    snapshots through the endpoint, and BuildKit's exports land under example/pr-17 only."""
    assert s3_project.build().returncode == 0
    bucket = s3_project.bucket
    shared = {
        o["Key"]: o["ETag"]
        for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="cache/snapshots/example/main/")["Contents"]
    }
    assert "cache/snapshots/example/main/ruby/final.json" in shared
    s3_project.new_build()
    s3_project.fresh_agent()
    s3_project.touch_source("from a fork")
    pr = {"BUILDKITE_BRANCH": "main", "BUILDKITE_PULL_REQUEST": "17", "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "main"}
    result = s3_project.build(**pr)
    assert result.returncode == 0, result.stderr
    deps = result.stage("ruby", "deps")
    assert deps["steps_cached"] == deps["steps_total"]  # main's snapshots, read through the endpoint
    assert sum(s["s3"]["down"]["objects"] for s in result.json["services"][0]["stages"]) > 0
    assert result.stage("ruby", "final")["s3"]["saved"] == "example/pr-17/ruby/final"
    after = {
        o["Key"]: o["ETag"]
        for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="cache/snapshots/example/main/")["Contents"]
    }
    assert after == shared  # not one index of the default branch's key rewritten
    own = s3_client.list_objects_v2(Bucket=bucket, Prefix="cache/snapshots/example/pr-17/")["Contents"]
    assert "cache/snapshots/example/pr-17/ruby/final.json" in {o["Key"] for o in own}
    assert s3_project.meta_data().get("dockercache-s3-key-ruby") == "example/pr-17"


# ----------------------------------------------------------------- the endpoint answers this run's BuildKit only

ATTACK_LAYER = b"attacker's /out\n"


def _attack(address: str, repo: str) -> dict[str, int]:
    """What an attacker on the agent tried while main built (another process, no credentials): read the cache
    manifest, upload a layer, and PUT manifests under tags the build writes and does not write."""
    import http.client

    digest = f"sha256:{hashlib.sha256(ATTACK_LAYER).hexdigest()}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": digest, "size": 16},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": 16}],
        }
    ).encode()
    tried = {}
    for what, method, path, body in [
        ("read final", "GET", f"/v2/{repo}/manifests/final", b""),
        ("upload", "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", ATTACK_LAYER),
        *((f"write {tag}", "PUT", f"/v2/{repo}/manifests/{tag}", manifest) for tag in ("final", "base", "zzz")),
    ]:
        conn = http.client.HTTPConnection(address, timeout=10)
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"} if method == "PUT" else {}
        conn.request(method, path, body=body, headers=headers)
        tried[what] = conn.getresponse().status
        conn.close()
    return tried


def test_another_process_on_the_agent_cannot_use_the_runs_endpoint(
    s3_project: S3Project, stack: Stack, s3_client: Any
) -> None:
    """While a build on main runs, the loopback endpoint refuses every request without the run's secret: a tried
    attack (read main's manifest, upload a layer, PUT manifests under `final`, `base` and a made-up tag) gets
    401 each, the build saves only what it built, and the next fresh agent builds the true image from it."""
    dockerfile = s3_project.path / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace('CMD ["sh"', 'RUN sleep 8\nCMD ["sh"', 1))
    process = subprocess.Popen(
        [str(DOCKERCACHE), "build", "--json"],
        cwd=s3_project.path,
        env=s3_project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdout is not None
    lines: list[str] = []
    address = None
    for line in process.stderr:
        lines.append(line)
        match = re.search(r"serving snapshots to BuildKit at (127\.0\.0\.1:\d+)", line)
        if match:
            address = match.group(1)
            break
    assert address is not None, "".join(lines)
    tried = _attack(address, repository_name("example/main", "ruby"))
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, "".join(lines) + stderr
    assert tried == {"read final": 401, "upload": 401, "write final": 401, "write base": 401, "write zzz": 401}
    snapshots = s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/snapshots/")["Contents"]
    assert sorted(o["Key"] for o in snapshots) == ["cache/snapshots/example/main/ruby/final.json"]
    blobs = s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/blobs/")["Contents"]
    assert not any(o["Key"].endswith(hashlib.sha256(ATTACK_LAYER).hexdigest()) for o in blobs)
    assert json.loads(stdout)["services"][0]["stages"][-1]["s3"]["saved"] == "example/main/ruby/final"
    verify = s3_project.run("cache.verify", "--deep")
    assert verify.returncode == 0, verify.stderr
    # The next fresh agent on main restores it: every step of the unchanged project cached, exit 0.
    s3_project.new_build()
    s3_project.fresh_agent()
    again = s3_project.build()
    assert again.returncode == 0, again.stderr
    final = again.stage("ruby", "final")
    assert final["steps_cached"] == final["steps_total"] > 0
