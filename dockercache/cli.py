"""The ``dockercache`` console script: the same tasks as the Invoke collection, without a tasks.py."""

from __future__ import annotations

import contextlib
import os
import sys

from invoke.program import Program

from . import __version__
from .tasks import collection


def main() -> None:
    """Run the task, then leave without the interpreter's teardown.

    Once the work is done and the output flushed, tearing down the modules python-on-whales and boto3 load
    takes 0.2-0.4 s of every run, for nothing: dockercache leaves no pending work to atexit handlers (its
    temporary files and threads are closed by the code that made them).
    """
    code: int | str | None = 0
    try:
        Program(namespace=collection(), name="dockercache", binary="dockercache", version=__version__).run()
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
