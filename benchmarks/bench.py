"""Fresh-agent rebuilds of a reference project, eight caching strategies side by side in one run.

The CI step of every strategy builds two targets, as real pipelines do: `final` (the image, pushed) and `test`
(a stage outside the final image's graph; its result is kept only as cache). Steps cached count the Dockerfile
steps of both, each once.

Every strategy is seeded once from the project's base state (its caches written as the default branch would),
then measured on builds of changed states, each on a fresh agent (build cache, images, builders' state and
local cache directories wiped), interleaved: for each repeat, for each change, every strategy in turn, so
drift on the shared machine hits them alike. Measured builds read the seeded caches and write their own new
entry (as a CI build of a new commit would), without disturbing what the next measurement reads.

Usage: python benchmarks/bench.py [--quick] [--repeats N] [--only STRATEGY,...] [--out benchmarks/results]
(or `invoke bench [--quick]`). Needs the stack: bash scripts/stack.sh up.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "project"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
CHANGES = ("none", "one-file", "dependency")
STRATEGIES = (
    "no-cache",
    "inline",
    "old-plugin-s3-tarball",
    "compose-plugin-v5",
    "hand-written-bake",
    "dockercache-registry",
    "dockercache-registry-skip",
    "dockercache-s3",
    "warm-local",
)
WARM = "warm-local"  # the limit: the denominator of "x warm"
# The cells the README's goals are about get more repeats (--headline-repeats) than the others.
HEADLINE = ("hand-written-bake", "dockercache-registry", "dockercache-s3", "warm-local")
HAND = "hand-written-bake"  # the best a user can do by hand: the denominator of "x hand-written bake"
ANCHORS = (HAND, "compose-plugin-v5")  # what a user would use instead: "x best anchor" is against the faster
TARGETS = ("test", "final")  # what every strategy's CI step builds
REGISTRY_CACHE = "mode=max,image-manifest=true,oci-mediatypes=true"
DOCKERCACHE = Path(sys.executable).parent / "dockercache"
BYTECODE = Path(tempfile.gettempdir()) / "dockercache-bench-bytecode"
"""Where dockercache's bytecode is kept between the benchmark's builds (the first, a seed, writes it), as a user's
installed package has it (``pip install`` compiles it); these machines set PYTHONDONTWRITEBYTECODE=1."""
# Failures that come from a race in BuildKit, not from the build: with several targets in one session, a target
# that finishes early (its steps all from cache) takes down the shared vertexes another target still has to run
# (moby/buildkit#3635; seen here with inline cache when nothing changed, and on the warm agent). The failed solve
# also leaves build cache records held in the daemon until it restarts, which a "fresh agent" build of the same
# cache keys would hit.
KNOWN_RACES = ("failed to get state for index",)
MAX_RETRIES = 12  # per full run; each costs seeding every strategy again (about 3 minutes)
MAX_RETRIES_QUICK = 12  # --quick (CI): a reseed costs about a minute; the race hits inline cache's no-change
# build about one time in two at SCALE=1, so 5 would fail CI about one run in 60, 12 about one in 8000


class BuildFailed(SystemExit):
    """A build that failed; ``transient`` when it is one of the KNOWN_RACES, worth a retry."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.transient = any(race in output for race in KNOWN_RACES)
        self.reason = next(
            (line.strip() for line in reversed(output.splitlines()) if line.startswith("ERROR")), message[:200]
        )


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, env=env)


def stack_values() -> dict[str, str]:
    values = {
        "DOCKERCACHE_S3_ENDPOINT": "http://127.0.0.1:5002",
        "DOCKERCACHE_BASE_IMAGE": "localhost:5000/dockercache/busybox:stable",
    }
    env_file = ROOT / ".stack" / "env"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = value
    return values


