"""The Buildkite adapter: meta-data and annotations through the ``buildkite-agent`` CLI.

Used only when running under Buildkite (``BUILDKITE=true``) with ``buildkite-agent`` on PATH; elsewhere the
same build skips these steps quietly. An agent that fails is a warning: it never fails a build.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

COMPOSE_PLUGIN_KEY = "docker-compose-plugin-built-image-tag-{service}"
S3_KEY = "dockercache-s3-key-{service}"


class AgentError(Exception):
    pass


@dataclass
class Agent:
    binary: str
    env: Mapping[str, str] | None = None
    timeout: float = 30.0

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Agent | None:
        if env.get("BUILDKITE") != "true":
            return None
        binary = shutil.which("buildkite-agent", path=env.get("PATH"))
        return cls(binary, dict(env)) if binary else None

    def _run(
        self, args: list[str], stdin: str | None = None, ok: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                [self.binary, *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=dict(self.env) if self.env is not None else None,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentError(f"buildkite-agent {args[0]} {args[1] if len(args) > 1 else ''}: {exc}") from None
        if proc.returncode not in ok:
            reason = (proc.stderr or proc.stdout).strip().splitlines()
            raise AgentError(
                f"buildkite-agent {' '.join(args[:2])} exited {proc.returncode}{': ' + reason[-1] if reason else ''}"
            )
        return proc

    def meta_data_set(self, key: str, value: str) -> None:
        # The value goes on stdin ("meta-data set KEY" reads it when no VALUE argument is given).
        self._run(["meta-data", "set", key], stdin=value)

    def meta_data_get(self, key: str) -> str | None:
        """The value, or None when the key was never set (``meta-data exists`` exits 100)."""
        if self._run(["meta-data", "exists", key], ok=(0, 100)).returncode == 100:
            return None
        return self._run(["meta-data", "get", key]).stdout.strip()

    def annotate(self, body: str, style: str, context: str, append: bool = False) -> None:
        args = ["annotate", "--style", style, "--context", context]
        if append:
            args.append("--append")
        self._run(args, stdin=body)


def image_metadata_key(configured: str | None, service: str) -> str | None:
    """The meta-data key for a service's image: its own, or the docker-compose plugin's when asked."""
    if configured == "docker-compose":
        return COMPOSE_PLUGIN_KEY.format(service=service)
    return configured
