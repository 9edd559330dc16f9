"""dockercache.planning.plan: configuration in, one bake definition out (no Docker)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import pytest

from dockercache.config.caches import LocalCache, RegistryCache, S3Cache
from dockercache.config.model import BUILDKIT_IMAGE, BuilderConfig, Settings
from dockercache.errors import ConfigError
from dockercache.model import BuilderPlan, BuildOptions, Target
from dockercache.planning.plan import PlanInputs, make_plan
from dockercache.planning.resolve import ResolvedService, SecretSource
from dockercache.planning.targets import ImageOptions

PINNED = f"image={BUILDKIT_IMAGE}"
"""A docker-container builder's BuildKit, pinned (issue 27): every agent of a fleet runs the same one."""

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REG = RegistryCache(type="registry", ref="reg:5000/cache/{service}")
GRAPHS = {"base": ("base",), "deps": ("base", "deps"), "final": ("base", "deps", "final")}


def service(store: RegistryCache | LocalCache | S3Cache = REG, **kw: object) -> ResolvedService:
    values: dict[str, object] = {
        "name": "ruby",
        "context": Path("/src"),
        "dockerfile": Path("/src/Dockerfile"),
        "stages": ("base", "deps", "final"),
        "final_target": "final",
        "args": {"A": "1"},
        "image": "reg:5000/ruby",
        "tags": (),
        "push_stages": (),
        "stage_tag": "{stage}-{tag}",
        "store_name": "reg",
        "store": store,
        "metadata_key": None,
        "graphs": GRAPHS,
    }
    values.update(kw)
    return ResolvedService(**values)  # type: ignore[arg-type]


def inputs(*svcs: ResolvedService, branch: str = "main", on_ci: bool = True, **kw: object) -> PlanInputs:
    values: dict[str, object] = {
        "services": svcs or (service(),),
        "builder": BuilderConfig(),
        "settings": Settings(),
        "root": Path("/src"),
        "commit": "abc123",
        "branch": branch,
        "default_branch": "main",
        "on_ci": on_ci,
    }
    values.update(kw)
    return PlanInputs(**values)  # type: ignore[arg-type]


def refs(target: Target) -> list[str]:
    return [c.location for c in target.cache_from]


def test_default_branch_reads_and_writes_shared_refs() -> None:
    plan = make_plan(inputs(), BuildOptions())
    base, deps, final = plan.targets
    # Its own ref, those of the stages it builds on, then those of stages that build on the same ones.
    assert refs(base) == [f"reg:5000/cache/ruby:{s}-main" for s in ("base", "deps", "final")]
    assert refs(deps) == [f"reg:5000/cache/ruby:{s}-main" for s in ("deps", "base", "final")]
    assert refs(final) == [
        "reg:5000/cache/ruby:final-main",
        "reg:5000/cache/ruby:deps-main",
        "reg:5000/cache/ruby:base-main",
    ]
    assert final.cache_to is not None
    assert final.cache_to.encode() == (
        "type=registry,ref=reg:5000/cache/ruby:final-main,mode=max,image-manifest=true,oci-mediatypes=true,"
        "compression=zstd,ignore-error=true"
    )


def test_feature_branch_reads_own_then_default_and_writes_only_own() -> None:
    deps = make_plan(inputs(branch="feature/login"), BuildOptions()).targets[1]
    assert refs(deps) == [
        "reg:5000/cache/ruby:deps-feature-login-df7c7aeb",
        "reg:5000/cache/ruby:deps-main",
        "reg:5000/cache/ruby:base-feature-login-df7c7aeb",
        "reg:5000/cache/ruby:base-main",
        "reg:5000/cache/ruby:final-feature-login-df7c7aeb",
        "reg:5000/cache/ruby:final-main",
    ]
    assert deps.cache_to is not None
    assert deps.cache_to.location == "reg:5000/cache/ruby:deps-feature-login-df7c7aeb"


def test_a_target_reads_its_graph_then_the_stages_that_share_it() -> None:
    """A test stage outside the final image: each reads its own graph's refs first, then the other's (which
    holds the stages both build on); a stage that shares nothing with a target is never read."""
    graphs = {
        "base": ("base",),
        "deps": ("base", "deps"),
        "assets": ("base", "assets"),
        "test": ("base", "deps", "test"),
        "final": ("base", "deps", "assets", "final"),
    }
    svc = service(stages=("base", "deps", "assets", "test", "final"), graphs=graphs)
    targets = {t.stage: t for t in make_plan(inputs(svc), BuildOptions()).targets}
    assert refs(targets["test"]) == [
        f"reg:5000/cache/ruby:{s}-main" for s in ("test", "deps", "base", "assets", "final")
    ]
    assert refs(targets["final"]) == [
        f"reg:5000/cache/ruby:{s}-main" for s in ("final", "assets", "deps", "base", "test")
    ]
    lonely = {**graphs, "assets": ("assets",), "final": ("base", "deps", "final")}
    svc = service(stages=("base", "deps", "assets", "test", "final"), graphs=lonely)
    targets = {t.stage: t for t in make_plan(inputs(svc), BuildOptions()).targets}
    assert refs(targets["assets"]) == ["reg:5000/cache/ruby:assets-main"]
    assert "reg:5000/cache/ruby:assets-main" not in refs(targets["final"])
    assert [t.cache_to.location for t in targets.values() if t.cache_to] == [
        f"reg:5000/cache/ruby:{s}-main" for s in ("base", "deps", "assets", "test", "final")
    ]


def test_trusted_branch_writes_shared() -> None:
    settings = Settings(trusted_branches=("release/*",))
    plan = make_plan(inputs(branch="release/1.2", settings=settings), BuildOptions())
    assert plan.targets[0].cache_to is not None
    assert plan.targets[0].cache_to.location == "reg:5000/cache/ruby:base-main"


def test_untrusted_branch_never_writes_a_shared_ref() -> None:
    store = RegistryCache(type="registry", ref="reg:5000/cache/{service}", tag="{stage}-shared")
    plan = make_plan(inputs(service(store), branch="attacker/pr"), BuildOptions(cache_write=True))
    assert all(t.cache_to is None for t in plan.targets)
    assert all("may not write it" in (t.caches.refused or "") for t in plan.targets)


def test_extra_refs_come_last() -> None:
    store = RegistryCache(type="registry", ref="reg:5000/cache/{service}", extra_from=("other:5000/x:{stage}",))
    plan = make_plan(inputs(service(store)), BuildOptions())
    assert refs(plan.targets[0])[-1] == "other:5000/x:base"


