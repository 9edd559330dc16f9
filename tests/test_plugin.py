"""dockercache.plugin: the Buildkite plugin's options (both of the agent's forms), their checks against
plugin.yml, the mapping onto dockercache.toml, the merge over a file, and the messages."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dockercache import commands, plugin
from dockercache.config.load import parse_config
from dockercache.errors import ConfigError
from dockercache.output.console import Console

from .conftest import ROOT

PLUGIN_YML = ROOT / "plugin.yml"
OLD_OPTIONS = {
    "s3_bucket": "acme-ci-cache",
    "s3_key": "example/0123456789ab",
    "cache_from": "example/latest",
    "service": "ruby",
    "config": "docker-compose.ci.yml",
    "image_repository": "123456789.dkr.ecr.eu-west-1.amazonaws.com/ruby",
    "image_name": "0123456789ab",
    "metadata_key": "ruby-image",
}
"""The README's "Before" step, as the agent hands it over (its ${...} expanded at pipeline upload)."""


def schema() -> dict[str, Any]:
    data = yaml.safe_load(PLUGIN_YML.read_text())
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------------------------------------ plugin.yml


def test_plugin_yml_describes_the_plugin() -> None:
    data = schema()
    assert data["name"] == "dockercache"
    assert data["description"] and data["author"]
    assert set(data["requirements"]) == {"docker", "python3"}
    assert data["configuration"]["additionalProperties"] is False


def test_plugin_yml_options_are_the_modules() -> None:
    properties = schema()["configuration"]["properties"]
    assert list(properties) == list(plugin.OPTIONS)
    for name, spec in plugin.OPTIONS.items():
        prop = properties[name]
        if spec.kind == "strings":
            assert [b["type"] for b in prop["oneOf"]] == ["string", "array"], name
            assert prop["oneOf"][1]["items"]["type"] == "string", name
        else:
            assert prop["type"] == spec.kind, name
        assert tuple(prop.get("enum", ())) == spec.choices, name
    old = {"s3_bucket", "s3_key", "metadata_key", "service", "config", "cache_from", "image_repository", "image_name"}
    assert old <= set(properties)


CASES: list[dict[str, Any]] = [
    OLD_OPTIONS,
    {"cache_from": ["a/latest", "b/latest"], "config": ["a.yml", "b.yml"], "push": False},
    {"cache_write": "never", "dry_run": True, "stage": "deps", "dockercache_config": "ci/dockercache.toml"},
    {"servce": "ruby"},
    {"push": "false"},
    {"cache_write": "sometimes"},
    {"service": ""},
    {"cache_from": []},
    {"cache_from": ["ok", 3]},
    {"image_name": 20240101},
    {"config": {"file": "x.yml"}},
]


@pytest.mark.parametrize("options", CASES, ids=[json.dumps(c)[:40] for c in CASES])
def test_validate_agrees_with_plugin_yml(options: dict[str, Any]) -> None:
    valid = jsonschema.Draft7Validator(schema()["configuration"]).is_valid(options)
    try:
        plugin.validate(options, lambda key: f"plugin option {key}")
    except ConfigError:
        assert not valid
    else:
        assert valid


# ------------------------------------------------------------------------------------------ reading


def test_reads_the_json_the_agent_sets() -> None:
    env = {"BUILDKITE_PLUGIN_CONFIGURATION": json.dumps(OLD_OPTIONS), "BUILDKITE_PLUGIN_DOCKERCACHE_SERVICE": "x"}
    options, name = plugin.read_options(env)
    assert options == OLD_OPTIONS  # the JSON wins over the variables
    assert name("s3_key") == "plugin option s3_key"


