"""dockercache.output.rawjson, .progress and .tally: the rawjson stream, and its attribution to bake targets."""

from __future__ import annotations

import base64
import json

from dockercache.output.progress import BuildEvents
from dockercache.output.rawjson import RawJsonDecoder
from dockercache.output.tally import Failure, Step, Tally, TargetInfo
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
    """BuildKit's ``[<platform> <stage> <n>/<m>]``: platform and stage name optional, ``n`` padded to ``m``'s width."""
    assert Step.parse("[deps 2/3] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[linux/arm64 deps 2/3] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[linux/amd64->arm64 deps 2/3] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[linux/arm/v7 deps 2/3] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[deps  2/12] RUN make") == Step("deps", 2, "RUN make")
    assert Step.parse("[2/3] RUN make") == Step(None, 2, "RUN make")  # a stage without a name
    assert Step.parse("[ 2/12] RUN make") == Step(None, 2, "RUN make")
    assert Step.parse("[linux/arm64 2/3] RUN make") == Step(None, 2, "RUN make")
    assert Step.parse("[stage-0 2/3] RUN make") == Step("stage-0", 2, "RUN make")
    assert Step.parse("[base 1/3] FROM busybox") is None
    assert Step.parse("[1/3] FROM busybox") is None
    assert Step.parse("exporting to image") is None
    assert Step.parse("[internal] load build definition from Dockerfile") is None


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


def timed(update: dict[str, object]) -> dict[str, object]:
    """A vertex update with ``started``/``completed`` given as seconds into the build, as rawjson has it."""
    return {k: at(float(str(v))) if k in ("started", "completed") else v for k, v in update.items()}


def vertexes(*updates: dict[str, object]) -> BuildEvents:
    """A run from vertex updates, in order."""
    events = BuildEvents()
    for update in updates:
        events.apply({"vertexes": [timed(update)]})
    return events


def step(digest: str, name: str, cached: bool = False, **more: object) -> dict[str, object]:
    return {"digest": digest, "name": name, "started": 1, "completed": 2, "cached": cached, **more}


# A single-stage Dockerfile (FROM, COPY, RUN), built a second time: both steps come from cache. How BuildKit
# names an unnamed stage's steps, alone and in a bake of several targets (buildx adds the target).
SINGLE_STAGE_NAMES = {
    "unnamed": ("[{}/3] FROM busybox", "[{}/3] COPY . /app", "[{}/3] RUN make"),
    "labelled": ("[stage-0 {}/3] FROM busybox", "[stage-0 {}/3] COPY . /app", "[stage-0 {}/3] RUN make"),
}


def test_a_single_stage_dockerfile_counts_its_steps() -> None:
    """An unnamed stage is dockercache's ``stage-0``; its steps (``[2/3] RUN ...``) are its steps: n/n cached on a
    second build, not 0/0."""
    for form, names in SINGLE_STAGE_NAMES.items():
        events = vertexes(*(step(f"sha256:{n}", name.format(n), cached=True) for n, name in enumerate(names, 1)))
        tally = Tally([TargetInfo("app-stage-0", "stage-0", "app", ("stage-0",))])
        tally.add(events, ["app-stage-0"])
        assert counts(tally) == {"app-stage-0": {"stage-0": (2, 2)}}, form


def test_a_single_stage_service_in_a_bake_of_several_targets_counts_its_steps() -> None:
    """Beside another service, buildx prefixes the unnamed stage's steps with the target: ``[web-stage-0 2/3]``."""
    targets = [
        TargetInfo("web-stage-0", "stage-0", "web", ("stage-0",)),
        TargetInfo("api-final", "final", "api", ("base", "final")),
    ]
    events = vertexes(
        step("sha256:w1", "[web-stage-0 2/3] COPY . /app", cached=True),
        step("sha256:w2", "[web-stage-0 3/3] RUN make", cached=True),
        step("sha256:w3", "[web-stage-0 stage-0  4/10] RUN make check", cached=True),  # the labelled form, padded
        step("sha256:a1", "[api-final base 2/2] RUN setup", cached=True),
        step("sha256:a2", "[api-final final 2/2] RUN build"),
    )
    tally = Tally(targets)
    tally.add(events, [t.name for t in targets])
    assert counts(tally) == {"web-stage-0": {"stage-0": (3, 3)}, "api-final": {"base": (1, 1), "final": (0, 1)}}


def test_a_failing_step_of_an_unnamed_stage_names_its_stage() -> None:
    events = vertexes(step("sha256:1", "[2/2] RUN make", error="exit code: 2"))
    tally = Tally([TargetInfo("app-stage-0", "stage-0", "app", ("stage-0",))])
    tally.add(events, ["app-stage-0"])
    (failure,) = tally.failures()
    assert failure.stage == "stage-0"


