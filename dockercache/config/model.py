"""dockercache.toml's model: a tree of frozen dataclasses, and the helpers that read their type hints.

One generic checker (:mod:`dockercache.config.load`) walks these dataclasses' type hints, so the accepted keys,
their types and the JSON Schema in ``config/`` (see :mod:`dockercache.config.schema`) all come from the same
definitions below and cannot drift apart. Reading and checking a file is :mod:`dockercache.config.load`;
``${VAR}`` expansion is :mod:`dockercache.config.interpolate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ConfigError

CONFIG_NAME = "dockercache.toml"
ENV_CONFIG = "DOCKERCACHE_CONFIG"


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


Mode = Literal["min", "max"]
Compression = Literal["zstd", "gzip", "estargz", "uncompressed"]


def _mode_field() -> Any:
    return field(default="max", metadata=_doc("Cache every layer (max) or final only."))


def _compression_field() -> Any:
    return field(default="zstd", metadata=_doc("Layer compression of the cache."))


@dataclass(frozen=True)
class Settings:
    """Policy shared by every service."""

    default_branch: str | None = field(
        default=None,
        metadata=_doc(
            "Branch whose cache is shared. Default: $BUILDKITE_PIPELINE_DEFAULT_BRANCH, GitHub's repository"
            " default branch, $CI_DEFAULT_BRANCH (GitLab), git's origin/HEAD, 'main'."
        ),
    )
    cache_write: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata=_doc("Write caches: 'auto' in CI and to local stores, 'always', or 'never' (read only)."),
    )
    cache_errors: Literal["warn", "fail"] = field(
        default="warn",
        metadata=_doc("A cache that cannot be read or written: a warning and a cache miss, or a failure."),
    )
    stall_seconds: int = field(
        default=60,
        metadata=_doc(
            "A blob transfer (a cache layer, an image layer) that makes no progress for this many seconds is "
            "abandoned: the build starts again without caches (a cache never costs more than a miss).",
            minimum=5,
        ),
    )
    trusted_branches: tuple[str, ...] = field(
        default=(),
        metadata=_doc("Branch patterns (fnmatch) besides the default branch allowed to write shared caches."),
    )
    pull_request_writes: Literal["own", "none"] = field(
        default="own",
        metadata=_doc(
            "Pull-request builds never write shared caches, whatever their branch is called: 'own' writes "
            "refs and keys of their own (pr-N), 'none' nothing."
        ),
    )
    skip_unchanged: bool = field(
        default=False,
        metadata=_doc(
            "Skip a pushed build whose inputs (Dockerfile, context, args, base image digests) are unchanged: retag "
            "the image already built from them (default for every service with an image)."
        ),
    )

    provenance: Literal["off", "min", "max"] = field(
        default="off",
        metadata=_doc(
            "Provenance attestation on pushed images: 'off' (a plain image manifest, which every registry and "
            "runtime accepts), 'min' or 'max' (an image index with an attestation manifest; max exposes build args)."
        ),
    )
    sbom: bool = field(
        default=False,
        metadata=_doc("SBOM attestation on pushed images (BuildKit's syft scanner image must be pullable)."),
    )
    cache_mounts: bool = field(
        default=False,
        metadata=_doc(
            "Persist the content of every RUN --mount=type=cache a service's build uses in its cache store (per "
            "branch, the default branch's as fallback), so a fresh agent starts with it (default for every service)."
        ),
    )
    cache_mounts_max_mb: int = field(
        default=512,
        metadata=_doc("A cache mount whose archive is larger than this is not saved (one warning).", minimum=1),
    )
    cache_mounts_image: str = field(
        default="busybox:stable",
        metadata=_doc(
            "Image (with sh and tar) of the helper builds that export and restore cache mounts.", min_length=1
        ),
    )


@dataclass(frozen=True)
class BuilderConfig:
    """The buildx builder that runs the builds."""

    name: str = field(default="dockercache", metadata=_doc("Builder name (created if missing)."))
    driver: Literal["docker-container", "docker", "remote", "kubernetes"] = field(
        default="docker-container", metadata=_doc("buildx driver.")
    )
    driver_opts: Mapping[str, str] = field(
        default_factory=dict, metadata=_doc("Driver options (--driver-opt KEY=VALUE).")
    )
    endpoint: str | None = field(
        default=None, metadata=_doc("Remote endpoint (remote driver) or Docker context/endpoint.")
    )
    platforms: tuple[str, ...] = field(default=(), metadata=_doc("Platforms the builder serves."))
    ephemeral: bool = field(
        default=False,
        metadata=_doc("Create a builder for this job only and remove it afterwards, even when the build fails."),
    )
    keep_storage: str | None = field(
        default=None,
        metadata=_doc(
            "After each successful build, prune the builder's build cache down to this size (docker buildx prune --all "
            "--keep-storage), e.g. '5GB': a bound for long-lived agents. Unset: BuildKit's own garbage collection.",
            pattern=r"^[0-9]+(\.[0-9]+)? ?[kKmMgGtT]?[iI]?[bB]?$",
            form="a size such as 5GB or 512MB",
        ),
    )


@dataclass(frozen=True)
class RegistryCache:
    """BuildKit cache kept as OCI artefacts in a registry."""

    type: Literal["registry"]
    ref: str = field(metadata=_doc("Repository for cache manifests; may use {service}.", min_length=1))
    tag: str = field(
        default="{stage}-{branch}",
        metadata=_doc("Tag template; {service}, {stage}, {branch} are filled in.", min_length=1),
    )
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009
    force_compression: bool = field(
        default=False,
        metadata=_doc("Recompress layers that already exist in another compression (e.g. the image's gzip)."),
    )
    image_manifest: bool = field(
        default=True,
        metadata=_doc("Store the cache as an image manifest (needed by ECR and most registries)."),
    )
    oci_mediatypes: bool = field(default=True, metadata=_doc("Use OCI media types."))
    extra_from: tuple[str, ...] = field(
        default=(), metadata=_doc("Further cache refs to read, after this branch's and the default branch's.")
    )


@dataclass(frozen=True)
class LocalCache:
    """BuildKit cache in a local directory (the built-in default when no store is configured)."""

    type: Literal["local"]
    path: str | None = field(
        default=None,
        metadata=_doc(
            "Directory, relative to dockercache.toml; one sub-directory per service and stage. Unset: a directory "
            "of this project's in the user's cache directory ($DOCKERCACHE_CACHE_DIR, else $XDG_CACHE_HOME/"
            "dockercache, else ~/.cache/dockercache), outside every build context.",
            min_length=1,
        ),
    )
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009


@dataclass(frozen=True)
class S3Cache:
    """BuildKit cache in S3: content-addressed blobs shared by named snapshots (see docs/s3.md)."""

    type: Literal["s3"]
    bucket: str = field(metadata=_doc("Bucket (the old plugin's s3_bucket).", min_length=1))
    prefix: str = field(default="dockercache", metadata=_doc("Key prefix for blobs and snapshots."))
    region: str | None = field(default=None, metadata=_doc("AWS region (default: the credential chain's)."))
    endpoint_url: str | None = field(
        default=None, metadata=_doc("Endpoint of an S3-compatible server (MinIO, Ceph, moto).")
    )
    profile: str | None = field(default=None, metadata=_doc("AWS profile (default: the standard chain)."))
    key: str = field(
        default="{pipeline}/{branch}",
        metadata=_doc(
            "Snapshot key this build writes (the old plugin's s3_key); {pipeline}, {branch}, {commit}.",
            min_length=1,
        ),
    )
    cache_from: tuple[str, ...] = field(
        default=("{pipeline}/latest",),
        metadata=_doc("Snapshot keys to restore first, in order (then this branch's, then the default branch's)."),
    )
    listen: str | None = field(
        default=None,
        metadata=_doc(
            "HOST:PORT the S3 store's registry endpoint binds to and BuildKit reaches it at (default: 127.0.0.1 "
            "and a free port); needed for remote and kubernetes builders, which cannot reach the agent's loopback.",
            pattern=r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
            form="HOST:PORT",
        ),
    )
    spool_dir: str | None = field(
        default=None,
        metadata=_doc(
            "Directory (relative to dockercache.toml) where layers BuildKit uploads wait while they are hashed, "
            "before they go to S3 (default: the system's temporary directory, $TMPDIR). Needs room for the "
            "largest layer; when it fills up the save is a warning, never a failed build.",
            min_length=1,
        ),
    )
    transfers: int = field(default=8, metadata=_doc("Parallel S3 requests (blob checks, uploads).", minimum=1))
    multipart_threshold_mb: int = field(default=64, metadata=_doc("Blobs above this size use multipart.", minimum=5))
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009
    native: bool = field(
        default=False,
        metadata=_doc("Use BuildKit's own type=s3 cache instead (docker-container or remote builders only)."),
    )


CacheStore = RegistryCache | LocalCache | S3Cache


@dataclass(frozen=True)
class BuildSecret:
    """A BuildKit secret (``RUN --mount=type=secret,id=ID``), read from an environment variable or a file."""

    env: str | None = field(
        default=None,
        metadata=_doc(
            "Name of the environment variable holding the value (its name, not ${NAME}); BuildKit reads it.",
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
            form="a variable name",
        ),
    )
    file: str | None = field(
        default=None,
        metadata=_doc("File holding the value, relative to dockercache.toml; ~ expands.", min_length=1),
    )


@dataclass(frozen=True)
class ServiceConfig:
    """One image to build, from its own context or from a Compose service."""

    context: str | None = field(default=None, metadata=_doc("Build context, relative to dockercache.toml."))
    dockerfile: str | None = field(default=None, metadata=_doc("Dockerfile, relative to the context."))
    target: str | None = field(default=None, metadata=_doc("Final Dockerfile target (default: last stage)."))
    stages: tuple[str, ...] = field(
        default=(),
        metadata=_doc("Dockerfile targets built and cached on their own, in order, before target."),
    )
    args: Mapping[str, str] = field(default_factory=dict, metadata=_doc("Build arguments."))
    image: str | None = field(default=None, metadata=_doc("Image repository to push to."))
    tags: tuple[str, ...] = field(default=(), metadata=_doc("Tags to push (default: the commit, short form)."))
    push_stages: tuple[str, ...] = field(
        default=(), metadata=_doc("Stages whose images are pushed too, under stage_tag.")
    )
    stage_tag: str = field(
        default="{stage}-{tag}", metadata=_doc("Tag template for stage images; {stage}, {tag}.", min_length=1)
    )
    platforms: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Platforms to build for, os/arch[/variant] (e.g. linux/amd64, linux/arm64); default: the builder's "
            "own. Checked against the builder's platforms before building."
        ),
    )
    cache: str | None = field(default=None, metadata=_doc("Name of the cache store (a key of [caches])."))
    compose_service: str | None = field(
        default=None, metadata=_doc("Take context, dockerfile, target and args from this Compose service.")
    )
    compose_files: tuple[str, ...] = field(
        default=(), metadata=_doc("Compose files for compose_service (default: top-level compose_files).")
    )
    metadata_key: str | None = field(
        default=None,
        metadata=_doc(
            "Buildkite meta-data key that receives the pushed image (the old plugin's metadata_key); "
            "'docker-compose' uses the docker-compose plugin's docker-compose-plugin-built-image-tag-<service>."
        ),
    )
    skip_unchanged: bool | None = field(
        default=None,
        metadata=_doc(
            "Skip the build when an image built from the same inputs is in the image repository (tag "
            "dc-<key>), retagging it instead (default: settings.skip_unchanged). Needs image."
        ),
    )
    secrets: Mapping[str, BuildSecret] = field(
        default_factory=dict,
        metadata=_doc(
            "BuildKit secrets by id (RUN --mount=type=secret,id=ID), each from env or file; added to a Compose "
            "service's build.secrets. Values reach BuildKit only, never arguments, plans or output."
        ),
    )
    ssh: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "SSH agents or keys for RUN --mount=type=ssh: 'default' ($SSH_AUTH_SOCK), or 'ID=PATH' (a socket or "
            "key, relative to dockercache.toml; ~ expands); added to a Compose service's build.ssh."
        ),
    )
    matrix: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata=_doc(
            "Build variants: build args by name, each with its values; every combination is a variant "
            "SERVICE[ID] (ID: the values joined with '-' in axis order), its values merged over args.",
            min_properties=1,
        ),
    )
    variant_tag: str = field(
        default="{tag}-{variant}",
        metadata=_doc("Tag template for a variant's images; {tag}, {variant} (the variant id).", min_length=1),
    )

    labels: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_doc(
            "Image labels, merged over the default OCI labels (org.opencontainers.image.revision, .source, "
            ".created); an empty value removes a label. On the final image and pushed stages only."
        ),
    )
    provenance: Literal["off", "min", "max"] | None = field(
        default=None, metadata=_doc("Provenance attestation of this service's pushed images (default: settings).")
    )
    sbom: bool | None = field(
        default=None, metadata=_doc("SBOM attestation of this service's pushed images (default: settings).")
    )
    cache_mounts: bool | None = field(
        default=None,
        metadata=_doc(
            "Persist this service's RUN --mount=type=cache directories in its cache store (default: "
            "settings.cache_mounts)."
        ),
    )


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials dockercache logs in with (``docker login --password-stdin``) before building.

    An ECR entry without a password logs in as AWS with a token from the AWS credential chain
    (:mod:`dockercache.adapters.ecr`); ``ecr``, ``region``, ``profile`` and ``endpoint_url`` are for such entries only.
    """

    username: str | None = field(
        default=None, metadata=_doc("User name (required with a password; ECR token logins are AWS).", min_length=1)
    )
    password: str | None = field(
        default=None,
        metadata=_doc(
            "Password or token; write it as ${VARIABLE}, never literally. Leave it out for an ECR host "
            "(<account>.dkr.ecr.<region>.amazonaws.com, public.ecr.aws): a token comes from the AWS credential chain.",
            min_length=1,
        ),
    )
    ecr: bool | None = field(
        default=None,
        metadata=_doc(
            "Log in with an ECR token (default: for ECR host names without a password); true for an ECR proxy or "
            "a test registry whose name does not say ECR, false to never ask AWS."
        ),
    )
    region: str | None = field(
        default=None,
        metadata=_doc(
            "AWS region of the ECR token call (default: the host name's; us-east-1 for public.ecr.aws; else the "
            "credential chain's).",
            min_length=1,
        ),
    )
    profile: str | None = field(
        default=None, metadata=_doc("AWS profile of the ECR token call (default: the standard chain).", min_length=1)
    )
    endpoint_url: str | None = field(
        default=None,
        metadata=_doc(
            "ECR API endpoint of the token call (default: AWS's, or $AWS_ENDPOINT_URL_ECR, $AWS_ENDPOINT_URL).",
            min_length=1,
        ),
    )


