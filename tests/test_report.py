"""dockercache.output.report: the cache table a build prints, and the JSON report's ``buildx_seconds``."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dockercache.commands import report
from dockercache.config.caches import LocalCache
from dockercache.config.model import BuilderConfig, Settings
from dockercache.model import BuilderPlan, BuildOptions
from dockercache.output.console import STEP_WIDTH, Console
from dockercache.output.progress import Vertex
from dockercache.output.report import ERROR_WIDTH, render_markdown, render_table
from dockercache.output.results import RunResult, ServiceResult, StageResult
from dockercache.output.tally import StepCount
from dockercache.planning.plan import PlanInputs, make_plan
from dockercache.planning.resolve import ResolvedService
from dockercache.run.runner import Runner
from dockercache.secrets import Redactor

from .test_secrets import SECRET, leaks, straddling

REF = "localhost:5000/cache/ruby:final-main"


def stage(name: str, steps: dict[str, tuple[int, int]], seconds: float, **kw: object) -> StageResult:
    result = StageResult("ruby", name, name, name == "final", name=f"ruby-{name}", status="ok", seconds=seconds)
    result.steps = {s: StepCount(total=total, cached=cached) for s, (cached, total) in steps.items()}
    for key, value in kw.items():
        setattr(result, key, value)
    return result


def test_the_table_is_the_one_the_readme_shows() -> None:
    """README "What a build prints": a row per stage with steps cached/total, time and the cache written,
    columns aligned, then the service's closing line."""
    stages = [
        stage("base", {"base": (2, 2)}, 0.01, cache_written=REF),
        stage("deps", {"deps": (3, 3)}, 0.04, cache_written=REF),
        stage(
            "final", {"final": (1, 3)}, 1.6, cache_written=REF, tags=("localhost:5000/ruby:0123456789ab",), pushed=True
        ),
    ]
    svc = ServiceResult("ruby", stages, 1.8)
    assert render_table(RunResult(services=[svc])) == (
        "service  stage  cached  time  cache written\n"
        "ruby     base   2/2     0.0s  localhost:5000/cache/ruby:final-main\n"
        "ruby     deps   3/3     0.0s  localhost:5000/cache/ruby:final-main\n"
        "ruby     final  1/3     1.6s  localhost:5000/cache/ruby:final-main"
    )
    assert svc.closing_line() == "ruby: 3 stages, 6/8 steps cached, pushed localhost:5000/ruby:0123456789ab in 1.8s"


def test_a_stage_that_never_ran_shows_a_dash_and_nothing_written() -> None:
    svc = ServiceResult("web", [stage("final", {}, 0.0, status="pending")])
    assert render_table(RunResult(services=[svc])).splitlines()[1] == "web      final  -       0.0s  -"


def test_a_failed_run_says_failed_or_cancelled_in_each_stages_row() -> None:
    """README: when a target fails, each stage's row says ``failed`` or ``cancelled`` (beside its steps)."""
    stages = [
        stage("deps", {"deps": (2, 2)}, 0.5, status="cancelled", cache_written=REF),
        stage("test", {"test": (0, 1)}, 1.0, status="failed"),
        stage("final", {"final": (1, 2)}, 0.7, status="cancelled", cache_written=REF),
    ]
    rows = render_table(RunResult(services=[ServiceResult("ruby", stages)])).splitlines()[1:]
    assert [row.split()[1:4] for row in rows] == [
        ["deps", "2/2", "cancelled"],
        ["test", "0/1", "failed"],
        ["final", "1/2", "cancelled"],
    ]


