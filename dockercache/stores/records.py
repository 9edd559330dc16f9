"""Where each store kind keeps the record of a cache (issue 29): beside the cache, read and written only where the
cache itself is read and written, so under the same trust rules (a target reads the records of its cache
sources and writes the record of its cache sink, which the store planned for this branch).

- registry: a small OCI artifact tagged beside the cache ref (``<tag>.why``), the record in an annotation of its
  manifest: one ``GET`` to read it, one manifest ``PUT`` to write it (and, once per repository, the empty config
  blob every OCI artifact names);
- local: a file in the cache's version directory (``dockercache-record.json.gz``), so it is swapped in and out
  with the cache it describes;
- S3 (through the endpoint) and native S3: none yet (``explain`` says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters.ci import slugify
from ..errors import StoreError
from ..model.record import Record
from ..reference import REFERENCE
from .local.kind import LocalSwap

if TYPE_CHECKING:
    from ..adapters.oci import Registry
    from ..model import Target
    from ..model.entry import CacheEntry

RECORD_FILE = "dockercache-record.json.gz"
TAG_SUFFIX = ".why"
ANNOTATION = "org.dockercache.record"
ARTIFACT_TYPE = "application/vnd.dockercache.record.v1+json"
EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_TEXT = 2 << 20
"""The largest record a registry keeps (base64 in an annotation; registries take manifests up to 4 MiB)."""
PROBE_SECONDS = 5.0


class Unreadable(Exception):
    """A record is there but cannot be read (one line)."""


def record_ref(ref: str) -> str | None:
    """The tag beside a cache ref that holds its record: ``host/repo:final-main`` -> ``host/repo:final-main.why``."""
    match = REFERENCE.fullmatch(ref)
    if match is None or match["tag"] is None or match["digest"]:
        return None
    tag = f"{match['tag']}{TAG_SUFFIX}"
    if len(tag) > 128:
        tag = slugify(match["tag"], 128 - len(TAG_SUFFIX)) + TAG_SUFFIX
    return f"{match['name']}:{tag}"


def _split(ref: str) -> tuple[str, str, str]:
    name, _, tag = ref.rpartition(":")
    host, _, repo = name.partition("/")
    return host, repo, tag


def _default_client(host: str) -> Registry:
    from ..adapters.oci import Registry  # urllib: only a build or explain needs it

    return Registry.from_docker_config(host, timeout=PROBE_SECONDS)


class RecordStore:
    """Reads a cache source's record and writes a cache sink's, by store kind."""

    def __init__(self, client: Callable[[str], Registry] | None = None) -> None:
        self.client = client or _default_client

    @staticmethod
    def keeps(kind: str) -> bool:
        return kind in ("registry", "local")

    def source_place(self, kind: str, entry: CacheEntry) -> str | None:
        """Where the record of a cache source is (a ref, a file), or None when its kind keeps none."""
        if kind == "registry" and entry.type == "registry":
            return record_ref(entry.location)
        src = entry.get("src")
        if kind == "local" and entry.type == "local" and src:
            return str(Path(src) / RECORD_FILE)
        return None

    def sink_place(self, target: Target) -> str | None:
        """Where the record of the cache a target writes goes (None: it writes none, or its kind keeps none)."""
        caches = target.caches
        if caches.sink is None:
            return None
        if caches.kind == "registry":
            return record_ref(caches.sink.location)
        if caches.kind == "local" and isinstance(caches.step, LocalSwap):
            return str(Path(caches.step.final) / RECORD_FILE)
        return None

    def read(self, kind: str, place: str) -> Record | None:
        """The record at ``place``; None when there is none; :class:`Unreadable` when it cannot be read."""
        try:
            if kind == "local":
                try:
                    data = Path(place).read_bytes()
                except FileNotFoundError:
                    return None
                return Record.decode(data)
            host, repo, tag = _split(place)
            manifest = self.client(host).get_manifest(repo, tag)
            if manifest is None:
                return None
            document: Any = json.loads(manifest.body)
            text = (document.get("annotations") or {}).get(ANNOTATION) if isinstance(document, dict) else None
            if not isinstance(text, str):
                raise ValueError("no record in its annotations")
            return Record.from_text(text)
        except (StoreError, OSError, ValueError) as exc:
            raise Unreadable(f"{place}: {exc}") from None

    def write(self, kind: str, place: str, record: Record) -> None:
        """Keep ``record`` at ``place`` (a file replaced in one step; a manifest); StoreError/OSError when it fails."""
        if kind == "local":
            directory = os.path.dirname(place)
            fd, temporary = tempfile.mkstemp(prefix=".record-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(record.encode())
                os.replace(temporary, place)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            return
        text = record.text()
        if len(text) > MAX_TEXT:
            raise ValueError(f"record of {len(text)} bytes, over {MAX_TEXT}")
        host, repo, tag = _split(place)
        client = self.client(host)
        if client.head_blob(repo, EMPTY_DIGEST) is None:
            client.put_blob(repo, EMPTY_DIGEST, EMPTY)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY)},
            "layers": [{"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY)}],
            "annotations": {ANNOTATION: text},
        }
        client.put_manifest(repo, tag, json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)
