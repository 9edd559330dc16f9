"""Cache mounts on a fresh agent: a dependency change, with and without ``cache_mounts = true``.

The project (benchmarks/mounts-project) installs packages through a ``RUN --mount=type=cache`` step whose
package manager keeps every package it built in the mount. A dependency change (one more package) misses the
layer cache for that step everywhere; on a fresh agent the step then builds every package again, unless
dockercache restored the mount. Each store (registry, S3) is seeded once on the default branch; then every
repeat builds once with cache mounts and once without (order rotated), each on a wiped agent after a new
dependency, with the same layer cache. Measured: the ``deps`` stage (the step), the whole ``dockercache build``
(restoring and saving the mounts included), and the bytes restored and saved.

Usage: python benchmarks/cache_mounts.py [--repeats N]   (needs the stack: bash scripts/stack.sh up)
Writes benchmarks/results/cache-mounts.json and cache-mounts.md, then the README's block (benchmarks/readme.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import machine, rotated, run_dockercache, s3_client, stack_values, wipe_agent

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "mounts-project"
OUT = Path(__file__).resolve().parent / "results"
VARIANTS = ("with cache mounts", "without")
FILES = {"with cache mounts": "on.toml", "without": "off.toml"}
STORES = ("registry", "s3")


def config(store: str, values: dict[str, str], name: str, mounts: bool, run: str) -> str:
    caches = {
        "registry": f'type = "registry"\nref = "{values.get("DOCKERCACHE_REGISTRY", "localhost:5000")}/{name}/cache"',
        "s3": f'type = "s3"\nbucket = "{name}"\nendpoint_url = "{values["DOCKERCACHE_S3_ENDPOINT"]}"\n'
        'region = "us-east-1"',
    }[store]
    base = values["DOCKERCACHE_BASE_IMAGE"]
    return f"""[settings]
cache_mounts = {"true" if mounts else "false"}
cache_mounts_image = "{base}"

[builder]
name = "default"
driver = "docker"

[caches.default]
{caches}

[services.app]
context = "."
stages = ["deps"]
target = "final"
tags = ["{name}"]
args = {{ BASE_IMAGE = "{base}", BENCH_RUN = "{run}" }}
"""


def packages(project: Path, extra: str) -> None:
    """The base lock plus one package of this build's own: a dependency change."""
    base = (PROJECT / "packages.lock").read_text()
    (project / "packages.lock").write_text(base + f"{extra} 1.0.0\n")


def measure(project: Path, cfg: str, agent: Path, commit: str) -> dict[str, Any]:
    seconds, service, _ = run_dockercache(project, cfg, agent, "main", commit, "bench-mounts")
    deps = next(s for s in service["stages"] if s["stage"] == "deps")
    mounts = service.get("cache_mounts") or {}
    return {
        "wall_s": round(seconds, 2),
        "deps_s": round(float(deps["seconds"]), 2),
        "restored_bytes": int(mounts.get("restored_bytes", 0)),
        "saved_bytes": int(mounts.get("saved_bytes", 0)),
        "warnings": list(mounts.get("warnings", [])),
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def markdown(document: dict[str, Any]) -> str:
    lines = [
        "# Cache mounts figures",
        "",
        f"{'Full' if document['repeats'] >= 3 else 'Trial'} run, {document['finished']}, "
        f"{document['repeats']} repeats per cell; "
        f"{document['packages']} packages, one added per build; every build on a wiped agent.",
        "",
        "| store | cache mounts | deps step, median (min-max) | whole build, median | restored | saved |",
        "|---|---|---|---|---|---|",
    ]
    for row in document["rows"]:
        deps, wall = row["deps_s"], row["wall_s"]
        lines.append(
            f"| {row['store']} | {row['variant']} | {median(deps)}s ({min(deps)}-{max(deps)}) | {median(wall)}s | "
            f"{row['restored_mb']:.1f} MB | {row['saved_mb']:.1f} MB |"
        )
    lines.append("")
    for store in STORES:
        on, off = (next(r for r in document["rows"] if (r["store"], r["variant"]) == (store, v)) for v in VARIANTS)
        step = median(off["deps_s"]) / median(on["deps_s"])
        whole = median(off["wall_s"]) / median(on["wall_s"])
        lines.append(f"- {store}: with cache mounts the dependency step is {step:.1f}x faster, the build {whole:.1f}x.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    values = stack_values()
    s3 = s3_client(values)
    work = Path(tempfile.mkdtemp(prefix="dockercache-mounts-bench-"))
    project, agent = work / "project", work / "agent"
    shutil.copytree(PROJECT, project)
    run = uuid.uuid4().hex[:8]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for store in STORES:
            name = f"mounts{run}{store}"
            if store == "s3":
                s3.create_bucket(Bucket=name)
            for variant in VARIANTS:
                (project / FILES[variant]).write_text(config(store, values, name, variant == VARIANTS[0], run))
            wipe_agent(agent)
            packages(project, "seed")
            seeded = measure(project, FILES[VARIANTS[0]], agent, "c0")
            print(f"{store}: seeded in {seeded['wall_s']}s ({seeded['saved_bytes']:,} bytes of cache mounts saved)")
            for repeat in range(args.repeats):
                for variant in rotated(VARIANTS, repeat):
                    wipe_agent(agent)
                    slug = FILES[variant].removesuffix(".toml")
                    packages(project, f"new{repeat}{slug}")
                    sample = measure(project, FILES[variant], agent, f"c{repeat}{slug}")
                    samples.setdefault((store, variant), []).append(sample)
                    print(f"{store} {variant} #{repeat + 1}: deps {sample['deps_s']}s, build {sample['wall_s']}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        {
            "store": store,
            "variant": variant,
            "deps_s": [s["deps_s"] for s in found],
            "wall_s": [s["wall_s"] for s in found],
            "restored_mb": statistics.median(s["restored_bytes"] for s in found) / 1e6,
            "saved_mb": statistics.median(s["saved_bytes"] for s in found) / 1e6,
            "warnings": sorted({w for s in found for w in s["warnings"]}),
        }
        for (store, variant), found in samples.items()
    ]
    document = {
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "repeats": args.repeats,
        "packages": len((PROJECT / "packages.lock").read_text().split()) // 2 + 1,
        "machine": machine(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache-mounts.json").write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(document)
    (args.out / "cache-mounts.md").write_text(text)
    print(text)
    if args.out == OUT:
        import readme

        readme.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
