"""dockercache.progress: the rawjson stream, and its attribution to bake targets."""

from __future__ import annotations

import base64
import json

from dockercache.progress import BuildEvents, Failure, RawJsonDecoder, Step, Tally, TargetInfo
from dockercache.secrets import Redactor

from .conftest import FIXTURES

# tests/fixtures/rawjson/bake.Dockerfile built as three bake targets (ruby-deps, ruby-test, ruby-final).
BAKE_TARGETS = [
    TargetInfo("ruby-deps", "deps", "ruby", ("base", "deps")),
    TargetInfo("ruby-test", "test", "ruby", ("base", "deps", "test")),
    TargetInfo("ruby-final", "final", "ruby", ("base", "deps", "final")),
]


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


def single(name: str, stage: str = "final") -> Tally:
    """A one-target run (``buildx build`` or a bake of one target: names carry no target prefix)."""
    tally = Tally([TargetInfo("t", stage, "x", ("base", "deps", stage))])
    tally.add(fold(name), ["t"])
    return tally


def counts(tally: Tally) -> dict[str, dict[str, tuple[int, int]]]:
    return {t: {s: (c.cached, c.total) for s, c in stages.items()} for t, stages in tally.steps().items()}


def test_counts_cached_steps_per_stage() -> None:
    assert counts(single("cache-registry-down.txt")) == {"t": {"base": (1, 1), "deps": (2, 2), "final": (0, 2)}}


def test_unreachable_cache_registry_is_a_problem() -> None:
    problems = single("cache-registry-down.txt").cache_problems()["t"]
    assert len(problems) == 2
    assert problems[0].startswith("importing cache manifest from localhost:5999")
    assert any(p.startswith("exporting cache to registry") for p in problems)
    assert single("cache-registry-down.txt").exported() == {"t": False}


def test_missing_cache_ref_is_a_miss_not_a_problem() -> None:
    tally = single("cache-ref-missing.txt")
    assert tally.cache_problems() == {"t": []}
    events, _ = tally.runs[0]
    assert any("local cache import" in line for line in events.text)


def test_failure_names_the_step() -> None:
    (failure,) = single("failed-run.txt").failures()
    assert failure.targets == ["t"] and failure.stage == "final"
    assert failure.describe().startswith("[final 2/2] RUN echo built && false")
    assert "exit code: 1" in failure.describe()


def test_bake_steps_count_once_in_the_target_of_their_stage() -> None:
    """Three targets share base and deps; every step counts once, where its own stage is built."""
    tally = Tally(BAKE_TARGETS)
    tally.add(fold("bake-three-targets.txt"), [t.name for t in BAKE_TARGETS])
    assert counts(tally) == {
        "ruby-deps": {"base": (0, 2), "deps": (0, 2)},
        "ruby-test": {"test": (0, 2)},
        # final's COPY lib/ is the same vertex as test's: solved once in this session, so not run again.
        "ruby-final": {"final": (1, 3)},
    }
    total = sum(c.total for stages in tally.steps().values() for c in stages.values())
    assert total == 9  # bake.Dockerfile has 9 steps besides FROM
    assert tally.cache_problems() == {"ruby-deps": [], "ruby-test": [], "ruby-final": []}  # first build: misses
    assert tally.exported() == {"ruby-deps": True, "ruby-test": True, "ruby-final": True}
    assert all(seconds > 0 for seconds in tally.seconds().values())


def test_steps_of_a_stage_that_is_no_target_go_to_the_first_target_that_builds_it() -> None:
    targets = [
        TargetInfo("ruby-test", "test", "ruby", ("base", "deps", "test")),
        TargetInfo("ruby-final", "final", "ruby", ("base", "deps", "final")),
    ]
    tally = Tally(targets)
    tally.add(fold("bake-three-targets.txt"), ["ruby-deps", "ruby-test", "ruby-final"])
    got = counts(tally)
    assert got["ruby-test"] == {"base": (0, 2), "deps": (0, 2), "test": (0, 2)}
    assert got["ruby-final"] == {"final": (1, 3)}


def test_two_services_from_one_dockerfile_share_steps() -> None:
    """Same context, Dockerfile and args: the same steps, counted once, in the first service."""
    targets = [
        TargetInfo("web-deps", "deps", "same", ("base", "deps")),
        TargetInfo("web-test", "test", "same", ("base", "deps", "test")),
        TargetInfo("worker-final", "final", "same", ("base", "deps", "final")),
    ]
    events = fold("bake-three-targets.txt")
    renamed = BuildEvents()
    for vertex in events.vertexes.values():
        vertex.names = [
            n.replace("[ruby-deps", "[web-deps")
            .replace("[ruby-test", "[web-test")
            .replace("[ruby-final", "[worker-final")
            for n in vertex.names
        ]
        renamed.vertexes[vertex.digest] = vertex
    tally = Tally(targets)
    tally.add(renamed, [t.name for t in targets])
    assert sum(c.total for stages in tally.steps().values() for c in stages.values()) == 9
    assert counts(tally)["web-deps"] == {"base": (0, 2), "deps": (0, 2)}


