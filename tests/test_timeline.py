"""The build's timeline (dockercache.timeline)."""

from __future__ import annotations

import time

from dockercache.timeline import Timeline, process_age


def test_the_process_age_is_read_from_proc() -> None:
    """This test process started before the test did: its age is more than zero and less than an hour."""
    assert 0 < process_age() < 3600


def test_steps_and_the_bake_are_placed_on_one_clock() -> None:
    timeline = Timeline(origin=time.monotonic() - 1.0)  # the process started a second ago
    with timeline.step("configuration"):
        pass
    timeline.bake_started()
    timeline.bake_byte()
    timeline.bake_byte()  # only the first counts
    timeline.bake_ended()
    document = timeline.to_json(buildx_seconds=0.5)
    assert document["steps"][0]["name"] == "configuration" and document["steps"][0]["start"] >= 1.0
    assert 1.0 <= document["before_bake"] <= document["to_first_bake_byte"] <= document["total"]
    assert document["own"] == round(document["total"] - 0.5, 3) and document["after_bake"] >= 0
