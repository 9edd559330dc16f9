"""Fresh-agent rebuilds of a reference project, six caching strategies side by side in one run.

Every strategy is seeded once from the project's base state (its caches written as the default branch would),
then measured on builds of changed states, each on a fresh agent (build cache, images, builders' state and
local cache directories wiped), interleaved: for each repeat, for each change, every strategy in turn, so
drift on the shared machine hits them alike. Measured builds read the seeded caches and write their own new
entry (as a CI build of a new commit would), without disturbing what the next measurement reads.

Usage: python benchmarks/bench.py [--quick] [--repeats N] [--out benchmarks/results]
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dockercache.progress import BuildEvents, RawJsonDecoder  # noqa: E402

PROJECT = Path(__file__).resolve().parent / "project"
CHANGES = ("none", "one-file", "dependency")
STRATEGIES = ("no-cache", "inline", "old-plugin-s3-tarball", "dockercache-registry", "dockercache-s3", "warm-local")
DOCKERCACHE = Path(sys.executable).parent / "dockercache"


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


def wipe_agent(agent: Path) -> None:
    """A fresh CI agent: no build cache, no images, no local cache directories."""
    sh("docker", "buildx", "prune", "--all", "--force")
    ids = sh("docker", "image", "ls", "--all", "--quiet").stdout.split()
    if ids:
        sh("docker", "image", "rm", "--force", *sorted(set(ids)), check=False)
    shutil.rmtree(agent, ignore_errors=True)


def run_dockercache(
    project: Path, config: str, agent: Path, branch: str, commit: str, pipeline: str
) -> tuple[float, dict[str, Any]]:
    """`dockercache build --json` as a CI job would run it; returns wall seconds and the first service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}
    env.update(
        {
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
        raise SystemExit(f"dockercache failed ({config}):\n{proc.stderr[-3000:]}")
    return seconds, dict(json.loads(proc.stdout)["services"][0])


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_steps(stream: str) -> tuple[int, int]:
    events = BuildEvents()
    decoder = RawJsonDecoder()
    for item in decoder.feed(stream):
        events.apply(item)
    for item in decoder.close():
        events.apply(item)
    steps = events.by_stage().values()
    return sum(s.cached for s in steps), sum(s.total for s in steps)


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
    counter: int = 0

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
stages = ["base", "deps", "build"]
target = "final"
args = {{ BASE_IMAGE = "{self.base_image}", SCALE = "{self.scale}" }}
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

    def buildx(self, *flags: str) -> tuple[float, int, int]:
        argv = [
            "docker",
            "buildx",
            "build",
            "--progress",
            "rawjson",
            "--builder",
            "default",
            "--build-arg",
            f"BASE_IMAGE={self.base_image}",
            "--build-arg",
            f"SCALE={self.scale}",
            "--target",
            "final",
            *flags,
            str(self.project),
        ]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"build failed: {' '.join(argv)}\n{proc.stderr[-2000:]}")
        cached, total = count_steps(proc.stderr)
        return seconds, cached, total

    def dockercache(self, config: str, branch: str) -> tuple[float, dict[str, Any]]:
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
        """One build; ``seed`` builds the base state and writes the shared caches."""
        tag = "latest" if seed else f"run{self.counter}"
        self.counter += 1
        blobs_before = self.registry.blobs()
        offset = self.registry.log_offset()
        m = Measure(strategy, change, 0.0, 0, 0)
        if strategy in ("no-cache", "warm-local"):
            m.seconds, m.cached, m.total = self.buildx("--push", "--tag", f"{self.image(strategy)}:{tag}")
        elif strategy == "inline":
            flags = ["--push", "--tag", f"{self.image(strategy)}:{tag}", "--cache-to", "type=inline"]
            if not seed:
                flags += ["--cache-from", f"type=registry,ref={self.image(strategy)}:latest"]
            m.seconds, m.cached, m.total = self.buildx(*flags)
        elif strategy == "old-plugin-s3-tarball":
            m = self.old_plugin(change, seed, tag)
        else:
            config = "registry.toml" if strategy == "dockercache-registry" else "s3.toml"
            m.seconds, svc = self.dockercache(config, "main" if seed else f"bench-{tag}")
            m.cached, m.total = svc["steps_cached"], svc["steps_total"]
            m.buildx_seconds = sum(s["seconds"] for s in svc["stages"])
            if strategy == "dockercache-s3":
                m.up_objects = sum(s["s3"]["up"]["objects"] for s in svc["stages"])
                m.up_bytes = sum(s["s3"]["up"]["bytes"] for s in svc["stages"])
                m.down_objects = sum(s["s3"]["down"]["objects"] for s in svc["stages"])
                m.down_bytes = sum(s["s3"]["down"]["bytes"] for s in svc["stages"])
        new = {d: s for d, s in self.registry.blobs().items() if d not in blobs_before}
        m.up_objects += len(new)
        m.up_bytes += sum(new.values())
        objects, size = self.registry.downloads(offset)
        m.down_objects += objects
        m.down_bytes += size
        return m

    def old_plugin(self, change: str, seed: bool, tag: str) -> Measure:
        """The older plugin: restore one gzipped tarball of a local cache dir from S3, build, tar it all again,
        upload it whole."""
        started = time.monotonic()
        m = Measure("old-plugin-s3-tarball", change, 0.0, 0, 0)
        restore = self.agent / "old-restore"
        flags = ["--push", "--tag", f"{self.image('old-plugin')}:{tag}"]
        with tempfile.TemporaryDirectory(dir=self.agent) as tmp:
            tarball = Path(tmp) / "cache.tar.gz"
            if not seed and self.s3_get("old-plugin/latest.tar.gz", tarball):
                m.down_objects, m.down_bytes = 1, tarball.stat().st_size
                with tarfile.open(tarball) as tar:
                    tar.extractall(restore, filter="data")
                flags += ["--cache-from", f"type=local,src={restore}"]
            export = self.agent / "old-export"
            flags += ["--cache-to", f"type=local,dest={export},mode=max"]
            _, m.cached, m.total = self.buildx(*flags)
            out = Path(tmp) / "new.tar.gz"
            with gzip.open(out, "wb", compresslevel=6) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
                tar.add(export, arcname=".")
            self.s3_put(out, "old-plugin/latest.tar.gz" if seed else f"old-plugin/{tag}.tar.gz")
            m.up_objects, m.up_bytes = 1, out.stat().st_size
        m.seconds = time.monotonic() - started
        return m

    def measure(self, strategy: str, change: str) -> Measure:
        if strategy == "warm-local":
            self.reset()
            self.buildx()  # the agent has built the previous commit; not measured
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


def summarise(results: list[Measure]) -> list[dict[str, Any]]:
    rows = []
    warm = {
        c: statistics.median([m.seconds for m in results if m.strategy == "warm-local" and m.change == c])
        for c in CHANGES
    }
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
                "ratio_to_warm": median / warm[change],
                "cached": statistics.median(m.cached for m in ms),
                "total": statistics.median(m.total for m in ms),
                "up_objects": statistics.median(m.up_objects for m in ms),
                "up_bytes": statistics.median(m.up_bytes for m in ms),
                "down_objects": statistics.median(m.down_objects for m in ms),
                "down_bytes": statistics.median(m.down_bytes for m in ms),
            }
            buildx = [m.seconds - m.buildx_seconds for m in ms if m.buildx_seconds is not None]
            if buildx:
                row["overhead_s"] = statistics.median(buildx)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({'quick' if meta['quick'] else 'full'} run, {meta['date']})",
        "",
        f"Machine: {meta['machine']['os']}, {meta['machine']['cpus']} CPUs, {meta['machine']['memory']}, "
        f"kernel {meta['machine']['kernel']}, Docker {meta['machine']['docker']}, {meta['machine']['buildx']}.",
        f"Reference project: benchmarks/project (SCALE={meta['scale']}: base {meta['scale'] * 5} MB, "
        f"dependencies {meta['scale'] * 10} MB, build output {meta['scale'] * 2} MB). "
        f"{meta['repeats']} measured build(s) per cell, each on a fresh agent (warm-local: same agent), "
        "strategies interleaved.",
        "",
        "| strategy | change | wall median (min-max) | x warm | steps cached | up (objects / bytes) "
        "| down (objects / bytes) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['change']} | {r['median_s']:.1f}s ({r['min_s']:.1f}-{r['max_s']:.1f}) "
            f"| {r['ratio_to_warm']:.2f} | {r['cached']:.0f}/{r['total']:.0f} "
            f"| {r['up_objects']:.0f} / {mb(r['up_bytes'])} | {r['down_objects']:.0f} / {mb(r['down_bytes'])} |"
        )
    ov = meta["overhead"]
    lines += [
        "",
        "Up and down count registry traffic (blobs new in the registry's storage; GET blob responses) plus S3 "
        "objects (tarballs, or dockercache's blobs). The base image pull is the same for every strategy and "
        "not counted.",
        "",
        f"dockercache's own overhead: `dockercache plan` from a cold start {ov['plan_median_s']:.2f}s median "
        f"({ov['plan_min_s']:.2f}-{ov['plan_max_s']:.2f}); build wall time minus the buildx time it drives "
        "(median per change, includes S3 restore and save for the S3 store):",
        "",
    ]
    for r in rows:
        if "overhead_s" in r:
            lines.append(f"- {r['strategy']}, {r['change']}: {r['overhead_s']:.2f}s")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart (pip install '.[bench]')", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(STRATEGIES)
    for i, strategy in enumerate(STRATEGIES):
        values = [
            next((r["median_s"] for r in rows if r["strategy"] == strategy and r["change"] == c), 0) for c in CHANGES
        ]
        ax.bar([x + i * width for x in range(len(CHANGES))], values, width, label=strategy)
    ax.set_xticks([x + width * (len(STRATEGIES) - 1) / 2 for x in range(len(CHANGES))], list(CHANGES))
    ax.set_ylabel("wall time, median (s)")
    ax.set_title("Fresh-agent rebuild time by caching strategy (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small project, one repeat: a few minutes")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    scale = 1 if args.quick else 4
    values = stack_values()
    import boto3

    work = Path(tempfile.mkdtemp(prefix="dockercache-bench-"))
    registry = Registry(work / "registry", free_port())
    registry.start()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=values["DOCKERCACHE_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
    )
    s3.create_bucket(Bucket=bucket)
    bench = Bench(
        scale, work, registry, values["DOCKERCACHE_S3_ENDPOINT"], values["DOCKERCACHE_BASE_IMAGE"], bucket, s3
    )
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    try:
        for strategy in STRATEGIES:
            if strategy in ("no-cache", "warm-local"):
                continue
            bench.reset()
            bench.fresh_agent()
            seed = bench.run_strategy(strategy, "seed", seed=True)
            log(f"seed {strategy}: {seed.seconds:.1f}s, {seed.cached}/{seed.total} cached")
        for r in range(repeats):
            for change in CHANGES:
                for strategy in STRATEGIES:
                    m = bench.measure(strategy, change)
                    bench.results.append(m)
                    log(
                        f"[{r + 1}/{repeats}] {change:<10} {strategy:<22} {m.seconds:6.1f}s "
                        f"{m.cached}/{m.total} cached, up {m.up_objects}/{mb(m.up_bytes)}, "
                        f"down {m.down_objects}/{mb(m.down_bytes)}"
                    )
        meta = {
            "quick": args.quick,
            "scale": scale,
            "repeats": repeats,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "overhead": overhead(5),
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
