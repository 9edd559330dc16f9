"""Hardening: the maintenance tasks never poison or lose what the default branch reads (issue 11, items 11, 12).

`cache.promote` writes a key the default branch reads only from the default branch or a trusted branch, never
from a pull request (poisoning); `cache.prune` keeps the default branch's key and the `cache_from` keys, counts
`--keep N` per branch as the key template makes them, and leaves every kept snapshot restorable (faults). CI is
simulated with the variables dockercache reads (BUILDKITE, BUILDKITE_BRANCH, BUILDKITE_PULL_REQUEST, ...).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ..e2e.conftest import S3Project, Stack, s3_config

pytestmark = pytest.mark.e2e

SNAPSHOTS = "cache/snapshots/"


def snapshot_objects(client: Any, bucket: str) -> dict[str, tuple[str, Any]]:
    """Every snapshot index in the bucket: (ETag, LastModified) by snapshot name (a copy keeps the ETag of
    what it copied, so a rewrite shows in LastModified)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=SNAPSHOTS)
    return {
        o["Key"][len(SNAPSHOTS) : -len(".json")]: (o["ETag"], o["LastModified"])
        for page in pages
        for o in page.get("Contents", [])
    }


def blob_keys(client: Any, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="cache/blobs/")
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def body(client: Any, bucket: str, name: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=f"{SNAPSHOTS}{name}.json")["Body"].read()  # type: ignore[no-any-return]


def feature_snapshot(client: Any, bucket: str) -> None:
    """What a feature/x build would have saved: main's snapshot (same blobs), recorded as feature/x's."""
    document = json.loads(body(client, bucket, "example/main/ruby/final"))
    document.update(branch="feature/x", name="example/feature-x/ruby/final")
    client.put_object(
        Bucket=bucket, Key=f"{SNAPSHOTS}example/feature-x/ruby/final.json", Body=json.dumps(document).encode()
    )


def seeded(s3_project: S3Project, s3_client: Any) -> dict[str, tuple[str, Any]]:
    """The default branch built and promoted to example/latest, and a feature branch's snapshot; returns the
    snapshot objects."""
    s3_project.fresh_agent()
    built = s3_project.build()
    assert built.returncode == 0, built.stderr
    promoted = s3_project.run("cache.promote")
    assert promoted.returncode == 0, promoted.stderr
    feature_snapshot(s3_client, s3_project.bucket)
    objects = snapshot_objects(s3_client, s3_project.bucket)
    assert sorted(objects) == [f"example/{k}/ruby/final" for k in ("feature-x", "latest", "main")]
    return objects


