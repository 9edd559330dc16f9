"""The record kept beside a cache (issue 29), and why a step missed: pure, no I/O.

A :class:`Record` holds, per Dockerfile stage of a target, the inputs of each step as BuildKit numbers them
(``[deps 2/3]``: ``ADD``, ``COPY``, ``RUN`` and ``WORKDIR``, and ``FROM`` of an image): its instruction, the
instructions before it that make no step (``ENV``, ``ARG``, ``USER``, ...), the digests of the context files it
copies (paths as the Dockerfile names them, after ``.dockerignore``), the build args it sees (hashed with the
record's salt, never the values), the stages it copies or mounts from; and per stage the base image and, where
known, the digest it resolved to. :mod:`dockercache.planning.steps` makes one from the working tree.

:func:`cause` compares the record of the cache a target read with the working tree's for the first step that
missed, and names the cause, most specific first: files changed, added or removed under the step's sources; a
build arg (by name); the base image's digest; the instruction; an earlier step or a stage it builds on that ran;
else the record has the step unchanged and BuildKit did not hit (a degraded or evicted cache).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..output.misses import Cause, files_phrase, short

RECORD_VERSION = 1
ARG_HASH_LENGTH = 16
"""Hex digits of a salted build-arg hash kept in a record."""


def arg_hash(salt: str, name: str, value: str) -> str:
    """A build argument's value as a record keeps it: salted, hashed, never the value."""
    data = f"{salt}\0{name}\0{value}".encode("utf-8", errors="surrogateescape")
    return hashlib.sha256(data).hexdigest()[:ARG_HASH_LENGTH]


@dataclass(frozen=True)
class StepRecord:
    n: int
    """BuildKit's number of the step in its stage (``[deps 2/3]``)."""
    instruction: str
    before: tuple[str, ...] = ()
    """The instructions since the step before that make no step of their own (``ENV``, ``ARG``, ``USER``)."""
    files: Mapping[str, str] | None = None
    """Context path -> digest of what it copies (None: copies nothing from the context, or it could not be known)."""
    args: Mapping[str, str] = field(default_factory=dict)
    """Build argument -> salted hash of its value, for the arguments the step sees."""
    uses: tuple[str, ...] = ()
    """Stages it copies or mounts from (labels)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "instruction": self.instruction}
        if self.before:
            out["before"] = list(self.before)
        if self.files is not None:
            out["files"] = dict(self.files)
        if self.args:
            out["args"] = dict(self.args)
        if self.uses:
            out["uses"] = list(self.uses)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        files = data.get("files")
        return cls(
            int(data["n"]),
            str(data["instruction"]),
            tuple(str(b) for b in data.get("before", ())),
            {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else None,
            {str(k): str(v) for k, v in dict(data.get("args", {})).items()},
            tuple(str(u) for u in data.get("uses", ())),
        )


@dataclass(frozen=True)
class StageRecord:
    label: str
    base: str
    """``FROM`` after ARG expansion: an image, ``scratch`` or another stage's label."""
    steps: tuple[StepRecord, ...] = ()
    base_digest: str | None = None
    """What the base image resolved to (``sha256:...``), when known."""
    base_args: Mapping[str, str] = field(default_factory=dict)
    """The global build arguments its ``FROM`` uses, hashed."""
    parent: str | None = None
    """The stage it builds on (``FROM <stage>``)."""

    def step(self, n: int) -> StepRecord | None:
        return next((s for s in self.steps if s.n == n), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "base": self.base, "steps": [s.to_json() for s in self.steps]}
        if self.base_digest:
            out["base_digest"] = self.base_digest
        if self.base_args:
            out["base_args"] = dict(self.base_args)
        if self.parent:
            out["parent"] = self.parent
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageRecord:
        digest = data.get("base_digest")
        return cls(
            str(data["label"]),
            str(data["base"]),
            tuple(StepRecord.from_json(s) for s in data.get("steps", ())),
            str(digest) if digest else None,
            {str(k): str(v) for k, v in dict(data.get("base_args", {})).items()},
            str(data["parent"]) if data.get("parent") else None,
        )


