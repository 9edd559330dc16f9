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
HTTP Basic credentials (``USERNAME`` of :mod:`.endpoint_access` and the secret; a 401 challenges for them,
and BuildKit answers with what its docker config holds), so other processes on the host can neither read nor
write through it.
S3 credentials stay in this process (boto3's chain); BuildKit only sees presigned URLs for single blobs.

The endpoint is built in layers, each a module that uses only those before it: who may do what
(:mod:`.endpoint_access`), what this run knows the store holds and what went through
(:mod:`.endpoint_holdings`), saves (:mod:`.endpoint_saves`), and here the registry that the HTTP handler
(:mod:`.endpoint_http`) asks: its reads, blobs, uploads (:mod:`.endpoint_uploads`) and life cycle.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING

from .endpoint_access import Access, Repository
from .endpoint_holdings import DIGEST, LIST_INSTEAD_OF_HEADS, MANIFEST_TYPE, TAG, check_reference, manifest_type
from .endpoint_http import NAME as NAME
from .endpoint_http import OciError, make_server
from .endpoint_saves import PRUNE_WAIT_SECONDS, Saves
from .endpoint_uploads import MAX_UPLOAD_BYTES, MAX_UPLOADS, UPLOAD_IDLE_SECONDS, Uploads
from .layout import SnapshotName
from .layout import repository_name as repository_name
from .snapshots import Snapshot

if TYPE_CHECKING:
    from .snapshots import BlobStore

PRESIGN_SECONDS = 900


class Endpoint(Saves):
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
        super().__init__(store, Access(repositories, secret), meta, prune_wait, list_limit, hold)
        self.listen = listen
        self.presign_seconds = presign_seconds
        self.spool_dir = spool_dir
        """Where uploads above 1 MB are spooled (None: the system's temporary directory)."""
        self.uploads = Uploads(self.problem, upload_idle, max_uploads, max_upload_bytes, spool_dir)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------------------------------- life cycle

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
            target=lambda: server.serve_forever(poll_interval=0.01), name="dockercache-endpoint", daemon=True
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

    # ------------------------------------------------------------------------------------------- access

    @property
    def repositories(self) -> dict[str, Repository]:
        """The repositories the run may use (:attr:`Access.repositories`)."""
        return self.access.repositories

    def authorize(self, authorization: str | None) -> None:
        """Refuse (401, with a Basic challenge) a request whose ``Authorization`` lacks the secret."""
        self.access.authorize(authorization)

    def allow_again(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(repository, tag) may be written once more (see :meth:`Access.allow_again`)."""
        self.access.allow_again(pairs)

    def permit(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(repository, tag) may be written once from now on (see :meth:`Access.permit`)."""
        self.access.permit(pairs)

    # -------------------------------------------------------------------------------------------- reads

    def tags(self, name: str) -> list[str]:
        """The tags of repository ``name``: the stages with a snapshot under its key and service (one listing
        of that key's snapshots), and those this run saved."""
        repo = self.access.repository(name)
        stages = set()
        for info in self.store.list_snapshots(f"{repo.key}/{repo.service}/"):
            with contextlib.suppress(ValueError):
                found = SnapshotName.parse(info.name)
                if (found.key, found.service) == (repo.key, repo.service) and TAG.fullmatch(found.stage):
                    stages.add(found.stage)
        with self._lock:
            stages.update(tag for repository, tag in self.traffic.saved if repository == name)
        return sorted(stages)

    def get_manifest(self, name: str, reference: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest by tag or digest."""
        repo = self.access.repository(name)
        check_reference(reference)
        if DIGEST.fullmatch(reference):
            body = self._manifest_body(reference, by_digest=True)
            with self._lock:
                stored = self._manifest_types.get(reference)
            return stored or manifest_type(body) or MANIFEST_TYPE, body, reference
        written = self.access.written(name, reference)
        if written is not None:  # written by this run, its index held till the bake ends: the writer reads it back
            body = self._manifest_body(written)
            with self._lock:
                stored = self._manifest_types.get(written)
            return stored or manifest_type(body) or MANIFEST_TYPE, body, written
        found = self.snapshot(SnapshotName(repo.key, repo.service, reference))
        if not isinstance(found, Snapshot):  # the run warned about a broken one when it planned its sources
            raise OciError(404, "MANIFEST_UNKNOWN", f"no snapshot {repo.key}/{repo.service}/{reference}")
        descriptor = found.manifest
        body = self._manifest_body(descriptor["digest"])
        with self._lock:
            self.traffic.manifests[(name, reference)] = frozenset(found.blobs)
            stored = self._manifest_types.get(descriptor["digest"])
        media_type = descriptor.get("mediaType") or stored or manifest_type(body) or MANIFEST_TYPE
        return media_type, body, descriptor["digest"]

    # -------------------------------------------------------------------------------------------- blobs

    def head_blob(self, name: str, digest: str) -> int:
        self.access.repository(name)
        size = self.known().get(digest)
        with self._lock:
            self.traffic.heads.append((name, digest))
        if size is None:
            raise OciError(404, "BLOB_UNKNOWN", f"blob {digest} is not in the store")
        return size

    def blob_url(self, name: str, digest: str) -> str:
        self.access.repository(name)
        size = self.known().get(digest)
        if size is None:
            raise OciError(404, "BLOB_UNKNOWN", f"blob {digest} is not in the store")
        url = self.store.presign_blob(digest, self.presign_seconds)
        with self._lock:
            self.traffic.redirects.append((name, digest, size))
        return url

    def mount(self, name: str, digest: str) -> bool:
        """Cross-repository mount: every repository shares the store's blobs, so it is there or not."""
        self.access.repository(name, write=True)
        return DIGEST.fullmatch(digest) is not None and digest in self.known()

    # ------------------------------------------------------------------------------------------ uploads

    def start_upload(self, name: str) -> str:
        self.access.repository(name, write=True)
        return self.uploads.start(name)

    def upload_size(self, name: str, session: str) -> int:
        self.access.repository(name, write=True)
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
        self.access.repository(name, write=True)
        return self.uploads.append(name, session, chunks, span, length)

    def cancel_upload(self, name: str, session: str) -> None:
        self.access.repository(name, write=True)
        self.uploads.get(name, session)
        self.uploads.drop(session)

    def finish_upload(self, name: str, session: str, digest: str) -> None:
        """The upload is complete: check its digest, then send it to S3 unless the store has it."""
        self.access.repository(name, write=True)
        upload = self.uploads.take(name, session)
        try:
            if not DIGEST.fullmatch(digest) or upload.digest != digest:
                raise OciError(400, "DIGEST_INVALID", f"the upload hashes to {upload.digest}, not {digest}")
            upload.spool.seek(0)
            self._commit(digest, upload.size, lambda: self.store.upload_blob_fileobj(digest, upload.spool))
        finally:
            upload.spool.close()
