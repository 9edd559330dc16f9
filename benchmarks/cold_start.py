"""dockercache's own start: `dockercache --version` and `dockercache plan` from a cold start (a new process each
time), with bytecode (as a package pip installed has it) and without (as these machines run Python:
PYTHONDONTWRITEBYTECODE=1); and the Buildkite plugin's first job on an empty agent (an empty home: no virtualenv,
no pip or uv cache), up to where the bake would start (the plugin's dry run: the plan printed), with the host's
pip and with uv, then its second job (the virtualenv kept).

Usage: python benchmarks/cold_start.py [--quick] [--out benchmarks/results] (or `invoke bench-cold-start`).
Writes cold-start.json and cold-start.md (quick: cold-start-quick.*). Needs no Docker daemon but for the
plugin's `docker` calls of a dry run (none that build); needs the network (or the machine's package index) for
the plugin's dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
EXAMPLE = ROOT / "examples" / "ruby"
HOOK = ROOT / "hooks" / "command"
REQUIREMENTS = ROOT / "hooks" / "requirements.txt"
DOCKERCACHE = Path(sys.executable).parent / "dockercache"


def timed(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run(list(argv), cwd=cwd, env=dict(env), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def summary(times: Sequence[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_", "PYTHONPYCACHE"))}


def cold_starts(repeats: int, work: Path) -> dict[str, Any]:
    """`--version` and `plan` of examples/ruby, each a new process: with bytecode (a cache the first run writes)
    and without any (an empty cache directory, nothing written)."""
    found: dict[str, Any] = {}
    for bytecode in (True, False):
        env = base_env()
        prefix = work / ("bytecode" if bytecode else "none")
        env["PYTHONPYCACHEPREFIX"] = str(prefix)  # pyc files beside the sources are not read either
        if bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        for name, args in (("version", ["--version"]), ("plan", ["plan"])):
            argv = [str(DOCKERCACHE), *args]
            if bytecode:
                timed(argv, env, EXAMPLE)  # writes the bytecode
            found[f"{name}_{'bytecode' if bytecode else 'no_bytecode'}"] = summary(
                [timed(argv, env, EXAMPLE) for _ in range(repeats)]
            )
    return found


def without_dockercache(path: str) -> str:
    """PATH without any directory that holds a `dockercache` (the hook would use an installed one)."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not (Path(d) / "dockercache").exists())


def uv_binary(work: Path) -> Path | None:
    """uv, from PATH or installed with pip into ``work`` (as an agent image would have it); None if it cannot be."""
    found = shutil.which("uv")
    if found:
        return Path(found)
    target = work / "uv"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), "uv"],
        capture_output=True,
        text=True,
        check=False,
    )
    binary = target / "bin" / "uv"
    return binary if proc.returncode == 0 and binary.exists() else None


def plugin_job(home: Path, checkout: Path, extra_path: str | None) -> float:
    """One job of the plugin's hook (dry run) with ``home`` as the agent's home directory."""
    env = base_env()
    env.pop("PIP_CACHE_DIR", None)
    env.pop("UV_CACHE_DIR", None)
    env.update(
        {
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "PATH": (f"{extra_path}{os.pathsep}" if extra_path else "") + without_dockercache(os.environ["PATH"]),
            "BUILDKITE": "true",
            "BUILDKITE_PIPELINE_SLUG": "bench",
            "BUILDKITE_BRANCH": "main",
            "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "main",
            "BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567",
            "BUILDKITE_PLUGIN_NAME": "DOCKERCACHE",
            "BUILDKITE_PLUGIN_CONFIGURATION": json.dumps(
                {"service": "ruby", "image_repository": "registry.example/bench/ruby", "dry_run": True}
            ),
            "BUILDKITE_AGENT_STUB_DIR": str(home / "agent"),
        }
    )
    env["PATH"] = f"{ROOT / 'tests' / 'bin'}{os.pathsep}{env['PATH']}"  # the stand-in agent
    return timed([str(HOOK)], env, checkout)


def plugin_jobs(repeats: int, work: Path) -> dict[str, Any]:
    """The first job on an empty home, then a second job on the same home; with the host's pip, with uv."""
    checkout = work / "checkout"
    shutil.copytree(EXAMPLE, checkout, ignore=shutil.ignore_patterns(".dockercache"))
    uv = uv_binary(work)
    found: dict[str, Any] = {"uv": None if uv is None else subprocess.check_output([str(uv), "--version"], text=True)}
    for installer in ("pip", "uv"):
        if installer == "uv" and uv is None:
            continue
        extra = str(uv.parent) if installer == "uv" and uv is not None else None
        first, second = [], []
        for i in range(repeats):
            home = work / f"home-{installer}-{i}"
            home.mkdir()
            first.append(plugin_job(home, checkout, extra))
            second.append(plugin_job(home, checkout, extra))
        found[f"first_job_{installer}"] = summary(first)
        found[f"second_job_{installer}"] = summary(second)
    found["network"] = download_size(work)
    return found


def download_size(work: Path) -> dict[str, int]:
    """What the first job fetches: the wheels of hooks/requirements.txt for this interpreter."""
    target = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-r", str(REQUIREMENTS), "-d", str(target)],
        capture_output=True,
        check=True,
    )
    files = list(target.glob("*"))
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def markdown(document: Mapping[str, Any]) -> str:
    meta, starts, plugin = document["meta"], document["cold_starts"], document["plugin"]

    def cell(key: str, where: Mapping[str, Any]) -> str:
        row = where.get(key)
        if not row:
            return "-"
        return f"{row['median_s']:.2f}s ({row['min_s']:.2f}-{row['max_s']:.2f}, n={row['runs']})"

    lines = [
        f"# Cold starts ({'quick' if meta['quick'] else 'full'} run, {meta['date']})",
        "",
        f"Python {meta['python']}, {meta['cpus']} CPUs. Median (min-max) of new processes.",
        "",
        "| command | with bytecode | without bytecode |",
        "|---|---|---|",
        f"| `dockercache --version` | {cell('version_bytecode', starts)} | {cell('version_no_bytecode', starts)} |",
        f"| `dockercache plan` | {cell('plan_bytecode', starts)} | {cell('plan_no_bytecode', starts)} |",
        "",
        "The Buildkite plugin's hook on an agent with an empty home directory, to the plan a dry run prints (where "
        "the bake would start), then the same agent's next job:",
        "",
        "| installer | first job | second job |",
        "|---|---|---|",
        f"| host's pip | {cell('first_job_pip', plugin)} | {cell('second_job_pip', plugin)} |",
        f"| uv ({(plugin.get('uv') or 'not available').strip()}) | {cell('first_job_uv', plugin)} | "
        f"{cell('second_job_uv', plugin)} |",
        "",
        f"The first job fetches {plugin['network']['files']} wheels, {plugin['network']['bytes'] / 1e6:.1f} MB "
        "(hooks/requirements.txt, from the index pip or uv is configured with); dockercache itself runs from the "
        "plugin's checkout.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 9
    work = Path(tempfile.mkdtemp(prefix="dockercache-cold-"))
    try:
        starts = cold_starts(repeats, work)
        plugin = plugin_jobs(1 if args.quick else 3, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    document = {
        "meta": {
            "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "cold_starts": starts,
        "plugin": plugin,
    }
    name = "cold-start-quick" if args.quick else "cold-start"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