@pytest.mark.parametrize(
    ("settings", "options", "on_ci", "expected"),
    [
        (Settings(), BuildOptions(), True, True),
        (Settings(), BuildOptions(), False, False),
        (Settings(), BuildOptions(cache_write=True), False, True),
        (Settings(), BuildOptions(cache_write=False), True, False),
        (Settings(cache_write="never"), BuildOptions(cache_write=True), True, False),
        (Settings(cache_write="always"), BuildOptions(), False, True),
    ],
)
def test_cache_write_policy(settings: Settings, options: BuildOptions, on_ci: bool, expected: bool) -> None:
    plan = make_plan(inputs(settings=settings, on_ci=on_ci), options)
    assert plan.cache_write is expected
    assert all((t.cache_to is not None) is expected for t in plan.targets)


def test_final_image_pushed_with_commit_tag_and_stages_cache_only() -> None:
    base, _deps, final = make_plan(inputs(), BuildOptions()).targets
    assert final.tags == ("reg:5000/ruby:abc123",)
    assert final.output == "push" and final.bake()["output"] == ["type=registry"]
    assert base.output == "cacheonly" and base.bake()["output"] == ["type=cacheonly"] and not base.tags


def test_no_push_loads() -> None:
    final = make_plan(inputs(), BuildOptions(push=False)).targets[-1]
    assert final.output == "load" and final.bake()["output"] == ["type=docker"]


def test_push_by_default_on_ci_only() -> None:
    """README: on a laptop ``build`` loads its images unless --push; on CI it pushes unless --no-push."""
    outputs = {
        (on_ci, push): make_plan(inputs(on_ci=on_ci), BuildOptions(push=push)).targets[-1].output
        for on_ci in (True, False)
        for push in (None, True, False)
    }
    assert outputs == {
        (True, None): "push",
        (True, True): "push",
        (True, False): "load",
        (False, None): "load",
        (False, True): "push",
        (False, False): "load",
    }


def test_push_stages_get_stage_tags() -> None:
    svc = service(push_stages=("deps",), tags=("abc123", "latest"))
    deps = make_plan(inputs(svc), BuildOptions()).targets[1]
    assert deps.tags == ("reg:5000/ruby:deps-abc123", "reg:5000/ruby:deps-latest")
    assert deps.push


def test_stage_option_builds_the_stage_and_its_graph() -> None:
    plan = make_plan(inputs(), BuildOptions(stage="deps"))
    assert [t.stage for t in plan.targets] == ["base", "deps"]
    graphs = {**GRAPHS, "final": ("deps", "final")}
    plan = make_plan(inputs(service(graphs=graphs)), BuildOptions(stage="final"))
    assert [t.stage for t in plan.targets] == ["deps", "final"]
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        make_plan(inputs(), BuildOptions(stage="nope"))


def test_local_store_sources_only_existing_dirs_and_swaps() -> None:
    local = LocalCache(type="local", path="cache")
    existing = {"/src/cache/ruby/base"}
    plan = make_plan(inputs(service(local)), BuildOptions(), exists=existing.__contains__)
    deps = plan.targets[1]
    assert [c.encode() for c in deps.cache_from] == ["type=local,src=/src/cache/ruby/base"]
    assert deps.cache_to is not None and deps.cache_to.get("dest") == "/src/cache/ruby/deps.incoming"
    assert deps.caches.step is not None and deps.caches.step.to_json()["final"] == "/src/cache/ruby/deps"
    assert plan.cache_write  # local stores are written even off CI


def test_bake_definition_and_argv() -> None:
    plan = make_plan(inputs(), BuildOptions(no_cache=True))
    definition = plan.bake_definition()
    # Every stage is a target of the file; build runs the leaves (here the final image), whose mode=max
    # cache holds the stages it builds on.
    assert definition["group"] == {"default": {"targets": ["ruby-final"]}, "ruby": {"targets": ["ruby-final"]}}
    assert list(definition["target"]) == ["ruby-base", "ruby-deps", "ruby-final"]
    assert [t.built_by for t in plan.targets] == ["ruby-final"] * 3
    final = definition["target"]["ruby-final"]
    assert final == {
        "context": "/src",
        "dockerfile": "/src/Dockerfile",
        "target": "final",
        "args": {"A": "1"},
        "tags": ["reg:5000/ruby:abc123"],
        "cache-from": [
            "type=registry,ref=reg:5000/cache/ruby:final-main",
            "type=registry,ref=reg:5000/cache/ruby:deps-main",
            "type=registry,ref=reg:5000/cache/ruby:base-main",
        ],
        "cache-to": [
            "type=registry,ref=reg:5000/cache/ruby:final-main,mode=max,image-manifest=true,oci-mediatypes=true,"
            "compression=zstd,ignore-error=true"
        ],
        "output": ["type=registry"],
        "no-cache": True,
        "attest": ["type=provenance,disabled=true"],  # no attestation manifest unless asked for
    }
    assert plan.bake_argv("/tmp/b.json", "/tmp/m.json") == [
        "buildx",
        "bake",
        "--builder",
        "dockercache",
        "--progress",
        "rawjson",
        "--file",
        "/tmp/b.json",
        "--metadata-file",
        "/tmp/m.json",
        "default",
    ]
    document = plan.to_json()
    assert document["bake"] == definition
    assert document["argv"][:3] == ["docker", "buildx", "bake"]
    json.dumps(document)  # serialisable


def test_several_services_are_one_definition_with_a_group_each() -> None:
    web = service(name="web", graphs=GRAPHS)
    worker = service(name="worker.v2", stages=("base", "final"), graphs=GRAPHS)
    plan = make_plan(inputs(web, worker), BuildOptions())
    definition = plan.bake_definition()
    assert list(definition["target"]) == ["web-base", "web-deps", "web-final", "worker_v2-base", "worker_v2-final"]
    assert definition["group"]["default"]["targets"] == ["web-final", "worker_v2-final"]
    assert definition["group"]["worker.v2"]["targets"] == ["worker_v2-final"]


def test_build_runs_the_leaves_and_pushed_stages() -> None:
    """A test stage beside the final image: both run; the stages they build on run inside them."""
    graphs = {
        "base": ("base",),
        "deps": ("base", "deps"),
        "test": ("base", "deps", "test"),
        "final": ("base", "deps", "final"),
    }
    svc = service(stages=("base", "deps", "test", "final"), graphs=graphs, push_stages=("deps",))
    plan = make_plan(inputs(svc), BuildOptions())
    assert [t.name for t in plan.running] == ["ruby-deps", "ruby-test", "ruby-final"]  # deps: its image is pushed
    assert {t.stage: t.built_by for t in plan.targets} == {
        "base": "ruby-deps",
        "deps": "ruby-deps",
        "test": "ruby-test",
        "final": "ruby-final",
    }
    plain = make_plan(inputs(service(stages=("base", "deps", "test", "final"), graphs=graphs)), BuildOptions())
    assert [t.name for t in plain.running] == ["ruby-test", "ruby-final"]
    assert plain.targets[0].built_by == "ruby-test"  # the first leaf in Dockerfile order that builds on it
    only = plain.only([plain.targets[1]])
    assert only.bake_definition()["group"]["default"]["targets"] == ["ruby-deps"]


