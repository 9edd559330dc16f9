"""The Docker adapter: the only module that talks to python-on-whales.

Everything here turns python-on-whales' exceptions into dockercache's, naming what failed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run, stream_stdout_and_stderr

from .errors import BuildFailed, ConfigError, EnvironmentProblem
from .plan import BuilderPlan


def _reason(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("ERROR: ").strip() if lines else f"exit code {exc.return_code}"


class Docker:
    """A thin wrapper over one python-on-whales client (passed in, never global)."""

    def __init__(self, client: DockerClient | None = None) -> None:
        self.client = client or DockerClient()

    def ping(self) -> None:
        """Fail clearly when there is no Docker daemon, before anything else is attempted.

        ``docker version`` is the cheapest call that needs the daemon (about 30 ms, against 100-150 ms for
        ``docker info`` or ``buildx version``); a missing buildx shows when bake runs (see :meth:`bake`).
        """
        try:
            run([*self.client.client_config.docker_cmd, "version", "--format", "{{.Server.Version}}"])
        except DockerException as exc:
            raise EnvironmentProblem(f"Docker daemon not reachable: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None

    def builder_driver(self, name: str) -> str | None:
        """The driver of builder ``name``, or None when there is no such builder."""
        try:
            builders = self.client.buildx.list()
        except DockerException as exc:
            raise EnvironmentProblem(f"cannot list buildx builders: {_reason(exc)}") from None
        for builder in builders:
            if builder.name == name:
                return str(builder.driver)
        return None

    def create_builder(self, plan: BuilderPlan) -> None:
        """``docker buildx create`` with exactly the plan's arguments (buildkitd.toml from a private file)."""
        with tempfile.TemporaryDirectory(prefix="dockercache-builder-") as tmp:
            config = Path(tmp) / "buildkitd.toml"
            if plan.buildkitd_config is not None:
                config.write_text(plan.buildkitd_config)
            try:
                run([*self.client.client_config.docker_cmd, *plan.create_argv(str(config))])
            except DockerException as exc:
                raise EnvironmentProblem(f"cannot create builder '{plan.name}': {_reason(exc)}") from None

    def remove_builder(self, name: str) -> None:
        try:
            self.client.buildx.remove(name)
        except DockerException as exc:
            raise EnvironmentProblem(f"cannot remove builder '{name}': {_reason(exc)}") from None

    def bake(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[str]:
        """Run ``docker <argv>`` (a plan's bake arguments, ``env`` added to the environment) and yield its
        rawjson stream as text.

        Raises BuildFailed at the end when bake exits non-zero, EnvironmentProblem when buildx is missing.
        """
        try:
            command = [*self.client.client_config.docker_cmd, *argv]
            for _, chunk in stream_stdout_and_stderr(command, env=dict(env) if env else None):  # type: ignore[arg-type]
                yield chunk.decode(errors="replace")
        except DockerException as exc:
            stderr = exc.stderr or ""
            if "is not a docker command" in stderr or ("unknown command" in stderr and "buildx" in stderr):
                raise EnvironmentProblem("docker buildx is not available (install the buildx plugin)") from None
            raise BuildFailed(exc.return_code, stderr) from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None

    def compose_config(self, files: Sequence[Path], project_dir: Path) -> Mapping[str, Any]:
        """``docker compose config --format json`` (the raw JSON keeps build.target and cache_from)."""
        client = DockerClient(
            compose_files=list(files),
            compose_project_directory=project_dir,
            client_call=self.client.client_config.client_call,
        )
        shown = ", ".join(str(f) for f in files)
        try:
            result = client.compose.config(return_json=True)
        except DockerException as exc:
            raise ConfigError(f"{shown}: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (needed to read Compose files)") from None
        if not isinstance(result, dict):
            raise ConfigError(f"{shown}: docker compose config did not return a JSON object")
        return result

    def login(self, server: str, username: str, password: str) -> None:
        """``docker login`` with the password on stdin (python-on-whales passes --password-stdin)."""
        try:
            self.client.login(server=server, username=username, password=password)
        except DockerException as exc:
            raise EnvironmentProblem(f"docker login to {server} failed: {_reason(exc)}") from None
