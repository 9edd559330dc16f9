"""Carrying out a plan with the Docker adapter: builder, preflight, stage builds, local cache swaps."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .docker import BuildFailed, Docker
from .errors import CacheError, EnvironmentProblem
from .netcheck import registry_host, unreachable
from .plan import BuilderPlan, Plan, ServicePlan, StageBuild
from .progress import BuildEvents, RawJsonDecoder
from .report import Console, RunResult, ServiceResult, StageResult


@contextlib.contextmanager
def builder_session(docker: Docker, plan: BuilderPlan, console: Console) -> Iterator[None]:
    """Make sure the builder exists; an ephemeral one is removed afterwards, even when the build fails."""
    ensure_builder(docker, plan, console)
    try:
        yield
    finally:
        if plan.ephemeral:
            try:
                docker.remove_builder(plan.name)
                console.info(f"removed builder '{plan.name}'")
            except EnvironmentProblem as exc:
                console.warn(str(exc))


def ensure_builder(docker: Docker, plan: BuilderPlan, console: Console) -> bool:
    """Create the builder if missing, reuse it if present with the right driver. True when created."""
    driver = docker.builder_driver(plan.name)
    if driver is not None:
        if driver != plan.driver:
            raise EnvironmentProblem(
                f"builder '{plan.name}' exists with driver '{driver}', but builder.driver is '{plan.driver}' "
                f"(remove it with `docker buildx rm {plan.name}` or choose another builder.name)"
            )
        return False
    if not plan.creatable:
        raise EnvironmentProblem(
            f"no builder '{plan.name}': the 'docker' driver cannot be created; use the Docker context's "
            "builder (builder.name = 'default') or another driver"
        )
    docker.create_builder(plan)
    console.info(f"created builder '{plan.name}' (driver {plan.driver})")
    return True


def _registry_hosts(build: StageBuild) -> set[tuple[str, int]]:
    refs = [c["ref"] for c in build.cache_from if c.get("type") == "registry"]
    if build.cache_to and build.cache_to.get("type") == "registry":
        refs.append(build.cache_to["ref"])
    return {registry_host(r) for r in refs}


def preflight(plan: Plan, console: Console) -> tuple[Plan, list[str]]:
    """Drop caches whose registry does not answer: an outage costs a warning, not a timeout or a failure."""
    hosts = {h for svc in plan.services for b in svc.builds for h in _registry_hosts(b)}
    down = {}
    for host, port in sorted(hosts):
        why = unreachable(host, port)
        if why:
            down[(host, port)] = why
    if not down:
        return plan, []
    warnings = [
        f"cache registry {h}:{p} unreachable ({why}): building without its cache"
        for (h, p), why in down.items()
    ]
    if plan.cache_errors == "fail":
        (host, port), why = next(iter(down.items()))
        raise CacheError(
            f"cache registry {host}:{port} unreachable ({why}) and settings.cache_errors = 'fail'"
        )

    def keep(attrs: dict[str, str] | None) -> bool:
        return not (attrs and attrs.get("type") == "registry" and registry_host(attrs["ref"]) in down)

    services = []
    for svc in plan.services:
        builds = tuple(
            dataclasses.replace(
                b,
                cache_from=tuple(c for c in b.cache_from if keep(dict(c))),
                cache_to=b.cache_to if keep(dict(b.cache_to) if b.cache_to else None) else None,
            )
            for b in svc.builds
        )
        services.append(dataclasses.replace(svc, builds=builds))
    for w in warnings:
        console.warn(w)
    return dataclasses.replace(plan, services=tuple(services)), warnings


class Runner:
    def __init__(self, docker: Docker, console: Console) -> None:
        self.docker = docker
        self.console = console

    def run(self, plan: Plan) -> RunResult:
        result = RunResult()
        self.docker.ping()
        plan, result.warnings = preflight(plan, self.console)
        with builder_session(self.docker, plan.builder, self.console):
            for svc in plan.services:
                service_result = self._service(plan, svc)
                result.services.append(service_result)
                failed = next((s for s in service_result.stages if s.status == "failed"), None)
                if failed:
                    result.exit_code = 1
                    result.error = f"{svc.name}/{failed.stage}: build failed: {failed.error}"
                    break
                if plan.cache_errors == "fail":
                    problem = next(
                        (
                            f"{svc.name}/{s.stage}: {w}"
                            for s in service_result.stages
                            for w in s.cache_warnings
                        ),
                        None,
                    )
                    if problem:
                        result.exit_code = CacheError.exit_code
                        result.error = f"{problem} (settings.cache_errors = 'fail')"
                        break
        return result

    def _service(self, plan: Plan, svc: ServicePlan) -> ServiceResult:
        result = ServiceResult(svc.name)
        started = time.monotonic()
        claimed: set[str] = set()
        for build in svc.builds:
            stage = StageResult(svc.name, build.stage, build.target, build.final, tags=build.tags)
            result.stages.append(stage)
            if any(s.status == "failed" for s in result.stages):
                stage.status = "skipped"
                continue
            self.console.section(f":docker: {svc.name}: build {build.stage}")
            self._build(plan, build, stage, claimed)
        for stage in result.stages:
            if stage.status == "pending":
                stage.status = "skipped"
        result.seconds = time.monotonic() - started
        return result

    def _build(self, plan: Plan, build: StageBuild, stage: StageResult, claimed: set[str]) -> None:
        events = BuildEvents()
        decoder = RawJsonDecoder()
        if build.local_swap:
            shutil.rmtree(build.local_swap.incoming, ignore_errors=True)
            Path(build.local_swap.incoming).parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="dockercache-") as tmp:
            metadata_file = Path(tmp) / "metadata.json"
            try:
                for chunk in self.docker.build(build, plan.builder.name, metadata_file):
                    for item in decoder.feed(chunk):
                        for vertex in events.apply(item):
                            self.console.step(vertex)
                for item in decoder.close():
                    events.apply(item)
                stage.status = "ok"
            except BuildFailed as exc:
                for item in decoder.close():
                    events.apply(item)
                stage.status = "failed"
                stderr_lines = exc.stderr.strip().splitlines()
                stage.error = events.failure() or (stderr_lines[-1] if stderr_lines else None)
                stage.error = stage.error or f"buildx exited {exc.return_code}"
                failed = events.failed_vertex()
                if failed:
                    self.console.info(f"--- output of {failed.name}")
                    for line in failed.logs:
                        self.console.info(f"    {line}")
            metadata = _read_json(metadata_file)
        stage.seconds = time.monotonic() - started
        for label, count in events.by_stage().items():
            if label not in claimed:
                stage.steps[label] = count
        claimed.update(stage.steps)
        stage.cache_warnings = events.cache_problems()
        for warning in stage.cache_warnings:
            self.console.warn(f"{build.service}/{build.stage}: {warning}")
        if stage.status != "ok":
            if build.local_swap:
                shutil.rmtree(build.local_swap.incoming, ignore_errors=True)
            return
        digest = metadata.get("containerimage.digest")
        stage.digest = digest if isinstance(digest, str) else None
        stage.pushed = build.push
        exported = build.cache_to is not None and not any(
            w.startswith("exporting cache") for w in stage.cache_warnings
        )
        if build.local_swap:
            exported = exported and _swap(build.local_swap.incoming, build.local_swap.final)
        if exported and build.cache_to:
            stage.cache_written = build.cache_to.get("ref") or build.cache_to.get("dest", "").removesuffix(
                ".incoming"
            )


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _swap(incoming: str, final: str) -> bool:
    """Replace a local cache directory only with a complete export: never point at missing data."""
    if not os.path.isfile(os.path.join(incoming, "index.json")):
        shutil.rmtree(incoming, ignore_errors=True)
        return False
    trash = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.rename(final, trash)
    os.rename(incoming, final)
    shutil.rmtree(trash, ignore_errors=True)
    return True
