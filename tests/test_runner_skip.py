"""skip_unchanged in the runner (in process, fakes for Docker and the agent): the key's tag pushed beside a
build's tags, a retag and no bake when it is in the repository, the other services still built."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockercache.config.caches import RegistryCache
from dockercache.config.model import BuilderConfig, Settings
from dockercache.model import BuildOptions, Plan
from dockercache.output.console import Console
from dockercache.output.report import render_table
from dockercache.planning.plan import PlanInputs, make_plan
from dockercache.planning.resolve import ResolvedService
from dockercache.run.runner import Runner

from .test_runner import GRAPHS, FakeAgent, FakeDocker, Log

STORE = RegistryCache(type="registry", ref="reg.test/cache/{service}")
DOCKERFILE = "ARG BASE=busybox:1\nFROM ${BASE} AS base\nFROM base AS deps\nFROM deps AS test\nFROM deps AS final\n"


@dataclass
class RegistryDocker(FakeDocker):
    """A FakeDocker whose registry holds ``images`` (reference: digest); a bake pushes its targets' tags."""

    images: dict[str, str] = field(default_factory=dict)
    retags: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def manifest_digest(self, ref: str) -> str | None:
        self.lookups.append(ref)
        return self.images.get(ref)

    def retag(self, source: str, tags: tuple[str, ...]) -> None:
        self.log.add(f"docker buildx imagetools create {source}")
        self.retags.append((source, tuple(tags)))
        for tag in tags:
            self.images[tag] = self.images[source]

    def push_what_was_baked(self) -> None:
        for target in self.bakes[-1]["target"].values():
            if target["output"] == ["type=registry"]:
                for tag in target.get("tags", []):
                    self.images[tag] = "sha256:" + "ab" * 32


def service(root: Path, name: str = "app") -> ResolvedService:
    context = root / name
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "main.sh").write_text("echo hi\n")
    (context / ".dockerignore").write_text("*.log\n")
    stages = ("base", "deps", "test", "final")
    return ResolvedService(
        name=name,
        context=context,
        dockerfile=context / "Dockerfile",
        stages=stages,
        final_target="final",
        args={},
        image=f"reg.test/{name}",
        tags=(),
        push_stages=(),
        stage_tag="{stage}-{tag}",
        store_name="cache",
        store=STORE,
        metadata_key=f"{name}-image",
        graphs={s: GRAPHS[s] for s in stages},
    )


def plan(services: tuple[ResolvedService, ...], options: BuildOptions | None = None, skip: bool = True) -> Plan:
    inputs = PlanInputs(
        services=services,
        builder=BuilderConfig(name="default", driver="docker"),
        settings=Settings(skip_unchanged=skip),
        root=services[0].context.parent,
        commit="abc123",
        branch="main",
        default_branch="main",
        on_ci=True,
    )
    return make_plan(inputs, options or BuildOptions())


@pytest.fixture
def docker() -> RegistryDocker:
    return RegistryDocker(Log(), images={"busybox:1": "sha256:b1"})


def run(docker: RegistryDocker, the_plan: Plan) -> tuple[object, FakeAgent]:
    agent = FakeAgent(docker.log)
    runner = Runner(docker, Console(out=io.StringIO(), err=io.StringIO()), agent)  # type: ignore[arg-type]
    return runner.run(the_plan), agent


