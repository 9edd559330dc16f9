"""End-to-end: OCI labels and attestations on pushed images, and `check --lint` against the real buildx.

Labels are read from the pushed image's config through the registry's HTTP API; attestations from its
manifest (an index with an attestation manifest, or a plain image manifest).
"""

from __future__ import annotations

from typing import Any

from .conftest import COMMIT, Project, Stack, base_env, registry_config, run_dockercache

REPO_URL = "https://ci-bot:s3cr3t-token@github.com/acme/shop.git"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z
ATTESTATION = "attestation-manifest"


def env(**extra: str) -> dict[str, str]:
    return base_env(BUILDKITE_REPO=REPO_URL, SOURCE_DATE_EPOCH=EPOCH, **extra)


def with_service_keys(stack: Stack, project: Project, keys: str = "", settings: str = "") -> None:
    """The registry configuration with extra keys in [services.ruby] (which ends the file)."""
    project.write_config(registry_config(stack, project.name, settings=settings) + keys)


def build(project: Project) -> Any:
    result = run_dockercache("build", "--json", cwd=project.path, env=env())
    assert result.returncode == 0, result.stderr
    return result


def image_manifests(stack: Stack, project: Project) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The pushed tag's digest and manifest, and the index's entries (none for a plain image manifest)."""
    digest, manifest = stack.registry.manifest(f"{project.name}/ruby", COMMIT[:12])
    return digest, manifest, list(manifest.get("manifests") or [])


def image_labels(stack: Stack, project: Project) -> dict[str, str]:
    repo = f"{project.name}/ruby"
    _, manifest, entries = image_manifests(stack, project)
    if entries:  # an index: the image is the entry that is no attestation
        image = next(e for e in entries if (e.get("annotations") or {}).get("vnd.docker.reference.type") != ATTESTATION)
        _, manifest = stack.registry.manifest(repo, image["digest"])
    _, config = stack.registry.get(f"{repo}/blobs/{manifest['config']['digest']}")
    return dict(config["config"].get("Labels") or {})


def test_pushed_image_has_oci_labels_and_user_labels_over_them(project: Project, stack: Stack) -> None:
    with_service_keys(
        stack,
        project,
        'labels = { "org.opencontainers.image.source" = "https://example.com/shop", "com.example.team" = "ci" }\n',
    )
    result = build(project)
    labels = image_labels(stack, project)
    assert labels["org.opencontainers.image.revision"] == COMMIT  # the full commit
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"  # $SOURCE_DATE_EPOCH
    assert labels["org.opencontainers.image.source"] == "https://example.com/shop"  # the service's own wins
    assert labels["com.example.team"] == "ci"
    # The repository URL's credentials never reach the image, the output or the plan.
    assert "s3cr3t" not in result.stdout + result.stderr
    with_service_keys(stack, project)  # without the service's labels: the defaults
    build(project)
    labels = image_labels(stack, project)
    assert labels["org.opencontainers.image.source"] == "https://github.com/acme/shop"
    assert all("s3cr3t" not in v for v in labels.values())


def test_provenance_off_by_default_pushes_a_plain_image_manifest(project: Project, stack: Stack) -> None:
    result = build(project)
    digest, manifest, entries = image_manifests(stack, project)
    assert not entries and manifest["mediaType"] in (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    assert result.json["services"][0]["image"]["digest"] == digest


def test_provenance_min_pushes_an_index_with_an_attestation_manifest(project: Project, stack: Stack) -> None:
    with_service_keys(stack, project, settings='provenance = "min"')
    result = build(project)
    digest, manifest, entries = image_manifests(stack, project)
    assert manifest["mediaType"] == "application/vnd.oci.image.index.v1+json"
    kinds = {(e.get("annotations") or {}).get("vnd.docker.reference.type", "image") for e in entries}
    assert kinds == {"image", ATTESTATION}
    attestation = next(e for e in entries if e.get("annotations", {}).get("vnd.docker.reference.type") == ATTESTATION)
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}  # what some tools mishandle
    assert result.json["services"][0]["image"]["digest"] == digest


def test_labels_cost_no_cache_hit_a_rebuild_of_nothing_changed_is_fully_cached(project: Project, stack: Stack) -> None:
    """Labels are image config: adding or changing one misses no step, however the build before was labelled."""
    with_service_keys(stack, project)
    build(project)
    for team in ("ci", "platform"):
        with_service_keys(stack, project, f'labels = {{ "com.example.team" = "{team}" }}\n')
        again = build(project)
        svc = again.json["services"][0]
        assert svc["steps_cached"] == svc["steps_total"] == 8, again.stderr
        assert image_labels(stack, project)["com.example.team"] == team
    # .created is the commit's time (here $SOURCE_DATE_EPOCH), not the clock: the same commit, the same image.
    assert build(project).json["services"][0]["image"]["digest"] == svc["image"]["digest"]


def test_check_lint_says_plainly_that_this_buildx_cannot(project: Project) -> None:
    result = run_dockercache("check", "--lint", cwd=project.path, env=env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok (1 service)")
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("dockercache: warning: --lint skipped: BuildKit's Dockerfile checks need buildx 0.15")
    assert "0.13" in warnings[0]
