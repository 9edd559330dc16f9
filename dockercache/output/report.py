"""Results of a run, and how they are shown: progress lines, the cache table, the closing line, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

from ..secrets import redact_data, shorten
from .progress import cancelled

if TYPE_CHECKING:
    from ..timeline import Timeline
    from .live import LiveDisplay
    from .progress import StepCount, Tally, Vertex

_INTERNAL = re.compile(r"^\[(?:[A-Za-z0-9_-]+ )?(?:internal|auth)\]")
"""BuildKit's own vertexes (loading the Dockerfile, sharing registry credentials): no line unless they fail."""
STEP_WIDTH = 110
"""The longest step name a progress line shows (longer ones end in ``...``)."""
ERROR_WIDTH = 300
"""The longest error an annotation quotes."""


def plural(count: int, word: str) -> str:
    """``1 warning``, ``3 warnings``."""
    return f"{count} {word}{'s' if count != 1 else ''}"


@dataclass
class StageResult:
    """What became of one bake target (a service's stage)."""

    service: str
    stage: str
    target: str | None
    final: bool
    name: str = ""
    """The bake target's name."""
    status: str = "pending"
    """ok | failed | cancelled (stopped because another target failed) | pending (never ran) | skipped (its
    service's inputs were unchanged: the image built from them was retagged)."""
    steps: dict[str, StepCount] = field(default_factory=dict)
    seconds: float = 0.0
    cache_warnings: list[str] = field(default_factory=list)
    cache_written: str | None = None
    kept: str | None = None
    """Why the cache its store held stays rather than this run's (it would restore less); None: written or not."""
    digest: str | None = None
    tags: tuple[str, ...] = ()
    pushed: bool = False
    error: str | None = None
    restored_from: str | None = None
    cache_read: list[str] = field(default_factory=list)
    """The cache refs its cached steps came from (:meth:`dockercache.output.progress.Tally.cache_read`); none without a
    hit."""
    shared_with: list[str] = field(default_factory=list)
    """The bake targets that count steps this stage shares with them (the same steps in another service's
    Dockerfile, solved once): counted there, not here."""
    s3_saved: str | None = None
    down_objects: int = 0
    """Blobs BuildKit fetched from S3 (redirects to presigned URLs) and their bytes."""
    down_bytes: int = 0
    s3_lookups: int = 0
    """Blob lookups (HEAD) answered from the bucket listing."""
    up_objects: int = 0
    up_bytes: int = 0
    exported: bool = False
    """BuildKit finished this target's cache export without error (stores then say what they wrote)."""
    printed: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    """The cache warnings :meth:`warn` printed for this stage (a store may add others to ``cache_warnings``
    that it printed once for all the stages they concern)."""

    def warn(self, console: Console, message: str) -> None:
        """A cache warning of this stage: kept in the report (once) and printed at once."""
        if message not in self.cache_warnings:
            self.cache_warnings.append(message)
        self.printed.add(message)
        console.warn(f"{self.service}/{self.stage}: {message}")

    @property
    def cached(self) -> int:
        return sum(c.cached for c in self.steps.values())

    @property
    def total(self) -> int:
        return sum(c.total for c in self.steps.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "bake_target": self.name,
            "target": self.target,
            "final": self.final,
            "status": self.status,
            "steps_total": self.total,
            "steps_cached": self.cached,
            "seconds": round(self.seconds, 3),
            "dockerfile_stages": {
                k: {"total": v.total, "cached": v.cached, "seconds": round(v.seconds, 3)} for k, v in self.steps.items()
            },
            "cache_read": self.cache_read,
            "shared_steps_counted_in": self.shared_with,
            "cache_written": self.cache_written,
            "cache_kept": self.kept,
            "cache_warnings": self.cache_warnings,
            "s3": {
                "restored_from": self.restored_from,
                "saved": self.s3_saved,
                "down": {"objects": self.down_objects, "bytes": self.down_bytes, "lookups": self.s3_lookups},
                "up": {"objects": self.up_objects, "bytes": self.up_bytes},
            },
            "image": {"tags": list(self.tags), "digest": self.digest, "pushed": self.pushed} if self.tags else None,
            "error": self.error,
        }


@dataclass
class SkipReport:
    """What skip_unchanged decided for a service: its key, and whether the build was skipped."""

    skipped: bool
    reason: str
    key: str | None = None
    tag: str | None = None
    """The tag that marks an image built from the key (``dc-<key>``)."""
    source: str | None = None
    """The image retagged (skipped) or to be found next time (built)."""
    files: int = 0
    bytes: int = 0
    bases: dict[str, str] = field(default_factory=dict)
    """Base image reference: the digest it resolved to."""
    digest: str | None = None
    """The digest of the image retagged."""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "skipped (unchanged)" if self.skipped else "built",
            "reason": self.reason,
            "key": self.key,
            "tag": self.tag,
            "source": self.source,
            "inputs": {"files": self.files, "bytes": self.bytes, "base_images": dict(self.bases)},
        }