def test_s3_columns_show_objects_and_megabytes_down_and_up() -> None:
    """With an S3 store the table gains ``s3 down`` and ``s3 up`` (objects / size in human units, ``-`` for
    none: 11 KB shows as such, not as ``0.0 MB``), and the cache written is the S3 snapshot."""
    stages = [
        stage("base", {"base": (2, 2)}, 0.1, restored_from="shop/main", down_objects=1, down_bytes=11_264),
        stage("deps", {"deps": (3, 3)}, 0.5, restored_from="shop/main", down_objects=3, down_bytes=1_500_000),
        stage(
            "final",
            {"final": (1, 3)},
            2.31,
            restored_from="shop/main",
            s3_saved="shop/feature-x/ruby/final",
            cache_written="127.0.0.1:47310/shop/feature-x/ruby:final",
            up_objects=2,
            up_bytes=12_340_000,
        ),
    ]
    table = render_table(RunResult(services=[ServiceResult("ruby", stages)]))
    assert table == (
        "service  stage  cached  time  cache written              s3 down      s3 up\n"
        "ruby     base   2/2     0.1s  -                          1 / 11.3 KB  -\n"
        "ruby     deps   3/3     0.5s  -                          3 / 1.5 MB   -\n"
        "ruby     final  1/3     2.3s  shop/feature-x/ruby/final  -            2 / 12.3 MB"
    )


def test_s3_columns_appear_when_a_stage_only_restored_from_s3() -> None:
    row = stage("final", {"final": (3, 3)}, 1.0, restored_from="shop/main")
    header, line = render_table(RunResult(services=[ServiceResult("ruby", [row])])).splitlines()
    assert header.split("  ")[-2:] == ["s3 down", "s3 up"]
    assert line.split()[-2:] == ["-", "-"]
    plain = render_table(RunResult(services=[ServiceResult("ruby", [stage("final", {"final": (3, 3)}, 1.0)])]))
    assert "s3" not in plain


# ------------------------------------------------------------------------------------- buildx_seconds


class SlowDocker:
    """Docker whose daemon answers a ping in PING seconds and whose bake (of nothing) takes BAKE seconds."""

    PING = 0.4
    BAKE = 0.3

    def ping(self) -> None:
        time.sleep(self.PING)

    def login(self, server: str, username: str, password: str) -> None:
        raise AssertionError("no login configured")

    def builder_driver(self, name: str) -> str | None:
        return "docker"

    def create_builder(self, plan: BuilderPlan) -> None:
        raise AssertionError("the default builder exists")

    def read_manifest(self, ref: str) -> dict[str, Any] | None:
        return getattr(self, "manifests", {}).get(ref)

    def remove_builder(self, name: str) -> None:
        raise AssertionError("the default builder is kept")

    def bake(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[str]:
        time.sleep(self.BAKE)
        yield from ()


def test_buildx_seconds_is_the_bakes_wall_time_and_is_in_the_json(tmp_path: Path) -> None:
    """README: ``--json`` gives ``buildx_seconds`` for the whole bake: the time buildx ran, not dockercache's
    own time around it (here a slow ``docker version``)."""
    svc = ResolvedService(
        name="app",
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        stages=("final",),
        final_target="final",
        args={},
        image=None,
        tags=(),
        push_stages=(),
        stage_tag="{stage}-{tag}",
        store_name=None,
        store=LocalCache(type="local", path="cache"),
        metadata_key=None,
        graphs={"final": ("final",)},
    )
    inputs = PlanInputs(
        services=(svc,),
        builder=BuilderConfig(name="default", driver="docker"),
        settings=Settings(),
        root=tmp_path,
        commit="abc123",
        branch="main",
        default_branch="main",
        on_ci=False,
    )
    runner = Runner(SlowDocker(), Console(out=io.StringIO(), err=io.StringIO()))
    started = time.monotonic()
    result = runner.run(make_plan(inputs, BuildOptions(push=False)))
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.error
    assert SlowDocker.BAKE <= result.buildx_seconds < SlowDocker.BAKE + SlowDocker.PING
    assert elapsed >= SlowDocker.BAKE + SlowDocker.PING
    out = io.StringIO()
    report(Console(out=out, err=io.StringIO()), result, as_json=True)
    document = json.loads(out.getvalue())
    assert document["buildx_seconds"] == round(result.buildx_seconds, 3)
    # The run's wall time and dockercache's own (issue 28), at the top; no S3 block where no S3 store was used.
    assert document["wall_seconds"] >= SlowDocker.BAKE + SlowDocker.PING
    assert document["own_seconds"] == document["timings"]["own"] >= SlowDocker.PING
    assert [stage["s3"] for stage in document["services"][0]["stages"]] == [None]


def test_buildx_seconds_in_json_are_rounded_to_milliseconds() -> None:
    assert RunResult(buildx_seconds=2.34567).to_json()["buildx_seconds"] == 2.346


def test_the_json_report_parses_whatever_the_secrets_look_like() -> None:
    """Masking the serialised report replaced JSON syntax or a stage name matching a secret: the report is
    masked string by string instead, so it always parses and only secret values change."""
    from dockercache.secrets import MASK, Redactor

    result = RunResult(services=[ServiceResult("ruby", [stage("final", {"final": (1, 2)}, 1.0)], 1.0)])
    result.warnings.append("token tok3n-planted-9f in a warning")
    for secret in ('"status": ', '",\n  ', "ruby-final"):
        out = io.StringIO()
        report(Console(out=out, err=io.StringIO(), redact=Redactor([secret, "tok3n-planted-9f"])), result, True)
        document = json.loads(out.getvalue())
        assert document["services"][0]["stages"][0]["stage"] == "final", secret
        assert "tok3n-planted-9f" not in out.getvalue()
    assert document["warnings"] == [f"token {MASK} in a warning"]


def test_under_the_document_guard_stdout_carries_the_document_alone() -> None:
    """A child process inheriting stdout (as `docker login` does, printing "Login Succeeded") and a stray print
    land on stderr; the document alone on stdout, and stdout is whole again afterwards."""
    import subprocess
    import sys

    script = (
        "import subprocess, sys\n"
        "from dockercache.output.console import Console\n"
        "console = Console()\n"
        "with console.stdout_for_document():\n"
        "    subprocess.run(['sh', '-c', 'echo Login Succeeded'], check=True)\n"
        "    print('a stray print')\n"
        "    console.info('progress')\n"
        "    console.document({'exit_code': 0})\n"
        "print('after')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    document, after = proc.stdout.rsplit("}\n", 1)
    assert json.loads(document + "}") == {"exit_code": 0} and after == "after\n"
    assert proc.stderr.splitlines() == ["Login Succeeded", "a stray print", "progress"]


def test_the_document_guard_leaves_a_callers_own_stream_alone() -> None:
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO())
    with console.stdout_for_document():
        console.document({"a": 1})
    assert console.out is out and json.loads(out.getvalue()) == {"a": 1}


