"""Matrix variants (``matrix = { RUBY_VERSION = ["3.2", "3.3"] }``): config, resolve, plan and stores (no Docker).

A service with a matrix is its variants, ``ruby[3.2]`` and ``ruby[3.3]``, built in one bake run, each with its
own args, bake targets, tags, cache refs, snapshots and meta-data keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dockercache.adapters.ci import CIContext
from dockercache.commands import Environment, plan_for
from dockercache.config.load import parse_config
from dockercache.config.model import CONFIG_NAME, Config
from dockercache.config.services import matrix_variants, split_variant, variant_name
from dockercache.errors import ConfigError
from dockercache.model import BuildOptions, Plan
from dockercache.output.console import Console
from dockercache.planning.resolve import resolve_services
from dockercache.stores.s3.keys import S3Step
from dockercache.stores.s3.layout import SnapshotName

VARS = {
    "BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567",
    "BUILDKITE_BRANCH": "main",
    "BUILDKITE_PIPELINE_SLUG": "shop",
}
DOCKERFILE = (
    "ARG RUBY_VERSION\n"
    "FROM busybox AS base\nRUN true\n"
    "FROM base AS deps\nARG RUBY_VERSION\nRUN echo $RUBY_VERSION\n"
    "FROM deps AS final\nRUN true\n"
)
REGISTRY = {"default": {"type": "registry", "ref": "reg:5000/cache/{service}"}}


def project(root: Path, service: Mapping[str, Any], caches: Mapping[str, Any] = REGISTRY) -> Config:
    (root / "Dockerfile").write_text(DOCKERFILE)
    raw = {"caches": dict(caches), "services": {"ruby": {"stages": ["deps"], **service}}}
    return parse_config(raw, VARS, root / CONFIG_NAME)


def plan_of(config: Config, *services: str, env: Mapping[str, str] = VARS, **options: Any) -> Plan:
    environment = Environment(env=env, cwd=config.root, console=Console())
    return plan_for(
        environment, config, CIContext(env=env, cwd=config.root), BuildOptions(services=services, **options)
    )


MATRIX = {"matrix": {"RUBY_VERSION": ["3.2", "3.3"]}, "args": {"RUBY_VERSION": "0", "OTHER": "x"}}


# ------------------------------------------------------------------------------------------ ids and names


def test_variant_ids_are_the_cartesian_product_in_axis_order(tmp_path: Path) -> None:
    config = project(tmp_path, {"matrix": {"RUBY_VERSION": ["3.2", "3.3"], "OS": ["slim", "alpine"]}})
    variants = matrix_variants(config.service("ruby"))
    assert [v for v, _ in variants] == ["3.2-slim", "3.2-alpine", "3.3-slim", "3.3-alpine"]
    assert variants[3][1] == {"RUBY_VERSION": "3.3", "OS": "alpine"}
    assert variant_name("ruby", "3.3-alpine") == "ruby[3.3-alpine]"
    assert split_variant("ruby[3.3-alpine]") == ("ruby", "3.3-alpine")
    assert split_variant("ruby") == ("ruby", None)
    assert config.service("ruby[3.3-alpine]") is config.service("ruby")


def test_a_matrix_service_is_its_variants_with_the_matrix_merged_over_args(tmp_path: Path) -> None:
    config = project(tmp_path, MATRIX)
    two, three = resolve_services(config, (), VARS)
    assert (two.name, two.variant, three.name, three.variant) == ("ruby[3.2]", "3.2", "ruby[3.3]", "3.3")
    assert dict(two.args) == {"RUBY_VERSION": "3.2", "OTHER": "x"}
    assert dict(three.args) == {"RUBY_VERSION": "3.3", "OTHER": "x"}
    assert (two.siblings, three.siblings) == (("ruby[3.3]",), ("ruby[3.2]",))


def test_service_selection_by_variant_or_by_service(tmp_path: Path) -> None:
    config = project(tmp_path, MATRIX)
    assert [s.name for s in resolve_services(config, ("ruby[3.3]",), VARS)] == ["ruby[3.3]"]
    assert [s.name for s in resolve_services(config, ("ruby",), VARS)] == ["ruby[3.2]", "ruby[3.3]"]
    # Named twice (as a variant and through its service): built once, in the order first named.
    assert [s.name for s in resolve_services(config, ("ruby[3.3]", "ruby"), VARS)] == ["ruby[3.3]", "ruby[3.2]"]
    with pytest.raises(ConfigError, match=r"no variant 'ruby\[3.4\]' \(did you mean 'ruby\[3.3\]'\?\) "):
        resolve_services(config, ("ruby[3.4]",), VARS)
    plain = project(tmp_path, {})
    with pytest.raises(ConfigError, match=r"no variant 'ruby\[3.3\]': services.ruby has no matrix"):
        resolve_services(plain, ("ruby[3.3]",), VARS)


def test_the_dockerfile_check_sees_each_variants_args(tmp_path: Path) -> None:
    """``FROM ruby:${RUBY_VERSION}`` with no default is fine when the matrix gives every variant a value."""
    (tmp_path / "Dockerfile").write_text("ARG RUBY_VERSION\nFROM ruby:${RUBY_VERSION}\nRUN true\n")
    raw = {"services": {"ruby": {"matrix": {"RUBY_VERSION": ["3.2", "3.3"]}}}}
    config = parse_config(raw, VARS, tmp_path / CONFIG_NAME)
    assert len(resolve_services(config, (), VARS)) == 2


# ------------------------------------------------------------------------------------------------ plan


def test_each_variant_has_its_own_targets_tags_and_cache_refs_in_one_bake_file(tmp_path: Path) -> None:
    config = project(tmp_path, {**MATRIX, "image": "reg:5000/ruby", "tags": ["${BUILDKITE_COMMIT}", "latest"]})
    plan = plan_of(config, cache_write=True)
    bake = plan.bake_definition()
    assert list(bake["target"]) == ["ruby-3_2-deps", "ruby-3_2-final", "ruby-3_3-deps", "ruby-3_3-final"]
    assert bake["group"]["default"]["targets"] == ["ruby-3_2-final", "ruby-3_3-final"]
    assert bake["group"]["ruby-3_3"]["targets"] == ["ruby-3_3-final"]
    assert bake["group"]["ruby"]["targets"] == ["ruby-3_2-final", "ruby-3_3-final"]
    final = bake["target"]["ruby-3_3-final"]
    assert final["args"] == {"RUBY_VERSION": "3.3", "OTHER": "x"}
    commit = VARS["BUILDKITE_COMMIT"]
    assert final["tags"] == [f"reg:5000/ruby:{commit}-3.3", "reg:5000/ruby:latest-3.3"]
    assert final["cache-to"][0].startswith("type=registry,ref=reg:5000/cache/ruby:final-main-3.3,")
    assert bake["target"]["ruby-3_2-final"]["cache-from"][:2] == [
        "type=registry,ref=reg:5000/cache/ruby:final-main-3.2",
        "type=registry,ref=reg:5000/cache/ruby:deps-main-3.2",
    ]
    assert [s.name for s in plan.services] == ["ruby[3.2]", "ruby[3.3]"]
    assert plan.to_json()["services"][1]["name"] == "ruby[3.3]"


def test_the_variant_tag_template_and_the_default_tag(tmp_path: Path) -> None:
    config = project(
        tmp_path, {**MATRIX, "variant_tag": "ruby{variant}-{tag}", "push_stages": ["deps"], "image": "r/ruby"}
    )
    deps, final = plan_of(config, "ruby[3.2]").targets
    assert final.tags == ("r/ruby:ruby3.2-0123456789ab",)  # the default tag is the commit
    assert deps.tags == ("r/ruby:deps-ruby3.2-0123456789ab",)  # stage_tag applies over the variant's tag
    (final,) = plan_of(project(tmp_path, MATRIX), "ruby[3.3]", stage="final").targets[-1:]
    assert (final.tags, final.output) == (("ruby:0123456789ab-3.3",), "load")  # no image: the service's name


def test_variants_never_write_each_others_caches_even_on_an_untrusted_branch(tmp_path: Path) -> None:
    """Branch 'main-3.3' building variant 'x' would write final-main-3.3-x: the default branch's ref of
    variant '3.3-x'. It is refused, as any shared ref is for an untrusted branch."""
    config = project(tmp_path, {"matrix": {"V": ["3.3", "x", "3.3-x"]}})
    env = {**VARS, "BUILDKITE_BRANCH": "main-3.3", "BUILDKITE": "true"}
    plan = plan_of(config, "ruby[x]", env=env)
    final = plan.targets[-1]
    assert final.cache_to is None
    assert final.caches.refused is not None and "final-main-3.3-x" in final.caches.refused
    other = plan_of(config, "ruby[3.3]", env=env).targets[-1]
    assert other.cache_to is not None and other.cache_to.location == "reg:5000/cache/ruby:final-main-3.3-3.3"


def test_s3_snapshots_and_local_directories_are_per_variant(tmp_path: Path) -> None:
    s3 = {"s3": {"type": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:5002"}}
    plan = plan_of(project(tmp_path, MATRIX, s3), cache_write=True)
    saves = [t.caches.step.save for t in plan.targets if isinstance(t.caches.step, S3Step) and t.runs]
    assert [str(s) for s in saves] == ["shop/main/ruby[3.2]/final", "shop/main/ruby[3.3]/final"]
    assert SnapshotName.parse("pipeline/main/ruby[3.3]/final") == SnapshotName("pipeline/main", "ruby[3.3]", "final")
    sinks = {t.cache_to.location.rsplit(":", 1)[0] for t in plan.targets if t.cache_to}
    assert len(sinks) == 2  # two repositories on the endpoint, one per variant
    local = {"here": {"type": "local", "path": "cache"}}
    plan = plan_of(project(tmp_path, MATRIX, local), cache_write=True)
    dests = [t.cache_to.get("dest") for t in plan.targets if t.cache_to and t.runs]
    root = tmp_path.resolve() / "cache"
    assert dests == [f"{root}/ruby[3.2]/final.incoming", f"{root}/ruby[3.3]/final.incoming"]


def test_meta_data_keys_are_per_variant(tmp_path: Path) -> None:
    plan = plan_of(project(tmp_path, {**MATRIX, "metadata_key": "ruby-image"}))
    assert [s.metadata_key for s in plan.services] == ["ruby-image-3.2", "ruby-image-3.3"]
    plan = plan_of(project(tmp_path, {**MATRIX, "metadata_key": "docker-compose"}))
    assert [s.metadata_key for s in plan.services] == ["docker-compose", "docker-compose"]  # ..-tag-ruby[3.3]


def test_a_variant_tag_too_long_for_the_commit_is_a_config_error(tmp_path: Path) -> None:
    """The loader checks a variant's tags with a 12-character commit; a longer one is checked by the plan."""
    config = project(tmp_path, {"matrix": {"V": ["a" * 100]}})
    with pytest.raises(ConfigError, match=r"services.ruby.variant_tag: .* \(for ruby\[a+\]\) is not a valid image"):
        plan_of(config, env={**VARS, "BUILDKITE_COMMIT": "z" * 40})


