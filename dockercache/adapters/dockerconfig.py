"""A Docker client configuration for one run: the user's own, plus logins that only this run's buildx sees.

The S3 store's registry endpoint (:mod:`dockercache.stores.s3.endpoint`) answers only requests that carry the run's
secret. BuildKit asks the buildx client for registry credentials (its session's auth provider reads the
client's configuration), so the secret travels as a login for the endpoint's address, in a configuration
directory made for this run alone:

- ``config.json`` is the user's, with one ``credHelpers`` entry per endpoint address naming a credential helper
  of this run (a two-line script in the run's private directory, first on buildx's ``PATH``). A helper rather
  than an ``auths`` entry: with a ``credsStore`` set (Docker Desktop, ``pass``), Docker asks that store for every
  host without a helper of its own, and the file's entry would be ignored;
- every other entry of the user's configuration directory (``buildx`` builders, ``contexts``, ``cli-plugins``)
  is linked, so buildx finds the same builders, context and plugins; what it writes there lands in the user's.

The directory is private (``0700``), exists only while the run's Docker commands do, and the secret is never
in a process argument or in the environment; the user's own ``config.json`` is never changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import EnvironmentProblem

HELPER_PREFIX = "dockercache-run-"
"""The run's credential helpers are ``docker-credential-dockercache-run-<n>``."""


def user_config_dir(environ: Mapping[str, str]) -> Path:
    """Where the Docker CLI reads its configuration: ``$DOCKER_CONFIG``, else ``~/.docker``."""
    given = environ.get("DOCKER_CONFIG")
    return Path(given) if given else Path(environ.get("HOME") or Path.home()) / ".docker"


def _user_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"{path}: cannot read Docker's configuration ({exc})") from None
    return document if isinstance(document, dict) else {}


def _helper(directory: Path, name: str, server: str, username: str, secret: str) -> None:
    answer = json.dumps({"ServerURL": server, "Username": username, "Secret": secret})
    path = directory / f"docker-credential-{name}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "w") as script:  # ``get`` is all buildx asks; anything else finds nothing
        script.write(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat <<'EOF'\n{answer}\nEOF\n")


@contextlib.contextmanager
def run_config(
    logins: Mapping[str, tuple[str, str]], environ: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """While open: the environment (``DOCKER_CONFIG``, ``PATH``) under which Docker commands also log in to each
    ``host:port`` of ``logins`` with its (user name, secret). Without logins: no directory, an empty environment."""
    environ = os.environ if environ is None else environ
    if not logins:
        yield {}
        return
    source = user_config_dir(environ)
    document = _user_config(source)
    with tempfile.TemporaryDirectory(prefix="dockercache-docker-") as private:  # mkdtemp: mode 0700
        root = Path(private)
        config, helpers = root / "config", root / "bin"
        config.mkdir()
        helpers.mkdir()
        if source.is_dir():
            for entry in source.iterdir():
                if entry.name != "config.json":
                    (config / entry.name).symlink_to(entry.resolve())
        named = dict(document.get("credHelpers") or {})
        for n, (host, (username, secret)) in enumerate(sorted(logins.items())):
            _helper(helpers, f"{HELPER_PREFIX}{n}", host, username, secret)
            named[host] = f"{HELPER_PREFIX}{n}"
        fd = os.open(config / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({**document, "credHelpers": named}, out)
        yield {"DOCKER_CONFIG": str(config), "PATH": f"{helpers}{os.pathsep}{environ.get('PATH', os.defpath)}"}
