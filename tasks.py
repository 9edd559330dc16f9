"""Tasks for working on dockercache itself, plus dockercache's own tasks (build, plan, check, builder.*).

A project using dockercache needs only: ``from dockercache.tasks import ns``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from dockercache.config.schema import build_schema
from dockercache.tasks import collection

ROOT = Path(__file__).resolve().parent
SCHEMA = ROOT / "config" / "dockercache.schema.json"
MUTATION_REPORT = ROOT / "tests" / "mutation.md"


@task()
def schema(c: Context) -> None:
    """Regenerate config/dockercache.schema.json from the configuration dataclasses."""
    SCHEMA.write_text(json.dumps(build_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA.relative_to(ROOT)}")


@task()
def stack(c: Context) -> None:
    """Install (where missing) and start Docker, the registry and the S3 server on loopback."""
    c.run(f"bash {ROOT / 'scripts' / 'stack.sh'} up", pty=False)


@task(help={"e2e": "Run only the end-to-end tests (needs the stack)", "k": "pytest -k expression"})
def test(c: Context, e2e: bool = False, k: str = "") -> None:
    """Run the test suite (the stack must be up: invoke stack)."""
    args = ["-m e2e"] if e2e else []
    if k:
        args.append(f"-k '{k}'")
    c.run(f"python -m pytest {' '.join(args)}", pty=False)


@task(help={"quick": "Small project, one repeat (a few minutes; what CI runs)", "repeats": "Measured builds per cell"})
def bench(c: Context, quick: bool = False, repeats: int = 0) -> None:
    """Benchmark fresh-agent rebuilds: eight caching strategies side by side (results in benchmarks/results/)."""
    args = ["--quick"] if quick else []
    if repeats:
        args += ["--repeats", str(repeats)]
    c.run(f"python {ROOT / 'benchmarks' / 'bench.py'} {' '.join(args)}", pty=False)


@task(name="bench-cold-start", help={"quick": "Fewer repeats (what CI runs)"})
def bench_cold_start(c: Context, quick: bool = False) -> None:
    """Benchmark dockercache's cold starts (--version, plan) and the Buildkite plugin's first job on an empty agent."""
    c.run(f"python {ROOT / 'benchmarks' / 'cold_start.py'} {'--quick' if quick else ''}", pty=False)


@task()
def lint(c: Context) -> None:
    """ruff and mypy --strict."""
    formatted = "dockercache tests tasks.py examples benchmarks scripts"
    c.run(f"ruff check . && ruff format --check {formatted} && mypy", pty=False)


@task(
    help={
        "workers": "mutmut worker processes (default 1: a full run takes about 10 minutes on 2 cores)",
        "incremental": "Keep mutants/ from the last run and test only what changed since",
    }
)
def mutate(c: Context, workers: int = 1, incremental: bool = False) -> None:
    """Mutation testing of the pure core with the fast unit tests (mutmut); writes tests/mutation.md."""
    if importlib.util.find_spec("mutmut") is None:
        raise Exit("mutmut is not installed: pip install -e '.[mutation]'", code=1)
    if not incremental:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.monotonic()
    with c.cd(str(ROOT)):
        c.run(f"{sys.executable} -m mutmut run --max-children {workers}", pty=False)
        seconds = round(time.monotonic() - started)
        c.run(
            f"{sys.executable} scripts/mutation_report.py --seconds {seconds} --workers {workers}"
            f" --output {MUTATION_REPORT.relative_to(ROOT)}",
            pty=False,
        )


ns: Collection = collection()
ns.add_task(schema)
ns.add_task(stack)
ns.add_task(test)
ns.add_task(lint)
ns.add_task(bench)
ns.add_task(bench_cold_start)
ns.add_task(mutate)
