"""dockercache.config.load: finding, reading and checking dockercache.toml."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from dockercache.adapters.docker import Docker
from dockercache.commands import Environment, cmd_check
from dockercache.config.caches import LocalCache, RegistryCache, S3Cache
from dockercache.config.load import find_config, load_config, parse_config
from dockercache.config.model import CONFIG_NAME
from dockercache.errors import ConfigError
from dockercache.output.console import Console

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


def error(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, VARS, Path(CONFIG_NAME))
    return str(info.value)


def app(**service: object) -> dict[str, object]:
    return {"app": service}


def test_a_literal_registry_password_is_refused_before_anything_else() -> None:
    raw = {"services": app(), "registries": {"r:5000": {"username": "ci", "password": "hunter22"}}}
    assert error(raw) == (
        "dockercache.toml: registries.r:5000.password: write it as ${VARIABLE}; "
        "a password in the file would be committed with it"
    )
    # Refused even when another key is broken too, and even where it would interpolate to nothing.
    raw["services"] = app(nope=1)
    assert "registries.r:5000.password: write it as ${VARIABLE}" in error(raw)


@pytest.mark.parametrize("password", ["${REG_PASSWORD}", "$REG_PASSWORD", "${reg_password}", "$reg_password"])
def test_a_registry_password_from_a_variable_is_accepted(password: str) -> None:
    raw = {"services": app(), "registries": {"r:5000": {"username": "ci", "password": password}}}
    variables = {"REG_PASSWORD": "s3cret-value", "reg_password": "s3cret-value"}
    config = parse_config(raw, variables, Path(CONFIG_NAME))
    assert config.registries["r:5000"].password == "s3cret-value"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"services": 3}, "services: expected a table, got an integer"),
        ({"services": app(), "nope": 1}, "nope: unknown key"),
        ({"services": {"app": 3}}, "services.app: expected a table, got an integer"),
        ({"services": {"app": {"my key": 1}}}, 'services.app."my key": unknown key'),
        ({"services": app(stages=1.5)}, "services.app.stages: expected an array, got a number"),
        ({"services": app(stages=[True])}, "services.app.stages[0]: expected a string, got a boolean"),
        ({"services": app(args=["A=1"])}, "services.app.args: expected a table, got an array"),
        ({"services": app(args={"A": {}})}, "services.app.args.A: expected a string, got a table"),
        ({"services": app(stages=date(2026, 1, 1))}, "services.app.stages: expected an array, got date"),
        ({"services": app(), "builder": {"endpoint": 3}}, "builder.endpoint: expected a string, got an integer"),
        ({"services": app(), "builder": {"ephemeral": "yes"}}, "builder.ephemeral: expected a boolean, got a string"),
        ({"services": app(), "caches": {"c": "registry"}}, "caches.c: expected a table, got a string"),
        ({"services": app(), "caches": {"c": {}}}, "caches.c.type: missing (one of 'registry', 'local', 's3')"),
        ({"services": app(), "caches": {"c": {"type": 3}}}, "caches.c.type: 3 is not one of 'registry', 'local', 's3'"),
        (
            {"services": app(), "caches": {"c": {"type": "registyr", "ref": "r/c"}}},
            "caches.c.type: 'registyr' is not one of 'registry', 'local', 's3' (did you mean 'registry'?)",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "local", "mode": "maxx"}}},
            "caches.c.mode: 'maxx' is not one of 'min', 'max' (did you mean 'max'?)",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "local", "mode": 3}}},
            "caches.c.mode: 3 is not one of 'min', 'max'",
        ),
        (
            {"services": app(), "settings": {"cache_errors": "ignore"}},
            "settings.cache_errors: 'ignore' is not one of 'warn', 'fail'",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "s3", "bucket": "b", "transfers": True}}},
            "caches.c.transfers: expected an integer, got a boolean",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "s3", "bucket": "b", "transfers": 1.5}}},
            "caches.c.transfers: expected an integer, got a number",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "s3", "bucket": "b", "listen": "nohost"}}},
            "caches.c.listen: 'nohost' is not of the form HOST:PORT",
        ),
        (
            {"services": app(), "caches": {"my store": {"type": "local"}}},
            "caches.my store: invalid store name (letters, digits, '_', '.', '-')",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "registry", "ref": "r/{servcie}"}}},
            "caches.c.ref: unknown placeholder {servcie} (did you mean 'service'?) (placeholders: {service})",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "registry", "ref": "r/c", "extra_from": ["x/{branch}"]}}},
            "caches.c.extra_from[0]: unknown placeholder {branch} (placeholders: {service}, {stage})",
        ),
        (
            {"services": app(), "caches": {"c": {"type": "s3", "bucket": "b", "key": "/abs/{branch}"}}},
            "caches.c.key: snapshot keys are relative paths ('/abs/{branch}')",
        ),
        (
            {"services": app(), "builder": {"driver": "kubernetes"}, "caches": {"c": {"type": "s3", "bucket": "b"}}},
            "caches.c: a 'kubernetes' builder cannot reach this agent's loopback, where the S3 store serves "
            "BuildKit; set caches.c.listen to an address the builder reaches (HOST:PORT), or native = true",
        ),
        (
            {"services": app(), "registries": {"r:5000/team": {"username": "u", "password": "$HOME"}}},
            "registries.r:5000/team: give a registry host (and port), not a repository",
        ),
        (
            {"services": app(), "registries": {"": {"username": "u", "password": "$HOME"}}},
            "registries.: give a registry host (and port), not a repository",
        ),
        ({"services": app(cache="c")}, "services.app.cache: no cache store 'c' (stores: none)"),
        (
            {"services": app(cache="c"), "caches": {"a": {"type": "local"}, "b": {"type": "local"}}},
            "services.app.cache: no cache store 'c' (stores: a, b)",
        ),
        (
            {"services": app(image="${MISSING}")},
            "services.app.image: undefined variable ${MISSING} (set it, or write ${MISSING:-default})",
        ),
        (
            {"services": app(), "registries": {"r:5000": "ci:hunter22"}},
            'registries."r:5000": expected a table, got a string',
        ),
        (
            {"services": app(), "caches": {"a": {"type": "local"}, "b": {"type": "local"}}},
            "services.app.cache: several cache stores are defined; name one (a, b)",
        ),
        ({"services": app(target="")}, "services.app.target: must not be empty"),
        ({"services": app(tags=["-latest"])}, "services.app.tags[0]: '-latest' is not a valid image tag"),
        (
            {"services": app(stages=["deps"], target="final", push_stages=["dep"], image="r/app")},
            "services.app.push_stages[0]: 'dep' is not among the service's stages (did you mean 'deps'?)",
        ),
    ],
)
def test_each_mistake_is_one_exact_line_naming_the_key(raw: dict[str, object], message: str) -> None:
    assert error({**raw}) == f"dockercache.toml: {message}"


def test_what_the_checks_accept() -> None:
    raw = {
        "services": {
            "app": {
                "stages": ["deps"],
                "target": "final",
                "push_stages": ["deps", "final"],
                "image": "r/app",
                "tags": ["Latest", "v1.2_rc-3"],
                "args": {},
            }
        },
        "builder": {"driver": "docker"},
        "caches": {
            "only": {
                "type": "s3",
                "bucket": "b",
                "prefix": "",
                "endpoint_url": "http://127.0.0.1:9000",
                "key": "{pipeline}/{branch}/{commit}",
            }
        },
    }
    config = parse_config(raw, VARS, Path(CONFIG_NAME))
    assert config.service("app").push_stages == ("deps", "final")
    store = config.caches["only"]
    assert isinstance(store, S3Cache) and store.prefix == "" and store.endpoint_url == "http://127.0.0.1:9000"
    registry: dict[str, object] = {
        "type": "registry",
        "ref": "cachebox",
        "tag": "{service}-{stage}-{branch}",
        "extra_from": ["other/{service}:{stage}"],
    }
    config = parse_config({"services": app(), "caches": {"r": registry}}, VARS, Path(CONFIG_NAME))
    assert isinstance(config.caches["r"], RegistryCache) and config.caches["r"].ref == "cachebox"


@pytest.mark.parametrize(
    ("builder", "ok"),
    [
        ({"driver": "docker-container"}, True),
        ({"driver": "remote", "endpoint": "tcp://bk:1234"}, True),
        ({"driver": "kubernetes"}, True),
        ({"driver": "docker"}, False),
    ],
)
def test_native_s3_needs_a_builder_that_runs_buildkit_itself(builder: dict[str, str], ok: bool) -> None:
    raw = {"services": app(), "builder": builder, "caches": {"s3": {"type": "s3", "bucket": "b", "native": True}}}
    if ok:
        assert parse_config(raw, VARS, Path(CONFIG_NAME)).builder.driver == builder["driver"]
    else:
        assert error(raw).startswith("dockercache.toml: caches.s3.native: BuildKit's s3 cache needs builder.driver")


def test_a_registry_ref_is_a_repository_without_a_tag() -> None:
    raw = {"services": app(), "caches": {"c": {"type": "registry", "ref": "cache:v1"}}}
    assert error(raw).startswith("dockercache.toml: caches.c.ref: give a repository without a tag ('cache:v1')")


def test_find_config_reads_the_environment_variable_and_accepts_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / CONFIG_NAME).write_text("")
    monkeypatch.setenv("DOCKERCACHE_CONFIG", "ci")
    assert find_config(tmp_path) == tmp_path / "ci" / CONFIG_NAME
    assert find_config(tmp_path, str(tmp_path / "ci")) == tmp_path / "ci" / CONFIG_NAME


def test_find_config_says_where_a_missing_file_was_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path, "nope.toml", env={})
    assert str(info.value) == "nope.toml: no such configuration file (from --config)"
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path, None, env={"DOCKERCACHE_CONFIG": "gone.toml"})
    assert str(info.value) == "gone.toml: no such configuration file (from $DOCKERCACHE_CONFIG)"


def test_an_unreadable_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml", VARS)
    assert str(info.value) == f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"


# ------------------------------------------------- values that go into cache attributes and image names

#: A branch name as a hostile pull request could choose it: a second ``ref=`` in a cache entry.
HOSTILE = {**VARS, "BUILDKITE_BRANCH": "x,ref=evil.example/cache", "TEAM": "Shop", "NL": "a\nb"}


def registry(**store: object) -> dict[str, object]:
    return {"c": {"type": "registry", "ref": "localhost:5000/cache", **store}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"services": app(), "caches": registry(ref="localhost:5000/cache/${BUILDKITE_BRANCH}")},
            "caches.c.ref: 'localhost:5000/cache/x,ref=evil.example/cache' is not a valid cache repository: "
            "a comma is not allowed (from ${BUILDKITE_BRANCH})",
        ),
        (
            {"services": app(), "caches": registry(ref="localhost:5000/${NL}")},
            "caches.c.ref: 'localhost:5000/a\\nb' is not a valid cache repository: a newline is not allowed "
            "(from ${NL})",
        ),
        (
            {"services": app(), "caches": registry(ref="localhost:5000/${TEAM}/cache")},
            "caches.c.ref: 'localhost:5000/Shop/cache' is not a valid cache repository: repository names must be "
            "lower case (from ${TEAM})",
        ),
        (
            {"services": {"Shop": {}}, "caches": registry(ref="localhost:5000/cache/{service}")},
            "caches.c.ref: 'localhost:5000/cache/Shop' (for service 'Shop') is not a valid cache repository: "
            "repository names must be lower case",
        ),
        (
            {"services": app(), "caches": registry(ref="localhost:5000/cache/{service")},
            "caches.c.ref: 'localhost:5000/cache/{service' is not a valid cache repository: not a valid repository "
            "name (lower-case letters, digits, '.', '_', '-', separated by '/')",
        ),
        (
            {"services": app(), "caches": registry(tag="{stage}-${BUILDKITE_BRANCH}")},
            "caches.c.tag: '{stage}-x,ref=evil.example/cache' cannot be a cache tag: a comma is not allowed "
            "(from ${BUILDKITE_BRANCH})",
        ),
        (
            {"services": app(), "caches": registry(extra_from=["localhost:5000/base:{stage}-${BUILDKITE_BRANCH}"])},
            "caches.c.extra_from[0]: 'localhost:5000/base:stage-x,ref=evil.example/cache' is not a valid image "
            "reference: a comma is not allowed (from ${BUILDKITE_BRANCH})",
        ),
        (
            {"services": app(), "caches": registry(extra_from=["localhost:5000/base:"])},
            "caches.c.extra_from[0]: 'localhost:5000/base:' is not a valid image reference: not a valid image "
            "reference (repository[:tag])",
        ),
        (
            {
                "services": app(),
                "caches": {"s": {"type": "s3", "bucket": "b", "key": "{pipeline}/${BUILDKITE_BRANCH}"}},
            },
            "caches.s.key: '{pipeline}/x,ref=evil.example/cache' cannot be a snapshot key: a comma is not allowed "
            "(from ${BUILDKITE_BRANCH})",
        ),
        (
            {"services": app(), "caches": {"s": {"type": "s3", "bucket": "b", "cache_from": ["a", "{pipeline}/ b"]}}},
            "caches.s.cache_from[1]: '{pipeline}/ b' cannot be a snapshot key: a space is not allowed",
        ),
        (
            {"services": app(image="localhost:5000/${TEAM}/app")},
            "services.app.image: 'localhost:5000/Shop/app' is not a valid image repository: repository names must be "
            "lower case (from ${TEAM})",
        ),
        (
            {"services": app(image="localhost:5000/app,push=true")},
            "services.app.image: 'localhost:5000/app,push=true' is not a valid image repository: a comma is not "
            "allowed",
        ),
        (
            {"services": app(image="localhost:5000/app:1.0")},
            "services.app.image: 'localhost:5000/app:1.0' is not a valid image repository: give a repository without "
            "a tag or digest",
        ),
        (
            {"services": app(image="localhost:5000")},
            "services.app.image: 'localhost:5000' is not a valid image repository: give a repository "
            "(HOST:PORT/NAME), not a registry host",
        ),
        (
            {"services": app(tags=["${BUILDKITE_COMMIT}", "${BUILDKITE_BRANCH}"])},
            "services.app.tags[1]: 'x,ref=evil.example/cache' is not a valid image tag: a comma is not allowed "
            "(from ${BUILDKITE_BRANCH})",
        ),
        (
            {"services": app(stage_tag="{stage}/{tag}")},
            "services.app.stage_tag: '{stage}/{tag}' does not make a valid image tag ('stage/tag')",
        ),
    ],
)
def test_a_value_that_cannot_be_encoded_safely_names_the_key_and_the_variable(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, HOSTILE, Path(CONFIG_NAME))
    assert str(info.value) == f"dockercache.toml: {message}"


def test_what_goes_into_cache_attributes_and_image_names_may_be() -> None:
    variables = {**VARS, "BUILDKITE_BRANCH": "feature/Login+2", "REGISTRY": "Registry.example.com:5000"}
    raw = {
        "services": {"web_app": {"image": "${REGISTRY}/team/web-app", "tags": ["v1.2_RC-3", "Latest"]}},
        "caches": {
            "default": {
                "type": "registry",
                "ref": "${REGISTRY}/cache/{service}",
                "tag": "{stage}-${BUILDKITE_BRANCH}",  # slugified when used, as {branch} is
                "extra_from": ["${REGISTRY}/base:{stage}", "busybox@sha256:" + "a" * 64, "debian"],
            },
            "s3": {"type": "s3", "bucket": "b", "key": "{pipeline}/${BUILDKITE_BRANCH}", "cache_from": ["x/latest"]},
            "disk": {"type": "local", "path": "/var/cache/a,b c"},  # a path is quoted, never refused
        },
    }
    config = parse_config(raw, variables, Path(CONFIG_NAME))
    assert config.service("web_app").image == "Registry.example.com:5000/team/web-app"


def test_a_nested_default_in_dockercache_toml() -> None:
    raw = {"services": app(image="${IMAGE:-${REGISTRY:-localhost:5000}/app}")}
    assert parse_config(raw, {"REGISTRY": "r.example"}, Path(CONFIG_NAME)).service("app").image == "r.example/app"
    assert parse_config(raw, {}, Path(CONFIG_NAME)).service("app").image == "localhost:5000/app"


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (
            {"secrets": {"npm": {"env": "NPM_TOKEN", "file": "x"}}},
            "services.app.secrets.npm: give exactly one of env (a variable's name) or file (a path)",
        ),
        (
            {"secrets": {"npm": {}}},
            "services.app.secrets.npm: give exactly one of env (a variable's name) or file (a path)",
        ),
        (
            {"secrets": {"npm": {"env": "${NPM_TOKEN}"}}},
            'services.app.secrets.npm.env: give the variable\'s name (env = "NPM_TOKEN"), not ${...}: BuildKit '
            "reads the value from the environment itself",
        ),
        ({"secrets": {"npm": {"env": "NPM-TOKEN"}}}, "services.app.secrets.npm.env: 'NPM-TOKEN' is not of the form"),
        ({"secrets": {"npm": {"file": ""}}}, "services.app.secrets.npm.file: must not be empty"),
        ({"secrets": {"npm": {"value": "x"}}}, "services.app.secrets.npm.value: unknown key"),
        ({"secrets": {"npm": "NPM_TOKEN"}}, "services.app.secrets.npm: expected a table, got a string"),
        (
            {"secrets": {"id=x,src": {"env": "A"}}},
            "services.app.secrets.\"id=x,src\": invalid secret id (letters, digits, '_', '.', '-')",
        ),
        ({"ssh": "default"}, "services.app.ssh: expected an array, got a string"),
        (
            {"ssh": ["my key"]},
            "services.app.ssh[0]: 'my key' is not 'default', an id or 'ID=PATH' (ids: letters, digits, '_', '.', '-')",
        ),
        ({"ssh": ["gh="]}, "services.app.ssh[0]: 'gh=': give one path, without commas, after '='"),
        ({"ssh": ["gh=/a,/b"]}, "services.app.ssh[0]: 'gh=/a,/b': give one path, without commas, after '='"),
        ({"ssh": ["default", "default=/k"]}, "services.app.ssh: id 'default' is given twice"),
    ],
)
def test_secret_and_ssh_mistakes_are_one_line_naming_the_key(service: dict[str, object], message: str) -> None:
    assert error({"services": app(**service)}).startswith(f"dockercache.toml: {message}")


def test_secrets_and_ssh_are_accepted() -> None:
    raw = {"services": app(secrets={"npm": {"env": "NPM_TOKEN"}, "netrc": {"file": "~/.netrc"}}, ssh=["default"])}
    svc = parse_config(raw, VARS, Path(CONFIG_NAME)).services["app"]
    assert (svc.secrets["npm"].env, svc.secrets["netrc"].file, svc.ssh) == ("NPM_TOKEN", "~/.netrc", ("default",))


def test_skip_unchanged_is_off_by_default_and_set_per_service_or_in_settings() -> None:
    config = parse_config({"services": {"app": {"image": "r/app"}}}, VARS, Path(CONFIG_NAME))
    assert config.settings.skip_unchanged is False and config.service("app").skip_unchanged is None
    raw = {"settings": {"skip_unchanged": True}, "services": {"app": {"image": "r/app", "skip_unchanged": False}}}
    config = parse_config(raw, VARS, Path(CONFIG_NAME))
    assert config.settings.skip_unchanged is True and config.service("app").skip_unchanged is False
    # In [settings] it applies to the services that push an image; the others build as before.
    parse_config({"settings": {"skip_unchanged": True}, "services": {"app": {}}}, VARS, Path(CONFIG_NAME))


def test_skip_unchanged_on_a_service_without_an_image_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"services": {"app": {"skip_unchanged": True}}}, VARS, Path(CONFIG_NAME))
    assert str(info.value) == (
        "dockercache.toml: services.app.skip_unchanged: needs services.app.image (a skipped build retags the image "
        "it pushed before)"
    )


# ------------------------------------------------------- labels and attestations (issue 12, item 5)


def test_labels_provenance_and_sbom_are_accepted() -> None:
    config = parse_config(
        {
            "settings": {"provenance": "min", "sbom": True},
            "services": {
                "app": {"image": "reg/app", "labels": {"com.example.team": "${BUILDKITE_COMMIT}", "gone": ""}},
                "web": {"image": "reg/web", "provenance": "max", "sbom": False},
            },
        },
        VARS,
        Path(CONFIG_NAME),
    )
    assert (config.settings.provenance, config.settings.sbom) == ("min", True)
    assert dict(config.service("app").labels) == {"com.example.team": "abc123", "gone": ""}
    assert (config.service("app").provenance, config.service("app").sbom) == (None, None)
    assert (config.service("web").provenance, config.service("web").sbom) == ("max", False)
    default = parse_config({"services": {"app": {}}}, VARS, Path(CONFIG_NAME))
    assert (default.settings.provenance, default.settings.sbom) == ("off", False)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"services": {"app": {"labels": {"a=b": "x"}}}}, "services.app.labels.\"a=b\": a label key may hold no '='"),
        ({"services": {"app": {"labels": {"a b": "x"}}}}, "a label key may hold no space or control character"),
        ({"services": {"app": {"labels": {"": "x"}}}}, "services.app.labels: a label key must not be empty"),
        ({"services": {"app": {"labels": {"k": True}}}}, "services.app.labels.k: expected a string"),
        (
            {"services": {"app": {"image": "reg/app", "provenance": "full"}}},
            "services.app.provenance: 'full' is not one of 'off', 'min', 'max'",
        ),
        (
            {"settings": {"provenance": True}, "services": {"app": {}}},
            "settings.provenance: write 'off', 'min' or 'max', not true (here: 'min')",
        ),
        (
            {"services": {"app": {"provenance": "min"}}},
            "services.app.provenance: attestations go with pushed images; set services.app.image",
        ),
        ({"services": {"app": {"sbom": True}}}, "services.app.sbom: attestations go with pushed images"),
        ({"settings": {"sbom": "yes"}, "services": {"app": {}}}, "settings.sbom: expected a boolean"),
    ],
)
def test_label_and_attestation_mistakes_are_one_line_naming_the_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document, VARS, Path(CONFIG_NAME))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_broken_key_is_reported_at_once(tmp_path: Path) -> None:
    """README: all of a file's key and type errors in one run (as pytest reports every collection error), each
    a line of its own, in the file's order of tables; at most MAX_ERRORS."""
    raw = {
        "services": {
            "app": {"imgae": "x", "tags": [1, "ok", 2]},
            "web": {"target": 3},
        },
        "settings": {"cache_wirte": "auto", "skip_unchanged": "yes"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {}, Path("dockercache.toml"))
    assert caught.value.lines() == [
        "dockercache.toml: services.app.imgae: unknown key (did you mean 'image'?)",
        "dockercache.toml: services.app.tags[0]: expected a string, got an integer",
        "dockercache.toml: services.app.tags[2]: expected a string, got an integer",
        "dockercache.toml: services.web.target: expected a string, got an integer",
        "dockercache.toml: settings.cache_wirte: unknown key (did you mean 'cache_write'?)",
        "dockercache.toml: settings.skip_unchanged: expected a boolean, got a string",
    ]
    many = {"services": {f"s{i}": {"bogus": 1} for i in range(30)}}
    with pytest.raises(ConfigError) as capped:
        parse_config(many, {}, Path("dockercache.toml"))
    assert len(capped.value.lines()) == 20


def test_several_errors_on_the_command_line_are_a_line_each_and_a_count(tmp_path: Path) -> None:
    import subprocess

    from .conftest import BIN

    (tmp_path / "dockercache.toml").write_text('[settings]\ncache_wirte = "auto"\n\n[services.app]\nimgae = "x"\n')
    proc = subprocess.run(
        [str(BIN / "dockercache"), "check"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "dockercache: error: dockercache.toml: services.app.imgae: unknown key (did you mean 'image'?)",
        "dockercache: error: dockercache.toml: settings.cache_wirte: unknown key (did you mean 'cache_write'?)",
        "dockercache: 2 configuration errors",
    ]
