"""A small client of the OCI distribution API, for dockercache's own registry cache manifests.

What it is for: copying a cache manifest to another tag (the bytes as the registry gave them, so the copy has
the same digest), putting one back, inspecting one, asking whether (and how large) a blob is, deleting the blobs
and manifests of a broken cache, listing tags; and uploading a small blob whole (tests, a config blob). It finds
credentials, picks HTTPS or HTTP and answers the registry's challenges the way the Docker CLI and daemon do:

- **Scheme** (``scheme``): ``"auto"`` (the default) does what Docker does: HTTPS. An insecure registry
  (``insecure=True``, as listed in the daemon's ``insecure-registries``; loopback, ``localhost``, 127.0.0.0/8 and
  ``[::1]``, always is one, as for Docker) gets HTTPS without certificate checks, then plain HTTP when the server
  speaks no TLS (the handshake fails), decided by the first request and kept for the client's life. So a
  plain-HTTP registry on loopback costs one failed handshake per client, and one with TLS (a test registry with
  its own certificate) keeps working. ``"https"`` and ``"http"`` use that scheme only (``"https"`` checks
  certificates unless the registry is insecure).
- **Authentication**: the first request carries no credentials. A ``401`` with ``Basic`` is answered with the
  credentials (sent first on every later request); ``Bearer realm=..,service=..,scope=..`` with a token from the
  realm for the scope the challenge names (else ``repository:NAME:pull``, ``pull,push`` or ``delete``), asked
  with Basic credentials when there are some, anonymously otherwise. Tokens are kept per scope for the client's
  life, a refused one is asked for again once; once a registry has said Bearer, tokens are asked for before the
  request. A Docker identity token (user name ``<token>``) is exchanged as Docker does (OAuth2
  ``grant_type=refresh_token`` to the realm); a registry that asks for Basic gets no identity token.
- **Credentials** (:func:`docker_credentials`), found when a registry first asks for them: as the Docker CLI does.
- **Errors**: :class:`RegistryError` (a :class:`~dockercache.errors.StoreError`: a cache problem), one line naming
  the host, the repository, what was asked, and the HTTP status and OCI error code; never a credential or token
  (a registry's own message is masked before it is quoted). ``timeout`` bounds every request (10 s).

What it is not: a general registry client. No blob downloads, no chunked or resumed uploads, no cross-repository
mounts, no referrers or catalog, no image reference parsing (callers give a host and a repository as the registry
names it: Docker Hub's ``library/`` is theirs to add), no Docker Hub mirrors, no client certificates
(``certs.d``), no connection reuse (a request is a connection). Manifests are at most 4 MiB (containerd's
limit); an uploaded blob is held in memory. Standard library only. A client may be shared by threads: its
caches are plain dictionaries, whose worst race is one token asked for twice.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Literal

from ..errors import StoreError
from ..secrets import Redactor, shorten
from .dockerconfig import user_config_dir

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
MAX_TAG_PAGES = 1000
USER_AGENT = "dockercache"

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
"""Docker Hub's key in ``config.json`` and what its credential helpers are asked for."""
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API = "registry-1.docker.io"
IDENTITY_TOKEN_USER = "<token>"
"""The user name Docker gives an identity token (a refresh token for the registry's token server)."""

Credentials = tuple[str, str]
Scheme = Literal["auto", "https", "http"]
CredentialSource = Credentials | Callable[[], Credentials | None] | None

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.I)


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


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: its scheme (lower case) and parameters (keys lower case)."""

    scheme: str
    params: Mapping[str, str]


_TOKEN_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(_TOKEN_CHARS)
_PARAM = re.compile(rf'({_TOKEN_CHARS})[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s,"]*)')


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value (RFC 9110 11.6.1; several headers joined by commas).

    ``Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"``: quoted
    values may hold commas and escaped quotes. A token68 (``Negotiate abc==``) is skipped, not understood.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(header):
        if header[pos] in " \t,":
            pos += 1
            continue
        param = _PARAM.match(header, pos)
        if param:
            if challenges:
                value = param[2]
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                challenges[-1][1].setdefault(param[1].lower(), value)
            pos = param.end()
            continue
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            pos += 1  # not HTTP syntax: skip the character
            continue
        challenges.append((scheme[0].lower(), {}))
        pos = scheme.end()
    return [Challenge(scheme, params) for scheme, params in challenges]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name``, ``name:port``, ``[v6]:port``) is this machine: ``localhost``, 127.0.0.0/8, ::1."""
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _credential_key(host: str) -> str:
    return DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host


