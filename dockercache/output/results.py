"""What became of a run, as data: per stage (:class:`StageResult`), per service (:class:`ServiceResult`, with
its closing line and warnings), the whole run (:class:`RunResult`), and skip_unchanged's decision
(:class:`SkipReport`); each says itself as ``--json`` does (``to_json``). Shown by :mod:`.report` and
:mod:`.console`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .words import plural

if TYPE_CHECKING:
    from ..timeline import Timeline
    from .console import Console
    from .misses import Miss
    from .tally import StepCount


@dataclass
class StageResult:
    """What became of one bake target (a service's stage)."""

    service: str
    stage: str
    target: str | None
    final: bool
    name: str = ""
    """The bake target's name."""
    status: str = "pending"
    """ok | failed | cancelled (stopped because another target failed) | pending (never ran) | skipped (its
    service's inputs were unchanged: the image built from them was retagged)."""
    steps: dict[str, StepCount] = field(default_factory=dict)
    seconds: float = 0.0
    cache_warnings: list[str] = field(default_factory=list)
    cache_written: str | None = None
    kept: str | None = None
    """Why the cache its store held stays rather than this run's (it would restore less); None: written or not."""
    digest: str | None = None
    tags: tuple[str, ...] = ()
    pushed: bool = False
    error: str | None = None
    restored_from: str | None = None
    cache_read: list[str] = field(default_factory=list)
    """The cache refs its cached steps came from (:meth:`dockercache.output.tally.Tally.cache_read`); none without a
    hit."""
    shared_with: list[str] = field(default_factory=list)
    """The bake targets that count steps this stage shares with them (the same steps in another service's
    Dockerfile, solved once): counted there, not here."""
    s3_store: bool = False
    """Its cache store is an S3 store (set by that store): only then does ``--json`` carry an ``s3`` block."""
    s3_saved: str | None = None
    down_objects: int = 0
    """Blobs BuildKit fetched from S3 (redirects to presigned URLs) and their bytes."""
    down_bytes: int = 0
    s3_lookups: int = 0
    """Blob lookups (HEAD) answered from the bucket listing."""
    up_objects: int = 0
    up_bytes: int = 0
    exported: bool = False
    """BuildKit finished this target's cache export without error (stores then say what they wrote)."""
    miss: Miss | None = None
    """Its first step that did not come from cache, and why (:mod:`dockercache.run.records`)."""
    printed: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    """The cache warnings :meth:`warn` printed for this stage (a store may add others to ``cache_warnings``
    that it printed once for all the stages they concern)."""

    def warn(self, console: Console, message: str) -> None:
        """A cache warning of this stage: kept in the report (once) and printed at once."""
        if message not in self.cache_warnings:
            self.cache_warnings.append(message)
        self.printed.add(message)
        console.warn(f"{self.service}/{self.stage}: {message}")

    @property
    def cached(self) -> int:
        return sum(c.cached for c in self.steps.values())

    @property
    def total(self) -> int:
        return sum(c.total for c in self.steps.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "bake_target": self.name,
            "target": self.target,
            "final": self.final,
            "status": self.status,
            "steps_total": self.total,
            "steps_cached": self.cached,
            "seconds": round(self.seconds, 3),
            "dockerfile_stages": {
                k: {"total": v.total, "cached": v.cached, "seconds": round(v.seconds, 3)} for k, v in self.steps.items()
            },
            "cache_read": self.cache_read,
            "shared_steps_counted_in": self.shared_with,
            "cache_written": self.cache_written,
            "cache_kept": self.kept,
            "cache_warnings": self.cache_warnings,
            "s3": {
                "restored_from": self.restored_from,
                "saved": self.s3_saved,
                "down": {"objects": self.down_objects, "bytes": self.down_bytes, "lookups": self.s3_lookups},
                "up": {"objects": self.up_objects, "bytes": self.up_bytes},
            }
            if self.s3_store
            else None,  # a registry or local store: no S3 traffic to tell
            "image": {"tags": list(self.tags), "digest": self.digest, "pushed": self.pushed} if self.tags else None,
            "error": self.error,
            "miss": self.miss.to_json() if self.miss is not None else None,
        }


@dataclass
class SkipReport:
    """What skip_unchanged decided for a service: its key, and whether the build was skipped."""

    skipped: bool
    reason: str
    key: str | None = None
    tag: str | None = None
    """The tag that marks an image built from the key (``dc-<key>``)."""
    source: str | None = None
    """The image retagged (skipped) or to be found next time (built)."""
    files: int = 0
    bytes: int = 0
    bases: dict[str, str] = field(default_factory=dict)
    """Base image reference: the digest it resolved to."""
    digest: str | None = None
    """The digest of the image retagged."""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "skipped (unchanged)" if self.skipped else "built",
            "reason": self.reason,
            "key": self.key,
            "tag": self.tag,
            "source": self.source,
            "inputs": {"files": self.files, "bytes": self.bytes, "base_images": dict(self.bases)},
        }


