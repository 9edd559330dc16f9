"""The ``dockercache`` console script: the same tasks as the Invoke collection, without a tasks.py.

Everyday calls (``build`` and ``plan`` with long options, :mod:`dockercache.argv`) run straight through the
commands' boundary; everything else goes through Invoke's parser (:mod:`dockercache.program`), which is imported
only then.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from .argv import quick_parse

BROKEN_PIPE = 141  # 128 + SIGPIPE: what a tool killed by the signal reports, without the noise


def run_quick(task: str, kwargs: dict[str, Any]) -> int:
    """One everyday call, as the Invoke task would run it: the exit code, its message on stderr."""
    from .commands import boundary

    command = boundary.build if task == "build" else boundary.plan
    try:
        command(kwargs.pop("config", None), **kwargs)
    except boundary.Stop as stop:
        if stop.message:
            print(stop.message, file=sys.stderr)
        return stop.code
    return 0


def main() -> None:
    """Run the task, then leave without the interpreter's teardown.

    Once the work is done and the output flushed, tearing down the modules python-on-whales and boto3 load
    takes 0.2-0.4 s of every run, for nothing: dockercache leaves no pending work to atexit handlers (its
    temporary files and threads are closed by the code that made them).
    """
    code: int | str | None = 0
    try:
        quick = quick_parse(sys.argv[1:])
        if sys.argv[1:] in (["--version"], ["-V"]):
            from . import __version__

            print(f"dockercache {__version__}")
        elif quick is not None:
            code = run_quick(*quick)
        else:
            from . import program

            code = program.run(sys.argv)
    except BrokenPipeError:  # `dockercache plan | head -1`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        os._exit(BROKEN_PIPE)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
