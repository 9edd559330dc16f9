from __future__ import annotations

from pathlib import Path

import pytest

from dockercache.config import BuilderConfig, LocalCache, RegistryCache, S3Cache, Settings
from dockercache.errors import ConfigError
from dockercache.plan import BuildOptions, PlanInputs, make_plan
from dockercache.resolve import ResolvedService

REG = RegistryCache(type="registry", ref="reg:5000/cache/{service}")


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
    }
    values.update(kw)
    return ResolvedService(**values)  # type: ignore[arg-type]


def inputs(svc: ResolvedService | None = None, branch: str = "main", on_ci: bool = True, **kw: object) -> PlanInputs:
    values: dict[str, object] = {
        "services": (svc or service(),),
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


def refs(build: object) -> list[str]:
    return [c["ref"] for c in build.cache_from]  # type: ignore[attr-defined]


def test_default_branch_reads_and_writes_shared_refs() -> None:
    plan = make_plan(inputs(), BuildOptions())
    base, deps, final = plan.services[0].builds
    assert refs(base) == ["reg:5000/cache/ruby:base-main"]
    assert refs(deps) == ["reg:5000/cache/ruby:deps-main", "reg:5000/cache/ruby:base-main"]
    assert refs(final)[0] == "reg:5000/cache/ruby:final-main"
    assert final.cache_to is not None
    assert dict(final.cache_to) == {
        "type": "registry",
        "ref": "reg:5000/cache/ruby:final-main",
        "mode": "max",
        "image-manifest": "true",
        "oci-mediatypes": "true",
        "compression": "zstd",
        "ignore-error": "true",
    }


def test_feature_branch_reads_own_then_default_and_writes_only_own() -> None:
    plan = make_plan(inputs(branch="feature/login"), BuildOptions())
    deps = plan.services[0].builds[1]
    assert refs(deps) == [
        "reg:5000/cache/ruby:deps-feature-login",
        "reg:5000/cache/ruby:deps-main",
        "reg:5000/cache/ruby:base-feature-login",
        "reg:5000/cache/ruby:base-main",
    ]
    assert deps.cache_to is not None
    assert deps.cache_to["ref"] == "reg:5000/cache/ruby:deps-feature-login"


def test_trusted_branch_writes_shared() -> None:
    settings = Settings(trusted_branches=("release/*",))
    plan = make_plan(inputs(branch="release/1.2", settings=settings), BuildOptions())
    assert plan.services[0].builds[0].cache_to["ref"] == "reg:5000/cache/ruby:base-main"  # type: ignore[index]


def test_extra_refs_come_last() -> None:
    store = RegistryCache(type="registry", ref="reg:5000/cache/{service}", extra_from=("other:5000/x:{stage}",))
    plan = make_plan(inputs(service(store)), BuildOptions())
    assert refs(plan.services[0].builds[0])[-1] == "other:5000/x:base"


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
    assert all((b.cache_to is not None) is expected for b in plan.services[0].builds)


def test_final_image_pushed_with_commit_tag_and_stages_cache_only() -> None:
    base, _deps, final = make_plan(inputs(), BuildOptions()).services[0].builds
    assert final.tags == ("reg:5000/ruby:abc123",)
    assert final.push and not final.load
    assert base.output == {"type": "cacheonly"} and not base.tags


def test_no_push_loads() -> None:
    final = make_plan(inputs(), BuildOptions(push=False)).services[0].builds[-1]
    assert final.load and not final.push


def test_push_stages_get_stage_tags() -> None:
    svc = service(push_stages=("deps",), tags=("abc123", "latest"))
    deps = make_plan(inputs(svc), BuildOptions()).services[0].builds[1]
    assert deps.tags == ("reg:5000/ruby:deps-abc123", "reg:5000/ruby:deps-latest")
    assert deps.push


def test_stage_option_stops_early() -> None:
    plan = make_plan(inputs(), BuildOptions(stage="deps"))
    assert [b.stage for b in plan.services[0].builds] == ["base", "deps"]
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        make_plan(inputs(), BuildOptions(stage="nope"))


def test_local_store_sources_only_existing_dirs_and_swaps() -> None:
    local = LocalCache(type="local", path="cache")
    existing = {"/src/cache/ruby/base"}
    plan = make_plan(inputs(service(local)), BuildOptions(), exists=existing.__contains__)
    deps = plan.services[0].builds[1]
    assert [dict(c) for c in deps.cache_from] == [{"type": "local", "src": "/src/cache/ruby/base"}]
    assert deps.cache_to is not None and deps.cache_to["dest"] == "/src/cache/ruby/deps.incoming"
    assert deps.local_swap is not None and deps.local_swap.final == "/src/cache/ruby/deps"
    assert plan.cache_write  # local stores are written even off CI


def test_argv_is_exact() -> None:
    final = make_plan(inputs(), BuildOptions(no_cache=True)).services[0].builds[-1]
    argv = final.argv("dockercache", "/tmp/m.json")
    assert argv[:4] == ["buildx", "build", "--progress", "rawjson"]
    assert argv[argv.index("--cache-to") + 1].startswith("type=registry,ref=reg:5000/cache/ruby:final-main,mode=max")
    assert argv.count("--cache-from") == 3  # on the default branch its own refs are the shared ones
    assert "--no-cache" in argv and "--push" in argv
    assert argv[-3:] == ["--tag", "reg:5000/ruby:abc123", "/src"]


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
    ]


