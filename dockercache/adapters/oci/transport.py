"""How requests reach a registry: HTTPS or HTTP, the opener that sends them, redirects, what comes back.

A :class:`Connection` is one registry's base URL (its scheme decided as Docker decides it, see the package's
documentation), the opener and the timeout; it sends one request with the authorization it is given and gives
back any answer as a :class:`Response`, raising only when it could not talk to the registry at all. Who may be
sent what authorization is :mod:`.auth`'s business, not this module's.
"""

from __future__ import annotations

import http.client
import ipaddress
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any, Literal

from .credentials import DOCKER_HUB_API, DOCKER_HUB_HOSTS
from .protocol import MAX_ERROR_BODY, USER_AGENT

Scheme = Literal["auto", "https", "http"]


@dataclass
class Response:
    """An answer: its status, headers and body (at most the limit asked for; ``truncated`` when there was more)."""

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
        if authorization and origin(new.full_url) == origin(req.full_url):
            new.add_unredirected_header("Authorization", authorization)
        return new


def origin(url: str) -> tuple[str, str]:
    """A URL's scheme and ``host:port``, lower case: what decides whether credentials may go there."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def default_opener(*, verify: bool = True, proxies: bool = True) -> urllib.request.OpenerDirector:
    """The opener a :class:`Registry` uses unless given one: certificate checks unless ``verify`` is false,
    ``$HTTPS_PROXY``/``$NO_PROXY`` unless ``proxies`` is false (loopback is never proxied, as in Go)."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(None if proxies else {}), _LazyTLS(verify=verify), _Redirects()
    )


class _LazyTLS(urllib.request.HTTPSHandler):
    """HTTPS with a TLS context made at the first HTTPS request: loading the CA certificates takes 10-20 ms,
    which a registry spoken to in plain HTTP (on loopback) never needs."""

    def __init__(self, *, verify: bool) -> None:
        super().__init__()
        self._verify = verify
        self._made = False

    def https_open(self, req: urllib.request.Request) -> Any:
        if not self._made:
            context = ssl.create_default_context()
            if not self._verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context = context
            self._made = True
        return super().https_open(req)


def _tls_failure(exc: BaseException) -> bool:
    """Whether a connection failed in a way a plain-HTTP server answers a TLS handshake."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, (ssl.SSLError, ConnectionResetError))


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


class Connection:
    """How requests reach one registry: its base URL (``https://HOST`` or ``http://HOST``), the opener that sends
    them and the timeout of each.

    With scheme ``auto``, an insecure registry whose TLS handshake fails as a plain-HTTP server's does moves to
    ``http`` once, on its first request, and keeps it; the first answer settles the scheme for good.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool,
        scheme: Scheme,
        timeout: float,
        opener: urllib.request.OpenerDirector | None,
    ) -> None:
        api = DOCKER_HUB_API if host in DOCKER_HUB_HOSTS else host
        self.base = f"{'http' if scheme == 'http' else 'https'}://{api}"
        self.timeout = timeout
        self.opener = opener or default_opener(verify=not insecure, proxies=not is_loopback(host))
        self._may_fall_back = scheme == "auto" and insecure

    def url(self, target: str) -> str:
        """``target`` as a URL: a path on this registry, or an absolute URL (an upload's location) as it is."""
        return target if "://" in target else self.base + target

    def fall_back(self, exc: BaseException, url: str) -> bool:
        """Whether ``url`` failing with ``exc`` moved this registry to plain HTTP (then ask again), here or in a
        request that ran alongside (probes run side by side: each of their first handshakes fails)."""
        if not (_tls_failure(exc) and url.startswith("https://")):
            return False
        if self._may_fall_back:
            self._may_fall_back = False
            self.base = "http://" + self.base.removeprefix("https://")
            return True
        return self.base.startswith("http://") and url.startswith("https://" + self.base.removeprefix("http://"))

    def answered(self) -> None:
        """The registry answered: the scheme in use is its scheme."""
        self._may_fall_back = False

    def open(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str],
        authorization: str | None,
        limit: int,
    ) -> Response:
        """One request; ``authorization`` goes to this registry's origin only, never to where it redirects."""
        request = urllib.request.Request(url, data=data, method=method, headers={"User-Agent": USER_AGENT, **headers})
        if authorization and origin(url) == origin(self.base):
            request.add_unredirected_header("Authorization", authorization)
        try:
            with self.opener.open(request, timeout=self.timeout) as answer:
                body = b"" if method == "HEAD" else answer.read(limit + 1)
                return Response(answer.status, answer.headers, body[:limit], len(body) > limit)
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read(MAX_ERROR_BODY) if exc.fp is not None and method != "HEAD" else b""
            return Response(exc.code, exc.headers, body, False)

    def reason(self, exc: BaseException, mask: Callable[[str], str]) -> str:
        """Why talking to the registry failed, in a few words (``mask`` hides what must not be shown)."""
        reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return f"no answer within {self.timeout:g}s"
        if isinstance(reason, OSError) and reason.strerror:
            return mask(f"cannot connect to {self.base} ({reason.strerror})")
        return mask(f"cannot talk to {self.base} ({reason.__class__.__name__}: {reason})")
