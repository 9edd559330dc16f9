"""Cache mounts: finding them in a Dockerfile, the helper Dockerfiles, where they go, and the runner's side."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from dockercache.commands import render_plan
from dockercache.config.caches import LocalCache, RegistryCache, S3Cache
from dockercache.config.load import load_config
from dockercache.config.model import Settings
from dockercache.errors import ConfigError, EnvironmentProblem, HelperBuildFailed
from dockercache.model import BuildOptions, CacheMount, MountsPlan, Place
from dockercache.output.console import Console
from dockercache.output.results import ServiceResult, StageResult
from dockercache.output.tally import StepCount
from dockercache.planning.mounts import find_cache_mounts, scan_cache_mounts
from dockercache.planning.plan import make_plan
from dockercache.run.mounts import MARK, NOTHING, CacheMounts, export_dockerfile, parse_mark_lines, restore_dockerfile
from dockercache.stores.local.mounts import INDEX, swap_into_place

from .test_plan import inputs, service

DOCKERFILE = """\
ARG CACHE=/root/.cache
FROM busybox AS base
ARG CACHE
RUN --mount=type=cache,target=/var/cache/apt \\
    --mount=type=cache,id=pip,target=${CACHE}/pip,uid=1000,gid=1000,mode=0755 \\
    echo install
RUN --mount=type=bind,target=/src --mount=type=cache,from=base,source=/x,target=/seeded true
FROM base AS deps
# a comment inside
RUN --mount=type=cache,target=/var/cache/apt --network=none echo again
RUN --mount=type=secret,id=npm --mount=type=cache,id=gems,target=/gems,sharing=locked true
FROM deps AS test
RUN --mount=type=cache,target=/test-only true
FROM deps AS final
RUN echo --mount=type=cache,target=/not-a-flag
"""


def test_every_cache_mount_of_the_stages_built_once_with_its_identity() -> None:
    mounts, notes = find_cache_mounts(DOCKERFILE, {"base", "deps", "final"}, {"CACHE": "/home/app/.cache"})
    assert mounts == (
        CacheMount("/var/cache/apt", "/var/cache/apt", "base"),  # the id defaults to the target
        CacheMount("pip", "/home/app/.cache/pip", "base", "1000", "1000", "0755"),  # uid, gid, mode: its identity
        CacheMount("gems", "/gems", "deps"),
    )
    # A mount seeded from another stage holds that stage's files, not a cache of its own; the test stage is not built.
    assert notes == (
        "base: cache mount /seeded: left out (it has from= or source=: its content comes from another stage)",
    )
    assert "/test-only" in {m.id for m in find_cache_mounts(DOCKERFILE)[0]}  # None: every stage
    # Every stage that mounts one: deps mounts apt again (already found in base) and gems.
    assert scan_cache_mounts(DOCKERFILE, {"base", "deps", "final"})[2] == ("base", "deps")
    assert scan_cache_mounts(DOCKERFILE)[2] == ("base", "deps", "test")


def test_a_cache_mount_whose_build_argument_has_no_value_is_left_out_with_a_note() -> None:
    text = "FROM busybox\nRUN --mount=type=cache,target=/c/${MISSING} true\n"
    mounts, notes = find_cache_mounts(text)
    assert mounts == () and notes == ("stage-0: cache mount /c/: left out (build argument MISSING has no value)",)
    mounts, _ = find_cache_mounts('FROM busybox\nRUN --mount=type=cache,"id=a,b",target=/c true\n')
    assert mounts[0].id == "a,b"  # CSV, as BuildKit reads it


def test_the_archive_name_is_stable_and_tells_caches_apart() -> None:
    a = CacheMount("pip", "/root/.cache/pip", "base")
    assert a.file == CacheMount("pip", "/elsewhere", "deps").file  # the same cache wherever it is mounted
    assert a.file != CacheMount("pip", "/root/.cache/pip", "base", uid="1000").file
    assert re.fullmatch(r"m-[0-9a-f]{16}\.tar", a.file)


MOUNTS = (
    CacheMount("/var/cache/apt", "/var/cache/apt", "base"),
    CacheMount("p,ip", "/pip", "base", "1000", None, "0755"),
)


def test_the_export_helper_tars_every_non_empty_mount_under_the_cap_into_its_last_stage() -> None:
    text = export_dockerfile("busybox:stable", MOUNTS, 1000)
    a, b = (m.file for m in MOUNTS)
    lines = text.splitlines()
    assert lines[0] == "FROM busybox:stable" and lines[2:] == ["FROM scratch", "COPY --from=0 /out /"]
    assert lines[1].startswith(
        'RUN --mount=type=cache,id=/var/cache/apt,target=/dc/0 --mount=type=cache,"id=p,ip",target=/dc/1,uid=1000,'
        "mode=0755 mkdir -p /out && "
    )
    assert f'if [ -z "$(ls -A /dc/0)" ]; then echo "{MARK} {a} empty"; else tar -C /dc/0 -cf /out/{a} . ' in text
    assert f'if [ "$n" -gt 1000 ]; then rm /out/{b}; echo "{MARK} {b} over $n"; else echo "{MARK} {b} saved $n"' in text
    assert lines[1].endswith(f'if [ -z "$(ls -A /out)" ]; then echo "{MARK} - {NOTHING}"; exit 3; fi')


def test_the_export_helper_script_itself_saves_caps_and_says_when_there_is_nothing(tmp_path: Path) -> None:
    """The helper's shell, run here (sh, tar, wc): what it prints is what the runner reads."""
    a, b = (m.file for m in MOUNTS)
    docker = HelperDocker({a: 20000, b: 3000})
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(export_dockerfile("busybox:stable", MOUNTS, 50000))
    output = docker.buildx_build(["--file", str(dockerfile), "--output", "type=registry,name=r:5000/x:m", "."])
    said = parse_mark_lines(output)
    pushed = docker.pushed["type=registry,name=r:5000/x:m"]
    assert said == {a: ("saved", pushed[a]), b: ("saved", pushed[b])} and pushed[a] > 20000
    docker = HelperDocker({a: 45000, b: 3000})
    said = parse_mark_lines(docker.buildx_build(["--file", str(dockerfile), "--output", "type=registry,name=r", "."]))
    assert said[a][0] == "over" and said[a][1] > 50000 and said[b][0] == "saved"
    assert list(docker.pushed["type=registry,name=r"]) == [b]
    docker = HelperDocker({a: 45000})
    with pytest.raises(HelperBuildFailed) as failed:
        docker.buildx_build(["--file", str(dockerfile), "--output", "type=registry,name=r2", "."])  # all over or empty
    assert f"{MARK} - {NOTHING}" in failed.value.output and "type=registry,name=r2" not in docker.pushed


