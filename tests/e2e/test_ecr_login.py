"""End to end: a registry login with an ECR token, from the stack's moto server (which serves ECR's
GetAuthorizationToken beside S3) to a real ``docker login`` on the loopback registry (which takes any
credentials), with ``ecr = true`` standing in for an ECR host name. The password reaches ``docker login``'s
stdin and Docker's config only: never stdout, stderr, ``--json``, the plan or a process's arguments.

Docker's configuration is a directory of the test's own (``DOCKER_CONFIG``): the agent's is never touched.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

from .conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    Project,
    Stack,
    base_env,
    free_port,
    registry_config,
    run_dockercache,
    sample_cmdlines,
)

#: moto's token: base64 "AWS:<account>-auth-token", for its default account.
PASSWORD = "123456789012-auth-token"
TOKEN = base64.b64encode(f"AWS:{PASSWORD}".encode()).decode()


def ecr_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir(exist_ok=True)
    return base_env(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        DOCKER_CONFIG=str(docker_config),
        **extra,
    )


def ecr_entry(stack: Stack, endpoint: str | None) -> str:
    entry = f'[registries."{stack.host}"]\necr = true   # an ECR proxy, or this test\nregion = "us-east-1"\n'
    return entry + (f'endpoint_url = "{endpoint}"\n' if endpoint else "")


def docker_auth(tmp_path: Path, host: str) -> str | None:
    path = tmp_path / "docker-config" / "config.json"
    if not path.exists():
        return None
    auth = json.loads(path.read_text()).get("auths", {}).get(host, {}).get("auth")
    return base64.b64decode(auth).decode() if auth else None


def test_an_ecr_token_logs_in_with_its_password_on_stdin_only(project: Project, stack: Stack, tmp_path: Path) -> None:
    project.write_config(ecr_entry(stack, stack.s3_endpoint) + registry_config(stack, project.name))
    env = ecr_env(tmp_path)
    plan = run_dockercache("plan", cwd=project.path, env=env)
    assert plan.returncode == 0, plan.stderr
    assert f"login: AWS@{stack.host} (ECR token from the AWS credential chain)" in plan.stdout
    plan_json = run_dockercache("plan", "--json", cwd=project.path, env=env)
    assert json.loads(plan_json.stdout)["logins"] == [{"registry": stack.host, "username": "AWS"}]
    assert docker_auth(tmp_path, stack.host) is None  # plan asks neither AWS nor Docker

    stop = threading.Event()
    seen: list[str] = []
    sampler = threading.Thread(target=sample_cmdlines, args=(stop, seen))
    sampler.start()
    try:
        build = run_dockercache("build", "--json", cwd=project.path, env=env)
    finally:
        stop.set()
        sampler.join()
    assert build.returncode == 0, build.stderr
    assert f"logging in to {stack.host} as AWS (password on stdin)" in build.stderr
    assert build.json["exit_code"] == 0
    # The real `docker login` ran with the token's password: Docker stored exactly that.
    assert docker_auth(tmp_path, stack.host) == f"AWS:{PASSWORD}"
    assert any("buildx bake" in line for line in seen), "the sampler must have seen the build running"
    for text in (plan.stdout, plan.stderr, plan_json.stdout, plan_json.stderr, build.stdout, build.stderr):
        assert PASSWORD not in text and TOKEN not in text
    for cmdline in seen:
        assert PASSWORD not in cmdline and TOKEN not in cmdline, cmdline


def test_an_unreachable_ecr_endpoint_is_one_line_naming_the_registry_and_no_login(
    project: Project, stack: Stack, tmp_path: Path
) -> None:
    """boto3 reads AWS_ENDPOINT_URL_ECR itself; nothing listens there."""
    project.write_config(ecr_entry(stack, None) + registry_config(stack, project.name))
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = ecr_env(tmp_path, AWS_ENDPOINT_URL_ECR=endpoint)
    build = run_dockercache("build", cwd=project.path, env=env)
    assert build.returncode == 3, build.stderr
    assert build.stderr.splitlines()[-1] == (
        f"dockercache: error: ECR login to {stack.host} failed: cannot connect to {endpoint}/"
    )
    assert docker_auth(tmp_path, stack.host) is None
    as_json = run_dockercache("build", "--json", cwd=project.path, env=env)
    assert as_json.returncode == 3
    assert as_json.json["error"] == f"ECR login to {stack.host} failed: cannot connect to {endpoint}/"
