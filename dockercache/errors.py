"""All of dockercache's expected failures, under one base class.

Each class carries the process exit code it maps to at the CLI boundary (see docs/cli.md, "Exit codes").
Anything that is not a ``DockercacheError`` is a bug and is allowed to show a traceback.
"""

from __future__ import annotations


class DockercacheError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 1

    def __str__(self) -> str:
        # One line, always: a newline in a user's key or value must not split (or forge) an error line.
        text = super().__str__()
        return text.replace("\r", "\\r").replace("\n", "\\n") if ("\n" in text or "\r" in text) else text


class ConfigError(DockercacheError):
    """dockercache.toml (or a Compose file it names) is broken: exit 2, before any Docker command runs.

    ``more``: further errors found in the same pass (every broken key of a file is reported at once, as pytest
    reports every collection error); each is a line of its own.
    """

    exit_code = 2

    def __init__(self, message: str = "", more: tuple[ConfigError, ...] = ()) -> None:
        super().__init__(message)
        self.more = more

    def lines(self) -> list[str]:
        return [str(self), *(str(m) for m in self.more)]


class BuildFailed(DockercacheError):
    """``docker buildx bake`` exited non-zero (a RUN step failed, a COPY source is missing, a push failed).

    The runner reads which target failed, and why, from the progress stream; ``stderr`` is buildx's own text.
    """

    exit_code = 1

    def __init__(self, return_code: int, stderr: str) -> None:
        super().__init__(f"buildx exited {return_code}")
        self.return_code = return_code
        self.stderr = stderr


class CacheError(DockercacheError):
    """A cache store could not be read or written and cache errors were made fatal."""

    exit_code = 1


class EnvironmentProblem(DockercacheError):
    """The environment cannot run a build at all: no Docker daemon, no buildx, an unusable builder."""

    exit_code = 3


class HelperBuildFailed(EnvironmentProblem):
    """A small helper build (``docker buildx build``) exited non-zero; ``output`` is all it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class StoreError(DockercacheError):
    """An S3 cache store operation failed (unreachable endpoint, denied, corrupt snapshot)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (Buildkite's cancel) arrived: stop the build, push and record nothing.

    A ``KeyboardInterrupt`` (not a DockercacheError), so no handler of expected failures swallows it on the
    way out; the task layer turns it into one line and 128 + the signal number (130, 143).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