def test_reads_the_variables_without_json() -> None:
    env = {
        "BUILDKITE_PLUGIN_DOCKERCACHE_S3_BUCKET": "acme",
        "BUILDKITE_PLUGIN_DOCKERCACHE_CACHE_FROM_1": "b/latest",
        "BUILDKITE_PLUGIN_DOCKERCACHE_CACHE_FROM_0": "a/latest",
        "BUILDKITE_PLUGIN_DOCKERCACHE_CONFIG": "docker-compose.ci.yml",
        "BUILDKITE_PLUGIN_DOCKERCACHE_PUSH": "false",
        "BUILDKITE_PLUGIN_DOCKERCACHE_DRY_RUN": "true",
        "BUILDKITE_PLUGIN_DOCKER_COMPOSE_BUILD": "app",  # another plugin's
        "BUILDKITE_PIPELINE_SLUG": "example",
    }
    options, name = plugin.read_options(env)
    assert options == {
        "s3_bucket": "acme",
        "cache_from": ["a/latest", "b/latest"],
        "config": "docker-compose.ci.yml",
        "push": False,
        "dry_run": True,
    }
    assert name("s3_bucket") == "BUILDKITE_PLUGIN_DOCKERCACHE_S3_BUCKET"


def test_reads_the_variables_under_the_agents_name_for_the_plugin() -> None:
    env = {
        "BUILDKITE_PLUGIN_NAME": "ACME_DOCKERCACHE",
        "BUILDKITE_PLUGIN_ACME_DOCKERCACHE_SERVICE": "ruby",
        "BUILDKITE_PLUGIN_DOCKERCACHE_SERVICE": "not-this-one",
    }
    options, name = plugin.read_options(env)
    assert options == {"service": "ruby"}
    assert name("service") == "BUILDKITE_PLUGIN_ACME_DOCKERCACHE_SERVICE"


def test_an_unknown_variable_is_named() -> None:
    options, name = plugin.read_options({"BUILDKITE_PLUGIN_DOCKERCACHE_IMAGE_REPO": "x"})
    with pytest.raises(ConfigError) as error:
        plugin.validate(options, name)
    assert str(error.value) == (
        "BUILDKITE_PLUGIN_DOCKERCACHE_IMAGE_REPO: unknown option 'image_repo' (did you mean 'image_repository'?)"
    )