def test_the_annotation_says_how_it_went_in_one_line_then_a_stage_table() -> None:
    stages = [
        stage("deps", {"deps": (3, 3)}, 0.2, cache_written=REF),
        stage("final", {"final": (1, 3)}, 1.6, cache_written=REF, tags=("localhost:5000/ruby:abc",), pushed=True),
    ]
    body = render_markdown(ServiceResult("ruby", stages, 1.8))
    assert body.splitlines() == [
        ":white_check_mark: **ruby: 2 stages, 4/6 steps cached, pushed localhost:5000/ruby:abc in 1.8s**",
        "",
        "| stage | steps cached | time | cache |",
        "|---|---|---|---|",
        f"| deps | 3/3 | 0.2s | wrote `{REF}` |",
        f"| final | 1/3 | 1.6s | wrote `{REF}` |",
    ]


def test_a_failed_annotation_names_the_stage_and_links_the_jobs_log() -> None:
    stages = [
        stage("deps", {"deps": (2, 2)}, 0.5, status="cancelled", restored_from="app/main", s3_saved="app/pr-1"),
        stage("test", {"test": (0, 1)}, 1.0, status="failed", error="[test 2/2] RUN `make` | exit code: 2"),
    ]
    stages[0].cache_warnings.append("export failed: 500")
    body = render_markdown(ServiceResult("ruby", stages, 2.0), "https://buildkite.com/a/b/builds/3#job-1")
    lines = body.splitlines()
    assert lines[0].startswith(":x: **ruby: 2 stages, 2/3 steps cached, FAILED at test")
    assert lines[2] == "| stage | steps cached | time | cache | s3 down | s3 up |"
    assert lines[4] == "| deps | 2/2 **cancelled** | 0.5s | from `app/main`, wrote `app/pr-1` | - | - |"
    assert ":rotating_light: **test** failed: `[test 2/2] RUN 'make' | exit code: 2` ([the job's log]" in body
    assert "(https://buildkite.com/a/b/builds/3#job-1) opens at the failing step)" in body
    assert lines[-1] == "- :warning: deps: export failed: 500"


