"""The ECR adapter: a registry login's password from ECR's ``GetAuthorizationToken``, through boto3.

A ``[registries]`` entry for an ECR host without a password logs in as ``AWS`` with a token that the standard
AWS credential chain (environment, profile, instance or task role) gets: ``ecr:GetAuthorizationToken`` in the
host name's region for a private registry, ``ecr-public:GetAuthorizationToken`` in us-east-1 for
``public.ecr.aws``. The token (base64 ``AWS:<password>``) is fetched just before ``docker login``, its password
added to the redactor before anything can print it, and handed to ``docker login --password-stdin`` only.

Which entries log in so is decided from the host name alone (:mod:`dockercache.config.ecr_hosts`: pure, cheap);
boto3 is imported only when a token is fetched.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Protocol

from ..config.ecr_hosts import USERNAME, EcrRegistry, token_registry
from ..config.model import RegistryLogin
from ..errors import EnvironmentProblem
from ..secrets import Redactor

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecr_public import ECRPublicClient


def decode_token(token: str, host: str) -> str:
    """The password in an ECR token (base64 ``AWS:<password>``). The message never quotes the token."""
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        user, sep, password = "", "", ""
    if user != USERNAME or not sep or not password:
        raise EnvironmentProblem(f"ECR login to {host}: the authorization token is not base64 'AWS:<password>'")
    return password


def make_client(registry: EcrRegistry) -> ECRClient | ECRPublicClient:
    """A boto3 client of ``registry``'s token API, from the standard credential chain."""
    from . import aws  # start-up: boto3 is imported only when a token is fetched

    client: ECRClient | ECRPublicClient = aws.client(
        "ecr-public" if registry.public else "ecr",
        profile=registry.profile,
        region=registry.region,
        endpoint_url=registry.endpoint_url,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
        use_fips_endpoint=registry.fips or None,
    )
    return client


class ClientFactory(Protocol):
    def __call__(self, registry: EcrRegistry) -> Any: ...


def fetch_token(registry: EcrRegistry, clients: ClientFactory = make_client) -> str:
    """``registry``'s authorization token (base64 ``AWS:<password>``); a failure is one line naming the host."""
    from . import aws  # start-up: as above

    try:
        client = clients(registry)
        response = client.get_authorization_token()
        data = response["authorizationData"]
        token = data["authorizationToken"] if registry.public else data[0]["authorizationToken"]
    except aws.ERRORS as exc:
        raise EnvironmentProblem(
            f"ECR login to {registry.host} failed: {aws.reason(exc, 'the ECR endpoint')}"
        ) from None
    except (KeyError, IndexError, TypeError):
        raise EnvironmentProblem(f"ECR login to {registry.host} failed: no authorization token in the answer") from None
    return str(token)


def credentials(
    host: str, login: RegistryLogin, redact: Redactor, clients: ClientFactory = make_client
) -> tuple[str, str]:
    """The user name and password to log in to ``host`` with: the entry's own, or an ECR token's.

    A token's password (and the token, which is what ``docker login`` stores) is added to ``redact`` before
    this returns, so nothing printed afterwards can show it.
    """
    registry = token_registry(host, login)
    if registry is None:
        if login.username is None or login.password is None:  # the loader refuses such an entry
            raise EnvironmentProblem(f"no user name and password to log in to {host} with")
        return login.username, login.password
    token = fetch_token(registry, clients)
    redact.add((token,))
    password = decode_token(token, host)
    redact.add((password,))
    return USERNAME, password