def test_the_restore_helper_fills_only_empty_mounts_from_the_context_or_an_image() -> None:
    text = restore_dockerfile("busybox:stable", MOUNTS)
    lines = text.splitlines()
    assert lines[0] == "FROM busybox:stable" and len(lines) == 3  # one RUN per mount
    first = MOUNTS[0].file
    assert lines[1] == (
        "RUN --mount=type=cache,id=/var/cache/apt,target=/dc/0 --mount=type=bind,target=/dc-in "
        f'if [ ! -f /dc-in/{first} ]; then echo "{MARK} {first} absent"; '
        f'elif [ -n "$(ls -A /dc/0)" ]; then echo "{MARK} {first} kept"; '
        f'else tar -C /dc/0 -xf /dc-in/{first} && echo "{MARK} {first} restored $(wc -c < /dc-in/{first})"; fi'
    )
    pinned = restore_dockerfile("busybox:stable", MOUNTS, "reg:5000/cache:mounts-ruby-main@sha256:abc")
    assert "--mount=type=bind,target=/dc-in,from=reg:5000/cache:mounts-ruby-main@sha256:abc " in pinned


def test_the_restore_output_is_read_from_the_steps_own_lines_not_its_command() -> None:
    output = (
        f'#7 [stage-0 2/3] RUN --mount=... if [ ! -f /dc-in/m-1.tar ]; then echo "{MARK} m-1.tar absent"; fi\n'
        f"#7 0.301 {MARK} m-1.tar restored 20480\n"
        f"#8 0.120 {MARK} m-2.tar kept\n"
    )
    assert parse_mark_lines(output) == {"m-1.tar": ("restored", 20480), "m-2.tar": ("kept", 0)}


