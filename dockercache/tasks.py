"""dockercache's Invoke tasks. In a project's tasks.py: ``from dockercache.tasks import ns``.

The tasks are thin: they turn flags into options and call :mod:`dockercache.commands`. Expected failures
become ``invoke.Exit`` with a one-line message and the documented exit code; only bugs show a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as _invoke_task

from . import commands
from .commands import boundary
from .commands.boundary import Stop

HELP = {
    "config": "dockercache.toml (default: dockercache.config in invoke.yaml, $DOCKERCACHE_CONFIG, the nearest).",
    "service": "Service to build, or one matrix variant: 'ruby[3.3]' (repeatable; default: all services).",
    "stage": "Build this stage and the service's stages it builds on (not the whole service).",
    "dry-run": "Print the plan instead of building.",
    "no-cache": "Build without any cache (passes --no-cache to buildx).",
    "push": "Push images to the service's repository (default: on CI only; a laptop loads them).",
    "no-push": "Load images locally, also on CI.",
    "json": "Print a machine-readable result on stdout.",
    "cache-write": "Write caches even where the policy would not (a laptop).",
    "no-cache-write": "Read caches only; never write them (untrusted builds).",
    "bake": "Print the bake file that build runs (docker buildx bake -f FILE), and nothing else.",
    "progress": "auto (a live display on a terminal off CI), tty, plain (a line per step) or quiet.",
}


class _Task(Task[Any]):
    """Invoke's Task, whose options keep their help: Invoke pops each from ``help`` when it first makes the
    task's parser context, so every later context (``dockercache build --help`` after the usage checks) had none."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept


def task(**kwargs: Any) -> Callable[[Callable[..., None]], Task[Any]]:
    """Invoke's ``@task(...)`` making :class:`_Task` (the help of every option, every time)."""
    made: Callable[[Callable[..., None]], Task[Any]] = _invoke_task(klass=_Task, **kwargs)
    return made


@contextmanager
def _exits() -> Iterator[None]:
    """The boundary's :class:`~dockercache.commands.boundary.Stop` as Invoke's ``Exit`` (message, exit code)."""
    try:
        yield
    except Stop as stop:
        raise Exit(stop.message, code=stop.code) from None


def guarded(command: Callable[[], int], as_json: bool = False) -> None:
    """:func:`dockercache.commands.boundary.guarded`, ending in Invoke's ``Exit``: for tasks of your own."""
    with _exits():
        boundary.guarded(command, as_json)


def configured(c: Context, config: str | None) -> str | None:
    """``--config``, else ``dockercache.config`` from Invoke's configuration (invoke.yaml, a collection's
    ``configure``), else None: $DOCKERCACHE_CONFIG or the nearest dockercache.toml."""
    if config:
        return config
    section: Any = c.config.get("dockercache") if hasattr(c, "config") else None
    value = section.get("config") if section is not None and hasattr(section, "get") else None
    return str(value) if value else None


def _help(*names: str) -> dict[str, str]:
    return {n: HELP[n] for n in names}


@task(
    iterable=["service"],
    help=_help(
        "service",
        "stage",
        "config",
        "dry-run",
        "no-cache",
        "push",
        "no-push",
        "json",
        "cache-write",
        "no-cache-write",
        "progress",
    ),
)
def build(
    c: Context,
    service: list[str] | None = None,
    stage: str | None = None,
    config: str | None = None,
    dry_run: bool = False,
    no_cache: bool = False,
    push: bool = False,
    no_push: bool = False,
    json: bool = False,
    cache_write: bool = False,
    no_cache_write: bool = False,
    progress: str = "auto",
) -> None:
    """Build services in one bake run with per-stage caches, push, and report cache hits."""
    with _exits():
        boundary.build(
            configured(c, config),
            service,
            stage,
            dry_run=dry_run,
            no_cache=no_cache,
            push=push,
            no_push=no_push,
            json=json,
            cache_write=cache_write,
            no_cache_write=no_cache_write,
            progress=progress,
        )


