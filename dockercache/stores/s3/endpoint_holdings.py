"""What the S3 store holds, as one run's registry endpoint (:mod:`dockercache.stores.s3.endpoint`) has seen it.

The blobs in the bucket come from one listing per run (:meth:`Holdings.known`), kept current with this
run's uploads and with what is found gone; snapshots and manifest bodies are read once and kept. A blob is
sent to S3 under its digest only if the store lacks it (:meth:`Holdings._commit`). :class:`Traffic` records
what went through the endpoint, for the run's report; every field here is guarded by one lock.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .endpoint_http import MANIFEST_LIMIT, OciError
from .layout import SnapshotName
from .snapshots import Snapshot, parse_snapshot

if TYPE_CHECKING:
    from .snapshots import BlobStore

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = frozenset(
    {
        MANIFEST_TYPE,
        INDEX_TYPE,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
LIST_INSTEAD_OF_HEADS = 1000
"""A save checks its blobs with one listing of the bucket while it holds at most this many blobs (one page of
ListObjectsV2), else with a HEAD per blob."""


@dataclass
class Traffic:
    """What went through the endpoint, for the report (all under the endpoint's lock)."""

    redirects: list[tuple[str, str, int]] = field(default_factory=list)
    """(repository, digest, size) of every blob GET answered with a presigned URL."""
    heads: list[tuple[str, str]] = field(default_factory=list)
    uploaded: dict[str, int] = field(default_factory=dict)
    """Blobs this run sent to S3, by digest."""
    manifests: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    """(repository, tag) -> the blobs of the manifest served, or saved (held: once published), under it."""
    saved: dict[tuple[str, str], SnapshotName] = field(default_factory=dict)
    """(repository, tag) -> the snapshot whose index was written (held: by publish)."""
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    """(repository, tag) -> why its save was refused (a blob gone, mostly by a prune); a later save of it that
    succeeds removes the entry."""
    problems: list[str] = field(default_factory=list)
    kept: dict[tuple[str, str], str] = field(default_factory=dict)
    """(repository, tag) -> why the snapshot there was kept rather than replaced by this run's (it restores
    no less: this run's cache adds nothing to it, or a build that started later saved it meanwhile)."""


def check_reference(reference: str) -> None:
    """Refuse (400) a reference that is neither a tag nor a digest."""
    if not DIGEST.fullmatch(reference) and not TAG.fullmatch(reference):
        raise OciError(400, "TAG_INVALID", f"{reference!r} is neither a tag nor a digest")


def manifest_type(body: bytes) -> str | None:
    """The media type of a manifest or index (its own, or what its shape says), None for any other blob."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    media_type = document.get("mediaType")
    if media_type in MANIFEST_TYPES:
        return str(media_type)
    if media_type is not None or document.get("schemaVersion") != 2:
        return None
    if isinstance(document.get("manifests"), list):
        return INDEX_TYPE
    return MANIFEST_TYPE if isinstance(document.get("config"), dict) and "layers" in document else None


class Holdings:
    """The blobs, snapshots and manifests of one store that a run's endpoint knows of, and its traffic."""

    def __init__(self, store: BlobStore, list_limit: int = LIST_INSTEAD_OF_HEADS) -> None:
        self.store = store
        self.list_limit = list_limit
        self.traffic = Traffic()
        self._lock = threading.Lock()
        self._listing = threading.Lock()
        self._known: dict[str, int] | None = None
        self._snapshots: dict[SnapshotName, Snapshot | str | None] = {}
        self._manifests: dict[str, bytes] = {}
        """Manifest bodies by digest (only blobs known to be manifests)."""
        self._manifest_types: dict[str, str | None] = {}
        """Digests known as manifests in this run (from snapshots and PUTs), with the media type stored."""
        self._digest_locks: dict[str, threading.Lock] = {}

    def known(self) -> dict[str, int]:
        """Every blob in the store by digest: one listing per run, kept current with this run's uploads."""
        with self._listing:  # not under _lock: requests that need no listing are served meanwhile
            if self._known is None:
                listed = self.store.list_blobs()
                with self._lock:
                    self._known = listed
            return self._known

    def snapshot(self, name: SnapshotName) -> Snapshot | str | None:
        """The snapshot ``name`` if it can be served, a reason when it cannot, None when there is none."""
        with self._lock:
            if name in self._snapshots:
                return self._snapshots[name]
        body = self.store.get_snapshot(str(name))
        found: Snapshot | str | None = None
        if body is not None:
            found = parse_snapshot(body)
            if isinstance(found, str):
                found = f"snapshot {name} in {self.store.url} {found}"
            else:
                self._learn_manifest(found)
                known = self.known()
                missing = [d for d in found.blobs if d not in known]
                if missing:
                    found = f"snapshot {name}: blob {missing[0]} is missing from {self.store.url}"
        with self._lock:
            self._snapshots[name] = found
        return found

    def _learn_manifest(self, snapshot: Snapshot) -> None:
        """The snapshot's manifest is a manifest, of the type its descriptor says; embedded, BuildKit's first
        request for it costs no S3 round trip."""
        digest, media_type = snapshot.manifest["digest"], snapshot.manifest.get("mediaType")
        with self._lock:
            if media_type or digest not in self._manifest_types:
                self._manifest_types[digest] = media_type
            if snapshot.manifest_body is not None:
                self._manifests.setdefault(digest, snapshot.manifest_body)

    def served(self, digest: str) -> bool:
        """Whether BuildKit was sent to S3 for this blob in this run."""
        with self._lock:
            return any(d == digest for _, d, _ in self.traffic.redirects)

    def forget(self, digest: str) -> None:
        """The blob is gone from the store (removed as corrupt): answer 404 for it from now on."""
        with self._lock:
            if self._known is not None:
                self._known.pop(digest, None)
            self._snapshots.clear()

    def _manifest_body(self, digest: str, by_digest: bool = False) -> bytes:
        """A manifest's body; ``by_digest``: only if the blob is known as a manifest, or reads as one."""
        with self._lock:
            if digest in self._manifests:
                return self._manifests[digest]
            vouched = not by_digest or digest in self._manifest_types
        not_a_manifest = OciError(404, "MANIFEST_UNKNOWN", f"{digest} is not a manifest")
        if not vouched and self.known().get(digest, 0) > MANIFEST_LIMIT:
            raise not_a_manifest
        body = self.store.get_blob_bytes(digest, MANIFEST_LIMIT)
        if body is None or f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
            if body is not None:
                self.problem(f"manifest {digest} in {self.store.url} is corrupt")
            raise OciError(404, "MANIFEST_UNKNOWN", f"manifest {digest} is not in the store")
        if not vouched and manifest_type(body) is None:
            raise not_a_manifest
        with self._lock:
            self._manifests[digest] = body
        return body

    def _remember(self, digest: str, media_type: str, body: bytes) -> None:
        with self._lock:
            self._manifests[digest] = body
            self._manifest_types[digest] = media_type

    def _missing(self, digests: Collection[str]) -> list[str]:
        """The blobs named that are not in S3 now (the run's first listing can be stale; a prune with no
        grace period may even have taken what this run uploaded a moment ago): list the bucket again while
        it is small, else HEAD each blob. Those missing are forgotten (BuildKit's next HEAD says 404)."""
        with self._lock:
            small = self._known is not None and len(self._known) <= self.list_limit
        if small:
            listed = self.store.list_blobs()
            missing = sorted(d for d in digests if d not in listed)
        else:
            others = list(digests)
            with ThreadPoolExecutor(max_workers=min(8, max(1, len(others)))) as pool:
                present = dict(zip(others, pool.map(self.store.head_blob, others), strict=True))
            missing = sorted(d for d, size in present.items() if size is None)
        with self._lock:
            if self._known is not None:
                for d in missing:
                    self._known.pop(d, None)
        return missing

    def _put_blob_bytes(self, digest: str, body: bytes) -> None:
        self._commit(digest, len(body), lambda: self.store.put_blob_bytes(digest, body))

    def _commit(self, digest: str, size: int, send: Callable[[], None]) -> None:
        with self._lock:
            lock = self._digest_locks.setdefault(digest, threading.Lock())
        with lock:  # two uploads of one blob in this run: the second finds it known
            if self.known().get(digest) == size:
                return
            send()
            with self._lock:
                assert self._known is not None
                self._known[digest] = size
                self.traffic.uploaded[digest] = size

    def problem(self, message: str) -> None:
        """Something the run's report should say (once)."""
        with self._lock:
            if message not in self.traffic.problems:
                self.traffic.problems.append(message)
