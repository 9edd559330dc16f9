"""dockercache's Invoke tasks. In a project's tasks.py: ``from dockercache.tasks import ns``.

The tasks are thin: they turn flags into options and call :mod:`dockercache.commands`. Expected failures
become ``invoke.Exit`` with a one-line message and the documented exit code; only bugs show a traceback.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from . import commands
from .errors import DockercacheError, Interrupted

HELP = {
    "config": "Path to dockercache.toml (default: $DOCKERCACHE_CONFIG, else the nearest one upwards).",
    "service": "Service to build, or one matrix variant: 'ruby[3.3]' (repeatable; default: all services).",
    "stage": "Build this stage and the service's stages it builds on (not the whole service).",
    "dry-run": "Print the plan instead of building.",
    "no-cache": "Build without any cache (passes --no-cache to buildx).",
    "push": "Push images to the service's repository (--no-push: load them locally).",
    "json": "Print a machine-readable result on stdout.",
    "cache-write": "Write caches even where the policy would not (a laptop).",
    "no-cache-write": "Read caches only; never write them (untrusted builds).",
    "bake": "Print the bake file that build runs (docker buildx bake -f FILE), and nothing else.",
}


def _help(*names: str) -> dict[str, str]:
    return {n: HELP[n] for n in names}


SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


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
        raise Exit(f"dockercache: error: {exc}", code=exc.exit_code) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise Exit(f"dockercache: interrupted by {SIGNAL_NAMES.get(signum, signum)}", code=128 + signum) from None


def _run(command: Callable[[], int]) -> None:
    with _boundary():
        exit_code = command()
    if exit_code:
        raise Exit(code=exit_code)


@task(
    iterable=["service"],
    help=_help("service", "stage", "config", "dry-run", "no-cache", "push", "json", "cache-write", "no-cache-write"),
)
def build(
    c: Context,
    service: list[str] | None = None,
    stage: str | None = None,
    config: str | None = None,
    dry_run: bool = False,
    no_cache: bool = False,
    push: bool = True,
    json: bool = False,
    cache_write: bool = False,
    no_cache_write: bool = False,
) -> None:
    """Build services in one bake run with per-stage caches, push, and report cache hits."""
    env = commands.Environment()

    def run() -> int:
        options = commands.options_from(service, stage, no_cache, push, cache_write, no_cache_write)
        if dry_run:
            return commands.cmd_plan(env, config, options, json)
        return commands.cmd_build(env, config, options, json)

    _run(run)


@task(
    iterable=["service"],
    help=_help("service", "stage", "config", "no-cache", "push", "json", "bake", "cache-write", "no-cache-write"),
)
def plan(
    c: Context,
    service: list[str] | None = None,
    stage: str | None = None,
    config: str | None = None,
    no_cache: bool = False,
    push: bool = True,
    json: bool = False,
    bake: bool = False,
    cache_write: bool = False,
    no_cache_write: bool = False,
) -> None:
    """Show the resolved plan and the exact bake command (no Docker daemon needed)."""
    env = commands.Environment()
    _run(
        lambda: commands.cmd_plan(
            env,
            config,
            commands.options_from(service, stage, no_cache, push, cache_write, no_cache_write),
            json,
            bake,
        )
    )


@task(
    help={
        **_help("config"),
        "lint": "Also run BuildKit's Dockerfile checks per service (buildx 0.15+; exit 1 on findings).",
    }
)
def check(c: Context, config: str | None = None, lint: bool = False) -> None:
    """Validate dockercache.toml (and the Dockerfiles and Compose files it names)."""
    env = commands.Environment()
    _run(lambda: commands.cmd_check(env, config, lint))


@task(name="create", help=_help("config"))
def builder_create(c: Context, config: str | None = None) -> None:
    """Create the configured buildx builder if it does not exist."""
    env = commands.Environment()
    _run(lambda: commands.cmd_builder_create(env, config))


@task(name="remove", help={**_help("config"), "name": "Builder to remove (default: builder.name)."})
def builder_remove(c: Context, config: str | None = None, name: str | None = None) -> None:
    """Remove the configured (or named) buildx builder."""
    env = commands.Environment()
    _run(lambda: commands.cmd_builder_remove(env, config, name))


STORE_HELP = {"config": HELP["config"], "store": "The S3 cache store (default: the only one)."}


@task(
    name="promote",
    help={
        **STORE_HELP,
        "source": "Snapshot key to copy (default: this branch's key); {pipeline}, {branch}, {commit} are filled in.",
        "target": "Key to copy it to (default: the first cache_from key, e.g. {pipeline}/latest).",
        "dry-run": "Show what would be written, and write nothing.",
    },
)
def cache_promote(
    c: Context,
    source: str | None = None,
    target: str | None = None,
    dry_run: bool = False,
    store: str | None = None,
    config: str | None = None,
) -> None:
    """Copy an S3 snapshot key to another key (no blobs move); shared keys only from trusted branches."""
    env = commands.Environment()
    _run(lambda: commands.cmd_promote(env, config, source, target, store, dry_run))


@task(
    name="prune",
    iterable=["delete"],
    help={
        **STORE_HELP,
        "keep": "Keep the newest N keys per branch (as the key template groups them; N >= 1).",
        "older-than": "Delete keys older than this (90m, 12h, 7d, 2w), beyond the newest --keep.",
        "grace": "Never delete blobs younger than this (default 1h: protects builds saving right now).",
        "dry-run": "Show what would be kept and deleted, and why; delete nothing.",
        "delete": "Also delete this key (repeatable), even one the default branch writes or reads.",
    },
)
def cache_prune(
    c: Context,
    keep: int = 0,
    older_than: str | None = None,
    grace: str = "1h",
    dry_run: bool = False,
    delete: list[str] | None = None,
    store: str | None = None,
    config: str | None = None,
) -> None:
    """Delete old S3 snapshots (never the default branch's or cache_from keys), then unreferenced blobs."""
    env = commands.Environment()
    _run(lambda: commands.cmd_prune(env, config, store, keep or None, older_than, grace, dry_run, delete or ()))


@task(name="verify", help={**STORE_HELP, "deep": "Download every blob and check its sha256 too."})
def cache_verify(c: Context, deep: bool = False, store: str | None = None, config: str | None = None) -> None:
    """Check that every snapshot in the S3 store would restore completely (exit 1 if not)."""
    env = commands.Environment()
    _run(lambda: commands.cmd_verify(env, config, store, deep))


@task(name="list", help=STORE_HELP)
def cache_list(c: Context, store: str | None = None, config: str | None = None) -> None:
    """List the snapshots in the S3 store."""
    env = commands.Environment()
    _run(lambda: commands.cmd_list(env, config, store))


def collection() -> Collection:
    """A fresh collection of dockercache's tasks (add your own to it freely)."""
    ns = Collection(build, plan, check)
    ns.add_collection(Collection("builder", builder_create, builder_remove))
    ns.add_collection(Collection("cache", cache_promote, cache_prune, cache_verify, cache_list))
    return ns


ns = collection()
