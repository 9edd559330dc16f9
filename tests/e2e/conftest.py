"""The real stack for end-to-end tests: Docker with buildx, a registry and an S3 server on loopback.

scripts/stack.sh starts them (.ci/run does so before the tests). Nothing here skips: a missing stack fails
every end-to-end test loudly, with the command that starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT
from .agents import Daemon, preflight, start_daemon

STACK_ENV = ROOT / ".stack" / "env"
EXAMPLE = ROOT / "examples" / "ruby"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _stack_values() -> dict[str, str]:
    values = {
        "DOCKERCACHE_REGISTRY": "localhost:5000",
        "DOCKERCACHE_S3_ENDPOINT": "http://127.0.0.1:5002",
        "DOCKERCACHE_BASE_IMAGE": "localhost:5000/dockercache/busybox:stable",
    }
    if STACK_ENV.is_file():
        for line in STACK_ENV.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            if key in values:
                values[key] = value
    for key in values:
        values[key] = os.environ.get(key, values[key])
    return values


class Registry:
    """The registry's HTTP API (distribution v2)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.base = f"http://{host}/v2"

    def get(self, path: str) -> tuple[Mapping[str, str], Any]:
        request = urllib.request.Request(f"{self.base}/{path}", headers={"Accept": MANIFEST_TYPES})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(response.headers), json.loads(response.read() or b"null")

    def tags(self, repo: str) -> list[str]:
        try:
            return sorted(self.get(f"{repo}/tags/list")[1].get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def manifest(self, repo: str, ref: str) -> tuple[str, Any]:
        headers, body = self.get(f"{repo}/manifests/{ref}")
        return headers["Docker-Content-Digest"], body


@dataclass
class Stack:
    registry: Registry
    s3_endpoint: str
    base_image: str

    @property
    def host(self) -> str:
        return self.registry.host


@pytest.fixture(scope="session")
def stack() -> Stack:
    values = _stack_values()
    problems = []
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        problems.append("Docker daemon")
    registry = Registry(values["DOCKERCACHE_REGISTRY"])
    try:
        registry.get("")
    except (OSError, urllib.error.URLError):
        problems.append(f"registry at {registry.host}")
    try:
        urllib.request.urlopen(values["DOCKERCACHE_S3_ENDPOINT"] + "/moto-api/", timeout=5).close()
    except (OSError, urllib.error.URLError):
        problems.append(f"S3 server at {values['DOCKERCACHE_S3_ENDPOINT']}")
    if problems:
        pytest.fail(f"the test stack is not running ({', '.join(problems)}): run `bash scripts/stack.sh up`")
    return Stack(registry, values["DOCKERCACHE_S3_ENDPOINT"], values["DOCKERCACHE_BASE_IMAGE"])


SHARED_AGENT = os.environ.get("DOCKERCACHE_E2E_AGENT") == "shared"
"""``DOCKERCACHE_E2E_AGENT=shared``: the ``agent`` fixture keeps the main daemon (pruned by ``fresh_agent()``),
for a machine where a second dockerd cannot run; what those tests prove is then weaker."""


@dataclass
class Agents:
    """Which daemon the test's docker, buildx and dockercache calls reach: the main one, or (``agent`` fixture)
    a private daemon with an empty data root, taken when first needed and replaced by ``fresh_agent()``.

    Starting a daemon takes about 1.1 s and stopping one about as long; neither is on a test's path: one spare
    daemon (never used, so as empty as a new one) is started in the background while a test runs, and a retired
    daemon is stopped and removed in the background. The session's end stops whatever is left."""

    private: bool = False
    current: Daemon | None = None
    spare: Future[Daemon] | None = None
    stopping: list[Future[None]] = field(default_factory=list)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=4))
    taken: int = 0

    def host(self) -> str | None:
        """The private daemon's DOCKER_HOST (taking one if there is none yet), None on the main daemon."""
        if not self.private:
            return None
        if self.current is None:
            ready, self.spare = self.spare, self.pool.submit(start_daemon)
            self.current = (ready or self.pool.submit(start_daemon)).result()
            self.taken += 1
        return self.current.host

    def prepare(self) -> None:
        """Have a spare daemon starting (a test that takes the ``agent`` fixture will want one)."""
        if self.spare is None:
            self.spare = self.pool.submit(start_daemon)

    def retire(self) -> None:
        if self.current is not None:
            self.stopping.append(self.pool.submit(self.current.stop))
            self.current = None

    def close(self) -> None:
        self.retire()
        if self.spare is not None:
            with contextlib.suppress(Exception):
                self.spare.result().stop()
            self.spare = None
        for stopping in self.stopping:
            stopping.result()
        self.stopping.clear()