# --------------------------------------------------------------------------------------------- plan


def mounts_service(tmp_path: Path, store: RegistryCache | LocalCache | S3Cache | None = None) -> object:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.replace("FROM deps AS final", "FROM deps AS final\nRUN true"))
    kw: dict[str, object] = {"context": tmp_path, "dockerfile": tmp_path / "Dockerfile", "args": {}}
    return service(store, **kw) if store is not None else service(**kw)


def test_cache_mounts_are_off_unless_asked_for(tmp_path: Path) -> None:
    svc = mounts_service(tmp_path)
    plan = make_plan(inputs(svc), BuildOptions())  # type: ignore[arg-type]
    assert plan.services[0].cache_mounts is None
    assert "x-dockercache-cache-mounts" not in plan.bake_definition()
    own = make_plan(inputs(svc, settings=Settings(cache_mounts=True), cache_mounts={"ruby": False}), BuildOptions())  # type: ignore[arg-type]
    assert own.services[0].cache_mounts is None  # the service's own setting wins over [settings]


def test_registry_store_keeps_mounts_per_branch_with_the_default_branch_as_fallback(tmp_path: Path) -> None:
    svc = mounts_service(tmp_path)
    main = make_plan(inputs(svc, cache_mounts={"ruby": True}), BuildOptions()).services[0].cache_mounts  # type: ignore[arg-type]
    assert main is not None and main.kind == "registry"
    assert [m.id for m in main.mounts] == ["/var/cache/apt", "pip", "gems"]  # not the test stage's
    ref = "reg:5000/cache/ruby:mounts-ruby-{}"
    assert main.restore_from == (Place("main", ref.format("main")),)
    assert main.save_to == Place("main", ref.format("main"))
    feature = make_plan(inputs(svc, branch="feature/x", cache_mounts={"ruby": True}), BuildOptions())  # type: ignore[arg-type]
    mounts = feature.services[0].cache_mounts
    assert mounts is not None
    feature_x = "feature-x-217d2bf5"
    assert mounts.restore_from == (Place(feature_x, ref.format(feature_x)), Place("main", ref.format("main")))
    assert mounts.save_to == Place(feature_x, ref.format(feature_x))  # never what the default branch reads
    pr = make_plan(inputs(svc, pull_request="7", cache_mounts={"ruby": True}), BuildOptions()).services[0]  # type: ignore[arg-type]
    assert pr.cache_mounts is not None and pr.cache_mounts.save_to == Place("pr-7", ref.format("pr-7"))
    trusted = Settings(trusted_branches=("release/*",), cache_mounts=True)
    release = make_plan(inputs(svc, branch="release/1", settings=trusted), BuildOptions()).services[0]  # type: ignore[arg-type]
    assert release.cache_mounts is not None and release.cache_mounts.save_to == Place("main", ref.format("main"))
    off = make_plan(inputs(svc, cache_mounts={"ruby": True}), BuildOptions(cache_write=False)).services[0]  # type: ignore[arg-type]
    assert off.cache_mounts is not None and off.cache_mounts.save_to is None
    assert off.cache_mounts.no_save == "cache writes are off" and off.cache_mounts.restore_from


def test_local_store_keeps_mounts_beside_its_directory(tmp_path: Path) -> None:
    svc = mounts_service(tmp_path, LocalCache(type="local", path="cache/dir"))
    plan = make_plan(inputs(svc, root=tmp_path, cache_mounts={"ruby": True}), BuildOptions())  # type: ignore[arg-type]
    mounts = plan.services[0].cache_mounts
    assert mounts is not None and mounts.kind == "local"
    assert mounts.save_to == Place("main", str(tmp_path / "cache" / "dir.mounts" / "ruby" / "main"))