@dataclass
class ServiceResult:
    name: str
    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0
    skip: SkipReport | None = None
    cache_mounts: dict[str, Any] | None = None
    """What cache_mounts restored and saved (:class:`dockercache.run.mounts.MountsReport`), when it is on."""

    @property
    def status(self) -> str:
        if any(s.status == "failed" for s in self.stages):
            return "failed"
        if self.stages and all(s.status == "skipped" for s in self.stages):
            return "skipped"
        return "ok" if all(s.status == "ok" for s in self.stages) else "incomplete"

    @property
    def succeeded(self) -> bool:
        """Built, or skipped because nothing changed: either way its images are in place."""
        return self.status in ("ok", "skipped")

    @property
    def final(self) -> StageResult | None:
        return next((s for s in self.stages if s.final), None)

    @property
    def warnings(self) -> list[tuple[list[str], str]]:
        """The service's warnings as its log printed them, each once, with the stages each concerns.

        The one count of a service's warnings (its closing line's, its annotation's). A stage's own warning
        (:meth:`StageResult.warn`, printed as ``service/stage: message``) is one per stage. A store's warning
        is printed once, in the store's words, and recorded in every stage it concerns (an S3 store that could
        not be opened, a save that S3 refused): one warning, of all those stages. Then the cache mounts' own.
        """
        found: dict[tuple[str | None, str], list[str]] = {}
        for s in self.stages:
            for message in s.cache_warnings:
                stages = found.setdefault((s.stage if message in s.printed else None, message), [])
                if s.stage not in stages:
                    stages.append(s.stage)
        out = [(stages, message) for (_, message), stages in found.items()]
        mounts = (self.cache_mounts or {}).get("warnings") or []
        return out + [([], str(message)) for message in dict.fromkeys(mounts)]

    def closing_line(self) -> str:
        if self.status == "skipped" and self.skip is not None:
            final = self.final
            retagged = f", retagged {final.tags[0]}" if final and final.tags else ""
            return f"{self.name}: skipped (unchanged, key {self.skip.tag}){retagged} in {self.seconds:.1f}s"
        done = [s for s in self.stages if s.status == "ok"]
        cached = sum(s.cached for s in self.stages)
        total = sum(s.total for s in self.stages)
        parts = [
            f"{len(self.stages)} stage{'s' if len(self.stages) != 1 else ''}",
            f"{cached}/{total} steps cached",
        ]
        final = self.final
        if self.status == "failed":
            failed = next(s for s in self.stages if s.status == "failed")
            parts.append(f"FAILED at {failed.stage}")
            kept = [s.stage for s in self.stages if s.cache_written]
            parts.append(f"caches kept: {', '.join(kept)}" if kept else "no cache written")
        elif self.status != "ok":
            parts.append("not finished")
        elif final and final.status == "ok" and final.tags:
            verb = "pushed" if final.pushed else "loaded"
            parts.append(f"{verb} {final.tags[0]}")
        elif len(done) == len(self.stages):
            parts.append("cache only")
        warnings = len(self.warnings)
        if warnings:
            parts.append(plural(warnings, "cache warning"))
        return f"{self.name}: {', '.join(parts)} in {self.seconds:.1f}s"

    def to_json(self) -> dict[str, Any]:
        final = self.final
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "steps_total": sum(s.total for s in self.stages),
            "steps_cached": sum(s.cached for s in self.stages),
            "image": final.to_json()["image"] if final else None,
            "skip": self.skip.to_json() if self.skip else None,
            "cache_mounts": self.cache_mounts,
            "stages": [s.to_json() for s in self.stages],
        }


@dataclass
class RunResult:
    services: list[ServiceResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exit_code: int = 0
    error: str | None = None
    buildx_seconds: float = 0.0
    """Wall time of the buildx runs (the rest of a build's time is dockercache's own)."""
    cache_write: bool | None = None
    cache_write_reason: str | None = None
    """Whether this run wrote caches, and why, in one phrase (the plan's decision)."""
    timeline: Timeline | None = None
    """Where the run's time went (``timings``)."""

    def cache_write_line(self) -> str | None:
        if self.cache_write is None:
            return None
        return f"cache writes: {'on' if self.cache_write else 'off'} ({self.cache_write_reason})"

    def to_json(self) -> dict[str, Any]:
        timings = self.timeline.to_json(self.buildx_seconds) if self.timeline is not None else None
        return {
            "exit_code": self.exit_code,
            "error": self.error,
            "warnings": self.warnings,
            "wall_seconds": timings["total"] if timings else None,
            "own_seconds": timings["own"] if timings else None,
            "buildx_seconds": round(self.buildx_seconds, 3),
            "timings": timings,
            "cache_write": {"on": self.cache_write, "reason": self.cache_write_reason},
            "services": [s.to_json() for s in self.services],
            "misses": [m.to_json() for m in self.misses()],
        }

    def misses(self) -> list[Miss]:
        """Every row's first miss and its cause, in report order."""
        return [s.miss for svc in self.services for s in svc.stages if s.miss is not None]