AGENTS = Agents()


def docker_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) pointed at the test's daemon."""
    values = dict(os.environ if env is None else env)
    host = AGENTS.host()
    if host is not None:
        values.pop("DOCKER_CONTEXT", None)
        values["DOCKER_HOST"] = host
    return values


@pytest.fixture(scope="session")
def agent_pool() -> Iterator[Agents]:
    """The private daemons of the session; at its end, the spare and the retired ones are stopped and removed."""
    try:
        yield AGENTS
    finally:
        AGENTS.close()


@pytest.fixture
def agent(agent_pool: Agents) -> Iterator[Agents]:
    """Every Docker call of the test goes to a private daemon with an empty data root (none of another test's
    build records, nor a cancelled build's that ``buildx prune`` cannot reach), so a cached step came from a cache
    store; ``fresh_agent()`` retires it and the next call takes another."""
    if SHARED_AGENT:
        yield agent_pool
        return
    problem = preflight()
    if problem:
        pytest.fail(f"the agent fixture needs a private dockerd: {problem} (or set DOCKERCACHE_E2E_AGENT=shared)")
    agent_pool.private = True
    agent_pool.prepare()
    try:
        yield agent_pool
    finally:
        agent_pool.retire()
        agent_pool.private = False


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, env=docker_env())


def fresh_agent(*builders: str) -> None:
    """What a new CI agent has: no build cache, no images, no extra builders. Under the ``agent`` fixture, a new
    daemon with an empty data root; else the main daemon pruned, which may keep a cancelled build's records."""
    for name in builders:
        docker("buildx", "rm", "--force", name, check=False)
    if AGENTS.private:
        AGENTS.retire()
        return
    docker("buildx", "prune", "--all", "--force", "--builder", "default")
    ids = docker("image", "ls", "--all", "--quiet").stdout.split()
    if ids:
        docker("image", "rm", "--force", *sorted(set(ids)), check=False)
    assert docker("image", "ls", "--all", "--quiet").stdout.strip() == ""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def stage(self, service: str, stage: str) -> dict[str, Any]:
        for svc in self.json["services"]:
            if svc["name"] == service:
                for s in svc["stages"]:
                    if s["stage"] == stage:
                        return dict(s)
        raise KeyError(f"{service}/{stage}")


DOCKERCACHE = Path(sys.executable).parent / "dockercache"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}
    env.update(
        {
            "CI": "true",
            "BUILDKITE_COMMIT": COMMIT,
            "BUILDKITE_BRANCH": "main",
            "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "main",
            "BUILDKITE_PIPELINE_SLUG": "example",
        }
    )
    env.update(extra)
    return docker_env(env)


def run_dockercache(*args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: int = 300) -> Result:
    argv = [str(DOCKERCACHE), *args]
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=docker_env(env or base_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr, argv)


@dataclass
class Project:
    path: Path
    name: str

    def write_config(self, text: str) -> None:
        (self.path / "dockercache.toml").write_text(text)

    def touch_source(self, text: str = "changed") -> None:
        with (self.path / "app" / "main.sh").open("a") as f:
            f.write(f"# {text} {uuid.uuid4().hex}\n")

    @property
    def user_cache(self) -> Path:
        """Where the built-in local store lives for this project's builds (``$DOCKERCACHE_CACHE_DIR``)."""
        return self.path.parent / "user-cache"

    def build(self, *args: str, **env: str) -> Result:
        env.setdefault("DOCKERCACHE_CACHE_DIR", str(self.user_cache))
        return run_dockercache("build", "--json", *args, cwd=self.path, env=base_env(**env))


def registry_config(stack: Stack, name: str, cache_host: str | None = None, settings: str = "") -> str:
    cache_host = cache_host or stack.host
    return f"""
[settings]
{settings}

[builder]
name = "default"
driver = "docker"

[caches.default]
type = "registry"
ref = "{cache_host}/{name}/cache"

[services.ruby]
context = "."
stages = ["base", "deps"]
target = "final"
image = "{stack.host}/{name}/ruby"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
"""


