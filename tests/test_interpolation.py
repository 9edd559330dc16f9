"""dockercache.interpolation: ${VAR} expansion."""

from __future__ import annotations

import re

import pytest

from dockercache.errors import ConfigError
from dockercache.interpolation import interpolate

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
