"""An OCI distribution endpoint on loopback, backed by an S3 store: BuildKit imports S3 caches lazily.

BuildKit reads a ``type=registry`` cache lazily (only the blobs a build needs) but a ``type=local`` one whole.
So for the length of a build dockercache serves the S3 layout (:mod:`dockercache.stores.s3.layout`) as a
registry on ``127.0.0.1`` and a free port (the HTTP side is :mod:`dockercache.stores.s3.endpoint_http`):

- ``GET /v2/``; ``HEAD``/``GET`` manifests by tag (a snapshot: repository = snapshot key and service, tag =
  stage) and by digest (manifests only, with the media type they were stored with); ``GET tags/list`` (the
  stages that have a snapshot); ``_catalog`` and ``referrers`` answer ``UNSUPPORTED``;
- ``HEAD`` blobs from one bucket listing per run; ``GET`` blobs as a ``307`` to a short-lived presigned S3
  URL, so the bytes go from S3 to BuildKit and never through this process;
- uploads (``POST`` with ``?digest=`` or ``?mount=``, ``PATCH`` in ``Content-Range`` order, ``PUT``) spooled
  (to disk above 1 MB) while hashed and sent to S3 under their digest only once it is checked; a blob the
  store has is never sent again; uploads are bounded in number and size, and dropped when idle;
- ``PUT`` manifest by tag writes the snapshot index last, only when every blob it names is in S3 (a lease
  tells a concurrent prune what the save relies on); a manifest naming an absent blob is refused with
  ``MANIFEST_BLOB_UNKNOWN``, no snapshot changes, and :attr:`Traffic.refused` says why (mostly: a prune).
  With ``hold``, indexes wait for :meth:`Endpoint.publish` (or are dropped by :meth:`Endpoint.discard`).

Only the repositories the run was granted exist. Only the writable ones take writes, and a manifest by tag
only under the tags the run saves, each once (:meth:`Endpoint.allow_again` grants one again, and
:meth:`Endpoint.permit` one more tag); the rest is refused (403). With a ``secret``, every request needs
HTTP Basic credentials (:data:`USERNAME` and the secret; a 401 challenges for them, and BuildKit answers with
what its docker config holds), so other processes on the host can neither read nor write through it.
S3 credentials stay in this process (boto3's chain); BuildKit only sees presigned URLs for single blobs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING

from ...errors import StoreError
from ..content import adds_nothing
from .endpoint_http import (
    MANIFEST_LIMIT,
    MAX_UPLOAD_BYTES,
    MAX_UPLOADS,
    UPLOAD_IDLE_SECONDS,
    OciError,
    Uploads,
    make_server,
)
from .endpoint_http import NAME as NAME
from .layout import SnapshotName
from .layout import repository_name as repository_name
from .snapshots import Snapshot, parse_snapshot, snapshot_document

if TYPE_CHECKING:
    from .snapshots import BlobStore

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
USERNAME = "dockercache"
"""The user name of the endpoint's Basic credentials (any name is accepted: the secret is the credential)."""
CHALLENGE = 'Basic realm="dockercache"'
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
REF_NAME = "org.opencontainers.image.ref.name"
PRESIGN_SECONDS = 900
PRUNE_WAIT_SECONDS = 120.0
LIST_INSTEAD_OF_HEADS = 1000
"""A save checks its blobs with one listing of the bucket while it holds at most this many blobs (one page of
ListObjectsV2), else with a HEAD per blob."""


@dataclass(frozen=True)
class Repository:
    """A repository the run may use: the snapshots of one key and service.

    ``tags``: the only tags a writable repository may be written under in this run, each once. Empty means
    any tag (each once), for callers that predate it; the runtime always names them.
    """

    key: str
    service: str
    writable: bool = False
    tags: frozenset[str] = frozenset()


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


@dataclass
class _Save:
    """A manifest PUT by tag whose snapshot index is written now, or by :meth:`Endpoint.publish` when held."""

    repository: str
    tag: str
    snapshot: SnapshotName
    document: bytes
    blobs: dict[str, int]
    lease: str
    manifest: bytes = b""
    """The cache manifest itself (what :meth:`Endpoint._keep_current` compares)."""


