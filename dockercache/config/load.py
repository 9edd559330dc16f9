"""Finding dockercache.toml, reading it, and checking it strictly against the model in :mod:`dockercache.config.model`.

Two steps, as pypa/build reads pyproject.toml: :func:`load_config` turns I/O and TOML errors into one-line
messages; :func:`parse_config` refuses what must not be interpolated (literal passwords, ``${...}`` secret
names), interpolates variables, then checks types, required and unknown keys (with a "did you mean",
:mod:`dockercache.config.convert`), the references between tables (:mod:`dockercache.config.references`) and
the values encoded into cache attributes and image names (:mod:`dockercache.config.encoded`). Every failure is
a :class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .convert import convert_document
from .encoded import check_encoded
from .fields import dotted
from .interpolate import interpolate_tree
from .model import CONFIG_NAME, ENV_CONFIG, Config
from .references import check_references

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
    _check_password_values(raw, path)
    _check_secret_names(raw, path)
    _check_provenance_values(raw, path)
    expanded = interpolate_tree(raw, variables, path, "")
    config = dataclasses.replace(convert_document(expanded, path), path=path)
    check_references(config)
    check_encoded(config, raw, variables)
    return config


def _check_password_values(raw: Mapping[str, Any], path: Path) -> None:
    """A registry password is written as ``${VARIABLE}``, never literally (the file is committed)."""
    registries = raw.get("registries")
    if isinstance(registries, dict):
        for host, login in registries.items():
            password = login.get("password") if isinstance(login, dict) else None
            if isinstance(password, str) and password and not re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", password):
                raise ConfigError(
                    f"{path}: registries.{host}.password: write it as ${{VARIABLE}}; a password in the file "
                    "would be committed with it"
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
