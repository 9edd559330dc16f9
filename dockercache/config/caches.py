"""The ``[caches]`` tables: where BuildKit's cache lives (a registry, a local directory, S3), and where a local
store without a ``path`` goes (the user's cache directory).

Each kind's table says what it needs of itself (:meth:`check`: its templates' placeholders, what it needs of the
builder) and of the values that go into cache attributes (:meth:`check_encoded`); the loader asks every store
the same, and knows no kind by name. What a kind does is :mod:`dockercache.stores`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..reference import reference_problem, repository_problem, unsafe_character
from .fields import Refuse, check_template, doc, fill

Mode = Literal["min", "max"]
Compression = Literal["zstd", "gzip", "estargz", "uncompressed"]


def _mode_field() -> Any:
    return field(default="max", metadata=doc("Cache every layer (max) or final only."))


def _compression_field() -> Any:
    return field(default="zstd", metadata=doc("Layer compression of the cache."))


@dataclass(frozen=True)
class RegistryCache:
    """BuildKit cache kept as OCI artefacts in a registry."""

    type: Literal["registry"]
    ref: str = field(metadata=doc("Repository for cache manifests; may use {service}.", min_length=1))
    tag: str = field(
        default="{stage}-{branch}",
        metadata=doc("Tag template; {service}, {stage}, {branch} are filled in.", min_length=1),
    )
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009
    force_compression: bool = field(
        default=False,
        metadata=doc("Recompress layers that already exist in another compression (e.g. the image's gzip)."),
    )
    image_manifest: bool = field(
        default=True,
        metadata=doc("Store the cache as an image manifest (needed by ECR and most registries)."),
    )
    oci_mediatypes: bool = field(default=True, metadata=doc("Use OCI media types."))
    extra_from: tuple[str, ...] = field(
        default=(), metadata=doc("Further cache refs to read, after this branch's and the default branch's.")
    )

    def resolved(self, root: Path, environ: Mapping[str, str]) -> RegistryCache:
        """As a build uses it (nothing to fill in)."""
        return self

    def check(self, path: Path, name: str, driver: str) -> None:
        """Its templates' placeholders, and a repository without a tag."""
        check_template(self.ref, ("service",), path, f"caches.{name}.ref")
        check_template(self.tag, ("service", "stage", "branch"), path, f"caches.{name}.tag")
        for i, extra in enumerate(self.extra_from):
            check_template(extra, ("service", "stage"), path, f"caches.{name}.extra_from[{i}]")
        if ":" in self.ref.rsplit("/", 1)[-1]:
            raise ConfigError(
                f"{path}: caches.{name}.ref: give a repository without a tag ({self.ref!r}); "
                f"the tag comes from caches.{name}.tag"
            )

    def check_encoded(self, name: str, services: Sequence[str], refuse: Refuse) -> None:
        """Its ref and extra refs, filled in for each service that uses it, and its tag."""
        for service in services:
            ref = fill(self.ref, service=service)
            problem = repository_problem(ref)
            if problem:
                shown = f"{ref!r}" + (f" (for service '{service}')" if "{service}" in self.ref else "")
                raise refuse(("caches", name, "ref"), ref, f"{shown} is not a valid cache repository", problem)
            for i, extra in enumerate(self.extra_from):
                filled = fill(extra, service=service, stage="stage")
                problem = reference_problem(filled)
                if problem:
                    where = ("caches", name, "extra_from", i)
                    raise refuse(where, filled, f"{filled!r} is not a valid image reference", problem)
        unsafe = unsafe_character(self.tag)
        if unsafe:
            raise refuse(
                ("caches", name, "tag"), self.tag, f"{self.tag!r} cannot be a cache tag", f"{unsafe} is not allowed"
            )


@dataclass(frozen=True)
class LocalCache:
    """BuildKit cache in a local directory (the built-in default when no store is configured)."""

    type: Literal["local"]
    path: str | None = field(
        default=None,
        metadata=doc(
            "Directory, relative to dockercache.toml; one sub-directory per service and stage. Unset: a directory "
            "of this project's in the user's cache directory ($DOCKERCACHE_CACHE_DIR, else $XDG_CACHE_HOME/"
            "dockercache, else ~/.cache/dockercache), outside every build context.",
            min_length=1,
        ),
    )
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009

    def resolved(self, root: Path, environ: Mapping[str, str]) -> LocalCache:
        """As a build uses it: with no ``path``, the project's own directory in the user's cache directory (no
        build context holds it)."""
        return self if self.path is not None else replace(self, path=str(local_store_path(self, root, environ)))

    def check(self, path: Path, name: str, driver: str) -> None:
        """Nothing beyond its keys' own rules."""

    def check_encoded(self, name: str, services: Sequence[str], refuse: Refuse) -> None:
        """Its path is quoted where it is encoded: nothing to refuse."""


