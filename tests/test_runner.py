"""dockercache.run.runner in process: fakes for Docker, S3 and the Buildkite agent (the real stack is tests/e2e).

The fake Docker answers a bake as BuildKit would in rawjson: a vertex per Dockerfile step of every target
(prefixed with the target when there are several), an export vertex per cache sink, a local export directory
where the sink is ``type=local``, the metadata file, and a failing step where the test asks for one.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dockercache.config.caches import LocalCache, RegistryCache, S3Cache
from dockercache.config.model import BuilderConfig, RegistryLogin, Settings
from dockercache.errors import BuildFailed, CacheError, EnvironmentProblem, Interrupted, StoreError
from dockercache.model import BuilderPlan, BuildOptions, Plan
from dockercache.output.console import Console
from dockercache.planning.plan import PlanInputs, make_plan
from dockercache.planning.resolve import ResolvedService
from dockercache.run.runner import Runner
from dockercache.stores.s3.endpoint import Endpoint
from dockercache.stores.s3.snapshots import BlobStore

from .conftest import MemoryStore, digest_of, export, save_snapshot

STAMP = "2026-11-26T00:00:0{}.000000000Z"
GRAPHS = {
    "base": ("base",),
    "deps": ("base", "deps"),
    "test": ("base", "deps", "test"),
    "final": ("base", "deps", "final"),
    "stage-0": ("stage-0",),  # a single-stage Dockerfile's one stage, unnamed
}
STEPS = {"base": 2, "deps": 2, "test": 1, "final": 2, "stage-0": 2}


@dataclass
class Log:
    events: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.events.append(text)

    def index(self, prefix: str) -> int:
        return next(i for i, e in enumerate(self.events) if e.startswith(prefix))


@dataclass
class FakeDocker:
    log: Log
    fail_stage: str | None = None
    """The Dockerfile stage whose last step fails in the first bake."""
    cached: bool = False
    race_once: bool = False
    image_race_once: bool = False
    rescue_race_once: bool = False
    image_race_error: str = 'image "docker.io/library/app:abc123": already exists'
    stall: int = 0
    """The first ``stall`` bakes fetch a blob that stops moving half-way and wait until stopped."""
    push_fails: bool = False
    """Every bake fails pushing its image: the image registry refuses connections."""
    before_manifest: list[Any] = field(default_factory=list)
    """Called once each (in turn) between a cache push's blob uploads and its manifest PUT (a prune, say)."""
    """The first bake fails as the containerd image store does when another job stored the same name at once."""
    incomplete_local_export: bool = False
    bake_envs: list[Any] = field(default_factory=list)
    bake_files: list[tuple[Path, int]] = field(default_factory=list)
    """Each bake file and its directory, with their permission bits while bake ran."""
    """The first bake fails as BuildKit 0.13's shared-vertex race makes it (moby/buildkit#3635)."""
    blob_error_once: bool = False
    """The first bake fails fetching a blob of its first registry cache source, as BuildKit does on a 500."""
    daemon: bool = True
    builders: dict[str, str] = field(default_factory=dict)
    bakes: list[dict[str, Any]] = field(default_factory=list)
    unnamed: str = ""
    """How steps of an unnamed stage are named: ``[2/3] RUN ...`` (""), or with this label (``[stage-0 2/3]``)."""
    imports: bool = False
    """A vertex per cache source of every target (``importing cache manifest from REF``), read successfully."""
    cancel_first_step: bool = False
    """The first step of the first target is cancelled (a session that shared it went away), then solved again."""
    interrupt_after: int | None = None
    """An interrupt (SIGINT) arrives after this many vertexes."""

    def ping(self) -> None:
        self.log.add("docker ping")
        if not self.daemon:
            raise EnvironmentProblem("Docker daemon not reachable: no such socket")

    def login(self, server: str, username: str, password: str) -> None:
        self.log.add(f"docker login {server}")

    def builder_driver(self, name: str) -> str | None:
        return self.builders.get(name)

    def create_builder(self, plan: BuilderPlan) -> None:
        self.log.add(f"docker buildx create {plan.name}")
        self.builders[plan.name] = plan.driver

    def read_manifest(self, ref: str) -> dict[str, Any] | None:
        return getattr(self, "manifests", {}).get(ref)

    def builder_platforms(self, name: str) -> tuple[str, ...]:
        self.log.add(f"docker buildx inspect {name}")
        return getattr(self, "platforms", ("linux/amd64", "linux/amd64/v2"))

    def containerd_image_store(self) -> bool:
        return getattr(self, "containerd", True)

    def prune_builder(self, argv: Sequence[str]) -> str:
        self.log.add(f"docker {' '.join(argv)}")
        return "Total:\t12.5MB"

    def remove_builder(self, name: str) -> None:
        self.log.add(f"docker buildx rm {name}")
        self.builders.pop(name, None)

    def bootstrap_builder(self, name: str) -> None:
        self.log.add(f"docker buildx inspect --bootstrap {name}")
        if getattr(self, "boot_fails", False):
            raise EnvironmentProblem(f"builder '{name}' cannot boot: failed to pull moby/buildkit:buildx-stable-1")

    def bake(self, argv: Sequence[str], env: Any = None) -> Iterator[str]:
        if len(self.bakes) < self.stall:
            self.bakes.append(json.loads(Path(argv[argv.index("--file") + 1]).read_text()))
            self.log.add("docker buildx bake (stalls)")
            return StallingBake()
        return self._run_bake(argv, env)

    def _run_bake(self, argv: Sequence[str], env: Any = None) -> Iterator[str]:
        self.bake_envs.append(env)
        bake_file = Path(argv[argv.index("--file") + 1])
        self.bake_files.append((bake_file, stat.S_IMODE(bake_file.stat().st_mode)))
        self.bake_files.append((bake_file.parent, stat.S_IMODE(bake_file.parent.stat().st_mode)))
        definition = json.loads(bake_file.read_text())
        self.bakes.append(definition)
        assert argv[-1] == "default"
        targets = {name: definition["target"][name] for name in definition["group"]["default"]["targets"]}
        self.log.add(f"docker buildx bake {' '.join(targets)}")
        try:
            yield from self._bake(argv, definition, targets)
        finally:
            self.log.add("docker buildx bake ended")

    def _bake(self, argv: Sequence[str], definition: dict[str, Any], targets: dict[str, Any]) -> Iterator[str]:
        first = len(self.bakes) == 1
        if first and self.race_once:
            error = "failed to compute cache key: failed to get state for index 0 on [deps 1/2] COPY x /x"
            yield json.dumps(
                {"vertexes": [{"digest": "sha256:race", "name": "[app-deps deps 1/2] COPY x /x", "error": error}]}
            )
            yield f"ERROR: failed to solve: {error}\n"
            raise BuildFailed(1, f"ERROR: failed to solve: {error}")
        if self.push_fails:
            error = (
                "failed to push reg.test/app:abc123: failed to do request: Head "
                f'"https://reg.test/v2/app/blobs/sha256:{"cd" * 32}": '
                "dial tcp 10.0.0.9:443: connect: connection refused"
            )
            yield json.dumps({"vertexes": [{"digest": "sha256:export", "name": "exporting to image", "error": error}]})
            raise BuildFailed(1, f"ERROR: failed to solve: {error}")
        if first and self.image_race_once:
            error = self.image_race_error
            yield json.dumps({"vertexes": [{"digest": "sha256:export", "name": "exporting to image", "error": error}]})
            raise BuildFailed(1, f"ERROR: failed to solve: {error}")
        if len(self.bakes) == 2 and self.rescue_race_once:  # the rescue's cache export, on BuildKit 0.13's race
            error = (
                "failed to commit c44c8zzdp2 to 6bhu8i9yz6 during finalize: failed to stat active key during commit: "
                "snapshot c44c8zzdp2 does not exist: not found"
            )
            yield json.dumps({"vertexes": [{"digest": "sha256:cache", "name": "exporting cache", "error": error}]})
            raise BuildFailed(1, f"ERROR: failed to solve: {error}")
        sources = [s for t in targets.values() for s in t.get("cache-from", [])]
        if first and self.blob_error_once and sources:
            ref = dict(part.split("=", 1) for part in sources[0].split(","))["ref"]
            host, repo = ref.split("/", 1)
            error = (
                "failed to copy: httpReadSeeker: failed open: unexpected status code "
                f"https://{host}/v2/{repo.rsplit(':', 1)[0]}/blobs/sha256:{'ab' * 32}: 500 Internal Server Error"
            )
            yield json.dumps({"vertexes": [{"digest": "sha256:export", "name": "exporting to image", "error": error}]})
            raise BuildFailed(1, f"ERROR: failed to solve: {error}")
        failing = self.fail_stage if first else None
        prefix = len(targets) > 1
        metadata: dict[str, Any] = {}
        failed = False
        sent = 0
        for name, target in targets.items():
            stage = target.get("target", "stage-0")
            label = f"{name} " if prefix else ""
            for source in target.get("cache-from", []) if self.imports else []:
                attrs = dict(part.split("=", 1) for part in source.split(","))
                ref = attrs.get("ref") or attrs.get("src")
                name_of_import = f"{'[' + name + '] ' if prefix else ''}importing cache manifest from {ref}"
                done = {"started": STAMP.format(1), "completed": STAMP.format(1)}
                yield json.dumps(
                    {"vertexes": [{"digest": f"sha256:{name}-import-{ref}", "name": name_of_import, **done}]}
                )
            for s in GRAPHS[stage]:
                for n in range(1, STEPS[s] + 1):
                    stage_name = (f"{self.unnamed} " if self.unnamed else "") if s == "stage-0" else f"{s} "
                    vertex: dict[str, Any] = {
                        "digest": f"sha256:{name}-{s}-{n}",
                        "name": f"[{label}{stage_name}{n + 1}/{STEPS[s] + 1}] RUN step {n}",
                        "started": STAMP.format(1),
                        "completed": STAMP.format(2),
                        "cached": self.cached or not first,
                    }
                    if self.cancel_first_step and sent == 0:
                        cancelled = {**vertex, "cached": False, "error": "context canceled"}
                        yield json.dumps({"vertexes": [cancelled]}) + "\n"
                        vertex = {**vertex, "started": STAMP.format(3), "completed": STAMP.format(4)}
                    if self.interrupt_after is not None and sent == self.interrupt_after:
                        raise Interrupted(signal.SIGINT)
                    sent += 1
                    if failing == s and n == STEPS[s]:
                        vertex["error"] = 'process "/bin/sh -c step" did not complete successfully: exit code: 3'
                        failed = True
                    yield json.dumps({"vertexes": [vertex]}, indent=2) + "\n"
                    if failing == s and n == STEPS[s]:
                        log = {"vertex": vertex["digest"], "data": "dGVzdHMgZmFpbGVkCg=="}  # "tests failed"
                        yield json.dumps({"logs": [log]}) + "\n"
            for sink in target.get("cache-to", []):
                attrs = dict(part.split("=", 1) for part in sink.split(","))
                if not failed and attrs["type"] == "local":
                    export(Path(attrs["dest"]), f"{name} manifest".encode(), f"{name} layer".encode())
                    if self.incomplete_local_export:  # blobs written, the index never was
                        (Path(attrs["dest"]) / "index.json").unlink()
                pushed = None
                if not failed and attrs["type"] == "registry" and attrs["ref"].startswith("127.0.0.1:"):
                    hook = self.before_manifest.pop(0) if self.before_manifest else None
                    pushed = push_cache(attrs["ref"], name, self.bake_envs[-1] or {}, hook)
                export_vertex: dict[str, Any] = {
                    "digest": f"sha256:{name}-export",
                    "name": f"{'[' + name + '] ' if prefix else ''}exporting cache to {attrs['type']}",
                    "started": STAMP.format(2),
                    "completed": STAMP.format(3),
                }
                if failed:
                    export_vertex["error"] = "context canceled"
                elif pushed:
                    export_vertex["error"] = pushed
                yield json.dumps({"vertexes": [export_vertex]}) + "\n"
            if "tags" in target:
                metadata[name] = {"containerimage.digest": "sha256:" + "ab" * 32}
        if failed:
            yield "ERROR: failed to solve: exit code: 3\n"
            raise BuildFailed(1, "ERROR: failed to solve")
        Path(argv[argv.index("--metadata-file") + 1]).write_text(json.dumps(metadata))


