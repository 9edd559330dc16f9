"""Shared fixtures. The end-to-end ones are in tests/e2e/conftest.py and need the stack (scripts/stack.sh)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

import pytest

from dockercache.errors import StoreError
from dockercache.stores.s3.layout import SnapshotName
from dockercache.stores.s3.snapshots import BlobCorrupt, BlobMissing

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
"""Where the virtualenv's scripts (dockercache, invoke) are."""
BAD = sorted((FIXTURES / "bad").glob("*.toml"))
"""Broken configurations; each file's first line says what its error message must contain."""


def expectation(path: Path) -> str:
    """The part of the error message a bad fixture expects (its first line: ``# expect: ...``)."""
    first = path.read_text(errors="replace").splitlines()[0]
    match = re.match(r"#\s*expect:\s*(.+)", first)
    assert match, f"{path.name}: first line must be '# expect: <part of the message>'"
    return match.group(1).strip()


def run_cli(
    args: list[str], cwd: Path, shim: Path, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run a command with the recording docker shim first on PATH (``env`` added to the environment); returns
    the process and the docker calls."""
    log.unlink(missing_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}, **(env or {})}
    env["PATH"] = f"{shim}:{BIN}:{env['PATH']}"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@pytest.fixture(scope="session")
def docker_shim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A `docker` first on PATH that records every call and then runs the real one."""
    shim = tmp_path_factory.mktemp("shim")
    log = shim / "calls.log"
    real = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    (shim / "docker").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (shim / "docker").chmod(0o755)
    return shim, log


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal project: a three-stage Dockerfile and room for a dockercache.toml."""
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE=busybox\n"
        "FROM ${BASE_IMAGE} AS base\nRUN true\n"
        "FROM base AS deps\nRUN true\n"
        "FROM deps AS final\nRUN true\n"
    )
    return tmp_path


# ------------------------------------------------------------------------------------- fakes for S3

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


@dataclass
class Info:
    name: str
    modified: datetime
    size: int

    @property
    def key(self) -> str:
        return SnapshotName.parse(self.name).key


@dataclass(frozen=True)
class LeaseRecord:
    id: str
    modified: datetime
    blobs: tuple[str, ...]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class MemoryStore:
    """An S3 blob store in memory (dockercache.stores.s3.snapshots.BlobStore), for tests without S3."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    blob_dates: dict[str, datetime] = field(default_factory=dict)
    snapshots: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    leases_held: dict[str, LeaseRecord] = field(default_factory=dict)
    held_locks: set[str] = field(default_factory=set)
    uploads: list[str] = field(default_factory=list)
    lists: int = 0
    url: str = "mem://"
    down: bool = False
    """Every call fails, as an unreachable endpoint does."""

    def check(self) -> None:
        if self.down:
            raise StoreError(f"{self.url}: checking the bucket: cannot connect")

    def list_blobs(self) -> dict[str, int]:
        self.lists += 1
        return {d: len(b) for d, b in self.blobs.items()}

    def blob_times(self) -> dict[str, datetime]:
        return {d: self.blob_dates.get(d, NOW - timedelta(days=30)) for d in self.blobs}

    def head_blob(self, digest: str) -> int | None:
        return len(self.blobs[digest]) if digest in self.blobs else None

    def presign_blob(self, digest: str, seconds: int) -> str:
        return f"{self.url}blobs/{digest}?X-Amz-Signature=secret"

    def get_blob_bytes(self, digest: str, limit: int) -> bytes | None:
        return self.blobs.get(digest)

    def put_blob_bytes(self, digest: str, body: bytes) -> None:
        self.uploads.append(digest)
        self.blobs[digest] = body

    def upload_blob_fileobj(self, digest: str, fileobj: IO[bytes]) -> None:
        self.put_blob_bytes(digest, fileobj.read())

    def download_blob(self, digest: str, dest: Path) -> int:
        if digest not in self.blobs:
            raise BlobMissing(f"blob {digest} is missing")
        data = self.blobs[digest]
        if digest_of(data) != digest:
            raise BlobCorrupt(f"blob {digest} is corrupt")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return len(data)

    def get_snapshot(self, name: str) -> bytes | None:
        return self.snapshots[name][0] if name in self.snapshots else None

    def put_snapshot(self, name: str, body: bytes) -> None:
        self.snapshots[name] = (body, NOW)

    def list_snapshots(self, key_prefix: str = "") -> list[Info]:
        return [Info(n, t, len(b)) for n, (b, t) in self.snapshots.items() if n.startswith(key_prefix)]

    def copy_snapshot(self, source: str, target: str) -> None:
        self.snapshots[target] = self.snapshots[source]

    def delete_snapshots(self, names: Iterable[str]) -> None:
        for n in names:
            self.snapshots.pop(n, None)

    def delete_blobs(self, digests: Iterable[str]) -> None:
        for d in digests:
            self.blobs.pop(d, None)

    def put_lease(self, blobs: Sequence[str]) -> str:
        lease_id = f"lease{len(self.leases_held)}"
        self.leases_held[lease_id] = LeaseRecord(lease_id, NOW, tuple(blobs))
        return lease_id

    def delete_lease(self, lease_id: str) -> None:
        self.leases_held.pop(lease_id, None)

    def leases(self) -> list[LeaseRecord]:
        return list(self.leases_held.values())

    def begin_prune(self) -> str:
        lock = f"lock{len(self.held_locks)}"
        self.held_locks.add(lock)
        return lock

    def end_prune(self, lock_id: str) -> None:
        self.held_locks.discard(lock_id)

    def prune_locks(self) -> set[str]:
        return set(self.held_locks)


def export(directory: Path, *contents: bytes) -> Path:
    """A BuildKit-style local cache export: blobs, and an index naming the first blob as the manifest."""
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    digests = []
    for data in contents:
        hexdigest = hashlib.sha256(data).hexdigest()
        (blob_dir / hexdigest).write_bytes(data)
        digests.append(f"sha256:{hexdigest}")
    (directory / "index.json").write_text(json.dumps({"manifests": [{"digest": digests[0]}]}))
    return directory


def save_snapshot(store: MemoryStore, name: str, *contents: bytes, modified: datetime = NOW) -> dict[str, int]:
    """A snapshot as the endpoint writes one: its blobs, then an index naming the first as the manifest."""
    from dockercache.stores.s3.snapshots import snapshot_document

    blobs = {}
    for data in contents:
        store.blobs[digest_of(data)] = data
        blobs[digest_of(data)] = len(data)
    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(contents[0])}
    index = {"schemaVersion": 2, "manifests": [{**manifest, "size": len(contents[0])}]}
    store.snapshots[name] = (snapshot_document(SnapshotName.parse(name), {}, index, blobs), modified)
    return blobs