def copy_example(path: Path, name: str) -> None:
    """examples/ruby, its steps made this test's own: an ``ARG`` in the first stage enters every step's cache
    key, so build cache left in the daemon by other tests never answers (BuildKit 0.13 keeps records of
    cancelled builds until dockerd restarts, out of reach of ``buildx prune``)."""
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns(".dockercache"))
    dockerfile = path / "Dockerfile"
    text = dockerfile.read_text()
    first = "FROM ${BASE_IMAGE} AS base\n"
    assert first in text
    dockerfile.write_text(text.replace(first, f"{first}ARG TEST_RUN={name}\n", 1))


@pytest.fixture
def project(stack: Stack, tmp_path: Path) -> Project:
    """A copy of examples/ruby with its own registry repositories (so tests never share a cache)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    path = tmp_path / "ruby"
    copy_example(path, name)
    project = Project(path, name)
    project.write_config(registry_config(stack, name))
    return project


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ExtraRegistry:
    host: str
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def extra_registry(tmp_path: Path) -> Iterator[ExtraRegistry]:
    """A second registry instance (for caches), which a test may stop."""
    port = free_port()
    root = tmp_path / "registry2"
    root.mkdir()
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    registry = ExtraRegistry(f"localhost:{port}", process)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1).close()
            break
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    else:
        registry.stop()
        pytest.fail("the second registry did not start")
    yield registry
    registry.stop()


SECRET_KEY = "dcSecretKey+9f3e7a1b2c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f"
ACCESS_KEY = "AKIADOCKERCACHETEST1"
STUB_AGENT = ROOT / "tests" / "bin"


@dataclass
class S3Project(Project):
    bucket: str = ""
    agent_dir: Path = Path()
    stub_dir: Path = Path()
    endpoint: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "BUILDKITE": "true",
            "BUILDKITE_AGENT_STUB_DIR": str(self.stub_dir),
            "BUILDKITE_JOB_ID": uuid.uuid4().hex,
            "BUILDKITE_STEP_ID": "build-step",
            "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/example/builds/1",
            "PATH": f"{STUB_AGENT}:{os.environ['PATH']}",
        }
        values.update(extra)
        return base_env(**values)

    def build(self, *args: str, **env: str) -> Result:
        return run_dockercache("build", "--json", *args, cwd=self.path, env=self.env(**env))

    def run(self, *args: str, **env: str) -> Result:
        return run_dockercache(*args, cwd=self.path, env=self.env(**env))

    def crashing_build(self, snapshot: str) -> Result:
        """A build whose process dies between a snapshot's blobs and its index (tests/bin's wrapper)."""
        proc = subprocess.run(
            [sys.executable, str(STUB_AGENT / "dockercache-crash-before-index"), "build", "--json"],
            cwd=self.path,
            env=docker_env(self.env(CRASH_BEFORE_INDEX=snapshot)),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, [])

    def fresh_agent(self) -> None:
        fresh_agent()
        shutil.rmtree(self.agent_dir, ignore_errors=True)

    def new_build(self) -> None:
        """Another Buildkite build: meta-data and annotations start empty."""
        shutil.rmtree(self.stub_dir, ignore_errors=True)

    def meta_data(self) -> dict[str, str]:
        path = self.stub_dir / "meta-data.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def annotations(self) -> dict[str, Any]:
        path = self.stub_dir / "annotations.json"
        return json.loads(path.read_text()) if path.exists() else {}


def s3_config(stack: Stack, name: str, bucket: str, extra: str = "", endpoint: str | None = None) -> str:
    return f"""
[builder]
name = "default"
driver = "docker"

[caches.s3]
type = "s3"
bucket = "{bucket}"
prefix = "cache"
endpoint_url = "{endpoint or stack.s3_endpoint}"
region = "us-east-1"
{extra}

[services.ruby]
context = "."
stages = ["base", "deps"]
target = "final"
image = "{stack.host}/{name}/ruby"
metadata_key = "docker-compose"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
"""


@pytest.fixture
def s3_client(stack: Stack) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def s3_project(stack: Stack, tmp_path: Path, s3_client: Any) -> S3Project:
    name = f"t{uuid.uuid4().hex[:10]}"
    path = tmp_path / "ruby"
    copy_example(path, name)
    s3_client.create_bucket(Bucket=name)
    project = S3Project(
        path, name, bucket=name, agent_dir=tmp_path / "agent", stub_dir=tmp_path / "bk", endpoint=stack.s3_endpoint
    )
    project.write_config(s3_config(stack, name, name))
    return project


def sample_cmdlines(stop: threading.Event, seen: list[str]) -> None:
    """Every process's arguments, as often as possible, until ``stop`` (secrets must never be among them)."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        time.sleep(0.02)
