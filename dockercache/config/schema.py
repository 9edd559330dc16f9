"""The JSON Schema of dockercache.toml, generated from the configuration dataclasses.

``config/dockercache.schema.json`` is this function's output (``invoke schema`` rewrites it); a test keeps
the two identical, so editors validate exactly what the loader accepts.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

from .fields import fields_of, union_members
from .model import Config

SCHEMA_ID = "https://dockercache.dev/schema/dockercache.schema.json"


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    members = union_members(tp)
    if members is not None:
        rest = [m for m in members if m is not type(None)]
        if len(rest) == 1:
            return _type_schema(rest[0], defs)
        return {"oneOf": [_type_schema(m, defs) for m in rest]}
    origin = typing.get_origin(tp)
    if origin is Literal:
        values = list(typing.get_args(tp))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if dataclasses.is_dataclass(tp):
        assert isinstance(tp, type)
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = _table_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    if origin in (tuple, list):
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], defs)}
    if origin in (Mapping, dict):
        _, item = typing.get_args(tp)
        value = _type_schema(item, defs)
        if item is str:  # numbers are accepted for build args and turned into strings
            value = {"type": ["string", "number"]}
        return {"type": "object", "additionalProperties": value}
    return {str: {"type": "string"}, bool: {"type": "boolean"}, int: {"type": "integer"}}[tp]


def _table_schema(cls: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for name, (f, tp) in fields_of(cls).items():
        prop = _type_schema(tp, defs)
        if "doc" in f.metadata:
            prop = {"description": f.metadata["doc"], **prop}
        if "min_length" in f.metadata:
            prop["minLength"] = f.metadata["min_length"]
        if "minimum" in f.metadata:
            prop["minimum"] = f.metadata["minimum"]
        if "pattern" in f.metadata:
            prop["pattern"] = f.metadata["pattern"]
        if "min_properties" in f.metadata:
            prop["minProperties"] = f.metadata["min_properties"]
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, (str, bool, int)) and not isinstance(default, type):
            prop["default"] = default
        properties[name] = prop
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema = {"description": cls.__doc__.strip().splitlines()[0], **schema}
    if required:
        schema["required"] = required
    return schema


def build_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _table_schema(Config, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "dockercache.toml",
        **root,
        "$defs": dict(sorted(defs.items())),
    }
