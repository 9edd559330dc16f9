"""Tasks for working on dockercache itself, plus dockercache's own tasks (build, plan, check, builder.*).

A project using dockercache needs only: ``from dockercache.tasks import ns``.
"""

from __future__ import annotations

import json
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from dockercache.schema import build_schema
from dockercache.tasks import collection

ROOT = Path(__file__).resolve().parent
SCHEMA = ROOT / "config" / "dockercache.schema.json"


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


@task()
def lint(c: Context) -> None:
    """ruff and mypy --strict."""
    c.run("ruff check . && ruff format --check dockercache tests tasks.py examples benchmarks && mypy", pty=False)


ns: Collection = collection()
ns.add_task(schema)
ns.add_task(stack)
ns.add_task(test)
ns.add_task(lint)
ns.add_task(bench)