def test_the_s3_store_keeps_mounts_as_a_snapshot_under_its_own_keys(tmp_path: Path) -> None:
    svc = mounts_service(tmp_path, S3Cache(type="s3", bucket="b", prefix="p/"))
    topic = make_plan(inputs(svc, branch="topic", cache_mounts={"ruby": True}), BuildOptions()).services[0]  # type: ignore[arg-type]
    mounts = topic.cache_mounts
    assert mounts is not None and mounts.kind == "s3" and mounts.store == "reg"
    place = "s3://b/p/snapshots/pipeline/{}/ruby/_mounts.json"
    # The store's restore keys, in its order: cache_from, this branch's, the default branch's.
    assert mounts.restore_from == (
        Place("", place.format("latest"), "pipeline/latest"),
        Place("topic", place.format("topic"), "pipeline/topic"),
        Place("main", place.format("main"), "pipeline/main"),
    )
    assert mounts.save_to == Place("topic", place.format("topic"), "pipeline/topic")
    shown = [str(p) for p in mounts.restore_from[:2]]
    assert shown == [place.format("latest"), f"{place.format('topic')} (branch topic)"]
    saved = mounts.to_json()["save_to"]
    assert saved == {"branch": "topic", "location": place.format("topic"), "key": "pipeline/topic"}
    # The same key the store's caches are saved under: a pull request writes its own, never the default's.
    pr = make_plan(inputs(svc, pull_request="7", cache_mounts={"ruby": True}), BuildOptions()).services[0]  # type: ignore[arg-type]
    assert pr.cache_mounts is not None
    assert pr.cache_mounts.save_to == Place("pr-7", place.format("pr-7"), "pipeline/pr-7")
    assert str(pr.targets[-1].caches.step.save).startswith("pipeline/pr-7/")  # type: ignore[union-attr]
    fixed = S3Cache(type="s3", bucket="b", prefix="p", key="shared", cache_from=())
    on_topic = inputs(mounts_service(tmp_path, fixed), branch="topic", cache_mounts={"ruby": True})  # type: ignore[arg-type]
    refused = make_plan(on_topic, BuildOptions())
    shared = refused.services[0].cache_mounts
    assert shared is not None and shared.save_to is None and shared.no_save is not None
    assert "may not write" in shared.no_save and shared.restore_from[0].key == "shared"
    off = make_plan(inputs(svc, cache_mounts={"ruby": True}), BuildOptions(cache_write=False)).services[0]  # type: ignore[arg-type]
    assert off.cache_mounts is not None and off.cache_mounts.no_save == "cache writes are off"


def test_a_native_s3_store_keeps_no_mounts_and_says_why(tmp_path: Path) -> None:
    svc = mounts_service(tmp_path, S3Cache(type="s3", bucket="b", native=True))
    mounts = make_plan(inputs(svc, cache_mounts={"ruby": True}), BuildOptions()).services[0].cache_mounts  # type: ignore[arg-type]
    assert mounts is not None and mounts.kind is None and mounts.save_to is None and not mounts.restore_from
    assert mounts.no_save and "native S3 store" in mounts.no_save


def test_plan_and_plan_bake_show_the_mounts_and_where_they_go(tmp_path: Path) -> None:
    svc = mounts_service(tmp_path)
    settings = Settings(cache_mounts=True, cache_mounts_image="localhost:5000/busybox:stable", cache_mounts_max_mb=64)
    plan = make_plan(inputs(svc, branch="topic", settings=settings), BuildOptions())  # type: ignore[arg-type]
    shown = plan.bake_definition()["x-dockercache-cache-mounts"]["ruby"]
    assert shown["image"] == "localhost:5000/busybox:stable" and shown["max_mb"] == 64
    assert shown["restore_from"][1] == {"branch": "main", "location": "reg:5000/cache/ruby:mounts-ruby-main"}
    assert shown["save_to"] == {"branch": "topic", "location": "reg:5000/cache/ruby:mounts-ruby-topic"}
    assert shown["mounts"][1] == {
        "id": "pip",
        "target": "/root/.cache/pip",
        "stage": "base",
        "uid": "1000",
        "gid": "1000",
        "mode": "0755",
        "file": CacheMount("pip", "", "", "1000", "1000", "0755").file,
    }
    assert plan.to_json()["services"][0]["cache_mounts"] == shown
    text = render_plan(plan)
    assert "  cache mounts: /var/cache/apt (base), pip (base), gems (deps)" in text
    assert "    restore from: reg:5000/cache/ruby:mounts-ruby-topic (branch topic)" in text
    assert "    save to:      reg:5000/cache/ruby:mounts-ruby-topic (branch topic) (after a successful build)" in text
    assert "    note:         base: cache mount /seeded: left out" in text