def test_names_that_meet_in_bake_are_a_config_error() -> None:
    one = service(name="a-b", stages=("final",), graphs={"final": ("final",)})
    two = service(name="a", stages=("b-final",), graphs={"b-final": ("b-final",)})
    with pytest.raises(ConfigError, match="both become bake target or group 'a-b-final'"):
        make_plan(inputs(one, two), BuildOptions())
    with pytest.raises(ConfigError, match="the default group"):
        make_plan(inputs(service(name="default")), BuildOptions())


def test_ephemeral_builder_name_is_per_job() -> None:
    plan = make_plan(inputs(builder=BuilderConfig(ephemeral=True), job_id="0190-abc"), BuildOptions())
    assert plan.builder.name == "dockercache-0190-abc"
    assert plan.builder.create_argv() == [
        "buildx",
        "create",
        "--name",
        "dockercache-0190-abc",
        "--driver",
        "docker-container",
        "--driver-opt",
        PINNED,
    ]
    assert plan.bake_argv()[2:4] == ["--builder", "dockercache-0190-abc"]


@pytest.mark.parametrize(
    ("builder", "create"),
    [
        (
            BuilderConfig(name="b", driver="remote", endpoint="tcp://bk:1234", driver_opts={"cacert": "/ca"}),
            ["buildx", "create", "--name", "b", "--driver", "remote", "--driver-opt", "cacert=/ca", "tcp://bk:1234"],
        ),
        (
            BuilderConfig(name="k8s", driver="kubernetes", driver_opts={"namespace": "ci", "replicas": "2"}),
            [
                "buildx",
                "create",
                "--name",
                "k8s",
                "--driver",
                "kubernetes",
                "--driver-opt",
                "namespace=ci",
                "--driver-opt",
                "replicas=2",
            ],
        ),
        (
            BuilderConfig(
                name="dc", driver="docker-container", driver_opts={"network": "host"}, platforms=("linux/amd64",)
            ),
            [
                "buildx",
                "create",
                "--name",
                "dc",
                "--driver",
                "docker-container",
                "--driver-opt",
                "network=host",
                "--driver-opt",
                PINNED,
                "--platform",
                "linux/amd64",
            ],
        ),
    ],
)
def test_every_driver_bakes_through_its_builder(builder: BuilderConfig, create: list[str]) -> None:
    plan = make_plan(inputs(builder=builder), BuildOptions())
    assert plan.builder.create_argv() == create
    assert plan.bake_argv()[:4] == ["buildx", "bake", "--builder", builder.name]


def test_a_docker_container_builder_runs_the_pinned_buildkit() -> None:
    assert re.fullmatch(r"moby/buildkit:v\d+\.\d+\.\d+", BUILDKIT_IMAGE)
    argv = make_plan(inputs(builder=BuilderConfig()), BuildOptions()).builder.create_argv()
    assert argv[-2:] == ["--driver-opt", PINNED]
    own = make_plan(inputs(builder=BuilderConfig(image="registry.internal/buildkit:v0.13.2")), BuildOptions())
    assert own.builder.create_argv()[-2:] == ["--driver-opt", "image=registry.internal/buildkit:v0.13.2"]
    opts = make_plan(inputs(builder=BuilderConfig(driver_opts={"image": "mine:1"})), BuildOptions())
    assert opts.builder.create_argv()[-2:] == ["--driver-opt", "image=mine:1"]  # driver_opts.image wins
    for driver in ("remote", "kubernetes"):  # builders that bring their own BuildKit are left to it
        other = make_plan(inputs(builder=BuilderConfig(driver=driver, endpoint="tcp://x:1")), BuildOptions())
        assert not any(a.startswith("image=") for a in other.builder.create_argv())


def test_force_compression() -> None:
    store = RegistryCache(type="registry", ref="r/c", force_compression=True)
    target = make_plan(inputs(service(store)), BuildOptions()).targets[0]
    assert target.cache_to is not None and target.cache_to.get("force-compression") == "true"


def test_cache_entry_encoding_quotes_what_csv_needs() -> None:
    from dockercache.stores import CacheEntry

    entry = CacheEntry.make("local", {"src": "/a,b/c", "x": 'say "hi"'})
    assert entry.encode() == 'type=local,"src=/a,b/c","x=say ""hi"""'
    assert entry.location == "/a,b/c"


S3 = S3Cache(type="s3", bucket="ci-cache", endpoint_url="http://127.0.0.1:5002", region="eu-west-1")


def s3_inputs(branch: str = "main", store: S3Cache = S3, **kw: object) -> PlanInputs:
    return inputs(service(store, store_name="s3"), branch=branch, pipeline="shop", **kw)


def test_s3_restore_order_and_save_key() -> None:
    deps = make_plan(s3_inputs("feature/x"), BuildOptions()).targets[1]
    step = deps.caches.step
    assert step is not None and deps.caches.kind == "s3"
    assert step.to_json()["restore_keys"] == ["shop/latest", "shop/feature-x-217d2bf5", "shop/main"]
    assert step.to_json()["save"] == "shop/feature-x-217d2bf5/ruby/deps"
    # Every key in restore order, each for this stage and then its graph's, served by the run's endpoint
    # (whose address replaces the placeholder host once it listens).
    host = "s3-endpoint.dockercache.invalid"
    assert [c.encode() for c in deps.cache_from] == [
        f"type=registry,ref={host}/{repo}:{stage}"
        for repo in ("shop/latest/ruby", "shop/feature-x-217d2bf5/ruby", "shop/main/ruby")
        for stage in ("deps", "base", "final")
    ]
    assert deps.cache_to is not None
    assert deps.cache_to.encode() == (
        f"type=registry,ref={host}/shop/feature-x-217d2bf5/ruby:deps,mode=max,image-manifest=true,oci-mediatypes=true,"
        "compression=zstd,ignore-error=true"
    )


def test_s3_listen_address_is_the_cache_host() -> None:
    remote = S3Cache(type="s3", bucket="b", listen="10.0.0.5:5005")
    target = make_plan(s3_inputs("main", remote), BuildOptions()).targets[0]
    assert target.cache_to is not None and target.cache_to.location == "10.0.0.5:5005/shop/main/ruby:base"