@dataclass
class ServiceResult:
    name: str
    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0
    skip: SkipReport | None = None
    cache_mounts: dict[str, Any] | None = None
    """What cache_mounts restored and saved (:class:`dockercache.run.mounts.MountsReport`), when it is on."""

    @property
    def status(self) -> str:
        if any(s.status == "failed" for s in self.stages):
            return "failed"
        if self.stages and all(s.status == "skipped" for s in self.stages):
            return "skipped"
        return "ok" if all(s.status == "ok" for s in self.stages) else "incomplete"

    @property
    def succeeded(self) -> bool:
        """Built, or skipped because nothing changed: either way its images are in place."""
        return self.status in ("ok", "skipped")

    @property
    def final(self) -> StageResult | None:
        return next((s for s in self.stages if s.final), None)

    @property
    def warnings(self) -> list[tuple[list[str], str]]:
        """The service's warnings as its log printed them, each once, with the stages each concerns.

        The one count of a service's warnings (its closing line's, its annotation's). A stage's own warning
        (:meth:`StageResult.warn`, printed as ``service/stage: message``) is one per stage. A store's warning
        is printed once, in the store's words, and recorded in every stage it concerns (an S3 store that could
        not be opened, a save that S3 refused): one warning, of all those stages. Then the cache mounts' own.
        """
        found: dict[tuple[str | None, str], list[str]] = {}
        for s in self.stages:
            for message in s.cache_warnings:
                stages = found.setdefault((s.stage if message in s.printed else None, message), [])
                if s.stage not in stages:
                    stages.append(s.stage)
        out = [(stages, message) for (_, message), stages in found.items()]
        mounts = (self.cache_mounts or {}).get("warnings") or []
        return out + [([], str(message)) for message in dict.fromkeys(mounts)]

    def closing_line(self) -> str:
        if self.status == "skipped" and self.skip is not None:
            final = self.final
            retagged = f", retagged {final.tags[0]}" if final and final.tags else ""
            return f"{self.name}: skipped (unchanged, key {self.skip.tag}){retagged} in {self.seconds:.1f}s"
        done = [s for s in self.stages if s.status == "ok"]
        cached = sum(s.cached for s in self.stages)
        total = sum(s.total for s in self.stages)
        parts = [
            f"{len(self.stages)} stage{'s' if len(self.stages) != 1 else ''}",
            f"{cached}/{total} steps cached",
        ]
        final = self.final
        if self.status == "failed":
            failed = next(s for s in self.stages if s.status == "failed")
            parts.append(f"FAILED at {failed.stage}")
            kept = [s.stage for s in self.stages if s.cache_written]
            parts.append(f"caches kept: {', '.join(kept)}" if kept else "no cache written")
        elif self.status != "ok":
            parts.append("not finished")
        elif final and final.status == "ok" and final.tags:
            verb = "pushed" if final.pushed else "loaded"
            parts.append(f"{verb} {final.tags[0]}")
        elif len(done) == len(self.stages):
            parts.append("cache only")
        warnings = len(self.warnings)
        if warnings:
            parts.append(plural(warnings, "cache warning"))
        return f"{self.name}: {', '.join(parts)} in {self.seconds:.1f}s"

    def to_json(self) -> dict[str, Any]:
        final = self.final
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "steps_total": sum(s.total for s in self.stages),
            "steps_cached": sum(s.cached for s in self.stages),
            "image": final.to_json()["image"] if final else None,
            "skip": self.skip.to_json() if self.skip else None,
            "cache_mounts": self.cache_mounts,
            "stages": [s.to_json() for s in self.stages],
        }


@dataclass
class RunResult:
    services: list[ServiceResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exit_code: int = 0
    error: str | None = None
    buildx_seconds: float = 0.0
    """Wall time of the buildx runs (the rest of a build's time is dockercache's own)."""
    cache_write: bool | None = None
    cache_write_reason: str | None = None
    """Whether this run wrote caches, and why, in one phrase (the plan's decision)."""
    timeline: Timeline | None = None
    """Where the run's time went (``timings``)."""

    def cache_write_line(self) -> str | None:
        if self.cache_write is None:
            return None
        return f"cache writes: {'on' if self.cache_write else 'off'} ({self.cache_write_reason})"

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "error": self.error,
            "warnings": self.warnings,
            "buildx_seconds": round(self.buildx_seconds, 3),
            "timings": self.timeline.to_json(self.buildx_seconds) if self.timeline is not None else None,
            "cache_write": {"on": self.cache_write, "reason": self.cache_write_reason},
            "services": [s.to_json() for s in self.services],
        }


