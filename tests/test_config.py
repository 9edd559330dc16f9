"""dockercache.config.model and .fields: the model's helpers (store choice, dotted keys, type names, suggestions)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from dockercache.config.caches import LocalCache, RegistryCache
from dockercache.config.fields import dotted, suggest, type_name
from dockercache.config.model import Config, default_cache_name
from dockercache.config.services import ServiceConfig
from dockercache.errors import ConfigError

LOCAL = LocalCache(type="local")
REGISTRY = RegistryCache(type="registry", ref="r/c")


@pytest.mark.parametrize(
    ("caches", "service", "expected"),
    [
        ({}, ServiceConfig(), None),
        ({"only": LOCAL}, ServiceConfig(), "only"),
        ({"a": LOCAL, "default": REGISTRY}, ServiceConfig(), "default"),
        ({"a": LOCAL, "b": REGISTRY}, ServiceConfig(), None),
        ({"a": LOCAL, "default": REGISTRY}, ServiceConfig(cache="a"), "a"),
    ],
)
def test_the_store_a_service_uses(
    caches: dict[str, LocalCache | RegistryCache], service: ServiceConfig, expected: str | None
) -> None:
    """Its own ``cache``, else 'default', else the only store; None: the built-in local store."""
    config = Config(services={"app": service}, caches=caches)
    assert default_cache_name(config, service) == expected


def test_dotted_keys_are_written_as_toml_writes_them() -> None:
    assert dotted("", "services") == "services"
    assert dotted("services", "web-1_a") == "services.web-1_a"
    assert dotted("services.app.args", "my key") == 'services.app.args."my key"'
    assert dotted("caches", 'say "hi"') == 'caches."say \\"hi\\""'


def test_type_names_in_messages() -> None:
    assert [type_name(v) for v in ("x", True, 1, 1.5, [], {})] == [
        "a string",
        "a boolean",
        "an integer",
        "a number",
        "an array",
        "a table",
    ]
    assert type_name(date(2026, 1, 1)) == "date"  # a TOML date


def test_suggest_names_the_closest_option_only() -> None:
    assert suggest("stagse", ["stages", "stage_tag", "tags"]) == " (did you mean 'stages'?)"
    assert suggest("zzz", ["stages"]) == ""


def test_an_unknown_service_lists_the_services() -> None:
    config = Config(services={"web": ServiceConfig(), "worker": ServiceConfig()}, path=Path("ci/dockercache.toml"))
    with pytest.raises(ConfigError) as info:
        config.service("wbe")
    assert str(info.value) == "ci/dockercache.toml: no service 'wbe' (did you mean 'web'?) (services: web, worker)"