def test_s3_untrusted_branch_never_writes_a_key_the_default_branch_reads() -> None:
    shared = S3Cache(type="s3", bucket="b", key="{pipeline}/latest")
    target = make_plan(s3_inputs("feature/x", shared), BuildOptions()).targets[0]
    assert target.caches.step is not None and target.caches.step.to_json()["save"] is None
    assert target.cache_to is None
    assert target.caches.refused is not None and "shop/latest" in target.caches.refused
    on_main = make_plan(s3_inputs("main", shared), BuildOptions()).targets[0]
    assert on_main.caches.step is not None and on_main.caches.step.to_json()["save"] == "shop/latest/ruby/base"


def test_s3_per_commit_keys_are_written_by_trusted_builds_only() -> None:
    """The default branch reads ``{pipeline}/<commit>`` when it builds a commit (a fast-forward merge): an
    untrusted build of that commit writes its branch's key instead, and restores from it."""
    per_commit = S3Cache(type="s3", bucket="b", key="{pipeline}/{commit}")
    target = make_plan(s3_inputs("feature/x", per_commit), BuildOptions()).targets[0]
    step = target.caches.step
    assert step is not None and step.to_json()["save"] == "shop/feature-x-217d2bf5/ruby/base"
    assert step.to_json()["restore_keys"] == ["shop/latest", "shop/feature-x-217d2bf5", "shop/abc123"]
    on_main = make_plan(s3_inputs("main", per_commit), BuildOptions()).targets[0]
    assert on_main.caches.step is not None and on_main.caches.step.to_json()["save"] == "shop/abc123/ruby/base"


def test_s3_a_pull_request_writes_only_its_own_key_whatever_the_template_says() -> None:
    """The README's migration example, ``{pipeline}/{commit}``, on pull request 42: the plan's word (its own refs
    and keys only, pr-42) is what it saves."""
    per_commit = S3Cache(type="s3", bucket="b", key="{pipeline}/{commit}")
    plan = make_plan(s3_inputs("main", per_commit, pull_request="42"), BuildOptions())
    assert "(pr-42)" in plan.cache_write_reason
    for target in plan.targets:
        assert target.caches.step is not None
        assert target.caches.step.to_json()["save"] == f"shop/pr-42/ruby/{target.stage}"
    expanded = S3Cache(type="s3", bucket="b", key="shop/" + "abc123" + "d" * 34)  # the agent expanded the commit
    target = make_plan(s3_inputs("main", expanded, pull_request="42", commit="abc123" + "d" * 34), BuildOptions())
    assert target.targets[0].caches.step is not None
    assert target.targets[0].caches.step.to_json()["save"] == "shop/pr-42/ruby/base"


def test_s3_an_untrusted_branch_named_like_a_commit_writes_nothing_a_commit_key_reads() -> None:
    per_commit = S3Cache(type="s3", bucket="b", key="{pipeline}/{commit}")
    target = make_plan(s3_inputs("f" * 40, per_commit), BuildOptions()).targets[0]
    assert target.cache_to is None and target.caches.refused is not None
    assert "named like a commit" in target.caches.refused


def test_s3_native_uses_buildkit_s3_cache_without_credentials() -> None:
    native = S3Cache(type="s3", bucket="b", region="eu-west-1", native=True, endpoint_url="http://minio:9000")
    target = make_plan(s3_inputs("main", native), BuildOptions()).targets[1]
    assert target.caches.kind == "s3-native" and target.caches.step is None
    assert target.cache_from[0].to_json() == {
        "type": "s3",
        "bucket": "b",
        "prefix": "dockercache/native/",
        "region": "eu-west-1",
        "endpoint_url": "http://minio:9000",
        "use_path_style": "true",
        "name": "shop/latest/ruby/deps",
    }
    assert target.cache_to is not None and target.cache_to.get("name") == "shop/main/ruby/deps"
    text = json.dumps(target.bake())
    assert "type=s3,bucket=b" in text
    assert "access_key" not in text and "secret" not in text


def test_a_docker_container_builder_for_the_s3_endpoint_gets_host_network_and_plain_http() -> None:
    plan = make_plan(s3_inputs("main", builder=BuilderConfig(name="ci", driver="docker-container")), BuildOptions())
    argv = plan.builder.create_argv("/tmp/b.toml")
    assert argv == [
        "buildx",
        "create",
        "--name",
        "ci",
        "--driver",
        "docker-container",
        "--driver-opt",
        "network=host",
        "--driver-opt",
        PINNED,
        "--buildkitd-config",
        "/tmp/b.toml",
    ]
    config = plan.builder.buildkitd_config
    assert config is not None and config.count("[registry.") == 16
    assert config.startswith('[registry."127.0.0.1:47310"]\n  http = true\n  insecure = true\n')
    # A registry store needs neither; nor does the docker driver, which reaches loopback as it is.
    registry = make_plan(inputs(builder=BuilderConfig(name="ci", driver="docker-container")), BuildOptions())
    assert registry.builder.buildkitd_config is None and "--buildkitd-config" not in registry.builder.create_argv()
    docker = make_plan(s3_inputs("main", builder=BuilderConfig(name="default", driver="docker")), BuildOptions())
    assert docker.builder.buildkitd_config is None


def test_a_listen_address_is_the_one_plain_http_registry() -> None:
    store = S3Cache(type="s3", bucket="b", listen="10.0.0.5:5005")
    plan = make_plan(
        s3_inputs("main", store, builder=BuilderConfig(name="ci", driver="docker-container")), BuildOptions()
    )
    assert plan.builder.buildkitd_config == '[registry."10.0.0.5:5005"]\n  http = true\n  insecure = true\n\n'


def test_native_s3_profile_reaches_buildx_as_aws_profile_only() -> None:
    native = S3Cache(type="s3", bucket="b", native=True, profile="ci-profile")
    plan = make_plan(s3_inputs("main", native, builder=BuilderConfig(name="ci")), BuildOptions())
    assert plan.bake_env == {"AWS_PROFILE": "ci-profile"}
    assert "ci-profile" not in " ".join(plan.bake_argv()) and "profile" not in json.dumps(plan.bake_definition())
    assert make_plan(s3_inputs("main"), BuildOptions()).bake_env == {}


