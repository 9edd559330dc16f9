"""What a registry and its client agree on: manifest media types, names, digests, manifests, errors, limits.

The OCI distribution API's vocabulary as this client uses it: the media types a manifest may have, the
grammar of repository names, tags and digests (checked before any request is sent), a :class:`Manifest` as
the registry stores it, the OCI error document a failed request answers with, and :class:`RegistryError`, the
one exception the client raises. No I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from ...errors import StoreError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
"""What ``get_manifest`` accepts (and so can return)."""

DEFAULT_TIMEOUT = 10.0
"""Seconds per request (a token request, a credential helper, each page of a tag list each count as one)."""
MAX_MANIFEST = 4 * 1024 * 1024
"""containerd's limit on a manifest: a larger answer is not one of dockercache's manifests."""
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = "dockercache"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


class RegistryError(StoreError):
    """A registry request failed, or its answer was not what the protocol says.

    One line: ``registry HOST, repository REPO: WHAT: HTTP STATUS CODE (the registry's message)``; ``status`` and
    ``code`` (the OCI error code, e.g. ``MANIFEST_UNKNOWN``) are also attributes. Never a credential or a token.
    """

    def __init__(
        self, host: str, repo: str | None, problem: str, *, status: int | None = None, code: str | None = None
    ) -> None:
        where = f"registry {host}, repository {repo}" if repo else f"registry {host}"
        super().__init__(f"{where}: {problem}")
        self.host = host
        self.repo = repo
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry stores it: its bytes (never re-serialised), media type and sha256 digest."""

    body: bytes = field(repr=False)
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.body)


def check_repo(repo: str) -> None:
    if not REPOSITORY.fullmatch(repo) or len(repo) > 255:
        raise ValueError(f"not a repository name: {repo!r}")


def check_ref(ref: str) -> None:
    if not (TAG.fullmatch(ref) or DIGEST.fullmatch(ref)):
        raise ValueError(f"not a tag or digest: {ref!r}")


def check_digest(digest: str) -> None:
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not a digest: {digest!r}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_matches(data: bytes, digest: str) -> bool | None:
    """Whether ``data`` has ``digest``; None when its algorithm is not one we can compute."""
    algorithm, _, hexdigest = digest.partition(":")
    make = _HASHES.get(algorithm)
    return None if make is None else make(data).hexdigest() == hexdigest


def oci_error(body: bytes) -> tuple[str | None, str | None]:
    """The first OCI error of an answer's body: its code and message."""
    try:
        document = json.loads(body)
    except ValueError:
        return None, None
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    code, message = errors[0].get("code"), errors[0].get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None)
