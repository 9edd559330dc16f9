"""Docker's credentials for a registry, found as the Docker CLI finds them.

``config.json`` (``$DOCKER_CONFIG``, else ``~/.docker``): a credential helper named for the host, else the
``credsStore`` helper, else the ``auths`` entry; Docker Hub under its one key whatever name it is given by. A
helper is run with the host on its standard input, never in its arguments, and only by its name.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from ..dockerconfig import user_config_dir
from .protocol import DEFAULT_TIMEOUT, RegistryError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
"""Docker Hub's key in ``config.json`` and what its credential helpers are asked for."""
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API = "registry-1.docker.io"
IDENTITY_TOKEN_USER = "<token>"
"""The user name Docker gives an identity token (a refresh token for the registry's token server)."""

Credentials = tuple[str, str]
CredentialSource = Credentials | Callable[[], Credentials | None] | None
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
