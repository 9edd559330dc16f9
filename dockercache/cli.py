"""The ``dockercache`` console script: the same tasks as the Invoke collection, without a tasks.py."""

from __future__ import annotations

from invoke.program import Program

from . import __version__
from .tasks import collection


def main() -> None:
    Program(namespace=collection(), name="dockercache", binary="dockercache", version=__version__).run()


if __name__ == "__main__":  # pragma: no cover
    main()