# Two services, one Dockerfile each, the same base stage: BuildKit solves each base step once, one vertex
# reported under both targets' names (the name it got first, prefixed with each target). worker's own session
# also reports a duplicate of the first step, cached.
SHARED_TARGETS = [
    TargetInfo("api-base", "base", "api", ("base",)),
    TargetInfo("api-final", "final", "api", ("base", "final")),
    TargetInfo("worker-base", "base", "worker", ("base",)),
    TargetInfo("worker-final", "final", "worker", ("base", "final")),
]
IMPORTS = (
    step("sha256:i1", "[api-final] importing cache manifest from reg.test/api/cache:final-main", error="not found"),
    step("sha256:i2", "[api-final] importing cache manifest from reg.test/api/cache:base-main"),
    step("sha256:i3", "[worker-final] importing cache manifest from reg.test/worker/cache:final-main"),
    step("sha256:i4", "[worker-final] importing cache manifest from reg.test/worker/cache:base-main"),
)


def shared_base_run(base_cached: bool) -> BuildEvents:
    return vertexes(
        *IMPORTS,
        step("sha256:b2", "[api-final base 2/3] RUN apt-get install -y curl", cached=base_cached),
        step("sha256:b2", "[worker-final base 2/3] RUN apt-get install -y curl", cached=base_cached),
        step("sha256:w2", "[worker-final base 2/3] RUN apt-get install -y curl", cached=True),
        step("sha256:b3", "[api-final base 3/3] COPY certs/ /etc/certs/"),
        step("sha256:b3", "[worker-final base 3/3] COPY certs/ /etc/certs/"),
        step("sha256:af", "[api-final final 2/2] RUN make api"),
        step("sha256:wf", "[worker-final final 2/2] RUN make worker"),
    )


def test_base_steps_two_dockerfiles_share_count_once_in_the_first_service() -> None:
    """One vertex under two services' names is one step: counted once, in the first service in plan order that
    owns it (api's base), not again in worker's (the report said ``api base 1/3`` and ``worker base 1/3``)."""
    tally = Tally(SHARED_TARGETS)
    tally.add(shared_base_run(base_cached=True), [t.name for t in SHARED_TARGETS if t.stage == "final"])
    assert counts(tally) == {
        "api-base": {"base": (1, 2)},
        "api-final": {"final": (0, 1)},
        "worker-base": {},
        "worker-final": {"final": (0, 1)},
    }
    # The report's --json says where worker's base steps are counted (its row alone would read 0/0).
    assert tally.shared() == {"api-base": [], "api-final": [], "worker-base": ["api-base"], "worker-final": []}


def test_base_steps_two_dockerfiles_share_count_once_when_the_names_are_the_other_services() -> None:
    """BuildKit names a shared vertex once, as the session that asked first had it: worker's name of it can carry
    api's stage (``[worker-final base ...]`` where worker's Dockerfile calls the stage ``runtime``). It is still
    counted once, in api's base, and worker's final does not take it (it said ``worker final 0/8``)."""
    targets = [
        TargetInfo("api-base", "base", "api", ("base",)),
        TargetInfo("api-final", "final", "api", ("base", "final")),
        TargetInfo("worker-final", "final", "worker", ("runtime", "final")),
    ]
    events = vertexes(
        step("sha256:b2", "[api-final base 2/3] RUN apt-get install -y curl"),
        step("sha256:b2", "[worker-final base 2/3] RUN apt-get install -y curl"),
        step("sha256:b3", "[api-final base 3/3] COPY certs/ /etc/certs/"),
        step("sha256:b3", "[worker-final base 3/3] COPY certs/ /etc/certs/"),
        step("sha256:wf", "[worker-final final 2/2] RUN make worker"),
    )
    tally = Tally(targets)
    tally.add(events, ["api-final", "worker-final"])
    assert counts(tally) == {"api-base": {"base": (0, 2)}, "api-final": {}, "worker-final": {"final": (0, 1)}}


def test_cache_read_names_the_sources_of_a_stages_hits() -> None:
    """``cache_read`` of a stage that hit names the refs its hits can have come from: for a stage built inside
    other targets, the refs they imported (api-base had ``[]``), in plan order; a vertex shared by two sessions is
    answered from the caches of both. A stage without a hit names none (api's final listed its target's imports
    although nothing of it came from cache)."""
    tally = Tally(SHARED_TARGETS)
    tally.add(shared_base_run(base_cached=True), ["api-final", "worker-final"])
    assert tally.cache_read() == {
        "api-base": [  # api's final-main is missing: not read
            "reg.test/api/cache:base-main",
            "reg.test/worker/cache:final-main",
            "reg.test/worker/cache:base-main",
        ],
        "api-final": [],
        "worker-base": [],
        "worker-final": [],
    }