def _hostname(key: str) -> str:
    """A ``config.json`` ``auths`` key as the Docker CLI compares it (``ConvertToHostname``)."""
    for prefix in ("http://", "https://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return key.partition("/")[0]


def docker_credentials(
    host: str, environ: Mapping[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> Credentials | None:
    """The (user name, secret) the Docker CLI would use for ``host`` (``host:port``; Docker Hub by any of its
    names), or None: anonymous.

    Read from ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``: a helper named in ``credHelpers``
    for the host, else the ``credsStore`` helper, else the ``auths`` entry (its base64 ``auth``, else
    ``username``/``password``, else ``identitytoken``), matched as Docker matches it (``HOST``,
    ``https://HOST``, ``http://HOST/v2/``...; Docker Hub: ``https://index.docker.io/v1/``). As in Docker, a
    configured helper is the only place asked: it finding nothing (or failing, or missing) means anonymous.
    A helper gets the host on its standard input (``docker-credential-NAME get``, run with ``environ``), never in
    its arguments. An identity token comes back as (``<token>``, token), as Docker stores it.
    A ``config.json`` that cannot be read or parsed is a :class:`RegistryError`.
    """
    environ = os.environ if environ is None else environ
    key = _credential_key(host)
    path = user_config_dir(environ) / "config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise RegistryError(host, None, f"cannot read Docker's configuration {path} ({reason})") from None
    if not isinstance(document, dict):
        return None
    helpers = document.get("credHelpers")
    helper = helpers.get(key) if isinstance(helpers, dict) else None
    if helper is None:
        helper = document.get("credsStore") or None
    if helper is not None:
        return _from_helper(str(helper), key, environ, timeout)
    auths = document.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = auths.get(key)
    if entry is None:
        wanted = _hostname(key)
        entry = next((value for name, value in auths.items() if _hostname(name) == wanted), None)
    return _from_entry(entry) if isinstance(entry, dict) else None


def _from_entry(entry: Mapping[str, Any]) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, password = base64.b64decode(encoded, validate=False).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if sep and user:
            return user, password.strip("\x00")
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name and isinstance(secret, str):
        return name, secret
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return IDENTITY_TOKEN_USER, token
    return None


def _from_helper(name: str, key: str, environ: Mapping[str, str], timeout: float) -> Credentials | None:
    if not _HELPER_NAME.fullmatch(name):
        return None  # a path, not a helper's name: Docker would run whatever it names; we do not
    program = shutil.which(f"docker-credential-{name}", path=environ.get("PATH", os.defpath))
    if program is None:
        return None
    try:
        answer = subprocess.run(
            [program, "get"], input=key.encode(), capture_output=True, env=dict(environ), timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if answer.returncode != 0:
        return None  # "credentials not found in native keychain", or a broken helper: anonymous, as Docker
    try:
        document = json.loads(answer.stdout)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    user, secret = document.get("Username"), document.get("Secret")
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    return (user or IDENTITY_TOKEN_USER), secret


def _check_repo(repo: str) -> None:
    if not REPOSITORY.fullmatch(repo) or len(repo) > 255:
        raise ValueError(f"not a repository name: {repo!r}")


def _check_ref(ref: str) -> None:
    if not (TAG.fullmatch(ref) or DIGEST.fullmatch(ref)):
        raise ValueError(f"not a tag or digest: {ref!r}")


def _check_digest(digest: str) -> None:
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not a digest: {digest!r}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _matches(data: bytes, digest: str) -> bool | None:
    """Whether ``data`` has ``digest``; None when its algorithm is not one we can compute."""
    algorithm, _, hexdigest = digest.partition(":")
    make = _HASHES.get(algorithm)
    return None if make is None else make(data).hexdigest() == hexdigest


@dataclass
class _Response:
    status: int
    headers: Message
    body: bytes
    truncated: bool


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects keep a ``HEAD`` a ``HEAD`` (Python 3.10 made it a ``GET``) and the ``Authorization`` header only
    on the same origin: a blob redirected to S3 or a CDN never sees the registry's credentials."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        if req.get_method() == "HEAD":
            new.method = "HEAD"
        authorization = req.get_header("Authorization")
        if authorization and _origin(new.full_url) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", authorization)
        return new


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def default_opener(*, verify: bool = True, proxies: bool = True) -> urllib.request.OpenerDirector:
    """The opener a :class:`Registry` uses unless given one: certificate checks unless ``verify`` is false,
    ``$HTTPS_PROXY``/``$NO_PROXY`` unless ``proxies`` is false (loopback is never proxied, as in Go)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(None if proxies else {}),
        urllib.request.HTTPSHandler(context=context),
        _Redirects(),
    )


def _tls_failure(exc: BaseException) -> bool:
    """Whether a connection failed in a way a plain-HTTP server answers a TLS handshake."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, (ssl.SSLError, ConnectionResetError))


def _oci_error(body: bytes) -> tuple[str | None, str | None]:
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


class Registry:
    """A client of one registry host (``host`` or ``host:port``; Docker Hub by any of its names).

    ``credentials``: (user, secret), or a function that finds them (asked once, when the registry first asks);
    :meth:`from_docker_config` uses Docker's. ``insecure``: the host is one of Docker's insecure registries
    (loopback always is). ``scheme``: see the module's documentation. ``opener``: an ``OpenerDirector`` to send
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
        api = DOCKER_HUB_API if host in DOCKER_HUB_HOSTS else host
        self._base = f"{'http' if scheme == 'http' else 'https'}://{api}"
        self._may_fall_back = scheme == "auto" and self.insecure
        self._opener = opener or default_opener(verify=not self.insecure, proxies=not is_loopback(host))
        self._source = credentials
        self._credentials: Credentials | None = None
        self._looked_up = False
        self._tokens: dict[str, str] = {}
        self._aliases: dict[str, str] = {}  # our scope -> the scope the registry's challenges name for it
        self._bearer: Challenge | None = None
        self._basic: str | None = None
        self._redactor = redactor
        self._secrets = Redactor()

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
        return f"Registry({self.host!r}, base={self._base!r})"

    @property
    def base_url(self) -> str:
        """``https://HOST`` or ``http://HOST``: the scheme in use (``auto``: decided by the first request)."""
        return self._base

    # --- the API --------------------------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> Manifest | None:
        """The manifest ``repo:ref`` (a tag or a digest), byte for byte; None when the registry has none."""
        _check_repo(repo)
        _check_ref(ref)
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
            if claimed and DIGEST.fullmatch(claimed) and _matches(body, claimed) is False:
                raise RegistryError(self.host, repo, f"{what}: the manifest's bytes do not have digest {claimed}")
        return Manifest(body, media_type, digest)

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        """Store ``body`` as ``repo:tag`` (a tag, or the body's own digest); its sha256 digest."""
        _check_repo(repo)
        _check_ref(tag)
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
        if said and DIGEST.fullmatch(said) and _matches(body, said) is False:
            raise RegistryError(self.host, repo, f"{what}: the registry stored it as {said}, not {digest}")
        return digest

    def head_blob(self, repo: str, digest: str) -> int | None:
        """The size of blob ``digest`` in ``repo``; None when the registry has none there."""
        _check_repo(repo)
        _check_digest(digest)
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
        _check_repo(repo)
        _check_digest(digest)
        if _matches(data, digest) is not True:
            raise ValueError(f"the data do not have digest {digest}")
        what = f"upload blob {digest}"
        started = self._send("POST", f"/v2/{repo}/blobs/uploads/", repo, "pull,push", what, data=b"")
        self._expect(started, repo, what, (202,))
        location = started.headers.get("Location")
        if not location:
            raise RegistryError(self.host, repo, f"{what}: no Location in the answer", status=started.status)
        url = urllib.parse.urljoin(f"{self._base}/v2/{repo}/blobs/uploads/", location)
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
        _check_repo(repo)
        _check_digest(digest)
        return self._delete(repo, f"/v2/{repo}/blobs/{digest}", f"DELETE blob {digest}")

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete manifest ``digest`` (and so every tag naming it) from ``repo``: as :meth:`delete_blob`. Only by
        digest: registries delete no tag alone."""
        _check_repo(repo)
        _check_digest(digest)
        return self._delete(repo, f"/v2/{repo}/manifests/{digest}", f"DELETE manifest {digest}")

    def tags(self, repo: str) -> list[str]:
        """The tags of ``repo``, in the registry's order, every page (``Link: <...>; rel="next"``); [] for a
        repository the registry does not know."""
        _check_repo(repo)
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
        code, _ = _oci_error(response.body)
        if response.status == 405 or code == "UNSUPPORTED":
            return False
        if response.status == 404:
            return True
        self._expect(response, repo, what)
        return True

    def _next_page(self, response: _Response, repo: str, target: str) -> str | None:
        match = _NEXT_LINK.search(", ".join(response.headers.get_all("Link") or []))
        if match is None:
            return None
        url = urllib.parse.urljoin(self._base + target, str(match[1]))
        if _origin(url) != _origin(self._base):
            raise RegistryError(self.host, repo, "GET tags/list: the next page is on another host")
        parts = urllib.parse.urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _expect(self, response: _Response, repo: str, what: str, statuses: Iterable[int] = ()) -> None:
        wanted = set(statuses)
        if (response.status in wanted) if wanted else (200 <= response.status < 300):
            return
        code, message = _oci_error(response.body)
        problem = f"{what}: HTTP {response.status}" + (f" {code}" if code else "")
        if message:
            problem += f" ({shorten(message, 200, self._mask)})"
        if response.status == 401 and self._looked_up and self._credentials is None:
            problem += f"; no credentials known for {self.host}"
        raise RegistryError(self.host, repo, self._mask(problem), status=response.status, code=code)

    def _mask(self, text: str) -> str:
        return self._secrets(text)

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
    ) -> _Response:
        """``method`` on ``target`` (a path on this registry, or an absolute URL: an upload's location), with
        whatever authorization the registry asks for; any status comes back, only failing to talk is raised."""
        while True:
            url = target if "://" in target else self._base + target
            try:
                response = self._authorized(method, url, f"repository:{repo}:{actions}", data, headers or {}, limit)
            except (OSError, http.client.HTTPException) as exc:
                if self._may_fall_back and _tls_failure(exc) and url.startswith("https://"):
                    self._may_fall_back = False
                    self._base = "http://" + self._base.removeprefix("https://")
                    continue
                raise RegistryError(self.host, repo, f"{what}: {self._reason(exc)}") from None
            self._may_fall_back = False  # it answered: this is its scheme
            return response

    def _reason(self, exc: BaseException) -> str:
        reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return f"no answer within {self.timeout:g}s"
        if isinstance(reason, OSError) and reason.strerror:
            return self._mask(f"cannot connect to {self._base} ({reason.strerror})")
        return self._mask(f"cannot talk to {self._base} ({reason.__class__.__name__}: {reason})")

    def _open(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str],
        authorization: str | None,
        limit: int,
    ) -> _Response:
        request = urllib.request.Request(url, data=data, method=method, headers={"User-Agent": USER_AGENT, **headers})
        if authorization and _origin(url) == _origin(self._base):
            request.add_unredirected_header("Authorization", authorization)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                body = b"" if method == "HEAD" else answer.read(limit + 1)
                return _Response(answer.status, answer.headers, body[:limit], len(body) > limit)
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read(MAX_ERROR_BODY) if exc.fp is not None and method != "HEAD" else b""
            return _Response(exc.code, exc.headers, body, False)

    def _authorized(
        self, method: str, url: str, scope: str, data: bytes | None, headers: Mapping[str, str], limit: int
    ) -> _Response:
        """A request with the authorization known to work, else none; then up to two answered challenges."""
        fresh: set[str] = set()  # scopes whose token was issued during this request
        sent_scope: str | None = None  # the scope of the token sent, when one was
        authorization = self._basic
        if authorization is None and self._bearer is not None:
            sent_scope = self._aliases.get(scope, scope)
            authorization = f"Bearer {self._token(self._bearer, sent_scope, fresh)}"
        for _ in range(3):
            response = self._open(method, url, data, headers, authorization, limit)
            if response.status != 401:
                return response
            challenges = parse_challenges(", ".join(response.headers.get_all("WWW-Authenticate") or []))
            bearer = next((c for c in challenges if c.scheme == "bearer" and c.params.get("realm")), None)
            if bearer is not None:
                self._bearer = bearer
                wanted = bearer.params.get("scope") or scope
                if wanted != scope:
                    self._aliases[scope] = wanted  # ask for what this registry wants at once, next time
                if wanted == sent_scope:
                    if wanted in fresh:
                        return response  # a token just issued was refused: the credentials lack the rights
                    self._tokens.pop(wanted, None)  # expired, or issued before the credentials were known
                sent_scope = wanted
                authorization = f"Bearer {self._token(bearer, wanted, fresh)}"
            elif any(c.scheme == "basic" for c in challenges):
                basic = self._basic_header()
                if basic is None or basic == authorization:
                    return response
                self._basic = authorization = basic
            else:
                return response
        return response

    def _token(self, challenge: Challenge, scope: str, fresh: set[str]) -> str:
        token = self._tokens.get(scope)
        if token is None:
            token = self._tokens[scope] = self._fetch_token(challenge, scope)
            fresh.add(scope)
        return token

    def _basic_header(self) -> str | None:
        """``Basic`` and the credentials, or None without any (an identity token is no Basic credential)."""
        credentials = self._lookup()
        if credentials is None or credentials[0] == IDENTITY_TOKEN_USER:
            return None
        encoded = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
        self._remember(encoded)
        return f"Basic {encoded}"

    def _lookup(self) -> Credentials | None:
        if not self._looked_up:
            source = self._source
            self._credentials = source() if callable(source) else source
            self._looked_up = True
            if self._credentials is not None:
                self._remember(self._credentials[1])
        return self._credentials

    def _remember(self, secret: str) -> None:
        self._secrets.add([secret])
        if self._redactor is not None:
            self._redactor.add([secret])

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        """A token for ``scope`` from the challenge's realm (kept for the client's life)."""
        realm = challenge.params.get("realm", "")
        origin = _origin(realm)
        what = f"token for {scope} from {origin[1] or realm}"
        repo = scope.split(":")[1] if scope.count(":") >= 2 else None
        if origin[0] not in ("https", "http") or not origin[1]:
            raise RegistryError(self.host, repo, f"{what}: the realm is not an HTTP URL")
        service = challenge.params.get("service")
        credentials = self._lookup()
        scopes = [("scope", s) for s in scope.split()]
        headers = {"User-Agent": USER_AGENT}
        if credentials is not None and credentials[0] == IDENTITY_TOKEN_USER:
            form = [("grant_type", "refresh_token"), ("refresh_token", credentials[1]), ("client_id", USER_AGENT)]
            form += [("service", service)] if service else []
            form += [("scope", scope)]
            request = urllib.request.Request(
                realm, data=urllib.parse.urlencode(form).encode(), method="POST", headers=headers
            )
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        else:
            query = urllib.parse.urlencode([*([("service", service)] if service else []), *scopes])
            separator = "&" if urllib.parse.urlsplit(realm).query else "?"
            request = urllib.request.Request(f"{realm}{separator}{query}", method="GET", headers=headers)
            basic = self._basic_header()
            if basic is not None:
                request.add_unredirected_header("Authorization", basic)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                body = answer.read(MAX_MANIFEST)
        except urllib.error.HTTPError as exc:
            with exc:
                code, _ = _oci_error(exc.read(MAX_ERROR_BODY) if exc.fp is not None else b"")
            refused = " (the credentials were refused)" if exc.code == 401 and credentials is not None else ""
            problem = f"{what}: HTTP {exc.code}" + (f" {code}" if code else "") + refused
            raise RegistryError(self.host, repo, self._mask(problem), status=exc.code, code=code) from None
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(self.host, repo, f"{what}: {self._reason(exc)}") from None
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        token = None
        if isinstance(document, dict):
            token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(self.host, repo, f"{what}: the answer holds no token")
        self._remember(token)
        return token