class Endpoint:
    """The registry for one run. ``with Endpoint(...) as e: e.address`` is ``127.0.0.1:PORT``."""

    def __init__(
        self,
        store: BlobStore,
        repositories: Mapping[str, Repository],
        meta: Mapping[str, str] | None = None,
        listen: Sequence[tuple[str, int]] = (("127.0.0.1", 0),),
        presign_seconds: int = PRESIGN_SECONDS,
        prune_wait: float = PRUNE_WAIT_SECONDS,
        list_limit: int = LIST_INSTEAD_OF_HEADS,
        secret: str | None = None,
        hold: bool = False,
        upload_idle: float = UPLOAD_IDLE_SECONDS,
        max_uploads: int = MAX_UPLOADS,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        spool_dir: str | None = None,
    ) -> None:
        self.store = store
        self.repositories = dict(repositories)
        self.meta = dict(meta or {})
        self.listen = listen
        self.presign_seconds = presign_seconds
        self.prune_wait = prune_wait
        self.list_limit = list_limit
        if secret == "":
            raise ValueError("an endpoint's secret cannot be empty")
        self.secret = secret
        """None: no credentials asked (tests)."""
        self.hold = hold
        """Whether a manifest PUT by tag leaves its snapshot index to :meth:`publish`."""
        self.spool_dir = spool_dir
        """Where uploads above 1 MB are spooled (None: the system's temporary directory)."""
        self.traffic = Traffic()
        self._lock = threading.Lock()
        self._listing = threading.Lock()
        self._known: dict[str, int] | None = None
        self._snapshots: dict[SnapshotName, Snapshot | str | None] = {}
        self._manifests: dict[str, bytes] = {}
        """Manifest bodies by digest (only blobs known to be manifests)."""
        self._manifest_types: dict[str, str | None] = {}
        """Digests known as manifests in this run (from snapshots and PUTs), with the media type stored."""
        self.uploads = Uploads(self.problem, upload_idle, max_uploads, max_upload_bytes, spool_dir)
        self._digest_locks: dict[str, threading.Lock] = {}
        self._used: dict[tuple[str, str], str] = {}
        """(repository, tag) -> the manifest digest this run wrote under it (each tag once)."""
        """(repository, tag) written in this run (or being written): its permit is used."""
        self._pending: dict[tuple[str, str], _Save] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- life cycle

    def start(self) -> str:
        """Bind to the first free address of ``listen`` and serve in a thread; returns ``host:port``."""
        error: OSError | None = None
        for address in self.listen:
            try:
                self._server = make_server(address, self)
                break
            except OSError as exc:
                error = exc
        if self._server is None:
            raise error or OSError("no address to listen on")
        server = self._server  # stop() waits up to one poll interval for the loop to notice
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="dockercache-endpoint", daemon=True
        )
        self._thread.start()
        return self.address

    @property
    def address(self) -> str:
        assert self._server is not None, "the endpoint is not started"
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving; held index writes not published are dropped (:meth:`discard`), uploads too."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.discard()
        self.uploads.close()

    def __enter__(self) -> Endpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def authorize(self, authorization: str | None) -> None:
        """Refuse (401, with a Basic challenge) a request whose ``Authorization`` lacks the secret."""
        if self.secret is None:
            return
        scheme, _, value = (authorization or "").strip().partition(" ")
        password = b""
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        if not hmac.compare_digest(password, self.secret.encode()):
            raise OciError(401, "UNAUTHORIZED", "authentication required", headers={"WWW-Authenticate": CHALLENGE})

    # ------------------------------------------------------------------------------------ what S3 holds

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

    def _repository(self, name: str, write: bool = False) -> Repository:
        repo = self.repositories.get(name)
        if repo is None:
            raise OciError(404, "NAME_UNKNOWN", f"repository {name} is not served in this run")
        if write and not repo.writable:
            raise OciError(403, "DENIED", f"this run may not write snapshot key '{repo.key}'")
        return repo

    def tags(self, name: str) -> list[str]:
        """The tags of repository ``name``: the stages with a snapshot under its key and service (one listing
        of that key's snapshots), and those this run saved."""
        repo = self._repository(name)
        stages = set()
        for info in self.store.list_snapshots(f"{repo.key}/{repo.service}/"):
            with contextlib.suppress(ValueError):
                found = SnapshotName.parse(info.name)
                if (found.key, found.service) == (repo.key, repo.service) and TAG.fullmatch(found.stage):
                    stages.add(found.stage)
        with self._lock:
            stages.update(tag for repository, tag in self.traffic.saved if repository == name)
        return sorted(stages)

    # ---------------------------------------------------------------------------------------- manifests

    @staticmethod
    def _reference(reference: str) -> None:
        if not DIGEST.fullmatch(reference) and not TAG.fullmatch(reference):
            raise OciError(400, "TAG_INVALID", f"{reference!r} is neither a tag nor a digest")

    def get_manifest(self, name: str, reference: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest by tag or digest."""
        repo = self._repository(name)
        self._reference(reference)
        if DIGEST.fullmatch(reference):
            body = self._manifest_body(reference, by_digest=True)
            with self._lock:
                stored = self._manifest_types.get(reference)
            return stored or _manifest_type(body) or MANIFEST_TYPE, body, reference
        with self._lock:
            written = self._used.get((name, reference))
        if written is not None:  # written by this run, its index held till the bake ends: the writer reads it back
            body = self._manifest_body(written)
            with self._lock:
                stored = self._manifest_types.get(written)
            return stored or _manifest_type(body) or MANIFEST_TYPE, body, written
        found = self.snapshot(SnapshotName(repo.key, repo.service, reference))
        if not isinstance(found, Snapshot):  # the run warned about a broken one when it planned its sources
            raise OciError(404, "MANIFEST_UNKNOWN", f"no snapshot {repo.key}/{repo.service}/{reference}")
        descriptor = found.manifest
        body = self._manifest_body(descriptor["digest"])
        with self._lock:
            self.traffic.manifests[(name, reference)] = frozenset(found.blobs)
            stored = self._manifest_types.get(descriptor["digest"])
        media_type = descriptor.get("mediaType") or stored or _manifest_type(body) or MANIFEST_TYPE
        return media_type, body, descriptor["digest"]

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
        if not vouched and _manifest_type(body) is None:
            raise not_a_manifest
        with self._lock:
            self._manifests[digest] = body
        return body

    def _remember(self, digest: str, media_type: str, body: bytes) -> None:
        with self._lock:
            self._manifests[digest] = body
            self._manifest_types[digest] = media_type

    def check_manifest_put(self, name: str, reference: str) -> None:
        """Refuse a manifest PUT before its body is read: repository, reference, and by tag its permit."""
        repo = self._repository(name, write=True)
        self._reference(reference)
        if not DIGEST.fullmatch(reference):
            with self._lock:
                self._permit(name, repo, reference, None)

    def _permit(self, name: str, repo: Repository, tag: str, digest: str | None) -> bool:
        """Refuse a tag the run does not save, or saved already with another manifest (under the lock). True when
        ``digest`` is the manifest this run wrote under the tag already: a client pushing it twice (the ``docker``
        driver pushes an image once through BuildKit, then once more itself) writes nothing new."""
        if repo.tags and tag not in repo.tags:
            raise OciError(
                403,
                "DENIED",
                f"this run may not write tag '{tag}' of repository {name} (snapshot key '{repo.key}', service "
                f"'{repo.service}'): it saves {', '.join(sorted(repo.tags))}",
            )
        written = self._used.get((name, tag))
        if written is None or digest is None:  # before the body is read, the digest is not known yet
            return False
        if written == digest:
            return True
        raise OciError(403, "DENIED", f"tag '{tag}' of repository {name} was written already in this run")

    def allow_again(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(repository, tag) may be written once more (before a second build of the same targets)."""
        with self._lock:
            for pair in pairs:
                self._used.pop(pair, None)

    def permit(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(repository, tag) may be written once from now on, although the tag was not among the repository's
        (the cache mounts' ``_mounts``). Only a writable repository gains tags: any other stays read-only."""
        with self._lock:
            for name, tag in pairs:
                repo = self.repositories.get(name)
                if repo is not None and repo.writable:
                    if repo.tags:  # empty: any tag already
                        self.repositories[name] = replace(repo, tags=repo.tags | {tag})
                    self._used.pop((name, tag), None)

    def put_manifest(self, name: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest; by tag, write the snapshot index once every blob it names is in S3 (held: let
        :meth:`publish` write it). A tag's permit is used only by a save that succeeds."""
        self.check_manifest_put(name, reference)
        repo = self._repository(name, write=True)
        digest, media_type, sizes = _parse_manifest(reference, media_type, body)
        if DIGEST.fullmatch(reference):
            self._put_blob_bytes(digest, body)
            self._remember(digest, media_type, body)
            return digest
        with self._lock:
            if self._permit(name, repo, reference, digest):  # a concurrent PUT of the tag may have taken it
                return digest
            self._used[(name, reference)] = digest
        try:
            self._save(name, repo, reference, digest, media_type, body, sizes)
        except BaseException:
            with self._lock:
                self._used.pop((name, reference), None)
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

    # ----------------------------------------------------------------------------------- held index writes

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
        with self._lock:
            self._used.pop((save.repository, save.tag), None)
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

    # -------------------------------------------------------------------------------------------- blobs

    def head_blob(self, name: str, digest: str) -> int:
        self._repository(name)
        size = self.known().get(digest)
        with self._lock:
            self.traffic.heads.append((name, digest))
        if size is None:
            raise OciError(404, "BLOB_UNKNOWN", f"blob {digest} is not in the store")
        return size

    def blob_url(self, name: str, digest: str) -> str:
        self._repository(name)
        size = self.known().get(digest)
        if size is None:
            raise OciError(404, "BLOB_UNKNOWN", f"blob {digest} is not in the store")
        url = self.store.presign_blob(digest, self.presign_seconds)
        with self._lock:
            self.traffic.redirects.append((name, digest, size))
        return url

    def mount(self, name: str, digest: str) -> bool:
        """Cross-repository mount: every repository shares the store's blobs, so it is there or not."""
        self._repository(name, write=True)
        return DIGEST.fullmatch(digest) is not None and digest in self.known()

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

    # ------------------------------------------------------------------------------------------ uploads

    def start_upload(self, name: str) -> str:
        self._repository(name, write=True)
        return self.uploads.start(name)

    def upload_size(self, name: str, session: str) -> int:
        self._repository(name, write=True)
        return self.uploads.get(name, session).size

    def append(
        self,
        name: str,
        session: str,
        chunks: Iterable[bytes],
        span: tuple[int, int] | None = None,
        length: int | None = None,
    ) -> int:
        """Add a request body to upload ``session`` of repository ``name`` (see :meth:`Uploads.append`)."""
        self._repository(name, write=True)
        return self.uploads.append(name, session, chunks, span, length)

    def cancel_upload(self, name: str, session: str) -> None:
        self._repository(name, write=True)
        self.uploads.get(name, session)
        self.uploads.drop(session)

    def finish_upload(self, name: str, session: str, digest: str) -> None:
        """The upload is complete: check its digest, then send it to S3 unless the store has it."""
        self._repository(name, write=True)
        upload = self.uploads.take(name, session)
        try:
            if not DIGEST.fullmatch(digest) or upload.digest != digest:
                raise OciError(400, "DIGEST_INVALID", f"the upload hashes to {upload.digest}, not {digest}")
            upload.spool.seek(0)
            self._commit(digest, upload.size, lambda: self.store.upload_blob_fileobj(digest, upload.spool))
        finally:
            upload.spool.close()


def _manifest_type(body: bytes) -> str | None:
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
