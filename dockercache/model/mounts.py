"""The cache mounts of a plan: a Dockerfile's ``RUN --mount=type=cache`` directories, where a service's
archives of them are restored from and saved to (made by :mod:`dockercache.planning.mounts`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from .entry import _csv_field


@dataclass(frozen=True)
class CacheMount:
    """One cache of a Dockerfile: BuildKit keys it by id and, when set, uid, gid and mode."""

    id: str
    target: str
    stage: str
    """The stage where it is first mounted."""
    uid: str | None = None
    gid: str | None = None
    mode: str | None = None

    @property
    def file(self) -> str:
        """The archive's name: stable for the same cache whatever the Dockerfile's order."""
        identity = json.dumps([self.id, self.uid, self.gid, self.mode])
        return f"m-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.tar"

    def mount(self, target: str) -> str:
        """``--mount=...`` of this cache at ``target`` (the same id, uid, gid and mode: the same cache)."""
        parts = ["type=cache", f"id={self.id}", f"target={target}"]
        parts += [f"{k}={v}" for k, v in (("uid", self.uid), ("gid", self.gid), ("mode", self.mode)) if v is not None]
        return "--mount=" + ",".join(_csv_field(p) for p in parts)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None} | {"file": self.file}


Kind = Literal["registry", "local", "s3"]


@dataclass(frozen=True)
class Place:
    """Where one branch's archives of a service live: a registry ref, a local directory, or an S3 snapshot
    (``key``: its snapshot key; ``location`` is then the index's object URL; ``branch`` is empty for a
    ``cache_from`` key)."""

    branch: str
    location: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.location} (branch {self.branch})" if self.branch else self.location

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class MountsPlan:
    """A service's cache mounts: which, where they are restored from (in order) and saved to."""

    service: str
    kind: Kind | None
    """The store kind keeping them (None: this store cannot keep them; see :attr:`no_save`)."""
    mounts: tuple[CacheMount, ...]
    image: str
    max_bytes: int
    restore_from: tuple[Place, ...] = ()
    save_to: Place | None = None
    no_save: str | None = None
    """Why nothing is saved (cache writes off, a store that cannot keep them)."""
    notes: tuple[str, ...] = ()
    store: str = ""
    """The cache store's name (an S3 store's mounts go through that store's endpoint)."""
    stages: tuple[str, ...] = ()
    """The stages whose ``RUN`` steps mount these caches."""

    def to_json(self) -> dict[str, Any]:
        return {
            "mounts": [m.to_json() for m in self.mounts],
            "store": self.kind,
            "image": self.image,
            "max_mb": self.max_bytes // (1 << 20),
            "restore_from": [p.to_json() for p in self.restore_from],
            "save_to": self.save_to.to_json() if self.save_to else None,
            "no_save": self.no_save,
            "notes": list(self.notes),
        }

    def summary(self) -> list[str]:
        """Lines for the printed plan."""
        found = ", ".join(f"{m.id} ({m.stage})" for m in self.mounts) or "none found"
        lines = [f"cache mounts: {found}"]
        lines += [f"  {'restore from:' if i == 0 else '':<13} {p}" for i, p in enumerate(self.restore_from)]
        if self.save_to:
            lines.append(f"  {'save to:':<13} {self.save_to} (after a successful build)")
        elif self.no_save:
            lines.append(f"  {'no save:':<13} {self.no_save}")
        lines += [f"  {'note:':<13} {n}" for n in self.notes]
        return lines
