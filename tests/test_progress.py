from __future__ import annotations

import json

from dockercache.progress import BuildEvents, RawJsonDecoder

from .conftest import FIXTURES


def fold(name: str) -> BuildEvents:
    events = BuildEvents()
    decoder = RawJsonDecoder()
    text = (FIXTURES / "rawjson" / name).read_text()
    # Feed in awkward chunks, as a pipe delivers them.
    for i in range(0, len(text), 97):
        for item in decoder.feed(text[i : i + 97]):
            events.apply(item)
    for item in decoder.close():
        events.apply(item)
    return events


def test_counts_cached_steps_per_stage() -> None:
    events = fold("cache-registry-down.txt")
    stages = events.by_stage()
    assert {k: (v.cached, v.total) for k, v in stages.items()} == {
        "final": (0, 2),
        "deps": (2, 2),
        "base": (1, 1),
    }


def test_unreachable_cache_registry_is_a_problem() -> None:
    problems = fold("cache-registry-down.txt").cache_problems()
    assert len(problems) == 2
    assert problems[0].startswith("importing cache manifest from localhost:5999")
    assert any(p.startswith("exporting cache to registry") for p in problems)


def test_missing_cache_ref_is_a_miss_not_a_problem() -> None:
    events = fold("cache-ref-missing.txt")
    assert events.cache_problems() == []
    assert events.cache_misses() == ["localhost:5000/cache/nothere:x"]
    assert any("local cache import" in line for line in events.text)


def test_failure_names_the_step() -> None:
    events = fold("failed-run.txt")
    failure = events.failure()
    assert failure is not None
    assert failure.startswith("[final 2/2] RUN echo built && false")
    assert "exit code: 1" in failure


def test_decoder_handles_text_and_partial_objects() -> None:
    decoder = RawJsonDecoder()
    obj = json.dumps(
        {
            "vertexes": [
                {
                    "digest": "d",
                    "name": "[a 1/1] RUN x",
                    "cached": True,
                    "completed": "2026-01-01T00:00:00.123456789Z",
                }
            ]
        },
        indent=2,
    )
    items = list(decoder.feed(obj[:10]))
    assert items == []
    items = list(decoder.feed(obj[10:] + "\nERROR: boom\n"))
    assert isinstance(items[0], dict) and items[1] == "ERROR: boom"
    events = BuildEvents()
    done = events.apply(items[0])
    assert [v.name for v in done] == ["[a 1/1] RUN x"] and done[0].cached