@task(
    iterable=["service"],
    help=_help(
        "service", "stage", "config", "no-cache", "push", "no-push", "json", "bake", "cache-write", "no-cache-write"
    ),
)
def plan(
    c: Context,
    service: list[str] | None = None,
    stage: str | None = None,
    config: str | None = None,
    no_cache: bool = False,
    push: bool = False,
    no_push: bool = False,
    json: bool = False,
    bake: bool = False,
    cache_write: bool = False,
    no_cache_write: bool = False,
) -> None:
    """Show the resolved plan and the exact bake command (no Docker daemon needed)."""
    with _exits():
        boundary.plan(
            configured(c, config),
            service,
            stage,
            no_cache=no_cache,
            push=push,
            no_push=no_push,
            json=json,
            bake=bake,
            cache_write=cache_write,
            no_cache_write=no_cache_write,
        )


@task(
    help={
        **_help("config", "json"),
        "lint": "Also run BuildKit's Dockerfile checks per service (buildx 0.15+; exit 1 on findings).",
        "remote": "Also try every cache store and registry it names, without building (exit 1 if one fails).",
    }
)
def check(c: Context, config: str | None = None, lint: bool = False, json: bool = False, remote: bool = False) -> None:
    """Validate dockercache.toml (and the Dockerfiles and Compose files it names)."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_check(env, config, lint, json, remote), json)


@task(iterable=["service"], help=_help("service", "config", "json"))
def explain(c: Context, service: list[str] | None = None, config: str | None = None, json: bool = False) -> None:
    """Say what the next build would miss and why, from the records beside the caches (builds nothing)."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_explain(env, config, service, json), json)


@task()
def init(c: Context) -> None:
    """Write a commented dockercache.toml for the project here (from its Dockerfile or Compose file)."""
    env = commands.Environment()
    guarded(lambda: commands.cmd_init(env))


@task(name="create", help=_help("config"))
def builder_create(c: Context, config: str | None = None) -> None:
    """Create the configured buildx builder if it does not exist."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_builder_create(env, config))


@task(name="remove", help={**_help("config"), "name": "Builder to remove (default: builder.name)."})
def builder_remove(c: Context, config: str | None = None, name: str | None = None) -> None:
    """Remove the configured (or named) buildx builder."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_builder_remove(env, config, name))


STORE_HELP = {
    "config": HELP["config"],
    "store": "The S3 cache store (default: the only one).",
    "json": HELP["json"],
}


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
    json: bool = False,
) -> None:
    """Copy an S3 snapshot key to another key (no blobs move); shared keys only from trusted branches."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_promote(env, config, source, target, store, dry_run, json), json)


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
    json: bool = False,
) -> None:
    """Delete old S3 snapshots (never the default branch's or cache_from keys), then unreferenced blobs."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(
        lambda: commands.cmd_prune(env, config, store, keep or None, older_than, grace, dry_run, delete or (), json),
        json,
    )


@task(name="verify", help={**STORE_HELP, "deep": "Download every blob and check its sha256 too."})
def cache_verify(
    c: Context, deep: bool = False, store: str | None = None, config: str | None = None, json: bool = False
) -> None:
    """Check that every snapshot in the S3 store would restore completely (exit 1 if not)."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_verify(env, config, store, deep, json), json)


@task(name="list", help=STORE_HELP)
def cache_list(c: Context, store: str | None = None, config: str | None = None, json: bool = False) -> None:
    """List the snapshots in the S3 store, newest first, with their age and size."""
    env = commands.Environment()
    config = configured(c, config)
    guarded(lambda: commands.cmd_list(env, config, store, json), json)


def collection() -> Collection:
    """A fresh collection of dockercache's tasks (add your own to it freely)."""
    ns = Collection(build, plan, check, init, explain)
    ns.add_collection(Collection("builder", builder_create, builder_remove))
    ns.add_collection(Collection("cache", cache_promote, cache_prune, cache_verify, cache_list))
    return ns


ns = collection()