def test_plan_json_is_the_whole_plan() -> None:
    """``plan --json``: builder, CI facts, the write decision, logins without passwords, argv, every target."""
    svc = service(stages=("final",), graphs={"final": ("final",)}, store_name=None, image=None)
    plan = make_plan(inputs(svc, branch="feature/x", on_ci=False), BuildOptions(push=False))
    plan = dataclasses.replace(plan, logins=(("reg:5000", "ci"),))
    assert plan.to_json() == {
        "builder": {
            "name": "dockercache",
            "driver": "docker-container",
            "ephemeral": False,
            "create": [
                "buildx",
                "create",
                "--name",
                "dockercache",
                "--driver",
                "docker-container",
                "--driver-opt",
                PINNED,
            ],
            "buildkitd_config": None,
            "prune": None,
        },
        "commit": "abc123",
        "branch": "feature/x",
        "default_branch": "main",
        "cache_write": False,
        "cache_write_reason": "not in CI (a laptop reads shared caches; pass --cache-write to write)",
        "cache_errors": "warn",
        "logins": [{"registry": "reg:5000", "username": "ci"}],
        "argv": ["docker", *plan.bake_argv()],
        "bake_env": {},
        "bake": plan.bake_definition(),
        "services": [
            {
                "name": "ruby",
                "image": None,
                "metadata_key": None,
                "store": "built-in local",
                "skip_unchanged": None,
                "cache_mounts": None,
                "targets": [
                    {
                        "name": "ruby-final",
                        "stage": "final",
                        "target": "final",
                        "final": True,
                        "graph": ["final"],
                        "tags": ["ruby:abc123"],
                        "output": "load",
                        "cache_from": [
                            "type=registry,ref=reg:5000/cache/ruby:final-feature-x-217d2bf5",
                            "type=registry,ref=reg:5000/cache/ruby:final-main",
                        ],
                        "cache_to": None,
                        "write_refused": None,
                        "runs": True,
                        "built_by": "ruby-final",
                        "secrets": [],
                        "ssh": [],
                        "platforms": [],
                        "store": {"name": "built-in local", "kind": "registry"},
                    }
                ],
            }
        ],
    }
    pushed = make_plan(inputs(), BuildOptions()).to_json()["services"][0]
    assert (pushed["image"], pushed["store"]) == ("reg:5000/ruby", "reg")
    on_ci = make_plan(inputs(svc), BuildOptions()).to_json()["services"][0]["targets"][0]
    assert on_ci["cache_to"] == (
        "type=registry,ref=reg:5000/cache/ruby:final-main,mode=max,image-manifest=true,oci-mediatypes=true,"
        "compression=zstd,ignore-error=true"
    )


def test_plan_json_shows_a_stores_restore_and_save_keys_and_the_builder_it_creates() -> None:
    plan = make_plan(s3_inputs("main", builder=BuilderConfig(name="ci", driver="docker-container")), BuildOptions())
    document = plan.to_json()
    store = document["services"][0]["targets"][0]["store"]
    assert store["name"] == "s3" and store["kind"] == "s3" and store["save"] == "shop/main/ruby/base"
    # buildkitd.toml is written when the builder is created; --json names the file by a placeholder.
    assert document["builder"]["create"][-2:] == ["--buildkitd-config", "BUILDKITD.toml"]
    assert document["builder"]["buildkitd_config"] == plan.builder.buildkitd_config
    docker = make_plan(inputs(builder=BuilderConfig(name="default", driver="docker")), BuildOptions())
    assert docker.to_json()["builder"]["create"] is None  # the docker driver's builder cannot be created


@pytest.mark.parametrize(
    ("settings", "options", "on_ci", "local", "reason"),
    [
        (Settings(), BuildOptions(cache_write=False), True, False, "--no-cache-write"),
        (Settings(cache_write="never"), BuildOptions(), True, False, "settings.cache_write = 'never'"),
        (Settings(), BuildOptions(cache_write=True), False, False, "--cache-write"),
        (Settings(cache_write="always"), BuildOptions(), False, False, "settings.cache_write = 'always'"),
        (Settings(), BuildOptions(), False, True, "local cache store"),
        (Settings(), BuildOptions(), True, False, "running in CI"),
    ],
)
def test_the_plan_says_why_it_writes_caches_or_not(
    settings: Settings, options: BuildOptions, on_ci: bool, local: bool, reason: str
) -> None:
    store = LocalCache(type="local", path="cache") if local else REG
    plan = make_plan(inputs(service(store), settings=settings, on_ci=on_ci), options)
    assert plan.cache_write_reason == reason
    assert plan.cache_write is not reason.startswith(("--no-", "settings.cache_write = 'never'"))


def test_an_unknown_stage_lists_the_stages() -> None:
    with pytest.raises(ConfigError) as info:
        make_plan(inputs(), BuildOptions(stage="nope"))
    assert str(info.value) == "--stage: service 'ruby' has no stage 'nope' (stages: base, deps, final)"


def test_an_ephemeral_builder_without_a_job_id_is_named_by_process_and_names_stay_short() -> None:
    plan = make_plan(inputs(builder=BuilderConfig(ephemeral=True)), BuildOptions())
    assert plan.builder.name == f"dockercache-{os.getpid()}"
    long_id = "0190b9d4-6a5e-4c1b-9f3e-5d2c7a8b9e10-retry-2"
    name = make_plan(inputs(builder=BuilderConfig(ephemeral=True), job_id=long_id), BuildOptions()).builder.name
    assert name.startswith("dockercache-0190b9d4-6a5e-4c1b-9f3e-5d2c7a8") and len(name) == len("dockercache-") + 40


def test_a_builder_for_several_platforms() -> None:
    builder = BuilderConfig(name="multi", platforms=("linux/amd64", "linux/arm64"))
    argv = make_plan(inputs(builder=builder), BuildOptions()).builder.create_argv()
    assert argv[-2:] == ["--platform", "linux/amd64,linux/arm64"]


def test_the_buildkitd_config_is_valid_toml_naming_every_endpoint_address() -> None:
    from dockercache.stores.s3.keys import CONTAINER_PORTS

    plan = make_plan(s3_inputs("main", builder=BuilderConfig(name="ci", driver="docker-container")), BuildOptions())
    assert plan.builder.buildkitd_config is not None
    registries = tomllib.loads(plan.builder.buildkitd_config)["registry"]
    assert registries == {f"127.0.0.1:{p}": {"http": True, "insecure": True} for p in CONTAINER_PORTS}


def test_with_targets_replaces_only_the_targets_given() -> None:
    plan = make_plan(inputs(), BuildOptions())
    base, deps, final = plan.targets
    changed = plan.with_targets([dataclasses.replace(deps, no_cache=True)])
    assert changed.targets == (base, dataclasses.replace(deps, no_cache=True), final)


def test_native_s3_stores_with_different_profiles_are_a_config_error() -> None:
    one = service(S3Cache(type="s3", bucket="b", native=True, profile="a"), store_name="s3a")
    two = service(S3Cache(type="s3", bucket="b", native=True, profile="b"), name="web", store_name="s3b")
    same = service(S3Cache(type="s3", bucket="c", native=True, profile="a"), name="api", store_name="s3c")
    with pytest.raises(ConfigError) as info:
        make_plan(inputs(one, two, builder=BuilderConfig(name="ci")), BuildOptions())
    assert str(info.value) == (
        "native S3 stores s3a, s3b name different AWS profiles; buildx resolves one profile per run (AWS_PROFILE)"
    )
    plan = make_plan(inputs(one, same, builder=BuilderConfig(name="ci")), BuildOptions())
    assert plan.bake_env == {"AWS_PROFILE": "a"}


