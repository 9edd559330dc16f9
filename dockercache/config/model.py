"""dockercache.toml's model: a tree of frozen dataclasses, rooted in :class:`Config`.

One generic checker (:mod:`dockercache.config.convert`) walks these dataclasses' type hints, so the accepted keys,
their types and the JSON Schema in ``config/`` (see :mod:`dockercache.config.schema`) all come from the same
definitions and cannot drift apart. The root and its small tables (settings, builder, registry logins) are here;
the cache stores are :mod:`dockercache.config.caches`, the services :mod:`dockercache.config.services`, and how
fields are documented and read :mod:`dockercache.config.fields`. Reading and checking a file is
:mod:`dockercache.config.load`; ``${VAR}`` expansion is :mod:`dockercache.config.interpolate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .caches import CacheStore
from .fields import doc, suggest
from .services import ServiceConfig, split_variant

CONFIG_NAME = "dockercache.toml"
ENV_CONFIG = "DOCKERCACHE_CONFIG"


@dataclass(frozen=True)
class Settings:
    """Policy shared by every service."""

    default_branch: str | None = field(
        default=None,
        metadata=doc(
            "Branch whose cache is shared. Default: $BUILDKITE_PIPELINE_DEFAULT_BRANCH, GitHub's repository"
            " default branch, $CI_DEFAULT_BRANCH (GitLab), git's origin/HEAD, 'main'."
        ),
    )
    cache_write: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata=doc("Write caches: 'auto' in CI and to local stores, 'always', or 'never' (read only)."),
    )
    cache_errors: Literal["warn", "fail"] = field(
        default="warn",
        metadata=doc("A cache that cannot be read or written: a warning and a cache miss, or a failure."),
    )
    stall_seconds: int = field(
        default=60,
        metadata=doc(
            "A blob transfer (a cache layer, an image layer) that makes no progress for this many seconds is "
            "abandoned: the build starts again without caches (a cache never costs more than a miss).",
            minimum=5,
        ),
    )
    trusted_branches: tuple[str, ...] = field(
        default=(),
        metadata=doc("Branch patterns (fnmatch) besides the default branch allowed to write shared caches."),
    )
    pull_request_writes: Literal["own", "none"] = field(
        default="own",
        metadata=doc(
            "Pull-request builds never write shared caches, whatever their branch is called: 'own' writes "
            "refs and keys of their own (pr-N), 'none' nothing."
        ),
    )
    skip_unchanged: bool = field(
        default=False,
        metadata=doc(
            "Skip a pushed build whose inputs (Dockerfile, context, args, base image digests) are unchanged: retag "
            "the image already built from them (default for every service with an image)."
        ),
    )

    provenance: Literal["off", "min", "max"] = field(
        default="off",
        metadata=doc(
            "Provenance attestation on pushed images: 'off' (a plain image manifest, which every registry and "
            "runtime accepts), 'min' or 'max' (an image index with an attestation manifest; max exposes build args)."
        ),
    )
    sbom: bool = field(
        default=False,
        metadata=doc("SBOM attestation on pushed images (BuildKit's syft scanner image must be pullable)."),
    )
    cache_mounts: bool = field(
        default=False,
        metadata=doc(
            "Persist the content of every RUN --mount=type=cache a service's build uses in its cache store (per "
            "branch, the default branch's as fallback), so a fresh agent starts with it (default for every service)."
        ),
    )
    cache_mounts_max_mb: int = field(
        default=512,
        metadata=doc("A cache mount whose archive is larger than this is not saved (one warning).", minimum=1),
    )
    cache_mounts_image: str = field(
        default="busybox:stable",
        metadata=doc(
            "Image (with sh and tar) of the helper builds that export and restore cache mounts.", min_length=1
        ),
    )


BUILDKIT_IMAGE = "moby/buildkit:v0.13.2"
"""The BuildKit a ``docker-container`` builder runs by default: Docker 26.1's own, which the test suite runs."""


