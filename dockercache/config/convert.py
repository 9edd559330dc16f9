"""A TOML document turned into the model's dataclasses, strictly: types, literals, required and unknown keys
(with a "did you mean"), removed keys and per-field limits, all read from the dataclasses' type hints and field
metadata (:mod:`dockercache.config.fields`).

Errors are collected rather than raised one by one: :func:`convert_document` reports up to :data:`MAX_ERRORS`
of them in one :class:`ConfigError`, each naming the file and the dotted key.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ConfigError
from .fields import dotted, fields_of, suggest, type_name, union_members
from .model import Config

MAX_ERRORS = 20
"""At most this many configuration errors are reported at once."""


_COLLECTED: contextvars.ContextVar[list[ConfigError] | None] = contextvars.ContextVar("collected", default=None)


class _Abandoned(ConfigError):
    """A table or array with errors (recorded already) that cannot be built: its parent skips it too."""


def _record(exc: ConfigError) -> None:
    """Keep ``exc`` with the others when :func:`convert_document` collects them all; else raise it at once."""
    found = _COLLECTED.get()
    if found is None:
        raise exc
    if not isinstance(exc, _Abandoned):
        found.append(exc)


def convert_document(document: Mapping[str, Any], path: Path) -> Config:
    """``document`` (interpolated) as a :class:`Config`; a ConfigError with up to :data:`MAX_ERRORS` of its
    errors when it does not fit the model."""
    found: list[ConfigError] = []
    token = _COLLECTED.set(found)
    try:
        config: Config = _convert(document, Config, path, "")
    except _Abandoned:
        pass
    finally:
        _COLLECTED.reset(token)
    if found:
        raise ConfigError(str(found[0]), more=tuple(found[1:MAX_ERRORS]))
    return config


def _convert(value: Any, tp: Any, path: Path, where: str) -> Any:
    """``value`` checked against the type hint ``tp`` and built into it (``where``: its dotted key)."""
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
            raise ConfigError(f"{path}: {where or '(top level)'}: {value!r} is not one of {options}{hint}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_table(value, tp, path, where)
    if origin in (tuple, list):
        return _convert_array(value, tp, path, where)
    if origin in (Mapping, dict) or tp is Mapping:
        return _convert_mapping(value, tp, path, where)
    return _convert_scalar(value, tp, f"{path}: {where or '(top level)'}")


def _convert_array(value: Any, tp: Any, path: Path, where: str) -> tuple[Any, ...]:
    """An array as a tuple of its items, each converted (all of their errors recorded)."""
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {where or '(top level)'}: expected an array, got {type_name(value)}")
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


def _convert_mapping(value: Any, tp: Any, path: Path, where: str) -> Mapping[str, Any]:
    """A table of free keys as a read-only mapping, each value converted (all of their errors recorded)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where or '(top level)'}: expected a table, got {type_name(value)}")
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


def _convert_scalar(value: Any, tp: Any, at: str) -> Any:
    """A boolean, integer or string, as it is (``at``: the file and key to name)."""
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
