"""End-to-end: builds of examples/ruby against the real Docker engine and registry."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from .conftest import (
    COMMIT,
    ExtraRegistry,
    Project,
    Stack,
    base_env,
    docker,
    fresh_agent,
    registry_config,
    run_dockercache,
)

STAGES = ("base", "deps", "final")


def counts(result: object, *stages: str) -> dict[str, tuple[int, int]]:
    return {
        s: (result.stage("ruby", s)["steps_cached"], result.stage("ruby", s)["steps_total"])  # type: ignore[attr-defined]
        for s in stages
    }


def test_build_pushes_image_and_cache_manifests(project: Project, stack: Stack) -> None:
    fresh_agent()
    result = project.build()
    assert result.returncode == 0, result.stderr
    svc = result.json["services"][0]
    assert svc["status"] == "ok"
    # The image, through the registry's HTTP API, has the digest the build reported.
    digest, _ = stack.registry.manifest(f"{project.name}/ruby", COMMIT[:12])
    assert svc["image"]["digest"] == digest
    assert svc["image"]["pushed"] is True
    # One cache manifest per stage, as an OCI image manifest with zstd layers and a BuildKit cache config
    # (the base image's own layer is reused as it is, gzip).
    base_repo, base_tag = stack.base_image.split("/", 1)[1].rsplit(":", 1)
    _, base_manifest = stack.registry.manifest(base_repo, base_tag)
    if "manifests" in base_manifest:
        _, base_manifest = stack.registry.manifest(base_repo, base_manifest["manifests"][0]["digest"])
    base_layers = {layer["digest"] for layer in base_manifest["layers"]}
    # build runs the leaf (final); its mode=max cache holds the stages it builds on, so one cache manifest
    # per branch holds every stage: an OCI image manifest with a BuildKit cache config.
    assert stack.registry.tags(f"{project.name}/cache") == ["final-main", "final-main.why"]  # and its record
    _, manifest = stack.registry.manifest(f"{project.name}/cache", "final-main")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
    own = [layer for layer in manifest["layers"] if layer["digest"] not in base_layers]
    assert len(own) >= 7  # base 2, deps 3 and final's 3 steps make layers (WORKDIR may not)
    # Every layer here is also in the pushed image, so it keeps the image's gzip (force_compression = false).
    assert {layer["mediaType"] for layer in own} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    for stage in STAGES:
        assert result.stage("ruby", stage)["cache_written"] == f"{stack.host}/{project.name}/cache:final-main"
    # A cold build caches nothing.
    assert svc["steps_cached"] == 0 and svc["steps_total"] == 8


def test_human_report_has_table_and_closing_line(project: Project, stack: Stack) -> None:
    result = project.build()  # --json is added by Project.build; run the plain form too
    assert result.returncode == 0
    plain = run_dockercache("build", cwd=project.path, env=base_env())
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.strip().splitlines()
    assert lines[0].split() == ["service", "stage", "cached", "time", "cache", "written"]
    assert lines[-2].startswith(f"ruby: 3 stages, 8/8 steps cached, pushed {stack.host}/{project.name}/ruby:")
    assert lines[-1] == "cache writes: on (running in CI)"
    assert "CACHED" in plain.stderr


@pytest.mark.usefixtures("agent")
def test_fresh_agent_after_one_file_change_hits_every_unchanged_stage(project: Project) -> None:
    fresh_agent()
    assert project.build().returncode == 0
    fresh_agent()
    project.touch_source()
    result = project.build()
    assert result.returncode == 0, result.stderr
    c = counts(result, *STAGES)
    assert c["base"] == (2, 2)
    assert c["deps"] == (3, 3)
    final_cached, final_total = c["final"]
    assert final_total == 3 and final_cached < final_total  # the changed COPY and what follows it ran


@pytest.mark.usefixtures("agent")
def test_five_fresh_agent_builds_in_a_row_all_hit(project: Project) -> None:
    fresh_agent()
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert first.json["services"][0]["steps_cached"] == 0
    for attempt in range(2, 6):
        fresh_agent()
        result = project.build()
        assert result.returncode == 0, result.stderr
        svc = result.json["services"][0]
        assert (svc["steps_cached"], svc["steps_total"]) == (8, 8), f"build {attempt}: {counts(result, *STAGES)}"


@pytest.mark.usefixtures("agent")
@pytest.mark.hardening("poisoning")
def test_feature_branch_reads_default_branch_cache_and_writes_only_its_own(project: Project, stack: Stack) -> None:
    fresh_agent()
    assert project.build().returncode == 0
    repo = f"{project.name}/cache"
    main_digests = {t: stack.registry.manifest(repo, t)[0] for t in stack.registry.tags(repo)}
    fresh_agent()
    result = project.build(BUILDKITE_BRANCH="feature/login-form")
    assert result.returncode == 0, result.stderr
    assert result.json["services"][0]["steps_cached"] == 8  # everything came from main's cache
    assert sorted(stack.registry.tags(repo)) == sorted(
        [*main_digests, "final-feature-login-form-5e6268e3", "final-feature-login-form-5e6268e3.why"]
    )
    # main's refs were not rewritten by the branch build
    assert {t: stack.registry.manifest(repo, t)[0] for t in main_digests} == main_digests


@pytest.mark.hardening("poisoning")
def test_no_cache_write_leaves_the_registry_alone(project: Project, stack: Stack) -> None:
    result = project.build("--no-cache-write")
    assert result.returncode == 0, result.stderr
    assert stack.registry.tags(f"{project.name}/cache") == []
    assert all(s["cache_written"] is None for s in result.json["services"][0]["stages"])


@pytest.mark.usefixtures("agent")
@pytest.mark.hardening("faults")
def test_unreachable_cache_registry_is_a_warning_then_fatal_on_request(
    project: Project, stack: Stack, extra_registry: ExtraRegistry
) -> None:
    project.write_config(registry_config(stack, project.name, cache_host=extra_registry.host))
    fresh_agent()
    assert project.build().returncode == 0
    extra_registry.stop()
    fresh_agent()
    result = project.build()
    assert result.returncode == 0, result.stderr
    assert f"cache registry {extra_registry.host} unreachable" in result.stderr
    assert result.json["warnings"] and result.json["services"][0]["steps_cached"] == 0
    # The image still went to the (running) image registry.
    assert stack.registry.tags(f"{project.name}/ruby") == [COMMIT[:12]]

    project.write_config(
        registry_config(stack, project.name, cache_host=extra_registry.host, settings='cache_errors = "fail"')
    )
    fatal = project.build()
    assert fatal.returncode == 1
    assert "unreachable" in fatal.stderr and "cache_errors = 'fail'" in fatal.stderr


@pytest.mark.hardening("faults")
def test_a_cache_registry_that_accepts_and_never_answers_is_dropped(
    project: Project, stack: Stack, tmp_path: Path
) -> None:
    """A TCP check passes it; BuildKit would wait about 20 s per stage on it. Asked GET /v2/, it says nothing:
    one warning, built without it, the image still pushed."""
    import socket
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        project.write_config(registry_config(stack, project.name, cache_host=host))
        fresh_agent()
        result = project.build()
    finally:
        silent.close()
        for conn in held:
            conn.close()
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if f"cache registry {host}" in line]
    assert warnings == [
        f"dockercache: warning: cache registry {host} unreachable (no answer within 3s): building without its cache"
    ]
    assert all(s["cache_written"] is None for s in result.json["services"][0]["stages"])
    assert stack.registry.tags(f"{project.name}/ruby") == [COMMIT[:12]]
    assert len(held) == 1  # asked once, by dockercache; BuildKit was never sent there


def test_plan_is_the_bake_file_that_runs(project: Project, stack: Stack, tmp_path: Path) -> None:
    """`plan --json` shows the exact argument list and `plan --bake` the exact file that `build` runs (but for
    cache refs that do not exist: dockercache asks the registry first)."""
    fresh_agent()
    assert project.build().returncode == 0  # the leaf's ref exists from now on; the stages' own ones do not
    project.touch_source()
    tags = [t for t in stack.registry.tags(f"{project.name}/cache") if not t.endswith(".why")]  # not the records
    existing = {f"{stack.host}/{project.name}/cache:{tag}" for tag in tags}
    assert existing == {f"{stack.host}/{project.name}/cache:final-main"}
    log = tmp_path / "argv.log"
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("docker")
    # Record every docker call, and keep a copy of each bake file as it was when bake ran.
    (shim / "docker").write_text(
        f"""#!/bin/sh
