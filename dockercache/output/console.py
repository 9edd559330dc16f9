"""Where human-readable output goes while a command runs: progress lines and warnings on stderr, Buildkite's log
groups, the report and the ``--json`` document on stdout (:class:`Console`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TextIO

from ..secrets import redact_data, shorten
from .live import LiveDisplay
from .progress import cancelled
from .words import plural

if TYPE_CHECKING:
    from .progress import Vertex
    from .tally import Tally


_INTERNAL = re.compile(r"^\[(?:[A-Za-z0-9_-]+ )?(?:internal|auth)\]")
"""BuildKit's own vertexes (loading the Dockerfile, sharing registry credentials): no line unless they fail."""


STEP_WIDTH = 110
"""The longest step name a progress line shows (longer ones end in ``...``)."""


GroupKind = Literal["collapsed", "quiet", "expanded"]


_EMOJI = re.compile(r"^(?::[a-z0-9_+-]+: )+")
"""Buildkite's emoji codes at the start of a section's title (``:docker: ``), which only Buildkite draws."""


# Buildkite's log group headers (https://buildkite.com/docs/pipelines/managing-log-output).
GROUP_MARKS: dict[str, str] = {"collapsed": "---", "quiet": "~~~", "expanded": "+++"}


class Console:
    """Where human-readable output goes. Progress and warnings: stderr; the report: stdout."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        buildkite: bool = False,
        redact: Callable[[str], str] = str,
        github: bool = False,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.buildkite = buildkite
        self.github = github and not buildkite
        """GitHub Actions: sections are ``::group::`` ... ``::endgroup::`` (they do not nest)."""
        self.group_open = False
        self.redact = redact
        self.failure_opened = False
        self.warnings: list[str] = []
        """The warnings printed so far, each once."""
        self.progress = "plain"
        """plain: a line per finished step; tty: the live display (see dockercache.output.live); quiet: neither."""

    def _print(self, text: str, stream: TextIO) -> None:
        print(self.redact(text), file=stream, flush=True)

    def result(self, text: str) -> None:
        """The report itself: stdout."""
        self._print(text, self.out)

    def document(self, data: Any) -> None:
        """A JSON document on stdout, its strings masked one by one before it is serialised.

        Masking the serialised text instead could turn a key, a quote or a brace into ``[redacted]`` when a
        secret's value happens to appear there; masking values keeps the document whole.
        """
        print(json.dumps(redact_data(data, self.redact), indent=2), file=self.out, flush=True)

    @contextlib.contextmanager
    def stdout_for_document(self) -> Iterator[None]:
        """Keep stdout for the JSON document alone while the command runs: whatever else would write to it
        (a ``print``, a child process inheriting file descriptor 1 such as ``docker login`` and its
        "Login Succeeded") goes to stderr; :meth:`document` still writes to the real stdout.

        Only when this console writes to the process's stdout (a caller's own stream needs no guard).
        """
        stdout = sys.stdout
        if self.out is not stdout:
            yield
            return
        stdout.flush()
        try:
            out_fd, err_fd = stdout.fileno(), sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # not backed by a file (a test's capture): Python only
            out_fd = err_fd = -1
        document = stdout
        if out_fd >= 0:
            document = os.fdopen(os.dup(out_fd), "w", encoding=stdout.encoding, errors=stdout.errors)
            os.dup2(err_fd, out_fd)
        self.out, sys.stdout = document, sys.stderr
        try:
            yield
        finally:
            self.out, sys.stdout = stdout, stdout
            if out_fd >= 0:
                stdout.flush()  # anything written through the old object while guarded goes to stderr
                sys.stderr.flush()
                document.flush()
                os.dup2(document.fileno(), out_fd)
                document.close()

    def section(self, title: str, kind: GroupKind = "collapsed") -> None:
        """A log group. Buildkite folds ``--- `` (collapsed), ``~~~ `` (collapsed, de-emphasised) and opens
        ``+++ `` (expanded); GitHub Actions folds ``::group::`` up to ``::endgroup::``; elsewhere a plain ``==>``
        header. Buildkite's emoji codes (``:docker:``) only on Buildkite."""
        if self.buildkite:
            self._print(f"{GROUP_MARKS[kind]} {title}", self.err)
            return
        title = _EMOJI.sub("", title)
        if self.github:
            self.end_group()
            self._print(f"::group::{title}", self.err)
            self.group_open = True
        else:
            self._print(f"==> {title}", self.err)

    def end_group(self) -> None:
        """Close GitHub's open log group (before the report, which stays in sight)."""
        if self.group_open:
            self.group_open = False
            self._print("::endgroup::", self.err)

    def open_failed_group(self) -> None:
        """Expand the group printed last, which holds a failure (Buildkite's ``^^^ +++``), once per run."""
        if self.buildkite and not self.failure_opened:
            self.failure_opened = True
            self._print("^^^ +++", self.err)

    def info(self, message: str) -> None:
        self._print(message, self.err)

    @property
    def warned(self) -> int:
        """How many warnings were printed: the count the report ends with (``N warnings (above)``)."""
        return len(self.warnings)

    def warn(self, message: str) -> None:
        """A warning on stderr, once: the same warning again is neither printed nor counted again."""
        if message in self.warnings:
            return
        self.warnings.append(message)
        self._print(f"dockercache: warning: {message}", self.err)

    def warnings_footer(self) -> None:
        """The report's last word on warnings, when any was printed: how many (``dockercache: 3 warnings (above)``)."""
        if self.warned:
            self.info(f"dockercache: {plural(self.warned, 'warning')} (above)")

    def live(self, targets: Sequence[str], tally: Tally | None = None) -> LiveDisplay | None:
        """The live display for a bake run of ``targets``, when progress is ``tty`` (it masks what it draws
        with this console's redactor; it counts steps with ``tally``, as the report does)."""
        if self.progress != "tty":
            return None
        return LiveDisplay(targets, self.err, self.redact, tally=tally)

    def step(self, vertex: Vertex) -> None:
        """One line per vertex in its final state (:meth:`dockercache.output.progress.BuildEvents.apply` gives each
        once); its name carries the bake target when several run."""
        if self.progress != "plain":
            return
        if _INTERNAL.match(vertex.name) and not vertex.error:
            return
        if vertex.error and "importing cache manifest" in vertex.name and vertex.error.endswith("not found"):
            state = "MISS"  # a cache ref that does not exist yet: a plain miss, not an error
        elif cancelled(vertex.error):
            state = "CANCELED"  # stopped, as buildx's own plain output says: not what made the build fail
        elif vertex.error:
            state = "ERROR"
        elif vertex.cached:
            state = "CACHED"
        else:
            state = f"DONE {vertex.seconds:.1f}s"
        self._print(f"  {state:<11} {shorten(vertex.name, STEP_WIDTH, self.redact)}", self.err)
