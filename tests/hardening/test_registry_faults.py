"""Hardening, group faults: a registry cache whose layer blobs cannot be had (missing, corrupt, 500).

BuildKit fails the whole solve when an imported cache layer cannot be fetched; dockercache builds again once
without that cache source, with one warning naming it, so a broken cache is a miss and never an outage
(``cache_errors = "fail"``: exit 1 instead, nothing pushed). The images go out and the cache is written again.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from ..e2e.conftest import ExtraRegistry, Project, Stack, fresh_agent, registry_config
from .faults import Fault, FaultyRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.hardening("faults")]

FAULTS = {
    "missing": Fault(404, body=("application/json", b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')),
    "corrupt": Fault(corrupt=True),
    "500": Fault(500),
}


def cache_layers(stack: Stack, cache_host: str, repo: str, tag: str) -> set[str]:
    """The layer digests a cache manifest names (read straight from the registry behind the proxy)."""
    from ..e2e.conftest import Registry

    _, manifest = Registry(cache_host).manifest(repo, tag)
    return {layer["digest"] for layer in manifest["layers"]}


def base_image_layers(stack: Stack) -> set[str]:
    """The base image's layers: a cache holds them under the same digests, and a daemon that has the base image
    (any earlier test's build pulled it) never fetches them from a cache."""
    from ..e2e.conftest import Registry

    host, _, rest = stack.base_image.partition("/")
    repo, _, tag = rest.rpartition(":")
    _, manifest = Registry(host).manifest(repo, tag)
    return {layer["digest"] for layer in manifest.get("layers", ())}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_registry_cache_with_unusable_layers_is_a_miss(
    project: Project, stack: Stack, extra_registry: ExtraRegistry, kind: str
) -> None:
    upstream = extra_registry.host.replace("localhost", "127.0.0.1")
    project.write_config(registry_config(stack, project.name, cache_host=upstream))
    assert project.build().returncode == 0
    layers = cache_layers(stack, upstream, f"{project.name}/cache", "final-main")
    assert layers

    def fails(method: str, path: str) -> bool | Fault:
        return method == "GET" and any(path.endswith(f"/blobs/{d}") for d in layers) and FAULTS[kind]

    with FaultyRegistry(upstream, fails) as proxy:
        project.write_config(registry_config(stack, project.name, cache_host=proxy.host))
        fresh_agent()
        project.touch_source()  # the final stage's COPY changes: BuildKit needs deps' layers from the cache
        result = project.build()
    assert proxy.failed, "the fault never triggered"
    assert result.returncode == 0, result.stderr
    warnings = [w for w in result.json["warnings"] if f"{proxy.host}/{project.name}/cache" in w]
    assert len(warnings) == 1 and "building again without it" in warnings[0], result.json["warnings"]
    final = result.stage("ruby", "final")
    assert final["status"] == "ok" and final["image"], final
    assert final["cache_written"] == f"{proxy.host}/{project.name}/cache:final-main"
    assert "Traceback" not in result.stderr
    # The cache written through the rebuild is whole again: a fresh agent restores from it.
    project.write_config(registry_config(stack, project.name, cache_host=upstream))
    fresh_agent()
    again = project.build()
    assert again.returncode == 0, again.stderr
    assert not again.json["warnings"], again.json["warnings"]
    deps = again.stage("ruby", "deps")
    assert deps["steps_cached"] == deps["steps_total"] > 0, deps


def test_a_registry_cache_with_unusable_layers_fails_the_build_on_request(
    project: Project, stack: Stack, extra_registry: ExtraRegistry
) -> None:
    upstream = extra_registry.host.replace("localhost", "127.0.0.1")
    project.write_config(registry_config(stack, project.name, cache_host=upstream))
    assert project.build().returncode == 0
    layers = cache_layers(stack, upstream, f"{project.name}/cache", "final-main")
    tags_before = stack.registry.tags(f"{project.name}/ruby")

    def fails(method: str, path: str) -> bool:
        return method == "GET" and any(path.endswith(f"/blobs/{d}") for d in layers)

    with FaultyRegistry(upstream, fails) as proxy:
        config = registry_config(stack, project.name, cache_host=proxy.host, settings='cache_errors = "fail"')
        project.write_config(config)
        fresh_agent()
        project.touch_source()
        result = project.build("--no-push")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert any("settings.cache_errors = 'fail'" in w for w in document["warnings"]), document
    assert stack.registry.tags(f"{project.name}/ruby") == tags_before


NOT_FOUND = Fault(404, body=("application/json", b'{"errors":[{"code":"NAME_UNKNOWN","message":"not found"}]}'))


@pytest.mark.parametrize("path", ["/manifests/final-main", "/blobs/uploads/"], ids=["manifest", "blob-upload"])
def test_a_cache_export_answered_not_found_is_reported_as_not_written(
    project: Project, stack: Stack, extra_registry: ExtraRegistry, path: str
) -> None:
    """BuildKit's "not found" on a cache export is a failed write, not a miss: the stage says no cache was
    written, with a warning, and the ref is not there; the image still goes out."""
    upstream = extra_registry.host.replace("localhost", "127.0.0.1")

    def fails(method: str, request: str) -> bool | Fault:
        return method in ("PUT", "POST") and path in request and NOT_FOUND

    with FaultyRegistry(upstream, fails) as proxy:
        project.write_config(registry_config(stack, project.name, cache_host=proxy.host))
        fresh_agent()
        result = project.build()
    assert proxy.failed, "the fault never triggered"
    assert result.returncode == 0, result.stderr
    final = result.stage("ruby", "final")
    assert final["cache_written"] is None, final
    assert final["cache_warnings"], final
    assert "final-main" not in stack.registry.__class__(upstream).tags(f"{project.name}/cache")
    assert final["image"], final


@pytest.mark.parametrize("kind", ["corrupt", "500"])
def test_a_broken_cache_layer_is_repaired_not_named_again(
    project: Project, stack: Stack, extra_registry: ExtraRegistry, kind: str
) -> None:
    """The registry holds one layer broken (its content never changes; `HEAD` still says it is there): without a
    repair every fresh agent misses with a warning, rebuilds the same digest, the export skips it (`HEAD` says
    present) and the new cache names the broken blob again, for ever. dockercache deletes the broken blob, so the
    rebuild's export uploads it whole, and the next fresh agent hits every step with no warning."""
    upstream = extra_registry.host.replace("localhost", "127.0.0.1")
    project.write_config(registry_config(stack, project.name, cache_host=upstream))
    assert project.build().returncode == 0
    base = cache_layers(stack, upstream, f"{project.name}/cache", "final-main") - base_image_layers(stack)
    broken = {sorted(base)[0]}  # one layer of the build's own, broken where it is stored, until it is replaced

    def fails(method: str, path: str) -> bool | Fault:
        digest = path.rsplit("/", 1)[-1]
        if method == "DELETE" and digest in broken:
            broken.discard(digest)  # deleted: what is uploaded next is whole
            return False
        return method == "GET" and digest in broken and FAULTS[kind]

    with FaultyRegistry(upstream, fails) as proxy:
        project.write_config(registry_config(stack, project.name, cache_host=proxy.host))
        fresh_agent()
        first = project.build()
        assert first.returncode == 0, first.stderr
        assert len(first.json["warnings"]) == 1 and "building again without it" in first.json["warnings"][0]
        assert "removed broken cache layer" in first.stderr and not broken
        fresh_agent()
        again = project.build()
    assert again.returncode == 0, again.stderr
    assert again.json["warnings"] == [], again.json["warnings"]
    svc = again.json["services"][0]
    assert svc["steps_cached"] == svc["steps_total"] > 0


def test_a_stalled_cache_download_costs_a_miss_and_a_warning_never_more_than_the_bound(
    project: Project, stack: Stack, extra_registry: ExtraRegistry
) -> None:
    """A cache layer whose body stops half-way (a half-dead connection): the build waited for more than 12
    minutes. With `stall_seconds = 5` the transfer is abandoned after 5 s without progress and the build goes on
    without caches: exit 0, one warning, the image pushed."""
    upstream = extra_registry.host.replace("localhost", "127.0.0.1")
    project.write_config(registry_config(stack, project.name, cache_host=upstream))
    assert project.build().returncode == 0
    layers = cache_layers(stack, upstream, f"{project.name}/cache", "final-main")

    def fails(method: str, path: str) -> bool | Fault:
        return method == "GET" and any(path.endswith(f"/blobs/{d}") for d in layers) and Fault(stall=True)

    with FaultyRegistry(upstream, fails) as proxy:
        config = registry_config(stack, project.name, cache_host=proxy.host, settings="stall_seconds = 5")
        project.write_config(config)
        fresh_agent()
        project.touch_source()  # the final stage's COPY changes: BuildKit needs deps' layers from the cache
        started = time.monotonic()
        result = project.build()
        seconds = time.monotonic() - started
    assert proxy.failed, "the fault never triggered"
    assert result.returncode == 0, result.stderr
    (warning,) = result.json["warnings"]
    assert warning.startswith("a transfer stalled (blob sha256:") and "made no progress for 5 s" in warning, (
        f"{seconds:.1f} s\n{result.stderr}"
    )
    assert warning.endswith("building again without caches")
    assert result.stage("ruby", "final")["image"]["pushed"]
    print(f"\nstalled cache download: the build took {seconds:.1f} s (bound 5 s without progress)")


def test_a_push_failure_is_reported_as_one_and_nothing_is_built_again(
    project: Project, stack: Stack, extra_registry: ExtraRegistry
) -> None:
    """The cache lives in the image's own repository (tags `final-main`) and the registry refuses the image's
    upload: BuildKit's error quotes a URL of that repository, which is no cache fault. One line naming the
    registry, exit 1, no cache warning, no second bake."""
    upstream = extra_registry.host.replace("localhost", "127.0.0.1")
    with FaultyRegistry(upstream, lambda method, path: method == "POST" and "/blobs/uploads/" in path) as proxy:
        config = registry_config(stack, project.name, cache_host=proxy.host)
        config = config.replace(
            f'ref = "{proxy.host}/{project.name}/cache"', f'ref = "{proxy.host}/{project.name}/app"'
        )
        config = config.replace(
            f'image = "{stack.host}/{project.name}/ruby"', f'image = "{proxy.host}/{project.name}/app"'
        )
        project.write_config(config)
        fresh_agent()
        result = project.build()
    assert proxy.failed, "the fault never triggered"
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["warnings"] == [], document["warnings"]
    assert document["error"].startswith(f"ruby: push to {proxy.host} failed ({proxy.host}/{project.name}/app:"), (
        document
    )
    assert len(re.findall(r"^==> build( and push)?:", result.stderr, re.M)) == 1  # no second bake without caches
