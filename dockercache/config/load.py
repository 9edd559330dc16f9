"""Finding dockercache.toml, reading it, and checking it strictly against the model in :mod:`dockercache.config.model`.

Two steps, as pypa/build reads pyproject.toml: :func:`load_config` turns I/O and TOML errors into one-line
messages; :func:`parse_config` interpolates variables, then checks types, required and unknown keys (with a
"did you mean") and the references between tables. Every failure is a :class:`ConfigError` naming the file
and the dotted key.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ConfigError
from ..reference import TAG, reference_problem, repository_problem, unsafe_character
from .ecr_hosts import USERNAME as ECR_USERNAME
from .ecr_hosts import token_registry
from .interpolate import interpolate_tree, variables_used
from .model import (
    CONFIG_NAME,
    ENV_CONFIG,
    Config,
    RegistryCache,
    RegistryLogin,
    S3Cache,
    ServiceConfig,
    default_cache_name,
    dotted,
    fields_of,
    matrix_variants,
    suggest,
    type_name,
    union_members,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


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
    raw, shown = read_document(path)
    return parse_config(raw, variables, shown)


def read_document(path: Path) -> tuple[dict[str, Any], Path]:
    """``path``'s TOML as a raw document, unchecked, and the path to name in messages (the Buildkite plugin
    merges its options over it before :func:`parse_config`)."""
    shown = _display(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    except RecursionError:  # the TOML parser recurses once per level of nested arrays and inline tables
        raise ConfigError(f"{shown}: invalid TOML: nested more than {MAX_DEPTH} levels deep") from None
    check_depth(document, str(shown))
    return document, shown


MAX_DEPTH = 32
"""The deepest nesting of tables and arrays a configuration may have (the model needs five; every later step
walks the document recursively, so a deeper one is refused before any of them runs)."""


def check_depth(document: Any, source: str) -> None:
    """ConfigError naming the key where ``document`` is nested more than :data:`MAX_DEPTH` levels deep
    (walked without recursion; array levels count but add nothing to the key's name)."""
    stack: list[tuple[Any, tuple[str, ...], int]] = [(document, (), 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            name = ".".join(key[:6]) + ("..." if len(key) > 6 else "")
            raise ConfigError(f"{source}: {name or 'the document'}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, Mapping):
            stack.extend((v, (*key, str(k)), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, key, depth + 1) for v in value)


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
    _check_secret_names(raw, path)
    _check_provenance_values(raw, path)
    expanded = interpolate_tree(raw, variables, path, "")
    found: list[ConfigError] = []
    token = _COLLECTED.set(found)
    try:
        config: Config = _convert(expanded, Config, path, "")
    except _Abandoned:
        pass
    finally:
        _COLLECTED.reset(token)
    if found:
        raise ConfigError(str(found[0]), more=tuple(found[1:MAX_ERRORS]))
    config = dataclasses.replace(config, path=path)
    _check_references(config)
    _check_encoded(config, raw, variables)
    return config


MAX_ERRORS = 20
"""At most this many configuration errors are reported at once."""

_COLLECTED: contextvars.ContextVar[list[ConfigError] | None] = contextvars.ContextVar("collected", default=None)


class _Abandoned(ConfigError):
    """A table or array with errors (recorded already) that cannot be built: its parent skips it too."""


def _record(exc: ConfigError) -> None:
    """Keep ``exc`` with the others when :func:`parse_config` collects them all; else raise it at once."""
    found = _COLLECTED.get()
    if found is None:
        raise exc
    if not isinstance(exc, _Abandoned):
        found.append(exc)


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
            raise ConfigError(f"{at}: expected an array, got {type_name(value)}")
        (item,) = typing.get_args(tp)[:1]
        items, failed = [], False
        for i, v in enumerate(value):
            try:
                items.append(_convert(v, item, path, f"{where}[{i}]"))
            except ConfigError as exc:
                _record(exc)
                failed = True
        if failed:
            raise _Abandoned()
        return tuple(items)
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a table, got {type_name(value)}")
        _, item = typing.get_args(tp)
        out = {}
        broken = False
        for k, v in value.items():
            if item is str and isinstance(v, (int, float, bool)) and not isinstance(v, bool):
                v = str(v)  # build args like PYTHON_VERSION = 3.12 are meant as strings
            try:
                out[k] = _convert(v, item, path, dotted(where, k))
            except ConfigError as exc:
                _record(exc)
                broken = True
        if broken:
            raise _Abandoned()
        return types.MappingProxyType(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: expected a boolean, got {type_name(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{at}: expected an integer, got {type_name(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}: expected a string, got {type_name(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in the definitions above


def _convert_tagged(value: Any, members: tuple[Any, ...], path: Path, where: str) -> Any:
    at = f"{path}: {where}"
    if not isinstance(value, dict):
        raise ConfigError(f"{at}: expected a table, got {type_name(value)}")
    by_tag = {typing.get_args(fields_of(m)["type"][1])[0]: m for m in members}
    kind = value.get("type")
    if kind is None:
        raise ConfigError(f"{at}.type: missing (one of {', '.join(repr(k) for k in by_tag)})")
    if not isinstance(kind, str) or kind not in by_tag:
        hint = suggest(kind, by_tag) if isinstance(kind, str) else ""
        raise ConfigError(f"{at}.type: {kind!r} is not one of {', '.join(repr(k) for k in by_tag)}{hint}")
    return _convert_table(value, by_tag[kind], path, where)


def _convert_table(value: Any, cls: type[Any], path: Path, where: str) -> Any:
    at = f"{path}: {where or '(top level)'}"
    if not isinstance(value, dict):
        raise ConfigError(f"{at}: expected a table, got {type_name(value)}")
    known = fields_of(cls)
    failed = False
    misspelt: set[str] = set()
    for key in value:
        if key not in known:
            gone = REMOVED.get((cls.__name__, key))
            if gone:
                _record(ConfigError(f"{path}: {dotted(where, key)}: {gone}"))
            else:
                _record(ConfigError(f"{path}: {dotted(where, key)}: unknown key{suggest(key, known)}"))
                misspelt.update(difflib.get_close_matches(key, list(known), n=1))
            failed = True
    kwargs = {}
    for name, (f, tp) in known.items():
        if name not in value:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in misspelt:  # "servics: did you mean 'services'?" says it already
                _record(ConfigError(f"{path}: {dotted(where, name)}: missing (required)"))
            failed = failed or required
            continue
        try:
            converted = _convert(value[name], tp, path, dotted(where, name))
            _check_limits(converted, f, path, dotted(where, name))
        except ConfigError as exc:
            _record(exc)
            failed = True
            continue
        kwargs[name] = converted
    if failed:
        raise _Abandoned()
    return cls(**kwargs)


#: Keys earlier releases accepted, and what to do about them.
REMOVED = {
    ("S3Cache", "local_dir"): "no longer used (the S3 store keeps no local blob pool: BuildKit reads S3 lazily); "
    "remove it",
}


def _check_limits(value: Any, f: dataclasses.Field[Any], path: Path, where: str) -> None:
    if isinstance(value, str) and len(value) < f.metadata.get("min_length", 0):
        raise ConfigError(f"{path}: {where}: must not be empty")
    if isinstance(value, str) and "pattern" in f.metadata and not re.fullmatch(f.metadata["pattern"], value):
        raise ConfigError(f"{path}: {where}: {value!r} is not of the form {f.metadata.get('form', 'expected')}")
    if isinstance(value, int) and value < f.metadata.get("minimum", value):
        raise ConfigError(f"{path}: {where}: must be at least {f.metadata['minimum']}")
    if isinstance(value, Mapping) and len(value) < f.metadata.get("min_properties", 0):
        raise ConfigError(f"{path}: {where}: must not be empty")


_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_login(host: str, login: RegistryLogin, path: Path) -> None:
    """A registry entry logs in with a user name and password, or (an ECR host, ``ecr = true``) with a token."""
    where = f"registries.{host}"
    if login.ecr and login.password is not None:
        raise ConfigError(f"{path}: {where}.ecr: an entry with a password does not log in with an ECR token")
    if token_registry(host, login) is None:
        if login.password is None:
            raise ConfigError(
                f"{path}: {where}.password: missing (required; only an ECR host, or ecr = true, logs in without "
                "one, with a token from the AWS credential chain)"
            )
        if login.username is None:
            raise ConfigError(f"{path}: {where}.username: missing (required with a password)")
        for key in ("region", "profile", "endpoint_url"):
            if getattr(login, key) is not None:
                raise ConfigError(f"{path}: {where}.{key}: only for ECR token logins (an ECR host without a password)")
        return
    if login.username not in (None, ECR_USERNAME):
        raise ConfigError(f"{path}: {where}.username: an ECR token logs in as '{ECR_USERNAME}' (leave it out)")
    if login.endpoint_url and not re.match(r"https?://[^/]+", login.endpoint_url):
        raise ConfigError(f"{path}: {where}.endpoint_url: not an http(s) URL: {login.endpoint_url!r}")


def _check_references(config: Config) -> None:
    """Checks across keys: names, references between tables, combinations that cannot work."""
    path = config.path
    for name, store in config.caches.items():
        if not _SERVICE_NAME.fullmatch(name):
            raise ConfigError(f"{path}: caches.{name}: invalid store name (letters, digits, '_', '.', '-')")
        if isinstance(store, S3Cache):
            if store.native and config.builder.driver not in ("docker-container", "remote", "kubernetes"):
                raise ConfigError(
                    f"{path}: caches.{name}.native: BuildKit's s3 cache needs builder.driver 'docker-container', "
                    f"'remote' or 'kubernetes' (this builder: '{config.builder.driver}')"
                )
            if not store.native and not store.listen and config.builder.driver in ("remote", "kubernetes"):
                raise ConfigError(
                    f"{path}: caches.{name}: a '{config.builder.driver}' builder cannot reach this agent's loopback, "
                    f"where the S3 store serves BuildKit; set caches.{name}.listen to an address the builder "
                    f"reaches (HOST:PORT), or native = true"
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
                f"the tag comes from caches.{name}.tag"
            )
    for host, login in config.registries.items():
        if "/" in host or not host:
            raise ConfigError(f"{path}: registries.{host}: give a registry host (and port), not a repository")
        _check_login(host, login, path)
    builder = config.builder
    if builder.driver == "remote" and not builder.endpoint:
        raise ConfigError(f"{path}: builder.endpoint: required with driver 'remote' (e.g. tcp://buildkitd:1234)")
    if builder.driver == "docker" and builder.ephemeral:
        raise ConfigError(f"{path}: builder.ephemeral: the 'docker' driver cannot create builders")
    helper = config.settings.cache_mounts_image
    problem = reference_problem(helper)
    if problem:
        raise ConfigError(f"{path}: settings.cache_mounts_image: {helper!r} is not a valid image reference: {problem}")
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
        _check_platforms(svc.platforms, path, f"{where}.platforms")
        if svc.skip_unchanged and not svc.image:
            raise ConfigError(
                f"{path}: {where}.skip_unchanged: needs {where}.image "
                "(a skipped build retags the image it pushed before)"
            )
        _check_matrix(svc, path, where)
        _check_secrets(svc, path, where)
        _check_image_metadata(svc, path, where)


_LABEL_KEY_PROBLEM = re.compile(r"[=\s\x00-\x1f\x7f]")


def _check_image_metadata(svc: ServiceConfig, path: Path, where: str) -> None:
    for key in svc.labels:
        bad = _LABEL_KEY_PROBLEM.search(key)
        if not key:
            raise ConfigError(f"{path}: {where}.labels: a label key must not be empty")
        if bad:
            what = "'='" if bad.group() == "=" else "space or control character"
            raise ConfigError(f"{path}: {dotted(f'{where}.labels', key)}: a label key may hold no {what}")
    for name in ("provenance", "sbom"):
        if getattr(svc, name) is not None and not svc.image:
            raise ConfigError(
                f"{path}: {where}.{name}: attestations go with pushed images; set {where}.image, or remove it"
            )


def _check_provenance_values(raw: Mapping[str, Any], path: Path) -> None:
    """``provenance = true`` is how buildx and build-push-action spell it; say what to write instead."""
    tables = [("settings", raw.get("settings"))]
    services = raw.get("services")
    if isinstance(services, dict):
        tables += [(dotted("services", n), t) for n, t in services.items()]
    for where, table in tables:
        value = table.get("provenance") if isinstance(table, dict) else None
        if isinstance(value, bool):
            meant = "'min'" if value else "'off'"
            raise ConfigError(
                f"{path}: {where}.provenance: write 'off', 'min' or 'max', not {str(value).lower()} (here: {meant})"
            )


_SECRET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_secret_names(raw: Mapping[str, Any], path: Path) -> None:
    """A secret's ``env`` names a variable BuildKit reads: interpolated, it would put the value itself in the
    configuration (and in any message about it)."""
    services = raw.get("services")
    for name, svc in services.items() if isinstance(services, dict) else ():
        secrets = svc.get("secrets") if isinstance(svc, dict) else None
        for key, secret in secrets.items() if isinstance(secrets, dict) else ():
            env = secret.get("env") if isinstance(secret, dict) else None
            if isinstance(env, str) and "$" in env:
                raise ConfigError(
                    f"{path}: {dotted(dotted(dotted('services', name), 'secrets'), key)}.env: give the variable's "
                    'name (env = "NPM_TOKEN"), not ${...}: BuildKit reads the value from the environment itself'
                )


def _check_secrets(svc: ServiceConfig, path: Path, where: str) -> None:
    """Secret ids and ssh entries go into bake's ``secret`` and ``ssh`` fields, which buildx splits on ``,``
    and ``=``."""
    for key, secret in svc.secrets.items():
        at = dotted(f"{where}.secrets", key)
        if not _SECRET_ID.fullmatch(key):
            raise ConfigError(f"{path}: {at}: invalid secret id (letters, digits, '_', '.', '-')")
        if (secret.env is None) == (secret.file is None):
            raise ConfigError(f"{path}: {at}: give exactly one of env (a variable's name) or file (a path)")
    for i, entry in enumerate(svc.ssh):
        ident, _, target = entry.partition("=")
        if not _SECRET_ID.fullmatch(ident):
            raise ConfigError(
                f"{path}: {where}.ssh[{i}]: {entry!r} is not 'default', an id or 'ID=PATH' "
                "(ids: letters, digits, '_', '.', '-')"
            )
        if "=" in entry and (not target or re.search(r"[,\x00-\x1f\x7f]", target)):
            raise ConfigError(f"{path}: {where}.ssh[{i}]: {entry!r}: give one path, without commas, after '='")
    ids = [e.partition("=")[0] for e in svc.ssh]
    twice = next((i for i in ids if ids.count(i) > 1), None)
    if twice:
        raise ConfigError(f"{path}: {where}.ssh: id '{twice}' is given twice")


def _check_matrix(svc: ServiceConfig, path: Path, where: str) -> None:
    """Every variant must have an id of its own (its name, bake target, tags and cache refs come from it)."""
    _check_template(svc.variant_tag, ("tag", "variant"), path, f"{where}.variant_tag")
    if not svc.matrix:
        return
    if "{variant}" not in svc.variant_tag:
        raise ConfigError(
            f"{path}: {where}.variant_tag: {svc.variant_tag!r} has no {{variant}}: every variant would push the "
            "same tags"
        )
    for axis, values in svc.matrix.items():
        at = dotted(f"{where}.matrix", axis)
        if not axis:
            raise ConfigError(f"{path}: {at}: a build argument needs a name")
        if not values:
            raise ConfigError(f"{path}: {at}: must not be empty (give the build argument's values)")
        twice = next((v for v in values if values.count(v) > 1), None)
        if twice is not None:
            raise ConfigError(f"{path}: {at}: value {twice!r} is listed twice")
    seen: dict[str, dict[str, str]] = {}
    for variant, args in matrix_variants(svc):
        if variant in seen:
            first, second = (", ".join(f"{k}={v}" for k, v in m.items()) for m in (seen[variant], args))
            raise ConfigError(
                f"{path}: {where}.matrix: variants {first} and {second} have the same id '{variant}' (values are "
                "joined with '-'); change a value"
            )
        seen[variant] = args


_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")


def _check_platforms(platforms: Sequence[str], path: Path, where: str) -> None:
    """``os/arch[/variant]``, each once (as ``--platform`` takes them; ``linux/arm64/v8``)."""
    for i, platform in enumerate(platforms):
        if not _PLATFORM.fullmatch(platform):
            raise ConfigError(
                f"{path}: {where}[{i}]: {platform!r} is not a platform (os/arch[/variant], e.g. linux/arm64)"
            )
        if platform in platforms[:i]:
            raise ConfigError(f"{path}: {where}[{i}]: {platform!r} is listed twice")


def _check_template(template: str, names: tuple[str, ...], path: Path, where: str) -> None:
    for field_name in re.findall(r"\{([^{}]*)\}", template):
        if field_name not in names:
            raise ConfigError(
                f"{path}: {where}: unknown placeholder {{{field_name}}}{suggest(field_name, names)}"
                f" (placeholders: {', '.join('{' + n + '}' for n in names)})"
            )


Key = tuple[str | int, ...]
"""A key's place in the document: table names and array indexes (``("caches", "c", "extra_from", 0)``)."""


def _check_encoded(config: Config, raw: Mapping[str, Any], variables: Mapping[str, str]) -> None:
    """Refs, tags and snapshot keys go into cache attributes (CSV, as buildx reads them) and image names: one
    that would not be read as written is refused, naming the key and the variable it came from. Paths are
    quoted where they are encoded instead (:mod:`dockercache.stores.entry`)."""

    def refuse(key: Key, value: str, shown: str, problem: str) -> ConfigError:
        origin = _origin(raw, key, variables, value)
        return ConfigError(f"{config.path}: {_dotted_key(key)}: {shown}{': ' if problem else ''}{problem}{origin}")

    users: dict[str, list[str]] = {}
    for name, svc in config.services.items():
        users.setdefault(default_cache_name(config, svc) or "", []).append(name)
    for name, store in config.caches.items():
        if isinstance(store, RegistryCache):
            for service in users.get(name) or ["service"]:
                ref = _fill(store.ref, service=service)
                problem = repository_problem(ref)
                if problem:
                    shown = f"{ref!r}" + (f" (for service '{service}')" if "{service}" in store.ref else "")
                    raise refuse(("caches", name, "ref"), ref, f"{shown} is not a valid cache repository", problem)
                for i, extra in enumerate(store.extra_from):
                    filled = _fill(extra, service=service, stage="stage")
                    problem = reference_problem(filled)
                    if problem:
                        key: Key = ("caches", name, "extra_from", i)
                        raise refuse(key, filled, f"{filled!r} is not a valid image reference", problem)
            unsafe = unsafe_character(store.tag)
            if unsafe:
                raise refuse(
                    ("caches", name, "tag"),
                    store.tag,
                    f"{store.tag!r} cannot be a cache tag",
                    f"{unsafe} is not allowed",
                )
        if isinstance(store, S3Cache):
            for i, template in enumerate((store.key, *store.cache_from)):
                key = ("caches", name, "key") if i == 0 else ("caches", name, "cache_from", i - 1)
                unsafe = unsafe_character(template)
                if unsafe:
                    raise refuse(key, template, f"{template!r} cannot be a snapshot key", f"{unsafe} is not allowed")
    for name, svc in config.services.items():
        if svc.image is not None:
            problem = repository_problem(svc.image)
            if problem:
                raise refuse(
                    ("services", name, "image"), svc.image, f"{svc.image!r} is not a valid image repository", problem
                )
        for i, tag in enumerate(svc.tags):
            if not TAG.fullmatch(tag):
                raise refuse(("services", name, "tags", i), tag, f"{tag!r} is not a valid image tag", _tag_rule(tag))
        for axis, values in svc.matrix.items():
            for i, value in enumerate(values):
                if not _TAG_PART.fullmatch(value):
                    raise refuse(
                        ("services", name, "matrix", axis, i),
                        value,
                        f"{value!r} cannot be part of an image tag (a variant's id goes into its tags)",
                        _tag_rule(value) or "letters, digits, '_', '.' and '-' only",
                    )
        if svc.matrix:
            longest = max((v for v, _ in matrix_variants(svc)), key=len)
            for tag in svc.tags or ("0123456789ab",):  # the default tag: the commit, 12 characters
                filled = _fill(svc.variant_tag, tag=tag, variant=longest)
                if not TAG.fullmatch(filled):
                    raise refuse(
                        ("services", name, "variant_tag"),
                        filled,
                        f"{svc.variant_tag!r} does not make a valid image tag ({filled!r})",
                        _tag_rule(filled) or "at most 128 characters",
                    )
        example = _fill(svc.stage_tag, stage="stage", tag="tag")
        if not TAG.fullmatch(example):
            raise refuse(
                ("services", name, "stage_tag"),
                example,
                f"{svc.stage_tag!r} does not make a valid image tag ({example!r})",
                _tag_rule(example),
            )


_TAG_PART = re.compile(r"[A-Za-z0-9_.-]+")
"""What a matrix value may be: characters of an image tag (a variant's id goes into its tags and cache refs)."""


def _tag_rule(tag: str) -> str:
    unsafe = unsafe_character(tag)
    return f"{unsafe} is not allowed" if unsafe else ""


def _fill(template: str, **values: str) -> str:
    """A template's placeholders filled in (unknown ones and stray braces stay, to fail the check after)."""
    return re.sub(r"\{([a-z]+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _dotted_key(key: Key) -> str:
    where = ""
    for part in key:
        where = f"{where}[{part}]" if isinstance(part, int) else dotted(where, part)
    return where


def _origin(raw: Mapping[str, Any], key: Key, variables: Mapping[str, str], value: str) -> str:
    """`` (from ${VAR})``: the variables in the key's raw text that brought what is wrong with ``value``
    (every variable it uses when that cannot be told)."""
    text: Any = raw
    for part in key:
        try:
            text = text[part]
        except (KeyError, IndexError, TypeError):
            return ""
    if not isinstance(text, str):
        return ""
    used = variables_used(text, variables)
    if unsafe_character(value):
        names = [n for n, v in used.items() if unsafe_character(v)]
    elif value != value.lower():
        names = [n for n, v in used.items() if v != v.lower()]
    else:
        names = list(used)
    return f" (from {', '.join('${' + n + '}' for n in names)})" if names else ""
