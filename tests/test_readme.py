"""Every dockercache.toml example in the README is a configuration the loader accepts."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from dockercache.loader import parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_readme_has_configuration_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_a_readme_example_loads(block: str) -> None:
    raw: dict[str, Any] = tomllib.loads(block)
    raw.setdefault("services", {"app": {}})  # a fragment (one table) sits in a whole file
    variables = dict.fromkeys(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", block), "value")
    config = parse_config(raw, variables, README)
    assert config.services
