"""``dockercache check --lint``: BuildKit's Dockerfile checks, with fake docker adapters (no Docker needed).

The path where buildx is too old (0.13 here) runs against the real buildx in tests/e2e/test_labels_lint.py.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from dockercache.adapters.buildcheck import CheckFinding, parse_check_result
from dockercache.adapters.docker import Docker
from dockercache.commands import Environment, cmd_check
from dockercache.errors import EnvironmentProblem
from dockercache.output.console import Console

#: ``docker buildx build --call=check,format=json`` as buildx 0.15+ prints it (BuildKit's lint result: the
#: Dockerfile's bytes as base64 under sources[].data, lines 1-based).
CHECK_OUTPUT = {
    "warnings": [
        {
            "ruleName": "JSONArgsRecommended",
            "description": "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related "
            "to OS signals",
            "url": "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
            "detail": "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
            "location": {"ranges": [{"start": {"line": 4}, "end": {"line": 4}}]},
        },
        {
            "ruleName": "FromAsCasing",
            "description": "The 'as' keyword should match the case of the 'from' keyword",
            "url": "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
            "detail": "'as' and 'FROM' keywords' casing do not match",
            "location": {"sourceIndex": 0, "ranges": [{"start": {"line": 1}, "end": {"line": 1}}]},
        },
    ],
    "sources": [{"filename": "Dockerfile", "language": "Dockerfile", "data": "RlJPTSBidXN5Ym94IGFzIGJhc2UK"}],
}


def test_the_check_result_format_is_read_rule_by_rule() -> None:
    findings = parse_check_result(json.dumps(CHECK_OUTPUT), "/src/Dockerfile")
    assert [(f.rule, f.file, f.line) for f in findings] == [
        ("JSONArgsRecommended", "Dockerfile", 4),
        ("FromAsCasing", "Dockerfile", 1),
    ]
    assert str(findings[1]) == (
        "Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match "
        "(https://docs.docker.com/go/dockerfile/rule/from-as-casing/)"
    )
    broken = {
        "warnings": [],
        "sources": [],
        "buildError": {
            "message": "unknown instruction: RUNN",
            "location": {"sourceIndex": 0, "ranges": [{"start": {"line": 3}}]},
        },
    }
    assert parse_check_result(json.dumps(broken), "/src/Dockerfile") == (
        CheckFinding("error", "unknown instruction: RUNN", "/src/Dockerfile", 3),
    )
    assert parse_check_result('{"warnings": null}', "D") == ()
    for not_a_result in ("", "ERROR: failed to solve", "[]", '{"warnings": 3}'):
        with pytest.raises(ValueError):
            parse_check_result(not_a_result, "D")


class FakeDocker:
    """The adapter's lint surface: which buildx there is, and canned findings per Dockerfile target."""

    def __init__(
        self,
        missing: str | None = None,
        findings: Mapping[str | None, tuple[CheckFinding, ...]] = {},
        containerd: bool = True,
    ):
        self.missing = missing
        self.findings = findings
        self.containerd = containerd
        self.calls: list[tuple[Path, Path, str | None, dict[str, str], str | None]] = []

    def check_support(self) -> str | None:
        return self.missing

    def builder_driver(self, name: str) -> str | None:
        return "docker" if name == "default" else None

    def containerd_image_store(self) -> bool:
        return self.containerd

    def check_dockerfile(
        self, context: Path, dockerfile: Path, target: str | None, args: Mapping[str, str], builder: str | None = None
    ) -> tuple[CheckFinding, ...]:
        self.calls.append((context, dockerfile, target, dict(args), builder))
        return self.findings.get(target, ())


def write_project(tmp_path: Path, builder: str = "default") -> Path:
    (tmp_path / "Dockerfile").write_text("FROM busybox as base\nRUN true\nFROM base AS final\nCMD echo hi\n")
    (tmp_path / "dockercache.toml").write_text(
        f'[builder]\nname = "{builder}"\ndriver = "docker"\n'
        '[services.app]\ntarget = "final"\nargs = { GREETING = "hi" }\n'
        '[services.base]\ntarget = "base"\n'
    )
    return tmp_path / "dockercache.toml"


def run_check(tmp_path: Path, docker: FakeDocker, lint: bool = True) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environment = Environment(env={}, cwd=tmp_path, docker=docker, console=Console(out, err))  # type: ignore[arg-type]
    code = cmd_check(environment, str(write_project(tmp_path)), lint=lint)
    return code, out.getvalue(), err.getvalue()


def test_findings_are_reported_per_service_and_fail_the_check(tmp_path: Path) -> None:
    findings = parse_check_result(json.dumps(CHECK_OUTPUT), "Dockerfile")
    docker = FakeDocker(findings={"final": findings})
    code, out, err = run_check(tmp_path, docker)
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0].endswith("dockercache.toml: ok (2 services)")
    assert lines[1:] == [
        f"app: {findings[0]}",
        f"app: {findings[1]}",
        "app: Dockerfile checks: 2 findings",
        "base: Dockerfile checks: no findings",
    ]
    # Each service's own Dockerfile target and args, on the configured builder (it exists).
    assert [(c[2], c[3], c[4]) for c in docker.calls] == [
        ("final", {"GREETING": "hi"}, "default"),
        ("base", {}, "default"),
    ]


def test_a_clean_dockerfile_passes(tmp_path: Path) -> None:
    code, out, _ = run_check(tmp_path, FakeDocker())
    assert code == 0 and out.splitlines()[1:] == [
        "app: Dockerfile checks: no findings",
        "base: Dockerfile checks: no findings",
    ]