def registry_login(host: str, env: Mapping[str, str]) -> dict[str, str]:
    """The Authorization header BuildKit sends ``host``: buildx's credentials for it, from the Docker
    configuration the run gave bake (``DOCKER_CONFIG``; its credential helper on bake's ``PATH``)."""
    if "DOCKER_CONFIG" not in env:
        return {}
    config = json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text())
    helper = config.get("credHelpers", {}).get(host)
    if helper is None:
        return {}
    out = subprocess.run(
        [f"docker-credential-{helper}", "get"], input=host, capture_output=True, text=True, env={"PATH": env["PATH"]}
    )
    answer = json.loads(out.stdout)
    token = base64.b64encode(f"{answer['Username']}:{answer['Secret']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class StallingBake:
    """A bake whose cache blob download stops half-way (a half-dead connection): it waits until stopped."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.started = time.monotonic()
        blob = {"id": "sha256:" + "ef" * 32, "vertex": "sha256:deps-step", "current": 512, "total": 4096}
        step = {"digest": "sha256:deps-step", "name": "[deps 2/2] RUN step", "started": STAMP.format(1)}
        self.item = json.dumps({"vertexes": [step], "statuses": [blob]}) + "\n"

    def __iter__(self) -> StallingBake:
        return self

    def __next__(self) -> str:
        """The same status again and again (BuildKit reports an open fetch every 150 ms), until stopped."""
        if self.stopped.wait(0.05):
            raise BuildFailed(130, "ERROR: context canceled")
        assert time.monotonic() - self.started < 30, "the watchdog never stopped the stalled bake"
        return self.item

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        pass


def push_cache(ref: str, name: str, env: Mapping[str, str], between: Any = None) -> str | None:
    """Push a two-blob cache to the S3 store's endpoint as BuildKit does (blobs, then the manifest by tag, with
    the run's credentials for it); returns the error BuildKit would report, or None."""
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    layer, config = f"{name} layer".encode(), f"{name} config".encode()
    login = registry_login(host, env)

    def call(method: str, path: str, body: bytes, content_type: str = "application/octet-stream") -> str | None:
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request(method, path, body=body, headers={"Content-Type": content_type, **login})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        return None if response.status in (201, 202) else f"unexpected status {response.status}: {text}"

    for data in (layer, config):
        problem = call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest_of(data)}", data)
        if problem:
            return problem
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": digest_of(config), "size": 13},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": digest_of(layer), "size": 1}],
    }
    manifest["config"]["size"], manifest["layers"][0]["size"] = len(config), len(layer)  # type: ignore[index]
    if between is not None:
        between()
    return call("PUT", f"/v2/{repo}/manifests/{tag}", json.dumps(manifest).encode(), manifest["mediaType"])  # type: ignore[arg-type]