def test_a_build_pushes_its_keys_tag_and_the_next_run_with_nothing_changed_retags_it(
    docker: RegistryDocker, tmp_path: Path
) -> None:
    app = service(tmp_path)
    first, _ = run(docker, plan((app,)))
    assert first.exit_code == 0, first.error  # type: ignore[attr-defined]
    report = first.services[0].skip  # type: ignore[attr-defined]
    assert report is not None and not report.skipped and report.key and report.tag == f"dc-{report.key[:32]}"
    assert report.bases == {"busybox:1": "sha256:b1"} and report.files == 3
    assert docker.bakes[0]["target"]["app-final"]["tags"] == ["reg.test/app:abc123", f"reg.test/app:{report.tag}"]
    assert "tags" not in docker.bakes[0]["target"]["app-test"]  # a cache-only test stage has no image to mark
    docker.push_what_was_baked()

    second, agent = run(docker, plan((app,)))
    assert second.exit_code == 0, second.error  # type: ignore[attr-defined]
    assert len(docker.bakes) == 1  # no second bake at all
    assert docker.retags == [(f"reg.test/app:{report.tag}", ("reg.test/app:abc123",))]
    result = second.services[0]  # type: ignore[attr-defined]
    assert result.status == "skipped" and result.skip.skipped and result.skip.key == report.key
    assert {s.status for s in result.stages} == {"skipped"}
    assert result.final.digest == "sha256:" + "ab" * 32 and result.final.pushed
    assert agent.meta == {"app-image": "reg.test/app:abc123"}  # as a build would set it
    assert agent.annotations["dockercache-app"][0] == "success"
    table = render_table(second)  # type: ignore[arg-type]
    assert f"skipped (unchanged)  0.0s  key {report.tag}" in table.splitlines()[-1]
    assert result.closing_line().startswith(f"app: skipped (unchanged, key {report.tag}), retagged reg.test/app:abc123")
    document = second.to_json()  # type: ignore[attr-defined]
    assert document["services"][0]["skip"]["status"] == "skipped (unchanged)"
    assert document["services"][0]["skip"]["key"] == report.key


def test_a_changed_input_builds_again(docker: RegistryDocker, tmp_path: Path) -> None:
    app = service(tmp_path)
    run(docker, plan((app,)))
    docker.push_what_was_baked()
    (app.context / "debug.log").write_text("ignored")
    run(docker, plan((app,)))
    assert len(docker.bakes) == 1  # an ignored file changes nothing
    (app.context / "main.sh").write_text("echo hI\n")
    run(docker, plan((app,)))
    assert len(docker.bakes) == 2
    docker.push_what_was_baked()
    run(docker, plan((app,)))
    assert len(docker.bakes) == 2
    docker.images["busybox:1"] = "sha256:b2"  # the base image moved on
    run(docker, plan((app,)))
    assert len(docker.bakes) == 3
    docker.push_what_was_baked()
    run(docker, plan((dataclasses.replace(app, args={"BASE": "busybox:1", "X": "1"}),)))
    assert len(docker.bakes) == 4  # a build arg


def test_a_skipped_service_runs_no_target_and_the_others_still_build(docker: RegistryDocker, tmp_path: Path) -> None:
    app, web = service(tmp_path, "app"), service(tmp_path, "web")
    run(docker, plan((app, web)))
    docker.push_what_was_baked()
    (web.context / "main.sh").write_text("changed\n")
    result, agent = run(docker, plan((app, web)))
    assert result.exit_code == 0  # type: ignore[attr-defined]
    assert sorted(docker.bakes[-1]["group"]["default"]["targets"]) == ["web-final", "web-test"]
    assert [s.status for s in result.services] == ["skipped", "ok"]  # type: ignore[attr-defined]
    assert agent.meta == {"app-image": "reg.test/app:abc123", "web-image": "reg.test/web:abc123"}


def test_no_key_without_every_base_image_resolved(docker: RegistryDocker, tmp_path: Path) -> None:
    app = service(tmp_path)
    docker.images.clear()
    result, _ = run(docker, plan((app,)))
    report = result.services[0].skip  # type: ignore[attr-defined]
    assert report.key is None and "base image busybox:1 cannot be resolved" in report.reason
    assert docker.bakes[0]["target"]["app-final"]["tags"] == ["reg.test/app:abc123"]


def test_a_failed_retag_builds(docker: RegistryDocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockercache.errors import EnvironmentProblem

    app = service(tmp_path)
    run(docker, plan((app,)))
    docker.push_what_was_baked()

    def refuse(source: str, tags: tuple[str, ...]) -> None:
        raise EnvironmentProblem(f"cannot retag {source}: denied")

    monkeypatch.setattr(docker, "retag", refuse)
    result, _ = run(docker, plan((app,)))
    assert len(docker.bakes) == 2 and result.services[0].status == "ok"  # type: ignore[attr-defined]


def test_skip_off_looks_nothing_up(docker: RegistryDocker, tmp_path: Path) -> None:
    run(docker, plan((service(tmp_path),), skip=False))
    assert docker.lookups == [] and docker.bakes[0]["target"]["app-final"]["tags"] == ["reg.test/app:abc123"]
    run(docker, plan((service(tmp_path),), BuildOptions(no_cache=True)))
    assert docker.lookups == []