def test_targets_share_an_identity_when_context_dockerfile_and_args_are_the_same() -> None:
    """Targets with one identity share their Dockerfile steps (the progress report attributes them once)."""

    def identity(**kw: object) -> str:
        return make_plan(inputs(service(**kw)), BuildOptions()).targets[0].identity

    plan = make_plan(inputs(service(), service(name="web")), BuildOptions())
    assert len({t.identity for t in plan.targets}) == 1
    assert identity() != identity(args={"A": "2"})
    assert identity() != identity(context=Path("/other"))
    assert identity() != identity(dockerfile=Path("/src/Dockerfile.ci"))


def test_an_unnamed_last_stage_is_built_without_a_target() -> None:
    svc = service(stages=("base", "stage-1"), final_target=None, graphs={"base": ("base",), "stage-1": ("base",)})
    base, last = make_plan(inputs(svc), BuildOptions()).targets
    assert base.dockerfile_target == "base" and last.dockerfile_target is None
    assert "target" not in last.bake()


def test_a_name_clash_names_both_owners_and_the_file() -> None:
    one = service(name="a-b", stages=("final",), graphs={"final": ("final",)})
    two = service(name="a", stages=("b-final",), graphs={"b-final": ("b-final",)})
    with pytest.raises(ConfigError) as info:
        make_plan(inputs(one, two, source="ci/dockercache.toml"), BuildOptions())
    assert str(info.value) == (
        "ci/dockercache.toml: services.a: stage 'b-final' of service 'a' and stage 'final' of service 'a-b' both "
        "become bake target or group 'a-b-final'; rename one of them"
    )
    with pytest.raises(ConfigError) as info:
        make_plan(inputs(service(name="default")), BuildOptions())
    assert str(info.value) == (
        "dockercache.toml: services.default: service 'default' and the default group both become bake target or "
        "group 'default'; rename one of them"
    )


def test_the_default_branch_setting_decides_who_writes_the_shared_refs() -> None:
    """settings.default_branch overrides CI's: "trunk" writes the shared refs, "main" is then a feature branch."""
    trunk = Settings(default_branch="trunk")
    on_trunk = make_plan(inputs(branch="trunk", settings=trunk), BuildOptions()).targets[-1]
    assert on_trunk.cache_to is not None and on_trunk.cache_to.location == "reg:5000/cache/ruby:final-trunk"
    on_main = make_plan(inputs(branch="main", settings=trunk), BuildOptions()).targets[-1]
    assert on_main.cache_to is not None and on_main.cache_to.location == "reg:5000/cache/ruby:final-main"
    assert refs(on_main)[:2] == ["reg:5000/cache/ruby:final-main", "reg:5000/cache/ruby:final-trunk"]


@pytest.mark.parametrize(
    ("store", "shared"),
    [
        (S3Cache(type="s3", bucket="b", key="{pipeline}/shared", cache_from=()), "shop/shared"),  # its key
        (S3Cache(type="s3", bucket="b", key="{pipeline}/shared", cache_from=("{pipeline}/shared",)), "shop/shared"),
        # only cache_from names it: the default branch reads it, so feature/x may not write it
        (
            S3Cache(type="s3", bucket="b", key="{pipeline}/{branch}", cache_from=("{pipeline}/feature-x-217d2bf5",)),
            "shop/feature-x-217d2bf5",
        ),
    ],
    ids=["default-branch-key", "key-and-cache-from", "cache-from-only"],
)
def test_s3_an_untrusted_branch_never_writes_a_key_the_default_branch_reads_or_writes(
    store: S3Cache, shared: str
) -> None:
    """The default branch's own key (whatever it is called) and every cache_from key are shared."""
    target = make_plan(s3_inputs("feature/x", store), BuildOptions()).targets[0]
    assert target.cache_to is None and target.caches.refused is not None and shared in target.caches.refused


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (
            RegistryCache(type="registry", ref="r/c"),
            "mode=max,image-manifest=true,oci-mediatypes=true,compression=zstd",
        ),
        (
            RegistryCache(type="registry", ref="r/c", mode="min", compression="gzip"),
            "mode=min,image-manifest=true,oci-mediatypes=true,compression=gzip",
        ),
        (
            RegistryCache(
                type="registry", ref="r/c", compression="estargz", image_manifest=False, oci_mediatypes=False
            ),
            "mode=max,image-manifest=false,oci-mediatypes=false,compression=estargz",
        ),
        (
            RegistryCache(type="registry", ref="r/c", compression="uncompressed"),
            "mode=max,image-manifest=true,oci-mediatypes=true,compression=uncompressed",
        ),
    ],
    ids=["defaults", "min-gzip", "estargz-docker-form", "uncompressed"],
)
def test_registry_options_reach_the_cache_export(store: RegistryCache, expected: str) -> None:
    target = make_plan(inputs(service(store)), BuildOptions()).targets[-1]
    assert target.cache_to is not None
    assert target.cache_to.encode() == f"type=registry,ref=r/c:final-main,{expected},ignore-error=true"


def test_a_pull_request_never_writes_shared_refs_whatever_its_branch_is_called() -> None:
    """A fork's branch called main: it reads its own refs, then its head branch's (main's, here: read only), then
    the base branch's; it writes pr-N only."""
    pr = inputs(branch="main", pull_request="123", base_branch="release/1.x")
    plan = make_plan(pr, BuildOptions())
    final = plan.targets[-1]
    assert final.cache_to is not None and final.cache_to.location == "reg:5000/cache/ruby:final-pr-123"
    assert refs(final)[:3] == [
        "reg:5000/cache/ruby:final-pr-123",
        "reg:5000/cache/ruby:final-main",
        "reg:5000/cache/ruby:final-release-1.x-81caa6e9",
    ]
    assert all(t.cache_to is None or t.cache_to.location.endswith("-pr-123") for t in plan.targets)
    assert plan.cache_write and "pull request #123" in plan.cache_write_reason
    # Without a base branch it reads the default branch's refs; trusted_branches do not make it a writer.
    trusted = Settings(trusted_branches=("*",))
    fallback = make_plan(inputs(branch="main", pull_request="7", settings=trusted), BuildOptions()).targets[-1]
    assert refs(fallback)[:2] == ["reg:5000/cache/ruby:final-pr-7", "reg:5000/cache/ruby:final-main"]
    assert fallback.cache_to is not None and fallback.cache_to.location == "reg:5000/cache/ruby:final-pr-7"