def test_log_groups_use_buildkites_headers_and_open_a_failed_group_once() -> None:
    err = io.StringIO()
    console = Console(out=io.StringIO(), err=err, buildkite=True)
    console.section("restore")
    console.section("logins", "quiet")
    console.section("build", "expanded")
    console.open_failed_group()
    console.open_failed_group()
    assert err.getvalue().splitlines() == ["--- restore", "~~~ logins", "+++ build", "^^^ +++"]
    plain = io.StringIO()
    console = Console(out=io.StringIO(), err=plain)
    console.section("build", "expanded")
    console.open_failed_group()
    assert plain.getvalue() == "==> build\n"


def test_sizes_and_ages_in_human_units() -> None:
    from dockercache.output.words import human_age, human_bytes

    sizes = [0, 999, 11_000, 11_264, 999_999, 3_200_000, 123_456_789, 1_500_000_000]
    assert [human_bytes(n) for n in sizes] == [
        "0 B",
        "999 B",
        "11.0 KB",
        "11.3 KB",
        "1.0 MB",
        "3.2 MB",
        "123 MB",
        "1.5 GB",
    ]
    assert [human_age(s) for s in (-1, 45, 60, 3599, 3600, 86400 * 5 + 7)] == ["0s", "45s", "1m", "59m", "1h", "5d"]


def test_the_report_ends_with_the_cache_write_decision_and_the_warnings_printed() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err)
    stages = [stage("final", {"final": (1, 1)}, 0.1, cache_written=REF)]
    stages[0].warn(console, "export failed")
    console.warn("BuildKit lost track of a shared step: building again")
    result = RunResult(services=[ServiceResult("ruby", stages, 0.2)], cache_write=False)
    result.cache_write_reason = "not in CI (a laptop reads shared caches; pass --cache-write to write)"
    report(console, result, as_json=False)
    assert out.getvalue().splitlines()[-1] == (
        "cache writes: off (not in CI (a laptop reads shared caches; pass --cache-write to write))"
    )
    warnings = [line for line in err.getvalue().splitlines() if line.startswith("dockercache: warning:")]
    assert len(warnings) == 2 and err.getvalue().splitlines()[-1] == "dockercache: 2 warnings (above)"
    assert result.to_json()["cache_write"] == {"on": False, "reason": result.cache_write_reason}


# ------------------------------------------------------------------- secrets in text that is shortened


def long_step(line: str) -> Vertex:
    """A finished step whose name is ``line`` (a RUN line carrying a build arg's value)."""
    started = datetime(2026, 11, 26, tzinfo=timezone.utc)
    return Vertex(
        "sha256:s", f'[base 2/4] RUN echo "{line}"', started=started, completed=started + timedelta(seconds=1.1)
    )


def test_a_progress_line_is_masked_before_it_is_cut_wherever_the_secret_sits() -> None:
    """The leak: the line was cut to 110 characters and then masked, so 36 of 40 characters of a build arg's
    value were printed. For every offset of the secret around the cut, no 6 characters of it show."""
    for line in straddling(STEP_WIDTH) + straddling(STEP_WIDTH - len('[base 2/4] RUN echo "')):
        for state in ({}, {"cached": True}, {"error": "exit code: 1"}):
            err = io.StringIO()
            console = Console(out=io.StringIO(), err=err, redact=Redactor([SECRET]))
            vertex = long_step(line)
            for key, value in state.items():
                setattr(vertex, key, value)
            console.step(vertex)
            assert leaks(SECRET, err.getvalue()) == [], err.getvalue()
            assert err.getvalue().rstrip("\n").endswith("...")  # the cut happened