def test_config_keys_and_their_defaults(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    path = tmp_path / "dockercache.toml"
    path.write_text('[services.app]\ncontext = "."\ncache_mounts = true\n')
    config = load_config(path, {})
    assert config.services["app"].cache_mounts is True
    assert (config.settings.cache_mounts, config.settings.cache_mounts_max_mb) == (False, 512)
    assert config.settings.cache_mounts_image == "busybox:stable"
    path.write_text('[settings]\ncache_mounts_image = "busybox stable"\n[services.app]\ncontext = "."\n')
    with pytest.raises(ConfigError, match=r"settings\.cache_mounts_image: 'busybox stable' is not a valid image"):
        load_config(path, {})


# -------------------------------------------------------------------------------------------- runner


class HelperDocker:
    """Answers the helper builds as BuildKit would. The export helper's own script runs, with ``sh`` on this
    machine: each cache mount is a directory holding one file of the given size (by the mount's archive name),
    ``/out`` a directory that is then exported (``type=local``) or kept as ``pushed`` (``type=registry``)."""

    def __init__(
        self, sizes: dict[str, int], restore_output: str = "", fail: str | None = None, push_fails: bool = False
    ) -> None:
        self.sizes = sizes
        self.restore_output = restore_output
        self.fail = fail
        self.push_fails = push_fails
        """The archive step ran (and said so), then the push failed: the plain progress output echoes the RUN
        command, the words of the "nothing to save" line included."""
        self.builds: list[list[str]] = []
        self.dockerfiles: list[str] = []
        self.digests: dict[str, str] = {}
        self.pushed: dict[str, dict[str, int]] = {}

    def buildx_build(self, argv: Sequence[str], timeout: float = 600.0, env: Mapping[str, str] | None = None) -> str:
        self.builds.append(list(argv))
        dockerfile = Path(argv[argv.index("--file") + 1]).read_text()
        self.dockerfiles.append(dockerfile)
        if self.fail:
            raise EnvironmentProblem(self.fail)
        if "COPY --from=0 /out /" not in dockerfile:
            return self.restore_output
        return self._export(dockerfile, argv[argv.index("--output") + 1])

    def _export(self, dockerfile: str, output: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            run = dockerfile.splitlines()[1].removeprefix("RUN ")
            script = " ".join(w for w in shlex.split(run, posix=False) if not w.startswith("--mount="))
            script = script.replace("/dc/", f"{tmp}/dc/").replace("/out", f"{tmp}/out")
            for index, file in re.findall(r"tar -C /dc/(\d+) -cf /out/(\S+) ", run):
                directory = Path(tmp) / "dc" / index
                directory.mkdir(parents=True)
                if self.sizes.get(file):
                    (directory / "data").write_bytes(b"x" * self.sizes[file])
            proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
            text = f"#5 [stage-0 2/2] RUN {run}\n" + "".join(f"#5 0.1 {line}\n" for line in proc.stdout.splitlines())
            if self.push_fails and proc.returncode == 0:
                text += "ERROR: failed to push: unexpected status from PUT request: 403 Forbidden\n"
                raise HelperBuildFailed("docker buildx build failed: 403 Forbidden", text)
            if proc.returncode != 0:
                raise HelperBuildFailed(f"docker buildx build failed: exit code: {proc.returncode}", text)
            out = Path(tmp) / "out"
            if output.startswith("type=local,dest="):
                shutil.copytree(out, output.removeprefix("type=local,dest="))
            else:
                self.pushed[output] = {p.name: p.stat().st_size for p in out.iterdir()}
        return text

    def manifest_digest(self, ref: str) -> str | None:
        return self.digests.get(ref)


def run_plan(tmp_path: Path, store: RegistryCache | LocalCache | S3Cache, max_mb: int = 1) -> object:
    svc = mounts_service(tmp_path, store)
    settings = Settings(cache_mounts=True, cache_mounts_max_mb=max_mb)
    return make_plan(inputs(svc, root=tmp_path, settings=settings), BuildOptions())  # type: ignore[arg-type]


def ok_results(plan: object) -> dict[str, StageResult]:
    return {t.name: StageResult(t.service, t.stage, None, t.final, status="ok") for t in plan.targets}  # type: ignore[attr-defined]


def test_a_mount_over_the_cap_is_not_saved_with_one_warning_and_the_others_are(tmp_path: Path) -> None:
    plan = run_plan(tmp_path, RegistryCache(type="registry", ref="reg:5000/cache/{service}"))
    mounts = plan.services[0].cache_mounts  # type: ignore[attr-defined]
    apt, pip, _gems = mounts.mounts
    docker = HelperDocker({apt.file: 2 << 20, pip.file: 300})  # gems: empty, so not exported
    warnings: list[str] = []
    err = io.StringIO()
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=err), warnings)
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    assert warnings == ["ruby: cache mounts: /var/cache/apt not saved: 2.1 MB is over settings.cache_mounts_max_mb (1)"]
    (export,) = docker.builds  # one build archives and pushes
    assert export[:8] == [
        *("buildx", "build", "--progress", "plain"),
        *("--builder", "dockercache", "--no-cache", "--provenance=false"),
    ]
    output = "type=registry,name=reg:5000/cache/ruby:mounts-ruby-main,compression=zstd,oci-mediatypes=true"
    assert export[export.index("--output") + 1] == output
    assert list(docker.pushed[output]) == [pip.file]  # not the one over the cap, not the empty one
    size = docker.pushed[output][pip.file]
    report = helper.reports["ruby"].to_json()
    assert report["saved"] == {"pip": size} and report["saved_bytes"] == size
    assert report["saved_to"] == "reg:5000/cache/ruby:mounts-ruby-main (branch main)"
    result = ServiceResult("ruby")
    helper.attach([result])
    assert result.to_json()["cache_mounts"]["saved"] == {"pip": size}
    assert f"ruby: cache mounts: saved 1 of 3 ({size / 1e3:.1f} kB)" in err.getvalue()


