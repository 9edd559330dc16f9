"""End-to-end: the S3 store never replaces a snapshot with one that restores less (the registry and local
stores' side is in test_build_registry.py and test_local_store.py)."""

from __future__ import annotations

from typing import Any

from .conftest import S3Project

SNAPSHOT = "cache/snapshots/example/main/ruby/final.json"


def test_a_snapshot_that_adds_nothing_is_not_published(s3_project: S3Project, s3_client: Any) -> None:
    """The key holds a cache with a layer the next build's export lacks (a step since removed; in the field,
    BuildKit 0.13 exporting a build whose steps all hit without their intermediate records): the endpoint keeps
    the richer snapshot, and the report says so; a change the cache holds is published as ever."""
    dockerfile = s3_project.path / "Dockerfile"
    plain = dockerfile.read_text()
    dockerfile.write_text(plain.replace('CMD ["sh"', 'RUN echo extra > /extra\nCMD ["sh"', 1))
    s3_project.fresh_agent()
    assert s3_project.build().returncode == 0
    richer = s3_client.get_object(Bucket=s3_project.bucket, Key=SNAPSHOT)["ETag"]
    dockerfile.write_text(plain)
    s3_project.new_build()
    s3_project.fresh_agent()
    result = s3_project.build()
    assert result.returncode == 0, result.stderr
    final = result.stage("ruby", "final")
    assert final["steps_cached"] == final["steps_total"]
    assert final["s3"]["saved"] is None and final["cache_written"] is None
    assert final["cache_kept"].startswith("kept example/main/ruby/final: this build's cache adds nothing to it")
    assert not final["cache_warnings"], final["cache_warnings"]  # kept back is no problem
    assert s3_client.get_object(Bucket=s3_project.bucket, Key=SNAPSHOT)["ETag"] == richer
    assert s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/leases/").get("KeyCount") == 0
    s3_project.new_build()
    s3_project.fresh_agent()
    s3_project.touch_source()
    changed = s3_project.build()
    assert changed.returncode == 0 and changed.stage("ruby", "final")["s3"]["saved"] == "example/main/ruby/final"
    assert s3_client.get_object(Bucket=s3_project.bucket, Key=SNAPSHOT)["ETag"] != richer
