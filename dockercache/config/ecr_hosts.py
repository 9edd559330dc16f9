"""ECR registry names: which registry logins take an ECR token, from which API and region (no AWS call)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import RegistryLogin


#: The user name of every ECR token login.
USERNAME = "AWS"


PUBLIC_HOST = "public.ecr.aws"


#: ECR Public's API lives in us-east-1, whichever region the images are pulled in.
PUBLIC_REGION = "us-east-1"


#: Private registry hosts, as Amazon's ECR credential helper matches them (ecr-login/api/client.go): account,
#: ``dkr.ecr`` or dual-stack ``dkr-ecr``, optional ``-fips``, region, and the partitions' domains.
PRIVATE_HOST = re.compile(
    r"(\d{12})\.dkr[.-]ecr(-fips)?\.([a-zA-Z0-9][a-zA-Z0-9_-]*)\."
    r"(?:amazonaws\.(?:com(?:\.cn)?|eu)|on\.(?:aws|amazonwebservices\.com\.cn)"
    r"|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)"
)


@dataclass(frozen=True)
class EcrRegistry:
    """Where an ECR token login gets its token: which API, in which region, with which profile and endpoint."""

    host: str
    public: bool = False
    region: str | None = None  # None: the credential chain's (AWS_REGION, the profile's region)
    fips: bool = False
    profile: str | None = None
    endpoint_url: str | None = None  # None: AWS's own, or AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL (boto3 reads them)

    @property
    def service(self) -> str:
        return "ecr-public" if self.public else "ecr"


def is_ecr_host(host: str) -> bool:
    """Whether ``host`` names an ECR registry (private, in any partition, or public ECR)."""
    return host == PUBLIC_HOST or PRIVATE_HOST.fullmatch(host) is not None


def token_registry(host: str, login: RegistryLogin) -> EcrRegistry | None:
    """The ECR registry ``login`` gets a token from, or None for a login with its own password.

    An entry logs in with a token when it has no password and either its host is ECR's or it says
    ``ecr = true`` (an ECR pull-through proxy or a test registry, whose name does not tell).
    """
    if login.password is not None or login.ecr is False or not (login.ecr or is_ecr_host(host)):
        return None
    match = PRIVATE_HOST.fullmatch(host)
    public = host == PUBLIC_HOST
    region = login.region or (match[3] if match else PUBLIC_REGION if public else None)
    return EcrRegistry(
        host=host,
        public=public,
        region=region,
        fips=bool(match and match[2]),
        profile=login.profile,
        endpoint_url=login.endpoint_url,
    )


def login_user(host: str, login: RegistryLogin) -> str:
    """The user name ``login`` logs in as (``AWS`` for an ECR token login)."""
    return USERNAME if token_registry(host, login) is not None else login.username or ""
