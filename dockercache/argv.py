"""The console script's command line before any parser sees it: ``--config FILE`` before the task, and the
everyday calls (``build`` and ``plan`` with long options) read without Invoke, whose import costs about 0.1 s of
every run. Anything else (help, lists, other tasks, short options, every usage error) is left to Invoke's parser
(:mod:`dockercache.program`); a test keeps the two readings equal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Every task of the console script (a test keeps it equal to the Invoke collection's).
TASK_NAMES = (
    "build",
    "plan",
    "check",
    "init",
    "explain",
    "builder.create",
    "builder.remove",
    "cache.promote",
    "cache.prune",
    "cache.verify",
    "cache.list",
)

_COMMON = frozenset({"no-cache", "push", "no-push", "json", "cache-write", "no-cache-write"})
#: The tasks read here: (options that take a value, on/off options); ``service`` may repeat.
QUICK_TASKS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "build": (frozenset({"service", "stage", "config", "progress"}), _COMMON | {"dry-run"}),
    "plan": (frozenset({"service", "stage", "config"}), _COMMON | {"bake"}),
}
REPEATABLE = frozenset({"service"})
#: The short options of those tasks that take a value (Invoke's automatic ones; a test keeps them equal).
SHORT_VALUES: dict[str, frozenset[str]] = {
    "build": frozenset({"-s", "-t", "-c", "-r"}),
    "plan": frozenset({"-s", "-t", "-c"}),
}
#: Invoke's own configuration files, which may set ``dockercache.config``: with one, Invoke reads the call.
INVOKE_FILES = tuple(f"{prefix}invoke.{ext}" for prefix in ("/etc/", "~/.") for ext in ("yaml", "yml", "json", "py"))


def normalize_argv(argv: Sequence[str], tasks: Sequence[str] = TASK_NAMES) -> list[str]:
    """Move ``--config FILE`` (or ``-f FILE``, ``--config=FILE``) given before the first task to after every
    task that takes it: dockercache's option, not Invoke's runtime-configuration file."""
    args = list(argv)
    config: list[str] = []
    i = 0
    while i < len(args) and args[i] not in tasks:
        token = args[i]
        if token in ("--config", "-f") and i + 1 < len(args):
            config = ["--config", args[i + 1]]
            del args[i : i + 2]
            continue
        if token.startswith("--config="):
            config = ["--config", token.split("=", 1)[1]]
            del args[i]
            continue
        i += 1
    if config:
        out: list[str] = []
        for token in args:
            out.append(token)
            if token in tasks:
                out.extend(config)
        args = out
    return positional_services(args, tasks)


def positional_services(args: Sequence[str], tasks: Sequence[str] = TASK_NAMES) -> list[str]:
    """``build web`` (the Compose habit: ``docker compose build web``) as ``build --service web``: a bare word
    after ``build`` or ``plan`` that is no task and no option's value names a service."""
    out: list[str] = []
    task: str | None = None
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":  # Invoke's remainder: not ours to read
            out.extend(args[i - 1 :])
            break
        if token in tasks:
            task = token if token in QUICK_TASKS else None
            out.append(token)
        elif task is None:
            out.append(token)
        elif token.startswith("-"):
            out.append(token)
            takes_value = token.removeprefix("--") in QUICK_TASKS[task][0] if token.startswith("--") else False
            if "=" not in token and (takes_value or token in SHORT_VALUES[task]) and i < len(args):
                out.append(args[i])
                i += 1
        else:
            out += ["--service", token]
    return out


def quick_parse(argv: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """``(task, keyword arguments)`` when ``argv`` (without the program) is one everyday call, else None."""
    if os.environ.get("INVOKE_RUNTIME_CONFIG") or any(Path(f).expanduser().exists() for f in INVOKE_FILES):
        return None
    args = normalize_argv(argv)
    if not args or args[0] not in QUICK_TASKS:
        return None
    task, rest = args[0], args[1:]
    takes_value, switches = QUICK_TASKS[task]
    kwargs: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        name, equals, value = rest[i].removeprefix("--").partition("=")
        key = name.replace("-", "_")
        i += 1
        if not rest[i - 1].startswith("--"):
            return None
        if name in switches and not equals:
            kwargs[key] = True
        elif name in takes_value:
            if not equals:
                if i >= len(rest):
                    return None
                value, i = rest[i], i + 1
            if not value.strip() or value.startswith("-") or value in TASK_NAMES:
                return None  # Invoke's usage error says what is wrong
            if name in REPEATABLE:
                kwargs.setdefault(key, []).append(value)
            elif key in kwargs:
                return None
            else:
                kwargs[key] = value
        else:
            return None
    return task, kwargs
