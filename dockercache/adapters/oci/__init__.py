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

Its modules, each using only those above it: :mod:`.protocol` (media types, names, digests, manifests,
:class:`RegistryError`), :mod:`.credentials` (Docker's credentials), :mod:`.transport` (the scheme, the opener,
one request), :mod:`.auth` (challenges, credentials and tokens), :mod:`.registry` (:class:`Registry`: the
operations). The names below are the client's: import them from here.
"""

from .auth import Challenge, parse_challenges
from .credentials import (
    DOCKER_HUB_KEY,
    IDENTITY_TOKEN_USER,
    Credentials,
    CredentialSource,
    docker_credentials,
)
from .protocol import (
    DEFAULT_TIMEOUT,
    DIGEST,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    RegistryError,
    sha256_digest,
)
from .registry import Registry
from .transport import Scheme, default_opener, is_loopback

__all__ = [
    "DEFAULT_TIMEOUT",
    "DIGEST",
    "DOCKER_HUB_KEY",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "IDENTITY_TOKEN_USER",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Challenge",
    "CredentialSource",
    "Credentials",
    "Manifest",
    "Registry",
    "RegistryError",
    "Scheme",
    "default_opener",
    "docker_credentials",
    "is_loopback",
    "parse_challenges",
    "sha256_digest",
]