@dataclass(frozen=True)
class Config:
    """The whole of dockercache.toml."""

    services: Mapping[str, ServiceConfig] = field(metadata=_doc("Services to build, by name.", min_properties=1))
    settings: Settings = field(default_factory=Settings, metadata=_doc("Cache policy."))
    builder: BuilderConfig = field(default_factory=BuilderConfig, metadata=_doc("The buildx builder."))
    caches: Mapping[str, CacheStore] = field(default_factory=dict, metadata=_doc("Cache stores, by name."))
    compose_files: tuple[str, ...] = field(
        default=(), metadata=_doc("Compose files (default: $COMPOSE_FILE, then compose.yaml etc.).")
    )
    registries: Mapping[str, RegistryLogin] = field(
        default_factory=dict, metadata=_doc('Registry logins, by host (e.g. "localhost:5001").')
    )
    path: Path = field(default=Path(CONFIG_NAME), metadata={"internal": True})

    @property
    def root(self) -> Path:
        """The directory relative paths in the file are resolved against."""
        return self.path.parent

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


# ---------------------------------------------------------------------------- type-hint helpers

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(where: str, key: str) -> str:
    """A dotted path as TOML writes it: bare keys as they are, others quoted (so the path stays one line)."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


def suggest(key: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def type_name(value: Any) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def fields_of(cls: type[Any]) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """The user-facing fields of a config dataclass with their resolved type hints."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(tp)
    return None


CACHE_DIR_ENV = "DOCKERCACHE_CACHE_DIR"
"""Where the local stores without a ``path`` live (default: the user's cache directory)."""


def user_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$DOCKERCACHE_CACHE_DIR``, else ``$XDG_CACHE_HOME/dockercache``, else ``~/.cache/dockercache``."""
    given = environ.get(CACHE_DIR_ENV)
    if given:
        return Path(given)
    xdg = environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path(environ.get("HOME") or Path.home()) / ".cache") / "dockercache"


def local_store_path(store: LocalCache, root: Path, environ: Mapping[str, str]) -> Path:
    """A local store's directory: its ``path`` (relative to dockercache.toml's folder ``root``), else one of the
    project's own in the user's cache directory (``<folder name>-<12 hex digits of its path's sha256>``), which no
    build context holds, the image never ships and git never sees."""
    if store.path is not None:
        return (root / store.path).resolve()
    project = root.resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", project.name).strip(".-") or "project"
    return user_cache_dir(environ) / f"{name}-{hashlib.sha256(str(project).encode()).hexdigest()[:12]}"