GroupKind = Literal["collapsed", "quiet", "expanded"]
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
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.buildkite = buildkite
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
        ``+++ `` (expanded); elsewhere a plain ``==>`` header."""
        if self.buildkite:
            self._print(f"{GROUP_MARKS[kind]} {title}", self.err)
        else:
            self._print(f"==> {title}", self.err)

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
        from .live import LiveDisplay

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


def human_bytes(size: int) -> str:
    """``11 KB``, ``3.2 MB``, ``1.5 GB`` (decimal units, as registries and S3 consoles show them)."""
    if size < 1000:
        return f"{size} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        value = size / scale
        text = f"{value:.0f}" if value >= 99.95 else f"{value:.1f}"
        if float(text) < 1000 or unit == "TB":
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``5d``."""
    seconds = max(0.0, seconds)
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale:
            return f"{int(seconds // scale)}{unit}"
    return f"{int(seconds)}s"


def _transfer(objects: int, size: int) -> str:
    return f"{objects} / {human_bytes(size)}" if objects else "-"


def render_table(result: RunResult) -> str:
    stages = [s for svc in result.services for s in svc.stages]
    s3 = any(s.restored_from or s.s3_saved or s.down_objects or s.up_objects for s in stages)
    rows = [("service", "stage", "cached", "time", "cache written", *(("s3 down", "s3 up") if s3 else ()))]
    for svc in result.services:
        for s in svc.stages:
            cached = f"{s.cached}/{s.total}" if s.status != "pending" else "-"
            if s.status in ("failed", "cancelled"):
                cached = f"{cached} {s.status}"
            skipped = s.status == "skipped" and svc.skip is not None
            if skipped:
                cached = "skipped (unchanged)"
            row: tuple[str, ...] = (
                svc.name,
                s.stage,
                cached,
                f"{s.seconds:.1f}s",
                f"key {svc.skip.tag}" if skipped and svc.skip else s.s3_saved or s.cache_written or "-",
            )
            if s3:
                row += (_transfer(s.down_objects, s.down_bytes), _transfer(s.up_objects, s.up_bytes))
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def render_markdown(svc: ServiceResult, log_url: str | None = None, redact: Callable[[str], str] = str) -> str:
    """The cache report of one service as a Buildkite annotation: one line that says how it went, a table of
    its stages, then what went wrong with a link to the job's log (its failing group is the open one).

    Masked by ``redact``, every field before it is shortened; the agent masks the body again
    (:class:`dockercache.adapters.buildkite.Agent`), which also masks what a cut left of a secret before its ``...``.
    """
    warnings = svc.warnings
    icon = {"ok": ":warning:" if warnings else ":white_check_mark:", "skipped": ":fast_forward:", "failed": ":x:"}
    lines = [f"{icon.get(svc.status, ':grey_question:')} **{svc.closing_line()}**", ""]
    lines += _markdown_table(svc)
    failed = next((s for s in svc.stages if s.status == "failed"), None)
    if failed is not None:
        link = f" ([the job's log]({log_url}) opens at the failing step)" if log_url else ""
        # Masked before a backtick is replaced or a line joined: either would hide a secret from the redactor.
        error = " ".join(redact(failed.error or "see the log").replace("`", "'").split())
        lines += ["", f":rotating_light: **{failed.stage}** failed: `{shorten(error, ERROR_WIDTH, redact)}`{link}"]
    if warnings:
        lines.append("")
        lines += [f"- :warning: {', '.join(stages) + ': ' if stages else ''}{message}" for stages, message in warnings]
    return redact("\n".join(lines))


def _markdown_table(svc: ServiceResult) -> list[str]:
    """The annotation's table: a row per stage (steps cached, time, the cache read and written, S3 traffic)."""
    s3 = any(s.restored_from or s.s3_saved or s.down_objects or s.up_objects for s in svc.stages)
    header = ["stage", "steps cached", "time", "cache", *(["s3 down", "s3 up"] if s3 else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in svc.stages:
        if s.status == "skipped" and svc.skip is not None:
            cached = "skipped (unchanged)"
        else:
            cached = f"{s.cached}/{s.total}" if s.status != "pending" else "-"
            if s.status in ("failed", "cancelled"):
                cached = f"{cached} **{s.status}**"
        source = s.restored_from or (s.cache_read[0] if s.cache_read else None)
        cache = [f"from `{source}`"] if source else []
        written = s.s3_saved or s.cache_written
        if written:
            cache.append(f"wrote `{written}`")
        row = [s.stage, cached, f"{s.seconds:.1f}s", ", ".join(cache) or "-"]
        if s3:
            row += [_transfer(s.down_objects, s.down_bytes), _transfer(s.up_objects, s.up_bytes)]
        lines.append("| " + " | ".join(row) + " |")
    return lines
