"""The one thing that travels between the plan, the stores and BuildKit: a typed cache entry.

A ``CacheEntry`` is one ``cache-from`` or ``cache-to`` value: a BuildKit cache backend type (``registry``,
``local``, ``s3``) and its attributes, in order. :meth:`CacheEntry.encode` is the only encoder: the bake file,
the printed plan and ``--json`` all show the same text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The attribute that says where an entry points, by backend type (what a person wants to see first).
_LOCATION = ("ref", "src", "dest", "name")


def _csv_field(text: str) -> str:
    """One field as Go's encoding/csv writes it, which is how buildx reads cache entries back."""
    if any(c in text for c in ',"\r\n') or text[:1].isspace():
        return '"' + text.replace('"', '""') + '"'
    return text


@dataclass(frozen=True)
class CacheEntry:
    """A BuildKit cache import or export: ``type=registry,ref=...,mode=max``."""

    type: str
    attrs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(cls, type_: str, attrs: Mapping[str, str] | None = None, **more: str) -> CacheEntry:
        merged = {**(attrs or {}), **more}
        return cls(type_, tuple((k, str(v)) for k, v in merged.items()))

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.attrs if k == key), None)

    def with_attrs(self, **attrs: str) -> CacheEntry:
        merged = dict(self.attrs)
        merged.update(attrs)
        return CacheEntry(self.type, tuple(merged.items()))

    @property
    def location(self) -> str:
        """Where the entry points: a registry ref, a directory, or an S3 cache name."""
        for key in _LOCATION:
            value = self.get(key)
            if value is not None:
                return value
        return self.encode()

    def encode(self) -> str:
        """``type=registry,ref=...``: the form of ``--cache-from``/``--cache-to`` and of bake's lists."""
        return ",".join(_csv_field(f"{k}={v}") for k, v in (("type", self.type), *self.attrs))

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **dict(self.attrs)}

    def __str__(self) -> str:
        return self.encode()
