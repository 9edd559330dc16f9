"""The AWS adapter: the one module that imports boto3 and botocore.

It makes clients from the standard AWS credential chain (environment, profile, instance or task role) with
botocore's standard retries: S3 for the S3 store, ECR and ECR Public for token logins; and it says in one line
what a boto3 or botocore failure was. Credentials are never put in process arguments or printed.

boto3 takes about a tenth of a second to import: the S3 store's client imports this module when a bucket is
opened, the ECR adapter when a token is fetched; ``plan`` and ``check`` never do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.loaders
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

#: Every failure boto3 and botocore raise (``upload_file`` wraps failures in boto3's own S3UploadFailedError,
#: which is neither of botocore's).
ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)
ProfileNotFound = botocore.exceptions.ProfileNotFound


def client(service: str, *, profile: str | None, region: str | None, endpoint_url: str | None, **config: Any) -> Any:
    """A boto3 client of ``service``; ``config`` is botocore's client configuration (retries, timeouts, ...).
    Raises :data:`ProfileNotFound` for a profile the AWS configuration does not have."""
    core = botocore.session.Session()
    core.lazy_register_component("data_loader", lambda: _Loader.of(core))
    session = boto3.session.Session(botocore_session=core, profile_name=profile, region_name=region)
    return session.client(service, endpoint_url=endpoint_url, config=Config(**config))  # type: ignore[call-overload]


class _Loader(botocore.loaders.Loader):
    """botocore's data loader, which asks whether a service has a model without listing the 400-odd it knows:
    botocore lists every service directory twice per client (for its model and its endpoint rules), about 40 ms
    of each client's 0.1-0.15 s."""

    @classmethod
    def of(cls, core: botocore.session.Session) -> _Loader:
        """As botocore's own (``create_loader``): the ``data_path`` setting's directories searched first."""
        paths = core.get_config_variable("data_path")
        return cls(
            extra_search_paths=[os.path.expanduser(os.path.expandvars(p)) for p in paths.split(os.pathsep)]
            if paths
            else []
        )

    def list_available_services(self, type_name: str) -> list[str]:
        return _Services(self, type_name)


class _Services(list[str]):
    """The services with a ``type_name`` model: membership checked on the disk, the full list only when asked."""

    def __init__(self, loader: botocore.loaders.Loader, type_name: str) -> None:
        super().__init__()
        self._loader, self._type_name = loader, type_name

    def __contains__(self, name: object) -> bool:
        for root in self._loader.search_paths:
            directory = os.path.join(root, str(name))
            if os.path.isdir(directory):
                for version in os.listdir(directory):
                    if self._loader.file_loader.exists(os.path.join(directory, version, self._type_name)):
                        return True
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(botocore.loaders.Loader.list_available_services(self._loader, self._type_name))


def transfer_config(**options: Any) -> TransferConfig:
    """boto3's managed-transfer settings (multipart threshold and chunk size, concurrency)."""
    return TransferConfig(**options)


def error_code(exc: BaseException) -> str | None:
    """The code of an error the AWS service answered (``NoSuchKey``, ``404``, ...); None for any other failure."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "") or None
    return None


def operation(exc: BaseException) -> str | None:
    """The API call an error the AWS service answered came from (``HeadBucket``, ...)."""
    return getattr(exc, "operation_name", None) if isinstance(exc, botocore.exceptions.ClientError) else None


def reason(exc: BaseException, endpoint: str = "the endpoint") -> str:
    """One line for a boto3 or botocore failure: the service's code and message, or what kept the call from
    being made (no credentials, no region, an unknown profile, no connection to ``endpoint``)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _answered(exc)
    if isinstance(exc, boto3.exceptions.S3UploadFailedError):
        # "Failed to upload <local path> to <bucket/key>: An error occurred (Code) when calling ...: message"
        return str(exc).rsplit(": An error occurred ", 1)[-1]
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found (environment, profile or instance role)"
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return "no AWS region (set the entry's region, or AWS_REGION)"
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return f"AWS profile '{exc.kwargs.get('profile', '')}' not found"
    if isinstance(exc, botocore.exceptions.ConnectionError):
        return f"cannot connect to {exc.kwargs.get('endpoint_url', endpoint)}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _answered(exc: botocore.exceptions.ClientError) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code", "error")
    message = error.get("Message") or ""
    # A proxy (or a test server) may answer a JSON API in the XML error form; botocore then gives the HTTP
    # status as the code and the whole document as the message.
    inner = re.search(r"<Code>([^<]*)</Code>.*?<Message>([^<]*)</Message>", message, re.S)
    if inner:
        code, message = inner[1], inner[2]
    message = message.strip().splitlines()[0] if message.strip() else ""
    return f"{code}{': ' + message if message and message != code else ''}"
