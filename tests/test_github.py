"""GitHub Actions (issue 28): log groups, no Buildkite emoji off Buildkite, the step summary and outputs."""

from __future__ import annotations

import io
from pathlib import Path

from dockercache.commands.build import report
from dockercache.output.console import Console
from dockercache.output.github import publish, step_outputs
from dockercache.output.results import RunResult, ServiceResult, StageResult

DIGEST = "sha256:" + "ab" * 32


def pushed(name: str = "ruby", ok: bool = True) -> ServiceResult:
    final = StageResult(name, "final", "final", True, name=f"{name}-final", tags=(f"ghcr.io/acme/{name}:abc123",))
    final.status, final.pushed, final.digest = ("ok" if ok else "failed"), ok, DIGEST if ok else None
    return ServiceResult(name, [final])


def test_off_buildkite_sections_carry_no_emoji_codes_and_github_folds_them_in_groups() -> None:
    laptop = io.StringIO()
    Console(io.StringIO(), laptop).section(":docker: build: ruby")
    assert laptop.getvalue() == "==> build: ruby\n"
    buildkite = io.StringIO()
    Console(io.StringIO(), buildkite, buildkite=True, github=True).section(":docker: build: ruby")
    assert buildkite.getvalue() == "--- :docker: build: ruby\n"
    err, out = io.StringIO(), io.StringIO()
    console = Console(out, err, github=True)
    console.section(":s3: ruby: restore caches")
    console.info("restored")
    console.section(":docker: build and push: ruby", "expanded")
    report(console, RunResult(services=[pushed()]), as_json=False)
    assert err.getvalue().splitlines()[:5] == [
        "::group::ruby: restore caches",
        "restored",
        "::endgroup::",
        "::group::build and push: ruby",
        "::endgroup::",
    ]


def test_the_step_summary_and_outputs_are_appended_to_the_runners_files(tmp_path: Path) -> None:
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    output.write_text("earlier=1\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}
    result = RunResult(services=[pushed("ruby"), pushed("web[3.3]")])
    assert publish(env, result) == []
    assert output.read_text().splitlines() == [
        "earlier=1",
        "ruby-image=ghcr.io/acme/ruby:abc123",
        f"ruby-digest={DIGEST}",
        f"ruby-ref=ghcr.io/acme/ruby@{DIGEST}",
        "web_3_3_-image=ghcr.io/acme/web[3.3]:abc123",
        f"web_3_3_-digest={DIGEST}",
    ]
    text = summary.read_text()
    assert text.startswith("## dockercache\n\n### ruby\n") and "| stage | steps cached |" in text
    assert step_outputs(RunResult(services=[pushed("ruby", ok=False)], exit_code=1)) == {}
    assert publish({"GITHUB_OUTPUT": str(tmp_path / "missing" / "out")}, result)[0].startswith("$GITHUB_OUTPUT: ")