def failed_service(error: str) -> ServiceResult:
    stages = [
        stage("deps", {"deps": (2, 2)}, 0.5, status="cancelled", cache_written=REF),
        stage("final", {"final": (0, 1)}, 1.0, status="failed", error=error),
    ]
    stages[0].cache_warnings.append(f"exporting cache to registry: {error}")
    return ServiceResult("ruby", stages, 2.0)


def test_the_report_and_the_json_document_show_no_piece_of_a_secret() -> None:
    for line in straddling(STEP_WIDTH):
        error = f'[base 2/4] RUN echo "{line}": process did not complete successfully: exit code: 1'
        result = RunResult(services=[failed_service(error)], exit_code=1, error=f"ruby/final: build failed: {error}")
        result.warnings.append(f"cache store 's3': {line}: building again without it")
        for as_json in (True, False):
            out, err = io.StringIO(), io.StringIO()
            console = Console(out=out, err=err, redact=Redactor([SECRET]))
            console.warn(line)
            report(console, result, as_json)
            assert leaks(SECRET, out.getvalue() + err.getvalue()) == [], (as_json, line)
            if as_json:
                json.loads(out.getvalue())


def test_the_annotation_masks_the_error_before_it_is_cut() -> None:
    """render_markdown quotes at most 300 characters of the error: masked first. The runner's call (no redactor
    given) leaves it to the agent, whose redactor masks what the cut left before its ``...``."""
    redact = Redactor([SECRET])
    for width in (ERROR_WIDTH, ERROR_WIDTH - len("ruby/final: build failed: ")):
        for line in straddling(width):
            svc = failed_service(line)
            body = render_markdown(svc, "https://buildkite.com/a/b/builds/3#job-1", redact)
            assert leaks(SECRET, body) == [] and ":rotating_light: **final** failed: `" in body, line
            assert leaks(SECRET, redact(render_markdown(svc, "https://buildkite.com/a/b/builds/3#job-1"))) == []


def test_the_agent_masks_annotations_meta_data_and_its_own_errors(tmp_path: Path) -> None:
    from dockercache.adapters.buildkite import Agent, AgentError

    from .test_buildkite import STUB_BIN, env_for

    env = env_for(tmp_path, BUILDKITE="true", MY_API_KEY=SECRET)
    agent = Agent.detect(env)
    assert agent is not None
    for line in straddling(ERROR_WIDTH)[::7]:
        agent.annotate(render_markdown(failed_service(line)), "error", "dockercache-ruby")
    agent.meta_data_set("ruby-image", f"reg.test/ruby:{SECRET}")
    stored = "".join(p.read_text() for p in tmp_path.iterdir())
    assert leaks(SECRET, stored) == [] and "reg.test/ruby:[redacted]" in stored
    assert Agent(str(STUB_BIN / "buildkite-agent"), env).redact is not None  # built from env's secrets
    failing = tmp_path / "failing-agent"
    failing.write_text(f"#!/bin/sh\necho 'token {SECRET[:30]}\n{SECRET[30:]} refused' >&2\nexit 7\n")
    failing.chmod(0o755)
    with pytest.raises(AgentError, match=r"exited 7: \[redacted\] refused$"):  # its last line, masked first
        Agent(str(failing), env).annotate("body", "info", "dockercache-ruby")


# ---------------------------------------------------------------------------------------- warning counts


