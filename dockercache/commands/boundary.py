"""The one error boundary of every front door (the Invoke tasks, the ``dockercache`` script, the Buildkite plugin),
without Invoke: expected failures become :class:`Stop` (a one-line message and the documented exit code), signals
unwind the run, ``--json`` gets its document even on an error. Only bugs show a traceback.

``build`` and ``plan`` here are the tasks' bodies with plain arguments, so the console script runs its everyday
commands without importing Invoke (:mod:`dockercache.cli`); :mod:`dockercache.tasks` wraps them as Invoke tasks.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from ..errors import ConfigError, DockercacheError, Interrupted
from . import build as builds
from .environment import Environment, options_from
from .plan import cmd_plan

USAGE_ERROR = 2
SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Stop(Exception):
    """The command ends with exit ``code``; ``message`` (if any) is printed on stderr."""

    def __init__(self, message: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM (Buildkite's cancel) unwinds the run as Ctrl-C does: buildx is stopped, temporary files and an
    ephemeral builder removed, nothing pushed or recorded. A second signal while that happens leaves at once."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if handling:
            os._exit(128 + signum)
        handling.append(signum)
        raise Interrupted(signum)

    handling: list[int] = []
    try:
        previous = {sig: signal.signal(sig, interrupted) for sig in SIGNAL_NAMES}
    except ValueError:  # not the main thread (tasks called from a thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _boundary() -> Iterator[None]:
    """Map expected failures to one red line and an exit code."""
    try:
        with _signals():
            yield
    except DockercacheError as exc:
        lines = exc.lines() if isinstance(exc, ConfigError) else [str(exc)]
        message = "\n".join(f"dockercache: error: {line}" for line in lines)
        if len(lines) > 1:
            message += f"\ndockercache: {len(lines)} configuration errors"
        raise Stop(message, exc.exit_code) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise Stop(f"dockercache: interrupted by {SIGNAL_NAMES.get(signum, signum)}", 128 + signum) from None


def error_document(code: int, message: str | None) -> str:
    """``--json`` when the command stops with an error: still one JSON document on stdout (``errors``: every
    configuration error when there were several)."""
    lines = [line for line in (message or "").splitlines() if line.startswith("dockercache: error: ")]
    errors = [line.removeprefix("dockercache: error: ") for line in lines]
    if not errors and message:
        errors = [message.removeprefix("dockercache: ")]
    document: dict[str, object] = {"exit_code": code, "error": errors[0] if errors else None}
    if len(errors) > 1:
        document["errors"] = errors
    return json.dumps(document, indent=2)


def guarded(command: Callable[[], int], as_json: bool = False) -> None:
    """Runs ``command`` inside the boundary: signals, one-line errors (``--json``: a document), and
    :class:`Stop` for any exit code but 0."""
    try:
        with _boundary():
            exit_code = command()
    except Stop as exc:
        if as_json and exc.message:  # an error before the command could print its own document
            print(error_document(exc.code, exc.message), flush=True)
        raise
    if exit_code:
        raise Stop(code=exit_code)


def push_flag(push: bool, no_push: bool) -> bool | None:
    """--push / --no-push, else None: push on CI only."""
    if push and no_push:
        raise Stop("dockercache: error: --push and --no-push contradict each other", USAGE_ERROR)
    return True if push else False if no_push else None


def build(
    config: str | None,
    service: Sequence[str] | None = None,
    stage: str | None = None,
    dry_run: bool = False,
    no_cache: bool = False,
    push: bool = False,
    no_push: bool = False,
    json: bool = False,
    cache_write: bool = False,
    no_cache_write: bool = False,
    progress: str = "auto",
) -> None:
    """The ``build`` task: one bake run with per-stage caches, push, report (or, ``dry_run``, the plan)."""
    env = Environment()

    def run() -> int:
        options = options_from(service, stage, no_cache, push_flag(push, no_push), cache_write, no_cache_write)
        if dry_run:
            return cmd_plan(env, config, options, json)
        return builds.cmd_build(env, config, options, json, progress)

    guarded(run, json)


def plan(
    config: str | None,
    service: Sequence[str] | None = None,
    stage: str | None = None,
    no_cache: bool = False,
    push: bool = False,
    no_push: bool = False,
    json: bool = False,
    bake: bool = False,
    cache_write: bool = False,
    no_cache_write: bool = False,
) -> None:
    """The ``plan`` task: the resolved plan and the exact bake command (``bake``: the bake file alone)."""
    env = Environment()
    guarded(
        lambda: cmd_plan(
            env,
            config,
            options_from(service, stage, no_cache, push_flag(push, no_push), cache_write, no_cache_write),
            json,
            bake,
        ),
        json or bake,
    )
