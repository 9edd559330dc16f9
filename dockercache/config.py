"""dockercache.toml: finding it, reading it, interpolating ``${VAR}``, and checking it strictly.

The configuration is a tree of frozen dataclasses. One generic checker walks the dataclasses' type hints, so
the accepted keys, their types and the JSON Schema in ``config/`` (see :mod:`dockercache.schema`) all come
from the same definitions below and cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

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
        metadata=_doc("Branch whose cache is shared. Default: $BUILDKITE_PIPELINE_DEFAULT_BRANCH, git, 'main'."),
    )
    cache_write: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata=_doc("Write caches: 'auto' in CI and to local stores, 'always', or 'never' (read only)."),
    )
    cache_errors: Literal["warn", "fail"] = field(
        default="warn",
        metadata=_doc("A cache that cannot be read or written: a warning and a cache miss, or a failure."),
    )
    trusted_branches: tuple[str, ...] = field(
        default=(),
        metadata=_doc("Branch patterns (fnmatch) besides the default branch allowed to write shared caches."),
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
    path: str = field(
        default=".dockercache/cache",
        metadata=_doc("Directory, relative to dockercache.toml; one sub-directory per service and stage."),
    )
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009


@dataclass(frozen=True)
class S3Cache:
    """BuildKit cache in S3: content-addressed blobs shared by named snapshots (see README "S3 store")."""

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
    local_dir: str | None = field(
        default=None,
        metadata=_doc("Local blob pool (default: $DOCKERCACHE_CACHE_DIR or ~/.cache/dockercache)."),
    )
    transfers: int = field(default=8, metadata=_doc("Parallel transfers.", minimum=1))
    multipart_threshold_mb: int = field(default=64, metadata=_doc("Blobs above this size use multipart.", minimum=5))
    mode: Mode = _mode_field()  # noqa: RUF009 - returns a dataclasses.field, not a shared default
    compression: Compression = _compression_field()  # noqa: RUF009
    native: bool = field(
        default=False,
        metadata=_doc("Use BuildKit's own type=s3 cache instead (docker-container or remote builders only)."),
    )


CacheStore = RegistryCache | LocalCache | S3Cache


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


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials dockercache logs in with (``docker login --password-stdin``) before building."""

    username: str = field(metadata=_doc("User name.", min_length=1))
    password: str = field(metadata=_doc("Password or token; write it as ${VARIABLE}, never literally.", min_length=1))


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
        try:
            return self.services[name]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no service '{name}'{suggest(name, self.services)} (services: {', '.join(self.services)})"
            ) from None


# --------------------------------------------------------------------------------------------- finding


def find_config(start: Path, explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The config file: ``--config``, then $DOCKERCACHE_CONFIG, then the nearest dockercache.toml upwards."""
    env = os.environ if env is None else env
    given = explicit or env.get(ENV_CONFIG)
    if given:
        path = Path(given)
        if not path.is_absolute():
            path = start / path
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            source = "--config" if explicit else f"${ENV_CONFIG}"
            raise ConfigError(f"{given}: no such configuration file (from {source})")
        return path
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{CONFIG_NAME}: not found in {start} or any parent directory (use --config or ${ENV_CONFIG})")


def _display(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def load_config(path: Path, variables: Mapping[str, str]) -> Config:
    """Read, interpolate and check ``path``. Raises ConfigError with a one-line message."""
    shown = _display(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    return parse_config(raw, variables, shown)


def parse_config(raw: Mapping[str, Any], variables: Mapping[str, str], path: Path) -> Config:
    """Check a parsed document: interpolation, keys, types, then cross-references."""
    registries = raw.get("registries")
    if isinstance(registries, dict):
        for host, login in registries.items():
            password = login.get("password") if isinstance(login, dict) else None
            if isinstance(password, str) and password and not re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", password):
                raise ConfigError(
                    f"{path}: registries.{host}.password: write it as ${{VARIABLE}}; a password in the file "
                    "would be committed with it"
                )
    expanded = _interpolate(raw, variables, path, "")
    config: Config = _convert(expanded, Config, path, "")
    config = dataclasses.replace(config, path=path)
    _check_references(config)
    return config


# --------------------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<escaped>\$))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(value: Any, variables: Mapping[str, str], path: Path, where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables, f"{path}: {where or 'value'}")
    if isinstance(value, dict):
        return {k: _interpolate(v, variables, path, _join(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, variables, path, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def interpolate(text: str, variables: Mapping[str, str], where: str) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``$VAR`` and ``$$`` (a literal dollar)."""
    if "${" in text and text.count("${") > len(re.findall(r"\$\{[^}]*\}", text)):
        raise ConfigError(f"{where}: unterminated '${{' in {text!r}")

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        expr = match.group("braced")
        if expr is None:
            expr = match.group("bare")
        name, sep, default = expr.partition(":-")
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: invalid variable expression '${{{expr}}}' (use ${{NAME}} or ${{NAME:-default}})"
            )
        value = variables.get(name)
        if sep:
            return value if value else default
        if value is None:
            raise ConfigError(f"{where}: undefined variable ${{{name}}} (set it, or write ${{{name}:-default}})")
        return value

    return _VAR.sub(replace, text)


