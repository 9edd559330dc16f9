"""S3 cache snapshots: their format, and promote, prune and verify on top of a content-addressed blob store.

A snapshot is one BuildKit cache (a cache manifest and the blobs it names) for one service stage, named
``<key>/<service>/<stage>`` (see :mod:`dockercache.stores.s3.layout`). Blobs are stored once under their digest
and shared by every snapshot. Builds read and write snapshots through the registry endpoint
(:mod:`dockercache.stores.s3.endpoint`), which writes a snapshot's index only after every blob it names is in place.
The index is an OCI image index naming the manifest (the same form BuildKit's local cache export writes,
so snapshots written by earlier releases, from a ``type=local`` export, still restore), plus the blob list.

Which keys prune may delete, and how it counts them, is :class:`Retention`: pure, from the store's key
templates.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import string
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Protocol

from ...errors import ConfigError, StoreError
from .layout import SnapshotName


class BlobCorrupt(StoreError):
    """A downloaded blob's sha256 is not its name."""


class BlobMissing(StoreError):
    """A blob a snapshot names is not in the store."""


FORMAT_VERSION = 1
LEASE_STALE = timedelta(days=1)
"""A lease this old was left by a writer that died; prune no longer honours it and removes it."""
PRUNE_WAIT_SECONDS = 120.0
"""How long a promote waits for a prune that holds its lock (as a save does, see the endpoint)."""


