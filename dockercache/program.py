"""The ``dockercache`` console script's Invoke program: the same tasks as the Invoke collection, without a tasks.py.

A thin :class:`invoke.program.Program` whose help shows dockercache's tasks and the options a user needs
(not Invoke's shell-runner options), whose usage errors exit 2 with a hint, and which takes ``--config FILE``
before the task as ``docker compose -f`` does. :mod:`dockercache.cli` runs everyday calls without it.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from collections.abc import Sequence

from invoke.exceptions import Exit, ParseError
from invoke.parser.context import ParserContext
from invoke.program import Program

from . import __version__
from .argv import QUICK_TASKS, normalize_argv
from .commands.boundary import USAGE_ERROR, error_document
from .tasks import collection

CORE_HELP = (
    ("-h [TASK], --help [TASK]", "Show this help, or a task's options (also: dockercache TASK --help)."),
    ("-l, --list", "List the tasks."),
    ("-V, --version", "Show the version and exit."),
    ("--config FILE", "dockercache.toml, before or after the task (default: $DOCKERCACHE_CONFIG, else the nearest)."),
)


def _task_contexts() -> dict[str, ParserContext]:
    return {ctx.name: ctx for ctx in collection().to_contexts() if ctx.name}


def missing_value(argv: Sequence[str], contexts: dict[str, ParserContext]) -> str | None:
    """``build --service`` with nothing after it (Invoke would build every service): the flag, else None."""
    current: ParserContext | None = None
    for i, token in enumerate(argv):
        if token in contexts:
            current = contexts[token]
            continue
        if current is None or not token.startswith("--") or "=" in token:
            continue
        arg = current.flags.get(token)
        if arg is not None and arg.takes_value:
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or following.startswith("-") or following in contexts or not following.strip():
                return f"{current.name} {token}"
    return None


def usage_hint(message: str, argv: Sequence[str], contexts: dict[str, ParserContext]) -> str:
    """Invoke's parse error turned into one line a person can act on."""
    unknown = re.fullmatch(r"No idea what '(.*)' is!", message)
    if unknown:
        word = unknown.group(1)
        before = argv[: argv.index(word)] if word in argv else list(argv)
        task = next((t for t in reversed(before) if t in contexts), None)
        if word.startswith("-"):
            if task is None:
                return f"unknown option {word} (dockercache --help lists the options)"
            close = difflib.get_close_matches(word, list(contexts[task].flags), n=1, cutoff=0.75)
            guess = f" (did you mean {close[0]}?)" if close else ""
            return f"unknown option {word} for {task}{guess}; dockercache {task} --help lists its options"
        if task is not None and "--service" in contexts[task].flags:
            return f"'{word}' is not a task; to {task} one service: dockercache {task} --service {word}"
        close = difflib.get_close_matches(word, list(contexts), n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        return f"no task '{word}'{guess}; dockercache --list lists the tasks"
    needed = re.fullmatch(r"Flag '(.*)' needed value and was not given one!", message)
    if needed:
        return f"--{needed.group(1)} needs a value"
    return message.rstrip("!.")


def option_rows(context: ParserContext) -> list[tuple[str, str]]:
    """``(flag, help)`` for each option of a task: its long flag, with the name of its value if it takes one."""
    rows = []
    for flag, arg in sorted(context.flags.items()):
        if flag.startswith("--"):
            shown = f"{flag} {flag[2:].upper().replace('-', '_')}" if arg.takes_value else flag
            rows.append((shown, str(arg.help or "")))
    return rows


class DockercacheProgram(Program):
    """Invoke's Program with dockercache's help and usage errors (exit 2, one line, a hint)."""

    def _usage(self, message: str) -> Exit:
        argv = list(getattr(self, "argv", sys.argv)[1:])
        return self._exit(argv, f"dockercache: error: {usage_hint(message, argv, _task_contexts())}")

    @staticmethod
    def _exit(argv: Sequence[str], message: str) -> Exit:
        if "--json" in argv:  # a JSON document on stdout whatever happens
            print(error_document(USAGE_ERROR, message), flush=True)
        return Exit(message, code=USAGE_ERROR)

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise self._usage(str(exc)) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise self._usage(str(exc)) from None
        flag = missing_value(self.core.unparsed, _task_contexts())
        if flag:
            raise self._exit(self.core.unparsed, f"dockercache: error: {flag} needs a value")

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as exc:
            raise self._usage(str(exc)) from None

    def print_task_help(self, name: str) -> None:
        """A task's usage, what it does and every option with its help (not Invoke's ``[--core-opts]``,
        ``Docstring:`` or its automatic short flags that ran out of letters: ``-_``)."""
        context = self.parser.contexts[name]
        services = " [SERVICE ...]" if name in QUICK_TASKS else ""
        print(f"Usage: {self.binary} {name}{services} [--options]")
        print("")
        for line in (inspect.getdoc(self.collection[name]) or "").splitlines():
            print(f"  {line}".rstrip())
        print("")
        print("Options:")
        print("")
        self.print_columns(option_rows(context))
        if services:
            print(f"A service may also be named without --service: {self.binary} {name} web")
            print("")

    def print_help(self) -> None:
        print(f"Usage: {self.binary} [--config FILE] TASK [--task-options] ...")
        print("")
        print("Options:")
        print("")
        self.print_columns(CORE_HELP)
        self.list_tasks()


def run(argv: Sequence[str]) -> int | str | None:
    """Invoke's parse and run of ``argv`` (``argv[0]`` the program); the exit code, or a message for stderr."""
    names = list(_task_contexts())
    program = DockercacheProgram(namespace=collection(), name="dockercache", binary="dockercache", version=__version__)
    try:
        program.run([argv[0], *normalize_argv(argv[1:], names)])
    except SystemExit as exc:
        return exc.code
    return 0