@dataclass
class FakeAgent:
    log: Log
    meta: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, tuple[str, str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def meta_data_get(self, key: str) -> str | None:
        self.log.add(f"agent meta-data get {key}")
        return self.meta.get(key)

    def meta_data_set(self, key: str, value: str) -> None:
        self.log.add(f"agent meta-data set {key}")
        self.meta[key] = value

    def annotate(self, body: str, style: str, context: str, append: bool = False) -> None:
        self.log.add(f"agent annotate {context} {style}")
        self.annotations[context] = (style, body)


@dataclass
class LoggedStore(MemoryStore):
    log: Log = field(default_factory=Log)

    def get_snapshot(self, name: str) -> bytes | None:
        self.log.add(f"s3 get {name}")
        return super().get_snapshot(name)

    def put_snapshot(self, name: str, body: bytes) -> None:
        self.log.add(f"s3 put {name}")
        super().put_snapshot(name, body)


def resolved(store: Any, stages: tuple[str, ...] = ("base", "deps", "test", "final")) -> ResolvedService:
    return ResolvedService(
        name="app",
        context=Path("/src"),
        dockerfile=Path("/src/Dockerfile"),
        stages=stages,
        final_target="final",
        args={},
        image="reg.test/app",
        tags=(),
        push_stages=(),
        stage_tag="{stage}-{tag}",
        store_name="cache",
        store=store,
        metadata_key="app-image",
        graphs={s: GRAPHS[s] for s in stages},
    )


def plan_for(
    store: Any,
    tmp_path: Path,
    settings: Settings | None = None,
    options: BuildOptions | None = None,
    service: ResolvedService | None = None,
    **builder: Any,
) -> Plan:
    inputs = PlanInputs(
        services=(service or resolved(store),),
        builder=BuilderConfig(name="default", driver="docker", **builder) if not builder else BuilderConfig(**builder),
        settings=settings or Settings(),
        root=tmp_path,
        commit="abc123",
        branch="main",
        default_branch="main",
        on_ci=True,
        pipeline="pipe",
        job_id="job1",
    )
    return make_plan(inputs, options or BuildOptions())


@dataclass
class World:
    log: Log
    docker: FakeDocker
    agent: FakeAgent
    store: LoggedStore
    runner: Runner
    err: list[str]


@pytest.fixture
def world(tmp_path: Path) -> World:
    import io

    log = Log()
    docker = FakeDocker(log)
    agent = FakeAgent(log)
    store = LoggedStore(log=log)
    stream = io.StringIO()

    def blob_store(name: str, config: S3Cache) -> BlobStore:
        return store  # type: ignore[return-value]

    runner = Runner(
        docker,  # type: ignore[arg-type]
        Console(out=io.StringIO(), err=stream),
        agent,  # type: ignore[arg-type]
        blob_store=blob_store,
    )
    world = World(log, docker, agent, store, runner, [])
    world.err = stream  # type: ignore[assignment]
    return world


S3 = S3Cache(type="s3", bucket="b", key="{pipeline}/{branch}")


def test_s3_restores_first_what_an_old_plugin_step_recorded(world: World, tmp_path: Path) -> None:
    """The old docker-cache plugin's step wrote ``<metadata_key>-s3`` (its hooks/command, ``pull_image``): without
    dockercache's own key, a later step restores that key first, as the old plugin's next step did."""
    world.agent.meta["app-image-s3"] = "pipe/0123456789abcdef0123456789abcdef01234567"
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 0, result.error
    log = world.log
    asked = log.index("agent meta-data get app-image-s3")
    assert log.index("agent meta-data get dockercache-s3-key-app") < asked
    assert (
        asked
        < log.index("s3 get pipe/0123456789abcdef0123456789abcdef01234567/app/test")
        < log.index("s3 get pipe/main/app/test")
    )


def test_s3_run_order_restore_bake_save_then_meta_data(world: World, tmp_path: Path) -> None:
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 0, result.error
    log = world.log
    restore = log.index("s3 get pipe/main/app/test")
    assert log.index("agent meta-data get dockercache-s3-key-app") < restore < log.index("docker buildx bake")
    # Snapshots are written through the endpoint while bake runs: only the targets that run write.
    saves = [e for e in log.events[log.index("docker buildx bake") :] if e.startswith("s3 put")]
    assert sorted(saves) == ["s3 put pipe/main/app/final", "s3 put pipe/main/app/test"]
    assert log.index("agent meta-data set") > max(i for i, e in enumerate(log.events) if e.startswith("s3 put"))
    assert world.agent.meta == {
        "app-image": "reg.test/app:abc123",
        "dockercache-s3-key-app": "pipe/main",
        "app-image-s3": "pipe/main",  # the old docker-cache plugin's <metadata_key>-s3, for its later steps
    }
    # --json tells every stage's S3 traffic, none (nothing fetched: the fake bake fetches no blob) too.
    stages = [stage for svc in result.to_json()["services"] for stage in svc["stages"]]
    assert stages and all(stage["s3"] is not None and stage["s3"]["down"]["objects"] == 0 for stage in stages)
    # The leaves' snapshots hold the stages they build on (mode=max).
    assert sorted(world.store.snapshots) == ["pipe/main/app/final", "pipe/main/app/test"]
    stages = {s.stage: s for s in result.services[0].stages}
    assert stages["final"].digest == "sha256:" + "ab" * 32 and stages["final"].pushed
    assert stages["test"].s3_saved == "pipe/main/app/test"
    assert stages["deps"].s3_saved is None and stages["deps"].cache_written == "pipe/main/app/test"
    # One bake for the whole service: its leaves, concurrently; every stage is a target of the file.
    (bake,) = world.docker.bakes
    assert bake["group"]["default"]["targets"] == ["app-test", "app-final"]
    assert list(bake["target"]) == ["app-base", "app-deps", "app-test", "app-final"]


def test_each_step_counts_once_in_its_own_target(world: World, tmp_path: Path) -> None:
    result = world.runner.run(plan_for(RegistryCache(type="registry", ref="127.0.0.1:9/c"), tmp_path))
    counts = {s.stage: (s.cached, s.total) for s in result.services[0].stages}
    assert counts == {"base": (0, 2), "deps": (0, 2), "test": (0, 1), "final": (0, 2)}


def test_a_failing_target_keeps_the_caches_of_what_succeeded(world: World, tmp_path: Path) -> None:
    world.docker.fail_stage = "test"
    local = LocalCache(type="local", path="cache")
    result = world.runner.run(plan_for(local, tmp_path))
    assert result.exit_code == 1
    assert result.error is not None and result.error.startswith("app/test: build failed: [test 2/2] RUN step 1")
    assert "exit code: 3" in result.error
    # A second bake, cache only, of the largest stage that does not build on the failed one.
    _, rescue = world.docker.bakes
    assert list(rescue["target"]) == ["app-final"] and rescue["group"]["default"]["targets"] == ["app-final"]
    assert all(t["output"] == ["type=cacheonly"] and "tags" not in t for t in rescue["target"].values())
    stages = {s.stage: s for s in result.services[0].stages}
    assert stages["test"].status == "failed" and stages["test"].cache_written is None
    kept = ("base", "deps", "final")
    assert {s: stages[s].status for s in kept} == dict.fromkeys(kept, "cancelled")
    final_dir = str(tmp_path / "cache" / "app" / "final")
    assert {s: stages[s].cache_written for s in kept} == dict.fromkeys(kept, final_dir)
    assert (tmp_path / "cache" / "app" / "final" / "index.json").is_file()
    assert not (tmp_path / "cache" / "app" / "test").exists()
    assert not stages["final"].pushed
    # Nothing recorded for later steps; the annotation says it failed; the failing step's output is shown.
    assert world.agent.meta == {}
    assert world.agent.annotations["dockercache-app"][0] == "error"
    err = world.err.getvalue()  # type: ignore[attr-defined]
    assert "==> output of [test 2/2] RUN step 1 (target app-test)" in err and "tests failed" in err
    closing = result.services[0].closing_line()
    assert "FAILED at test" in closing and "caches kept: base, deps, final" in closing
    from dockercache.output.report import render_table

    rows = {line.split()[1]: line.split() for line in render_table(result).splitlines()[1:]}
    assert rows["test"][3] == "failed" and all(rows[s][3] == "cancelled" for s in kept), rows


def test_a_rescue_that_meets_buildkits_snapshot_race_saves_again(world: World, tmp_path: Path) -> None:
    """BuildKit 0.13 sometimes loses a snapshot it is committing while the failed run's export is cancelled
    (``failed to stat active key during commit: snapshot ... does not exist``): the rescue runs once more."""
    world.docker.fail_stage = "test"
    world.docker.rescue_race_once = True
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 1 and result.error is not None and result.error.startswith("app/test: build failed")
    assert [b["group"]["default"]["targets"] for b in world.docker.bakes] == [
        ["app-test", "app-final"],
        ["app-final"],
        ["app-final"],
    ]
    stages = {s.stage: s for s in result.services[0].stages}
    assert stages["final"].cache_written == str(tmp_path / "cache" / "app" / "final")
    assert any("lost a snapshot" in w and "saving the caches again" in w for w in result.warnings), result.warnings


def test_a_failing_shared_stage_rescues_only_what_does_not_build_on_it(world: World, tmp_path: Path) -> None:
    world.docker.fail_stage = "deps"
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 1
    assert result.error is not None and result.error.startswith("app/deps: build failed: [deps 3/3] RUN step 2")
    assert [b["group"]["default"]["targets"] for b in world.docker.bakes] == [["app-test", "app-final"], ["app-base"]]
    failed = [s.stage for s in result.services[0].stages if s.status == "failed"]
    assert failed == ["deps", "test", "final"]
    base = result.services[0].stages[0]
    assert base.status == "cancelled" and base.cache_written == str(tmp_path / "cache" / "app" / "base")


def test_s3_unreachable_is_a_miss_and_fatal_only_on_request(world: World, tmp_path: Path) -> None:
    world.store.down = True
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 0
    warned = {s.stage for s in result.services[0].stages if any("unavailable" in w for w in s.cache_warnings)}
    assert warned == {"test", "final"}  # the targets that run (and restore)
    assert not any(e.startswith("s3 put") for e in world.log.events)
    assert "dockercache-s3-key-app" not in world.agent.meta
    err = world.err.getvalue()  # type: ignore[attr-defined]
    assert err.count("building without this cache") == 1

    # cache_errors = "fail": decided before anything is built, so nothing is pushed or recorded.
    bakes = len(world.docker.bakes)
    world.agent.meta.clear()
    with pytest.raises(CacheError, match=r"cannot connect and settings.cache_errors = 'fail'"):
        world.runner.run(plan_for(S3, tmp_path, Settings(cache_errors="fail")))
    assert len(world.docker.bakes) == bakes and "app-image" not in world.agent.meta


def test_a_failing_save_is_a_warning_and_the_others_are_saved(world: World, tmp_path: Path) -> None:
    real_put = world.store.put_blob_bytes

    def put(digest: str, body: bytes) -> None:
        if b"app-test" in body:
            raise StoreError("s3://b: uploading: InternalError")
        real_put(digest, body)

    world.store.put_blob_bytes = put  # type: ignore[method-assign]
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 0
    stages = {s.stage: s for s in result.services[0].stages}
    assert stages["test"].s3_saved is None and "InternalError" in stages["test"].cache_warnings[0]
    assert "pipe/main/app/test" not in world.store.snapshots
    assert stages["final"].s3_saved == "pipe/main/app/final"


def test_restore_uses_the_key_recorded_by_an_earlier_step(world: World, tmp_path: Path) -> None:
    world.runner.run(plan_for(S3, tmp_path))
    world.store.snapshots = {k.replace("pipe/main", "pipe/feature"): v for k, v in world.store.snapshots.items()}
    world.agent.meta = {"dockercache-s3-key-app": "pipe/feature"}
    world.log.events.clear()
    result = world.runner.run(plan_for(S3, tmp_path))
    restored = {s.stage: s.restored_from for s in result.services[0].stages}
    assert restored == {"base": None, "deps": None, "test": "pipe/feature", "final": "pipe/feature"}
    assert world.log.events.index("s3 get pipe/feature/app/test") < world.log.index("docker buildx bake")


def test_unreachable_cache_registry_is_dropped_before_the_run(world: World, tmp_path: Path) -> None:
    down = RegistryCache(type="registry", ref="127.0.0.1:9/cache")  # nothing listens on the discard port
    result = world.runner.run(plan_for(down, tmp_path))
    assert result.exit_code == 0 and "127.0.0.1:9 unreachable" in result.warnings[0]
    (bake,) = world.docker.bakes
    assert all("cache-from" not in t and "cache-to" not in t for t in bake["target"].values())
    with pytest.raises(CacheError, match="unreachable"):
        world.runner.run(plan_for(down, tmp_path, Settings(cache_errors="fail")))


def test_no_daemon_stops_before_anything_else(world: World, tmp_path: Path) -> None:
    world.docker.daemon = False
    with pytest.raises(EnvironmentProblem, match="Docker daemon not reachable"):
        world.runner.run(plan_for(S3, tmp_path))
    assert world.log.events == ["docker ping"]


def test_ephemeral_builder_is_removed_after_a_failure(world: World, tmp_path: Path) -> None:
    world.docker.fail_stage = "final"
    plan = plan_for(
        LocalCache(type="local", path="cache"), tmp_path, name="dc", driver="docker-container", ephemeral=True
    )
    result = world.runner.run(plan)
    assert result.exit_code == 1
    log = world.log
    assert (
        log.index("docker buildx create dc-job1")
        < log.index("docker buildx bake")
        < log.index("docker buildx rm dc-job1")
    )
    assert world.docker.builders == {}


def test_a_builder_this_run_made_that_cannot_boot_is_exit_3_and_removed(world: World, tmp_path: Path) -> None:
    """README: a docker-container builder whose BuildKit image cannot be pulled fails before the build (exit 3,
    one line naming why), and the builder the run created is removed; a builder that was there is kept."""
    world.docker.boot_fails = True  # type: ignore[attr-defined]
    plan = plan_for(LocalCache(type="local", path="cache"), tmp_path, name="dc", driver="docker-container")
    with pytest.raises(EnvironmentProblem, match=r"^builder 'dc' cannot boot: failed to pull moby/buildkit") as info:
        world.runner.run(plan)
    assert str(info.value).endswith(  # how to go on (issue 28): the engine's own builder, or a mirror
        "; to go on: on an engine with the containerd image store, build with the engine's own builder ([builder] "
        'name = "default", driver = "docker" in dockercache.toml), or make BuildKit\'s image pullable through an '
        'image mirror (builder.image = "<mirror>/moby/buildkit:<version>")'
    )
    log = world.log
    assert log.index("docker buildx create dc") < log.index("docker buildx inspect --bootstrap dc")
    assert log.index("docker buildx inspect --bootstrap dc") < log.index("docker buildx rm dc")
    assert not any(e.startswith("docker buildx bake") for e in log.events) and world.docker.builders == {}
    world.docker.builders["dc"] = "docker-container"  # someone's own builder, stopped and unable to start
    with pytest.raises(EnvironmentProblem, match="cannot boot"):
        world.runner.run(plan)
    assert world.docker.builders == {"dc": "docker-container"}


def test_ephemeral_builder_is_removed_after_a_success_too(world: World, tmp_path: Path) -> None:
    plan = plan_for(
        LocalCache(type="local", path="cache"), tmp_path, name="dc", driver="docker-container", ephemeral=True
    )
    assert world.runner.run(plan).exit_code == 0
    assert world.log.index("docker buildx bake") < world.log.index("docker buildx rm dc-job1")
    assert world.docker.builders == {}


def test_a_missing_builder_with_the_docker_driver_is_an_environment_problem(world: World, tmp_path: Path) -> None:
    """The docker driver cannot be created: a builder name other than the context's own is exit 3, named."""
    plan = plan_for(LocalCache(type="local", path="cache"), tmp_path, name="laptop", driver="docker")
    with pytest.raises(EnvironmentProblem, match="no builder 'laptop': the 'docker' driver cannot be created"):
        world.runner.run(plan)
    assert not world.docker.bakes


def test_a_builder_with_another_driver_is_an_environment_problem(world: World, tmp_path: Path) -> None:
    world.docker.builders["dc"] = "remote"
    plan = plan_for(LocalCache(type="local", path="cache"), tmp_path, name="dc", driver="docker-container")
    with pytest.raises(EnvironmentProblem, match="exists with driver 'remote'"):
        world.runner.run(plan)
    assert not world.docker.bakes


def test_an_agent_that_fails_is_a_warning(world: World, tmp_path: Path) -> None:
    from dockercache.adapters.buildkite import AgentError

    def broken(*args: Any, **kwargs: Any) -> None:
        raise AgentError("buildkite-agent meta-data set exited 1")

    world.agent.meta_data_set = broken  # type: ignore[method-assign]
    world.agent.annotate = broken  # type: ignore[method-assign]
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0
    assert "buildkite-agent meta-data set exited 1" in world.err.getvalue()  # type: ignore[attr-defined]


def test_buildkit_shared_vertex_race_is_retried_once(world: World, tmp_path: Path) -> None:
    world.docker.race_once = True
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    assert len(world.docker.bakes) == 2 and world.docker.bakes[0] == world.docker.bakes[1]
    assert "failed to get state for index 0" in result.warnings[0]
    # Steps are counted from the retry alone (the failed try's vertex is not a step of this build).
    assert {s.stage: s.total for s in result.services[0].stages} == {"base": 2, "deps": 2, "test": 1, "final": 2}


def test_keep_storage_prunes_the_builders_cache_after_a_successful_build_only(world: World, tmp_path: Path) -> None:
    """builder.keep_storage bounds the build cache of a long-lived agent: one prune once everything built and was
    saved; none after a failure (its caches are what the next try needs) and none without a bound."""
    plan = plan_for(
        LocalCache(type="local", path="cache"), tmp_path, name="ci", driver="docker-container", keep_storage="2GB"
    )
    assert world.runner.run(plan).exit_code == 0
    prune = "docker buildx prune --builder ci --force --all --keep-storage 2GB"
    events = world.log.events
    assert events.count(prune) == 1 and events.index(prune) > events.index("docker buildx bake ended")
    assert "build cache pruned to 2GB (Total:\t12.5MB)" in world.err.getvalue()  # type: ignore[attr-defined]
    world.log.events.clear()
    world.docker.fail_stage = "test"
    world.docker.bakes.clear()
    assert world.runner.run(plan).exit_code == 1
    assert prune not in world.log.events
    world.log.events.clear()
    world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path, name="ci", driver="docker-container"))
    assert not any("prune" in e for e in world.log.events)


