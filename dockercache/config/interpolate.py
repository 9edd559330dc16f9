"""``${VAR}`` expansion in dockercache.toml values, as Compose does it (``${VAR:-default}``, ``$VAR``, ``$$``).

A default may itself hold variables, nested as Compose allows (``${TAG:-${BUILDKITE_COMMIT}}``); it is only
expanded when it is used, so an undefined variable inside an unused default is no error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .fields import dotted

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
    """Expand ``${VAR}``, ``${VAR:-default}`` (the default may hold variables), ``$VAR`` and ``$$`` (a
    literal dollar)."""
    return _Expansion(text, variables, where).run()


def variables_used(text: str, variables: Mapping[str, str]) -> dict[str, str]:
    """The variables whose values ``text`` expands to (in order, each once): where a value came from.

    A variable whose default is used instead (unset or empty) is not among them; the default's are.
    """
    expansion = _Expansion(text, variables, "")
    expansion.run()
    return expansion.used


class _Expansion:
    """One left-to-right pass over a value; ``live`` is False inside a default that is not used."""

    def __init__(self, text: str, variables: Mapping[str, str], where: str) -> None:
        self.text, self.variables, self.where = text, variables, where
        self.pos = 0
        self.used: dict[str, str] = {}

    def run(self) -> str:
        return self._until(closing=False, live=True)

    def _until(self, closing: bool, live: bool) -> str:
        """Expand up to the end of the text, or (``closing``) up to the ``}`` that ends a default."""
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if closing and char == "}":
                self.pos += 1
                return "".join(out)
            if char != "$":
                out.append(char)
                self.pos += 1
                continue
            following = text[self.pos + 1 : self.pos + 2]
            if following == "$":
                out.append("$")
                self.pos += 2
            elif following == "{":
                start = self.pos
                self.pos += 2
                out.append(self._braced(start, live))
            else:
                name = _NAME.match(text, self.pos + 1)
                if name is None:
                    out.append("$")  # a lone dollar (``$5``, a trailing ``$``) stays as it is
                    self.pos += 1
                    continue
                self.pos = name.end()
                out.append(self._lookup(name.group(), live))
        if closing:
            raise self._unterminated()
        return "".join(out)

    def _braced(self, start: int, live: bool) -> str:
        """``${NAME}`` or ``${NAME:-default}``, from just after ``${``."""
        text = self.text
        name = _NAME.match(text, self.pos)
        end = name.end() if name else self.pos
        if name and text.startswith("}", end):
            self.pos = end + 1
            return self._lookup(name.group(), live)
        if name and text.startswith(":-", end):
            self.pos = end + 2
            value = self.variables.get(name.group()) if live else None
            if value:
                self.used.setdefault(name.group(), value)
            # Parsed even when the variable has a value: a broken default is an error either way.
            default = self._until(closing=True, live=live and not value)
            return value if value else default
        close = text.find("}", self.pos)
        if close < 0:
            raise self._unterminated()
        expr = text[start + 2 : close]
        raise ConfigError(
            f"{self.where}: invalid variable expression '${{{expr}}}' (use ${{NAME}} or ${{NAME:-default}})"
        )

    def _lookup(self, name: str, live: bool) -> str:
        if not live:
            return ""
        value = self.variables.get(name)
        if value is None:
            raise ConfigError(f"{self.where}: undefined variable ${{{name}}} (set it, or write ${{{name}:-default}})")
        self.used.setdefault(name, value)
        return value

    def _unterminated(self) -> ConfigError:
        return ConfigError(f"{self.where}: unterminated '${{' in {self.text!r}")
