"""dockercache.output.live: on a terminal, one line per bake target with its running step and a timer, redrawn in
place; a finished target collapses to its cached/total line."""

from __future__ import annotations

import io
import json
import os
import pty
import re
from pathlib import Path

from dockercache.adapters.ci import CIContext
from dockercache.commands import progress_mode
from dockercache.config.caches import LocalCache
from dockercache.output.console import Console
from dockercache.output.live import CLEAR_LINE, LiveDisplay, owner
from dockercache.output.progress import BuildEvents
from dockercache.secrets import Redactor

from .test_runner import World, plan_for, world  # noqa: F401  (the runner's fakes)
from .test_secrets import SECRET, WIDTHS, leaks


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def vertex(digest: str, name: str, started: bool = True, completed: bool = False, cached: bool = False) -> str:
    raw = {"digest": digest, "name": name, "cached": cached}
    if started:
        raw["started"] = "2026-11-26T00:00:01Z"
    if completed:
        raw["completed"] = "2026-11-26T00:00:02Z"
    return json.dumps({"vertexes": [raw]})


def test_owner_reads_the_target_from_the_vertex_name() -> None:
    targets = ["ruby-final", "ruby-test"]
    assert owner("[ruby-final deps 2/3] RUN bundle", targets) == "ruby-final"
    assert owner("[ruby-test] exporting cache to registry", targets) == "ruby-test"
    assert owner("[internal] load build definition", targets) is None
    assert owner("[deps 2/3] RUN bundle", ["ruby-final"]) == "ruby-final"  # one target: names carry none


def test_a_running_target_shows_its_step_and_timer_and_a_finished_one_its_cached_line() -> None:
    clock, stream = Clock(), io.StringIO()
    display = LiveDisplay(["app-final", "app-test"], stream, str, clock=clock)
    events = BuildEvents()
    for item in (
        vertex("a", "[app-final base 2/2] RUN a", completed=True, cached=True),
        vertex("b", "[app-final deps 2/3] RUN bundle install"),
        vertex("c", "[app-test test 2/2] RUN rspec", completed=True),
        vertex("d", "[app-test] exporting cache to registry", completed=True),
    ):
        events.apply(json.loads(item))
    display.update(events)
    clock.now = 112.34
    assert display.render() == [
        " | app-final  12.3s  [deps 2/3] RUN bundle install",
        " + app-test  0/1 steps cached  0.0s",
    ]
    display.draw()
    display.draw()
    frames = stream.getvalue()
    # Redrawn in place: the second frame moves the cursor up over the two lines it replaces.
    assert frames.count(CLEAR_LINE) == 4 and "\x1b[2F" in frames
    events.apply(json.loads(vertex("b", "[app-final deps 2/3] RUN bundle install", completed=True)))
    clock.now = 115.0
    display.update(events)
    display.finish({"app-final": True, "app-test": True})
    assert display.render() == [" + app-final  1/2 steps cached  15.0s", " + app-test  0/1 steps cached  0.0s"]


def test_the_last_frame_follows_bakes_verdict_not_a_vertex_error() -> None:
    """A cache import that misses carries an error on its vertex while the build succeeds: the target is `+`."""
    display = LiveDisplay(["app-final"], io.StringIO(), str, clock=Clock())
    events = BuildEvents()
    miss = {"digest": "m", "name": "importing cache manifest from reg:5000/c:final-main", "error": "not found"}
    miss |= {"started": "2026-11-26T00:00:01Z", "completed": "2026-11-26T00:00:02Z"}
    events.apply({"vertexes": [miss]})
    events.apply(json.loads(vertex("a", "[base 1/1] RUN a", completed=True)))
    display.update(events)
    display.finish({"app-final": True})
    assert display.render()[0].startswith(" + app-final  0/1 steps cached")
    display.finish({"app-final": False})
    assert display.render()[0].startswith(" x app-final")