def test_a_save_a_concurrent_prune_refused_is_saved_once_more(world: World, tmp_path: Path) -> None:
    """A prune with no grace period deletes the blobs BuildKit just uploaded, before the manifest names them: the
    endpoint refuses the save (MANIFEST_BLOB_UNKNOWN, naming the prune), and the run saves once more, cache
    only, after the bake; BuildKit uploads the blobs again and the snapshot is written."""

    def prune() -> None:
        world.store.blobs.clear()

    world.docker.before_manifest = [prune]
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 0, result.error
    _, again = world.docker.bakes
    assert list(again["group"]["default"]["targets"]) == ["app-test"]  # the refused save alone ...
    assert again["target"]["app-test"]["output"] == ["type=cacheonly"]  # ... cache only: nothing pushed
    err = world.err.getvalue()  # type: ignore[attr-defined]
    assert "app-test: save of snapshot pipe/main/app/test refused: blob sha256:" in err
    assert "(MANIFEST_BLOB_UNKNOWN): saving again" in err
    test = next(s for s in result.services[0].stages if s.stage == "test")
    assert test.s3_saved == "pipe/main/app/test" and "pipe/main/app/test" in world.store.snapshots


def test_a_push_failure_is_a_push_failure_not_a_cache_fault(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache lives in the image's own repository (another tag) and the image registry refuses connections:
    its URL in BuildKit's error is not taken for a cache blob that failed. No cache warning, no second bake, one
    line naming the registry, exit 1, nothing recorded."""
    monkeypatch.setattr(
        "dockercache.adapters.netcheck.answers", lambda host, port: (None, False)
    )  # the cache registry answers
    world.docker.push_fails = True
    result = world.runner.run(plan_for(RegistryCache(type="registry", ref="reg.test/app"), tmp_path))
    assert result.exit_code == 1
    assert len(world.docker.bakes) == 1
    assert result.warnings == []
    assert result.error == (
        "app: push to reg.test failed (reg.test/app:abc123): dial tcp 10.0.0.9:443: connect: connection refused"
    )
    assert world.agent.meta == {}


def test_a_stalled_cache_transfer_costs_a_miss_and_a_warning(world: World, tmp_path: Path) -> None:
    """A cache blob whose download stops half-way: the watchdog stops the run after ``stall_seconds`` without
    progress and it builds again without caches, with one warning; a second stall fails the run, named."""
    save_snapshot(world.store, "pipe/main/app/final", b"final manifest", b"layer")
    world.docker.stall = 1
    plan = dataclasses.replace(plan_for(S3, tmp_path), stall_seconds=0.3)
    result = world.runner.run(plan)
    assert result.exit_code == 0, result.error
    stalled, again = world.docker.bakes
    assert stalled["target"]["app-final"]["cache-from"] and not again["target"]["app-final"].get("cache-from")
    assert result.warnings == [
        f"a transfer stalled (blob sha256:{'ef' * 32} made no progress for 0 s (512 of 4096 bytes)): building again "
        "without caches"
    ]
    world.docker.bakes.clear()
    world.docker.stall = 2
    failed = world.runner.run(plan)
    assert failed.exit_code == 1 and failed.error is not None
    assert failed.error.startswith("app: stopped: a transfer stalled (blob sha256:efef")


def test_two_jobs_storing_one_image_name_at_once_is_retried_once(world: World, tmp_path: Path) -> None:
    """Two jobs of one commit on one agent: the containerd image store refuses the name the other stored an
    instant before. Not the build's fault: built again (all cached by then), exit 0."""
    world.docker.image_race_once = True
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    assert len(world.docker.bakes) == 2 and world.docker.bakes[0] == world.docker.bakes[1]
    assert result.warnings == [
        'another job stored the same image at the same moment (image "docker.io/library/app:abc123": already '
        "exists): building again"
    ]


def test_an_image_name_lost_before_its_push_is_built_again_once(world: World, tmp_path: Path) -> None:
    """The docker driver pushes through the daemon's image store, which can lose the name the export gave an
    instant before (Docker 26, when a cache export of the same run failed at that moment): not a push failure of
    the registry, not the build's fault: built again once."""
    world.docker.image_race_once = True
    world.docker.image_race_error = "pushing reg.test/app:abc123 with docker: tag does not exist: reg.test/app:abc123"
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    assert len(world.docker.bakes) == 2
    assert result.warnings == [
        "the image store lost the image's name before its push (pushing reg.test/app:abc123 with docker: tag does "
        "not exist): building again"
    ]


def test_a_cache_blob_that_cannot_be_fetched_is_a_miss_built_again_without_it(world: World, tmp_path: Path) -> None:
    for stage in ("test", "final"):
        save_snapshot(world.store, f"pipe/main/app/{stage}", f"{stage} manifest".encode(), b"layer")
    world.docker.blob_error_once = True
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 0, result.error
    first, second = world.docker.bakes
    assert first["target"]["app-test"]["cache-from"], "the first run reads the snapshots"
    assert not second["target"]["app-test"].get("cache-from")  # the second does without them ...
    assert second["target"]["app-test"]["cache-to"]  # ... and writes the rebuilt cache
    (warning,) = result.warnings
    assert warning.startswith("cache store 'cache': fetching cache blob sha256:abab")
    assert warning.endswith("from mem://: 500 Internal Server Error: building again without it")
    assert {s.stage: s.status for s in result.services[0].stages}["final"] == "ok"


def test_a_broken_cache_fails_the_build_when_cache_errors_is_fail(world: World, tmp_path: Path) -> None:
    save_snapshot(world.store, "pipe/main/app/test", b"test manifest", b"layer")
    world.docker.blob_error_once = True
    result = world.runner.run(plan_for(S3, tmp_path, Settings(cache_errors="fail")))
    assert result.exit_code == 1 and len(world.docker.bakes) == 1
    assert "not building without it" in result.warnings[0]


def test_a_failing_step_is_not_retried_as_a_cache_problem(world: World, tmp_path: Path) -> None:
    save_snapshot(world.store, "pipe/main/app/test", b"test manifest", b"layer")
    world.docker.fail_stage = "test"
    result = world.runner.run(plan_for(S3, tmp_path))
    assert result.exit_code == 1 and not any("building again" in w for w in result.warnings)


def test_the_bake_file_is_private_and_removed_afterwards(world: World, tmp_path: Path) -> None:
    """Build args (tokens among them) travel in the bake file, never in arguments: only this user can read it
    while bake runs, and nothing of it is left after."""
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    (bake_file, file_mode), (directory, dir_mode) = world.docker.bake_files
    assert (file_mode, dir_mode) == (0o600, 0o700)
    assert not bake_file.exists() and not directory.exists()


def test_an_image_built_with_no_push_is_not_recorded_for_later_steps(world: World, tmp_path: Path) -> None:
    """Meta-data names the pushed image; with --no-push there is none another agent could pull."""
    result = world.runner.run(plan_for(S3, tmp_path, options=BuildOptions(push=False)))
    assert result.exit_code == 0, result.error
    assert "app-image" not in world.agent.meta and world.agent.meta.get("dockercache-s3-key-app") == "pipe/main"


def test_an_incomplete_local_export_leaves_the_previous_cache_as_it_was(world: World, tmp_path: Path) -> None:
    local = LocalCache(type="local", path="cache")
    assert world.runner.run(plan_for(local, tmp_path)).exit_code == 0
    final = tmp_path / "cache" / "app" / "final"
    before = {p.relative_to(final): p.read_bytes() for p in final.rglob("*") if p.is_file()}
    assert Path("index.json") in before
    world.docker.incomplete_local_export = True
    result = world.runner.run(plan_for(local, tmp_path))
    assert result.exit_code == 0, result.error
    assert {p.relative_to(final): p.read_bytes() for p in final.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "cache" / "app" / "final.incoming").exists()
    assert next(s for s in result.services[0].stages if s.stage == "final").cache_written is None


def test_a_stale_incoming_directory_never_reaches_the_cache(world: World, tmp_path: Path) -> None:
    stale = tmp_path / "cache" / "app" / "final.incoming"
    (stale / "blobs" / "sha256").mkdir(parents=True)
    (stale / "blobs" / "sha256" / "left-by-a-killed-run").write_bytes(b"junk")
    assert world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path)).exit_code == 0
    final = tmp_path / "cache" / "app" / "final"
    assert (final / "index.json").is_file() and not (final / "blobs" / "sha256" / "left-by-a-killed-run").exists()