def test_a_boolean_variable_that_is_neither_true_nor_false() -> None:
    options, name = plugin.read_options({"BUILDKITE_PLUGIN_DOCKERCACHE_PUSH": "yes"})
    with pytest.raises(ConfigError, match=r"^BUILDKITE_PLUGIN_DOCKERCACHE_PUSH: expected true or false, got a str"):
        plugin.validate(options, name)


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "BUILDKITE_PLUGIN_CONFIGURATION: not JSON"), ("[1]", "expected an object, got an array")],
)
def test_bad_json(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plugin.read_options({"BUILDKITE_PLUGIN_CONFIGURATION": text})


def test_null_json_is_no_options() -> None:
    assert plugin.read_options({"BUILDKITE_PLUGIN_CONFIGURATION": "null"})[0] == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"servce": "x"}, "plugin option servce: unknown option 'servce' (did you mean 'service'?)"),
        ({"push": "false"}, 'plugin option push: expected true or false, got a string ("false")'),
        ({"image_name": 1}, "plugin option image_name: expected a string, got an integer (1)"),
        ({"cache_from": [1]}, "plugin option cache_from: expected a string or an array of strings, got an integer"),
        ({"cache_from": []}, "plugin option cache_from: must not be an empty array"),
        ({"service": ""}, "plugin option service: must not be empty"),
        ({"cache_write": "alway"}, "plugin option cache_write: 'alway' is not one of 'auto', 'always', 'never'"),
    ],
)
def test_validation_messages(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        plugin.validate(options, lambda key: f"plugin option {key}")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ mapping


def test_the_old_options_alone_make_a_configuration() -> None:
    mapped = plugin.mapping(OLD_OPTIONS, None)
    assert mapped.document == {
        "caches": {
            "s3": {
                "type": "s3",
                "bucket": "acme-ci-cache",
                "key": "example/0123456789ab",
                "cache_from": ["example/latest"],
            }
        },
        "services": {
            "ruby": {
                "compose_service": "ruby",
                "compose_files": ["docker-compose.ci.yml"],
                "image": "123456789.dkr.ecr.eu-west-1.amazonaws.com/ruby",
                "tags": ["0123456789ab"],
                "metadata_key": "ruby-image",
                "cache": "s3",
            }
        },
    }
    assert mapped.service == "ruby"
    config = parse_config(mapped.document, {}, Path("dockercache.toml"))
    ruby = config.services["ruby"]
    assert (ruby.image, ruby.tags, ruby.metadata_key) == (
        OLD_OPTIONS["image_repository"],
        ("0123456789ab",),
        "ruby-image",
    )
    s3 = config.caches["s3"]
    assert (s3.bucket, s3.key, s3.cache_from) == ("acme-ci-cache", "example/0123456789ab", ("example/latest",))  # type: ignore[union-attr]


FILE: dict[str, Any] = {
    "settings": {"cache_write": "always"},
    "caches": {"cache": {"type": "s3", "bucket": "from-file", "key": "{pipeline}/{branch}", "prefix": "dc"}},
    "services": {
        "ruby": {"context": ".", "stages": ["deps"], "image": "file/ruby", "tags": ["a", "b"]},
    },
}


def test_options_override_the_file() -> None:
    options = {"service": "ruby", "s3_key": "{pipeline}/{commit}", "image_name": "v1", "cache_write": "never"}
    mapped = plugin.mapping(options, FILE)
    merged = plugin.merge(FILE, mapped.document)
    assert merged["caches"]["cache"] == {  # the file's S3 store the service uses, not a second one
        "type": "s3",
        "bucket": "from-file",
        "key": "{pipeline}/{commit}",
        "prefix": "dc",
    }
    assert merged["services"]["ruby"] == {
        "context": ".",
        "stages": ["deps"],
        "image": "file/ruby",
        "tags": ["v1"],  # an array is replaced, not appended to
        "cache": "cache",
    }
    assert merged["settings"] == {"cache_write": "never"}
    assert "compose_service" not in merged["services"]["ruby"]  # a service of the file's own: as written
    parse_config(merged, {}, Path("dockercache.toml"))
    assert FILE["services"]["ruby"]["tags"] == ["a", "b"]  # the file's document is left as it was


def test_a_service_the_file_lacks_comes_from_compose() -> None:
    mapped = plugin.mapping({"service": "app", "s3_bucket": "b"}, FILE)
    merged = plugin.merge(FILE, mapped.document)
    assert merged["services"]["app"] == {"compose_service": "app", "metadata_key": "docker-compose", "cache": "cache"}
    assert merged["caches"] == {"cache": {**FILE["caches"]["cache"], "bucket": "b"}}  # the store it would use


def test_s3_options_make_a_store_of_their_own_beside_a_registry_store() -> None:
    file = {"caches": {"default": {"type": "registry", "ref": "r/c"}}, "services": {"ruby": {"context": "."}}}
    merged = plugin.merge(file, plugin.mapping({"service": "ruby", "s3_bucket": "b"}, file).document)
    assert merged["caches"] == {"default": file["caches"]["default"], "s3": {"type": "s3", "bucket": "b"}}
    assert merged["services"]["ruby"] == {"context": ".", "cache": "s3"}


def test_the_only_service_of_the_file_is_the_one() -> None:
    mapped = plugin.mapping({"image_name": "v2"}, FILE)
    assert mapped.document["services"] == {"ruby": {"tags": ["v2"]}}
    assert mapped.service is None


def test_merge_replaces_what_is_no_table() -> None:
    assert plugin.merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "d": {"e": 1}}) == {
        "a": {"b": 1, "c": [2]},
        "d": {"e": 1},
    }