def test_a_failing_target_is_named_and_the_others_are_not_failures() -> None:
    tally = Tally(BAKE_TARGETS)
    tally.add(fold("bake-test-target-fails.txt"), [t.name for t in BAKE_TARGETS])
    (failure,) = tally.failures()
    assert failure.targets == ["ruby-test"] and failure.stage == "test"
    assert failure.name == "[test 2/2] RUN echo testing && sleep 1 && exit 3"
    assert "exit code: 3" in failure.error
    # final was cancelled mid-export: its export is not counted as done, and no problem is blamed on cache.
    assert tally.exported()["ruby-final"] is False


def test_rescue_run_adds_up_with_the_first() -> None:
    """A step run in the first bake and answered from the local cache in a second one counts as run, once."""
    tally = Tally(BAKE_TARGETS)
    tally.add(fold("bake-three-targets.txt"), [t.name for t in BAKE_TARGETS])
    tally.add(fold("bake-three-targets.txt"), [t.name for t in BAKE_TARGETS])
    assert counts(tally)["ruby-deps"] == {"base": (0, 2), "deps": (0, 2)}
    assert tally.seconds()["ruby-deps"] > 0


def test_step_names() -> None:
    assert Step.parse("[deps 2/3] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[linux/arm64 deps 2/3] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[base 1/3] FROM busybox") is None
    assert Step.parse("exporting to image") is None


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
    assert events.last_error_line() is None
    events.apply("ERROR: boom")
    assert events.last_error_line() == "boom"


def test_duplicates_buildkit_merged_away_are_not_runs() -> None:
    """Nothing changed, five targets: BuildKit merges equal vertices of concurrent targets and reports the
    dropped duplicates as ``context canceled`` or never started. Those did not run: only the test stage's
    RUN really ran in that build (BuildKit 0.13 did not match it in the imported cache)."""
    graphs = {
        "base": ("base",),
        "deps": ("base", "deps"),
        "build": ("base", "deps", "build"),
        "test": ("base", "deps", "build", "test"),
        "final": ("base", "deps", "build", "final"),
    }
    targets = [TargetInfo(f"app-{s}", s, "app", g) for s, g in graphs.items()]
    tally = Tally(targets)
    tally.add(fold("bake-merged-duplicates.txt"), [t.name for t in targets])
    assert counts(tally) == {
        "app-base": {"base": (1, 1)},
        "app-deps": {"deps": (2, 2)},
        "app-build": {"build": (2, 2)},
        "app-test": {"test": (0, 1)},
        "app-final": {"final": (2, 2)},
    }
    assert tally.failures() == []  # errors on merged-away duplicates are no failure either


def at(second: float) -> str:
    """A rawjson timestamp ``second`` seconds into a build (Go's nanoseconds included)."""
    return f"2026-11-26T02:00:{second:09.6f}123Z"


def events_of(*vertexes: tuple[list[str], float, float]) -> BuildEvents:
    """A run from (names, started, completed) triples, as buildx reports a vertex shared by several targets:
    once per name."""
    events = BuildEvents()
    for i, (names, started, completed) in enumerate(vertexes):
        for name in names:
            events.apply({"vertexes": [{"digest": f"sha256:{i}", "name": name, "started": at(started)}]})
            events.apply(
                {
                    "vertexes": [
                        {"digest": f"sha256:{i}", "name": name, "started": at(started), "completed": at(completed)}
                    ]
                }
            )
    return events


# app-test and app-final run (leaves); app-deps is built inside both. Its two steps are 10-12 s and 13-15 s
# (a gap between them), test's step 15-20 s and its cache export 21-24 s, final's step 15-17 s, its image
# export 17-18 s and its cache export 18-21 s.
TIMED_TARGETS = [
    TargetInfo("app-deps", "deps", "app", ("base", "deps")),
    TargetInfo("app-test", "test", "app", ("base", "deps", "test")),
    TargetInfo("app-final", "final", "app", ("base", "deps", "final")),
]
TIMED_RUN = [
    (["[app-test deps 1/2] COPY Gemfile ./", "[app-final deps 1/2] COPY Gemfile ./"], 10.0, 12.0),
    (["[app-test deps 2/2] RUN bundle", "[app-final deps 2/2] RUN bundle"], 13.0, 15.0),
    (["[app-test test 1/1] RUN rspec"], 15.0, 20.0),
    (["[app-final final 1/1] RUN build"], 15.0, 17.0),
    (["[app-final] exporting to image"], 17.0, 18.0),
    (["[app-final] exporting cache to registry"], 18.0, 21.0),
    (["[app-test] exporting cache to registry"], 21.0, 24.0),
]


