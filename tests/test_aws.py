"""dockercache.adapters.aws: clients as boto3 makes them, without listing every service botocore knows."""

from __future__ import annotations

import botocore.exceptions
import botocore.loaders
import pytest

from dockercache.adapters import aws


def test_a_client_is_made_without_listing_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore lists its 400-odd service directories twice per client to check that one exists; the adapter's
    loader checks that one only (about 40 ms of every S3 build)."""
    listed: list[str] = []
    real = botocore.loaders.Loader.list_available_services

    def listing(self: botocore.loaders.Loader, type_name: str) -> list[str]:
        listed.append(type_name)
        return real(self, type_name)  # type: ignore[no-any-return]

    monkeypatch.setattr(botocore.loaders.Loader, "list_available_services", listing)
    client = aws.client("s3", profile=None, region="eu-west-1", endpoint_url=None)
    assert client.meta.service_model.service_name == "s3"
    assert client.meta.region_name == "eu-west-1"
    assert listed == []


def test_an_unknown_service_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(botocore.exceptions.UnknownServiceError) as exc:
        aws.client("no-such-service", profile=None, region="eu-west-1", endpoint_url=None)
    assert "s3" in str(exc.value) and "ecr" in str(exc.value)


def test_the_services_are_botocores_when_listed() -> None:
    loader = aws._Loader()
    services = loader.list_available_services("service-2")
    assert "s3" in services and "ecr-public" in services and "no-such-service" not in services
    assert list(services) == botocore.loaders.Loader().list_available_services("service-2")


def test_a_missing_profile_is_still_botocores_error() -> None:
    with pytest.raises(aws.ProfileNotFound):
        aws.client("s3", profile="no-such-profile-here", region="eu-west-1", endpoint_url=None)
