"""The house's rules, read from the package's own imports and definitions (CONTRIBUTING.md, "The code").

Floors, bottom up, each importing only from floors below it or from its own folder: the kernel files (the
package's face above them), then config/ and output/, model/, adapters/, stores/, planning/, run/ and init.py,
the commands, tasks.py, and the front doors (cli.py, plugin.py). No import circle among files; boto3 and
python-on-whales each imported by one module; no module over 450 lines, no function over 60; a store type named
outside stores/ only where listed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dockercache"

FLOORS = {
    "errors": 0,
    "secrets": 0,
    "reference": 0,
    "timeline": 0,
    "__init__": 1,
    "config": 1,
    "output": 1,
    "model": 2,
    "adapters": 3,
    "stores": 4,
    "planning": 5,
    "run": 6,
    "commands": 7,
    "init": 6,
    "tasks": 8,
    "argv": 8,
    "program": 9,
    "plugin": 9,
    "cli": 10,
}

#: Where a store type may be named outside stores/, and why.
STORE_TYPES_ALLOWED = {
    "config/caches.py": "each kind's table in dockercache.toml, with its own checks (the floor below stores/)",
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path


def room(relative: str) -> str:
    """The folder a module stands in, or its own name for a file at the top."""
    first = relative.split("/", 1)[0]
    return first.removesuffix(".py")


def imported(relative: str, path: Path) -> Iterator[tuple[str, ast.ImportFrom | ast.Import]]:
    """Every module of the package this one imports (TYPE_CHECKING and function-level imports included), as a
    path relative to the package; ``from . import x`` names a module when ``x`` is one."""
    package = Path(relative).parent.parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("dockercache"):
                    continue
                parts = tuple(node.module.split(".")[1:]) if node.module else ()
            else:
                up = node.level - 1
                parts = package[: len(package) - up] + (tuple(node.module.split(".")) if node.module else ())
            base = "/".join(parts)
            for alias in node.names:
                candidate = f"{base}/{alias.name}".strip("/")
                if (PACKAGE / f"{candidate}.py").exists() or (PACKAGE / candidate / "__init__.py").exists():
                    yield _file(candidate), node
                else:
                    yield _file(base), node


def _file(module: str) -> str:
    if (PACKAGE / module / "__init__.py").exists():
        return f"{module}/__init__.py".lstrip("/")
    return f"{module}.py" if module else "__init__.py"


def test_every_import_goes_down_a_floor_or_stays_in_its_folder() -> None:
    upward = []
    for relative, path in modules():
        here = room(relative)
        for target, node in imported(relative, path):
            there = room(target)
            if there != here and FLOORS[there] >= FLOORS[here]:
                upward.append(f"{relative}:{node.lineno} -> {target}")
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    graph = {relative: {t for t, _ in imported(relative, path) if t != relative} for relative, path in modules()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize(
    ("library", "home"),
    [("boto3", "adapters/aws.py"), ("botocore", "adapters/aws.py"), ("python_on_whales", "adapters/docker.py")],
)
def test_a_third_party_client_is_imported_by_one_module(library: str, home: str) -> None:
    importers = set()
    for relative, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == library or n.startswith(f"{library}.") for n in names):
                importers.add(relative)
    assert importers == {home}


def test_no_module_over_450_lines_and_no_function_over_60() -> None:
    long = []
    for relative, path in modules():
        text = path.read_text()
        if len(text.splitlines()) > 450:
            long.append(f"{relative}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 60:
                    long.append(f"{relative}:{node.lineno} {node.name}: {size} lines")
    assert not long, "\n".join(long)


def test_a_store_type_is_named_outside_stores_only_where_listed() -> None:
    types = {"S3Cache", "LocalCache", "RegistryCache"}
    naming = set()
    for relative, path in modules():
        if room(relative) == "stores":
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Name) and n.id in types for n in ast.walk(tree)):
            naming.add(relative)
    assert naming == set(STORE_TYPES_ALLOWED)