def test_a_pull_request_can_be_made_read_only() -> None:
    settings = Settings(pull_request_writes="none")
    plan = make_plan(inputs(branch="feature/x", pull_request="9", settings=settings), BuildOptions(cache_write=True))
    assert not plan.cache_write and all(t.cache_to is None for t in plan.targets)
    assert plan.cache_write_reason == "pull request #9: settings.pull_request_writes = 'none'"


def test_s3_a_pull_request_saves_under_its_own_key_and_reads_the_base_branch() -> None:
    deps = make_plan(s3_inputs("main", pull_request="42", base_branch="develop"), BuildOptions()).targets[1]
    step = deps.caches.step
    assert step is not None
    assert step.to_json()["restore_keys"] == ["shop/latest", "shop/pr-42", "shop/main", "shop/develop"]
    assert step.to_json()["save"] == "shop/pr-42/ruby/deps"


def test_a_pull_request_reads_its_head_branchs_caches_before_its_base_branchs() -> None:
    """Pull request #7 from feature/x, whose last build added a dependency: what that build cached is in
    feature/x's refs and keys (a warm agent has it), not in main's. The pull request reads them after its own and
    before its base branch's; it still writes only its own."""
    final = make_plan(inputs(branch="feature/x", pull_request="7"), BuildOptions()).targets[-1]
    assert refs(final)[:3] == [
        "reg:5000/cache/ruby:final-pr-7",
        "reg:5000/cache/ruby:final-feature-x-217d2bf5",
        "reg:5000/cache/ruby:final-main",
    ]
    assert final.cache_to is not None and final.cache_to.location == "reg:5000/cache/ruby:final-pr-7"
    s3 = make_plan(s3_inputs("feature/x", pull_request="7"), BuildOptions()).targets[-1]
    assert s3.caches.step is not None
    assert s3.caches.step.to_json()["restore_keys"] == [
        "shop/latest",
        "shop/pr-7",
        "shop/feature-x-217d2bf5",
        "shop/main",
    ]


def test_the_bake_file_holds_every_string_literally() -> None:
    """A bake file's strings are HCL templates: ``${`` and ``%{`` reach bake escaped, so a path or build
    argument holding them is built as written; commas in a path are quoted for buildx's CSV."""
    local = LocalCache(type="local", path="cache,${x}")
    svc = service(
        local,
        context=Path("/src/a,${b}"),
        dockerfile=Path("/src/a,${b}/Dockerfile"),
        args={"A": "${HOME}", "B": "%{ if x }", "C": "$$${D}", "E": "cost $5"},
        tags=("v1",),
    )
    plan = make_plan(inputs(svc, root=Path("/src")), BuildOptions(), exists=lambda d: True)
    final = plan.bake_definition()["target"]["ruby-final"]
    assert final["context"] == "/src/a,$${b}"
    assert final["dockerfile"] == "/src/a,$${b}/Dockerfile"
    assert final["args"] == {"A": "$${HOME}", "B": "%%{ if x }", "C": "$$$${D}", "E": "cost $5"}
    assert final["cache-from"][0] == 'type=local,"src=/src/cache,$${x}/ruby/final"'
    assert final["cache-to"][0].startswith('type=local,"dest=/src/cache,$${x}/ruby/final.incoming",mode=max')
    # The plan itself keeps the values as they are; only their encoding in the file escapes them.
    assert plan.targets[-1].args["A"] == "${HOME}" and plan.targets[-1].cache_to is not None
    assert plan.targets[-1].cache_to.location == "/src/cache,${x}/ruby/final.incoming"


def test_a_commit_that_is_no_image_tag_cannot_be_the_default_tag() -> None:
    with pytest.raises(ConfigError) as info:
        make_plan(inputs(commit="abc,ref=evil"), BuildOptions())
    assert str(info.value) == (
        "dockercache.toml: services.ruby.tags: the default tag, the commit 'abc,ref=evil' (from ${BUILDKITE_COMMIT} "
        "or git), is not a valid image tag; set tags"
    )
    plan = make_plan(inputs(service(tags=("v1",)), commit="abc,ref=evil"), BuildOptions())
    assert plan.targets[-1].tags == ("reg:5000/ruby:v1",)


def test_secrets_and_ssh_are_bake_fields_of_every_target_naming_sources_never_values() -> None:
    """README: the plan shows ``id=npm,env=NPM_TOKEN`` (BuildKit reads the variable) and ``id=...,src=/abs``
    (CSV-quoted as buildx reads it), never a value; ``ssh`` is passed as given."""
    secrets = (
        SecretSource("npm", env="NPM_TOKEN"),
        SecretSource("netrc", src=Path("/home/ci/.netrc")),
        SecretSource("odd", src=Path("/a,b/${x}")),
    )
    plan = make_plan(inputs(service(secrets=secrets, ssh=("default", "gh=/k"))), BuildOptions())
    expected = ["id=npm,env=NPM_TOKEN", "id=netrc,src=/home/ci/.netrc", 'id=odd,"src=/a,b/${x}"']
    for target in plan.targets:
        assert target.bake()["secret"] == [e.replace("${", "$${") for e in expected]
        assert target.bake()["ssh"] == ["default", "gh=/k"]
        assert target.to_json()["secrets"] == expected
        assert target.to_json()["ssh"] == ["default", "gh=/k"]
    assert "secret" not in make_plan(inputs(), BuildOptions()).bake_definition()["target"]["ruby-final"]


# ------------------------------------------------------- labels and attestations (issue 12, item 5)

OCI = {
    "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
    "org.opencontainers.image.source": "https://github.com/acme/shop",
    "org.opencontainers.image.created": "2026-11-02T09:20:30Z",
}


def test_labels_go_on_tagged_targets_and_attestations_on_pushed_ones_only() -> None:
    own = ImageOptions(
        labels={"org.opencontainers.image.source": "https://example.com/shop", "org.opencontainers.image.created": ""},
        provenance="min",
        sbom=True,
    )
    svc = service(push_stages=("deps",))
    plan = make_plan(inputs(svc, labels=OCI, images={"ruby": own}), BuildOptions())
    base, deps, final = (plan.bake_definition()["target"][t.name] for t in plan.targets)
    expected = {
        "org.opencontainers.image.revision": OCI["org.opencontainers.image.revision"],
        "org.opencontainers.image.source": "https://example.com/shop",  # the service's own wins
    }  # and an empty value removes a default
    assert final["labels"] == deps["labels"] == expected
    assert final["attest"] == deps["attest"] == ["type=provenance,mode=min", "type=sbom"]
    assert "labels" not in base and "attest" not in base  # cache only: no image, nothing to label
    # Loaded (--no-push), an image keeps its labels; attestations need the registry exporter.
    loaded = make_plan(inputs(svc, labels=OCI, images={"ruby": own}), BuildOptions(push=False)).targets[-1]
    assert loaded.output == "load" and loaded.labels == expected and loaded.attest == ()
    assert "attest" not in loaded.bake()