def test_builder_create_argv_with_options() -> None:
    builder = BuilderConfig(name="b", driver="remote", endpoint="tcp://bk:1234", driver_opts={"cacert": "/ca"})
    plan = make_plan(inputs(builder=builder), BuildOptions())
    assert plan.builder.create_argv() == [
        "buildx",
        "create",
        "--name",
        "b",
        "--driver",
        "remote",
        "--driver-opt",
        "cacert=/ca",
        "tcp://bk:1234",
    ]


def test_force_compression() -> None:
    store = RegistryCache(type="registry", ref="r/c", force_compression=True)
    build = make_plan(inputs(service(store)), BuildOptions()).services[0].builds[0]
    assert build.cache_to is not None and build.cache_to["force-compression"] == "true"


S3 = S3Cache(type="s3", bucket="ci-cache", endpoint_url="http://127.0.0.1:5002", region="eu-west-1")


def s3_inputs(branch: str = "main", store: S3Cache = S3, **kw: object) -> PlanInputs:
    return inputs(service(store, store_name="s3"), branch=branch, pipeline="shop", cache_dir=Path("/agent"), **kw)


def test_s3_restore_order_and_save_key() -> None:
    deps = make_plan(s3_inputs("feature/x"), BuildOptions()).services[0].builds[1]
    assert deps.s3 is not None
    assert deps.s3.restore_keys == ("shop/latest", "shop/feature-x", "shop/main")
    assert deps.s3.save_name == "shop/feature-x/ruby/deps"
    assert [c["src"] for c in deps.cache_from] == [
        "/agent/s3/ci-cache/dockercache/restore/ruby/deps",
        "/agent/s3/ci-cache/dockercache/restore/ruby/base",
    ]
    assert deps.cache_to is not None and deps.cache_to["dest"] == "/agent/s3/ci-cache/dockercache/export/ruby/deps"


def test_s3_untrusted_branch_never_writes_a_key_the_default_branch_reads() -> None:
    shared = S3Cache(type="s3", bucket="b", key="{pipeline}/latest")
    build = make_plan(s3_inputs("feature/x", shared), BuildOptions()).services[0].builds[0]
    assert build.s3 is not None and build.s3.save_name is None and build.cache_to is None
    assert build.s3.refused is not None and "shop/latest" in build.s3.refused
    on_main = make_plan(s3_inputs("main", shared), BuildOptions()).services[0].builds[0]
    assert on_main.s3 is not None and on_main.s3.save_name == "shop/latest/ruby/base"


def test_s3_commit_keys_are_safe_for_any_branch() -> None:
    per_commit = S3Cache(type="s3", bucket="b", key="{pipeline}/{commit}")
    build = make_plan(s3_inputs("feature/x", per_commit), BuildOptions()).services[0].builds[0]
    assert build.s3 is not None and build.s3.save_name == "shop/abc123/ruby/base"


def test_s3_native_uses_buildkit_s3_cache_without_credentials() -> None:
    native = S3Cache(type="s3", bucket="b", region="eu-west-1", native=True, endpoint_url="http://minio:9000")
    build = make_plan(s3_inputs("main", native), BuildOptions()).services[0].builds[1]
    assert build.s3 is None
    assert dict(build.cache_from[0]) == {
        "type": "s3",
        "bucket": "b",
        "prefix": "dockercache/native/",
        "region": "eu-west-1",
        "endpoint_url": "http://minio:9000",
        "use_path_style": "true",
        "name": "shop/latest/ruby/deps",
    }
    assert build.cache_to is not None and build.cache_to["name"] == "shop/main/ruby/deps"
    argv = " ".join(build.argv("ci"))
    assert "type=s3,bucket=b" in argv
    assert "access_key" not in argv and "secret" not in argv
