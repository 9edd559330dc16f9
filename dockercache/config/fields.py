"""How the model's dataclasses describe their keys, and how the checker reads them back.

A field's metadata (:func:`doc`: its words for the JSON Schema and docs/configuration.md, and limits such as
``min_length``) is written where the field is defined; :func:`fields_of` and :func:`union_members` read the
type hints the generic checker (:mod:`dockercache.config.convert`) and the schema (:mod:`dockercache.config.schema`)
walk. :func:`dotted`, :func:`suggest` and :func:`type_name` word the messages about them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigError


def doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


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


Key = tuple[str | int, ...]
"""A key's place in the document: table names and array indexes (``("caches", "c", "extra_from", 0)``)."""


Refuse = Callable[[Key, str, str, str], ConfigError]
"""The error refusing a value: its key, the value, how to show it, and the problem (a variable's origin added)."""


def fill(template: str, **values: str) -> str:
    """A template's placeholders filled in (unknown ones and stray braces stay, to fail the check after)."""
    return re.sub(r"\{([a-z]+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def check_template(template: str, names: tuple[str, ...], path: Path, where: str) -> None:
    """Every ``{placeholder}`` of ``template`` is one of ``names``."""
    for field_name in re.findall(r"\{([^{}]*)\}", template):
        if field_name not in names:
            raise ConfigError(
                f"{path}: {where}: unknown placeholder {{{field_name}}}{suggest(field_name, names)}"
                f" (placeholders: {', '.join('{' + n + '}' for n in names)})"
            )
