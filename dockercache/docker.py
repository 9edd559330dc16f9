"""The Docker adapter: the only module that talks to python-on-whales.

Everything here turns python-on-whales' exceptions into dockercache's, naming what failed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from .errors import ConfigError, EnvironmentProblem
from .plan import BuilderPlan, StageBuild


class BuildFailed(Exception):
    """buildx exited non-zero; the caller reads the reason from the progress stream."""

    def __init__(self, return_code: int, stderr: str) -> None:
        super().__init__(f"buildx exited {return_code}")
        self.return_code = return_code
        self.stderr = stderr


def _reason(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("ERROR: ").strip() if lines else f"exit code {exc.return_code}"


class Docker:
    """A thin wrapper over one python-on-whales client (passed in, never global)."""

    def __init__(self, client: DockerClient | None = None) -> None:
        self.client = client or DockerClient()

    def ping(self) -> None:
        """Fail clearly when there is no daemon or no buildx, before anything else is attempted."""
        try:
            self.client.buildx.version()
        except DockerException as exc:
            raise EnvironmentProblem(f"docker buildx is not available: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None
        try:
            self.client.system.info()
        except DockerException as exc:
            raise EnvironmentProblem(f"Docker daemon not reachable: {_reason(exc)}") from None

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
        try:
            self.client.buildx.create(
                context_or_endpoint=plan.endpoint,
                driver=plan.driver,
                driver_options=dict(plan.driver_opts),
                name=plan.name,
                platforms=list(plan.platforms) or None,
            )
        except DockerException as exc:
            raise EnvironmentProblem(f"cannot create builder '{plan.name}': {_reason(exc)}") from None

    def remove_builder(self, name: str) -> None:
        try:
            self.client.buildx.remove(name)
        except DockerException as exc:
            raise EnvironmentProblem(f"cannot remove builder '{name}': {_reason(exc)}") from None

    def build(self, step: StageBuild, builder: str, metadata_file: Path) -> Iterator[str]:
        """Run one stage build; yields the rawjson stream as text. Raises BuildFailed at the end."""
        kwargs: dict[str, Any] = {
            "build_args": dict(step.build_args),
            "builder": builder,
            "push": step.push,
            "load": step.load,
            "metadata_file": metadata_file,
            "file": step.dockerfile,
            "target": step.target,
            "cache_from": [dict(c) for c in step.cache_from] or None,
            "cache_to": dict(step.cache_to) if step.cache_to else None,
            "output": dict(step.output),
            "cache": not step.no_cache,
            "tags": list(step.tags),
            "progress": "rawjson",
            "stream_logs": True,
        }
        stream = self.client.buildx.build(step.context, **kwargs)
        try:
            yield from stream  # type: ignore[misc]
        except DockerException as exc:
            raise BuildFailed(exc.return_code, exc.stderr or "") from None

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
