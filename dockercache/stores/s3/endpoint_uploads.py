"""Blob upload sessions of the registry endpoint (:mod:`dockercache.stores.s3.endpoint`), kept apart from HTTP.

An upload takes its chunks in ``Content-Range`` order and hashes them as they arrive, spooled in memory up
to 1 MB and on disk above. Sessions are bounded in number (one more is a ``429``) and in size (``413``, and
the session is dropped), dropped when idle, and a body that fails midway adds nothing. A spool that cannot be
written is a ``507`` (a full disk) or ``500`` naming where, and the registry hears of it as a problem.
"""

from __future__ import annotations

import errno
import hashlib
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from .endpoint_http import OciError

SPOOL_IN_MEMORY = 1024 * 1024
"""An upload is kept in memory up to this size, then spooled to disk."""
UPLOAD_IDLE_SECONDS = 300.0
"""An upload session that receives nothing for this long is dropped."""
MAX_UPLOADS = 16
"""Upload sessions open at once; one more is refused (429) once the idle ones are dropped. BuildKit pushes at
most 4 blobs at a time to one registry (``BUILDKIT_MAX_REGISTRY_CONCURRENCY``), retries included."""
MAX_UPLOAD_BYTES = 10 * 1024**3


class SpoolError(Exception):
    """Writing an upload's spool failed (the disk is full...)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Upload:
    repository: str
    spool: IO[bytes]
    sha: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    touched: float = field(default_factory=time.monotonic)
    busy: bool = False
    """A request is writing to it: it does not expire, and no other request writes meanwhile."""

    def write(self, chunk: bytes) -> None:
        try:
            self.spool.write(chunk)
        except OSError as exc:
            raise SpoolError(exc) from exc
        self.sha.update(chunk)
        self.size += len(chunk)
        self.touched = time.monotonic()

    def mark(self) -> tuple[int, Any]:
        return self.size, self.sha.copy()

    def rollback(self, mark: tuple[int, Any]) -> None:
        """Back to ``mark``: what was written since is dropped."""
        self.size, self.sha = mark
        self.spool.seek(self.size)
        self.spool.truncate(self.size)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


class Uploads:
    """The blob upload sessions open at once: at most ``most``, each of at most ``max_bytes``, dropped once
    idle for ``idle`` seconds; each spooled (to ``spool_dir`` above 1 MB) while hashed. ``problem`` hears of a
    spool that cannot be written."""

    def __init__(
        self,
        problem: Callable[[str], None],
        idle: float = UPLOAD_IDLE_SECONDS,
        most: int = MAX_UPLOADS,
        max_bytes: int = MAX_UPLOAD_BYTES,
        spool_dir: str | None = None,
    ) -> None:
        self.problem, self.idle, self.most, self.max_bytes, self.spool_dir = problem, idle, most, max_bytes, spool_dir
        self.sessions: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def spool(self) -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="dockercache-upload-", dir=self.spool_dir)

    def start(self, repository: str) -> str:
        self._expire()
        session = uuid.uuid4().hex
        with self._lock:
            if len(self.sessions) >= self.most:
                raise OciError(
                    429,
                    "TOOMANYREQUESTS",
                    f"{len(self.sessions)} uploads are open, the most this endpoint keeps at once: finish or "
                    f"cancel one (one idle for {self.idle:g}s is dropped)",
                    headers={"Retry-After": "5"},
                )
            self.sessions[session] = Upload(repository, self.spool())
        return session

    def get(self, repository: str, session: str) -> Upload:
        self._expire()
        with self._lock:
            upload = self.sessions.get(session)
            if upload is not None and upload.repository == repository:
                upload.touched = time.monotonic()
                return upload
        raise OciError(404, "BLOB_UPLOAD_UNKNOWN", f"no upload {session} (finished, cancelled, expired or unknown)")

    def take(self, repository: str, session: str) -> Upload:
        """The upload, no longer open (the caller closes its spool)."""
        upload = self.get(repository, session)
        with self._lock:
            if upload.busy:
                raise self._out_of_range(repository, session, upload, "another request is writing to this upload")
            self.sessions.pop(session, None)
        return upload

    def drop(self, session: str) -> None:
        with self._lock:
            upload = self.sessions.pop(session, None)
        if upload is not None:
            upload.spool.close()

    def close(self) -> None:
        with self._lock:
            uploads, self.sessions = list(self.sessions.values()), {}
        for upload in uploads:
            upload.spool.close()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [s for s, u in self.sessions.items() if not u.busy and now - u.touched > self.idle]
            expired = [self.sessions.pop(s) for s in idle]
        for upload in expired:
            upload.spool.close()

    def append(
        self, repository: str, session: str, chunks: Iterable[bytes], span: tuple[int, int] | None, length: int | None
    ) -> int:
        """Add a request body (``length`` bytes, None: unknown) to an upload; returns the upload's size.

        A chunk's ``span`` (its Content-Range) must start where the upload ends (else 416, nothing added). A
        body that fails midway adds nothing; one that takes the upload past ``max_bytes`` (413) or cannot be
        spooled (507, or 500) drops the upload."""
        upload = self.get(repository, session)
        with self._lock:
            if upload.busy:
                raise self._out_of_range(repository, session, upload, "another request is writing to this upload")
            upload.busy = True
        try:
            return self._append(repository, session, upload, chunks, span, length)
        finally:
            with self._lock:
                upload.busy = False

    def _append(
        self,
        repository: str,
        session: str,
        upload: Upload,
        chunks: Iterable[bytes],
        span: tuple[int, int] | None,
        length: int | None,
    ) -> int:
        start = upload.size
        if span is not None and (span[0] != start or (length is not None and span[1] - span[0] + 1 != length)):
            why = f"the chunk {span[0]}-{span[1]} does not start at {start}"
            raise self._out_of_range(repository, session, upload, why)
        if length is not None and start + length > self.max_bytes:
            raise self._too_large(repository, session)
        mark = upload.mark()
        try:
            for chunk in chunks:
                if upload.size + len(chunk) > self.max_bytes:
                    raise self._too_large(repository, session)
                upload.write(chunk)
            if span is not None and upload.size - start != span[1] - span[0] + 1:
                raise self._out_of_range(repository, session, upload, f"the chunk is not {span[0]}-{span[1]}")
        except SpoolError as exc:
            raise self._spool_failed(repository, session, exc.error) from None
        except BaseException:
            with self._lock:
                current = self.sessions.get(session) is upload
            try:
                if current:
                    upload.rollback(mark)
            except (OSError, ValueError):
                self.drop(session)
            raise
        return upload.size

    @staticmethod
    def _out_of_range(repository: str, session: str, upload: Upload, why: str) -> OciError:
        headers = {
            "Location": f"/v2/{repository}/blobs/uploads/{session}",
            "Range": f"0-{max(upload.size - 1, 0)}",
            "Docker-Upload-UUID": session,
        }
        return OciError(416, "BLOB_UPLOAD_INVALID", f"upload {session}: {why}", headers=headers)

    def _too_large(self, repository: str, session: str) -> OciError:
        self.drop(session)
        message = f"upload {session} to {repository} is larger than {self.max_bytes} bytes: dropped"
        return OciError(413, "SIZE_INVALID", message)

    def _spool_failed(self, repository: str, session: str, error: OSError) -> OciError:
        self.drop(session)
        where = self.spool_dir or tempfile.gettempdir()
        reason = (error.strerror or str(error)).lower()
        message = f"upload to {repository} dropped: cannot spool it, {reason} in {where}"
        self.problem(message)
        status = 507 if error.errno in (errno.ENOSPC, errno.EDQUOT) else 500
        return OciError(status, "BLOB_UPLOAD_INVALID", message)
