from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from dockercache.config.load import parse_config
from dockercache.config.schema import build_schema
from dockercache.errors import ConfigError

from .conftest import FIXTURES, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA_FILE = ROOT / "config" / "dockercache.schema.json"
VARS = {"BUILDKITE_COMMIT": "abc"}


def test_committed_schema_is_generated_from_the_loader() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == build_schema(), "run `invoke schema`"


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(build_schema())


GOOD = [ROOT / "examples" / "ruby" / "dockercache.toml", *sorted((FIXTURES / "good").glob("*.toml"))]


@pytest.mark.parametrize("path", GOOD, ids=[p.parent.name + "/" + p.stem for p in GOOD])
def test_schema_and_loader_accept_the_same_good_files(path: Path) -> None:
    document = tomllib.loads(path.read_text())
    jsonschema.validate(document, build_schema())
    parse_config(document, VARS, path)


# Structural errors (keys, types, choices) must be rejected by both; cross-reference checks are the loader's.
STRUCTURAL = [
    p
    for p in sorted((FIXTURES / "bad").glob("*.toml"))
    if p.stem.startswith(
        (
            "unknown-",
            "wrong-",
            "missing-cache",
            "missing-registry",
            "empty-registry",
            "no-services",
            "empty-services",
            "wrong-mode",
        )
    )
    and p.stem not in ("unknown-cache-store", "unknown-stage", "unknown-target")
]


@pytest.mark.parametrize("path", STRUCTURAL, ids=[p.stem for p in STRUCTURAL])
def test_schema_and_loader_reject_the_same_structural_errors(path: Path) -> None:
    document = tomllib.loads(path.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, build_schema())
    with pytest.raises(ConfigError):
        parse_config(document, VARS, path)


def test_structural_fixture_list_is_not_empty() -> None:
    assert len(STRUCTURAL) >= 12
