"""dockercache.loader: finding, reading and checking dockercache.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockercache.commands import Environment, cmd_check
from dockercache.config import CONFIG_NAME, LocalCache, RegistryCache
from dockercache.docker import Docker
from dockercache.errors import ConfigError
from dockercache.loader import find_config, load_config, parse_config
from dockercache.report import Console

from .conftest import BAD, ROOT, expectation

VARS = {"HOME": "/root", "BUILDKITE_COMMIT": "abc123", "EMPTY": ""}


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_is_one_clear_line(path: Path) -> None:
    environment = Environment(env=VARS, cwd=path.parent, docker=Docker(), console=Console())
    with pytest.raises(ConfigError) as info:
        cmd_check(environment, str(path))
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message
    assert expectation(path) in message


def test_there_are_many_bad_fixtures() -> None:
    assert len(BAD) >= 20


def test_example_config_loads() -> None:
    config = load_config(ROOT / "examples" / "ruby" / CONFIG_NAME, VARS)
    ruby = config.service("ruby")
    assert ruby.stages == ("base", "deps")
    assert ruby.target == "final"
    assert ruby.args["BASE_IMAGE"] == "localhost:5000/dockercache/busybox:stable"
    assert config.builder.driver == "docker"


def test_defaults() -> None:
    config = parse_config({"services": {"app": {}}}, VARS, Path(CONFIG_NAME))
    assert config.builder.driver == "docker-container"
    assert config.settings.cache_errors == "warn"
    assert config.caches == {}
    assert config.service("app").tags == ()


def test_cache_stores_by_type() -> None:
    raw = {
        "services": {"app": {"cache": "reg"}},
        "caches": {
            "reg": {"type": "registry", "ref": "localhost:5000/cache/{service}"},
            "disk": {"type": "local", "path": "/tmp/c"},
        },
    }
    config = parse_config(raw, VARS, Path(CONFIG_NAME))
    assert isinstance(config.caches["reg"], RegistryCache)
    assert config.caches["reg"].mode == "max"
    assert config.caches["reg"].compression == "zstd"
    assert isinstance(config.caches["disk"], LocalCache)


def test_numbers_in_build_args_become_strings() -> None:
    config = parse_config({"services": {"app": {"args": {"V": 3}}}}, VARS, Path(CONFIG_NAME))
    assert config.service("app").args["V"] == "3"


def test_unknown_key_suggests(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_text('[services.app]\nstagse = ["a"]\n')
    with pytest.raises(ConfigError, match=r"services\.app\.stagse: unknown key \(did you mean 'stages'\?\)"):
        load_config(path, VARS)


def test_find_config_walks_up(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text("")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_config(nested, env={}) == tmp_path / CONFIG_NAME


def test_find_config_explicit_and_env(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("")
    assert find_config(tmp_path, "other.toml", env={}) == other
    assert find_config(tmp_path, None, env={"DOCKERCACHE_CONFIG": str(other)}) == other
    with pytest.raises(ConfigError, match="no such configuration file"):
        find_config(tmp_path, "nope.toml", env={})


def test_find_config_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        find_config(tmp_path, env={})


def test_unknown_service() -> None:
    config = parse_config({"services": {"ruby": {}}}, VARS, Path(CONFIG_NAME))
    with pytest.raises(ConfigError, match=r"no service 'rubby' \(did you mean 'ruby'\?\)"):
        config.service("rubby")


@pytest.mark.parametrize("kind", [[], {}, 3, True])
def test_a_cache_type_that_is_no_string_is_one_clear_line(kind: object) -> None:
    """Found by the fuzz suite: ``type = []`` raised TypeError (unhashable) instead of a ConfigError."""
    raw = {"services": {"app": {}}, "caches": {"app": {"type": kind}}}
    with pytest.raises(ConfigError, match=r"caches\.app\.type: .* is not one of 'registry', 'local', 's3'"):
        parse_config(raw, VARS, Path(CONFIG_NAME))