# ------------------------------------------------------------------------------------------- checking


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(where: str, key: str) -> str:
    """A dotted path as TOML writes it: bare keys as they are, others quoted (so the path stays one line)."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


def suggest(key: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _type_name(value: Any) -> str:
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


def _convert(value: Any, tp: Any, path: Path, where: str) -> Any:
    at = f"{path}: {where or '(top level)'}"
    members = union_members(tp)
    if members is not None:
        if type(None) in members:
            rest = [m for m in members if m is not type(None)]
            return _convert(value, rest[0] if len(rest) == 1 else Union[tuple(rest)], path, where)  # noqa: UP007
        return _convert_tagged(value, members, path, where)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            options = ", ".join(repr(c) for c in choices)
            hint = suggest(value, choices) if isinstance(value, str) else ""
            raise ConfigError(f"{at}: {value!r} is not one of {options}{hint}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_table(value, tp, path, where)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"{at}: expected an array, got {_type_name(value)}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(v, item, path, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a table, got {_type_name(value)}")
        _, item = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if item is str and isinstance(v, (int, float, bool)) and not isinstance(v, bool):
                v = str(v)  # build args like PYTHON_VERSION = 3.12 are meant as strings
            out[k] = _convert(v, item, path, _join(where, k))
        return types.MappingProxyType(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: expected a boolean, got {_type_name(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{at}: expected an integer, got {_type_name(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}: expected a string, got {_type_name(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in the definitions above


def _convert_tagged(value: Any, members: tuple[Any, ...], path: Path, where: str) -> Any:
    at = f"{path}: {where}"
    if not isinstance(value, dict):
        raise ConfigError(f"{at}: expected a table, got {_type_name(value)}")
    by_tag = {typing.get_args(fields_of(m)["type"][1])[0]: m for m in members}
    kind = value.get("type")
    if kind is None:
        raise ConfigError(f"{at}.type: missing (one of {', '.join(repr(k) for k in by_tag)})")
    if kind not in by_tag:
        hint = suggest(kind, by_tag) if isinstance(kind, str) else ""
        raise ConfigError(f"{at}.type: {kind!r} is not one of {', '.join(repr(k) for k in by_tag)}{hint}")
    return _convert_table(value, by_tag[kind], path, where)


def _convert_table(value: Any, cls: type[Any], path: Path, where: str) -> Any:
    at = f"{path}: {where or '(top level)'}"
    if not isinstance(value, dict):
        raise ConfigError(f"{at}: expected a table, got {_type_name(value)}")
    known = fields_of(cls)
    for key in value:
        if key not in known:
            raise ConfigError(f"{path}: {_join(where, key)}: unknown key{suggest(key, known)}")
    kwargs = {}
    for name, (f, tp) in known.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: {_join(where, name)}: missing (required)")
            continue
        converted = _convert(value[name], tp, path, _join(where, name))
        _check_limits(converted, f, path, _join(where, name))
        kwargs[name] = converted
    return cls(**kwargs)


def _check_limits(value: Any, f: dataclasses.Field[Any], path: Path, where: str) -> None:
    if isinstance(value, str) and len(value) < f.metadata.get("min_length", 0):
        raise ConfigError(f"{path}: {where}: must not be empty")
    if isinstance(value, int) and value < f.metadata.get("minimum", value):
        raise ConfigError(f"{path}: {where}: must be at least {f.metadata['minimum']}")
    if isinstance(value, Mapping) and len(value) < f.metadata.get("min_properties", 0):
        raise ConfigError(f"{path}: {where}: must not be empty")


_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_references(config: Config) -> None:
    """Checks across keys: names, references between tables, combinations that cannot work."""
    path = config.path
    for name, store in config.caches.items():
        if not _SERVICE_NAME.fullmatch(name):
            raise ConfigError(f"{path}: caches.{name}: invalid store name (letters, digits, '_', '.', '-')")
        if isinstance(store, S3Cache):
            if store.native and config.builder.driver not in ("docker-container", "remote"):
                raise ConfigError(
                    f"{path}: caches.{name}.native: BuildKit's s3 cache needs builder.driver 'docker-container' or "
                    f"'remote' (this builder: '{config.builder.driver}')"
                )
            if store.endpoint_url and not re.match(r"https?://[^/]+", store.endpoint_url):
                raise ConfigError(f"{path}: caches.{name}.endpoint_url: not an http(s) URL: {store.endpoint_url!r}")
            for i, template in enumerate((store.key, *store.cache_from)):
                where = f"caches.{name}.key" if i == 0 else f"caches.{name}.cache_from[{i - 1}]"
                if template.startswith("/") or ".." in template.split("/"):
                    raise ConfigError(f"{path}: {where}: snapshot keys are relative paths ({template!r})")
                _check_template(template, ("pipeline", "branch", "commit"), path, where)
        if isinstance(store, RegistryCache):
            _check_template(store.ref, ("service",), path, f"caches.{name}.ref")
            _check_template(store.tag, ("service", "stage", "branch"), path, f"caches.{name}.tag")
            for i, extra in enumerate(store.extra_from):
                _check_template(extra, ("service", "stage"), path, f"caches.{name}.extra_from[{i}]")
        if isinstance(store, RegistryCache) and ":" in store.ref.rsplit("/", 1)[-1]:
            raise ConfigError(
                f"{path}: caches.{name}.ref: give a repository without a tag ({store.ref!r}); "
                "the tag comes from caches.{name}.tag"
            )
    for host in config.registries:
        if "/" in host or not host:
            raise ConfigError(f"{path}: registries.{host}: give a registry host (and port), not a repository")
    builder = config.builder
    if builder.driver == "remote" and not builder.endpoint:
        raise ConfigError(f"{path}: builder.endpoint: required with driver 'remote' (e.g. tcp://buildkitd:1234)")
    if builder.driver == "docker" and builder.ephemeral:
        raise ConfigError(f"{path}: builder.ephemeral: the 'docker' driver cannot create builders")
    for name, svc in config.services.items():
        where = f"services.{name}"
        if not _SERVICE_NAME.fullmatch(name):
            raise ConfigError(f"{path}: {where}: invalid service name (letters, digits, '_', '.', '-')")
        if svc.compose_service and (svc.context or svc.dockerfile):
            raise ConfigError(
                f"{path}: {where}: compose_service conflicts with context/dockerfile (they come from Compose)"
            )
        _check_template(svc.stage_tag, ("stage", "tag"), path, f"{where}.stage_tag")
        if svc.compose_files and not svc.compose_service:
            raise ConfigError(f"{path}: {where}.compose_files: only used with compose_service")
        if svc.cache is not None and svc.cache not in config.caches:
            raise ConfigError(
                f"{path}: {where}.cache: no cache store '{svc.cache}'{suggest(svc.cache, config.caches)}"
                f" (stores: {', '.join(config.caches) or 'none'})"
            )
        if svc.cache is None and len(config.caches) > 1 and "default" not in config.caches:
            raise ConfigError(
                f"{path}: {where}.cache: several cache stores are defined; name one ({', '.join(config.caches)})"
            )
        seen: set[str] = set()
        for i, stage in enumerate(svc.stages):
            if not stage:
                raise ConfigError(f"{path}: {where}.stages[{i}]: must not be empty")
            if stage in seen:
                raise ConfigError(f"{path}: {where}.stages[{i}]: stage '{stage}' is listed twice")
            seen.add(stage)
        if svc.target is not None and svc.target == "":
            raise ConfigError(f"{path}: {where}.target: must not be empty")
        buildable = {*svc.stages, *([svc.target] if svc.target else [])}
        for i, stage in enumerate(svc.push_stages):
            if stage not in buildable:
                raise ConfigError(
                    f"{path}: {where}.push_stages[{i}]: '{stage}' is not among the service's stages"
                    f"{suggest(stage, buildable)}"
                )
        if svc.push_stages and not svc.image:
            raise ConfigError(f"{path}: {where}.push_stages: needs {where}.image to push to")
        for i, tag in enumerate(svc.tags):
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
                raise ConfigError(f"{path}: {where}.tags[{i}]: {tag!r} is not a valid image tag")


def _check_template(template: str, names: tuple[str, ...], path: Path, where: str) -> None:
    for field_name in re.findall(r"\{([^{}]*)\}", template):
        if field_name not in names:
            raise ConfigError(
                f"{path}: {where}: unknown placeholder {{{field_name}}}{suggest(field_name, names)}"
                f" (placeholders: {', '.join('{' + n + '}' for n in names)})"
            )


def default_cache_name(config: Config, service: ServiceConfig) -> str | None:
    """The store a service uses: its own ``cache``, else 'default', else the only one (None: built-in)."""
    if service.cache:
        return service.cache
    if "default" in config.caches:
        return "default"
    if len(config.caches) == 1:
        return next(iter(config.caches))
    return None
