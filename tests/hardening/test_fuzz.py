"""Hardening, group fuzz: arbitrary documents never make the configuration loader raise anything but
ConfigError (and never hang or crash with a traceback)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockercache.config.load import load_config, parse_config
from dockercache.config.model import Config
from dockercache.config.schema import build_schema
from dockercache.errors import ConfigError

KEYS = sorted(
    {
        *build_schema()["properties"],
        *(k for d in build_schema()["$defs"].values() for k in d.get("properties", {})),
        "app",
        "ruby",
        "default",
        "registry",
        "local",
        "s3",
        "docker",
        "docker-container",
    }
)
VALUES = st.sampled_from(
    [
        "registry",
        "local",
        "s3",
        "max",
        "min",
        "zstd",
        "docker",
        "remote",
        "warn",
        "fail",
        "auto",
        "always",
        "${HOME}",
        "${NOPE}",
        "${NOPE:-x}",
        "$$",
        "${",
        "{stage}-{branch}",
        "{nope}",
        "localhost:5000/x",
        "localhost:5000/x:tag",
        "..",
        "/abs",
        "http://127.0.0.1:1",
        "",
        "base",
        "deps",
        "final",
    ]
)
SCALARS = st.one_of(
    VALUES,
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1)),
    st.dates(),
)
KEY = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=12))
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEY, children, max_size=5)),
    max_leaves=30,
)
DOCUMENTS = st.dictionaries(KEY, TREES, max_size=6)
SERVICE_DOCUMENTS = st.fixed_dictionaries(
    {"services": st.dictionaries(KEY, st.dictionaries(KEY, TREES, max_size=6), min_size=1, max_size=3)},
    optional={
        "caches": st.dictionaries(KEY, st.dictionaries(KEY, TREES, max_size=8), max_size=3),
        "builder": st.dictionaries(KEY, TREES, max_size=6),
        "settings": st.dictionaries(KEY, TREES, max_size=5),
        "registries": st.dictionaries(KEY, st.dictionaries(KEY, TREES, max_size=3), max_size=2),
    },
)
VARIABLES = {"HOME": "/root", "BUILDKITE_COMMIT": "abc"}
COUNT = {"n": 0}


@pytest.fixture(autouse=True)
def count_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    COUNT["n"] = 0
    yield
    request.node.hardening_examples = COUNT["n"]


def check(document: dict[str, Any]) -> None:
    COUNT["n"] += 1
    try:
        result = parse_config(document, VARIABLES, Path("fuzz.toml"))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ") and "\n" not in message, message
    else:
        assert isinstance(result, Config)


@pytest.mark.hardening("fuzz")
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_arbitrary_documents(document: dict[str, Any]) -> None:
    check(document)


@pytest.mark.hardening("fuzz")
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SERVICE_DOCUMENTS)
def test_documents_shaped_like_configs(document: dict[str, Any]) -> None:
    check(document)


@pytest.mark.hardening("fuzz")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text(tmp_path: Path, text: str) -> None:
    COUNT["n"] += 1
    path = tmp_path / "dockercache.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_config(path, VARIABLES)
    except ConfigError as exc:
        assert "\n" not in str(exc)