def s3_client(values: dict[str, str]) -> Any:
    """A boto3 client of the stack's S3 server (moto takes any key)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=values["DOCKERCACHE_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
    )


_warned_in_use = False


def wipe_agent(agent: Path) -> None:
    """A fresh CI agent: no images, no build cache, no local cache directories."""
    global _warned_in_use
    ids = sh("docker", "image", "ls", "--all", "--quiet").stdout.split()
    if ids:
        sh("docker", "image", "rm", "--force", *sorted(set(ids)), check=False)
    sh("docker", "buildx", "prune", "--all", "--force")
    shutil.rmtree(agent, ignore_errors=True)
    total = re.findall(r"^Total:\s+(\S+)", sh("docker", "buildx", "du", check=False).stdout, re.MULTILINE)
    if total and total[-1] not in ("0B", "0") and not _warned_in_use:
        _warned_in_use = True
        print(
            f"warning: {total[-1]} of build cache still in use after the wipe (another build running, or records "
            "a failed build left held until dockerd restarts); the project's BENCH_RUN arg keeps it from answering",
            file=sys.stderr,
        )


def run_dockercache(
    project: Path, config: str, agent: Path, branch: str, commit: str, pipeline: str
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """`dockercache build --json` as a CI job would run it; returns wall seconds, the first service and the
    whole JSON document (whose top-level ``buildx_seconds`` is the wall time of the bake subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's install has bytecode: these machines turn it off
    env.update(
        {
            "PYTHONPYCACHEPREFIX": str(BYTECODE),
            "CI": "true",
            "BUILDKITE_BRANCH": branch,
            "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "main",
            "BUILDKITE_PIPELINE_SLUG": pipeline,
            "BUILDKITE_COMMIT": commit,
            "DOCKERCACHE_CACHE_DIR": str(agent),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    started = time.monotonic()
    proc = subprocess.run(
        [str(DOCKERCACHE), "build", "--json", "--config", config],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise BuildFailed(f"dockercache failed ({config}):\n{proc.stderr[-3000:]}", proc.stderr)
    document = json.loads(proc.stdout)
    return seconds, dict(document["services"][0]), dict(document)


@dataclass
class Measure:
    strategy: str
    change: str
    seconds: float
    cached: int
    total: int
    up_objects: int = 0
    up_bytes: int = 0
    down_objects: int = 0
    down_bytes: int = 0
    buildx_seconds: float | None = None
    timings: dict[str, Any] | None = None  # dockercache's --json timings: its own time, before and after the bake
    s3_up_objects: int | None = None  # the S3 store's own uploads (the cache), besides the image push
    s3_up_bytes: int | None = None


@dataclass
class Registry:
    """A registry of the benchmark's own, so its traffic can be counted: downloads from its access log
    (GET blob responses), uploads from the blobs that appear in its storage."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> None:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {self.root}/data\n"
            f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{self.port}\n"
        )
        log = (self.root / "access.log").open("wb")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
        for _ in range(100):
            if sh("curl", "-fsS", f"http://{self.host}/v2/", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("benchmark registry did not start")

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(10)

    def blobs(self) -> dict[str, int]:
        base = self.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return {p.parent.name: p.stat().st_size for p in base.glob("*/*/data")} if base.is_dir() else {}

    def log_offset(self) -> int:
        return (self.root / "access.log").stat().st_size

    def downloads(self, offset: int) -> tuple[int, int]:
        with (self.root / "access.log").open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        objects = size = 0
        for match in re.finditer(r'"GET /v2/\S+/blobs/sha256:[0-9a-f]+ HTTP/[\d.]+" 200 (\d+)', text):
            objects += 1
            size += int(match.group(1))
        return objects, size


def rotated(items: Sequence[str], by: int) -> list[str]:
    """``items`` started at position ``by`` (modulo its length), wrapping round."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def progress_objects(stream: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a ``--progress rawjson`` stream (pretty-printed, one after another; a failed build
    ends in plain text, which is skipped)."""
    decoder = json.JSONDecoder()
    pos, end = 0, len(stream)
    while pos < end:
        while pos < end and stream[pos].isspace():
            pos += 1
        if pos < end and stream[pos] == "{":
            try:
                obj, pos = decoder.raw_decode(stream, pos)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(obj, dict):
                    yield obj
                continue
        newline = stream.find("\n", pos)
        pos = end if newline < 0 else newline + 1


_STEP = re.compile(
    r"^\[(?:[a-z0-9]+/[a-z0-9]+(?:/[a-z0-9]+)? )?(?P<stage>[^\s\]]+) (?P<n>\d+)/\d+\] (?P<cmd>.*)$", re.DOTALL
)


def step_key(name: str, targets: Sequence[str]) -> tuple[str, int] | None:
    """(Dockerfile stage label, step number) of a progress vertex name, None for what is not a counted step.

    A bake of several targets prefixes names with the target (`[final deps 2/2] RUN ...`); a single-target
    build does not (`[deps 2/2] RUN ...`). FROM is a source, never "cached": not counted."""
    if len(targets) > 1:
        for target in targets:
            if name.startswith(f"[{target} "):
                name = "[" + name[len(target) + 2 :]
                break
    match = _STEP.match(name)
    if not match or match.group("cmd").startswith("FROM "):
        return None
    return match.group("stage"), int(match.group("n"))


def fold_vertexes(stream: str) -> dict[str, dict[str, Any]]:
    """A rawjson stream's vertexes by digest: whether any update said cached, completed or error, and every name
    it was shown under (one per target sharing it)."""
    vertexes: dict[str, dict[str, Any]] = {}
    for obj in progress_objects(stream):
        for raw in obj.get("vertexes") or []:
            seen = vertexes.setdefault(
                str(raw.get("digest")), {"cached": False, "completed": False, "error": False, "names": set()}
            )
            seen["names"].add(str(raw.get("name", "")))
            seen["cached"] |= bool(raw.get("cached"))
            seen["completed"] |= bool(raw.get("completed"))
            seen["error"] |= bool(raw.get("error"))
    return vertexes


def count_steps(*runs: tuple[str, Sequence[str]]) -> tuple[int, int]:
    """Steps cached and steps in all, over the rawjson streams of one CI step's builds, each run given with the
    targets it built. Each Dockerfile step counts once, keyed by (stage label, step number), however many
    targets and builds show it (a bake shows a shared step under every target, sometimes as several vertexes).
    A step is cached when none of its vertexes ran (finished uncached, without error) and one finished from
    cache; BuildKit reports the duplicates it merges away as cancelled or never started: they did not run.
    (The same rule as dockercache's own report, so the columns compare.)"""
    # A vertex's updates may carry different names (one per target sharing it): fold them by digest.
    vertexes = {
        (i, digest): seen for i, (stream, _) in enumerate(runs) for digest, seen in fold_vertexes(stream).items()
    }
    ran: dict[tuple[str, int], bool] = {}
    hit: dict[tuple[str, int], bool] = {}
    for (i, _), seen in vertexes.items():
        finished = seen["completed"]
        for step in {step_key(name, runs[i][1]) for name in seen["names"]} - {None}:
            assert step is not None
            ran[step] = ran.get(step, False) or (finished and not seen["cached"] and not seen["error"])
            hit[step] = hit.get(step, False) or (finished and seen["cached"])
    return sum(1 for step in ran if hit[step] and not ran[step]), len(ran)


@dataclass
class Bench:
    scale: int
    work: Path
    registry: Registry
    s3_endpoint: str
    base_image: str
    bucket: str
    s3: Any = None
    results: list[Measure] = field(default_factory=list)
    retries: list[dict[str, str]] = field(default_factory=list)
    max_retries: int = MAX_RETRIES
    counter: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def project(self) -> Path:
        return self.work / "project"

    @property
    def agent(self) -> Path:
        return self.work / "agent"  # local cache directories of the simulated agent

    def image(self, strategy: str) -> str:
        return f"{self.registry.host}/bench/{strategy}"

    # ----------------------------------------------------------------------------------------- the project

    def reset(self) -> None:
        shutil.rmtree(self.project, ignore_errors=True)
        shutil.copytree(PROJECT, self.project)
        common = f"""
[builder]
name = "default"
driver = "docker"

[services.app]
context = "."
stages = ["base", "deps", "build", "test"]
target = "final"
args = {{ BASE_IMAGE = "{self.base_image}", SCALE = "{self.scale}", BENCH_RUN = "{self.run_id}" }}
tags = ["${{BUILDKITE_COMMIT}}"]
"""
        (self.project / "registry.toml").write_text(
            common.replace(
                "[services.app]",
                f'[caches.default]\ntype = "registry"\n'
                f'ref = "{self.registry.host}/bench/dockercache-cache"\n\n[services.app]',
            )
            + f'image = "{self.image("dockercache-registry")}"\n'
        )
        (self.project / "registry-skip.toml").write_text(
            common.replace(
                "[services.app]",
                f'[caches.default]\ntype = "registry"\n'
                f'ref = "{self.registry.host}/bench/dockercache-skip-cache"\n\n[services.app]',
            )
            + f'image = "{self.image("dockercache-registry-skip")}"\nskip_unchanged = true\n'
        )
        (self.project / "s3.toml").write_text(
            common.replace(
                "[services.app]",
                f'[caches.default]\ntype = "s3"\nbucket = "{self.bucket}"\n'
                f'endpoint_url = "{self.s3_endpoint}"\nregion = "us-east-1"\n\n[services.app]',
            )
            + f'image = "{self.image("dockercache-s3")}"\n'
        )

    def apply(self, change: str) -> None:
        self.reset()
        if change == "one-file":
            with (self.project / "src" / "main.txt").open("a") as f:
                f.write(f"changed {uuid.uuid4().hex}\n")
        elif change == "dependency":
            with (self.project / "deps.lock").open("a") as f:
                f.write(f"newdep{uuid.uuid4().hex[:6]} 2.0.0\n")

    def fresh_agent(self) -> None:
        wipe_agent(self.agent)
        self.agent.mkdir(parents=True)

    # ------------------------------------------------------------------------------------------ building

    def buildx(self, target: str, *flags: str) -> tuple[float, str]:
        """One plain `docker buildx build` of one target; returns wall seconds and the rawjson stream."""
        argv = [
            "docker",
            "buildx",
            "build",
            "--progress",
            "rawjson",
            "--builder",
            "default",
            *(f"--build-arg={key}={value}" for key, value in self.args.items()),
            "--target",
            target,
            *flags,
            str(self.project),
        ]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise BuildFailed(f"build failed: {' '.join(argv)}\n{proc.stderr[-2000:]}", proc.stderr)
        return seconds, proc.stderr

    @property
    def args(self) -> dict[str, str]:
        return {"BASE_IMAGE": self.base_image, "SCALE": str(self.scale), "BENCH_RUN": self.run_id}

    def bake(self, name: str, targets: dict[str, dict[str, Any]]) -> tuple[float, int, int]:
        """One `docker buildx bake` of the given targets (one BuildKit session) from a JSON bake file the harness
        writes; ``targets`` maps each target to its bake attributes (output, tags, cache-from, cache-to).
        Returns wall seconds, steps cached and steps in all."""
        definition = {
            "target": {
                target: {
                    "context": str(self.project),
                    "dockerfile": "Dockerfile",
                    "target": target,
                    "args": self.args,
                    **attributes,
                }
                for target, attributes in targets.items()
            }
        }
        path = self.work / "bake" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(definition, indent=2))
        argv = ["docker", "buildx", "bake", "--builder", "default", "--progress", "rawjson", "--file", str(path)]
        argv += list(targets)
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        path.with_suffix(".log").write_text(proc.stderr)
        if proc.returncode != 0:
            raise BuildFailed(f"bake failed: {' '.join(argv)}\n{path.read_text()}\n{proc.stderr[-2000:]}", proc.stderr)
        cached, total = count_steps((proc.stderr, list(targets)))
        return seconds, cached, total

    def bake_targets(self, strategy: str, tag: str, seed: bool) -> dict[str, dict[str, Any]]:
        """Each bake-driven strategy's targets: `final` pushed as ``tag``, `test` kept as cache only."""
        push: dict[str, Any] = {"tags": [f"{self.image(strategy)}:{tag}"], "output": ["type=registry"]}
        cacheonly: dict[str, Any] = {"output": ["type=cacheonly"]}
        if strategy in ("no-cache", WARM):  # no cache import or export (warm-local: the agent's own build cache)
            return {"test": cacheonly, "final": push}
        if strategy == "inline":
            # The cache travels in the pushed image: only its own layers, so the test stage is lost.
            sources = [] if seed else [f"type=registry,ref={self.image(strategy)}:latest"]
            return {
                "test": {**cacheonly, "cache-from": sources},
                "final": {**push, "cache-from": sources, "cache-to": ["type=inline"]},
            }
        if strategy == "compose-plugin-v5":
            # The docker-compose plugin v5: one cache ref, read and written by the image's build only;
            # the test target reads it, writes nothing.
            ref = f"{self.registry.host}/bench/compose-cache"
            read = [f"type=registry,ref={ref}:cache"]
            write = f"type=registry,ref={ref}:{'cache' if seed else f'cache-{tag}'},{REGISTRY_CACHE}"
            return {
                "test": {**cacheonly, "cache-from": read},
                "final": {**push, "cache-from": read, "cache-to": [write]},
            }
        if strategy == HAND:
            # By hand: one cache ref per target, each target reads both and writes its own.
            ref = f"{self.registry.host}/bench/bake-cache"
            read = [f"type=registry,ref={ref}:{target}" for target in TARGETS]
            return {
                target: {
                    **(push if target == "final" else cacheonly),
                    "cache-from": read,
                    "cache-to": [f"type=registry,ref={ref}:{target if seed else f'{target}-{tag}'},{REGISTRY_CACHE}"],
                }
                for target in TARGETS
            }
        raise ValueError(f"not a bake strategy: {strategy}")

    def dockercache(self, config: str, branch: str) -> tuple[float, dict[str, Any], dict[str, Any]]:
        self.counter += 1
        return run_dockercache(self.project, config, self.agent, branch, f"c{self.counter:04d}", "bench")

    def s3_put(self, path: Path, key: str) -> None:
        self.s3.upload_file(str(path), self.bucket, key)

    def s3_get(self, key: str, path: Path) -> bool:
        try:
            self.s3.download_file(self.bucket, key, str(path))
            return True
        except Exception:
            return False

    # ------------------------------------------------------------------------------------------ strategies

    def run_strategy(self, strategy: str, change: str, seed: bool) -> Measure:
        """One CI step (test and final); ``seed`` builds the base state and writes the shared caches."""
        tag = "latest" if seed else f"run{self.counter}"
        self.counter += 1
        blobs_before = self.registry.blobs()
        offset = self.registry.log_offset()
        m = Measure(strategy, change, 0.0, 0, 0)
        if strategy == "old-plugin-s3-tarball":
            m = self.old_plugin(change, seed, tag)
        elif strategy.startswith("dockercache-"):
            config = {"dockercache-registry": "registry.toml", "dockercache-registry-skip": "registry-skip.toml"}.get(
                strategy, "s3.toml"
            )
            m.seconds, svc, document = self.dockercache(config, "main" if seed else f"bench-{tag}")
            m.cached, m.total = svc["steps_cached"], svc["steps_total"]
            # The stages' own seconds overlap (one bake session): the overhead is measured against the wall
            # time of the bake subprocesses, when the engine reports it.
            buildx_seconds = document.get("buildx_seconds")
            m.buildx_seconds = float(buildx_seconds) if isinstance(buildx_seconds, (int, float)) else None
            timings = document.get("timings")
            m.timings = dict(timings) if isinstance(timings, dict) else None
            if strategy == "dockercache-s3":
                m.up_objects = m.s3_up_objects = sum(s["s3"]["up"]["objects"] for s in svc["stages"])
                m.up_bytes = m.s3_up_bytes = sum(s["s3"]["up"]["bytes"] for s in svc["stages"])
                m.down_objects = sum(s["s3"]["down"]["objects"] for s in svc["stages"])
                m.down_bytes = sum(s["s3"]["down"]["bytes"] for s in svc["stages"])
        else:
            m.seconds, m.cached, m.total = self.bake(f"{strategy}-{tag}", self.bake_targets(strategy, tag, seed))
        new = {d: s for d, s in self.registry.blobs().items() if d not in blobs_before}
        m.up_objects += len(new)
        m.up_bytes += sum(new.values())
        objects, size = self.registry.downloads(offset)
        m.down_objects += objects
        m.down_bytes += size
        return m

    def old_plugin(self, change: str, seed: bool, tag: str) -> Measure:
        """The older plugin: restore one gzipped tarball of a local cache dir from S3, build final (cache from
        and to local directories), then test (cache from the restored one), tar the exported directory again,
        upload it whole."""
        started = time.monotonic()
        m = Measure("old-plugin-s3-tarball", change, 0.0, 0, 0)
        restore = self.agent / "old-restore"
        sources: list[str] = []
        with tempfile.TemporaryDirectory(dir=self.agent) as tmp:
            tarball = Path(tmp) / "cache.tar.gz"
            if not seed and self.s3_get("old-plugin/latest.tar.gz", tarball):
                m.down_objects, m.down_bytes = 1, tarball.stat().st_size
                with tarfile.open(tarball) as tar:
                    tar.extractall(restore, filter="data")
                sources = ["--cache-from", f"type=local,src={restore}"]
            export = self.agent / "old-export"
            _, final = self.buildx(
                "final",
                "--push",
                "--tag",
                f"{self.image('old-plugin')}:{tag}",
                *sources,
                "--cache-to",
                f"type=local,dest={export},mode=max",
            )
            _, test = self.buildx("test", "--output", "type=cacheonly", *sources)
            m.cached, m.total = count_steps((final, ["final"]), (test, ["test"]))
            out = Path(tmp) / "new.tar.gz"
            with gzip.open(out, "wb", compresslevel=6) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
                tar.add(export, arcname=".")
            self.s3_put(out, "old-plugin/latest.tar.gz" if seed else f"old-plugin/{tag}.tar.gz")
            m.up_objects, m.up_bytes = 1, out.stat().st_size
        m.seconds = time.monotonic() - started
        return m

    def seed(self, strategies: Sequence[str], log: Callable[[str], None]) -> None:
        """Every strategy's caches, written from the base state as the default branch would."""
        for strategy in strategies:
            if strategy in ("no-cache", WARM):
                continue
            self.reset()
            self.fresh_agent()
            m = self.run_strategy(strategy, "seed", seed=True)
            log(f"seed {strategy}: {m.seconds:.1f}s, {m.cached}/{m.total} cached")

    def retrying(self, what: str, action: Callable[[], T], strategies: Sequence[str], log: Callable[[str], None]) -> T:
        """Run ``action``; after a known BuildKit race, start over on new cache keys (a new BENCH_RUN, every
        strategy seeded again, so nothing the failed solve left held in the daemon can answer) and retry."""
        while True:
            try:
                return action()
            except BuildFailed as failure:
                if not failure.transient or len(self.retries) >= self.max_retries:
                    raise
                self.retries.append({"what": what, "error": failure.reason})
                log(f"{what}: {failure.reason}; a known BuildKit race: new cache keys, seeding again, retrying")
                self.run_id = uuid.uuid4().hex[:12]
                self.retrying("seeding again", partial(self.seed, strategies, log), strategies, log)

    def measure(self, strategy: str, change: str) -> Measure:
        if strategy == WARM:
            self.reset()
            # The agent has built (and pushed) the previous commit; not measured.
            self.bake(f"{WARM}-previous{self.counter}", self.bake_targets(WARM, "previous", seed=False))
            self.apply(change)
        else:
            self.apply(change)
            self.fresh_agent()
        return self.run_strategy(strategy, change, seed=False)


def overhead(repeats: int) -> dict[str, float]:
    """dockercache's own cost: `plan` from a cold start (a new process each time)."""
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        sh(str(DOCKERCACHE), "plan", "--config", str(ROOT / "examples" / "ruby" / "dockercache.toml"))
        times.append(time.monotonic() - started)
    return {"plan_median_s": statistics.median(times), "plan_min_s": min(times), "plan_max_s": max(times)}


def machine() -> dict[str, str]:
    mem = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "?"
    )
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{int(mem) // 1024 // 1024} GiB" if mem.isdigit() else mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": sh("docker", "version", "--format", "{{.Server.Version}}", check=False).stdout.strip(),
        "buildx": sh("docker", "buildx", "version", check=False).stdout.strip(),
        "os": next(
            (
                line.split("=", 1)[1].strip('"')
                for line in Path("/etc/os-release").read_text().splitlines()
                if line.startswith("PRETTY_NAME")
            ),
            "?",
        ),
    }


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def ratio(value: float, denominator: float | None) -> float | None:
    return value / denominator if denominator else None


def summarise(results: list[Measure]) -> list[dict[str, Any]]:
    rows = []

    def medians(strategy: str) -> dict[str, float | None]:
        return {
            c: statistics.median(seconds) if seconds else None
            for c in CHANGES
            for seconds in [[m.seconds for m in results if m.strategy == strategy and m.change == c]]
        }

    warm, hand = medians(WARM), medians(HAND)
    anchors = [medians(a) for a in ANCHORS]
    best: dict[str, float | None] = {}
    for change in CHANGES:
        found = [a[change] for a in anchors if a[change] is not None]
        best[change] = min(v for v in found if v is not None) if found else None
    for strategy in STRATEGIES:
        for change in CHANGES:
            ms = [m for m in results if m.strategy == strategy and m.change == change]
            if not ms:
                continue
            median = statistics.median(m.seconds for m in ms)
            row = {
                "strategy": strategy,
                "change": change,
                "runs": len(ms),
                "median_s": median,
                "min_s": min(m.seconds for m in ms),
                "max_s": max(m.seconds for m in ms),
                "ratio_to_warm": ratio(median, warm[change]),
                "ratio_to_hand_written_bake": ratio(median, hand[change]),
                "ratio_to_best_anchor": ratio(median, best[change]),
                "cached": statistics.median(m.cached for m in ms),
                "total": statistics.median(m.total for m in ms),
                "up_objects": statistics.median(m.up_objects for m in ms),
                "up_bytes": statistics.median(m.up_bytes for m in ms),
                "down_objects": statistics.median(m.down_objects for m in ms),
                "down_bytes": statistics.median(m.down_bytes for m in ms),
            }
            s3_up = [m.s3_up_bytes for m in ms if m.s3_up_bytes is not None]
            if s3_up:
                row["s3_up_objects"] = statistics.median(m.s3_up_objects or 0 for m in ms)
                row["s3_up_bytes"] = statistics.median(s3_up)
            buildx = [m.seconds - m.buildx_seconds for m in ms if m.buildx_seconds is not None]
            if buildx:
                row["overhead_s"] = statistics.median(buildx)
            timed = [m.timings for m in ms if m.timings]
            for key in ("own", "to_first_bake_byte", "before_bake", "after_bake"):
                values = [float(t[key]) for t in timed if isinstance(t.get(key), (int, float))]
                if values:
                    row[f"{key}_s"] = statistics.median(values)
            if timed:  # each step's median seconds, in the order of the first run's
                names = [str(step["name"]) for step in timed[0].get("steps", [])]
                row["steps_s"] = {
                    n: statistics.median(
                        sum(float(st["seconds"]) for st in t.get("steps", []) if st["name"] == n) for t in timed
                    )
                    for n in dict.fromkeys(names)
                }
            rows.append(row)
    return rows


def x_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({'quick' if meta['quick'] else 'full'} run, {meta['date']})",
        "",
        f"Machine: {meta['machine']['os']}, {meta['machine']['cpus']} CPUs, {meta['machine']['memory']}, "
        f"kernel {meta['machine']['kernel']}, Docker {meta['machine']['docker']}, {meta['machine']['buildx']}.",
        f"Reference project: benchmarks/project (SCALE={meta['scale']}: base {meta['scale'] * 5} MB, "
        f"dependencies {meta['scale'] * 10} MB, build output {meta['scale'] * 2} MB). "
        "Every CI step builds two targets: `final` (pushed) and `test` (a stage outside the final image's graph, "
        "kept as cache only); steps cached count the Dockerfile steps of both, each once. "
        f"{meta['repeats']} measured build(s) per cell ({meta.get('headline_repeats', meta['repeats'])} for "
        f"{', '.join(meta.get('headline', ())) or 'none'}), each on a fresh agent (warm-local: same agent), "
        "strategies interleaved, their order rotated in every repeat.",
        "",
        "| strategy | change | wall median (min-max, n) | x warm | x hand-written bake | steps cached "
        "| up (objects / bytes) | down (objects / bytes) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['change']} | {r['median_s']:.1f}s ({r['min_s']:.1f}-{r['max_s']:.1f}, "
            f"{r['runs']}) "
            f"| {x_ratio(r['ratio_to_warm'])} | {x_ratio(r['ratio_to_hand_written_bake'])} "
            f"| {r['cached']:.0f}/{r['total']:.0f} "
            f"| {r['up_objects']:.0f} / {mb(r['up_bytes'])} | {r['down_objects']:.0f} / {mb(r['down_bytes'])} |"
        )
    lines += [
        "",
        "x warm: median over warm-local's (the limit: the same agent rebuilding after the previous commit). "
        "x hand-written bake: median over hand-written-bake's (one bake file, a registry cache per target, "
        "each target reading both). no-cache, inline, compose-plugin-v5, hand-written-bake and warm-local build "
        "both targets in one `docker buildx bake`; old-plugin-s3-tarball builds them in turn with "
        "`docker buildx build`; dockercache with `dockercache build`.",
        "",
        "Up and down count registry traffic (blobs new in the registry's storage; GET blob responses) plus S3 "
        "objects (tarballs, or dockercache's blobs). The base image pull is the same for every strategy and "
        "not counted.",
    ]
    if meta.get("retries"):
        lines += [
            "",
            "Builds that failed on a known BuildKit race (moby/buildkit#3635) and were retried on new cache keys, "
            "every strategy seeded again: " + "; ".join(f"{r['what']} ({r['error']})" for r in meta["retries"]) + ".",
        ]
    ov = meta.get("overhead")
    overheads = [r for r in rows if "overhead_s" in r]
    if ov or overheads:
        lines += ["", "dockercache's own overhead:"]
    if ov:
        lines[-1] += (
            f" `dockercache plan` from a cold start {ov['plan_median_s']:.2f}s median "
            f"({ov['plan_min_s']:.2f}-{ov['plan_max_s']:.2f})" + (";" if overheads else ".")
        )
    if overheads:
        lines[-1] += (
            " build wall time minus the wall time of the buildx bake it drives (`buildx_seconds`; median per "
            "change, includes S3 restore and save for the S3 store; with bytecode, as an installed package has it), "
            "then from dockercache's own timeline (`--json`'s `timings`, from the process's start): its own time, "
            "before the bake, after it, and its longest steps; and the build against the best of the hand-written "
            "bake and the compose plugin:"
        )
        lines.append("")
        for r in overheads:
            line = f"- {r['strategy']}, {r['change']}: {r['overhead_s']:.2f}s"
            if "own_s" in r:
                steps = sorted((r.get("steps_s") or {}).items(), key=lambda item: -item[1])[:3]
                line += (
                    f"; timeline: own {r['own_s']:.2f}s = before the bake {r['before_bake_s']:.2f}s + after it "
                    f"{r['after_bake_s']:.2f}s (longest steps: "
                    + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in steps)
                    + ")"
                )
            if r.get("ratio_to_best_anchor") is not None:
                line += f"; {r['ratio_to_best_anchor']:.2f}x the best anchor"
            lines.append(line)
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart (pip install '.[bench]')", file=sys.stderr)
        return False
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in rows)]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(1, len(strategies))
    for i, strategy in enumerate(strategies):
        values = [
            next((r["median_s"] for r in rows if r["strategy"] == strategy and r["change"] == c), 0) for c in CHANGES
        ]
        ax.bar([x + i * width for x in range(len(CHANGES))], values, width, label=strategy)
    ax.set_xticks([x + width * (len(strategies) - 1) / 2 for x in range(len(CHANGES))], list(CHANGES))
    ax.set_ylabel("wall time, median (s)")
    ax.set_title("Fresh-agent rebuild time by caching strategy (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small project, one repeat: a few minutes")
    parser.add_argument("--repeats", type=int, default=None, help="measured builds per cell (default 3; quick 1)")
    parser.add_argument(
        "--headline-repeats",
        type=int,
        default=None,
        help=f"measured builds per cell of {', '.join(HEADLINE)} (default 5; quick 1)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--only",
        default=",".join(STRATEGIES),
        help=f"comma-separated strategies to run, of: {', '.join(STRATEGIES)} (default: all)",
    )
    args = parser.parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    if not wanted or wanted - set(STRATEGIES):
        parser.error(f"--only: unknown strategy {', '.join(sorted(wanted - set(STRATEGIES))) or '(none given)'}")
    strategies = [s for s in STRATEGIES if s in wanted]
    repeats = args.repeats or (1 if args.quick else 3)
    headline_repeats = max(repeats, args.headline_repeats or (1 if args.quick else 5))
    scale = 1 if args.quick else 4
    values = stack_values()
    work = Path(tempfile.mkdtemp(prefix="dockercache-bench-"))
    registry = Registry(work / "registry", free_port())
    registry.start()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3 = s3_client(values)
    s3.create_bucket(Bucket=bucket)
    bench = Bench(
        scale, work, registry, values["DOCKERCACHE_S3_ENDPOINT"], values["DOCKERCACHE_BASE_IMAGE"], bucket, s3
    )
    bench.max_retries = MAX_RETRIES_QUICK if args.quick else MAX_RETRIES
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    try:
        bench.retrying("seeding", partial(bench.seed, strategies, log), strategies, log)
        for r in range(headline_repeats):
            # Every strategy in the first ``repeats`` rounds, the headline ones after; the order rotates by one
            # each round, so no strategy always follows the same neighbour (or runs first on a cold machine).
            chosen = strategies if r < repeats else [s for s in strategies if s in HEADLINE]
            order = rotated(chosen, r)
            for change in CHANGES:
                for strategy in order:
                    m = bench.retrying(
                        f"{change} {strategy}", partial(bench.measure, strategy, change), strategies, log
                    )
                    bench.results.append(m)
                    log(
                        f"[{r + 1}/{headline_repeats}] {change:<10} {strategy:<22} {m.seconds:6.1f}s "
                        f"{m.cached}/{m.total} cached, up {m.up_objects}/{mb(m.up_bytes)}, "
                        f"down {m.down_objects}/{mb(m.down_bytes)}"
                    )
        meta = {
            "quick": args.quick,
            "scale": scale,
            "repeats": repeats,
            "headline_repeats": headline_repeats,
            "headline": [s for s in HEADLINE if s in strategies],
            "strategies": strategies,
            "retries": bench.retries,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "overhead": overhead(5) if any(s.startswith("dockercache-") for s in strategies) else None,
            "total_seconds": time.monotonic() - started,
        }
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = summarise(bench.results)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "results"
    (args.out / f"{name}.md").write_text(markdown(rows, meta))
    (args.out / f"{name}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "runs": [m.__dict__ for m in bench.results]}, indent=2)
    )
    chart(rows, args.out / f"{name}.png")
    print(markdown(rows, meta))
    if not args.quick and args.out.resolve() == DEFAULT_OUT and set(strategies) == set(STRATEGIES):
        import readme  # benchmarks/readme.py: the README's figures come from these results only

        readme.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
