"""``${VAR}`` expansion in dockercache.toml values, as Compose does it (``${VAR:-default}``, ``$VAR``, ``$$``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import dotted
from .errors import ConfigError

_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<escaped>\$))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate_tree(value: Any, variables: Mapping[str, str], path: Path, where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables, f"{path}: {where or 'value'}")
    if isinstance(value, dict):
        return {k: interpolate_tree(v, variables, path, dotted(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, variables, path, f"{where}[{i}]") for i, v in enumerate(value)]
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
