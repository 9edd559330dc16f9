"""End-to-end: the S3 cache store against a real S3 server (moto), Docker and registry, with a stand-in agent."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import time
from typing import Any

import pytest

from .conftest import ACCESS_KEY, COMMIT, SECRET_KEY, S3Project, Stack

STAGES = ("base", "deps", "final")


def s3_stats(result: Any) -> dict[str, dict[str, Any]]:
    return {s: result.stage("ruby", s)["s3"] for s in STAGES}


def blob_keys(client: Any, bucket: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="cache/blobs/")
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.usefixtures("agent")
def test_save_wipe_restore_rebuild_is_fully_cached(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    first = s3_project.build()
    assert first.returncode == 0, first.stderr
    stats = s3_stats(first)
    # One snapshot: the final image's export holds the stages it builds on (mode=max).
    assert {s: stats[s]["saved"] for s in STAGES} == {"base": None, "deps": None, "final": "example/main/ruby/final"}
    assert {s: first.stage("ruby", s)["cache_written"] for s in STAGES} == dict.fromkeys(
        STAGES, "example/main/ruby/final"
    )
    assert sum(stats[s]["up"]["objects"] for s in STAGES) == len(blob_keys(s3_client, s3_project.bucket))
    s3_project.fresh_agent()
    second = s3_project.build()
    assert second.returncode == 0, second.stderr
    svc = second.json["services"][0]
    assert (svc["steps_cached"], svc["steps_total"]) == (8, 8)
    final = second.stage("ruby", "final")["s3"]
    assert final["restored_from"] == "example/main" and final["down"]["objects"] > 0


@pytest.mark.usefixtures("agent")
def test_one_file_change_uploads_only_new_blobs(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    first = s3_project.build()
    assert first.returncode == 0, first.stderr
    before = blob_keys(s3_client, s3_project.bucket)
    s3_project.fresh_agent()
    s3_project.touch_source()
    second = s3_project.build()
    assert second.returncode == 0, second.stderr
    after = blob_keys(s3_client, s3_project.bucket)
    new = {k: v for k, v in after.items() if k not in before}
    up = {s: s3_stats(second)[s]["up"] for s in STAGES}
    # Exactly the blobs that were not in S3 went up, nothing else.
    assert sum(u["objects"] for u in up.values()) == len(new)
    assert sum(u["bytes"] for u in up.values()) == sum(new.values())
    # The deps layer (the big one) was not uploaded again.
    first_up = sum(s3_stats(first)[s]["up"]["bytes"] for s in STAGES)
    assert sum(new.values()) < first_up / 20, (sum(new.values()), first_up)


def biggest_blob(client: Any, bucket: str, name: str) -> tuple[str, str, int]:
    snapshot = json.loads(client.get_object(Bucket=bucket, Key=f"cache/snapshots/{name}.json")["Body"].read())
    digest = max(snapshot["blobs"], key=lambda d: snapshot["blobs"][d])
    return digest, f"cache/blobs/sha256/{digest.removeprefix('sha256:')}", snapshot["blobs"][digest]


@pytest.mark.usefixtures("agent")
@pytest.mark.hardening("faults")
def test_corrupt_and_missing_blobs_are_a_miss_with_a_warning(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    digest, key, size = biggest_blob(s3_client, s3_project.bucket, "example/main/ruby/final")
    s3_client.put_object(Bucket=s3_project.bucket, Key=key, Body=b"x" * size)  # same size, other content
    s3_project.fresh_agent()
    corrupt = s3_project.build()
    # BuildKit fetched it lazily and failed on its digest: built again without the cache, not a failure.
    assert corrupt.returncode == 0, corrupt.stderr
    assert f"blob {digest} is corrupt: removed from s3://" in corrupt.stderr
    assert "building again without it" in corrupt.stderr
    assert corrupt.json["services"][0]["status"] == "ok"
    # The corrupt blob was removed, so nothing trusts it by name any more; the rebuild saved a good copy.
    assert corrupt.stage("ruby", "final")["s3"]["saved"] == "example/main/ruby/final"
    assert s3_project.run("cache.verify", "--deep").returncode == 0
    # The rebuild was saved again; now take one of its blobs away.
    digest, key, _ = biggest_blob(s3_client, s3_project.bucket, "example/main/ruby/final")
    s3_client.delete_object(Bucket=s3_project.bucket, Key=key)
    broken = s3_project.run("cache.verify")  # verify names it, and fails
    assert broken.returncode == 1 and f"blob {digest} is missing" in broken.stdout + broken.stderr, broken.stdout
    s3_project.fresh_agent()
    missing = s3_project.build()
    assert missing.returncode == 0, missing.stderr
    assert f"blob {digest} is missing" in missing.stderr
    assert missing.stage("ruby", "final")["s3"]["restored_from"] is None
    assert missing.json["services"][0]["status"] == "ok"
    # The build saved a whole snapshot over the one that named the missing blob.
    verify = s3_project.run("cache.verify", "--deep")
    assert verify.returncode == 0 and ", 0 problem(s)" in verify.stdout, verify.stdout + verify.stderr


@pytest.mark.usefixtures("agent")
@pytest.mark.hardening("faults")
def test_writer_killed_between_blobs_and_index_leaves_previous_snapshot(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    index_key = "cache/snapshots/example/main/ruby/final.json"
    previous = s3_client.get_object(Bucket=s3_project.bucket, Key=index_key)["Body"].read()
    blobs_before = blob_keys(s3_client, s3_project.bucket)
    s3_project.fresh_agent()
    s3_project.touch_source()
    crashed = s3_project.crashing_build("example/main/ruby/final")
    assert crashed.returncode == 137
    assert len(blob_keys(s3_client, s3_project.bucket)) > len(blobs_before)  # blobs went up ...
    current = s3_client.get_object(Bucket=s3_project.bucket, Key=index_key)["Body"].read()
    assert current == previous  # ... but the index did not move
    s3_project.fresh_agent()
    again = s3_project.build()
    assert again.returncode == 0, again.stderr
    assert again.stage("ruby", "deps")["steps_cached"] == again.stage("ruby", "deps")["steps_total"]
    assert again.stage("ruby", "final")["s3"]["restored_from"] == "example/main"
    verify = s3_project.run("cache.verify", "--deep")
    assert verify.returncode == 0 and ", 0 problem(s)" in verify.stdout, verify.stdout + verify.stderr


def test_promote_and_prune_keep_remaining_snapshots_restorable(s3_project: S3Project, s3_client: Any) -> None:
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    promoted = s3_project.run("cache.promote")
    assert promoted.returncode == 0, promoted.stderr
    assert "promoted example/main to example/latest: 1 snapshot(s), no blobs copied" in promoted.stdout
    # A feature branch (another Buildkite build) restores from example/latest (cache_from comes first) and
    # saves under its own key.
    s3_project.new_build()
    s3_project.fresh_agent()
    s3_project.touch_source()
    feature = s3_project.build(BUILDKITE_BRANCH="feature/x")
    assert feature.returncode == 0, feature.stderr
    assert feature.stage("ruby", "final")["s3"]["restored_from"] == "example/latest"
    assert feature.stage("ruby", "final")["s3"]["saved"] == "example/feature-x-217d2bf5/ruby/final"
    listing = s3_project.run("cache.list").stdout
    header, *rows = listing.splitlines()
    assert header.split() == ["modified", "age", "size", "commit", "snapshot"]
    assert {line.split()[-1] for line in rows} == {
        f"example/{k}/ruby/final" for k in ("main", "latest", "feature-x-217d2bf5")
    }
    assert rows[0].split()[-1] == "example/feature-x-217d2bf5/ruby/final"  # newest first
    assert all(re.fullmatch(r"\d+(\.\d)? (B|KB|MB)", " ".join(r.split()[3:5])) for r in rows), rows
    listed = json.loads(s3_project.run("cache.list", "--json").stdout)["snapshots"]
    assert [s["snapshot"] for s in listed] == [r.split()[-1] for r in rows] and all(s["bytes"] > 0 for s in listed)
    assert {s["commit"] for s in listed} == {COMMIT[:12]}  # every snapshot says which commit wrote it
    assert all(r.split()[-2] == COMMIT[:12] for r in rows), rows
    listing = "\n".join(sorted(r.split()[-1] for r in rows))

    def names() -> str:
        return "\n".join(sorted(r.split()[-1] for r in s3_project.run("cache.list").stdout.splitlines()[1:]))

    blobs = blob_keys(s3_client, s3_project.bucket)
    # --older-than keeps every key younger than the age, beyond the newest --keep: all three are minutes old.
    young = s3_project.run("cache.prune", "--keep", "1", "--older-than", "1h", "--grace", "0s")
    assert young.returncode == 0, young.stderr
    assert names() == listing and blob_keys(s3_client, s3_project.bucket) == blobs
    # --keep counts per branch (the key template's groups: one key each here) and never touches what the
    # default branch writes or reads (example/main, example/latest).
    dry = s3_project.run("cache.prune", "--keep", "1", "--grace", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "keep example/feature-x-217d2bf5/ruby/final (newest 1 of example/feature-x-217d2bf5)" in dry.stdout
    assert names() == listing
    assert blob_keys(s3_client, s3_project.bucket) == blobs  # a dry run deletes nothing
    time.sleep(1)
    pruned = s3_project.run("cache.prune", "--older-than", "1s", "--grace", "0s")
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted example/feature-x-217d2bf5/ruby/final (older than 1s)" in pruned.stdout
    remaining = set(names().splitlines())
    assert remaining == {"example/main/ruby/final", "example/latest/ruby/final"}
    assert len(blob_keys(s3_client, s3_project.bucket)) < len(blobs)  # unreferenced blobs went
    verify = s3_project.run("cache.verify", "--deep", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    checked = json.loads(verify.stdout)
    assert (checked["snapshots"], checked["problems"], checked["deep"]) == (2, [], True)
    assert "sha256" in checked["checked"]


def test_meta_data_after_success_only_and_read_back(s3_project: S3Project, stack: Stack) -> None:
    selftest = s3_project.path / "app" / "selftest.sh"
    good = selftest.read_text()
    selftest.write_text(good + "\nexit 3\n")
    s3_project.fresh_agent()
    failed = s3_project.build()
    assert failed.returncode == 1
    assert s3_project.meta_data() == {}  # nothing recorded for a failed build
    annotation = s3_project.annotations()["dockercache-ruby-build-step"]
    assert annotation["style"] == "error" and "https://buildkite.com/acme/example/builds/1#" in annotation["body"]
    # The failing step's output is a group of its own, opened (Buildkite's "^^^ +++") right after it.
    assert "--- :rotating_light: output of [final " in failed.stderr and "\n^^^ +++\n" in failed.stderr
    selftest.write_text(good)
    ok = s3_project.build(BUILDKITE_BRANCH="feature/y")
    assert ok.returncode == 0, ok.stderr
    meta = s3_project.meta_data()
    assert meta["docker-compose-plugin-built-image-tag-ruby"] == f"{stack.host}/{s3_project.name}/ruby:0123456789ab"
    assert meta["dockercache-s3-key-ruby"] == "example/feature-y-a2bcce4a"
    annotation = s3_project.annotations()["dockercache-ruby-build-step"]
    assert annotation["style"] in ("success", "warning")
    assert "| stage | steps cached |" in annotation["body"] and "| deps |" in annotation["body"]
    assert "--- :s3: ruby: restore caches" in ok.stderr and "+++ :docker: build and push: ruby (final)" in ok.stderr
    # A later step of the same build (another agent) restores the key recorded in meta-data first.
    s3_project.fresh_agent()
    later = s3_project.build(BUILDKITE_BRANCH="main")
    assert later.returncode == 0, later.stderr
    assert later.stage("ruby", "final")["s3"]["restored_from"] == "example/feature-y-a2bcce4a"


@pytest.mark.hardening("secrets")
def test_no_credentials_in_any_output(s3_project: S3Project) -> None:
    s3_project.fresh_agent()
    results = [
        s3_project.build(),
        s3_project.run("plan", "--json"),
        s3_project.run("plan"),
        s3_project.run("cache.list"),
        s3_project.run("cache.verify"),
    ]
    stub_files = [p.read_text() for p in s3_project.stub_dir.iterdir()]
    for text in [*(r.stdout + r.stderr for r in results), *stub_files]:
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text
        assert "Signature=" not in text and "X-Amz-Credential" not in text  # no presigned URL either


@pytest.mark.hardening("faults")
def test_s3_unreachable_is_a_warning(s3_project: S3Project, stack: Stack) -> None:
    from .conftest import free_port, s3_config

    s3_project.write_config(
        s3_config(stack, s3_project.name, s3_project.bucket, endpoint=f"http://127.0.0.1:{free_port()}")
    )
    s3_project.fresh_agent()
    result = s3_project.build()
    assert result.returncode == 0, result.stderr
    assert "unreachable" in result.stderr and "building without this cache" in result.stderr
    assert result.json["services"][0]["status"] == "ok"
    s3_project.write_config(s3_config(stack, s3_project.name, s3_project.bucket))
    verify = s3_project.run("cache.verify", "--deep")  # nothing was half-written
    assert verify.returncode == 0 and "0 snapshot(s), 0 problem(s)" in verify.stdout, verify.stdout


@pytest.mark.usefixtures("agent")
def test_whole_directory_tarball_baseline_is_bigger(s3_project: S3Project, s3_client: Any) -> None:
    """The old plugin's way (gzip the whole local cache, upload it every time) against incremental blobs."""
    s3_project.fresh_agent()
    first = s3_project.build()
    assert first.returncode == 0
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for key, size in blob_keys(client=s3_client, bucket=s3_project.bucket).items():
            info = tarfile.TarInfo(key)
            info.size = size
            body = s3_client.get_object(Bucket=s3_project.bucket, Key=key)["Body"].read()
            tar.addfile(info, io.BytesIO(body))
    tarball = len(buffer.getvalue())
    s3_project.fresh_agent()
    s3_project.touch_source()
    second = s3_project.build()
    incremental = sum(s3_stats(second)[s]["up"]["bytes"] for s in STAGES)
    assert incremental * 10 < tarball, (incremental, tarball)
