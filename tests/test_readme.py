"""Every dockercache.toml example in the README, docs/*.md and CONTRIBUTING.md is a configuration the loader
accepts; the hardening table in CONTRIBUTING.md counts what the suite holds."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from dockercache.config.load import parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), CONTRIBUTING]
BLOCKS = [
    (document, block)
    for document in DOCUMENTS
    for block in re.findall(r"```toml\n(.*?)```", document.read_text(), re.DOTALL)
]
IDS = [
    f"{document.relative_to(ROOT)}-block{sum(1 for d, _ in BLOCKS[: i + 1] if d == document)}"
    for i, (document, _) in enumerate(BLOCKS)
]


def test_the_readme_has_configuration_examples() -> None:
    assert sum(1 for document, _ in BLOCKS if document == README) >= 2
    assert len(BLOCKS) >= 7  # and the five that moved to docs/ (every table, secrets, matrix, S3, migration)


@pytest.mark.parametrize(("document", "block"), BLOCKS, ids=IDS)
def test_a_readme_example_loads(document: Path, block: str) -> None:
    raw: dict[str, Any] = tomllib.loads(block)
    raw.setdefault("services", {"app": {}})  # a fragment (one table) sits in a whole file
    variables = dict.fromkeys(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", block), "value")
    config = parse_config(raw, variables, document)
    assert config.services


COLLECT = """
import collections, json, sys
import pytest

class Groups:
    def __init__(self):
        self.counts = collections.Counter()

    def pytest_collection_modifyitems(self, items):
        for item in items:
            marker = item.get_closest_marker("hardening")
            if marker is not None:
                self.counts[marker.args[0]] += 1

groups = Groups()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"], plugins=[groups])
print("GROUPS " + json.dumps(groups.counts))
sys.exit(int(code))
"""


def test_the_hardening_table_counts_the_cases_the_suite_holds() -> None:
    """CONTRIBUTING.md's table of the last CI run: its "tried" column is what the suite collects per group."""
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", COLLECT], cwd=README.parent, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    collected = json.loads(proc.stdout.split("GROUPS ", 1)[1].splitlines()[0])
    section = CONTRIBUTING.read_text().split("The table of the last CI run", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:-1] for line in section.splitlines()[2:]]
    tried = {cells[0].strip(): int(cells[1].split()[0]) for cells in rows}
    total = tried.pop("total")
    assert tried == dict(collected) and total == sum(collected.values()), (tried, collected)