@dataclass(frozen=True)
class Record:
    """The inputs of a target's steps, per Dockerfile stage of its graph."""

    salt: str
    stages: Mapping[str, StageRecord]
    branch: str = ""
    commit: str = ""

    def with_bases(self, digests: Mapping[str, str]) -> Record:
        """The record with each stage's base image digest from ``digests`` (stage label -> ``ref@sha256:...``)."""
        stages = dict(self.stages)
        for label, resolved in digests.items():
            stage = stages.get(label)
            _, at, digest = resolved.rpartition("@")
            if stage is not None and at and digest.startswith("sha256:"):
                stages[label] = StageRecord(stage.label, stage.base, stage.steps, digest, stage.base_args, stage.parent)
        return Record(self.salt, stages, self.branch, self.commit)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "salt": self.salt,
            "branch": self.branch,
            "commit": self.commit,
            "stages": [s.to_json() for s in self.stages.values()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {data.get('version')!r}, not {RECORD_VERSION}")
        stages = [StageRecord.from_json(s) for s in data.get("stages", ())]
        return cls(
            str(data["salt"]), {s.label: s for s in stages}, str(data.get("branch", "")), str(data.get("commit", ""))
        )

    def encode(self) -> bytes:
        """gzip'd JSON: what a store keeps."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return gzip.compress(text.encode("utf-8", errors="surrogateescape"), mtime=0)

    @classmethod
    def decode(cls, data: bytes) -> Record:
        """A record from what :meth:`encode` made; ValueError when it is not one."""
        try:
            document = json.loads(gzip.decompress(data))
            return cls.from_json(document)
        except (OSError, EOFError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a dockercache record ({exc.__class__.__name__})") from None

    def text(self) -> str:
        """:meth:`encode` as ASCII (base64), for a manifest annotation."""
        return base64.b64encode(self.encode()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> Record:
        try:
            data = base64.b64decode(text, validate=True)
        except ValueError:
            raise ValueError("not a dockercache record (not base64)") from None
        return cls.decode(data)


# ------------------------------------------------------------------------------------------ why a step missed


def _files(now: StepRecord, then: StepRecord) -> Cause | None:
    if now.files is None or then.files is None or now.files == then.files:
        return None
    changed = sorted(p for p in now.files if p in then.files and now.files[p] != then.files[p])
    added = sorted(p for p in now.files if p not in then.files)
    removed = sorted(p for p in then.files if p not in now.files)
    return Cause("files", files_phrase(changed, added, removed), tuple([*changed, *added, *removed]))


def _args(now: Mapping[str, str], then: Mapping[str, str]) -> Cause | None:
    names = sorted(n for n in now if n in then and now[n] != then[n])  # one declared or dropped: the text changed
    if not names:
        return None
    quoted = ", ".join(f"`{n}`" for n in names)
    return Cause("arg", f"build arg{'s' if len(names) > 1 else ''} {quoted} changed")


def _digest(value: str) -> str:
    return value.removeprefix("sha256:")[:12]


def _own(stage_now: StageRecord, stage_then: StageRecord, n: int, first: bool) -> Cause | None:
    """What changed in step ``n`` itself (or, for a stage's first step, in its ``FROM``)."""
    now, then = stage_now.step(n), stage_then.step(n)
    if now is not None and then is not None:
        found = _files(now, then) or _args(now.args, then.args)
        if found:
            return found
    if first:
        found = _args(stage_now.base_args, stage_then.base_args)
        if found:
            return found
        if stage_now.base != stage_then.base:
            return Cause("base", f"`FROM {short(stage_now.base, 50)}` (was `{short(stage_then.base, 50)}`)")
        if stage_now.base_digest and stage_then.base_digest and stage_now.base_digest != stage_then.base_digest:
            old, new = _digest(stage_then.base_digest), _digest(stage_now.base_digest)
            return Cause("base", f"base image `{short(stage_now.base, 50)}` changed ({old} -> {new})")
    if now is None:
        return Cause("unknown", "the Dockerfile has no such step")
    if then is None:
        return Cause("instruction", "a new step (the cache's Dockerfile has none here)")
    if now.instruction != then.instruction:
        return Cause("instruction", f"the instruction changed (was `{short(then.instruction, 50)}`)")
    if now.before != then.before:
        changed = next((b for b in now.before if b not in then.before), None) or "an instruction was removed"
        return Cause("instruction", f"`{short(changed, 50)}` before it changed")
    return None


Ran = Callable[[str], "Sequence[tuple[int, str]]"]
"""The steps of a stage that ran in this build: (number, instruction), by stage label."""


def cause(stage: str, n: int, now: Record, then: Record, ran: Ran, depth: int = 0) -> Cause:
    """Why step ``n`` of ``stage`` missed, comparing the working tree's record ``now`` with the cache's ``then``."""
    stage_now, stage_then = now.stages.get(stage), then.stages.get(stage)
    if stage_now is None:
        return Cause("unknown", f"stage `{stage}` is not in the Dockerfile")
    if stage_then is None:
        return Cause("instruction", f"stage `{stage}` is new since the cache was written")
    first = min((s.n for s in stage_now.steps if not s.instruction.startswith("FROM ")), default=n) == n
    found = _own(stage_now, stage_then, n, first)
    if found is not None:
        return found
    earlier = [(m, text) for m, text in ran(stage) if m < n]
    if earlier:
        return Cause("earlier", f"an earlier step ran (`{short(earlier[0][1], 50)}`)")
    step = stage_now.step(n)
    for parent in [stage_now.parent, *(step.uses if step else ())]:
        steps = ran(parent) if parent else ()
        if parent and steps and depth < 8:
            inner = cause(parent, steps[0][0], now, then, ran, depth + 1)
            why = f": {inner.text}" if inner.kind not in ("earlier", "not-hit", "unknown") else ""
            text = f"builds on `{parent}`, which ran (`{short(steps[0][1], 40)}`{why})"
            return Cause("earlier", text, inner.paths)
    return Cause(
        "not-hit", "the cache's record has this step unchanged, yet BuildKit did not hit: a degraded or evicted cache"
    )


def from_another_branch(found: Cause, record_branch: str, branch: str) -> Cause:
    """A cause against a record another branch wrote says so."""
    if not record_branch or record_branch == branch:
        return found
    return Cause(found.kind, f"{found.text} (against branch {record_branch}'s cache)", found.paths)


def would_run(now: Record, then: Record) -> dict[str, list[tuple[int, str]]]:
    """Without building: per stage, the first step the working tree would run against the cache's record (its own
    inputs changed, or a stage it builds on runs), as (number, instruction); stages that would be cached have none."""
    out: dict[str, list[tuple[int, str]]] = {}
    for label, stage_now in now.stages.items():  # in Dockerfile order: a stage builds only on stages before it
        steps = [s for s in stage_now.steps if not s.instruction.startswith("FROM ")]
        stage_then = then.stages.get(label)
        if not steps:
            continue
        if stage_then is None or (stage_now.parent is not None and stage_now.parent in out):
            out[label] = [(steps[0].n, steps[0].instruction)]
            continue
        for step in steps:
            changed = _own(stage_now, stage_then, step.n, step is steps[0]) is not None
            if changed or any(u in out for u in step.uses):
                out[label] = [(step.n, step.instruction)]
                break
    return out
