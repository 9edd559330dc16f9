"""Where S3 snapshots live: their names and the object layout of a bucket, defined once.

Under ``s3://BUCKET/PREFIX/``:

- ``blobs/sha256/<hex>``: content-addressed blobs, stored once and shared by every snapshot;
- ``snapshots/<key>/<service>/<stage>.json``: a snapshot's index (BuildKit's index.json plus its blob list),
  written only after all its blobs are in place; the stage ``_mounts`` holds the service's cache mounts (see
  :mod:`dockercache.planning.mounts`), so promote, prune, verify and list treat them as any snapshot;
- ``leases/<id>.json``: the blobs a save in progress relies on (written before it checks they are all there,
  removed after its index); prune keeps them;
- ``locks/prune-<id>.json``: a prune in progress (a save that began meanwhile waits for it to end);
- ``native/``: BuildKit's own ``type=s3`` cache (``native = true``), which BuildKit lays out itself.

A snapshot is named ``<key>/<service>/<stage>``; the key (``{pipeline}/{branch}``) may itself contain slashes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SNAPSHOT_SUFFIX = ".json"
MOUNTS_STAGE = "_mounts"
"""The snapshot "stage" holding a service's cache-mount archives (an image: ``FROM scratch`` + the archives).
No Dockerfile stage can have this name (stage names begin with a letter), so it never meets a real stage's."""


@dataclass(frozen=True, order=True)
class SnapshotName:
    key: str
    service: str
    stage: str

    @classmethod
    def parse(cls, name: str) -> SnapshotName:
        """``<key>/<service>/<stage>`` (the key may contain slashes; service and stage never do)."""
        key, service, stage = name.rsplit("/", 2)
        return cls(key, service, stage)

    def __str__(self) -> str:
        return f"{self.key}/{self.service}/{self.stage}"


def repository_name(key: str, service: str) -> str:
    """The repository the run's endpoint serves snapshot key ``key`` of ``service`` under (its tags are the
    stages): lower case, valid in a reference; a suffix of the original's hash when characters had to change
    (two keys never share a name)."""
    raw = f"{key}/{service}"
    parts = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") or "x" for p in raw.split("/") if p]
    name = "/".join(parts)
    if name != raw:
        name += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return name


@dataclass(frozen=True)
class S3Layout:
    """Object keys under one store's prefix."""

    prefix: str

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), *parts) if p)

    @property
    def blobs(self) -> str:
        """The prefix every blob key starts with."""
        return self._key("blobs", "sha256") + "/"

    @property
    def snapshots(self) -> str:
        return self._key("snapshots") + "/"

    @property
    def leases(self) -> str:
        return self._key("leases") + "/"

    @property
    def locks(self) -> str:
        return self._key("locks") + "/"

    def lease(self, lease_id: str) -> str:
        return f"{self.leases}{lease_id}.json"

    def prune_lock(self, lock_id: str) -> str:
        return f"{self.locks}prune-{lock_id}.json"

    @property
    def native(self) -> str:
        return self._key("native") + "/"

    def blob(self, digest: str) -> str:
        return self.blobs + digest.removeprefix("sha256:")

    def digest(self, object_key: str) -> str:
        """The digest a blob key stores."""
        return "sha256:" + object_key[len(self.blobs) :]

    def snapshot(self, name: SnapshotName | str) -> str:
        return f"{self.snapshots}{name}{SNAPSHOT_SUFFIX}"

    def snapshot_name(self, object_key: str) -> str | None:
        """The snapshot name an object key holds, or None for any other object."""
        if not object_key.startswith(self.snapshots) or not object_key.endswith(SNAPSHOT_SUFFIX):
            return None
        return object_key[len(self.snapshots) : -len(SNAPSHOT_SUFFIX)]