def test_bake_names_of_variants_that_meet_are_a_config_error(tmp_path: Path) -> None:
    config = project(tmp_path, {"matrix": {"V": ["3.3", "3_3"]}})
    with pytest.raises(ConfigError, match=r"services.ruby: service 'ruby\[3_3\]' and service 'ruby\[3.3\]' both"):
        plan_of(config)


# ---------------------------------------------------------------------------------------------- loader


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"matrix": {}}, "services.ruby.matrix: must not be empty"),
        ({"matrix": {"V": []}}, "services.ruby.matrix.V: must not be empty"),
        ({"matrix": {"V": ["1", "1"]}}, "services.ruby.matrix.V: value '1' is listed twice"),
        ({"matrix": {"V": [3.3]}}, "services.ruby.matrix.V[0]: expected a string, got a number"),
        ({"matrix": {"V": ["3.3 "]}}, "services.ruby.matrix.V[0]: '3.3 ' cannot be part of an image tag"),
        ({"matrix": {"V": ["a:b"]}}, "services.ruby.matrix.V[0]: 'a:b' cannot be part of an image tag"),
        ({"matrix": {"V": ["1"]}, "variant_tag": "{tag}"}, "services.ruby.variant_tag: '{tag}' has no {variant}"),
        ({"variant_tag": "{tag}-{id}"}, "services.ruby.variant_tag: unknown placeholder {id}"),
        (
            {"matrix": {"V": ["a" * 120]}},
            "services.ruby.variant_tag: '{tag}-{variant}' does not make a valid image tag",
        ),
    ],
)
def test_bad_matrices_are_refused(tmp_path: Path, service: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        project(tmp_path, service)
    assert f"{CONFIG_NAME}: {message}" in str(info.value)


def test_a_bad_value_names_the_variable_it_came_from(tmp_path: Path) -> None:
    raw = {"services": {"ruby": {"matrix": {"V": ["${RUBY}"]}}}}
    with pytest.raises(ConfigError, match=r"matrix.V\[0\]: '3/3' cannot be part of an image tag.* \(from \$\{RUBY\}\)"):
        parse_config(raw, {**VARS, "RUBY": "3/3"}, tmp_path / CONFIG_NAME)
