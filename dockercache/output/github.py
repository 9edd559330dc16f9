"""GitHub Actions: the run's report in the job's summary (``$GITHUB_STEP_SUMMARY``) and each pushed image's ref
and digest as the step's outputs (``$GITHUB_OUTPUT``), as Buildkite gets annotations and meta-data.
(The console folds each build's log in ``::group::`` ... ``::endgroup::``: :class:`.console.Console`.)"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..reference import REFERENCE
from .report import render_markdown
from .results import RunResult


def output_name(service: str) -> str:
    """A service's name as a step output's prefix (letters, digits, ``-`` and ``_``: ``ruby[3.3]`` is ``ruby_3_3_``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", service)


def step_outputs(result: RunResult) -> dict[str, str]:
    """Per service pushed in a run that succeeded: ``<service>-image`` (its first tag), ``<service>-digest`` and
    ``<service>-ref`` (``repository@digest``, what a later job pulls to get exactly this image)."""
    outputs: dict[str, str] = {}
    if result.exit_code != 0:
        return outputs
    for svc in result.services:
        final = svc.final
        if not svc.succeeded or final is None or not final.pushed or not final.tags:
            continue
        name = output_name(svc.name)
        outputs[f"{name}-image"] = final.tags[0]
        match = REFERENCE.fullmatch(final.tags[0])
        if final.digest:
            outputs[f"{name}-digest"] = final.digest
            if match is not None:
                outputs[f"{name}-ref"] = f"{match.group('name')}@{final.digest}"
    return outputs


def step_summary(result: RunResult, redact: Callable[[str], str] = str) -> str:
    """The report as the job summary's Markdown: a table of stages per service, what failed and why."""
    lines = ["## dockercache", ""]
    for svc in result.services:
        lines += [f"### {svc.name}", "", render_markdown(svc, None, redact), ""]
    if result.error:
        lines += [f"**error:** `{redact(result.error).replace('`', chr(39))}`", ""]
    return "\n".join(lines)


def publish(env: Mapping[str, str], result: RunResult, redact: Callable[[str], str] = str) -> list[str]:
    """Append the summary and the outputs to the files GitHub Actions names; the problems (a file that cannot
    be written), for the caller to warn about."""
    problems = []
    writes = [
        ("GITHUB_STEP_SUMMARY", step_summary(result, redact) + "\n" if result.services or result.error else ""),
        ("GITHUB_OUTPUT", "".join(f"{k}={v}\n" for k, v in step_outputs(result).items() if "\n" not in v)),
    ]
    for variable, text in writes:
        path = env.get(variable)
        if not path or not text:
            continue
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            problems.append(f"${variable}: cannot write {path}: {exc.strerror or exc}")
    return problems
