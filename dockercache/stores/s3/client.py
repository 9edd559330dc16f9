"""The S3 store's client: blobs, snapshot indexes, leases and prune locks in one bucket, through boto3's S3 client
(made by :mod:`dockercache.adapters.aws`, the one module that imports boto3).

Objects are laid out as :mod:`dockercache.stores.s3.layout` says (blobs by digest, snapshot indexes by name).
Credentials come from the standard AWS chain (environment, profile, instance role); they are never put in
process arguments or printed. Retries use botocore's standard mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ...adapters import aws
from ...config.caches import S3Cache
from ...errors import StoreError
from .layout import S3Layout, SnapshotName
from .snapshots import BlobCorrupt, BlobMissing

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024


PRUNE_LOCK_STALE = timedelta(hours=1)


@dataclass(frozen=True)
class Lease:
    id: str
    modified: datetime
    blobs: tuple[str, ...]


@dataclass(frozen=True)
class SnapshotInfo:
    name: str  # <key>/<service>/<stage>
    modified: datetime
    size: int

    @property
    def key(self) -> str:
        return SnapshotName.parse(self.name).key


def _reason(exc: Exception) -> str:
    return aws.reason(exc)


def _no_bucket(exc: Exception) -> bool:
    """S3 said the bucket is not there (a HEAD of the bucket answers a bare 404)."""
    code = aws.error_code(exc)
    return code == "NoSuchBucket" or (code in ("404", "NotFound") and aws.operation(exc) == "HeadBucket")


def _not_found(exc: Exception) -> bool:
    return aws.error_code(exc) in ("404", "NoSuchKey", "NotFound")


BOTO_ERRORS = aws.ERRORS


class S3Store:
    """Blobs and snapshots of one cache store. The boto3 client is passed in or built from the config."""

    def __init__(self, config: S3Cache, client: S3Client | None = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self.layout = S3Layout(self.prefix)
        self.client = client or make_client(config)
        self.transfer = aws.transfer_config(
            multipart_threshold=config.multipart_threshold_mb * 1024 * 1024,
            multipart_chunksize=max(8, config.multipart_threshold_mb // 4) * 1024 * 1024,
            max_concurrency=4,
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def blob_key(self, digest: str) -> str:
        return self.layout.blob(digest)

    def snapshot_key(self, name: str) -> str:
        return self.layout.snapshot(name)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except BOTO_ERRORS as exc:
            if _no_bucket(exc):
                region = self.client.meta.region_name or "default"
                raise StoreError(f"{self.url}: bucket {self.bucket} does not exist (region {region})") from None
            raise StoreError(f"{self.url}: {what}: {_reason(exc)}") from None

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])  # type: ignore[misc]

    def list_blobs(self) -> dict[str, int]:
        """Every blob in the store, by digest, in one paginated listing."""
        with self._errors("listing blobs"):
            return {self.layout.digest(o["Key"]): int(o["Size"]) for o in self._list(self.layout.blobs)}

    def blob_times(self) -> dict[str, datetime]:
        with self._errors("listing blobs"):
            return {self.layout.digest(o["Key"]): o["LastModified"] for o in self._list(self.layout.blobs)}

    def head_blob(self, digest: str) -> int | None:
        """The blob's size, or None when the store does not have it."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.blob_key(digest))["ContentLength"])
        except BOTO_ERRORS as exc:
            if _not_found(exc):
                return None
            raise StoreError(f"{self.url}: looking up {digest}: {_reason(exc)}") from None

    def presign_blob(self, digest: str, seconds: int) -> str:
        """A URL that reads one blob for ``seconds``, signed here: the reader gets no credentials."""
        with self._errors(f"signing a URL for {digest}"):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.blob_key(digest)}, ExpiresIn=seconds
            )

    def get_blob_bytes(self, digest: str, limit: int) -> bytes | None:
        """A small blob (a manifest) whole, or None when absent."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.blob_key(digest))
            if int(response.get("ContentLength", 0)) > limit:
                raise StoreError(f"{self.url}: {digest} is larger than {limit} bytes")
            return response["Body"].read()
        except BOTO_ERRORS as exc:
            if _not_found(exc):
                return None
            raise StoreError(f"{self.url}: reading {digest}: {_reason(exc)}") from None

    def put_blob_bytes(self, digest: str, body: bytes) -> None:
        """A small blob, written only if absent (a concurrent writer's identical copy is left alone)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.blob_key(digest), Body=body, IfNoneMatch="*")
        except BOTO_ERRORS as exc:
            code = aws.error_code(exc) or ""
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return
            if code != "NotImplemented":  # a server without conditional writes: content-addressed, so plain put
                raise StoreError(f"{self.url}: uploading {digest}: {_reason(exc)}") from None
            with self._errors(f"uploading {digest}"):
                self.client.put_object(Bucket=self.bucket, Key=self.blob_key(digest), Body=body)

    def upload_blob_fileobj(self, digest: str, fileobj: IO[bytes]) -> None:
        """A blob of any size (multipart above the threshold), streamed from ``fileobj``."""
        with self._errors(f"uploading {digest}"):
            self.client.upload_fileobj(fileobj, self.bucket, self.blob_key(digest), Config=self.transfer)

    def download_blob(self, digest: str, dest: Path) -> int:
        """Download into ``dest`` only if the content's sha256 is its name; returns the size."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.blob_key(digest))
        except BOTO_ERRORS as exc:
            if _not_found(exc):
                raise BlobMissing(f"{self.url}: blob {digest} is missing") from None
            raise StoreError(f"{self.url}: downloading {digest}: {_reason(exc)}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".partial-")
        sha = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                body = response["Body"]
                try:
                    for chunk in iter(lambda: body.read(CHUNK), b""):
                        sha.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                except BOTO_ERRORS as exc:
                    raise StoreError(f"{self.url}: downloading {digest}: {_reason(exc)}") from None
            if f"sha256:{sha.hexdigest()}" != digest:
                raise BlobCorrupt(
                    f"{self.url}: blob {digest} is corrupt (its content hashes to sha256:{sha.hexdigest()[:12]}...)"
                )
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size

    def get_snapshot(self, name: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.snapshot_key(name))
            return response["Body"].read()
        except BOTO_ERRORS as exc:
            if _not_found(exc):
                return None
            raise StoreError(f"{self.url}: reading snapshot {name}: {_reason(exc)}") from None

    def put_snapshot(self, name: str, body: bytes) -> None:
        with self._errors(f"writing snapshot {name}"):
            self.client.put_object(
                Bucket=self.bucket, Key=self.snapshot_key(name), Body=body, ContentType="application/json"
            )

    def list_snapshots(self, key_prefix: str = "") -> list[SnapshotInfo]:
        with self._errors("listing snapshots"):
            found = [(self.layout.snapshot_name(o["Key"]), o) for o in self._list(self.layout.snapshots + key_prefix)]
            return [SnapshotInfo(name, o["LastModified"], int(o["Size"])) for name, o in found if name]

    def copy_snapshot(self, source: str, target: str) -> None:
        with self._errors(f"copying snapshot {source} to {target}"):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.snapshot_key(target),
                CopySource={"Bucket": self.bucket, "Key": self.snapshot_key(source)},
            )

    def _delete(self, keys: list[str], what: str) -> None:
        with self._errors(f"deleting {what}"):
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})  # type: ignore[typeddict-item]

    def delete_snapshots(self, names: Iterable[str]) -> None:
        self._delete([self.snapshot_key(n) for n in names], "snapshots")

    def delete_blobs(self, digests: Iterable[str]) -> None:
        self._delete([self.blob_key(d) for d in digests], "blobs")

    def _put_json(self, key: str, document: Mapping[str, Any], what: str) -> None:
        with self._errors(what):
            body = json.dumps(document).encode()
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def put_lease(self, blobs: Sequence[str]) -> str:
        """Record that a save in progress relies on ``blobs``; returns the lease's id."""
        lease_id = uuid.uuid4().hex
        document = {"created": datetime.now(timezone.utc).isoformat(), "blobs": list(blobs)}
        self._put_json(self.layout.lease(lease_id), document, "writing a lease")
        return lease_id

    def delete_lease(self, lease_id: str) -> None:
        with self._errors("removing a lease"):
            self.client.delete_object(Bucket=self.bucket, Key=self.layout.lease(lease_id))

    def leases(self) -> list[Lease]:
        """Every lease: its id, when it was written, and the blobs it keeps."""
        with self._errors("reading leases"):
            found = []
            for o in self._list(self.layout.leases):
                lease_id = o["Key"][len(self.layout.leases) :].removesuffix(".json")
                try:
                    body = self.client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                    blobs = tuple(str(d) for d in json.loads(body)["blobs"])
                except BOTO_ERRORS as exc:
                    if _not_found(exc):
                        continue  # the save finished meanwhile
                    raise
                except (ValueError, KeyError, TypeError):
                    blobs = ()
                found.append(Lease(lease_id, o["LastModified"], blobs))
            return found

    def begin_prune(self) -> str:
        lock_id = uuid.uuid4().hex
        self._put_json(self.layout.prune_lock(lock_id), {"created": datetime.now(timezone.utc).isoformat()}, "locking")
        return lock_id

    def end_prune(self, lock_id: str) -> None:
        with self._errors("unlocking"):
            self.client.delete_object(Bucket=self.bucket, Key=self.layout.prune_lock(lock_id))

    def prune_locks(self, stale: timedelta = PRUNE_LOCK_STALE) -> set[str]:
        """The locks of prunes in progress (one older than ``stale`` was left by a killed prune)."""
        now = datetime.now(timezone.utc)
        with self._errors("checking for a prune in progress"):
            return {o["Key"] for o in self._list(self.layout.locks) if now - o["LastModified"] < stale}

    def check(self) -> None:
        """Fail early and clearly when the bucket cannot be reached."""
        with self._errors("checking the bucket"):
            self.client.head_bucket(Bucket=self.bucket)


def make_client(config: S3Cache) -> S3Client:
    try:
        client: S3Client = aws.client(
            "s3",
            profile=config.profile,
            region=config.region,
            endpoint_url=config.endpoint_url,
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=max(10, config.transfers * 2),
            s3={"addressing_style": "path"} if config.endpoint_url else {},
        )
    except aws.ProfileNotFound:
        raise StoreError(f"s3://{config.bucket}: AWS profile '{config.profile}' not found") from None
    return client
