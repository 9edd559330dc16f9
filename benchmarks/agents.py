"""Truly fresh CI agents: a private dockerd with an empty data root, started beside the machine's own daemon.

Pruning a daemon does not make it fresh: BuildKit 0.13 (dockerd 26) keeps the records of cancelled builds out of
reach of ``docker buildx prune -af`` until the daemon restarts, and a build can hit them. A daemon started on an
empty ``--data-root`` has nothing to hit: every cached step came from a cache store.

Each daemon has its own data root, exec root, socket (``unix:///run/<name>.sock``), pid file and bridge (an
address on a private /24; without a bridge of its own a ``RUN`` step fails with ``network bridge not found``),
starts its own containerd, and touches no iptables rule. It pulls from the registry on loopback as the main
daemon does. Clients reach it with ``DOCKER_HOST`` (docker, buildx, python-on-whales, dockercache). Needs root,
``dockerd`` and ``ip`` (iproute2); scripts/stack.sh installs both.

    with fresh_daemon() as daemon:
        subprocess.run(["docker", "info"], env=daemon.environ(), check=True)

``python benchmarks/agents.py [--cycles N]`` starts and stops daemons and prints how long each took.
Used by benchmarks/sequence.py and by the end-to-end tests' ``agent`` fixture (tests/e2e/agents.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

RUN = Path("/run")
LOCK = RUN / "dockercache-agents.lock"
"""Held while a /24 is chosen and its bridge created, so two daemons started at once never share one."""
NETWORK = ipaddress.ip_network("10.213.0.0/16")
"""The private /24s are taken from this range (one per daemon), avoiding any address the machine already has."""
CONFIG = {"features": {"containerd-snapshotter": True}}
"""The image store the tool needs (STACK.md); the daemon reads this file, not /etc/docker/daemon.json."""
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class AgentError(RuntimeError):
    """A private daemon that could not be started or stopped."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AgentError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def preflight() -> str | None:
    """Why a private daemon cannot start on this machine (None: it can)."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    missing = [tool for tool in ("dockerd", "docker", "ip") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (bash scripts/stack.sh up installs them)"
    return None


def _subnets_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the machine has an address or a route in."""
    nets = []
    for argv in (("ip", "-4", "-o", "addr", "show"), ("ip", "-4", "route", "show", "table", "all")):
        for line in _run(*argv, check=False).stdout.splitlines():
            for word in line.split():
                with contextlib.suppress(ValueError):
                    if any(ch.isdigit() for ch in word) and ("/" in word or word.count(".") == 3):
                        nets.append(ipaddress.ip_network(word, strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _subnets_in_use()
    for subnet in NETWORK.subnets(new_prefix=24):
        if isinstance(subnet, ipaddress.IPv4Network) and not any(subnet.overlaps(u) for u in used):
            return subnet
    raise AgentError(f"no free /24 left in {NETWORK} for a private daemon's bridge")


@dataclass
class Daemon:
    """One private dockerd: where it keeps everything, and how clients reach it."""

    name: str
    root: Path
    """Data root, configuration and log (a directory of its own)."""
    bridge: str
    subnet: str = ""
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    """Seconds from launching dockerd until ``docker info`` answered."""
    stopped_s: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def socket(self) -> Path:
        return RUN / f"{self.name}.sock"

    @property
    def exec_root(self) -> Path:
        return RUN / self.name  # short: containerd's socket lives under it (a unix path holds 107 bytes)

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the Docker client pointed at this daemon."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k != "DOCKER_CONTEXT"}
        env["DOCKER_HOST"] = self.host
        return env

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, env=self.environ())

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        problem = preflight()
        if problem:
            raise AgentError(problem)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text(json.dumps(CONFIG))
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subnet = _free_subnet()
            gateway = next(subnet.hosts())
            _run("ip", "link", "add", "name", self.bridge, "type", "bridge")
            self.subnet = str(subnet)
            _run("ip", "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        argv = [
            "dockerd",
            "--config-file",
            str(self.root / "daemon.json"),
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--host",
            self.host,
            "--pidfile",
            str(self.pidfile),
            "--bridge",
            self.bridge,
            "--iptables=false",
            "--ip6tables=false",
        ]
        started = time.monotonic()
        with self.log.open("wb") as log:
            # A session of its own: a Ctrl-C meant for the caller must not take the daemon down before stop().
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        while True:
            if self.process.poll() is not None:
                raise AgentError(f"dockerd {self.name} exited with {self.process.returncode}: {self._log_tail()}")
            probe = subprocess.run(
                ["docker", "--host", self.host, "info", "--format", "{{.ID}}"],
                capture_output=True,
                check=False,
                timeout=10,
            )
            if probe.returncode == 0:
                break
            if time.monotonic() - started > START_TIMEOUT:
                raise AgentError(f"dockerd {self.name} did not answer within {START_TIMEOUT:.0f}s: {self._log_tail()}")
            time.sleep(0.05)
        self.started_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop the daemon (by its pid file), then remove its roots, socket and bridge. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        began = time.monotonic()
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(pid, STOP_TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 10)
        self._unmount_below(self.root, self.exec_root)
        _run("ip", "link", "delete", self.bridge, check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
        for path in (self.socket, self.pidfile):
            path.unlink(missing_ok=True)
        self.stopped_s = time.monotonic() - began

    def _pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pidfile.read_text().strip())
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.pid == pid:
                if self.process.poll() is not None:
                    return True
            elif not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _unmount_below(*roots: Path) -> None:
        """Whatever a killed daemon left mounted under its roots (a clean stop leaves nothing)."""
        prefixes = tuple(f"{root}/" for root in roots)
        with contextlib.suppress(OSError):
            points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            for point in sorted((p for p in points if p.startswith(prefixes)), key=len, reverse=True):
                _run("umount", "--lazy", point, check=False)

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def new_daemon(parent: Path | None = None) -> Daemon:
    """A daemon's names and directories (not started): ``dca<hex>``, bridge ``dcb<hex>``."""
    token = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix=f"dca{token}-", dir=parent))
    return Daemon(name=f"dca{token}", root=root, bridge=f"dcb{token}")


def start_daemon(parent: Path | None = None) -> Daemon:
    """A running private daemon with an empty data root; the caller stops it."""
    daemon = new_daemon(parent)
    try:
        daemon.start()
    except BaseException:
        daemon.stop()
        raise
    return daemon


@contextlib.contextmanager
def fresh_daemon(parent: Path | None = None) -> Iterator[Daemon]:
    """A new CI agent: a private daemon with an empty data root, stopped and removed afterwards.
    ``daemon.environ()`` is the environment to run docker, buildx or dockercache against it."""
    daemon = start_daemon(parent)
    try:
        yield daemon
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="daemons to start and stop, one after another")
    args = parser.parse_args(argv)
    problem = preflight()
    if problem:
        print(f"agents: {problem}", file=sys.stderr)
        return 1
    for n in range(1, args.cycles + 1):
        with fresh_daemon() as daemon:
            images = daemon.docker("image", "ls", "--quiet").stdout.split()
            version = daemon.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        print(
            f"{n}: {daemon.name} (dockerd {version}, bridge {daemon.bridge} {daemon.subnet}, {len(images)} images): "
            f"up in {daemon.started_s:.2f}s, stopped and removed in {daemon.stopped_s:.2f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
