"""The README's GitHub Actions workflow: its ``run:`` steps run as a runner runs them (GITHUB_* variables, the
event payload, the step summary and output files), for a push to main and then for a pull request.

One deviation, said here and in the README's test list: the install step is not run (the virtualenv's
``dockercache`` is this checkout's; tests/test_install.py runs that command). ``uses:`` steps are GitHub's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ..conftest import ROOT
from .conftest import COMMIT, DOCKERCACHE, Project, docker_env

MARKED = re.compile(r"<!-- github-actions -->\n```yaml\n(.*?)```\n<!-- /github-actions -->", re.DOTALL)


def workflow_steps() -> list[dict[str, Any]]:
    match = MARKED.search((ROOT / "README.md").read_text())
    assert match, "README.md has no <!-- github-actions --> yaml block"
    steps: list[dict[str, Any]] = yaml.safe_load(match.group(1))["jobs"]["build"]["steps"]
    return steps


def runner_env(tmp_path: Path, event: str, payload: dict[str, Any], **extra: str) -> dict[str, str]:
    (tmp_path / f"{event}.json").write_text(json.dumps(payload))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_", "GITHUB_"))}
    env.update(
        {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(tmp_path / f"{event}.json"),
            "GITHUB_SHA": COMMIT,
            "GITHUB_REPOSITORY": "acme/shop",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": "42",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": "build",
            "RUNNER_NAME": "runner-1",
            "GITHUB_STEP_SUMMARY": str(tmp_path / f"{event}-summary.md"),
            "GITHUB_OUTPUT": str(tmp_path / f"{event}-output"),
            "PATH": f"{DOCKERCACHE.parent}:{os.environ['PATH']}",
            **extra,
        }
    )
    return docker_env(env)


def run_job(event: str, env: dict[str, str], cwd: Path) -> str:
    """Every ``run:`` step of the job for ``event``, in order, as bash runs them; all they printed."""
    printed = ""
    outputs: dict[str, str] = {}
    for step in workflow_steps():
        if "run" not in step or step.get("if", f"github.event_name == '{event}'") != f"github.event_name == '{event}'":
            continue
        command = str(step["run"])
        if command.startswith("pip install"):
            assert 'pip install "git+https://' in command
            continue
        command = re.sub(r"\$\{\{ steps\.build\.outputs\.([\w-]+) \}\}", lambda m: outputs.get(m.group(1), ""), command)
        proc = subprocess.run(  # one stream, in the order written, as the runner's log has it
            ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{proc.stdout}"
        assert "Traceback" not in proc.stdout, proc.stdout
        printed += proc.stdout
        if step.get("id") == "build":
            output = Path(env["GITHUB_OUTPUT"])
            lines = output.read_text().splitlines() if output.exists() else []
            outputs.update(line.split("=", 1) for line in lines)  # type: ignore[arg-type]
    return printed


def test_the_readme_workflow_on_a_push_and_a_pull_request(project: Project, tmp_path: Path) -> None:
    repository = f"{project.name}/ruby"
    push = runner_env(tmp_path, "push", {"repository": {"default_branch": "main"}}, GITHUB_REF="refs/heads/main")
    printed = run_job("push", push, project.path)
    outputs = dict(line.split("=", 1) for line in Path(push["GITHUB_OUTPUT"]).read_text().splitlines())
    ref = outputs["ruby-ref"]
    assert re.fullmatch(rf"localhost:\d+/{repository}@sha256:[0-9a-f]{{64}}", ref), outputs
    assert outputs["ruby-digest"] == ref.split("@")[1] and outputs["ruby-image"].startswith("localhost:")
    assert f"pushed {ref}" in printed  # the workflow's last step read the step's output
    assert "::group::build and push: ruby" in printed and "::endgroup::" in printed
    assert printed.index("::endgroup::") < printed.index("service  stage")  # the report is not folded away
    assert not re.search(r":(docker|s3|key|mag|hammer_and_wrench|bar_chart|rotating_light):", printed), printed
    summary = Path(push["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("## dockercache\n\n### ruby\n") and "| stage | steps cached |" in summary

    pull = runner_env(
        tmp_path,
        "pull_request",
        {"number": 7, "repository": {"default_branch": "main"}, "pull_request": {"head": {"ref": "feature"}}},
        GITHUB_REF="refs/pull/7/merge",
        GITHUB_HEAD_REF="feature",
        GITHUB_BASE_REF="main",
    )
    run_job("pull_request", pull, project.path)
    assert not Path(pull["GITHUB_OUTPUT"]).exists()  # --no-push: nothing pushed, no output
    assert "### ruby" in Path(pull["GITHUB_STEP_SUMMARY"]).read_text()
    tags = subprocess.run(
        ["curl", "-fsS", f"http://{ref.split('/')[0]}/v2/{project.name}/cache/tags/list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pr-7" in tags.stdout and "feature" not in tags.stdout, tags.stdout  # an untrusted writer
