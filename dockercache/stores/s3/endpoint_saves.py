"""Saves through a run's registry endpoint (:mod:`dockercache.stores.s3.endpoint`): manifest PUTs by tag.

``PUT`` manifest by tag writes the snapshot index last, only when every blob it names is in S3: a lease tells
a concurrent prune what the save relies on, the prunes running are waited for, then presence is checked. A
manifest naming an absent blob is refused with ``MANIFEST_BLOB_UNKNOWN``, no snapshot changes, and
:attr:`Traffic.refused` says why (mostly: a prune). With ``hold``, indexes wait for :meth:`Saves.publish`
(or are dropped by :meth:`Saves.discard`), and a snapshot that restores no less than this run's stays.
A tag's permit (:class:`~dockercache.stores.s3.endpoint_access.Access`) is used only by a save that succeeds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import StoreError
from ..content import adds_nothing
from .endpoint_access import Access, Repository
from .endpoint_holdings import DIGEST, INDEX_TYPE, LIST_INSTEAD_OF_HEADS, MANIFEST_TYPE, Holdings, check_reference
from .endpoint_http import OciError
from .layout import SnapshotName
from .snapshots import Snapshot, parse_snapshot, snapshot_document

if TYPE_CHECKING:
    from .snapshots import BlobStore

REF_NAME = "org.opencontainers.image.ref.name"
PRUNE_WAIT_SECONDS = 120.0


@dataclass
class _Save:
    """A manifest PUT by tag whose snapshot index is written now, or by :meth:`Saves.publish` when held."""

    repository: str
    tag: str
    snapshot: SnapshotName
    document: bytes
    blobs: dict[str, int]
    lease: str
    manifest: bytes = b""
    """The cache manifest itself (what :meth:`Saves._keep_current` compares)."""


class Saves(Holdings):
    """Manifest PUTs of one run's endpoint, and the snapshot indexes they write (or hold till published)."""

    def __init__(
        self,
        store: BlobStore,
        access: Access,
        meta: Mapping[str, str] | None = None,
        prune_wait: float = PRUNE_WAIT_SECONDS,
        list_limit: int = LIST_INSTEAD_OF_HEADS,
        hold: bool = False,
    ) -> None:
        super().__init__(store, list_limit)
        self.access = access
        self.meta = dict(meta or {})
        self.prune_wait = prune_wait
        self.hold = hold
        """Whether a manifest PUT by tag leaves its snapshot index to :meth:`publish`."""
        self._pending: dict[tuple[str, str], _Save] = {}

    def check_manifest_put(self, name: str, reference: str) -> None:
        """Refuse a manifest PUT before its body is read: repository, reference, and by tag its permit."""
        repo = self.access.repository(name, write=True)
        check_reference(reference)
        if not DIGEST.fullmatch(reference):
            self.access.check_tag(name, repo, reference)

    def put_manifest(self, name: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest; by tag, write the snapshot index once every blob it names is in S3 (held: let
        :meth:`publish` write it). A tag's permit is used only by a save that succeeds."""
        self.check_manifest_put(name, reference)
        repo = self.access.repository(name, write=True)
        digest, media_type, sizes = _parse_manifest(reference, media_type, body)
        if DIGEST.fullmatch(reference):
            self._put_blob_bytes(digest, body)
            self._remember(digest, media_type, body)
            return digest
        if self.access.claim(name, repo, reference, digest):  # a concurrent PUT of the tag may have taken it
            return digest
        try:
            self._save(name, repo, reference, digest, media_type, body, sizes)
        except BaseException:
            self.access.release(name, reference)
            raise
        return digest

    def _save(
        self, name: str, repo: Repository, tag: str, digest: str, media_type: str, body: bytes, sizes: dict[str, int]
    ) -> None:
        snapshot = SnapshotName(repo.key, repo.service, tag)
        blobs = {**sizes, digest: len(body)}
        lease = self._lease(blobs)
        held = False
        try:
            self._check_save(name, snapshot, sizes)
            self._put_blob_bytes(digest, body)
            self._remember(digest, media_type, body)
            # The manifest travels inside the snapshot too (an OCI descriptor's ``data``), so serving it
            # needs no request of its own; the blob stays for lookups by digest and for older releases.
            data = base64.b64encode(body).decode()
            descriptor = {"mediaType": media_type, "digest": digest, "size": len(body), "data": data}
            index = {
                "schemaVersion": 2,
                "mediaType": INDEX_TYPE,
                "manifests": [{**descriptor, "annotations": {REF_NAME: tag}}],
            }
            meta = {**self.meta, "service": repo.service, "stage": tag}
            document = snapshot_document(snapshot, meta, index, blobs)
            save = _Save(name, tag, snapshot, document, blobs, lease, body)
            if self.hold:
                self._hold(save)
                held = True
            else:
                self.store.put_snapshot(str(snapshot), save.document)
        finally:
            if not held:
                self.store.delete_lease(lease)
        if not held:
            self._record_saved(save)

    def _lease(self, blobs: Mapping[str, int]) -> str:
        """Tell prune what this save relies on, before checking that it is all there."""
        return self.store.put_lease(sorted(blobs))

    def _await_prunes(self) -> set[str]:
        """Wait for the prunes that hold a lock now, after the lease is written; returns the locks seen.

        A prune writes its lock before it reads the leases, and a save writes its lease before it looks for
        locks: so either this save sees the prune's lock, or the prune sees this save's lease (and keeps its
        blobs). A prune seen here may have missed the lease: once it ends, the presence check that follows
        sees whatever it deleted. Prunes that lock later see the lease; they are not waited for.
        """
        deadline = time.monotonic() + self.prune_wait
        seen = running = self.store.prune_locks()
        while running:
            if time.monotonic() > deadline:
                raise OciError(503, "UNAVAILABLE", f"a prune of {self.store.url} is still running")
            time.sleep(0.5)
            running = running & self.store.prune_locks()
        return set(seen)

    def _check_save(self, name: str, snapshot: SnapshotName, sizes: Mapping[str, int]) -> None:
        """The prunes running now are over and every blob named is in S3; else refused, and why recorded."""
        try:
            pruned = bool(self._await_prunes())
        except OciError as error:
            self._refuse(name, snapshot, f"{error.message} ({error.code})")
            raise
        with self._lock:
            believed = {d for d in sizes if d in (self._known or {}) or d in self.traffic.uploaded}
        missing = self._missing(sizes)
        if not missing:
            return
        digest = next((d for d in missing if d in believed), missing[0])
        if pruned or digest in believed:
            why = f"blob {digest} was deleted by a prune of {self.store.url} that ran meanwhile"
        else:
            why = f"blob {digest} is not in {self.store.url}"
        message = self._refuse(name, snapshot, f"{why} (MANIFEST_BLOB_UNKNOWN)")
        raise OciError(400, "MANIFEST_BLOB_UNKNOWN", message, {"digest": digest})

    def _refuse(self, name: str, snapshot: SnapshotName, why: str) -> str:
        reason = f"save of snapshot {snapshot} refused: {why}"
        with self._lock:
            self.traffic.refused[(name, snapshot.stage)] = reason
        self.problem(reason)
        return reason

    def _hold(self, save: _Save) -> None:
        with self._lock:
            replaced = self._pending.pop((save.repository, save.tag), None)
            self._pending[(save.repository, save.tag)] = save
        if replaced is not None:  # written again after allow_again: the later manifest wins
            self._delete_lease(replaced.lease)

    def pending(self) -> list[tuple[str, str]]:
        """(repository, tag) of every held index write not yet published."""
        with self._lock:
            return sorted(self._pending)

    def publish(self) -> list[str]:
        """Write every held snapshot index whose blobs are all still in S3, then remove its lease; returns
        what could not be written, a line each (also in ``traffic.problems``; its permit is given back)."""
        with self._lock:
            saves, self._pending = list(self._pending.values()), {}
        if not saves:
            return []
        try:
            gone: set[str] | str = set(self._missing({d for save in saves for d in save.blobs}))
        except StoreError as exc:
            gone = str(exc)
        with ThreadPoolExecutor(max_workers=min(8, len(saves))) as pool:
            return [p for p in pool.map(lambda save: self._publish(save, gone), saves) if p]

    def _publish(self, save: _Save, gone: set[str] | str) -> str | None:
        problem = None
        try:
            if isinstance(gone, str):  # the presence check itself failed
                problem = gone
            elif missing := sorted(set(save.blobs) & gone):
                problem = f"blob {missing[0]} is no longer in {self.store.url}"
            elif kept := self._keep_current(save):
                with self._lock:
                    self.traffic.kept[(save.repository, save.tag)] = kept
            else:
                self.store.put_snapshot(str(save.snapshot), save.document)
        except StoreError as exc:
            problem = str(exc)
        finally:
            self._delete_lease(save.lease)
        if problem is None:
            if (save.repository, save.tag) not in self.traffic.kept:
                self._record_saved(save)
            return None
        self.access.release(save.repository, save.tag)
        problem = f"save of snapshot {save.snapshot} not written: {problem}"
        self.problem(problem)
        return problem

    def _keep_current(self, save: _Save) -> str | None:
        """Why the snapshot now under the save's name stays (None: write this run's). A cache never gets worse:
        one whose blobs this run's cache all has already restores everything this run's would (BuildKit 0.13
        exports a build whose steps all came from a cache without its intermediate records); and a newer save
        is never replaced by an older one (two agents saving one key: the run that started later wins)."""
        body = self.store.get_snapshot(str(save.snapshot))
        current = parse_snapshot(body) if body is not None else None
        if not isinstance(current, Snapshot):
            return None
        ours = self.meta.get("started", "")
        theirs = current.meta.get("started", "")
        if ours and theirs > ours:
            commit = current.meta.get("commit", "?")
            return f"kept {save.snapshot}: a build that started later (commit {commit[:12]}) saved it meanwhile"
        try:
            there = current.manifest_body or self._manifest_body(current.manifest["digest"])
        except OciError:
            return None
        why = adds_nothing(save.manifest, there)
        return f"kept {save.snapshot}: {why}, so it restores at least as much" if why else None

    def discard(self) -> None:
        """Drop every held index write (nothing is published) and its lease."""
        with self._lock:
            saves, self._pending = list(self._pending.values()), {}
        for save in saves:
            self._delete_lease(save.lease)

    def _delete_lease(self, lease: str) -> None:
        try:
            self.store.delete_lease(lease)
        except StoreError as exc:
            self.problem(f"{exc} (a prune ignores a lease a day old)")

    def _record_saved(self, save: _Save) -> None:
        key = (save.repository, save.tag)
        with self._lock:
            self.traffic.saved[key] = save.snapshot
            self.traffic.manifests[key] = frozenset(save.blobs)
            self.traffic.refused.pop(key, None)
            self._snapshots.pop(save.snapshot, None)


def _parse_manifest(reference: str, media_type: str, body: bytes) -> tuple[str, str, dict[str, int]]:
    """(digest, media type, the blobs it names by size) of a manifest PUT; refused when it is none."""
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    if DIGEST.fullmatch(reference) and reference != digest:
        raise OciError(400, "DIGEST_INVALID", f"manifest body hashes to {digest}, not {reference}")
    try:
        document = json.loads(body)
        declared = document.get("mediaType")
        descriptors = [document["config"], *document["layers"]] if "config" in document else []
        descriptors += document.get("manifests", [])
        sizes = {str(d["digest"]): int(d["size"]) for d in descriptors}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise OciError(400, "MANIFEST_INVALID", "not a JSON image manifest or index") from None
    if not sizes or not all(DIGEST.fullmatch(d) for d in sizes):
        raise OciError(400, "MANIFEST_INVALID", "the manifest names no blobs, or an invalid digest")
    header = media_type.split(";", 1)[0].strip()
    return digest, str(declared or header or MANIFEST_TYPE), sizes
