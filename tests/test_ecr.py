"""dockercache.adapters.ecr: which registry entries log in with an ECR token, the token call against a real moto server
(in process, on a free port), its failures as one line naming the registry, and the password's redaction."""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path
from typing import Any

import boto3
import moto.settings
import pytest
from botocore.stub import Stubber

from dockercache import commands
from dockercache.adapters.ecr import credentials, decode_token, make_client
from dockercache.config.caches import LocalCache
from dockercache.config.ecr_hosts import EcrRegistry, is_ecr_host, token_registry
from dockercache.config.load import parse_config
from dockercache.config.model import RegistryLogin
from dockercache.errors import ConfigError, EnvironmentProblem
from dockercache.output.console import Console
from dockercache.run.runner import Runner
from dockercache.secrets import MASK, Redactor

from .test_runner import FakeDocker, Log, plan_for

ACCOUNT = "123456789012"
PRIVATE = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
#: What moto's GetAuthorizationToken answers: base64 "AWS:<account>-auth-token".
MOTO_PASSWORD = f"{ACCOUNT}-auth-token"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A credential chain of this test's own: keys in the environment, no config files, no endpoint override."""
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADOCKERCACHEECR01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ecr-test-secret-key-0123456789abcdefghij")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ------------------------------------------------------------------------------------------ which entries


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (PRIVATE, ("ecr", "eu-west-1", False)),
        (f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn", ("ecr", "cn-north-1", False)),
        (f"{ACCOUNT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com", ("ecr", "us-gov-west-1", True)),
        (f"{ACCOUNT}.dkr-ecr.eu-central-1.on.aws", ("ecr", "eu-central-1", False)),  # dual-stack
        ("public.ecr.aws", ("ecr-public", "us-east-1", False)),
        ("12345.dkr.ecr.eu-west-1.amazonaws.com", None),  # an account id has 12 digits
        (f"{PRIVATE}.evil.example", None),
        (f"evil-{PRIVATE}", None),
        (f"{PRIVATE}:443", None),
        ("public.ecr.aws.evil.example", None),
        ("api.ecr.eu-west-1.amazonaws.com", None),
        ("localhost:5000", None),
        ("ghcr.io", None),
    ],
)
def test_ecr_hosts_without_a_password_log_in_with_a_token(host: str, expected: tuple[str, str, bool] | None) -> None:
    registry = token_registry(host, RegistryLogin())
    assert is_ecr_host(host) is (expected is not None)
    assert (registry.service, registry.region, registry.fips) == expected if registry else expected is None


def test_a_password_or_ecr_false_means_no_token_and_ecr_true_any_host() -> None:
    assert token_registry(PRIVATE, RegistryLogin(username="AWS", password="from-a-variable")) is None
    assert token_registry(PRIVATE, RegistryLogin(ecr=False)) is None
    proxy = token_registry("localhost:5000", RegistryLogin(ecr=True))
    assert proxy == EcrRegistry("localhost:5000", public=False, region=None)  # the credential chain's region
    login = RegistryLogin(ecr=True, region="ap-south-1", profile="ci", endpoint_url="http://moto:5000")
    assert token_registry("mirror.example", login) == EcrRegistry(
        "mirror.example", region="ap-south-1", profile="ci", endpoint_url="http://moto:5000"
    )
    assert token_registry(PRIVATE, RegistryLogin(region="eu-west-2")).region == "eu-west-2"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ configuration


def config_with(entry: dict[str, Any], host: str = PRIVATE) -> Any:
    raw = {"services": {"app": {"context": "."}}, "registries": {host: entry}}
    return parse_config(raw, {"ECR_PW": "secret-from-variable"}, Path("dockercache.toml"))


def test_an_ecr_entry_needs_no_user_name_or_password() -> None:
    assert config_with({}).registries[PRIVATE] == RegistryLogin()
    assert config_with({"username": "AWS", "region": "eu-west-1"}).registries[PRIVATE].username == "AWS"
    forced = config_with(
        {"ecr": True, "region": "us-east-1", "endpoint_url": "http://127.0.0.1:5002"}, "localhost:5000"
    )
    assert forced.registries["localhost:5000"].ecr is True
    # A password still logs in the old way, on ECR hosts too.
    assert config_with({"username": "AWS", "password": "${ECR_PW}"}).registries[PRIVATE].password == (
        "secret-from-variable"
    )