def test_a_full_disk_at_the_swap_is_a_warning(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from dockercache.stores.local import versions

    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", dst)

    monkeypatch.setattr(versions.os, "rename", full)
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    assert "local cache not updated:" in world.err.getvalue() and "No space left on device" in world.err.getvalue()  # type: ignore[attr-defined]
    assert not (tmp_path / "cache" / "app" / "final" / "index.json").exists()


def test_a_native_s3_profile_reaches_bake_in_its_environment(world: World, tmp_path: Path) -> None:
    native = S3Cache(type="s3", bucket="b", key="{pipeline}/{branch}", native=True, profile="ci")
    result = world.runner.run(plan_for(native, tmp_path, name="dc", driver="docker-container"))
    assert result.exit_code == 0, result.error
    assert world.docker.bake_envs and all(env == {"AWS_PROFILE": "ci"} for env in world.docker.bake_envs)


def test_an_interrupt_stops_bake_removes_what_the_run_made_and_records_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM lands while dockercache reads bake's progress: the bake stream is closed at once (the real
    adapter stops buildx's process group then), the S3 endpoint stops, the ephemeral builder goes, and nothing
    is saved, recorded or annotated."""
    plan = plan_for(S3, tmp_path, name="dc", driver="docker-container", ephemeral=True)
    seen: list[str] = []

    def step(vertex: Any) -> None:
        seen.append(vertex.name)
        if len(seen) == 3:
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(world.runner.console, "step", step)
    endpoints: list[str] = []
    original = Endpoint.start

    def start(self: Endpoint) -> str:
        endpoints.append(original(self))
        return endpoints[-1]

    monkeypatch.setattr(Endpoint, "start", start)
    with pytest.raises(Interrupted):
        world.runner.run(plan)
    log = world.log
    assert log.index("docker buildx bake ended") < log.index("docker buildx rm dc-job1")
    assert world.docker.builders == {}
    assert not any(e.startswith(("s3 put", "agent meta-data set", "agent annotate")) for e in log.events), log.events
    assert world.store.snapshots == {}
    assert len(endpoints) == 1
    host, port = endpoints[0].rsplit(":", 1)
    with pytest.raises(OSError):  # the endpoint no longer serves
        http.client.HTTPConnection(host, int(port), timeout=2).request("GET", "/v2/")


def platform_plan(tmp_path: Path, *platforms: str, **builder: Any) -> Plan:
    plan = plan_for(LocalCache(type="local", path="cache"), tmp_path, **builder)
    return plan.with_targets(dataclasses.replace(t, platforms=platforms) for t in plan.targets)


def test_a_platform_the_builder_cannot_build_is_exit_3_before_any_bake(world: World, tmp_path: Path) -> None:
    plan = platform_plan(tmp_path, "linux/amd64", "linux/arm64", name="dc", driver="docker-container", ephemeral=True)
    with pytest.raises(EnvironmentProblem, match=r"builder 'dc-job1' cannot build linux/arm64 \(it builds linux/amd64"):
        world.runner.run(plan)
    assert not world.docker.bakes
    assert world.docker.builders == {}  # the ephemeral builder is removed on the way out


def test_platforms_the_builder_lists_build(world: World, tmp_path: Path) -> None:
    plan = platform_plan(tmp_path, "linux/amd64", "linux/amd64/v2")
    assert world.runner.run(plan).exit_code == 0
    assert world.docker.bakes[0]["target"]["app-final"]["platforms"] == ["linux/amd64", "linux/amd64/v2"]


def test_several_platforms_on_the_classic_image_store_are_exit_3(world: World, tmp_path: Path) -> None:
    world.docker.containerd = False  # type: ignore[attr-defined]
    with pytest.raises(EnvironmentProblem, match="cannot build several platforms into one image on the classic"):
        world.runner.run(platform_plan(tmp_path, "linux/amd64", "linux/amd64/v2"))
    assert not world.docker.bakes


def test_docker_compose_meta_data_key_carries_the_compose_files(world: World, tmp_path: Path) -> None:
    """``metadata_key = "docker-compose"``: the pushed image goes under the docker-compose plugin's key for the
    service's Compose files (tests/test_buildkite.py has every case of the derivation)."""
    plan = plan_for(LocalCache(type="local", path="cache"), tmp_path)
    svc = dataclasses.replace(plan.services[0], metadata_key="docker-compose", compose_files=("docker-compose.ci.yml",))
    result = world.runner.run(dataclasses.replace(plan, services=(svc,)))
    assert result.exit_code == 0, result.error
    key = "docker-compose-plugin-built-image-tag-app-docker-compose.ci.yml"
    assert world.agent.meta == {key: "reg.test/app:abc123"}


def test_buildkite_log_groups_collapse_all_but_the_build_and_open_the_failing_one(world: World, tmp_path: Path) -> None:
    world.docker.fail_stage = "test"
    world.runner.console.buildkite = True
    world.runner.logins = {"reg.test": RegistryLogin(username="ci", password="pw")}
    world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    headers = [line for line in world.err.getvalue().splitlines() if line[:3] in ("---", "~~~", "+++", "^^^")]  # type: ignore[attr-defined]
    assert headers == [
        "~~~ :key: registry logins",
        "+++ :docker: build and push: app (test, final)",
        "--- :rotating_light: output of [test 2/2] RUN step 1 (target app-test)",
        "^^^ +++",
        "--- :docker: save the caches of: app (final)",
    ]


def test_a_successful_buildkite_run_opens_only_the_build_group(world: World, tmp_path: Path) -> None:
    world.runner.console.buildkite = True
    world.runner.run(plan_for(S3, tmp_path))
    headers = [line for line in world.err.getvalue().splitlines() if line[:3] in ("---", "~~~", "+++", "^^^")]  # type: ignore[attr-defined]
    assert headers == ["--- :s3: app: restore caches", "+++ :docker: build and push: app (test, final)"]


def test_annotations_are_per_service_and_job_and_link_the_log_on_failure(world: World, tmp_path: Path) -> None:
    world.docker.fail_stage = "test"
    world.agent.env = {
        "BUILDKITE_STEP_ID": "step-1",
        "BUILDKITE_PARALLEL_JOB": "2",
        "BUILDKITE_JOB_ID": "job-9",
        "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/app/builds/7",
    }
    world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    ((context, (style, body)),) = world.agent.annotations.items()
    assert context == "dockercache-app-step-1-p2" and style == "error"
    assert "[the job's log](https://buildkite.com/acme/app/builds/7#job-9)" in body
    assert ":rotating_light: **test** failed: `[test 2/2] RUN step 1" in body


def single_stage(store: Any) -> ResolvedService:
    """A service whose Dockerfile has one stage, without a name (dockercache's ``stage-0``)."""
    return dataclasses.replace(resolved(store, ("stage-0",)), final_target=None)


@pytest.mark.parametrize("unnamed", ["", "stage-0"])
def test_a_single_stage_service_counts_its_steps(world: World, tmp_path: Path, unnamed: str) -> None:
    """BuildKit names an unnamed stage's steps ``[2/3] RUN ...`` (some versions ``[stage-0 2/3]``): a
    single-stage service's second build is n/n cached with n > 0 (it said ``stage-0 0/0 steps cached``)."""
    world.docker.unnamed = unnamed
    local = LocalCache(type="local", path="cache")
    plan = plan_for(local, tmp_path, service=single_stage(local))
    assert [t.stage for t in plan.targets] == ["stage-0"] and plan.targets[0].dockerfile_target is None
    first = world.runner.run(plan)
    assert [(s.stage, s.cached, s.total) for s in first.services[0].stages] == [("stage-0", 0, 2)]
    world.docker.cached = True
    second = world.runner.run(plan)
    assert [(s.stage, s.cached, s.total) for s in second.services[0].stages] == [("stage-0", 2, 2)]
    assert second.services[0].closing_line().startswith("app: 1 stage, 2/2 steps cached")


def test_cache_read_names_where_each_stages_hits_came_from(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cache_read`` names the sources of a stage's hits: base and deps, built inside app-test, name the refs
    app-test read (they said ``[]``); with no hit, no stage names a source (app-final listed its imports)."""
    monkeypatch.setattr(
        "dockercache.adapters.netcheck.answers", lambda host, port: (None, False)
    )  # the cache registry answers
    world.docker.imports = True
    plan = plan_for(RegistryCache(type="registry", ref="reg.test/cache"), tmp_path)
    first = world.runner.run(plan)
    assert all(s.cache_read == [] for s in first.services[0].stages)

    world.docker.cached = True
    second = world.runner.run(plan)
    refs = {
        name: [dict(p.split("=", 1) for p in e.split(","))["ref"] for e in target["cache-from"]]
        for name, target in world.docker.bakes[-1]["target"].items()
    }
    assert refs["app-test"] and refs["app-final"]
    read = {s.stage: s.cache_read for s in second.services[0].stages}
    assert read == {
        "base": refs["app-test"],
        "deps": refs["app-test"],
        "test": refs["app-test"],
        "final": refs["app-final"],
    }
    (svc,) = second.to_json()["services"]
    assert svc["stages"][0]["cache_read"] == refs["app-test"] and svc["stages"][0]["shared_steps_counted_in"] == []


def test_a_step_solved_again_after_a_cancellation_is_not_an_error(world: World, tmp_path: Path) -> None:
    """A vertex shared with another session is cancelled with it and solved again: the log says DONE once (it
    said ``ERROR`` first), and nothing counts it a failure or a cache problem."""
    world.docker.cancel_first_step = True
    result = world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    err = world.err.getvalue()  # type: ignore[attr-defined]
    lines = [line.split() for line in err.splitlines() if "[app-test base 2/3] RUN step 1" in line]
    assert lines == [["DONE", "1.0s", "[app-test", "base", "2/3]", "RUN", "step", "1"]], err
    assert "ERROR" not in err and not any(s.cache_warnings for s in result.services[0].stages)
    assert {s.stage: (s.cached, s.total) for s in result.services[0].stages}["base"] == (0, 2)


def test_an_interrupted_build_marks_no_target_a_success_in_the_live_display(world: World, tmp_path: Path) -> None:
    world.docker.interrupt_after = 3
    err = io.StringIO()
    world.runner.console = Console(out=io.StringIO(), err=err)
    world.runner.console.progress = "tty"
    with pytest.raises(Interrupted):
        world.runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    last = [line.replace("\x1b[2K", "") for line in err.getvalue().split("\x1b[2F")[-1].splitlines()]
    assert [line.split()[:2] for line in last] == [["-", "app-test"], ["-", "app-final"]], last
    assert all(line.endswith("s") and "cancelled" in line for line in last)


def test_the_json_says_where_the_time_went(world: World, tmp_path: Path) -> None:
    """``timings``: from the process's start to the first byte bake printed, the bake, what came after it, own
    time (wall minus bake), and each step of dockercache's own by name."""
    document = world.runner.run(plan_for(S3, tmp_path)).to_json()
    timings = document["timings"]
    assert timings["to_first_bake_byte"] >= timings["before_bake"] > 0
    assert timings["bake"] == document["buildx_seconds"]
    assert timings["own"] == pytest.approx(timings["total"] - timings["bake"], abs=0.002)
    names = [s["name"] for s in timings["steps"]]
    assert names[:2] == ["docker ping", "registry logins"] and "cache stores before the build" in names
    assert names[-2:] == ["cache stores after the build", "meta-data and annotations"]
    assert all(s["seconds"] >= 0 and s["start"] > 0 for s in timings["steps"])