class LeaseInfo(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def modified(self) -> datetime: ...
    @property
    def blobs(self) -> tuple[str, ...]: ...


class BlobStore(Protocol):
    """What snapshots and the endpoint need of a remote store (implemented by :class:`.client.S3Store`)."""

    @property
    def url(self) -> str: ...

    def check(self) -> None: ...
    def list_blobs(self) -> dict[str, int]: ...
    def blob_times(self) -> dict[str, datetime]: ...
    def head_blob(self, digest: str) -> int | None: ...
    def presign_blob(self, digest: str, seconds: int) -> str: ...
    def get_blob_bytes(self, digest: str, limit: int) -> bytes | None: ...
    def put_blob_bytes(self, digest: str, body: bytes) -> None: ...
    def upload_blob_fileobj(self, digest: str, fileobj: IO[bytes]) -> None: ...
    def download_blob(self, digest: str, dest: Path) -> int: ...
    def get_snapshot(self, name: str) -> bytes | None: ...
    def put_snapshot(self, name: str, body: bytes) -> None: ...
    def list_snapshots(self, key_prefix: str = "") -> Sequence[Any]: ...
    def copy_snapshot(self, source: str, target: str) -> None: ...
    def delete_snapshots(self, names: Iterable[str]) -> None: ...
    def delete_blobs(self, digests: Iterable[str]) -> None: ...
    def put_lease(self, blobs: Sequence[str]) -> str: ...
    def delete_lease(self, lease_id: str) -> None: ...
    def leases(self) -> Sequence[LeaseInfo]: ...
    def begin_prune(self) -> str: ...
    def end_prune(self, lock_id: str) -> None: ...
    def prune_locks(self) -> set[str]: ...


@dataclass(frozen=True)
class Snapshot:
    """A parsed snapshot index: the OCI index naming the cache manifest, and every blob (with sizes)."""

    index: Mapping[str, Any]
    blobs: Mapping[str, int]
    meta: Mapping[str, str] = field(default_factory=dict)
    """What the writer recorded: ``commit``, ``branch``, ``started`` (its run's start), ``created``."""

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The cache manifest's descriptor (digest, mediaType, size)."""
        return self.index["manifests"][0]  # type: ignore[no-any-return]

    @property
    def manifest_body(self) -> bytes | None:
        """The cache manifest itself when the index embeds it (the descriptor's ``data``) and it hashes to
        its digest; None otherwise (then it is read from its blob)."""
        data = self.manifest.get("data")
        if not isinstance(data, str):
            return None
        try:
            body = base64.b64decode(data, validate=True)
        except ValueError:
            return None
        return body if f"sha256:{hashlib.sha256(body).hexdigest()}" == self.manifest.get("digest") else None


def parse_snapshot(body: bytes) -> Snapshot | str:
    """The snapshot in ``body``, or why it cannot be used ("has a broken index", "is inconsistent")."""
    try:
        document = json.loads(body)
        index = document["index"]
        blobs = {str(d): int(s) for d, s in document["blobs"].items()}
        if not isinstance(index, dict) or not blobs:
            raise ValueError
        referenced = [str(m["digest"]) for m in index.get("manifests", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "has a broken index"
    if not referenced or any(d not in blobs for d in referenced):
        return "is inconsistent"
    meta = {k: v for k in META if isinstance(v := document.get(k), str)}
    return Snapshot(index, blobs, meta)


META = ("commit", "branch", "started", "created")
"""The writer's facts a snapshot document records beside its index."""


def snapshot_document(
    name: SnapshotName, meta: Mapping[str, str], index: Mapping[str, Any], blobs: Mapping[str, int]
) -> bytes:
    document = {
        "version": FORMAT_VERSION,
        "name": str(name),
        "created": datetime.now(timezone.utc).isoformat(),
        **dict(meta),
        "index": dict(index),
        "blobs": dict(sorted(blobs.items())),
    }
    return json.dumps(document, sort_keys=True).encode()


# --------------------------------------------------------------------------- which keys prune may delete


@functools.lru_cache(maxsize=64)
def key_pattern(template: str, branch: str | None = None) -> re.Pattern[str]:
    """A pattern matching the keys ``template`` makes, its fields captured by name; ``branch`` fixes
    ``{branch}``. Fields are slugs (no ``/``); ``{commit}`` takes the shortest match, so in
    ``{branch}-{commit}`` a branch keeps its dashes."""
    parts: list[str] = []
    seen: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise ConfigError(f"key template {template!r}: unbalanced braces") from None
    for literal, name, _, _ in parsed:
        parts.append(re.escape(literal))
        if name is None:
            continue
        if name == "branch" and branch is not None:
            parts.append(re.escape(branch))
        elif name not in ("pipeline", "branch", "commit"):  # the loader allows no other placeholder
            parts.append(re.escape(f"{{{name}}}"))
        elif name in seen:
            parts.append(f"(?P={name})")
        else:
            seen.add(name)
            parts.append(f"(?P<{name}>[^/]+{'?' if name == 'commit' else ''})")
    return re.compile("".join(parts))


def _fill(template: str, values: Mapping[str, str]) -> str:
    return template.format(**{"pipeline": "*", "branch": "*", "commit": "*", **values})


@dataclass(frozen=True)
class Retention:
    """What prune may delete and how ``--keep N`` counts, from the store's key templates.

    Protected, never pruned unless named in ``delete``: what the default branch writes and reads, the key
    template and the ``cache_from`` templates filled in with the default branch (any pipeline: a bucket may
    serve several), as a save's rule has them; a per-commit template (``{commit}``) protects nothing, since no
    later build reads it. Every other key is grouped as the key template makes it: by its fields except
    ``{commit}``, so ``{pipeline}/{branch}`` is a group per branch (one key each) and ``{pipeline}/{commit}``
    one group of commits per pipeline. A key the template does not make (an earlier template, a key made by
    hand) is a group of its own. The default, ``Retention()``, protects nothing and groups every key alone.
    """

    key: str = ""
    cache_from: tuple[str, ...] = ()
    default_branch: str = ""
    """The default branch as keys spell it (a slug)."""
    delete: frozenset[str] = frozenset()
    """Keys named for deletion, protected or not (``--delete``)."""

    def protected(self, key: str) -> str | None:
        """Why prune never deletes ``key`` (the default branch writes or reads it), or None."""
        templates = [(self.key, "default branch key"), *((t, "cache_from key") for t in self.cache_from)]
        for template, why in templates:
            if template and "{commit}" not in template and key_pattern(template, self.default_branch).fullmatch(key):
                return why
        return None

    def group(self, key: str) -> str:
        """The group ``key`` is counted in, shown with ``*`` for the commit (``app/*``), or the key itself."""
        match = key_pattern(self.key).fullmatch(key) if self.key else None
        if match is None:
            return key
        return _fill(self.key, {k: v for k, v in match.groupdict().items() if k != "commit"})


def duration_text(age: timedelta) -> str:
    """``7d``, ``12h``, ``90m``, ``30s``: as the options take it."""
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def await_prunes(store: BlobStore, wait: float) -> None:
    """Wait for the prunes that hold a lock now; call it after writing a lease (see the endpoint's save).

    A prune writes its lock before it reads the leases, and a writer writes its lease before it looks for
    locks: so either the writer sees the prune's lock, or the prune sees the lease (and keeps its blobs). A
    prune seen here may have missed the lease: once it ends, a presence check sees whatever it deleted.
    """
    deadline = time.monotonic() + wait
    running = store.prune_locks()
    while running:
        if time.monotonic() > deadline:
            raise StoreError(f"{store.url}: a prune is still running; try again when it is done")
        time.sleep(0.5)
        running &= store.prune_locks()


@dataclass
class Snapshots:
    """Promote, prune and verify for one store."""

    store: BlobStore

    def verify(self, deep: bool = False) -> list[str]:
        remote = self.store.list_blobs()
        problems = []
        with tempfile.TemporaryDirectory(prefix="dockercache-verify-") as scratch:
            for info in self.store.list_snapshots():
                problem = verify_snapshot(self.store, info.name, remote, deep, Path(scratch))
                if problem:
                    problems.append(problem)
        return problems

    def promote(
        self, source_key: str, target_key: str, dry_run: bool = False, prune_wait: float = PRUNE_WAIT_SECONDS
    ) -> list[tuple[str, str]]:
        """Copy every snapshot under ``source_key`` to ``target_key`` (blobs are shared, so none move); returns
        (source, target) snapshot names. ``dry_run``: what it would write, writing nothing.

        Nothing is written unless every source snapshot restores: its index parses and its blobs are in the
        store now. The check holds a lease on those blobs, as a save does, so a prune running meanwhile
        cannot delete them under the copy (a promote often copies a key that prune is about to delete).
        """
        if source_key == target_key:
            raise ConfigError(f"--target: '{target_key}' is the source key itself")
        names = [SnapshotName.parse(s.name) for s in self.store.list_snapshots(source_key.rstrip("/") + "/")]
        names = sorted(n for n in names if n.key == source_key)
        if not names:
            raise StoreError(f"{self.store.url}: no snapshot under key '{source_key}'")
        checked: list[tuple[SnapshotName, bytes, Snapshot]] = []
        for name in names:
            body = self.store.get_snapshot(str(name))
            parsed = parse_snapshot(body) if body is not None else "vanished"
            if body is None or isinstance(parsed, str):
                raise StoreError(f"{self.store.url}: snapshot {name} {parsed}: nothing promoted")
            checked.append((name, body, parsed))
        pairs = [(str(n), str(SnapshotName(target_key, n.service, n.stage))) for n, _, _ in checked]
        if dry_run:
            return pairs
        lease = self.store.put_lease(sorted({d for _, _, snap in checked for d in snap.blobs}))
        try:
            await_prunes(self.store, prune_wait)
            listed = self.store.list_blobs()
            for name, _, snap in checked:
                for digest, size in snap.blobs.items():
                    if listed.get(digest) != size:
                        what = "is missing" if digest not in listed else f"has {listed[digest]} bytes, expected {size}"
                        raise StoreError(f"{self.store.url}: snapshot {name}: blob {digest} {what}: nothing promoted")
            # The index checked above, not a server-side copy of whatever the source holds by now.
            for (_, body, _), (_, target) in zip(checked, pairs, strict=True):
                self.store.put_snapshot(target, body)
        finally:
            self.store.delete_lease(lease)
        return pairs

    def prune(
        self,
        keep: int | None,
        older_than: timedelta | None,
        dry_run: bool,
        grace: timedelta = timedelta(hours=1),
        now: datetime | None = None,
        retention: Retention | None = None,
    ) -> PruneResult:
        """Per group of keys (see :class:`Retention`), keep the newest ``keep`` keys and those younger than
        ``older_than``, and every protected key; delete the other keys' snapshots and the keys named in
        ``retention.delete``. Then delete blobs no remaining snapshot references, no save in progress relies
        on (its lease), and older than ``grace`` (a writer's fresh uploads survive). With neither ``keep`` nor
        ``older_than``, only the named keys go.

        A prune holds a lock for its length: a save that writes its lease meanwhile waits for the lock to go
        before it checks its blobs are there, so a blob this prune deletes is never named by a new snapshot.
        """
        lock = None if dry_run else self.store.begin_prune()
        try:
            return self._prune(
                keep, older_than, dry_run, grace, now or datetime.now(timezone.utc), retention or Retention()
            )
        finally:
            if lock is not None:
                self.store.end_prune(lock)

    def _prune(
        self,
        keep: int | None,
        older_than: timedelta | None,
        dry_run: bool,
        grace: timedelta,
        now: datetime,
        retention: Retention,
    ) -> PruneResult:
        snapshots = self.store.list_snapshots()
        by_key: dict[str, list[Any]] = {}
        for s in snapshots:
            by_key.setdefault(s.key, []).append(s)
        unknown = sorted(retention.delete - set(by_key))
        if unknown:
            raise ConfigError(f"--delete: no snapshot under key {', '.join(repr(k) for k in unknown)}")
        reasons = judge_keys(
            {k: max(s.modified for s in v) for k, v in by_key.items()}, keep, older_than, now, retention
        )
        doomed = sorted(s.name for k, (kept, _) in reasons.items() if not kept for s in by_key[k])
        remaining = sorted(s.name for k, (kept, _) in reasons.items() if kept for s in by_key[k])
        referenced: set[str] = set()
        for name in remaining:
            body = self.store.get_snapshot(name)
            found = parse_snapshot(body) if body is not None else None
            if isinstance(found, Snapshot):  # a broken snapshot protects nothing; it restores as a miss anyway
                referenced.update(found.blobs)
        blob_sizes = self.store.list_blobs()
        blob_times = self.store.blob_times()
        # Leases are read after the lock is taken and the blobs listed: a save whose lease came later waits
        # for this prune to end and then finds out what it deleted.
        stale_leases = []
        for lease in self.store.leases():
            if now - lease.modified >= LEASE_STALE:
                stale_leases.append(lease.id)
            else:
                referenced.update(lease.blobs)
        orphans = [d for d, t in blob_times.items() if d not in referenced and now - t >= grace]
        result = PruneResult(
            snapshots=doomed,
            blobs=sorted(orphans),
            bytes=sum(blob_sizes.get(d, 0) for d in orphans),
            kept=remaining,
            reasons={s.name: reasons[k][1] for k, v in by_key.items() for s in v},
        )
        if not dry_run:
            if doomed:
                self.store.delete_snapshots(doomed)
            if orphans:
                self.store.delete_blobs(orphans)
            for lease_id in stale_leases:
                self.store.delete_lease(lease_id)
        return result


def judge_keys(
    newest: Mapping[str, datetime],
    keep: int | None,
    older_than: timedelta | None,
    now: datetime,
    retention: Retention,
) -> dict[str, tuple[bool, str]]:
    """For every key (with the time of its newest snapshot): whether prune keeps it, and why."""
    decided: dict[str, tuple[bool, str]] = {}
    groups: dict[str, list[str]] = {}
    for key in newest:
        protected = retention.protected(key)
        if key in retention.delete:
            decided[key] = (False, "named by --delete")
        elif protected:
            decided[key] = (True, protected)
        else:
            groups.setdefault(retention.group(key), []).append(key)
    for group, keys in groups.items():
        for rank, key in enumerate(sorted(keys, key=lambda k: (newest[k], k), reverse=True)):
            if keep is None and older_than is None:
                decided[key] = (True, "not named by --delete")
            elif keep is not None and rank < keep:
                decided[key] = (True, f"newest {keep} of {group}")
            elif older_than is not None and now - newest[key] < older_than:
                decided[key] = (True, f"younger than {duration_text(older_than)}")
            else:
                beyond = [f"beyond the newest {keep} of {group}"] if keep else []
                older = [f"older than {duration_text(older_than)}"] if older_than is not None else []
                decided[key] = (False, ", ".join(beyond + older) or "--keep 0")
    return decided


def verify_snapshot(store: BlobStore, name: str, remote: Mapping[str, int], deep: bool, scratch: Path) -> str | None:
    """Why snapshot ``name`` would not restore, or None (``deep``: download every blob and check its sha256)."""
    body = store.get_snapshot(name)
    if body is None:
        return f"{name}: vanished"
    found = parse_snapshot(body)
    if isinstance(found, str):
        return f"{name}: {found.removeprefix('has a ')}"
    for digest, size in found.blobs.items():
        if digest not in remote:
            return f"{name}: blob {digest} is missing"
        if remote[digest] != size:
            return f"{name}: blob {digest} has {remote[digest]} bytes, expected {size}"
        if deep:
            try:
                store.download_blob(digest, scratch / digest.removeprefix("sha256:"))
            except StoreError as exc:
                return f"{name}: {exc}"
            finally:
                (scratch / digest.removeprefix("sha256:")).unlink(missing_ok=True)
    return None


@dataclass
class PruneResult:
    snapshots: list[str]
    """Snapshots deleted (or, in a dry run, that would be)."""
    blobs: list[str]
    bytes: int
    kept: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    """Every snapshot name: why it is kept or deleted."""
