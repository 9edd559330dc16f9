"""Child processes as the Docker adapter runs them: a command's output captured, or streamed as it comes.

:func:`run` waits for a docker command and keeps its output (:class:`DockerFailed` on a non-zero exit);
:class:`ProcessStream` gives a long one's lines as they come (``docker buildx bake``), with the child in a
session of its own so that only dockercache decides when it stops: :func:`stop_process_group` asks it to cancel
(SIGINT, as Ctrl-C would) and kills what is left after a grace period. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Generator, Mapping, Sequence
from typing import IO


class ProcessFailed(Exception):
    def __init__(self, return_code: int, stderr: str) -> None:
        super().__init__(f"exit code {return_code}")
        self.return_code = return_code
        self.stderr = stderr


#: How long buildx gets to cancel its build after SIGINT before it is killed.
STOP_GRACE_SECONDS = 10.0


def stop_process_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGINT to the child's process group (buildx cancels the solve, as on Ctrl-C), SIGKILL after ``grace``;
    then SIGKILL to what is left of the group (a grandchild the child left behind)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5.0)


class ProcessStream:
    """The lines a process writes to stdout and stderr, as they come; ProcessFailed on a non-zero exit.

    As python-on-whales' ``stream_stdout_and_stderr``, with the child in a session of its own (a terminal's
    Ctrl-C reaches only dockercache, which decides), started at once, and stopped when the stream is closed before
    the end (:meth:`close`, in the reading thread) or by :meth:`stop` (from any thread: a watchdog).
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        self._lines: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        for pipe, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            assert pipe is not None
            threading.Thread(target=self._read, args=(pipe, name), daemon=True).start()
        self._stream: Generator[str, None, None] = self._run()

    def _read(self, pipe: IO[bytes], name: str) -> None:
        try:
            with pipe:
                for line in iter(pipe.readline, b""):
                    self._lines.put((name, line))
        finally:
            self._lines.put(None)

    def _run(self) -> Generator[str, None, None]:
        stderr: list[bytes] = []
        try:
            for _ in range(2):
                for name, line in iter(self._lines.get, None):
                    if name == "stderr":
                        stderr.append(line)
                    yield line.decode(errors="replace")
            return_code = self.process.wait()
        finally:
            if self.process.poll() is None:
                stop_process_group(self.process)
        if return_code != 0:
            raise ProcessFailed(return_code, b"".join(stderr).decode(errors="replace"))

    def __iter__(self) -> ProcessStream:
        return self

    def __next__(self) -> str:
        return next(self._stream)

    def close(self) -> None:
        self._stream.close()
        self.stop()  # a stream never read from has not run the clean-up above

    def stop(self) -> None:
        """Stop the process (SIGINT to its group, SIGKILL after a grace period): the reader sees it end."""
        if self.process.poll() is None:
            stop_process_group(self.process)


def stream_process(command: Sequence[str], env: Mapping[str, str] | None = None) -> ProcessStream:
    return ProcessStream(command, env)


class DockerFailed(Exception):
    """A docker command that exited non-zero (as python-on-whales' DockerException: its output kept)."""

    def __init__(self, return_code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"exit code {return_code}")
        self.return_code, self.stdout, self.stderr = return_code, stdout, stderr


def run(argv: Sequence[str], input: bytes | None = None) -> tuple[str, str]:
    """(stdout without its last newline, stderr) of a docker command; DockerFailed on a non-zero exit,
    FileNotFoundError when there is no docker at all."""
    out = subprocess.run(list(argv), input=input, capture_output=True, check=False)
    stdout, stderr = out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace")
    if out.returncode != 0:
        raise DockerFailed(out.returncode, stdout, stderr)
    return stdout.removesuffix("\n"), stderr