def test_nothing_is_saved_after_a_failed_build_or_when_every_mount_is_empty(tmp_path: Path) -> None:
    plan = run_plan(tmp_path, RegistryCache(type="registry", ref="reg:5000/cache/{service}"))
    docker = HelperDocker({})
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=io.StringIO()), [])
    failed = ok_results(plan)
    failed["ruby-final"].status = "failed"
    helper.save(plan, failed)  # type: ignore[arg-type]
    assert docker.builds == []
    err = io.StringIO()
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=err), [])
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    assert len(docker.builds) == 1 and docker.pushed == {}  # the helper stopped itself: no empty image pushed
    assert "ruby: cache mounts: nothing to save (every mount empty or too large)" in err.getvalue()
    assert helper.reports["ruby"].saved_to is None


def test_mounts_are_not_saved_again_when_every_step_mounting_them_came_from_cache(tmp_path: Path) -> None:
    plan = run_plan(tmp_path, RegistryCache(type="registry", ref="reg:5000/cache/{service}"), max_mb=10)
    mounts: MountsPlan = plan.services[0].cache_mounts  # type: ignore[attr-defined]
    assert mounts.stages == ("base", "deps")
    docker = HelperDocker({mounts.mounts[1].file: 1000})
    err = io.StringIO()
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=err), [])
    cached = {"ruby-final": {"base": StepCount(2, 2), "deps": StepCount(3, 3), "final": StepCount(1, 0)}}
    helper.save(plan, ok_results(plan), cached)  # type: ignore[arg-type]
    assert docker.builds == [] and helper.reports["ruby"].to_json()["unchanged"] is True
    assert "not saved again: every step that mounts them came from the layer cache" in err.getvalue()
    # One step of a stage that mounts them ran (the final stage's does not count): saved.
    for ran in ({"ruby-deps": {"deps": StepCount(3, 2)}}, {"ruby-base": {"base": StepCount(2, 1)}}):
        helper = CacheMounts(docker, Console(out=io.StringIO(), err=io.StringIO()), [])
        helper.save(plan, ok_results(plan), {**cached, **ran})  # type: ignore[arg-type]
        assert helper.reports["ruby"].saved_to is not None and not helper.reports["ruby"].unchanged
    # Nothing attributed to those stages (steps unknown): saved, never taken for "unchanged".
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=io.StringIO()), [])
    helper.save(plan, ok_results(plan), {"ruby-final": {"final": StepCount(1, 1)}})  # type: ignore[arg-type]
    assert helper.reports["ruby"].saved_to is not None