@pytest.mark.parametrize(
    ("options", "file", "message"),
    [
        ({"s3_bucket": "b"}, None, "plugin option service: required without a dockercache.toml"),
        ({"s3_key": "k", "service": "app"}, None, "plugin option s3_key: needs s3_bucket (or an S3 cache store in"),
        (
            {"image_name": "v1"},
            {"services": {"a": {"context": "."}, "b": {"context": "."}}},
            "plugin option image_name: needs service",
        ),
    ],
)
def test_mapping_errors(options: dict[str, Any], file: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plugin.mapping(options, file)


def test_errors_name_the_option_that_set_the_key() -> None:
    mapped = plugin.mapping({**OLD_OPTIONS, "image_name": "not a tag"}, None)
    with pytest.raises(ConfigError) as error:
        parse_config(mapped.document, {}, Path("/ci/checkout/dockercache.toml"))
    explained = plugin.explain(error.value, mapped.origins, from_file=False)
    assert str(explained).startswith("plugin option image_name (services.ruby.tags[0]): 'not a tag' is not a valid")
    unrelated = ConfigError("/ci/checkout/dockercache.toml: services.ruby.platforms[0]: 'x' is not a platform")
    assert str(plugin.explain(unrelated, mapped.origins, from_file=False)) == (
        "plugin options: services.ruby.platforms[0]: 'x' is not a platform"
    )
    in_file = ConfigError("dockercache.toml: services.ruby.platforms[0]: 'x' is not a platform")
    assert plugin.explain(in_file, mapped.origins, from_file=True) is in_file


# ------------------------------------------------------------------------------------------ run


class FakeDocker:
    def __init__(self, containerd: bool) -> None:
        self.containerd = containerd
        self.calls: list[str] = []

    def containerd_image_store(self) -> bool:
        self.calls.append("info")
        return self.containerd

    def compose_config(self, files: Sequence[Path], project_dir: Path) -> Mapping[str, Any]:
        self.calls.append("compose " + " ".join(f.name for f in files))
        return {"services": {"ruby": {"build": {"context": str(project_dir), "target": "final"}}}}


def checkout(tmp_path: Path, with_config: bool) -> Path:
    path = tmp_path / "checkout"
    shutil.copytree(ROOT / "examples" / "ruby", path, ignore=shutil.ignore_patterns(".dockercache"))
    if not with_config:
        (path / "dockercache.toml").unlink()
    (path / "docker-compose.ci.yml").write_text("services: {}\n")
    return path


def run(cwd: Path, options: dict[str, Any], containerd: bool = True) -> tuple[int, str, FakeDocker]:
    env = {
        "BUILDKITE_PLUGIN_CONFIGURATION": json.dumps(options),
        "BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_PIPELINE_SLUG": "example",
    }
    out = io.StringIO()
    docker = FakeDocker(containerd)
    environment = commands.Environment(env=env, cwd=cwd, docker=docker, console=Console(out, io.StringIO()))  # type: ignore[arg-type]
    return plugin.run(environment), out.getvalue(), docker


def test_run_with_the_old_options_alone(tmp_path: Path) -> None:
    code, out, docker = run(checkout(tmp_path, with_config=False), {**OLD_OPTIONS, "dry_run": True})
    assert code == 0
    assert "builder: default (driver docker)" in out  # the engine's own (containerd image store)
    assert "ruby (cache store: s3)" in out
    assert "push:       123456789.dkr.ecr.eu-west-1.amazonaws.com/ruby:0123456789ab" in out
    assert "restore:    example/latest, example/0123456789ab" in out
    assert docker.calls == ["info", "compose docker-compose.ci.yml"]


def test_run_on_a_classic_image_store_keeps_the_default_builder(tmp_path: Path) -> None:
    code, out, _ = run(checkout(tmp_path, with_config=False), {**OLD_OPTIONS, "dry_run": True}, containerd=False)
    assert code == 0
    assert "builder: dockercache (driver docker-container)" in out


def test_run_over_the_checkouts_dockercache_toml(tmp_path: Path) -> None:
    options = {"service": "ruby", "image_repository": "registry.example/ruby", "image_name": "v1", "dry_run": True}
    code, out, docker = run(checkout(tmp_path, with_config=True), options)
    assert code == 0
    assert "base: built inside bake target ruby-final" in out  # the file's stages
    assert "push:       registry.example/ruby:v1" in out
    assert docker.calls == []  # the file names its builder: no question to the engine


def test_run_refuses_bad_configuration_before_docker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        run(checkout(tmp_path, with_config=False), {**OLD_OPTIONS, "image_repository": "Not/Valid"})
    assert str(error.value).startswith("plugin option image_repository (services.ruby.image): 'Not/Valid'")


def test_run_with_a_dockercache_config_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ci/nope\.toml: no such configuration file"):
        run(checkout(tmp_path, with_config=False), {"service": "ruby", "dockercache_config": "ci/nope.toml"})


def test_main_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BUILDKITE_PLUGIN_CONFIGURATION", json.dumps({"service": "ruby", "pussh": False}))
    with pytest.raises(SystemExit) as exit_:
        plugin.main()
    assert exit_.value.code == 2
    assert (
        capsys.readouterr().err
        == "dockercache: error: plugin option pussh: unknown option 'pussh' (did you mean 'push'?)\n"
    )