def test_cache_read_of_a_target_that_owns_its_hits_is_its_own_imports() -> None:
    """BuildKit does not say which source answered a hit: a target that runs and owns its hits names its own
    imports (ruby-test's test-main is not where ruby-deps' steps came from)."""
    events = vertexes(
        step("sha256:i1", "[ruby-deps] importing cache manifest from reg.test/c:deps-main"),
        step("sha256:i2", "[ruby-test] importing cache manifest from reg.test/c:test-main"),
        step("sha256:d1", "[ruby-deps deps 2/2] RUN bundle", cached=True),
        step("sha256:d1", "[ruby-test deps 2/2] RUN bundle", cached=True),
        step("sha256:t1", "[ruby-test test 2/2] RUN rspec"),
    )
    tally = Tally(BAKE_TARGETS)
    tally.add(events, ["ruby-deps", "ruby-test"])
    assert tally.cache_read() == {"ruby-deps": ["reg.test/c:deps-main"], "ruby-test": [], "ruby-final": []}


def test_a_vertex_cancelled_then_completed_is_a_success_reported_once() -> None:
    """A vertex two sessions share: the first solve is cancelled when its session goes, BuildKit solves it again.
    Its final state is the success, given once (never the cancellation first), and it is no failure; a
    cancellation another session reports after that does not undo it."""
    events = BuildEvents()
    name = "[final 1/2] COPY --from=build /out /out"
    updates = [
        {"digest": "v", "name": name, "started": at(1)},
        {"digest": "v", "name": name, "started": at(1), "completed": at(2), "error": "context canceled"},
        {"digest": "v", "name": name, "started": at(3)},
        {"digest": "v", "name": name, "started": at(3), "completed": at(4)},
        {"digest": "v", "name": name, "started": at(1), "completed": at(2), "error": "context canceled"},
    ]
    given = [[v.name for v in events.apply({"vertexes": [u]})] for u in updates]
    assert given == [[], [], [], [name], []]
    assert events.finish() == []
    vertex = events.vertexes["v"]
    assert vertex.error is None and vertex.seconds == 1.0
    tally = Tally([TargetInfo("t", "final", "x", ("final",))])
    tally.add(events, ["t"])
    assert tally.failures() == [] and counts(tally) == {"t": {"final": (0, 1)}}


def test_a_vertex_running_again_after_a_cancellation_is_running() -> None:
    events = BuildEvents()
    events.apply({"vertexes": [{"digest": "v", "name": "[a 1/1] RUN x", "completed": at(2), "error": "canceled"}]})
    events.apply({"vertexes": [{"digest": "v", "name": "[a 1/1] RUN x", "started": at(3)}]})
    vertex = events.vertexes["v"]
    assert vertex.completed is None and vertex.error is None and vertex.started is not None


def test_cancellations_are_given_at_the_end_but_not_those_of_merged_away_duplicates() -> None:
    """A cancellation that stays one is the vertex's final state when the stream ends; a duplicate BuildKit
    merged away (another vertex of the same name completed) is not the step's state and is not given."""
    events = vertexes(
        step("sha256:dup", "[app-test deps 1/2] COPY deps.lock /x", error="context canceled: context canceled"),
        step("sha256:real", "[app-test deps 1/2] COPY deps.lock /x", cached=True),
        step("sha256:stopped", "[app-final final 2/2] RUN make", error="context canceled"),
    )
    last = {"vertexes": [timed(step("sha256:late", "[app-final] exporting to image"))]}
    assert [v.digest for v in events.finish([last])] == ["sha256:late", "sha256:stopped"]
    assert events.finish() == []  # each once


def test_a_blob_transfer_that_stops_moving_is_stalled() -> None:
    """Only blob fetches (statuses named by a digest) are watched. One BuildKit keeps reporting (as it does every
    fraction of a second while a fetch is open) without progress is stalled, whatever its vertex's state (a lazily
    fetched cache layer is reported under the vertex that resolved it, long completed); one that moves, completes,
    or is no longer reported is not."""
    now = [0.0]
    events = BuildEvents(clock=lambda: now[0])
    blob = "sha256:" + "ab" * 32
    done = {"digest": "sha256:step", "name": "[deps 2/3] RUN x", "started": "2026-12-07T10:00:00Z"}
    done["completed"] = "2026-12-07T10:00:01Z"

    def status(current: int, **extra: object) -> None:
        fetch = {"id": blob, "vertex": "sha256:step", "current": current, "total": 100, **extra}
        events.apply({"vertexes": [done], "statuses": [fetch]})

    status(10)
    events.apply({"statuses": [{"id": "extracting " + blob, "vertex": "sha256:step", "current": 0}]})
    now[0] = 50.0
    status(40)  # moved
    now[0] = 100.0
    status(40)
    assert events.stalled(60) is None
    now[0] = 111.0
    status(40)  # reported again, still at 40
    stalled = events.stalled(60)
    assert stalled is not None and stalled.describe(60) == f"blob {blob} made no progress for 60 s (40 of 100 bytes)"
    now[0] = 130.0  # no longer reported: not a fetch BuildKit waits for
    assert events.stalled(60) is None
    status(100, completed="2026-12-07T10:01:00Z")
    assert events.stalled(60) is None