def test_the_local_store_swaps_a_complete_version_into_place_and_restores_from_it(tmp_path: Path) -> None:
    plan = run_plan(tmp_path, LocalCache(type="local", path="store"), max_mb=10)
    mounts: MountsPlan = plan.services[0].cache_mounts  # type: ignore[attr-defined]
    pip = mounts.mounts[1]
    docker = HelperDocker({pip.file: 1000})
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=io.StringIO()), [])
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    final = tmp_path / "store.mounts" / "ruby" / "main"
    size = (final / pip.file).stat().st_size
    assert final.is_symlink() and size > 1000  # a tar of the mount's 1000-byte file
    index = json.loads((final / INDEX).read_text())
    assert index["mounts"]["pip"]["bytes"] == size and index["mounts"]["pip"]["file"] == pip.file
    versions = sorted(p.name for p in final.parent.iterdir() if p.name != "main")
    assert len(versions) == 2 and all(v.startswith("main.v-") for v in versions)  # the live one and the one before
    docker.restore_output = f"#9 0.2 {MARK} {pip.file} restored 1000\n"
    restore = CacheMounts(docker, Console(out=io.StringIO(), err=io.StringIO()), [])
    restore.restore(plan)  # type: ignore[arg-type]
    argv = docker.builds[-1]
    assert argv[-1] == str(final.resolve())  # the version itself, never swapped under the build
    assert argv[argv.index("--output") + 1] == "type=cacheonly" and "--no-cache" in argv
    report = restore.reports["ruby"].to_json()
    assert report["restored"] == {"pip": 1000} and report["restored_from"] == f"{final} (branch main)"


