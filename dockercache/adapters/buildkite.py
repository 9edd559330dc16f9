"""The Buildkite adapter: meta-data and annotations through the ``buildkite-agent`` CLI.

Used only when running under Buildkite (``BUILDKITE=true``) with ``buildkite-agent`` on PATH; elsewhere the
same build skips these steps quietly. An agent that fails is a warning: it never fails a build.

What goes to the agent (annotations, meta-data) and what it answers in an error is masked first: Buildkite
shows annotations and meta-data to everyone who can see the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..secrets import Redactor, secret_values

S3_KEY = "dockercache-s3-key-{service}"


class AgentError(Exception):
    pass


@dataclass
class Agent:
    binary: str
    env: Mapping[str, str] | None = None
    timeout: float = 30.0
    redact: Callable[[str], str] | None = field(default=None, repr=False)
    """Masks what is sent and what comes back; by default the values of ``env`` named like secrets."""

    def __post_init__(self) -> None:
        if self.redact is None:
            self.redact = Redactor(secret_values(self.env if self.env is not None else os.environ))

    @classmethod
    def detect(cls, env: Mapping[str, str], redact: Callable[[str], str] | None = None) -> Agent | None:
        """The agent, under Buildkite with ``buildkite-agent`` on PATH. ``redact``: the command's redactor (it
        also knows registry passwords and secret files), else one for ``env``'s secrets."""
        if env.get("BUILDKITE") != "true":
            return None
        binary = shutil.which("buildkite-agent", path=env.get("PATH"))
        return cls(binary, dict(env), redact=redact) if binary else None

    def _mask(self, text: str) -> str:
        return self.redact(text) if self.redact is not None else text

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
            raise AgentError(
                self._mask(f"buildkite-agent {args[0]} {args[1] if len(args) > 1 else ''}: {exc}")
            ) from None
        if proc.returncode not in ok:
            # Masked before its last line is taken: a cut between lines would leave part of a secret.
            reason = self._mask((proc.stderr or proc.stdout).strip()).splitlines()
            raise AgentError(
                f"buildkite-agent {' '.join(args[:2])} exited {proc.returncode}{': ' + reason[-1] if reason else ''}"
            )
        return proc

    def meta_data_set(self, key: str, value: str) -> None:
        # The value goes on stdin ("meta-data set KEY" reads it when no VALUE argument is given).
        self._run(["meta-data", "set", self._mask(key)], stdin=self._mask(value))

    def meta_data_get(self, key: str) -> str | None:
        """The value, or None when the key was never set (``meta-data exists`` exits 100)."""
        if self._run(["meta-data", "exists", key], ok=(0, 100)).returncode == 100:
            return None
        return self._run(["meta-data", "get", key]).stdout.strip()

    def meta_data_keys(self) -> list[str]:
        """Every meta-data key of the build (``meta-data keys``, one a line)."""
        return [line.strip() for line in self._run(["meta-data", "keys"]).stdout.splitlines() if line.strip()]

    def annotate(self, body: str, style: str, context: str, append: bool = False) -> None:
        args = ["annotate", "--style", style, "--context", context]
        if append:
            args.append("--append")
        self._run(args, stdin=self._mask(body))


def annotation_context(service: str, env: Mapping[str, str]) -> str:
    """One annotation per service and job: parallel copies and matrix jobs of one step each get their own,
    while a retried job (same step, index and matrix values) replaces its earlier annotation."""
    parts = [f"dockercache-{service}"]
    step = env.get("BUILDKITE_STEP_KEY") or env.get("BUILDKITE_STEP_ID") or env.get("BUILDKITE_JOB_ID")
    if step:
        parts.append(step)
    if env.get("BUILDKITE_PARALLEL_JOB"):
        parts.append(f"p{env['BUILDKITE_PARALLEL_JOB']}")
    matrix = sorted((k, v) for k, v in env.items() if k == "BUILDKITE_MATRIX" or k.startswith("BUILDKITE_MATRIX_"))
    if matrix:
        parts.append("m" + hashlib.sha256(json.dumps(matrix).encode()).hexdigest()[:8])
    return "-".join(parts)


def job_log_url(env: Mapping[str, str]) -> str | None:
    """The job's log on the build page (``BUILD_URL#JOB_ID`` opens it)."""
    build, job = env.get("BUILDKITE_BUILD_URL"), env.get("BUILDKITE_JOB_ID")
    return f"{build}#{job}" if build and job else None