@dataclass(frozen=True)
class S3Cache:
    """BuildKit cache in S3: content-addressed blobs shared by named snapshots (see docs/s3.md)."""

    type: Literal["s3"]
    bucket: str = field(metadata=doc("Bucket (the old plugin's s3_bucket).", min_length=1))
    prefix: str = field(default="dockercache", metadata=doc("Key prefix for blobs and snapshots."))
    region: str | None = field(default=None, metadata=doc("AWS region (default: the credential chain's)."))
    endpoint_url: str | None = field(
        default=None, metadata=doc("Endpoint of an S3-compatible server (MinIO, Ceph, moto).")
    )
    profile: str | None = field(default=None, metadata=doc("AWS profile (default: the standard chain)."))
    key: str = field(
        default="{pipeline}/{branch}",
        metadata=doc(
            "Snapshot key this build writes (the old plugin's s3_key); {pipeline}, {branch}, {commit}.",
            min_length=1,
        ),
    )
    cache_from: tuple[str, ...] = field(
        default=("{pipeline}/latest",),
        metadata=doc("Snapshot keys to restore first, in order (then this branch's, then the default branch's)."),
    )
    listen: str | None = field(
        default=None,
        metadata=doc(
            "HOST:PORT the S3 store's registry endpoint binds to and BuildKit reaches it at (default: 127.0.0.1 "
            "and a free port); needed for remote and kubernetes builders, which cannot reach the agent's loopback.",
            pattern=r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
            form="HOST:PORT",
        ),
    )
    spool_dir: str | None = field(
        default=None,
        metadata=doc(
            "Directory (relative to dockercache.toml) where layers BuildKit uploads wait while they are hashed, "
            "before they go to S3 (default: the system's temporary directory, $TMPDIR). Needs room for the "
            "largest layer; when it fills up the save is a warning, never a failed build.",
            min_length=1,
        ),
    )
    transfers: int = field(default=8, metadata=doc("Parallel S3 requests (blob checks, uploads).", minimum=1))
    multipart_threshold_mb: int = field(default=64, metadata=doc("Blobs above this size use multipart.", minimum=5))
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009
    native: bool = field(
        default=False,
        metadata=doc("Use BuildKit's own type=s3 cache instead (docker-container or remote builders only)."),
    )

    def resolved(self, root: Path, environ: Mapping[str, str]) -> S3Cache:
        """As a build uses it (nothing to fill in)."""
        return self

    def check(self, path: Path, name: str, driver: str) -> None:
        """A builder that can reach it (natively, or through the agent's endpoint), and relative snapshot keys."""
        if self.native and driver not in ("docker-container", "remote", "kubernetes"):
            raise ConfigError(
                f"{path}: caches.{name}.native: BuildKit's s3 cache needs builder.driver 'docker-container', "
                f"'remote' or 'kubernetes' (this builder: '{driver}')"
            )
        if not self.native and not self.listen and driver in ("remote", "kubernetes"):
            raise ConfigError(
                f"{path}: caches.{name}: a '{driver}' builder cannot reach this agent's loopback, where the S3 store "
                f"serves BuildKit; set caches.{name}.listen to an address the builder reaches (HOST:PORT), or "
                "native = true"
            )
        if self.endpoint_url and not re.match(r"https?://[^/]+", self.endpoint_url):
            raise ConfigError(f"{path}: caches.{name}.endpoint_url: not an http(s) URL: {self.endpoint_url!r}")
        for i, template in enumerate((self.key, *self.cache_from)):
            where = f"caches.{name}.key" if i == 0 else f"caches.{name}.cache_from[{i - 1}]"
            if template.startswith("/") or ".." in template.split("/"):
                raise ConfigError(f"{path}: {where}: snapshot keys are relative paths ({template!r})")
            check_template(template, ("pipeline", "branch", "commit"), path, where)

    def check_encoded(self, name: str, services: Sequence[str], refuse: Refuse) -> None:
        """Its snapshot keys, which name S3 objects and registry repositories."""
        for i, template in enumerate((self.key, *self.cache_from)):
            where = ("caches", name, "key") if i == 0 else ("caches", name, "cache_from", i - 1)
            unsafe = unsafe_character(template)
            if unsafe:
                raise refuse(where, template, f"{template!r} cannot be a snapshot key", f"{unsafe} is not allowed")


CacheStore = RegistryCache | LocalCache | S3Cache

BUILTIN = LocalCache(type="local")
"""The store of a service when dockercache.toml names none."""


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