def refused(result: Any, *parts: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockercache: error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


# ------------------------------------------------------------------------------- promote (poisoning)


@pytest.mark.hardening("poisoning")
def test_promote_from_a_feature_branch_in_ci_cannot_overwrite_what_every_branch_restores(
    s3_project: S3Project, s3_client: Any
) -> None:
    """The report: on feature/x, `cache.promote --target {pipeline}/latest` overwrote the key every branch
    restores first. Now every form of it is refused, one line naming the branch, the key and the way to allow
    it, and no snapshot changes."""
    before = seeded(s3_project, s3_client)
    for args in (
        [],
        ["--target", "{pipeline}/latest"],
        ["--dry-run"],
        ["--source", "example/feature-x", "--target", "example/main"],
    ):
        result = s3_project.run("cache.promote", *args, BUILDKITE_BRANCH="feature/x")
        key = "example/main" if "example/main" in args else "example/latest"
        refused(result, "branch 'feature/x'", f"'{key}'", "settings.trusted_branches")
    assert snapshot_objects(s3_client, s3_project.bucket) == before


@pytest.mark.hardening("poisoning")
def test_a_pull_request_cannot_promote_to_a_shared_key_whatever_its_branch_is_called(
    s3_project: S3Project, stack: Stack, s3_client: Any
) -> None:
    """A fork's `main`, or a branch `trusted_branches` names: a pull request is an untrusted writer."""
    trusted = '[settings]\ntrusted_branches = ["release/*"]\n'
    s3_project.write_config(trusted + s3_config(stack, s3_project.name, s3_project.bucket))
    before = seeded(s3_project, s3_client)
    for branch in ("main", "release/2.0"):
        pr = {"BUILDKITE_BRANCH": branch, "BUILDKITE_PULL_REQUEST": "17", "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "main"}
        refused(s3_project.run("cache.promote", **pr), "pull request #17", "'example/latest'")
        result = s3_project.run("cache.promote", "--source", "example/main", "--target", "example/main-copy", **pr)
        refused(result, "pull request #17", "only their own key (example/pr-17)")
    assert snapshot_objects(s3_client, s3_project.bucket) == before


@pytest.mark.hardening("poisoning")
def test_the_default_branch_promotes_and_its_dry_run_writes_nothing(s3_project: S3Project, s3_client: Any) -> None:
    before = seeded(s3_project, s3_client)
    bucket = s3_project.bucket
    s3_client.copy_object(
        Bucket=bucket,
        Key=f"{SNAPSHOTS}example/latest/ruby/final.json",
        CopySource={"Bucket": bucket, "Key": f"{SNAPSHOTS}example/feature-x/ruby/final.json"},
    )
    stale = snapshot_objects(s3_client, bucket)
    time.sleep(1)  # a rewrite of the same bytes shows as a later LastModified
    dry = s3_project.run("cache.promote", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "  would write example/latest/ruby/final (from example/main/ruby/final)",
        "would promote example/main to example/latest: 1 snapshot(s), no blobs copied",
    ]
    assert snapshot_objects(s3_client, bucket) == stale
    promoted = s3_project.run("cache.promote")
    assert promoted.returncode == 0, promoted.stderr
    assert body(s3_client, bucket, "example/latest/ruby/final") == body(s3_client, bucket, "example/main/ruby/final")
    assert snapshot_objects(s3_client, bucket)["example/main/ruby/final"] == before["example/main/ruby/final"]
    verify = s3_project.run("cache.verify", "--deep")
    assert verify.returncode == 0 and "3 snapshot(s), 0 problem(s)" in verify.stdout, verify.stdout + verify.stderr


# ------------------------------------------------------------------------------------- prune (faults)


def listed(s3_project: S3Project) -> set[str]:
    return {line.split()[-1] for line in s3_project.run("cache.list").stdout.splitlines()[1:]}  # under a header


def verified(s3_project: S3Project, count: int) -> None:
    verify = s3_project.run("cache.verify", "--deep")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{count} snapshot(s), 0 problem(s)" in verify.stdout


@pytest.mark.hardening("faults")
def test_prune_with_the_readme_branch_template_keeps_the_default_branch_and_every_branch(
    s3_project: S3Project, s3_client: Any
) -> None:
    """`key = "{pipeline}/{branch}"`, `cache_from = ["{pipeline}/latest"]`: `--keep 1` planned to delete all
    of main's snapshots and latest (the newest key under `example/` was a feature branch's)."""
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    assert s3_project.run("cache.promote").returncode == 0
    s3_project.new_build()
    s3_project.fresh_agent()
    s3_project.touch_source()
    feature = s3_project.build(BUILDKITE_BRANCH="feature/x")
    assert feature.returncode == 0, feature.stderr
    everything = listed(s3_project)
    assert everything == {f"example/{k}/ruby/final" for k in ("main", "latest", "feature-x-217d2bf5")}
    blobs = blob_keys(s3_client, s3_project.bucket)
    kept = s3_project.run("cache.prune", "--keep", "1", "--grace", "0s")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.splitlines() == [
        "  keep example/feature-x-217d2bf5/ruby/final (newest 1 of example/feature-x-217d2bf5)",
        "  keep example/latest/ruby/final (cache_from key)",
        "  keep example/main/ruby/final (default branch key)",
        "deleted 0 snapshot(s) and 0 blob(s) (0.0 MB); kept 3 snapshot(s)",
    ]
    assert listed(s3_project) == everything and blob_keys(s3_client, s3_project.bucket) == blobs
    time.sleep(1)
    dry = s3_project.run("cache.prune", "--older-than", "1s", "--grace", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "  would delete example/feature-x-217d2bf5/ruby/final (older than 1s)" in dry.stdout.splitlines()
    assert listed(s3_project) == everything and blob_keys(s3_client, s3_project.bucket) == blobs
    pruned = s3_project.run("cache.prune", "--older-than", "1s", "--grace", "0s")
    assert pruned.returncode == 0, pruned.stderr
    assert listed(s3_project) == {"example/main/ruby/final", "example/latest/ruby/final"}
    assert blob_keys(s3_client, s3_project.bucket) < blobs  # the feature branch's own layers went
    verified(s3_project, 2)


@pytest.mark.hardening("faults")
def test_prune_with_the_readme_commit_template_keeps_latest_and_the_newest_commits(
    s3_project: S3Project, stack: Stack, s3_client: Any
) -> None:
    """The migration section's `key = "{pipeline}/{commit}"`: `--keep 1` keeps the newest commit's key and
    `latest` (a copy of an older commit's, whose blobs therefore stay), and deletes the other commits' and the
    feature branch's (which writes its own key in place of a commit's: the default branch reads commit keys)."""
    templates = 'key = "{pipeline}/{commit}"\ncache_from = ["{pipeline}/latest"]'
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket, extra=templates))
    commits = {"c1": "main", "c2": "feature/x", "c3": "main"}
    for commit, branch in commits.items():
        s3_project.new_build()
        s3_project.fresh_agent()
        s3_project.touch_source(commit)
        built = s3_project.build(BUILDKITE_BRANCH=branch, BUILDKITE_COMMIT=commit * 20)
        assert built.returncode == 0, built.stderr
        if commit == "c1":
            promoted = s3_project.run("cache.promote", BUILDKITE_COMMIT=commit * 20)
            assert promoted.returncode == 0 and "promoted example/c1c1c1c1c1c1 to example/latest" in promoted.stdout
    blobs = blob_keys(s3_client, s3_project.bucket)
    dry = s3_project.run("cache.prune", "--keep", "1", "--grace", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[:-1] == [
        "  keep example/c3c3c3c3c3c3/ruby/final (newest 1 of example/*)",
        "  keep example/latest/ruby/final (cache_from key)",
        "  would delete example/c1c1c1c1c1c1/ruby/final (beyond the newest 1 of example/*)",
        "  would delete example/feature-x-217d2bf5/ruby/final (beyond the newest 1 of example/*)",
    ]
    assert blob_keys(s3_client, s3_project.bucket) == blobs and len(listed(s3_project)) == 4
    pruned = s3_project.run("cache.prune", "--keep", "1", "--grace", "0s")
    assert pruned.returncode == 0, pruned.stderr
    assert listed(s3_project) == {"example/c3c3c3c3c3c3/ruby/final", "example/latest/ruby/final"}
    assert blob_keys(s3_client, s3_project.bucket) < blobs  # feature/x's own layers went; c1's stay for latest
    verified(s3_project, 2)
