"""Who may use a run's registry endpoint (:mod:`dockercache.stores.s3.endpoint`), and for what.

Only the repositories the run was granted exist. Only the writable ones take writes, and a manifest by tag
only under the tags the run saves, each once (:meth:`Access.allow_again` grants one again, and
:meth:`Access.permit` one more tag); the rest is refused (403). With a ``secret``, every request needs HTTP
Basic credentials (:data:`USERNAME` and the secret; a 401 challenges for them). This state is apart from what
the endpoint knows of S3, under a lock of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .endpoint_http import OciError

USERNAME = "dockercache"
"""The user name of the endpoint's Basic credentials (any name is accepted: the secret is the credential)."""
CHALLENGE = 'Basic realm="dockercache"'


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


class Access:
    """The repositories a run may use, its secret, and the tags it has written (each once)."""

    def __init__(self, repositories: Mapping[str, Repository], secret: str | None) -> None:
        if secret == "":
            raise ValueError("an endpoint's secret cannot be empty")
        self.repositories = dict(repositories)
        self.secret = secret
        """None: no credentials asked (tests)."""
        self._lock = threading.Lock()
        self._used: dict[tuple[str, str], str] = {}
        """(repository, tag) -> the manifest digest this run wrote under it (each tag once): its permit is used."""

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

    def repository(self, name: str, write: bool = False) -> Repository:
        """Repository ``name`` if the run may use it (``write``: write to it); else refused (404, 403)."""
        repo = self.repositories.get(name)
        if repo is None:
            raise OciError(404, "NAME_UNKNOWN", f"repository {name} is not served in this run")
        if write and not repo.writable:
            raise OciError(403, "DENIED", f"this run may not write snapshot key '{repo.key}'")
        return repo

    def check_tag(self, name: str, repo: Repository, tag: str) -> None:
        """Refuse a manifest PUT under ``tag`` before its body is read (the digest is not known yet)."""
        with self._lock:
            self._permit(name, repo, tag, None)

    def claim(self, name: str, repo: Repository, tag: str, digest: str) -> bool:
        """Use the tag's permit for manifest ``digest``; True when this run wrote that very manifest under it
        already (nothing to write again)."""
        with self._lock:
            if self._permit(name, repo, tag, digest):
                return True
            self._used[(name, tag)] = digest
            return False

    def release(self, name: str, tag: str) -> None:
        """The tag's permit is given back: its save failed, or was not written."""
        with self._lock:
            self._used.pop((name, tag), None)

    def written(self, name: str, tag: str) -> str | None:
        """The manifest digest this run wrote under the tag (None: none)."""
        with self._lock:
            return self._used.get((name, tag))

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
