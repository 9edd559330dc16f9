"""The Docker adapter: the only module that talks to python-on-whales.

Everything here turns Docker's failures into dockercache's exceptions, naming what failed. python-on-whales is
imported only by the calls that use its models (listing and removing builders, reading Compose files): the
others run the docker CLI directly (through :mod:`.process`), so a build does not pay for importing it (about
0.1-0.3 s) on its way to the bake.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BuildFailed, ConfigError, EnvironmentProblem, HelperBuildFailed
from ..model import BuilderPlan, buildx
from .buildcheck import CheckFinding, parse_check_result
from .process import DockerFailed, ProcessFailed, ProcessStream, run

if TYPE_CHECKING:
    from python_on_whales import DockerClient


class BakeStream:
    """A running ``docker buildx bake``: its output line by line, BuildFailed at the end when it failed
    (EnvironmentProblem when buildx is missing); :meth:`stop` ends it from any thread."""

    def __init__(self, stream: ProcessStream) -> None:
        self._stream = stream
        self._lines: Generator[str, None, None] = self._translate()

    def _translate(self) -> Generator[str, None, None]:
        try:
            yield from self._stream
        except ProcessFailed as exc:
            if "is not a docker command" in exc.stderr or ("unknown command" in exc.stderr and "buildx" in exc.stderr):
                raise EnvironmentProblem("docker buildx is not available (install the buildx plugin)") from None
            raise BuildFailed(exc.return_code, exc.stderr) from None

    def __iter__(self) -> BakeStream:
        return self

    def __next__(self) -> str:
        return next(self._lines)

    def close(self) -> None:
        self._lines.close()
        self._stream.close()

    def stop(self) -> None:
        self._stream.stop()


def parse_platforms(inspect: str) -> tuple[str, ...]:
    """The platforms in ``docker buildx inspect`` output, every node's, in order, each once."""
    found: dict[str, None] = {}
    for line in inspect.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Platforms":
            found.update(dict.fromkeys(p.strip().rstrip("*") for p in value.split(",") if p.strip()))
    return tuple(found)


