"""Carrying out a plan with the Docker adapter: builder, preflight, stage builds, local cache swaps."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .buildkite import S3_KEY, Agent, AgentError, image_metadata_key
from .config import RegistryLogin
from .docker import BuildFailed, Docker
from .errors import CacheError, EnvironmentProblem, StoreError
from .netcheck import registry_host, unreachable
from .plan import BuilderPlan, Plan, ServicePlan, StageBuild
from .progress import BuildEvents, RawJsonDecoder
from .report import Console, RunResult, ServiceResult, StageResult, render_markdown

if TYPE_CHECKING:
    from .snapshots import Snapshots


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
        f"cache registry {h}:{p} unreachable ({why}): building without its cache" for (h, p), why in down.items()
    ]
    if plan.cache_errors == "fail":
        (host, port), why = next(iter(down.items()))
        raise CacheError(f"cache registry {host}:{port} unreachable ({why}) and settings.cache_errors = 'fail'")

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


StoreFactory = Callable[[str], "Snapshots"]


class Runner:
    def __init__(
        self,
        docker: Docker,
        console: Console,
        stores: StoreFactory | None = None,
        agent: Agent | None = None,
        logins: Mapping[str, RegistryLogin] | None = None,
    ) -> None:
        self.docker = docker
        self.console = console
        self.stores = stores
        self.agent = agent
        self.logins = logins or {}
        self._broken_stores: dict[str, str] = {}

    def run(self, plan: Plan) -> RunResult:
        result = RunResult()
        self.docker.ping()
        for host, login in self.logins.items():
            self.console.info(f"logging in to {host} as {login.username} (password on stdin)")
            self.docker.login(host, login.username, login.password)
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
                        (f"{svc.name}/{s.stage}: {w}" for s in service_result.stages for w in s.cache_warnings),
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
        result.stages = [StageResult(svc.name, b.stage, b.target, b.final, tags=b.tags) for b in svc.builds]
        if any(b.s3 for b in svc.builds):
            self.console.section(f":s3: {svc.name}: restore caches")
            self._restore(plan, svc, result)
        for build, stage in zip(svc.builds, result.stages, strict=True):
            if any(s.status == "failed" for s in result.stages):
                stage.status = "skipped"
                continue
            verb = "build and push" if build.push else "build"
            self.console.section(f":docker: {svc.name}: {verb} {build.stage}")
            self._build(plan, _without_missing_local_sources(build), stage, claimed)
            if stage.status == "ok" and build.s3 and build.s3.save_name and build.s3.store not in self._broken_stores:
                self.console.section(f":s3: {svc.name}: save {build.stage}", collapsed=True)
                self._save(plan, build, stage)
        result.seconds = time.monotonic() - started
        if result.status == "ok":
            self._publish(plan, svc, result)
        self._annotate(result)
        return result

    # ------------------------------------------------------------------------------------------ S3 phases

    def _store(self, name: str) -> Snapshots | None:
        if name in self._broken_stores or self.stores is None:
            return None
        try:
            return self.stores(name)
        except StoreError as exc:
            self._broken_stores[name] = str(exc)
            self.console.warn(f"{exc}: building without this cache")
            return None

    def _restore(self, plan: Plan, svc: ServicePlan, result: ServiceResult) -> None:
        recorded = self._meta_data_get(S3_KEY.format(service=svc.name))
        for build, stage in zip(svc.builds, result.stages, strict=True):
            if not build.s3:
                continue
            snapshots = self._store(build.s3.store)
            if snapshots is None:
                stage.cache_warnings.append(f"cache store '{build.s3.store}' unavailable")
                continue
            keys = [recorded, *build.s3.restore_keys] if recorded else list(build.s3.restore_keys)

            def warn(message: str, stage: StageResult = stage) -> None:
                stage.cache_warnings.append(message)
                self.console.warn(f"{svc.name}/{stage.stage}: {message}")

            try:
                key, got = snapshots.restore(keys, svc.name, build.stage, warn)
            except (StoreError, OSError) as exc:
                shutil.rmtree(build.s3.restore_dir, ignore_errors=True)
                warn(f"{_describe(exc)}: restoring nothing (cache miss)")
                continue
            stage.restored_from = key
            stage.down_objects, stage.down_bytes = got.objects, got.bytes
            if key:
                self.console.info(
                    f"  {build.stage}: restored {key} ({got.objects} blobs, {got.bytes / 1e6:.1f} MB downloaded, "
                    f"{got.skipped} already on disk)"
                )
            else:
                self.console.info(f"  {build.stage}: no snapshot under {', '.join(keys)} (cache miss)")

    def _save(self, plan: Plan, build: StageBuild, stage: StageResult) -> None:
        assert build.s3 is not None and build.s3.save_name is not None
        export = Path(build.s3.export_dir)
        try:
            if any(w.startswith("exporting cache") for w in stage.cache_warnings):
                return  # BuildKit said the export failed: there is nothing whole to save
            snapshots = self._store(build.s3.store)
            if snapshots is None:
                return
            meta = {
                "service": build.service,
                "stage": build.stage,
                "commit": plan.commit,
                "branch": plan.branch,
            }
            try:
                sent = snapshots.save(export, build.s3.save_name, meta)
            except (StoreError, OSError) as exc:
                message = f"saving {build.s3.save_name}: {_describe(exc)}"
                stage.cache_warnings.append(message)
                self.console.warn(f"{build.service}/{build.stage}: {message}")
                return
            stage.s3_saved = build.s3.save_name
            stage.up_objects, stage.up_bytes = sent.objects, sent.bytes
            self.console.info(
                f"  saved {build.s3.save_name}: {sent.objects} new blobs ({sent.bytes / 1e6:.1f} MB) uploaded, "
                f"{sent.skipped} already in the store"
            )
        finally:
            shutil.rmtree(export, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ Buildkite

    def _meta_data_get(self, key: str) -> str | None:
        if self.agent is None:
            return None
        try:
            return self.agent.meta_data_get(key)
        except AgentError as exc:
            self.console.warn(str(exc))
            return None

    def _publish(self, plan: Plan, svc: ServicePlan, result: ServiceResult) -> None:
        """Meta-data for later steps, written only after the whole service built successfully."""
        if self.agent is None:
            return
        values: dict[str, str] = {}
        final = result.final
        key = image_metadata_key(svc.metadata_key, svc.name)
        if key and final and final.tags:
            values[key] = final.tags[0]
        saved = [s.s3_saved for s in result.stages if s.s3_saved]
        if saved:
            values[S3_KEY.format(service=svc.name)] = saved[-1].rsplit("/", 2)[0]
        for k, v in values.items():
            try:
                self.agent.meta_data_set(k, v)
            except AgentError as exc:
                self.console.warn(str(exc))

    def _annotate(self, result: ServiceResult) -> None:
        if self.agent is None:
            return
        warnings = any(s.cache_warnings for s in result.stages)
        style = {"ok": "warning" if warnings else "success", "failed": "error"}.get(result.status, "info")
        try:
            self.agent.annotate(render_markdown(result), style, f"dockercache-{result.name}")
        except AgentError as exc:
            self.console.warn(str(exc))

    def _build(self, plan: Plan, build: StageBuild, stage: StageResult, claimed: set[str]) -> None:
        events = BuildEvents()
        decoder = RawJsonDecoder()
        fresh = build.local_swap.incoming if build.local_swap else build.s3.export_dir if build.s3 else None
        if fresh:  # a cache export always goes into an empty directory, so it never grows without bound
            shutil.rmtree(fresh, ignore_errors=True)
            try:
                Path(fresh).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                stage.cache_warnings.append(f"cache directory unusable: {_describe(exc)}")
                self.console.warn(f"{build.service}/{build.stage}: cache directory unusable: {_describe(exc)}")
                build = dataclasses.replace(build, cache_to=None, local_swap=None)
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
        problems = events.cache_problems()
        stage.cache_warnings.extend(problems)
        for warning in problems:
            self.console.warn(f"{build.service}/{build.stage}: {warning}")
        if stage.status != "ok":
            if build.local_swap:
                shutil.rmtree(build.local_swap.incoming, ignore_errors=True)
            return
        digest = metadata.get("containerimage.digest")
        stage.digest = digest if isinstance(digest, str) else None
        stage.pushed = build.push
        exported = build.cache_to is not None and not any(w.startswith("exporting cache") for w in stage.cache_warnings)
        if build.local_swap:
            try:
                exported = exported and _swap(build.local_swap.incoming, build.local_swap.final)
            except OSError as exc:
                stage.cache_warnings.append(f"local cache not updated: {_describe(exc)}")
                self.console.warn(f"{build.service}/{build.stage}: local cache not updated: {_describe(exc)}")
                exported = False
        if exported and build.cache_to and not build.s3:
            stage.cache_written = build.cache_to.get("ref") or build.cache_to.get("dest", "").removesuffix(".incoming")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _without_missing_local_sources(build: StageBuild) -> StageBuild:
    """S3 restores that missed leave no directory; do not make BuildKit look for it."""
    if not build.s3:
        return build
    kept = tuple(c for c in build.cache_from if c.get("type") != "local" or os.path.isdir(c["src"]))
    return dataclasses.replace(build, cache_from=kept)


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
