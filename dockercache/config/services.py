"""The ``[services]`` tables: one image to build each (its context, stages, tags, secrets, matrix variants,
labels and attestations), and how a matrix variant is named."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .fields import doc


@dataclass(frozen=True)
class BuildSecret:
    """A BuildKit secret (``RUN --mount=type=secret,id=ID``), read from an environment variable or a file."""

    env: str | None = field(
        default=None,
        metadata=doc(
            "Name of the environment variable holding the value (its name, not ${NAME}); BuildKit reads it.",
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
            form="a variable name",
        ),
    )
    file: str | None = field(
        default=None,
        metadata=doc("File holding the value, relative to dockercache.toml; ~ expands.", min_length=1),
    )


@dataclass(frozen=True)
class ServiceConfig:
    """One image to build, from its own context or from a Compose service."""

    context: str | None = field(default=None, metadata=doc("Build context, relative to dockercache.toml."))
    dockerfile: str | None = field(default=None, metadata=doc("Dockerfile, relative to the context."))
    target: str | None = field(default=None, metadata=doc("Final Dockerfile target (default: last stage)."))
    stages: tuple[str, ...] = field(
        default=(),
        metadata=doc("Dockerfile targets built and cached on their own, in order, before target."),
    )
    args: Mapping[str, str] = field(default_factory=dict, metadata=doc("Build arguments."))
    image: str | None = field(default=None, metadata=doc("Image repository to push to."))
    tags: tuple[str, ...] = field(default=(), metadata=doc("Tags to push (default: the commit, short form)."))
    push_stages: tuple[str, ...] = field(
        default=(), metadata=doc("Stages whose images are pushed too, under stage_tag.")
    )
    stage_tag: str = field(
        default="{stage}-{tag}", metadata=doc("Tag template for stage images; {stage}, {tag}.", min_length=1)
    )
    platforms: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Platforms to build for, os/arch[/variant] (e.g. linux/amd64, linux/arm64); default: the builder's "
            "own. Checked against the builder's platforms before building."
        ),
    )
    cache: str | None = field(default=None, metadata=doc("Name of the cache store (a key of [caches])."))
    compose_service: str | None = field(
        default=None, metadata=doc("Take context, dockerfile, target and args from this Compose service.")
    )
    compose_files: tuple[str, ...] = field(
        default=(), metadata=doc("Compose files for compose_service (default: top-level compose_files).")
    )
    metadata_key: str | None = field(
        default=None,
        metadata=doc(
            "Buildkite meta-data key that receives the pushed image (the old plugin's metadata_key); "
            "'docker-compose' uses the docker-compose plugin's docker-compose-plugin-built-image-tag-<service>."
        ),
    )
    skip_unchanged: bool | None = field(
        default=None,
        metadata=doc(
            "Skip the build when an image built from the same inputs is in the image repository (tag "
            "dc-<key>), retagging it instead (default: settings.skip_unchanged). Needs image."
        ),
    )
    secrets: Mapping[str, BuildSecret] = field(
        default_factory=dict,
        metadata=doc(
            "BuildKit secrets by id (RUN --mount=type=secret,id=ID), each from env or file; added to a Compose "
            "service's build.secrets. Values reach BuildKit only, never arguments, plans or output."
        ),
    )
    ssh: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "SSH agents or keys for RUN --mount=type=ssh: 'default' ($SSH_AUTH_SOCK), or 'ID=PATH' (a socket or "
            "key, relative to dockercache.toml; ~ expands); added to a Compose service's build.ssh."
        ),
    )
    matrix: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata=doc(
            "Build variants: build args by name, each with its values; every combination is a variant "
            "SERVICE[ID] (ID: the values joined with '-' in axis order), its values merged over args.",
            min_properties=1,
        ),
    )
    variant_tag: str = field(
        default="{tag}-{variant}",
        metadata=doc("Tag template for a variant's images; {tag}, {variant} (the variant id).", min_length=1),
    )

    labels: Mapping[str, str] = field(
        default_factory=dict,
        metadata=doc(
            "Image labels, merged over the default OCI labels (org.opencontainers.image.revision, .source, "
            ".created); an empty value removes a label. On the final image and pushed stages only."
        ),
    )
    provenance: Literal["off", "min", "max"] | None = field(
        default=None, metadata=doc("Provenance attestation of this service's pushed images (default: settings).")
    )
    sbom: bool | None = field(
        default=None, metadata=doc("SBOM attestation of this service's pushed images (default: settings).")
    )
    cache_mounts: bool | None = field(
        default=None,
        metadata=doc(
            "Persist this service's RUN --mount=type=cache directories in its cache store (default: "
            "settings.cache_mounts)."
        ),
    )


def variant_name(service: str, variant: str) -> str:
    """A matrix variant's name, as pytest names parametrized tests: ``ruby[3.3]``."""
    return f"{service}[{variant}]"


def split_variant(name: str) -> tuple[str, str | None]:
    """``ruby[3.3]`` -> ("ruby", "3.3"); a plain service name -> (name, None)."""
    if name.endswith("]") and "[" in name:
        base, _, variant = name[:-1].partition("[")
        return base, variant
    return name, None


def matrix_variants(service: ServiceConfig) -> tuple[tuple[str, dict[str, str]], ...]:
    """A service's variants in order: (id, the matrix's build args), the cartesian product of its axes in axis
    order, the id its values joined with '-' (pytest's ids); none without a matrix."""
    if not service.matrix:
        return ()
    axes = list(service.matrix.items())
    combos = itertools.product(*(values for _, values in axes))
    return tuple(("-".join(c), {name: v for (name, _), v in zip(axes, c, strict=True)}) for c in combos)
