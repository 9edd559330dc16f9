"""A run's results shown to a person: the cache table printed at the end (:func:`render_table`) and the
Buildkite annotation of a service (:func:`render_markdown`). The results themselves are :mod:`.results`."""

from __future__ import annotations

from collections.abc import Callable

from ..secrets import shorten
from .misses import miss_lines, miss_markdown
from .results import RunResult, ServiceResult
from .words import human_bytes

ERROR_WIDTH = 300
"""The longest error an annotation quotes."""


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
    misses = result.misses()
    if misses:  # why each row that missed did (issue 29)
        lines += ["why steps missed:", *miss_lines(misses)]
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
    misses = [s.miss for s in svc.stages if s.miss is not None]
    if misses:
        lines += ["", *miss_markdown(misses)]
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