def test_a_targets_time_runs_from_its_first_step_to_its_last_export() -> None:
    """README: ``time`` is from a target's first step to its last export (a span, not a sum of steps); for a
    stage built inside another target, from its first step to its last."""
    tally = Tally(TIMED_TARGETS)
    tally.add(events_of(*TIMED_RUN), ["app-test", "app-final"])
    seconds = tally.seconds()
    assert seconds == {"app-deps": 5.0, "app-test": 14.0, "app-final": 11.0}
    assert {t: sum(c.seconds for c in s.values()) for t, s in tally.steps().items()} == {
        "app-deps": 4.0,  # the steps' own times, which the span is not
        "app-test": 5.0,
        "app-final": 2.0,
    }


def test_a_rescue_run_adds_its_span_to_the_first() -> None:
    tally = Tally(TIMED_TARGETS)
    tally.add(events_of(*TIMED_RUN), ["app-test", "app-final"])
    tally.add(
        events_of((["[final 1/1] RUN build"], 30.0, 31.5), (["exporting cache to registry"], 31.5, 32.0)), ["app-final"]
    )
    assert tally.seconds() == {"app-deps": 5.0, "app-test": 14.0, "app-final": 13.0}


def test_a_cache_export_that_fails_with_not_found_is_a_problem_and_not_written() -> None:
    """Only an import of a ref that does not exist yet is a plain miss; an export that ends in "not found"
    (a registry answering 404 to a push) is a cache that was not written, said so."""
    events = BuildEvents()
    for name, error in (
        ("importing cache manifest from reg.test/app/cache:final-main", "reg.test/app/cache:final-main: not found"),
        ("exporting cache to registry", "failed to push reg.test/app/cache:final-main: not found"),
    ):
        events.apply({"vertexes": [{"digest": f"sha256:{name}", "name": name, "error": error, "completed": "x"}]})
    tally = Tally([TargetInfo("t", "final", "i", ("final",))])
    tally.add(events, ["t"])
    assert tally.cache_problems() == {
        "t": ["exporting cache to registry: failed to push reg.test/app/cache:final-main: not found"]
    }
    assert tally.exported() == {"t": False}


def test_the_cache_refs_a_target_read_are_its_imports_that_succeeded() -> None:
    """README: the report's ``cache_read`` names the refs whose manifest BuildKit read (a missing ref is not)."""
    events = BuildEvents()
    stamp = "2026-11-26T00:00:01Z"
    for name, error in (
        ("[t] importing cache manifest from reg.test/app/cache:final-feature-x", "final-feature-x: not found"),
        ("[t] importing cache manifest from reg.test/app/cache:final-main", None),
        ("[u] importing cache manifest from reg.test/app/cache:test-main", None),
    ):
        raw = {"digest": f"sha256:{name}", "name": name, "started": stamp, "completed": stamp}
        if error:
            raw["error"] = error
        events.apply({"vertexes": [raw]})
    tally = Tally([TargetInfo("t", "final", "i", ("final",)), TargetInfo("u", "test", "i", ("test",))])
    tally.add(events, ["t", "u"])
    assert tally.imported() == {"t": ["reg.test/app/cache:final-main"], "u": ["reg.test/app/cache:test-main"]}


def log(vertex: str, text: str, stream: int = 1) -> dict[str, object]:
    return {"logs": [{"vertex": vertex, "stream": stream, "data": base64.b64encode(text.encode()).decode()}]}


def test_output_that_arrives_in_chunks_is_kept_in_whole_lines() -> None:
    """BuildKit sends a step's output in chunks that may end mid-line. Split there, a secret in the line would be
    printed as two pieces (the redactor masks the first, at the end of its line; the rest showed)."""
    secret = "npm_q8Zr3uT1wP0sYk2mX7"
    events = BuildEvents()
    failed = {"digest": "v", "name": "[final 2/2] RUN make", "error": "exit code: 2"}
    events.apply({"vertexes": [failed | {"started": "2026-11-26T00:00:01Z", "completed": "2026-11-26T00:00:02Z"}]})
    for chunk in ("first line\nusing tok", "en npm_q8Zr3u", "T1wP0sYk2mX7 now\nlast line without a break"):
        events.apply(log("v", chunk))
    events.apply(log("v", "an error\n", stream=2))
    tally = Tally([TargetInfo("t", "final", "x", ("final",))])
    tally.add(events, ["t"])
    (failure,) = tally.failures()
    assert failure.logs == [
        "first line",
        f"using token {secret} now",
        "an error",
        "last line without a break",
    ]
    redact = Redactor([secret])
    assert [redact(line) for line in failure.logs][1] == "using token [redacted] now"


def test_a_failures_first_line_cuts_only_at_a_line_break() -> None:
    """An error of several lines is described by its first: a secret of several lines leaves its first line
    there, which the redactor masks on its own."""
    key = "-----BEGIN TEST KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END TEST KEY-----"
    failure = Failure(["t"], "[final 2/2] RUN deploy", f"bad key {key}\nmore", [], "final")
    assert failure.describe() == "[final 2/2] RUN deploy: bad key -----BEGIN TEST KEY-----"
    assert Redactor([key])(failure.describe()) == "[final 2/2] RUN deploy: bad key [redacted]"