def test_provenance_is_disabled_explicitly_by_default() -> None:
    """buildx adds a mode=min provenance attestation to pushed images unless told not to: the image becomes an
    index with an unknown/unknown manifest, which Lambda and some registries' tools refuse."""
    final = make_plan(inputs(labels=OCI), BuildOptions()).targets[-1]
    assert final.bake()["attest"] == ["type=provenance,disabled=true"]
    assert final.bake()["labels"] == OCI
    assert ImageOptions(provenance="max").attest() == ("type=provenance,mode=max",)


def test_labels_change_no_cache_entry() -> None:
    plain = make_plan(inputs(), BuildOptions())
    labelled = make_plan(inputs(labels=OCI, images={"ruby": ImageOptions(labels={"a": "b"})}), BuildOptions())
    for a, b in zip(plain.targets, labelled.targets, strict=True):
        assert (a.cache_from, a.cache_to, a.identity) == (b.cache_from, b.cache_to, b.identity)
        assert {k: v for k, v in a.bake().items() if k != "labels"} == {
            k: v for k, v in b.bake().items() if k != "labels"
        }


def test_image_options_take_the_service_then_the_settings() -> None:
    from dockercache.config.load import parse_config
    from dockercache.planning.targets import image_options

    config = parse_config(
        {
            "settings": {"provenance": "min", "sbom": True},
            "services": {
                "app": {"image": "reg/app", "labels": {"k": "v"}},
                "web": {"image": "reg/web", "provenance": "off", "sbom": False},
            },
        },
        {},
        Path("dockercache.toml"),
    )
    options = image_options(config)
    assert options["app"] == ImageOptions(labels={"k": "v"}, provenance="min", sbom=True)
    assert options["web"] == ImageOptions(labels={}, provenance="off", sbom=False)


def test_labels_are_literal_in_the_bake_file() -> None:
    final = make_plan(inputs(images={"ruby": ImageOptions(labels={"note": "${NOT_A_VARIABLE}"})}), BuildOptions())
    assert final.targets[-1].bake()["labels"] == {"note": "$${NOT_A_VARIABLE}"}


def skip_context(
    tmp_path: Path, dockerfile: str = "ARG A\nFROM busybox:${A} AS base\nFROM base AS deps\nFROM deps AS final\n"
) -> ResolvedService:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "app.sh").write_text("echo\n")
    return service(context=tmp_path, dockerfile=tmp_path / "Dockerfile", args={"A": "1", "TOKEN": "s3cret-value"})


def test_skip_unchanged_is_off_unless_asked_for(tmp_path: Path) -> None:
    svc = skip_context(tmp_path)
    assert make_plan(inputs(svc), BuildOptions()).services[0].skip is None
    assert make_plan(inputs(svc), BuildOptions()).to_json()["services"][0]["skip_unchanged"] is None
    on = Settings(skip_unchanged=True)
    own = make_plan(inputs(svc, settings=on, skip_unchanged={"ruby": False}), BuildOptions())
    assert own.services[0].skip is None  # the service's own setting wins over [settings]


def test_skip_unchanged_plans_the_inputs_of_the_key(tmp_path: Path) -> None:
    svc = skip_context(tmp_path)
    plan = make_plan(inputs(svc, skip_unchanged={"ruby": True}), BuildOptions())
    skip = plan.services[0].skip
    assert skip is not None and skip.enabled and skip.reason == "on (services.ruby.skip_unchanged)"
    assert skip.bases == ("busybox:1",)
    document = plan.to_json()["services"][0]["skip_unchanged"]
    assert document["enabled"] is True
    inputs_ = document["inputs"]
    assert (inputs_["files"], inputs_["bytes"]) == (2, (tmp_path / "Dockerfile").stat().st_size + 5)
    assert inputs_["args"] == ["A", "TOKEN"] and "s3cret-value" not in json.dumps(document)  # names, never values
    assert inputs_["base_images"] == [{"ref": "busybox:1", "digest": None}]  # resolved when building
    from dockercache.commands import render_plan

    line = next(x for x in render_plan(plan).splitlines() if "skip unchanged" in x)
    assert line.startswith("  skip unchanged: on (services.ruby.skip_unchanged): key over the Dockerfile, 2 files")
    assert "base images busybox:1" in line and "dc-<key>" in line


@pytest.mark.parametrize(
    ("options", "kw", "reason"),
    [
        (
            BuildOptions(push=False),
            {},
            "off (nothing is pushed (--no-push, or off CI without --push), and a skip retags an image in the registry)",
        ),
        (BuildOptions(stage="deps"), {}, "off (--stage builds one stage)"),
        (BuildOptions(no_cache=True), {}, "off (--no-cache)"),
        (BuildOptions(), {"image": None}, "off (services.ruby has no image to retag)"),
    ],
)
def test_skip_unchanged_is_off_where_it_cannot_retag_or_was_not_asked_to_build_as_usual(
    tmp_path: Path, options: BuildOptions, kw: dict[str, object], reason: str
) -> None:
    svc = dataclasses.replace(skip_context(tmp_path), **kw)  # type: ignore[arg-type]
    plan = make_plan(inputs(svc, settings=Settings(skip_unchanged=True)), options)
    skip = plan.services[0].skip
    assert skip is not None and not skip.enabled and skip.reason == f"{reason}: building"
    assert plan.to_json()["services"][0]["skip_unchanged"] == {"enabled": False, "reason": f"{reason}: building"}


def test_skip_unchanged_is_off_when_the_dockerfile_fetches_what_it_cannot_pin(tmp_path: Path) -> None:
    svc = skip_context(
        tmp_path, "FROM busybox AS base\nADD https://example.com/x.tgz /x\nFROM base AS deps\nFROM deps AS final\n"
    )
    skip = make_plan(inputs(svc, settings=Settings(skip_unchanged=True)), BuildOptions()).services[0].skip
    assert skip is not None and not skip.enabled
    assert (
        skip.reason
        == "off (ADD https://example.com/x.tgz has no --checksum: what it fetches is known only by building): building"
    )


def test_a_driver_opt_with_a_comma_stays_one_option() -> None:
    """buildx reads every --driver-opt as a CSV record: a comma in a value (a proxy list) is quoted, not split."""
    builder = BuilderPlan(
        name="b",
        driver="docker-container",
        driver_opts={"env.no_proxy": "localhost,127.0.0.1", "network": "host"},
        endpoint=None,
        platforms=(),
        ephemeral=False,
    )
    argv = builder.create_argv()
    assert argv[argv.index("--driver-opt") + 1] == '"env.no_proxy=localhost,127.0.0.1"'
    assert "network=host" in argv