printf "%s\\0" "$@" >> {log}; printf "\\n" >> {log}
prev=; for a in "$@"; do [ "$prev" = --file ] && cp "$a" {tmp_path}/ran-bake.json; prev=$a; done
exec {real} "$@"
"""
    )
    (shim / "docker").chmod(0o755)
    env = base_env(PATH=f"{shim}:{os.environ['PATH']}")
    plan = run_dockercache("plan", "--json", cwd=project.path, env=env)
    bake = run_dockercache("plan", "--bake", cwd=project.path, env=env)
    assert plan.returncode == 0 and bake.returncode == 0, plan.stderr + bake.stderr
    assert not log.exists(), "plan must not run docker"
    result = run_dockercache("build", cwd=project.path, env=env)
    assert result.returncode == 0, result.stderr
    ran = [line.split("\0")[:-1] for line in log.read_text().splitlines()]
    bakes = [argv for argv in ran if argv[:2] == ["buildx", "bake"]]
    assert len(bakes) == 1, ran  # one BuildKit session for the whole build
    (argv,) = bakes
    argv[argv.index("--file") + 1] = "<bake file>"
    argv[argv.index("--metadata-file") + 1] = "<metadata file>"
    assert ["docker", *argv] == json.loads(plan.stdout)["argv"]
    # The bake that ran is the plan's, but for cache refs that did not exist (asked of the registry first: no
    # MISS line for a ref nothing has written yet, such as a stage's own that only a failed build's rescue writes).
    ran_bake, planned = json.loads((tmp_path / "ran-bake.json").read_text()), json.loads(bake.stdout)
    for name in planned["group"]["default"]["targets"]:  # the targets that run
        sources = planned["target"][name].pop("cache-from", [])
        ran_sources = ran_bake["target"][name].pop("cache-from", [])
        refs = [dict(p.split("=", 1) for p in s.split(","))["ref"] for s in sources]
        assert ran_sources == [s for s, ref in zip(sources, refs, strict=True) if ref in existing], name
        assert "MISS" not in result.stderr  # BuildKit was never sent to a ref that is not there
    assert ran_bake == planned


def test_bake_resolves_the_file_as_the_plan_says(project: Project, stack: Stack, tmp_path: Path) -> None:
    """What `docker buildx bake --print` makes of `plan --bake` is what the plan says, target by target."""
    planned = json.loads(run_dockercache("plan", "--json", cwd=project.path, env=base_env()).stdout)
    bake_file = tmp_path / "bake.json"
    bake_file.write_text(run_dockercache("plan", "--bake", cwd=project.path, env=base_env()).stdout)
    default = json.loads(docker("buildx", "bake", "--file", str(bake_file), "--print", "default").stdout)
    assert default["group"]["default"]["targets"] == ["ruby-final"]  # what build runs: the leaf
    targets = {t["name"]: t for s in planned["services"] for t in s["targets"]}
    printed = docker("buildx", "bake", "--file", str(bake_file), "--print", *targets)
    resolved = json.loads(printed.stdout)
    assert set(resolved["target"]) == set(targets)
    for name, got in resolved["target"].items():
        want = targets[name]
        assert got["context"] == str(project.path.resolve())
        assert got["dockerfile"] == str((project.path / "Dockerfile").resolve())
        assert got["target"] == want["target"]
        assert got["args"] == {"BASE_IMAGE": stack.base_image}
        assert got.get("tags", []) == want["tags"]
        assert got.get("cache-from", []) == want["cache_from"]
        assert got.get("cache-to", []) == ([want["cache_to"]] if want["cache_to"] else [])
        assert got["output"] == [
            {"push": "type=registry", "cacheonly": "type=cacheonly", "load": "type=docker"}[want["output"]]
        ]


def test_stage_images_pushed_when_asked_and_stage_selection(project: Project, stack: Stack) -> None:
    project.write_config(registry_config(stack, project.name).replace("target = ", 'push_stages = ["deps"]\ntarget = '))
    result = project.build("--stage", "deps")
    assert result.returncode == 0, result.stderr
    assert [s["stage"] for s in result.json["services"][0]["stages"]] == ["base", "deps"]
    assert stack.registry.tags(f"{project.name}/ruby") == [f"deps-{COMMIT[:12]}"]  # the final image was not built
    assert stack.registry.tags(f"{project.name}/cache") == ["deps-main", "deps-main.why"]  # --stage deps: the leaf
    full = project.build()
    assert full.returncode == 0, full.stderr
    assert stack.registry.tags(f"{project.name}/ruby") == sorted([f"deps-{COMMIT[:12]}", COMMIT[:12]])


def test_no_push_loads_the_image_locally(project: Project, stack: Stack) -> None:
    fresh_agent()
    result = project.build("--no-push")
    assert result.returncode == 0, result.stderr
    assert stack.registry.tags(f"{project.name}/ruby") == []
    image = f"{stack.host}/{project.name}/ruby:{COMMIT[:12]}"
    assert docker("image", "inspect", image, check=False).returncode == 0
    run = docker("run", "--rm", image)
    assert "hello from the ruby service" in run.stdout


def test_no_cache_runs_every_step_even_with_caches_at_hand(project: Project) -> None:
    fresh_agent()
    assert project.build().returncode == 0
    # The same agent (its build cache warm) and the registry cache both at hand: --no-cache uses neither.
    again = project.build("--no-cache")
    assert again.returncode == 0, again.stderr
    assert counts(again, *STAGES) == {s: (0, counts(again, s)[s][1]) for s in STAGES}
    assert all(total > 0 for _, total in counts(again, *STAGES).values())
    warm = project.build()
    assert warm.returncode == 0, warm.stderr
    assert all(done == total for done, total in counts(warm, *STAGES).values())  # caches are still good


@pytest.mark.usefixtures("agent")
def test_a_cache_that_adds_nothing_never_replaces_the_richer_one(project: Project, stack: Stack) -> None:
    """The branch's ref holds a cache with a layer the next build's export lacks (here: a step since removed;
    in the field, BuildKit 0.13 exporting a build whose steps all hit without their intermediate records).
    The new cache adds nothing to it: the ref gets its richer cache back, and the report says so."""
    dockerfile = project.path / "Dockerfile"
    plain = dockerfile.read_text()
    dockerfile.write_text(plain.replace('CMD ["sh"', 'RUN echo extra > /extra\nCMD ["sh"', 1))
    fresh_agent()
    assert project.build().returncode == 0
    repo = f"{project.name}/cache"
    richer = stack.registry.manifest(repo, "final-main")[0]
    dockerfile.write_text(plain)
    fresh_agent()
    result = project.build()
    assert result.returncode == 0, result.stderr
    final = result.stage("ruby", "final")
    assert final["steps_cached"] == final["steps_total"]  # everything from the richer cache
    assert final["cache_written"] is None
    assert final["cache_kept"].startswith(f"kept {stack.host}/{repo}:final-main: this build's cache adds nothing")
    assert stack.registry.manifest(repo, "final-main")[0] == richer
    # A change the cache does hold is written as ever.
    project.touch_source()
    fresh_agent()
    changed = project.build()
    assert changed.returncode == 0 and changed.stage("ruby", "final")["cache_kept"] is None
    assert stack.registry.manifest(repo, "final-main")[0] != richer


@pytest.mark.usefixtures("agent")
def test_two_services_sharing_base_steps_count_them_once(stack: Stack, tmp_path: Path) -> None:
    """Two services, a Dockerfile each, the same base steps (BuildKit solves them once): each step counts once,
    in the first service's row (the other's row says where), and a stage that hit names where its hits came from."""
    name = f"t{uuid.uuid4().hex[:10]}"
    base = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}} AS base\nRUN echo {name} > /base\nRUN echo shared > /shared\n"
    for service in ("api", "worker"):
        (tmp_path / f"{service}.Dockerfile").write_text(f"{base}FROM base AS final\nRUN echo {service} > /svc\n")
    services = "".join(
        f'\n[services.{s}]\ncontext = "."\ndockerfile = "{s}.Dockerfile"\nstages = ["base"]\ntarget = "final"\n'
        f'image = "{stack.host}/{name}/{s}"\nargs = {{ BASE_IMAGE = "{stack.base_image}" }}\n'
        for s in ("api", "worker")
    )
    (tmp_path / "dockercache.toml").write_text(
        f'[builder]\nname = "default"\ndriver = "docker"\n\n[caches.default]\ntype = "registry"\n'
        f'ref = "{stack.host}/{name}/cache/{{service}}"\n{services}'
    )
    results = []
    for _ in range(2):
        fresh_agent()
        result = run_dockercache("build", "--json", cwd=tmp_path, env=base_env())
        assert result.returncode == 0, result.stderr
        results.append(result)
    for result in results:
        stages = {(s["name"], st["stage"]): st for s in result.json["services"] for st in s["stages"]}
        assert stages[("api", "base")]["steps_total"] == 2 and stages[("worker", "base")]["steps_total"] == 0
        assert stages[("worker", "base")]["shared_steps_counted_in"] == ["api-base"]
        assert stages[("api", "final")]["steps_total"] == stages[("worker", "final")]["steps_total"] == 1
    second = {(s["name"], st["stage"]): st for s in results[1].json["services"] for st in s["stages"]}
    assert all(st["steps_cached"] == st["steps_total"] for st in second.values())
    assert second[("api", "base")]["cache_read"], second[("api", "base")]  # where its hits came from