@pytest.mark.parametrize(
    ("host", "entry", "message"),
    [
        ("r:5000", {"username": "ci"}, "registries.r:5000.password: missing (required; only an ECR host"),
        ("r:5000", {}, "registries.r:5000.password: missing"),
        (PRIVATE, {"ecr": False}, f"registries.{PRIVATE}.password: missing"),
        ("r:5000", {"password": "${ECR_PW}"}, "registries.r:5000.username: missing (required with a password)"),
        ("r:5000", {"ecr": True, "username": "u", "password": "${ECR_PW}"}, "registries.r:5000.ecr: an entry with a"),
        (PRIVATE, {"username": "ci"}, f"registries.{PRIVATE}.username: an ECR token logs in as 'AWS'"),
        ("r:5000", {"username": "u", "password": "${ECR_PW}", "region": "eu-west-1"}, "r:5000.region: only for ECR"),
        ("r:5000", {"username": "u", "password": "${ECR_PW}", "profile": "ci"}, "r:5000.profile: only for ECR"),
        (PRIVATE, {"endpoint_url": "moto:5000"}, f"registries.{PRIVATE}.endpoint_url: not an http(s) URL"),
        (PRIVATE, {"ecr": "yes"}, f'registries."{PRIVATE}".ecr: expected a boolean'),
        (PRIVATE, {"region": ""}, f'registries."{PRIVATE}".region: must not be empty'),
        (PRIVATE, {"regoin": "eu-west-1"}, "unknown key (did you mean 'region'?)"),
    ],
)
def test_misused_registry_keys_are_one_line_naming_the_key(host: str, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with(entry, host)
    assert str(caught.value).startswith("dockercache.toml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------ the token call


def test_a_private_ecr_password_comes_from_the_token_call_and_is_redacted_first(moto_url: str) -> None:
    redact = Redactor()
    user, password = credentials(PRIVATE, RegistryLogin(endpoint_url=moto_url), redact)
    assert (user, password) == ("AWS", MOTO_PASSWORD)
    token = base64.b64encode(f"AWS:{MOTO_PASSWORD}".encode()).decode()  # what docker login stores, too
    assert redact(f"password {MOTO_PASSWORD}, token {token}") == f"password {MASK}, token {MASK}"


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"])
def test_boto3s_endpoint_variables_point_the_token_call_elsewhere(
    moto_url: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, moto_url)
    assert credentials(PRIVATE, RegistryLogin(), Redactor()) == ("AWS", MOTO_PASSWORD)


def test_ecr_true_with_a_profile_from_the_shared_files(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile ci]\nregion = us-east-1\naws_access_key_id = AKIAPROFILEKEY000001\n"
        "aws_secret_access_key = profile-secret-0123456789abcdefghijklmn\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    login = RegistryLogin(ecr=True, profile="ci", endpoint_url=moto_url)
    assert credentials("localhost:5000", login, Redactor()) == ("AWS", MOTO_PASSWORD)


def test_a_login_with_a_password_never_asks_aws() -> None:
    def no_client(registry: EcrRegistry) -> Any:
        raise AssertionError("asked AWS")

    login = RegistryLogin(username="ci", password="from-a-variable")
    assert credentials("r:5000", login, Redactor(), no_client) == ("ci", "from-a-variable")


def test_public_ecr_asks_ecr_public_in_us_east_1() -> None:
    registry = token_registry("public.ecr.aws", RegistryLogin())
    assert registry is not None
    client = make_client(registry)
    assert client.meta.service_model.service_name == "ecr-public" and client.meta.region_name == "us-east-1"
    token = base64.b64encode(b"AWS:public-password-123").decode()
    with Stubber(client) as stub:
        stub.add_response("get_authorization_token", {"authorizationData": {"authorizationToken": token}})
        redact = Redactor()
        assert credentials("public.ecr.aws", RegistryLogin(), redact, lambda r: client) == (
            "AWS",
            "public-password-123",
        )
    assert redact("public-password-123") == MASK


def test_a_fips_host_asks_the_fips_endpoint() -> None:
    registry = token_registry(f"{ACCOUNT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com", RegistryLogin())
    assert registry is not None
    assert make_client(registry).meta.endpoint_url == "https://ecr-fips.us-gov-west-1.amazonaws.com"


# ------------------------------------------------------------------------------------------ failures


def failure(host: str, login: RegistryLogin, clients: Any = None) -> str:
    with pytest.raises(EnvironmentProblem) as caught:
        credentials(host, login, Redactor(), *([clients] if clients else []))
    message = str(caught.value)
    assert caught.value.exit_code == 3 and "\n" not in message and host in message
    return message


def stubbed_error(code: str, message: str, status: int = 400) -> Any:
    client = boto3.client("ecr", region_name="eu-west-1")
    stub = Stubber(client)
    stub.add_client_error("get_authorization_token", code, message, status)
    stub.activate()
    return lambda registry: client


def test_an_unreachable_endpoint_is_one_line_naming_the_registry() -> None:
    url = closed_port_url()
    message = failure(PRIVATE, RegistryLogin(endpoint_url=url))
    assert message == f"ECR login to {PRIVATE} failed: cannot connect to {url}/"


def test_an_expired_token_is_one_line_naming_the_registry() -> None:
    clients = stubbed_error("ExpiredTokenException", "The security token included in the request is expired")
    assert failure(PRIVATE, RegistryLogin(), clients) == (
        f"ECR login to {PRIVATE} failed: ExpiredTokenException: The security token included in the request is expired"
    )


def test_unknown_keys_are_refused_by_the_server(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys against its IAM
    message = failure(PRIVATE, RegistryLogin(endpoint_url=moto_url))
    assert message.endswith("failed: InvalidClientTokenId: The security token included in the request is invalid.")


def test_a_user_without_the_permission_is_denied(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_url)
    iam.create_user(UserName="no-ecr")
    key = iam.create_access_key(UserName="no-ecr")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    message = failure(PRIVATE, RegistryLogin(endpoint_url=moto_url))
    assert "failed: AccessDenied: User: arn:aws:iam::123456789012:user/no-ecr is not authorized to perform: " in message
    assert "ecr:GetAuthorizationToken" in message


def test_no_credentials_no_region_and_an_unknown_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    url = closed_port_url()
    assert failure(PRIVATE, RegistryLogin(endpoint_url=url)).endswith(
        "failed: no AWS credentials found (environment, profile or instance role)"
    )
    assert failure("localhost:5000", RegistryLogin(ecr=True)).endswith(
        "failed: no AWS region (set the entry's region, or AWS_REGION)"
    )
    assert failure(PRIVATE, RegistryLogin(profile="nowhere")).endswith("failed: AWS profile 'nowhere' not found")


@pytest.mark.parametrize(
    "token", ["not base64!", base64.b64encode(b"no-colon").decode(), base64.b64encode(b"root:pw-123456").decode()]
)
def test_a_token_that_is_not_aws_password_is_refused_without_quoting_it(token: str) -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        decode_token(token, PRIVATE)
    assert token not in str(caught.value) and PRIVATE in str(caught.value)


# ------------------------------------------------------------------------------------------ runner and plan


class RecordingDocker(FakeDocker):
    logins: list[tuple[str, str, str]]

    def login(self, server: str, username: str, password: str) -> None:
        self.log.add(f"docker login {server}")
        self.logins.append((server, username, password))


def test_the_runner_asks_for_the_token_after_the_daemon_answers_and_logs_in_with_it(
    moto_url: str, tmp_path: Path
) -> None:
    log = Log()
    docker = RecordingDocker(log)
    docker.logins = []
    err = io.StringIO()
    redact = Redactor()
    console = Console(out=io.StringIO(), err=err, redact=redact)

    def asked(host: str, login: RegistryLogin) -> tuple[str, str]:
        log.add(f"token {host}")
        return credentials(host, login, redact)

    login = RegistryLogin(ecr=True, region="us-east-1", endpoint_url=moto_url)
    runner = Runner(docker, console, logins={"localhost:5000": login}, credentials=asked)  # type: ignore[arg-type]
    result = runner.run(plan_for(LocalCache(type="local", path="cache"), tmp_path))
    assert result.exit_code == 0, result.error
    assert log.index("docker ping") < log.index("token localhost:5000") < log.index("docker login localhost:5000")
    assert docker.logins == [("localhost:5000", "AWS", MOTO_PASSWORD)]
    assert "logging in to localhost:5000 as AWS (password on stdin)" in err.getvalue()
    assert MOTO_PASSWORD not in err.getvalue()


def test_plan_shows_an_ecr_login_without_asking_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("plan asked AWS for a token")

    monkeypatch.setattr("dockercache.adapters.ecr.fetch_token", never)
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    (tmp_path / "dockercache.toml").write_text(
        f'[registries."{PRIVATE}"]\n[registries."localhost:5000"]\necr = true\n'
        '[registries."r:5000"]\nusername = "ci"\npassword = "${REGISTRY_PASSWORD}"\n'
        '[services.app]\ncontext = "."\n'
    )
    env = {"REGISTRY_PASSWORD": "from-a-variable", "BUILDKITE_COMMIT": "0" * 40, "BUILDKITE_BRANCH": "main"}
    out = io.StringIO()
    environment = commands.Environment(env=env, cwd=tmp_path, console=Console(out, io.StringIO()))
    commands.cmd_plan(environment, None, commands.options_from(None), as_json=False)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("login: ")]
    assert lines == [
        f"login: AWS@{PRIVATE} (ECR token from the AWS credential chain)",
        "login: AWS@localhost:5000 (ECR token from the AWS credential chain)",
        "login: ci@r:5000 (password on stdin)",
    ]
    out = io.StringIO()
    environment = commands.Environment(env=env, cwd=tmp_path, console=Console(out, io.StringIO()))
    commands.cmd_plan(environment, None, commands.options_from(None), as_json=True)
    assert json.loads(out.getvalue())["logins"] == [
        {"registry": PRIVATE, "username": "AWS"},
        {"registry": "localhost:5000", "username": "AWS"},
        {"registry": "r:5000", "username": "ci"},
    ]