def test_a_services_warning_count_is_the_number_printed() -> None:
    """The summary said ``4 cache warnings``, the footer ``3 warnings (above)``: an S3 save refused is printed
    once (in the store's words) and recorded in every stage that would have saved; each counted it. Counted
    once now, as printed; a stage's own warnings count once each, and a warning printed twice counts once."""
    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err)
    stages = [stage("deps", {"deps": (2, 2)}, 0.5), stage("final", {"final": (1, 2)}, 1.0)]
    for s in stages:  # each target's own cache export failed: one warning per stage, printed per stage
        s.warn(console, "exporting cache to s3: 500 Internal Server Error")
    problem = "PUT cache/snapshots/x/main/ruby: 500 InternalError"
    console.warn(problem)  # as stores/s3.py does: printed once ...
    for s in stages:
        s.cache_warnings.append(f"not saved: {problem}")  # ... and recorded in both stages
    stages[1].warn(console, "exporting cache to s3: 500 Internal Server Error")  # the rescue run says it again
    svc = ServiceResult("ruby", stages, 2.0)
    result = RunResult(services=[svc])
    report(console, result, as_json=False)
    printed = [line for line in err.getvalue().splitlines() if line.startswith("dockercache: warning:")]
    assert len(printed) == 3 and console.warned == 3 == len(svc.warnings)
    assert out.getvalue().splitlines()[-1] == "ruby: 2 stages, 3/4 steps cached, cache only, 3 cache warnings in 2.0s"
    assert err.getvalue().splitlines()[-1] == "dockercache: 3 warnings (above)"
    footer = io.StringIO()
    Console(out=io.StringIO(), err=footer).warnings_footer()
    console = Console(out=io.StringIO(), err=footer)
    console.warn("one")
    console.warnings_footer()
    assert footer.getvalue() == "dockercache: warning: one\ndockercache: 1 warning (above)\n"
    assert render_markdown(svc).splitlines()[-3:] == [
        "- :warning: deps: exporting cache to s3: 500 Internal Server Error",
        f"- :warning: deps, final: not saved: {problem}",
        "- :warning: final: exporting cache to s3: 500 Internal Server Error",
    ]


def test_cache_mount_warnings_count_as_the_services_own() -> None:
    svc = ServiceResult("ruby", [stage("final", {"final": (1, 1)}, 1.0)], 1.0)
    svc.cache_mounts = {"warnings": ["ruby: cache mounts: not saved: disk full"]}
    assert svc.closing_line().endswith("cache only, 1 cache warning in 1.0s")
    assert render_markdown(svc).splitlines()[-1] == "- :warning: ruby: cache mounts: not saved: disk full"


def progress_lines(*updates: dict[str, Any]) -> list[str]:
    """The plain progress a run of these vertex updates prints, as the runner feeds the console."""
    from dockercache.output.progress import BuildEvents

    err = io.StringIO()
    console = Console(out=io.StringIO(), err=err)
    events = BuildEvents()
    for update in updates:
        for vertex in events.apply({"vertexes": [update]}):
            console.step(vertex)
    for vertex in events.finish():
        console.step(vertex)
    return [" ".join(line.split()) for line in err.getvalue().splitlines()]


def test_a_step_that_succeeded_is_never_printed_as_an_error() -> None:
    """Jobs side by side share a vertex; the first solve is cancelled with its session and BuildKit solves it
    again: one line, its final state (it printed ``ERROR [final 1/2] COPY ...`` and then ``DONE``)."""
    name = "[final 1/2] COPY --from=build /out /out"
    one, two, three = "2026-11-26T00:00:01Z", "2026-11-26T00:00:02Z", "2026-11-26T00:00:03Z"
    lines = progress_lines(
        {"digest": "v", "name": name, "started": one, "completed": two, "error": "context canceled"},
        {"digest": "v", "name": name, "started": two},
        {"digest": "v", "name": name, "started": two, "completed": three},
    )
    assert lines == [f"DONE 1.0s {name}"]


def test_a_cancelled_step_is_printed_cancelled_and_a_failed_one_as_an_error() -> None:
    """As buildx's own plain output: the step that failed is the ERROR, the ones bake stopped are CANCELED."""
    stamp = "2026-11-26T00:00:01Z"
    lines = progress_lines(
        {"digest": "a", "name": "[test 2/2] RUN rspec", "completed": stamp, "error": "exit code: 3"},
        {"digest": "b", "name": "[final 2/2] RUN make", "completed": stamp, "error": "context canceled"},
    )
    assert lines == ["ERROR [test 2/2] RUN rspec", "CANCELED [final 2/2] RUN make"]
