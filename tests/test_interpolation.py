"""dockercache.config.interpolate: ${VAR} expansion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockercache.config.interpolate import interpolate, interpolate_tree, variables_used
from dockercache.errors import ConfigError

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${MISSING:-${HOME}}", "/root"),
        ("${EMPTY:-${MISSING:-x}}/y", "x/y"),
        ("${MISSING:-a${HOME}b}", "a/rootb"),
        ("${MISSING:-$HOME}", "/root"),
        ("${MISSING:-}", ""),
        ("${MISSING:-$$}", "$"),
        ("${MISSING:-${EMPTY:-${BUILDKITE_COMMIT}}}-${HOME}", "abc123-/root"),
        ("${MISSING:-x}}", "x}"),  # the default ends at the first '}', as in Compose
    ],
)
def test_a_default_may_hold_variables_as_in_compose(text: str, expected: str) -> None:
    assert interpolate(text, VARS, "where") == expected


def test_a_default_that_is_not_used_may_name_an_undefined_variable() -> None:
    assert interpolate("${HOME:-${MISSING}}", VARS, "where") == "/root"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${MISSING:-${HOME}", "unterminated '${' in '${MISSING:-${HOME}'"),
        ("${MISSING:-${OTHER}}", "undefined variable ${OTHER}"),
        ("${HOME:-${BAD NAME}}", "invalid variable expression '${BAD NAME}'"),  # broken even where unused
        ("${HOME:-x", "unterminated"),
    ],
)
def test_nested_defaults_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        interpolate(text, VARS, "where")


def test_variables_used_says_where_a_value_came_from() -> None:
    used = variables_used("${MISSING:-${HOME}}-$BUILDKITE_COMMIT-${HOME}", VARS)
    assert used == {"HOME": "/root", "BUILDKITE_COMMIT": "abc123"}
    assert variables_used("${HOME:-${BUILDKITE_COMMIT}}", VARS) == {"HOME": "/root"}
    assert variables_used("${EMPTY:-x}$$HOME", VARS) == {}
