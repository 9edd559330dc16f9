"""The registry operations: a :class:`Registry` is a client of one registry host.

Get, put and delete manifests, ask for and upload blobs, delete blobs, list tags: each checks its names before
asking, sends its request through the client's :class:`~.auth.Authorizer` (which answers the registry's
challenges) and :class:`~.transport.Connection` (which picks the scheme), and turns an answer that is not what
the protocol says into a :class:`~.protocol.RegistryError` naming the host, the repository and what was asked.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping

from ...secrets import Redactor, shorten
from .auth import Authorizer
from .credentials import CredentialSource, docker_credentials
from .protocol import (
    DEFAULT_TIMEOUT,
    DIGEST,
    MANIFEST_TYPES,
    MAX_MANIFEST,
    Manifest,
    RegistryError,
    check_digest,
    check_ref,
    check_repo,
    digest_matches,
    oci_error,
    sha256_digest,
)
from .transport import Connection, Response, Scheme, is_loopback, origin

MAX_TAG_PAGES = 1000
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.I)


class Registry:
    """A client of one registry host (``host`` or ``host:port``; Docker Hub by any of its names).

    ``credentials``: (user, secret), or a function that finds them (asked once, when the registry first asks);
    :meth:`from_docker_config` uses Docker's. ``insecure``: the host is one of Docker's insecure registries
    (loopback always is). ``scheme``: see the package's documentation. ``opener``: an ``OpenerDirector`` to send
    requests with (tests); it then decides proxies, certificate checks and redirects itself. ``redactor``: given
    each secret (password, token) as it arrives, so that whatever prints through it masks them.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: CredentialSource = None,
        insecure: bool = False,
        scheme: Scheme = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        opener: urllib.request.OpenerDirector | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        if scheme not in ("auto", "https", "http"):
            raise ValueError(f"scheme must be auto, https or http, not {scheme!r}")
        self.host = host
        self.timeout = timeout
        self.insecure = insecure or is_loopback(host)
        self._connection = Connection(host, insecure=self.insecure, scheme=scheme, timeout=timeout, opener=opener)
        self._auth = Authorizer(host, self._connection, credentials, redactor)

    @classmethod
    def from_docker_config(
        cls,
        host: str,
        environ: Mapping[str, str] | None = None,
        *,
        insecure: bool = False,
        scheme: Scheme = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        opener: urllib.request.OpenerDirector | None = None,
        redactor: Redactor | None = None,
    ) -> Registry:
        """A client that logs in, when asked to, with what Docker's configuration holds for ``host``."""
        env = os.environ if environ is None else environ
        return cls(
            host,
            credentials=lambda: docker_credentials(host, env, timeout=timeout),
            insecure=insecure,
            scheme=scheme,
            timeout=timeout,
            opener=opener,
            redactor=redactor,
        )

    def __repr__(self) -> str:
        return f"Registry({self.host!r}, base={self._connection.base!r})"

    @property
    def base_url(self) -> str:
        """``https://HOST`` or ``http://HOST``: the scheme in use (``auto``: decided by the first request)."""
        return self._connection.base

    # --- the API --------------------------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> Manifest | None:
        """The manifest ``repo:ref`` (a tag or a digest), byte for byte; None when the registry has none."""
        check_repo(repo)
        check_ref(ref)
        what = f"GET manifest {ref}"
        response = self._send(
            "GET", f"/v2/{repo}/manifests/{ref}", repo, "pull", what, headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if response.status == 404:
            return None
        self._expect(response, repo, what)
        if response.truncated:
            raise RegistryError(self.host, repo, f"{what}: larger than {MAX_MANIFEST // (1024 * 1024)} MiB")
        body = response.body
        media_type = (response.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if media_type not in MANIFEST_TYPES:  # some registries say application/json: the document says which
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            named = document.get("mediaType") if isinstance(document, dict) else None
            if named not in MANIFEST_TYPES:
                shown = media_type or "none"
                raise RegistryError(self.host, repo, f"{what}: not an OCI or Docker manifest (media type {shown})")
            media_type = str(named)
        digest = sha256_digest(body)
        said = response.headers.get("Docker-Content-Digest")
        for claimed in (ref, said):
            if claimed and DIGEST.fullmatch(claimed) and digest_matches(body, claimed) is False:
                raise RegistryError(self.host, repo, f"{what}: the manifest's bytes do not have digest {claimed}")
        return Manifest(body, media_type, digest)

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        """Store ``body`` as ``repo:tag`` (a tag, or the body's own digest); its sha256 digest."""
        check_repo(repo)
        check_ref(tag)
        what = f"PUT manifest {tag}"
        response = self._send(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            repo,
            "pull,push",
            what,
            data=body,
            headers={"Content-Type": media_type},
        )
        self._expect(response, repo, what)
        digest = sha256_digest(body)
        said = response.headers.get("Docker-Content-Digest")
        if said and DIGEST.fullmatch(said) and digest_matches(body, said) is False:
            raise RegistryError(self.host, repo, f"{what}: the registry stored it as {said}, not {digest}")
        return digest

    def head_blob(self, repo: str, digest: str) -> int | None:
        """The size of blob ``digest`` in ``repo``; None when the registry has none there."""
        check_repo(repo)
        check_digest(digest)
        what = f"HEAD blob {digest}"
        response = self._send("HEAD", f"/v2/{repo}/blobs/{digest}", repo, "pull", what)
        if response.status == 404:
            return None
        self._expect(response, repo, what)
        length = response.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise RegistryError(self.host, repo, f"{what}: no Content-Length in the answer", status=response.status)
        return int(length)

    def put_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Upload ``data`` as blob ``digest``, whole (``POST`` then one ``PUT``): for small blobs only."""
        check_repo(repo)
        check_digest(digest)
        if digest_matches(data, digest) is not True:
            raise ValueError(f"the data do not have digest {digest}")
        what = f"upload blob {digest}"
        started = self._send("POST", f"/v2/{repo}/blobs/uploads/", repo, "pull,push", what, data=b"")
        self._expect(started, repo, what, (202,))
        location = started.headers.get("Location")
        if not location:
            raise RegistryError(self.host, repo, f"{what}: no Location in the answer", status=started.status)
        url = urllib.parse.urljoin(f"{self._connection.base}/v2/{repo}/blobs/uploads/", location)
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.urlencode(
            [*urllib.parse.parse_qsl(parts.query, keep_blank_values=True), ("digest", digest)]
        )
        headers = {"Content-Type": "application/octet-stream"}
        done = self._send(
            "PUT", parts._replace(query=query).geturl(), repo, "pull,push", what, data=data, headers=headers
        )
        self._expect(done, repo, what)

    def delete_blob(self, repo: str, digest: str) -> bool:
        """Delete blob ``digest`` from ``repo``: True once it is gone (deleted, or there was none), False when the
        registry does not delete blobs (``405``, ``UNSUPPORTED``: distribution without ``delete.enabled``, ECR)."""
        check_repo(repo)
        check_digest(digest)
        return self._delete(repo, f"/v2/{repo}/blobs/{digest}", f"DELETE blob {digest}")

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete manifest ``digest`` (and so every tag naming it) from ``repo``: as :meth:`delete_blob`. Only by
        digest: registries delete no tag alone."""
        check_repo(repo)
        check_digest(digest)
        return self._delete(repo, f"/v2/{repo}/manifests/{digest}", f"DELETE manifest {digest}")

    def tags(self, repo: str) -> list[str]:
        """The tags of ``repo``, in the registry's order, every page (``Link: <...>; rel="next"``); [] for a
        repository the registry does not know."""
        check_repo(repo)
        what = "GET tags/list"
        target: str | None = f"/v2/{repo}/tags/list"
        seen: set[str] = set()
        tags: list[str] = []
        while target is not None and target not in seen:
            if len(seen) >= MAX_TAG_PAGES:
                raise RegistryError(self.host, repo, f"{what}: more than {MAX_TAG_PAGES} pages")
            seen.add(target)
            response = self._send("GET", target, repo, "pull", what, limit=16 * MAX_MANIFEST)
            if response.status == 404 and not tags:
                return []
            self._expect(response, repo, what)
            try:
                document = json.loads(response.body)
            except ValueError:
                document = None
            page = document.get("tags") if isinstance(document, dict) else None
            if response.truncated or not (page is None or isinstance(page, list)):
                raise RegistryError(self.host, repo, f"{what}: the answer is not a tag list")
            tags.extend(tag for tag in page or () if isinstance(tag, str))
            target = self._next_page(response, repo, target)
        return tags

    # --- requests -------------------------------------------------------------------------------------------

    def _delete(self, repo: str, path: str, what: str) -> bool:
        response = self._send("DELETE", path, repo, "delete", what)
        code, _ = oci_error(response.body)
        if response.status == 405 or code == "UNSUPPORTED":
            return False
        if response.status == 404:
            return True
        self._expect(response, repo, what)
        return True

    def _next_page(self, response: Response, repo: str, target: str) -> str | None:
        match = _NEXT_LINK.search(", ".join(response.headers.get_all("Link") or []))
        if match is None:
            return None
        url = urllib.parse.urljoin(self._connection.base + target, str(match[1]))
        if origin(url) != origin(self._connection.base):
            raise RegistryError(self.host, repo, "GET tags/list: the next page is on another host")
        parts = urllib.parse.urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _expect(self, response: Response, repo: str, what: str, statuses: Iterable[int] = ()) -> None:
        wanted = set(statuses)
        if (response.status in wanted) if wanted else (200 <= response.status < 300):
            return
        code, message = oci_error(response.body)
        problem = f"{what}: HTTP {response.status}" + (f" {code}" if code else "")
        if message:
            problem += f" ({shorten(message, 200, self._auth.mask)})"
        if response.status == 401 and self._auth.found_none:
            problem += f"; no credentials known for {self.host}"
        raise RegistryError(self.host, repo, self._auth.mask(problem), status=response.status, code=code)

    def _send(
        self,
        method: str,
        target: str,
        repo: str,
        actions: str,
        what: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        limit: int = MAX_MANIFEST,
    ) -> Response:
        """``method`` on ``target`` (a path on this registry, or an absolute URL: an upload's location), with
        whatever authorization the registry asks for; any status comes back, only failing to talk is raised."""
        while True:
            url = self._connection.url(target)
            try:
                response = self._auth.send(method, url, f"repository:{repo}:{actions}", data, headers or {}, limit)
            except (OSError, http.client.HTTPException) as exc:
                if self._connection.fall_back(exc, url) and self._connection.url(target) != url:
                    continue
                reason = self._connection.reason(exc, self._auth.mask)
                raise RegistryError(self.host, repo, f"{what}: {reason}") from None
            self._connection.answered()  # it answered: this is its scheme
            return response
