"""Shared fixtures. The end-to-end ones are in tests/e2e/conftest.py and need the stack (scripts/stack.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal project: a three-stage Dockerfile and room for a dockercache.toml."""
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE=busybox\n"
        "FROM ${BASE_IMAGE} AS base\nRUN true\n"
        "FROM base AS deps\nRUN true\n"
        "FROM deps AS final\nRUN true\n"
    )
    return tmp_path