def _reason(exc: Any) -> str:
    """The last line a failed docker command said (DockerFailed, or python-on-whales' DockerException)."""
    text = (exc.stderr or exc.stdout or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("ERROR: ").strip() if lines else f"exit code {exc.return_code}"


class Docker:
    """A thin wrapper over one python-on-whales client (passed in, never global; made when first needed)."""

    def __init__(self, client: DockerClient | None = None) -> None:
        self._client = client
        self.docker_cmd: list[str] = list(client.client_config.docker_cmd) if client is not None else ["docker"]

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            from python_on_whales import DockerClient  # start-up: see the module's docstring

            self._client = DockerClient()
        return self._client

    def ping(self) -> None:
        """Fail clearly when there is no Docker daemon, before anything else is attempted.

        ``docker version`` is the cheapest call that needs the daemon (about 30 ms, against 100-150 ms for
        ``docker info`` or ``buildx version``); a missing buildx shows when bake runs (see :meth:`bake`).
        """
        try:
            run([*self.docker_cmd, "version", "--format", "{{.Server.Version}}"])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"Docker daemon not reachable: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None

    def builder_driver(self, name: str) -> str | None:
        """The driver of builder ``name``, or None when there is no such builder."""
        from python_on_whales.exceptions import DockerException  # start-up: see the module's docstring

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
                run([*self.docker_cmd, *plan.create_argv(str(config))])
            except DockerFailed as exc:
                raise EnvironmentProblem(f"cannot create builder '{plan.name}': {_reason(exc)}") from None

    def bootstrap_builder(self, name: str) -> None:
        """Boot builder ``name`` (``docker buildx inspect --bootstrap``): a docker-container builder pulls and starts
        its BuildKit image here, so that one that cannot fails before the build, naming why."""
        try:
            run([*self.docker_cmd, "buildx", "inspect", "--bootstrap", name])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"builder '{name}' cannot boot: {_reason(exc)}") from None

    def prune_builder(self, argv: Sequence[str]) -> str:
        """``docker <argv>`` (a plan's ``buildx prune --keep-storage``); buildx's last line, which says what it
        reclaimed. EnvironmentProblem when it fails."""
        try:
            text, _ = run([*self.docker_cmd, *argv])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"docker buildx prune failed: {_reason(exc)}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def remove_builder(self, name: str) -> None:
        from python_on_whales.exceptions import DockerException  # start-up: see the module's docstring

        try:
            self.client.buildx.remove(name)
        except DockerException as exc:
            raise EnvironmentProblem(f"cannot remove builder '{name}': {_reason(exc)}") from None

    def bake(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> BakeStream:
        """Start ``docker <argv>`` (a plan's bake arguments, ``env`` added to the environment); the stream gives
        its output (the rawjson progress stream) line by line.

        Raises BuildFailed at the end when bake exits non-zero, EnvironmentProblem when buildx is missing.
        buildx runs in a process group of its own: closing the stream early (an interrupt, an error in the
        caller) stops it (see :func:`.process.stop_process_group`), so it never goes on to push or load unobserved; so
        does the stream's ``stop`` from another thread (a transfer that stalled).
        """
        command = [*self.docker_cmd, *argv]
        try:
            return BakeStream(ProcessStream(command, {**os.environ, **env} if env else None))
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None

    def compose_config(self, files: Sequence[Path], project_dir: Path) -> Mapping[str, Any]:
        """``docker compose config --format json`` (the raw JSON keeps build.target and cache_from)."""
        from python_on_whales import DockerClient  # start-up: see the module's docstring
        from python_on_whales.exceptions import DockerException  # start-up: see the module's docstring

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

    def builder_platforms(self, name: str) -> tuple[str, ...]:
        """The platforms builder ``name`` builds, from ``docker buildx inspect`` (its nodes' ``Platforms:``
        lines; empty when it lists none, as a builder not booted yet)."""
        try:
            text, _ = run([*self.docker_cmd, "buildx", "inspect", name])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"cannot inspect builder '{name}': {_reason(exc)}") from None
        return parse_platforms(text)

    def containerd_image_store(self) -> bool:
        """Whether the engine keeps images in containerd (multi-platform images with the docker driver)."""
        try:
            text, _ = run([*self.docker_cmd, "info", "--format", "{{json .DriverStatus}}"])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"docker info failed: {_reason(exc)}") from None
        return "io.containerd.snapshotter" in str(text)

    def read_manifest(self, ref: str) -> dict[str, Any] | None:
        """A registry manifest (``docker buildx imagetools inspect --raw``, Docker's credentials), or None."""
        try:
            text, _ = run([*self.docker_cmd, "buildx", "imagetools", "inspect", "--raw", ref])
            data = json.loads(str(text))
        except (DockerFailed, FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def manifest_digest(self, ref: str) -> str | None:
        """The digest ``ref`` resolves to in its registry now, or None when it is not there (or cannot be read).

        The sha256 of the manifest ``docker buildx imagetools inspect --raw`` prints byte for byte (it adds no
        newline, to keep the digest): one manifest request, with Docker's credentials, and no image config read.
        """
        command = [*self.docker_cmd, "buildx", "imagetools", "inspect", "--raw", ref]
        try:
            proc = subprocess.run(command, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        return f"sha256:{hashlib.sha256(proc.stdout).hexdigest()}"

    def retag(self, source: str, tags: Sequence[str]) -> None:
        """Point ``tags`` at the image ``source`` names, in the registry: ``docker buildx imagetools create``
        copies the manifest (an index as it is; buildx 0.13 wraps a plain image manifest in an index), and no
        layer moves."""
        argv = ["buildx", "imagetools", "create", *(arg for tag in tags for arg in ("--tag", tag)), source]
        try:
            run([*self.docker_cmd, *argv])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"cannot retag {source}: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None

    def buildx_build(self, argv: Sequence[str], timeout: float = 600.0, env: Mapping[str, str] | None = None) -> str:
        """A small helper build (``argv``: :func:`dockercache.model.buildx.helper_build`, such as the cache-mount
        export and restore; ``env`` added to the environment), its output captured and returned;
        EnvironmentProblem with buildx's last line on failure."""
        command = [*self.docker_cmd, *argv]
        environ = {**os.environ, **env} if env else None
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=environ)
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None
        except subprocess.TimeoutExpired:
            raise EnvironmentProblem(f"docker buildx build did not finish in {timeout:.0f} s") from None
        text = f"{out.stdout}\n{out.stderr}"
        if out.returncode != 0:
            lines = [line for line in out.stderr.splitlines() if line.strip()]
            reason = lines[-1].removeprefix("ERROR: ").strip() if lines else f"exit code {out.returncode}"
            raise HelperBuildFailed(f"docker buildx build failed: {reason}", text)
        return text

    def check_support(self) -> str | None:
        """None when this buildx runs Dockerfile checks (``build --call``, buildx 0.15); else its version line."""
        docker = self.docker_cmd
        try:
            usage, _ = run([*docker, "buildx", "build", "--help"])
        except DockerFailed as exc:
            raise EnvironmentProblem(f"docker buildx is not available: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None
        if re.search(r"^\s*--call\b", usage, re.MULTILINE):
            return None
        try:
            return run([*docker, "buildx", "version"])[0].strip() or "unknown version"
        except DockerFailed:
            return "unknown version"

    def check_dockerfile(
        self,
        context: Path,
        dockerfile: Path,
        target: str | None,
        args: Mapping[str, str],
        builder: str | None = None,
    ) -> tuple[CheckFinding, ...]:
        """BuildKit's Dockerfile checks for one build (``docker buildx build --call=check,format=json``): it
        builds nothing. Build arguments go by name, their values in the child's environment (buildx reads
        ``--build-arg NAME`` from there), never in process arguments; but for names the CLI itself reads."""
        argv, values = buildx.check(str(context), str(dockerfile), target, args, builder)
        command = [*self.docker_cmd, *argv]
        env = {**os.environ, **values}
        try:
            out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None
        except subprocess.TimeoutExpired:
            raise EnvironmentProblem(f"Dockerfile checks of {dockerfile} did not finish in 600 s") from None
        try:  # exit 1 with findings is a successful check
            return parse_check_result(out.stdout, str(dockerfile))
        except ValueError:
            lines = [line for line in (out.stderr or out.stdout).splitlines() if line.strip()]
            reason = lines[-1].removeprefix("ERROR: ").strip() if lines else f"exit code {out.returncode}"
            raise EnvironmentProblem(f"Dockerfile checks of {dockerfile} failed: {reason}") from None

    def login(self, server: str, username: str, password: str) -> None:
        """``docker login --password-stdin``, its output captured.

        Not python-on-whales' ``login``: it lets the child write to our stdout ("Login Succeeded" would land in
        the middle of ``--json``) and keeps no stderr to explain a failure. Docker's own warnings (a password
        stored unencrypted) go to stderr, as they would have.
        """
        command = [*self.docker_cmd, "login", "--password-stdin", "--username", username, server]
        try:
            _, warnings = run(command, input=password.encode())
        except DockerFailed as exc:
            raise EnvironmentProblem(f"docker login to {server} failed: {_reason(exc)}") from None
        except FileNotFoundError:
            raise EnvironmentProblem("docker: command not found (install Docker with buildx)") from None
        if warnings.strip():
            print(warnings.strip(), file=sys.stderr, flush=True)
