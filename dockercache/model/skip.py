"""What the plan says of skip-unchanged: whether a service may be skipped, and what a walk of its context found
(the key itself is computed when building, by :mod:`dockercache.planning.skip`); and :class:`Unavailable`, raised
by the planner and the runner alike when no key can be computed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

TAG_PREFIX = "dc-"


class Unavailable(Exception):
    """No key can be computed (the service is built): the reason, one line."""


@dataclass(frozen=True)
class Entry:
    """One path of the context as the transfer sends it."""

    path: str
    kind: Literal["dir", "file", "symlink", "hardlink", "other"]
    mode: int
    """Permission bits (with setuid, setgid, sticky)."""
    size: int = 0
    link: str = ""
    """A symlink's target; a hard link's first path in the context; a device's number."""


@dataclass(frozen=True)
class ContextScan:
    """What a walk of the context found (stat only: contents are read when the key is computed)."""

    root: Path
    dockerfile: Path
    dockerfile_bytes: bytes
    ignore_file: Path | None
    patterns: tuple[str, ...]
    entries: tuple[Entry, ...]

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind == "file")

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "file")

    @property
    def dockerfile_text(self) -> str:
        return self.dockerfile_bytes.decode("utf-8", errors="replace")

    def summary(self) -> dict[str, Any]:
        return {
            "context": str(self.root),
            "dockerfile": str(self.dockerfile),
            "ignore_file": str(self.ignore_file) if self.ignore_file else None,
            "ignore_patterns": len(self.patterns),
            "files": self.files,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class SkipSetting:
    """Whether a service may be skipped, why (not), and what its key will cover (the plan's part)."""

    enabled: bool
    reason: str
    scan: ContextScan | None = None
    bases: tuple[str, ...] = ()
    """Image references to resolve when building (their digests are not known to the plan)."""
    args: tuple[str, ...] = ()
    """Build argument names (their values count in the key, but are never shown)."""

    def describe(self) -> str:
        """One line for ``plan``."""
        if not self.enabled or self.scan is None:
            return self.reason
        images = f"; base images {', '.join(self.bases)}" if self.bases else ""
        return (
            f"{self.reason}: key over the Dockerfile, {self.scan.files} files ({self.scan.bytes:,} bytes) of the "
            f"context, {len(self.args)} build args{images}; an image tagged {TAG_PREFIX}<key> is retagged, not built"
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": self.enabled, "reason": self.reason}
        if self.enabled and self.scan is not None:
            out["inputs"] = {
                **self.scan.summary(),
                "args": list(self.args),
                "base_images": [{"ref": ref, "digest": None} for ref in self.bases],
            }
        return out
