"""docs/ is current: the configuration reference is what the JSON Schema makes, every picture's SVG is what
graphviz makes of its .dot source, and the README links only to documents that exist."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOURCES = sorted(DOCS.glob("*.dot"))


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


config_reference = load("config_reference")
render_docs = load("render_docs")


def test_the_configuration_reference_is_generated_from_the_schema() -> None:
    assert config_reference.REFERENCE.read_text() == config_reference.expected(), (
        "docs/configuration.md differs from config/dockercache.schema.json: run python3 scripts/config_reference.py"
    )


def test_the_reference_names_every_key_of_the_schema() -> None:
    import json

    schema = json.loads(config_reference.SCHEMA.read_text())
    text = config_reference.REFERENCE.read_text()
    keys = set(schema["properties"]) | {k for d in schema["$defs"].values() for k in d.get("properties", {})}
    assert keys and all(f"| `{key}` |" in text for key in keys)
    assert config_reference.main(["--check"]) == 0


def test_there_are_pictures() -> None:
    assert {p.name for p in SOURCES} >= {"fresh-agent.dot", "branches.dot"}


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_a_committed_svg_is_what_graphviz_makes_of_its_source(source: Path) -> None:
    if shutil.which("dot") is None:
        pytest.fail("graphviz's `dot` is not installed: run `bash scripts/stack.sh up` (it installs graphviz)")
    svg = source.with_suffix(".svg")
    assert svg.is_file(), f"docs/{svg.name} is missing: run python3 scripts/render_docs.py"
    assert svg.read_text() == render_docs.render(source), (
        f"docs/{svg.name} is not what `dot -Tsvg docs/{source.name}` makes: run python3 scripts/render_docs.py"
    )


def test_the_readme_shows_both_pictures_and_links_only_to_files_that_exist() -> None:
    for document in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.glob("*.md"))]:
        text = document.read_text()
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (document.parent / target).exists(), f"{document.name} links to {target}, which does not exist"
    readme = (ROOT / "README.md").read_text()
    assert "](docs/fresh-agent.svg)" in readme and "](docs/branches.svg)" in readme


def test_the_readme_is_a_five_minute_read() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 350