def test_an_old_buildx_is_one_warning_and_exit_0(tmp_path: Path) -> None:
    docker = FakeDocker(missing="github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3")
    code, out, err = run_check(tmp_path, docker)
    assert code == 0 and docker.calls == []
    assert out.strip().endswith("ok (2 services)")
    assert err.splitlines() == [
        "dockercache: warning: --lint skipped: BuildKit's Dockerfile checks need buildx 0.15 or later "
        "(docker buildx build --call=check); this is github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3"
    ]


def test_without_lint_no_docker_is_asked(tmp_path: Path) -> None:
    docker = FakeDocker()
    assert run_check(tmp_path, docker, lint=False)[0] == 0 and docker.calls == []


# ---------------------------------------------------------------- the adapter, with a fake docker executable

HELP_015 = """Usage:  docker buildx build [OPTIONS] PATH | URL | -

Start a build

Options:
      --add-host strings              Add a custom host-to-IP mapping
      --call string                   Set method for evaluating build ("check", "outline", "targets") (default "build")
      --check                         Shorthand for "--call=check" (default )
"""


def fake_docker(tmp_path: Path, help_text: str, stdout: str, code: int = 1) -> tuple[Docker, Path]:
    log = tmp_path / "calls.log"
    (tmp_path / "help.txt").write_text(help_text)
    (tmp_path / "out.json").write_text(stdout)
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "ARGV $*" >> {log}\n'
        f'echo "ENV GREETING=$GREETING TOKEN=$NPM_TOKEN" >> {log}\n'
        f'case "$*" in *--help*) cat {tmp_path / "help.txt"}; exit 0;; version*|*" version"*) '
        'echo "github.com/docker/buildx 0.13.1"; exit 0;; esac\n'
        f"cat {tmp_path / 'out.json'}; echo 'some progress' >&2; exit {code}\n"
    )
    script.chmod(0o755)
    return Docker(DockerClient(client_call=[str(script)])), log


def test_the_adapter_detects_call_support_from_buildx_build_help(tmp_path: Path) -> None:
    supported, _ = fake_docker(tmp_path, HELP_015, "")
    assert supported.check_support() is None
    old, _ = fake_docker(tmp_path, "Options:\n      --attest stringArray   Attestation parameters\n", "")
    assert old.check_support() == "github.com/docker/buildx 0.13.1"


def test_the_adapter_passes_arg_values_in_the_environment_only(tmp_path: Path) -> None:
    docker, log = fake_docker(tmp_path, HELP_015, json.dumps(CHECK_OUTPUT))
    findings = docker.check_dockerfile(
        tmp_path, tmp_path / "Dockerfile", "final", {"GREETING": "hello", "NPM_TOKEN": "s3cr3t-value", "HOME": "/h"}
    )
    assert [f.rule for f in findings] == ["JSONArgsRecommended", "FromAsCasing"]  # exit 1 with findings: read
    argv, env = log.read_text().splitlines()
    assert argv == (
        f"ARGV buildx build --call=check,format=json --progress plain --file {tmp_path}/Dockerfile --target final "
        f"--build-arg GREETING --build-arg NPM_TOKEN --build-arg HOME=/h {tmp_path}"
    )
    assert "s3cr3t" not in argv and env == "ENV GREETING=hello TOKEN=s3cr3t-value"
    assert "NPM_TOKEN" not in os.environ  # the child's environment only


def test_output_that_is_no_check_result_is_an_environment_problem(tmp_path: Path) -> None:
    docker, _ = fake_docker(tmp_path, HELP_015, "")
    with pytest.raises(EnvironmentProblem, match=r"Dockerfile checks of .*Dockerfile failed: some progress"):
        docker.check_dockerfile(tmp_path, tmp_path / "Dockerfile", None, {})


def test_check_warns_when_a_docker_driver_builder_does_not_exist(tmp_path: Path) -> None:
    """The 'docker' driver cannot be created: check says so for a name that is not there (a build: exit 3)."""
    out, err = io.StringIO(), io.StringIO()
    environment = Environment(env={}, cwd=tmp_path, docker=FakeDocker(), console=Console(out, err))  # type: ignore[arg-type]
    assert cmd_check(environment, str(write_project(tmp_path, builder="ci"))) == 0
    assert err.getvalue() == (
        f"dockercache: warning: {tmp_path / 'dockercache.toml'}: builder.name: no builder 'ci', and the 'docker' "
        "driver cannot be created (the Docker context's own builder is 'default'): a build would stop with exit 3\n"
    )
    quiet = io.StringIO()
    environment = Environment(env={}, cwd=tmp_path, docker=FakeDocker(), console=Console(io.StringIO(), quiet))  # type: ignore[arg-type]
    assert cmd_check(environment, str(write_project(tmp_path))) == 0 and quiet.getvalue() == ""


def test_check_warns_of_the_docker_driver_on_the_classic_image_store(tmp_path: Path) -> None:
    """Issue 27: the engine's BuildKit on the classic image store hits --cache-from every second build only
    (moby/buildkit#2274, the old plugin's users' problem on Buildkite's elastic stack): check says so."""
    err = io.StringIO()
    docker = FakeDocker(containerd=False)
    environment = Environment(env={}, cwd=tmp_path, docker=docker, console=Console(io.StringIO(), err))  # type: ignore[arg-type]
    assert cmd_check(environment, str(write_project(tmp_path))) == 0
    assert err.getvalue() == (
        f"dockercache: warning: {tmp_path / 'dockercache.toml'}: builder.driver: the 'docker' driver builds with the "
        "engine's own BuildKit, which on the classic image store hits a --cache-from only every second build "
        "(moby/buildkit#2274); a docker-container builder (dockercache's default, moby/buildkit:v0.13.2) or the "
        "containerd image store avoids it\n"
    )