# --------------------------------------------------------------------------- the hardening suite's table

HARDENING: dict[str, dict[str, int]] = {}
HARDENING_GROUPS = ("bad-config", "faults", "secrets", "poisoning", "fuzz")
HARDENING_COUNTED = pytest.StashKey[bool]()
"""Whether the case was counted as passed (a teardown error then moves it to failed)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardening(group): a case of the hardening suite, counted per group")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("hardening")
    if marker is None:
        return
    group = HARDENING.setdefault(marker.args[0], {"tried": 0, "passed": 0, "failed": 0, "examples": 0})
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        group["tried"] += 1
        group["passed" if report.passed else "failed"] += 1
        item.stash[HARDENING_COUNTED] = report.passed
    if report.when == "teardown":
        group["examples"] += int(getattr(item, "hardening_examples", 0))
        if report.failed and item.stash.get(HARDENING_COUNTED, False):  # an error in teardown fails the case
            group["passed"] -= 1
            group["failed"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not HARDENING:
        return
    write = terminalreporter.write_line
    write("")
    write("hardening suite: cases tried per group")
    write(f"{'group':<12} {'tried':>6} {'passed':>7} {'failed':>7}")
    totals = [0, 0, 0]
    for name in sorted(HARDENING, key=lambda g: HARDENING_GROUPS.index(g) if g in HARDENING_GROUPS else 99):
        g = HARDENING[name]
        extra = f"  ({g['examples']} generated documents)" if g["examples"] else ""
        write(f"{name:<12} {g['tried']:>6} {g['passed']:>7} {g['failed']:>7}{extra}")
        totals = [totals[0] + g["tried"], totals[1] + g["passed"], totals[2] + g["failed"]]
    write(f"{'total':<12} {totals[0]:>6} {totals[1]:>7} {totals[2]:>7}")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A real S3/AWS endpoint (moto's server) on loopback, in this process, for the unit tests that need one."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
