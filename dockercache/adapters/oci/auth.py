"""Authorization against a registry: its ``WWW-Authenticate`` challenges answered as Docker answers them.

An :class:`Authorizer` sends a request with the authorization known to work (none at first), and answers up to
two challenges: ``Basic`` with the credentials, ``Bearer`` with a token from the challenge's realm for the scope
it names (kept per scope for the client's life; a Docker identity token exchanged as an OAuth2 refresh token).
Credentials are looked up once, when a registry first asks for them. Every secret it learns (password, token)
is masked in what it says, and handed to the caller's redactor.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from ...secrets import Redactor
from .credentials import IDENTITY_TOKEN_USER, Credentials, CredentialSource
from .protocol import MAX_ERROR_BODY, MAX_MANIFEST, USER_AGENT, RegistryError, oci_error
from .transport import Connection, Response, origin


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


class Authorizer:
    """The authorization of one client's requests to registry ``host`` (sent through ``connection``):
    ``credentials`` (or the function that finds them), the tokens issued so far, the challenge last seen."""

    def __init__(
        self, host: str, connection: Connection, credentials: CredentialSource, redactor: Redactor | None
    ) -> None:
        self.host = host
        self._connection = connection
        self._source = credentials
        self._credentials: Credentials | None = None
        self._looked_up = False
        self._tokens: dict[str, str] = {}
        self._aliases: dict[str, str] = {}  # our scope -> the scope the registry's challenges name for it
        self._bearer: Challenge | None = None
        self._basic: str | None = None
        self._redactor = redactor
        self._secrets = Redactor()

    @property
    def found_none(self) -> bool:
        """Whether credentials were looked for and none were found."""
        return self._looked_up and self._credentials is None

    def mask(self, text: str) -> str:
        return self._secrets(text)

    def send(
        self, method: str, url: str, scope: str, data: bytes | None, headers: Mapping[str, str], limit: int
    ) -> Response:
        """A request with the authorization known to work, else none; then up to two answered challenges."""
        fresh: set[str] = set()  # scopes whose token was issued during this request
        sent_scope: str | None = None  # the scope of the token sent, when one was
        authorization = self._basic
        if authorization is None and self._bearer is not None:
            sent_scope = self._aliases.get(scope, scope)
            authorization = f"Bearer {self._token(self._bearer, sent_scope, fresh)}"
        for _ in range(3):
            response = self._connection.open(method, url, data, headers, authorization, limit)
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
        where = origin(realm)
        what = f"token for {scope} from {where[1] or realm}"
        repo = scope.split(":")[1] if scope.count(":") >= 2 else None
        if where[0] not in ("https", "http") or not where[1]:
            raise RegistryError(self.host, repo, f"{what}: the realm is not an HTTP URL")
        credentials = self._lookup()
        request = self._token_request(realm, challenge.params.get("service"), scope, credentials)
        connection = self._connection
        try:
            with connection.opener.open(request, timeout=connection.timeout) as answer:
                body = answer.read(MAX_MANIFEST)
        except urllib.error.HTTPError as exc:
            with exc:
                code, _ = oci_error(exc.read(MAX_ERROR_BODY) if exc.fp is not None else b"")
            refused = " (the credentials were refused)" if exc.code == 401 and credentials is not None else ""
            problem = f"{what}: HTTP {exc.code}" + (f" {code}" if code else "") + refused
            raise RegistryError(self.host, repo, self.mask(problem), status=exc.code, code=code) from None
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(self.host, repo, f"{what}: {connection.reason(exc, self.mask)}") from None
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

    def _token_request(
        self, realm: str, service: str | None, scope: str, credentials: Credentials | None
    ) -> urllib.request.Request:
        """The request for a token: an identity token's OAuth2 refresh (``POST``), else a ``GET`` with the
        scopes in its query and the Basic credentials, when there are some."""
        headers = {"User-Agent": USER_AGENT}
        if credentials is not None and credentials[0] == IDENTITY_TOKEN_USER:
            form = [("grant_type", "refresh_token"), ("refresh_token", credentials[1]), ("client_id", USER_AGENT)]
            form += [("service", service)] if service else []
            form += [("scope", scope)]
            request = urllib.request.Request(
                realm, data=urllib.parse.urlencode(form).encode(), method="POST", headers=headers
            )
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
            return request
        scopes = [("scope", s) for s in scope.split()]
        query = urllib.parse.urlencode([*([("service", service)] if service else []), *scopes])
        separator = "&" if urllib.parse.urlsplit(realm).query else "?"
        request = urllib.request.Request(f"{realm}{separator}{query}", method="GET", headers=headers)
        basic = self._basic_header()
        if basic is not None:
            request.add_unredirected_header("Authorization", basic)
        return request
