"""The one thing that travels between the plan, the stores and BuildKit: a typed cache entry.

A ``CacheEntry`` is one ``cache-from`` or ``cache-to`` value: a BuildKit cache backend type (``registry``,
``local``, ``s3``) and its attributes, in order. :meth:`CacheEntry.encode` is the only encoder: the bake file,
the printed plan and ``--json`` all show the same text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config.caches import CacheStore

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


@dataclass(frozen=True)
class StoreStep:
    """A store's own work for one target before and after the run (a subclass per store kind)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [str(v) for v in value]
            elif value is not None and not isinstance(value, (str, int, bool)):
                value = str(value)
            out[f.name] = value
        return out

    def summary(self) -> list[tuple[str, str]]:
        """Lines for the printed plan: (label, text)."""
        return []


@dataclass(frozen=True)
class TargetCaches:
    """A store's plan for one target."""

    kind: str
    """The store kind that made it (and whose runtime carries it out)."""
    store: str
    """The configured store's name (``built-in local`` when dockercache.toml names none)."""
    sources: tuple[CacheEntry, ...] = ()
    sink: CacheEntry | None = None
    refused: str | None = None
    """Why this target writes no cache although writes are on (an untrusted branch and a shared ref)."""
    step: StoreStep | None = None
    config: CacheStore | None = field(default=None, repr=False, compare=False)
    """The store's configuration, for its runtime."""