@dataclass(frozen=True)
class BuilderConfig:
    """The buildx builder that runs the builds."""

    name: str = field(default="dockercache", metadata=doc("Builder name (created if missing)."))
    driver: Literal["docker-container", "docker", "remote", "kubernetes"] = field(
        default="docker-container", metadata=doc("buildx driver.")
    )
    driver_opts: Mapping[str, str] = field(
        default_factory=dict, metadata=doc("Driver options (--driver-opt KEY=VALUE).")
    )
    endpoint: str | None = field(
        default=None, metadata=doc("Remote endpoint (remote driver) or Docker context/endpoint.")
    )
    image: str = field(
        default=BUILDKIT_IMAGE,
        metadata=doc(
            "BuildKit image of a docker-container builder dockercache creates (driver_opts.image wins). Pinned: "
            "every agent of a fleet writes and reads caches with one BuildKit, not whatever buildx-stable-1 is that "
            "day.",
            min_length=1,
        ),
    )
    platforms: tuple[str, ...] = field(default=(), metadata=doc("Platforms the builder serves."))
    ephemeral: bool = field(
        default=False,
        metadata=doc("Create a builder for this job only and remove it afterwards, even when the build fails."),
    )
    keep_storage: str | None = field(
        default=None,
        metadata=doc(
            "After each successful build, prune the builder's build cache down to this size (docker buildx prune --all "
            "--keep-storage), e.g. '5GB': a bound for long-lived agents. Unset: BuildKit's own garbage collection.",
            pattern=r"^[0-9]+(\.[0-9]+)? ?[kKmMgGtT]?[iI]?[bB]?$",
            form="a size such as 5GB or 512MB",
        ),
    )


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials dockercache logs in with (``docker login --password-stdin``) before building.

    An ECR entry without a password logs in as AWS with a token from the AWS credential chain
    (:mod:`dockercache.adapters.ecr`); ``ecr``, ``region``, ``profile`` and ``endpoint_url`` are for such entries only.
    """

    username: str | None = field(
        default=None, metadata=doc("User name (required with a password; ECR token logins are AWS).", min_length=1)
    )
    password: str | None = field(
        default=None,
        metadata=doc(
            "Password or token; write it as ${VARIABLE}, never literally. Leave it out for an ECR host "
            "(<account>.dkr.ecr.<region>.amazonaws.com, public.ecr.aws): a token comes from the AWS credential chain.",
            min_length=1,
        ),
    )
    ecr: bool | None = field(
        default=None,
        metadata=doc(
            "Log in with an ECR token (default: for ECR host names without a password); true for an ECR proxy or "
            "a test registry whose name does not say ECR, false to never ask AWS."
        ),
    )
    region: str | None = field(
        default=None,
        metadata=doc(
            "AWS region of the ECR token call (default: the host name's; us-east-1 for public.ecr.aws; else the "
            "credential chain's).",
            min_length=1,
        ),
    )
    profile: str | None = field(
        default=None, metadata=doc("AWS profile of the ECR token call (default: the standard chain).", min_length=1)
    )
    endpoint_url: str | None = field(
        default=None,
        metadata=doc(
            "ECR API endpoint of the token call (default: AWS's, or $AWS_ENDPOINT_URL_ECR, $AWS_ENDPOINT_URL).",
            min_length=1,
        ),
    )


@dataclass(frozen=True)
class Config:
    """The whole of dockercache.toml."""

    services: Mapping[str, ServiceConfig] = field(metadata=doc("Services to build, by name.", min_properties=1))
    settings: Settings = field(default_factory=Settings, metadata=doc("Cache policy."))
    builder: BuilderConfig = field(default_factory=BuilderConfig, metadata=doc("The buildx builder."))
    caches: Mapping[str, CacheStore] = field(default_factory=dict, metadata=doc("Cache stores, by name."))
    compose_files: tuple[str, ...] = field(
        default=(), metadata=doc("Compose files (default: $COMPOSE_FILE, then compose.yaml etc.).")
    )
    registries: Mapping[str, RegistryLogin] = field(
        default_factory=dict, metadata=doc('Registry logins, by host (e.g. "localhost:5001").')
    )
    path: Path = field(default=Path(CONFIG_NAME), metadata={"internal": True})
    compose_root: Path | None = field(default=None, metadata={"internal": True})
    """Where Compose file names (``compose_files``, $COMPOSE_FILE, the default names) are found (None: ``root``).
    The Buildkite plugin sets the checkout: its ``config`` option names files there, as the plugins it replaces."""
    compose_images: bool = field(default=False, metadata={"internal": True})
    """A Compose service's ``image:`` is the image a service without ``image`` pushes (the Buildkite plugin: the
    docker-compose plugin pushes it)."""
    default_tags: tuple[str, ...] = field(default=(), metadata={"internal": True})
    """The tags of a service that names none (the Buildkite plugin: the full commit, as the old plugin's
    ``image_name``); empty: the short commit."""

    @property
    def root(self) -> Path:
        """The directory relative paths in the file are resolved against."""
        return self.path.parent

    @property
    def compose_dir(self) -> Path:
        """The directory Compose file names are relative to."""
        return self.compose_root or self.root

    def service(self, name: str) -> ServiceConfig:
        """A service by name; a variant's name (``ruby[3.3]``) gives its service's configuration."""
        name = split_variant(name)[0]
        try:
            return self.services[name]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no service '{name}'{suggest(name, self.services)} (services: {', '.join(self.services)})"
            ) from None


def default_cache_name(config: Config, service: ServiceConfig) -> str | None:
    """The store a service uses: its own ``cache``, else 'default', else the only one (None: built-in)."""
    if service.cache:
        return service.cache
    if "default" in config.caches:
        return "default"
    if len(config.caches) == 1:
        return next(iter(config.caches))
    return None