def test_progress_auto_is_the_live_display_on_a_terminal_off_ci_only(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            console = Console(out=io.StringIO(), err=terminal)
            laptop, ci = CIContext({}, tmp_path), CIContext({"CI": "true"}, tmp_path)
            assert progress_mode("auto", console, laptop) == "tty"
            assert progress_mode("auto", console, ci) == "plain"
            assert progress_mode("quiet", console, laptop) == "quiet"
        piped = Console(out=io.StringIO(), err=io.StringIO())
        assert progress_mode("auto", piped, CIContext({}, tmp_path)) == "plain"
    finally:
        os.close(master)
        os.close(slave)


def test_a_build_under_a_pseudo_terminal_draws_the_live_display(world: World, tmp_path: Path) -> None:  # noqa: F811
    master, slave = pty.openpty()
    try:
        terminal = os.fdopen(slave, "w", closefd=False)
        console = Console(out=io.StringIO(), err=terminal)
        console.progress = progress_mode("auto", console, CIContext({}, tmp_path))
        world.runner.console = console
        result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
        terminal.flush()
        assert result.exit_code == 0
        output = b""
        while True:
            os.set_blocking(master, False)
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            output += chunk
        text = output.decode()
        assert CLEAR_LINE in text
        lines = [line.replace(CLEAR_LINE, "").strip() for line in text.replace("\r", "").split("\n")]
        assert "+ app-test  0/5 steps cached" in " ".join(lines) and "+ app-final" in " ".join(lines)
        assert "DONE" not in text  # no per-step lines on a terminal
    finally:
        os.close(master)
        os.close(slave)


def test_the_live_display_masks_each_line_before_it_cuts_it_to_its_width() -> None:
    """A running step's name carries build args' values: the display masks a line, then cuts it to its width,
    whatever the width and wherever the secret sits against the cut."""
    redact = Redactor([SECRET])
    for width in WIDTHS:
        for start in range(width + 2):
            stream = io.StringIO()
            display = LiveDisplay(["app-final"], stream, redact, clock=Clock(), width=width)
            events = BuildEvents()
            name = f'[deps 2/3] RUN echo "{("padding " * 40)[:start]}{SECRET} and the rest, {"tail " * 12}"'
            events.apply(json.loads(vertex("b", name)))
            display.update(events)
            display.draw()
            (line,) = display.render()
            assert len(line) == width and line.endswith("...")
            assert leaks(SECRET, stream.getvalue() + line) == [], (width, start, line)


def test_the_consoles_live_display_uses_its_redactor() -> None:
    redact = Redactor([SECRET])
    console = Console(out=io.StringIO(), err=io.StringIO(), redact=redact)
    assert console.live(["app-final"]) is None  # plain progress: no display
    console.progress = "tty"
    display = console.live(["app-final"])
    assert display is not None and display.redact is redact and display.stream is console.err


def test_a_target_is_not_shown_finished_before_it_has_exported() -> None:
    """Nothing of a target running between two vertexes (its build definition loaded, its first step not yet
    started) is not a finished target: no ``+ app-final  0/0 steps cached`` flash."""
    display = LiveDisplay(["app-final", "app-test"], io.StringIO(), str, clock=Clock())
    events = BuildEvents()
    events.apply(json.loads(vertex("i", "[app-final internal] load build definition from Dockerfile", completed=True)))
    events.apply(json.loads(vertex("s", "[app-test test 1/1] RUN rspec", completed=True)))
    display.update(events)
    assert display.render() == [" | app-final  0.0s", " | app-test  0.0s"]
    events.apply(json.loads(vertex("e", "[app-test] exporting to image", completed=True)))
    display.update(events)
    assert display.render()[1] == " + app-test  0/1 steps cached  0.0s"


def test_an_interrupted_target_is_not_marked_a_success() -> None:
    """The run was interrupted (no verdict from bake): a target not finished by then is cancelled, not ``+``; one
    that had finished stays as it was."""
    display = LiveDisplay(["app-final", "app-test"], io.StringIO(), str, clock=Clock())
    events = BuildEvents()
    for item in (
        vertex("a", "[app-final final 1/2] RUN make"),
        vertex("b", "[app-test test 1/1] RUN rspec", completed=True),
        vertex("c", "[app-test] exporting cache to registry", completed=True),
    ):
        events.apply(json.loads(item))
    display.update(events)
    display.finish(None)
    assert display.render() == [
        " - app-final  0/1 steps cached, cancelled  0.0s",
        " + app-test  0/1 steps cached  0.0s",
    ]


def test_a_target_bake_cancelled_is_cancelled_and_the_failing_one_failed() -> None:
    """Bake failed: the target whose step failed is ``x``, the one bake stopped because of it is cancelled (as the
    report's table has them), never ``+``."""
    display = LiveDisplay(["app-final", "app-test"], io.StringIO(), str, clock=Clock())
    events = BuildEvents()
    failed = {"digest": "t", "name": "[app-test test 1/1] RUN rspec", "error": "exit code: 3"}
    failed |= {"started": "2026-11-26T00:00:01Z", "completed": "2026-11-26T00:00:02Z"}
    stopped = failed | {"digest": "f", "name": "[app-final final 1/1] RUN make", "error": "context canceled"}
    events.apply({"vertexes": [failed, stopped]})
    display.update(events)
    display.finish({"app-final": False, "app-test": False})
    assert display.render() == [
        " - app-final  0/1 steps cached, cancelled  0.0s",
        " x app-test  0/1 steps cached  0.0s",
    ]


def last_frame(text: str, lines: int) -> list[str]:
    """The last ``lines`` lines drawn, without the sequences that move the cursor and clear lines."""
    plain = re.sub(r"\x1b\[\d*[A-Za-z]", "", text.replace("\r", ""))
    return [line.strip() for line in plain.split("\n") if line.strip()][-lines:]


def test_the_live_lines_add_up_to_the_reports_table(world: World, tmp_path: Path) -> None:  # noqa: F811
    """app-test and app-final run; base and deps are built inside app-test. Each line counts the rows it stands
    for (its own, and those of the stages built inside it), so the last frame says what the table says (app-final
    counted base and deps again, 6 steps where the table has 2), on a first build and on a second, all cached."""
    for cached, table, frame in (
        (False, {"base": (0, 2), "deps": (0, 2), "test": (0, 1), "final": (0, 2)}, ["app-test 0/5", "app-final 0/2"]),
        (True, {"base": (2, 2), "deps": (2, 2), "test": (1, 1), "final": (2, 2)}, ["app-test 5/5", "app-final 2/2"]),
    ):
        world.docker.cached = cached
        err = io.StringIO()
        console = Console(out=io.StringIO(), err=err)
        console.progress = "tty"
        world.runner.console = console
        result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
        assert result.exit_code == 0, result.error
        assert {s.stage: (s.cached, s.total) for s in result.services[0].stages} == table
        assert [" ".join(line.split()[:3]) for line in last_frame(err.getvalue(), 2)] == [f"+ {f}" for f in frame]


def test_a_target_whose_export_was_cancelled_by_the_interrupt_is_cancelled_not_a_success() -> None:
    """Its image exported, then the interrupt cancelled its cache export: nothing of it runs, but it did not
    finish: ``-``, cancelled, in the last frame (issue 28)."""
    display = LiveDisplay(["app-final", "app-test"], io.StringIO(), str, clock=Clock())
    events = BuildEvents()
    stopped = {"digest": "c", "name": "[app-test] exporting cache to registry", "error": "context canceled"}
    stopped |= {"started": "2026-11-26T00:00:01Z", "completed": "2026-11-26T00:00:02Z"}
    for item in (
        vertex("b", "[app-test test 1/1] RUN rspec", completed=True),
        vertex("e", "[app-test] exporting to image", completed=True),
    ):
        events.apply(json.loads(item))
    events.apply({"vertexes": [stopped]})
    display.update(events)
    assert display.render()[1] == " | app-test  0.0s"
    display.finish(None)
    assert display.render()[1] == " - app-test  0/1 steps cached, cancelled  0.0s"


def test_an_export_seen_before_any_step_of_its_target_is_no_finished_flash() -> None:
    display = LiveDisplay(["app-final", "app-test"], io.StringIO(), str, clock=Clock())
    events = BuildEvents()
    events.apply(json.loads(vertex("e", "[app-test] exporting to image", completed=True)))
    display.update(events)
    assert display.render()[1] == " | app-test  0.0s"  # not " + app-test  0/0 steps cached"
