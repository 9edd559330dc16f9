"""dockercache.interpolation: ${VAR} expansion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockercache.errors import ConfigError
from dockercache.interpolation import interpolate, interpolate_tree

VARS = {"HOME": "/root", "BUILDKITE_COMMIT": "abc123", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOME}/x", "/root/x"),
        ("$HOME", "/root"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("cost $$5", "cost $5"),
        ("plain", "plain"),
        ("$", "$"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, VARS, "where") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${MISSING}", "undefined variable ${MISSING}"),
        ("${BAD NAME}", "invalid variable expression"),
        ("${HOME", "unterminated"),
    ],
)
def test_interpolate_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        interpolate(text, VARS, "where")


def test_a_default_is_used_only_when_the_variable_is_unset_or_empty() -> None:
    assert interpolate("${HOME:-/fallback}", VARS, "where") == "/root"


def test_errors_in_lists_and_tables_name_the_item() -> None:
    tree = {"services": {"app": {"tags": ["ok", "${MISSING}"]}}}
    with pytest.raises(ConfigError) as info:
        interpolate_tree(tree, VARS, Path("dockercache.toml"), "")
    assert str(info.value) == (
        "dockercache.toml: services.app.tags[1]: undefined variable ${MISSING} (set it, or write ${MISSING:-default})"
    )
