"""A long-lived agent: many builds in a row on one Docker daemon, and what they leave behind.

Agents that are kept (not started empty per job) run build after build. Each build of the example project
(examples/ruby) after a one-file change exports a new local cache version and leaves new records in BuildKit's
build cache. This replays N builds in a row, a few seconds apart, twice, each time on a long-lived agent of its
own (a private daemon nothing else uses): without a bound on the builder's build cache and with
``builder.keep_storage``; after every build it records the local store's versions and bytes and the build
cache's size (``docker buildx du``).

Usage: python benchmarks/long_lived.py [--builds 30] [--keep-storage 20MB]   (needs the stack)
Writes benchmarks/results/long-lived.json and long-lived.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents import Daemon, fresh_daemon
from bench import DOCKERCACHE, machine, stack_values

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ruby"
OUT = Path(__file__).resolve().parent / "results"
DEPENDENCY_EVERY = 3
"""Every third build also bumps a dependency (the others change one file)."""
UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def config(base_image: str, keep_storage: str | None) -> str:
    bound = f'keep_storage = "{keep_storage}"\n' if keep_storage else ""
    return f"""[builder]
name = "default"
driver = "docker"
{bound}
[caches.local]
type = "local"
path = "store"

[services.ruby]
context = "app-src"
stages = ["base", "deps"]
target = "final"
args = {{ BASE_IMAGE = "{base_image}" }}
"""


def project(where: Path, run: str) -> Path:
    """examples/ruby as this run's own (an ARG in the first stage keeps other runs' build cache from answering),
    its context beside the store (a store inside the context would be sent with it)."""
    path = where / "project"
    shutil.copytree(EXAMPLE, path / "app-src", ignore=shutil.ignore_patterns(".dockercache", "dockercache.toml"))
    dockerfile = path / "app-src" / "Dockerfile"
    first = "FROM ${BASE_IMAGE} AS base\n"
    dockerfile.write_text(dockerfile.read_text().replace(first, f"{first}ARG BENCH_RUN={run}\n", 1))
    return path


def build_cache_bytes(daemon: Daemon) -> int:
    """``docker buildx du``'s total for the daemon's builder, in bytes."""
    out = daemon.docker("buildx", "du", "--builder", "default", check=False).stdout
    totals = re.findall(r"^Total:\s+([0-9.]+)\s*([KMGT]?B)", out, re.MULTILINE)
    if not totals:
        return 0
    value, unit = totals[-1]
    return int(float(value) * UNITS[unit])


def store_figures(store: Path) -> tuple[int, int, int]:
    """(versions, bytes, live bytes) of the local store: every stage's version directories and all their files,
    and the files of the versions its stage links point at (the cache itself)."""
    versions = sum(1 for p in store.rglob("*.v-*") if p.is_dir() and not p.is_symlink()) if store.exists() else 0
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and not p.is_symlink())
    links = [p.resolve() for p in store.rglob("*") if p.is_symlink()] if store.exists() else []
    live = sum(f.stat().st_size for d in links if d.is_dir() for f in d.rglob("*") if f.is_file())
    return versions, size, live


def series(builds: int, keep_storage: str | None, values: dict[str, str], pause: float) -> list[dict[str, Any]]:
    """One long-lived agent (a private daemon of its own: nothing else builds on it or prunes it) building
    ``builds`` commits in a row."""
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="dockercache-long-lived-") as tmp, fresh_daemon() as daemon:
        path = project(Path(tmp), run)
        (path / "dockercache.toml").write_text(config(values["DOCKERCACHE_BASE_IMAGE"], keep_storage))
        env = daemon.environ({k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))})
        env.update({"CI": "true", "BUILDKITE_BRANCH": "main", "BUILDKITE_PIPELINE_SLUG": "long-lived"})
        rows = []
        for n in range(1, builds + 1):
            with (path / "app-src" / "app" / "main.sh").open("a") as f:
                f.write(f"# build {n}\n")
            if n % DEPENDENCY_EVERY == 0:  # a dependency bump: the deps stage builds new layers of a few MB
                with (path / "app-src" / "Gemfile.lock").open("a") as f:
                    f.write(f"bench-gem-{n} 1.0.{n}\n")
            env["BUILDKITE_COMMIT"] = f"{n:040x}"
            started = time.monotonic()
            proc = subprocess.run(
                [str(DOCKERCACHE), "build", "--json", "--no-push"], cwd=path, env=env, capture_output=True, text=True
            )
            seconds = time.monotonic() - started
            if proc.returncode != 0:
                raise SystemExit(f"build {n} failed:\n{proc.stderr[-3000:]}")
            # The agent cleans up between jobs as kept agents do: the image this job loaded goes (it would pin
            # its layers, which no prune of the build cache can then reclaim).
            images = daemon.docker("image", "ls", "--quiet").stdout.split()
            if images:
                daemon.docker("image", "rm", "--force", *sorted(set(images)), check=False)
            versions, size, live = store_figures(path / "store")
            rows.append(
                {
                    "build": n,
                    "wall_s": round(seconds, 2),
                    "store_versions": versions,
                    "store_bytes": size,
                    "live_bytes": live,
                    "build_cache_bytes": build_cache_bytes(daemon),
                }
            )
            print(f"{keep_storage or 'unbounded'} {rows[-1]}", file=sys.stderr, flush=True)
            time.sleep(pause)
        return rows


def markdown(document: dict[str, Any]) -> str:
    meta = document["meta"]
    lines = [
        f"{meta['builds']} builds in a row on one agent ({meta['pause_s']} s apart; a one-file change each, every "
        f"{DEPENDENCY_EVERY}rd also a dependency bump; the loaded image removed after each, as agents clean up "
        f"between jobs), examples/ruby, local store; run {meta['date']} "
        f"({meta['machine']['cpus']} CPUs, Docker {meta['machine']['docker']}).",
        "",
        "| builder.keep_storage | after build | local store versions | local store | build cache (buildx du) |",
        "|---|---|---|---|---|",
    ]
    for label, rows in document["series"].items():
        for row in rows:
            if row["build"] in (1, 5, 10, 20, meta["builds"]) or row["build"] % 10 == 0:
                lines.append(
                    f"| {label} | {row['build']} | {row['store_versions']} | {row['store_bytes'] / 1e6:.1f} MB | "
                    f"{row['build_cache_bytes'] / 1e6:.1f} MB |"
                )
    for label, summary in document["summary"].items():
        lines.append("")
        lines.append(
            f"- {label}: at most {summary['max_store_versions']} versions, the store at most "
            f"{summary['max_store_ratio']:.1f}x the live cache; build cache "
            f"{summary['first_build_cache_mb']:.1f} MB after build 1, {summary['last_build_cache_mb']:.1f} MB after "
            f"build {meta['builds']}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=30)
    parser.add_argument("--keep-storage", default="20MB")
    parser.add_argument("--pause", type=float, default=2.5, help="seconds between builds")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    values = stack_values()
    document: dict[str, Any] = {
        "meta": {
            "builds": args.builds,
            "pause_s": args.pause,
            "keep_storage": args.keep_storage,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
        },
        "series": {},
        "summary": {},
    }
    for label, bound in (("unset", None), (args.keep_storage, args.keep_storage)):
        rows = series(args.builds, bound, values, args.pause)
        document["series"][label] = rows
        document["summary"][label] = {
            "max_store_versions": max(r["store_versions"] for r in rows),
            "max_store_ratio": max(r["store_bytes"] / r["live_bytes"] for r in rows if r["live_bytes"]),
            "first_build_cache_mb": rows[0]["build_cache_bytes"] / 1e6,
            "last_build_cache_mb": rows[-1]["build_cache_bytes"] / 1e6,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long-lived.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "long-lived.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