def test_a_registry_restore_takes_this_branch_then_the_default_branchs_image_pinned(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\nRUN --mount=type=cache,target=/c true\n")
    svc = service(context=tmp_path, dockerfile=tmp_path / "Dockerfile", args={})
    plan = make_plan(inputs(svc, branch="topic", settings=Settings(cache_mounts=True)), BuildOptions())  # type: ignore[arg-type]
    file = CacheMount("/c", "/c", "final").file
    docker = HelperDocker({}, restore_output=f"#5 0.1 {MARK} {file} kept\n")
    docker.digests["reg:5000/cache/ruby:mounts-ruby-main"] = "sha256:abc"
    err = io.StringIO()
    helper = CacheMounts(docker, Console(out=io.StringIO(), err=err), [])
    helper.restore(plan)
    argv = docker.builds[0]
    dockerfile = Path(argv[argv.index("--file") + 1])
    assert not dockerfile.exists()  # a temporary directory, removed
    assert helper.reports["ruby"].kept == ["/c"] and helper.reports["ruby"].restored == {}
    assert "restored 0 of 1 (0.0 kB) from reg:5000/cache/ruby:mounts-ruby-main (branch main), 1 kept" in err.getvalue()
    docker.digests.clear()
    helper.restore(plan)
    assert len(docker.builds) == 1 and "none saved yet" in err.getvalue()


class FakeEndpoint:
    """The run's endpoint as the mounts see it: an address, and the snapshots it found (or why not)."""

    address = "127.0.0.1:47311"

    def __init__(self, snapshots: dict[str, object]) -> None:
        self.snapshots = snapshots
        self.asked: list[str] = []
        self.permits: list[tuple[str, str]] = []

    def snapshot(self, name: object) -> object:
        self.asked.append(str(name))
        return self.snapshots.get(str(name))

    def permit(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.permits.extend(pairs)


def test_an_s3_store_restores_and_saves_the_mounts_through_the_runs_endpoint(tmp_path: Path) -> None:
    plan = run_plan(tmp_path, S3Cache(type="s3", bucket="b"), max_mb=10)
    mounts: MountsPlan = plan.services[0].cache_mounts  # type: ignore[attr-defined]
    pip = mounts.mounts[1]
    broken = "snapshot pipeline/latest/ruby/_mounts: blob sha256:00 is missing from s3://b/dockercache"
    endpoint = FakeEndpoint({"pipeline/latest/ruby/_mounts": broken, "pipeline/main/ruby/_mounts": object()})
    docker = HelperDocker({pip.file: 1000}, restore_output=f"#9 0.2 {MARK} {pip.file} restored 1000\n")
    warnings: list[str] = []
    console = Console(out=io.StringIO(), err=io.StringIO())
    helper = CacheMounts(docker, console, warnings, lambda name: endpoint if name == "reg" else None)  # type: ignore[arg-type,return-value]
    helper.restore(plan)  # type: ignore[arg-type]
    assert endpoint.asked == ["pipeline/latest/ruby/_mounts", "pipeline/main/ruby/_mounts"]
    assert warnings == [f"ruby: cache mounts: {broken}: ignored"]  # a broken snapshot is a miss, said once
    # Bind-mounted from the endpoint by tag (BuildKit then fetches the blobs from S3), nothing in the context.
    assert "from=127.0.0.1:47311/pipeline/main/ruby:_mounts" in docker.dockerfiles[0]
    report = helper.reports["ruby"].to_json()
    assert report["restored_from"] == "s3://b/dockercache/snapshots/pipeline/main/ruby/_mounts.json (branch main)"
    assert report["restored"] == {"pip": 1000}
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    (push,) = docker.builds[1:]
    output = "type=registry,name=127.0.0.1:47311/pipeline/main/ruby:_mounts,compression=zstd,oci-mediatypes=true"
    assert push[push.index("--output") + 1] == output
    assert "--provenance=false" in push  # one image manifest: the snapshot names only the archives' blobs
    assert endpoint.permits == [("pipeline/main/ruby", "_mounts")]  # the one tag the save may write, granted
    # The store could not be opened (it warned then): no helper build, one line each way.
    docker.builds.clear()
    err = io.StringIO()
    gone = CacheMounts(docker, Console(out=io.StringIO(), err=err), warnings, lambda name: None)
    gone.restore(plan)  # type: ignore[arg-type]
    gone.save(plan, ok_results(plan))  # type: ignore[arg-type]
    assert docker.builds == [] and err.getvalue().count("ruby: cache mounts: cache store 'reg' unavailable") == 2
    assert len(warnings) == 1


def test_a_push_that_fails_after_the_archive_is_not_taken_for_nothing_to_save(tmp_path: Path) -> None:
    """The helper's output echoes its own RUN line, which holds the "nothing to save" mark's words: only the
    script's own lines count, so a failed push is a warning naming it, not "nothing to save"."""
    plan = run_plan(tmp_path, RegistryCache(type="registry", ref="reg:5000/cache"))
    mounts: MountsPlan = plan.services[0].cache_mounts  # type: ignore[attr-defined]
    warnings: list[str] = []
    err = io.StringIO()
    docker = HelperDocker({m.file: 1000 for m in mounts.mounts}, push_fails=True)
    CacheMounts(docker, Console(err=err), warnings).save(plan, ok_results(plan))  # type: ignore[arg-type]
    assert warnings == ["ruby: cache mounts: not saved: docker buildx build failed: 403 Forbidden"]
    assert "nothing to save" not in err.getvalue()


def test_a_helper_build_that_fails_is_a_warning_never_a_failed_build(tmp_path: Path) -> None:
    plan = run_plan(tmp_path, LocalCache(type="local", path="store"))
    warnings: list[str] = []
    helper = CacheMounts(
        HelperDocker({}, fail="docker buildx build failed: no such image"), Console(err=io.StringIO()), warnings
    )
    helper.save(plan, ok_results(plan))  # type: ignore[arg-type]
    assert warnings == ["ruby: cache mounts: not saved: docker buildx build failed: no such image"]


def test_swap_into_place_replaces_a_stray_directory(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / INDEX).write_text("{}")
    final = tmp_path / "a" / "main"
    final.mkdir(parents=True)
    swap_into_place(source, final)
    assert final.is_symlink() and (final / INDEX).read_text() == "{}"
