"""Carrying out a plan: builder, logins, stores before, one bake run, rescue of caches, stores after, report.

The runner knows the Docker adapter (any object with :class:`DockerPort`'s methods), the Buildkite agent and
the :class:`~dockercache.stores.Stores` it drives over every target; it knows no store kind by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ..adapters.buildkite import Agent, AgentError, annotation_context, job_log_url
from ..adapters.dockerconfig import run_config
from ..config.model import RegistryLogin
from ..errors import BuildFailed, CacheError, EnvironmentProblem
from ..model import BuilderPlan, Plan, ServicePlan, Target
from ..model.skip import SkipSetting, Unavailable
from ..output.live import Ticker
from ..output.progress import BuildEvents, RawJsonDecoder, Tally, TargetInfo, first_line
from ..output.report import Console, GroupKind, RunResult, ServiceResult, SkipReport, StageResult, render_markdown
from ..planning.context import context_digest
from ..planning.skip import KeyInputs, key_tag, sha256_bytes
from ..stores import BlobStoreFactory, RunContext, Stores
from ..timeline import Timeline
from .mounts import CacheMounts


class DockerPort(Protocol):
    """What the runner needs of Docker (:class:`dockercache.adapters.docker.Docker`; tests pass fakes)."""

    def ping(self) -> None: ...
    def login(self, server: str, username: str, password: str) -> None: ...
    def builder_driver(self, name: str) -> str | None: ...
    def create_builder(self, plan: BuilderPlan) -> None: ...
    def remove_builder(self, name: str) -> None: ...
    def prune_builder(self, argv: Sequence[str]) -> str: ...
    def bootstrap_builder(self, name: str) -> None: ...
    def bake(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[str]: ...
    def read_manifest(self, ref: str) -> Mapping[str, Any] | None: ...
    def builder_platforms(self, name: str) -> tuple[str, ...]: ...
    def containerd_image_store(self) -> bool: ...
    def manifest_digest(self, ref: str) -> str | None: ...
    def retag(self, source: str, tags: Sequence[str]) -> None: ...
    def buildx_build(self, argv: Sequence[str], timeout: float = ..., env: Mapping[str, str] | None = None) -> str: ...


@contextlib.contextmanager
def builder_session(
    docker: DockerPort,
    plan: BuilderPlan,
    console: Console,
    timed: contextlib.AbstractContextManager[None] | None = None,
) -> Iterator[None]:
    """Make sure the builder exists (inside ``timed``); an ephemeral one is removed afterwards, even when the build
    fails."""
    with timed or contextlib.nullcontext():
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


def _offers(offered: Sequence[str], wanted: str) -> bool:
    """Whether a builder listing ``offered`` builds ``wanted`` (``linux/arm64`` is served by ``linux/arm64/v8``)."""
    return any(p == wanted or (wanted.count("/") == 1 and p.startswith(f"{wanted}/")) for p in offered)


def check_platforms(docker: DockerPort, plan: Plan) -> None:
    """Every platform a target asks for is one the builder builds: exit 3 before the build, not an
    ``exec format error`` in the middle of it."""
    wanted = sorted({p for t in plan.running for p in t.platforms})
    if not wanted:
        return
    builder = plan.builder
    several = any(len(t.platforms) > 1 for t in plan.running)
    if several and builder.driver == "docker" and not docker.containerd_image_store():
        raise EnvironmentProblem(
            f"builder '{builder.name}' (driver docker) cannot build several platforms into one image on the classic "
            "image store: use a docker-container builder, or enable the containerd image store"
        )
    offered = docker.builder_platforms(builder.name)
    missing = [p for p in wanted if not _offers(offered, p)]
    if offered and missing:
        raise EnvironmentProblem(
            f"builder '{builder.name}' cannot build {', '.join(missing)} (it builds {', '.join(offered)}): install "
            "QEMU emulation (docker run --privileged --rm tonistiigi/binfmt --install all) or use a builder with "
            "such nodes"
        )


def ensure_builder(docker: DockerPort, plan: BuilderPlan, console: Console) -> bool:
    """Create the builder if missing, reuse it if present with the right driver. True when created."""
    if plan.name == "default" and plan.driver == "docker":
        return False  # the Docker context's own builder always exists (and asking costs 100 ms)
    driver = docker.builder_driver(plan.name)
    if driver is not None:
        if driver != plan.driver:
            raise EnvironmentProblem(
                f"builder '{plan.name}' exists with driver '{driver}', but builder.driver is '{plan.driver}' "
                f"(remove it with `docker buildx rm {plan.name}` or choose another builder.name)"
            )
        if driver != "docker":
            docker.bootstrap_builder(plan.name)  # a stopped one starts here (or says why it cannot)
        return False
    if not plan.creatable:
        raise EnvironmentProblem(
            f"no builder '{plan.name}': the 'docker' driver cannot be created; use the Docker context's "
            "builder (builder.name = 'default') or another driver"
        )
    console.section(f":hammer_and_wrench: builder {plan.name}", "quiet")
    docker.create_builder(plan)
    console.info(f"created builder '{plan.name}' (driver {plan.driver})")
    try:
        docker.bootstrap_builder(plan.name)
    except EnvironmentProblem:
        # One this run made and that cannot boot (its BuildKit image cannot be pulled, no privileges): leave
        # nothing behind, and stop here with exit 3 rather than fail the build with a stage showing 0/0.
        with contextlib.suppress(EnvironmentProblem):
            docker.remove_builder(plan.name)
            console.info(f"removed builder '{plan.name}' (it could not boot)")
        raise
    return True


def _error_text(bake: BakeRun) -> str:
    """Everything a failed run said about why: every vertex's error and buildx's own output."""
    errors = [v.error for v in bake.events.vertexes.values() if v.error]
    return "\n".join([*errors, bake.stderr])


def _without_sources(target: Target, stores: Mapping[str, str]) -> Target:
    if target.caches.store not in stores:
        return target
    return dataclasses.replace(target, caches=dataclasses.replace(target.caches, sources=()))


@dataclasses.dataclass
class BakeRun:
    """One ``docker buildx bake`` run: did it succeed, and what it left in its metadata file."""

    succeeded: bool
    events: BuildEvents
    metadata: dict[str, Any]
    stderr: str = ""
    stalled: str | None = None
    """Why it was stopped: a blob transfer that made no progress for ``settings.stall_seconds``."""


class Watchdog:
    """Stops a bake run whose blob transfers stall (a half-dead connection to a cache would hold the build for
    ever): a thread looks every second, and stops the run when a transfer made no progress for ``seconds``."""

    def __init__(self, events: BuildEvents, seconds: float, stop: Callable[[], None] | None) -> None:
        self.events, self.seconds, self.stop = events, seconds, stop
        self.stalled: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dockercache-watchdog", daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.seconds / 4)):
            transfer = self.events.stalled(self.seconds)
            if transfer is not None:
                self.stalled = transfer.describe(self.seconds)
                if self.stop is not None:
                    self.stop()
                return

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


#: The user name and password to log in to a registry with (commands passes :func:`.adapters.ecr.credentials`).
Credentials = Callable[[str, RegistryLogin], tuple[str, str]]


def given_credentials(host: str, login: RegistryLogin) -> tuple[str, str]:
    """The entry's own user name and password."""
    if login.username is None or login.password is None:
        raise EnvironmentProblem(f"no user name and password to log in to {host} with")
    return login.username, login.password


class Runner:
    def __init__(
        self,
        docker: DockerPort,
        console: Console,
        agent: Agent | None = None,
        logins: Mapping[str, RegistryLogin] | None = None,
        blob_store: BlobStoreFactory | None = None,
        credentials: Credentials | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self.docker = docker
        self.console = console
        self.agent = agent
        self.logins = logins or {}
        self.blob_store = blob_store
        self.credentials = credentials or given_credentials
        self.timeline = timeline or Timeline()
        """Where the run's own time goes (``--json``'s ``timings``)."""
        self.docker_env: Mapping[str, str] = {}
        """What Docker commands of the build run with (:func:`dockercache.adapters.dockerconfig.run_config`)."""

    def run(self, plan: Plan) -> RunResult:
        run = RunResult(cache_write=plan.cache_write, cache_write_reason=plan.cache_write_reason)
        context = RunContext(
            console=self.console,
            commit=plan.commit,
            branch=plan.branch,
            cache_errors=plan.cache_errors,
            meta_data_get=self._meta_data_get,
            blob_store=self.blob_store,
            builder_driver=plan.builder.driver,
            warnings=run.warnings,
            read_manifest=self.docker.read_manifest,
            secret=self._secret,
        )
        stores = Stores(context)
        step = self.timeline.step
        stores.open(plan.targets)
        with step("docker ping"):
            self.docker.ping()
        if self.logins:
            self.console.section(":key: registry logins", "quiet")
        with step("registry logins"):
            for host, login in self.logins.items():
                username, password = self.credentials(host, login)  # an ECR token is asked for here, just in time
                self.console.info(f"logging in to {host} as {username} (password on stdin)")
                self.docker.login(host, username, password)
        started = time.monotonic()
        results = {
            t.name: StageResult(t.service, t.stage, t.dockerfile_target, t.final, name=t.name, tags=t.tags)
            for t in plan.targets
        }
        full = plan
        skips: dict[str, SkipReport] = {}
        mounts = CacheMounts(self.docker, self.console, run.warnings, stores.endpoint)
        try:
            with step("skip unchanged"):
                plan, skips = self._skip_unchanged(plan, results)
            with step("cache stores before the build"):
                plan = plan.with_targets(stores.before(plan.targets, results))
            tally = Tally([TargetInfo(t.name, t.stage, t.identity, t.graph) for t in plan.targets])
            if plan.running:  # nothing to build when every service was skipped
                session = builder_session(self.docker, plan.builder, self.console, step("builder"))
                with session, run_config(stores.logins()) as env:
                    self.docker_env = mounts.env = env  # the stores' own logins, for this run's buildx alone
                    check_platforms(self.docker, plan)
                    with step("cache mounts restore"):
                        mounts.restore(plan)
                    self._build(plan, tally, run, results, stores)
                    if any(s.cache_mounts is not None for s in plan.services):  # attribution only when used
                        with step("cache mounts save"):
                            mounts.save(plan, results, tally.steps())
                    with step("builder prune"):
                        self._prune(plan.builder, results)
        except BaseException:  # SIGINT, SIGTERM (buildx is stopped by now) or a run that cannot go on: save nothing
            stores.abort(plan.targets)
            raise
        with step("cache stores after the build"):
            stores.after(plan.targets, results)
        _credit_holders(plan, results)
        for name, counts in tally.steps().items():
            results[name].steps = counts
        for name, refs in tally.cache_read().items():
            results[name].cache_read = refs
        for name, owners in tally.shared().items():
            results[name].shared_with = owners
        for name, seconds in tally.seconds().items():
            results[name].seconds = seconds
        elapsed = time.monotonic() - started
        for svc in full.services:
            stages = [results[t.name] for t in svc.targets]
            seconds = sum(s.seconds for s in stages) if svc.name in skips and skips[svc.name].skipped else elapsed
            run.services.append(ServiceResult(svc.name, stages, seconds, skips.get(svc.name)))
        mounts.attach(run.services)
        if run.exit_code == 0 and plan.cache_errors == "fail":
            problem = next(
                (f"{s.service}/{s.stage}: {w}" for r in run.services for s in r.stages for w in s.cache_warnings), None
            )
            if problem:
                run.exit_code = CacheError.exit_code
                run.error = f"{problem} (settings.cache_errors = 'fail')"
        with step("meta-data and annotations"):
            for svc, service_result in zip(full.services, run.services, strict=True):
                if run.exit_code == 0 and service_result.succeeded:
                    self._publish(svc, service_result, stores.meta_data(svc.name, plan.targets, results))
                self._annotate(service_result)
        run.timeline = self.timeline
        return run

    # ----------------------------------------------------------------------------------------- bake runs

    def _build(
        self, plan: Plan, tally: Tally, run: RunResult, results: Mapping[str, StageResult], stores: Stores
    ) -> None:
        """The bake run (again once after a race that is not the build's fault), then the rescue if it failed."""
        first = self._bake(plan, tally, run, "build")
        race = _race(first) if not first.succeeded else None
        if race:
            message = f"{race}: building again"
            run.warnings.append(message)
            self.console.warn(message)
            tally.drop_last()
            stores.fresh_sinks(plan.running)
            first = self._bake(plan, tally, run, "build (again)")
        if first.stalled:
            first = self._without_caches_after_a_stall(plan, first, tally, run, stores)
        pushing = _push_failure(first) if not first.succeeded else None
        broken = stores.import_failed(plan.running, _error_text(first)) if not first.succeeded and not pushing else {}
        if broken:
            # A cache is a miss, never an outage: build once more without the caches that could not be read.
            for store, reason in broken.items():
                message = f"cache store '{store}': {reason}"
                if plan.cache_errors == "fail":
                    run.warnings.append(f"{message} (settings.cache_errors = 'fail': not building without it)")
                else:
                    run.warnings.append(f"{message}: building again without it")
                self.console.warn(run.warnings[-1])
            if plan.cache_errors != "fail":
                plan = plan.with_targets([_without_sources(t, broken) for t in plan.targets])
                tally.drop_last()
                stores.fresh_sinks(plan.running)
                first = self._bake(plan, tally, run, "build (without the broken cache)")
        self._record(plan.running, first, tally, results)
        if first.succeeded:
            for target in plan.targets:
                results[target.name].status = "ok"
            self._save_again(plan, tally, run, results, stores)
        else:
            self._after_failure(plan, first, tally, run, results, stores)

    def _without_caches_after_a_stall(
        self, plan: Plan, first: BakeRun, tally: Tally, run: RunResult, stores: Stores
    ) -> BakeRun:
        """A transfer stalled and the run was stopped: a cache is never worth more than a miss, so build once
        more without any cache source (with ``cache_errors = "fail"``: stop here). A second stall is a failure."""
        message = f"a transfer stalled ({first.stalled})"
        if plan.cache_errors == "fail":
            run.warnings.append(f"{message} (settings.cache_errors = 'fail': not building without caches)")
            self.console.warn(run.warnings[-1])
            return first
        run.warnings.append(f"{message}: building again without caches")
        self.console.warn(run.warnings[-1])
        every = {t.caches.store: "" for t in plan.targets}
        tally.drop_last()
        stores.fresh_sinks(plan.running)
        return self._bake(plan.with_targets([_without_sources(t, every) for t in plan.targets]), tally, run, "build")

    def _save_again(
        self, plan: Plan, tally: Tally, run: RunResult, results: Mapping[str, StageResult], stores: Stores
    ) -> None:
        """Saves a store refused for a passing reason (a prune that deleted a blob meanwhile): once more, cache
        only; everything is in BuildKit's local cache by now, and it uploads what the prune took again."""
        refused = stores.refused_saves(plan.running)
        if not refused:
            return
        retry = [dataclasses.replace(t, output="cacheonly", tags=()) for t in plan.running if t.name in refused]
        for target in retry:
            self.console.info(f"{target.name}: {refused[target.name]}: saving again")
        stores.fresh_sinks(retry)
        again = self._bake(plan.only(retry), tally, run, "save again", "collapsed")
        exported = tally.exported()
        for target in retry:
            results[target.name].exported = again.succeeded and exported[target.name]

    def _bake(self, plan: Plan, tally: Tally, run: RunResult, what: str, group: GroupKind = "expanded") -> BakeRun:
        targets = plan.running
        names = ", ".join(f"{s.name} ({', '.join(t.stage for t in s.targets if t.runs)})" for s in plan.services)
        pushes = any(t.push for t in targets)
        self.console.section(f":docker: {what}{' and push' if pushes else ''}: {names}", group)
        events = BuildEvents()
        decoder = RawJsonDecoder()
        succeeded, stderr, stopped = True, "", True
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="dockercache-") as tmp:
            # Build args travel in this file, never in process arguments: private to this user, removed after.
            bake_file = Path(tmp) / "bake.json"
            bake_file.touch(mode=0o600)
            bake_file.write_text(json.dumps(plan.bake_definition(), indent=2))
            metadata_file = Path(tmp) / "metadata.json"
            env = {**plan.bake_env, **self.docker_env}
            self.timeline.bake_started()
            chunks = self.docker.bake(plan.bake_argv(str(bake_file), str(metadata_file)), env)
            live = self.console.live([t.name for t in targets], tally)
            ticker = Ticker(live) if live is not None else contextlib.nullcontext()
            watchdog = Watchdog(events, plan.stall_seconds, getattr(chunks, "stop", None))
            try:
                with ticker, watchdog:
                    for chunk in chunks:
                        self.timeline.bake_byte()
                        for item in decoder.feed(chunk):
                            for vertex in events.apply(item):
                                self.console.step(vertex)
                            if live is not None:
                                live.update(events)
                stopped = False
            except BuildFailed as exc:
                succeeded, stderr, stopped = False, exc.stderr, False
            finally:
                _close(chunks)  # an interrupt stops buildx here and now, not when the generator is collected
                for vertex in events.finish(decoder.close()):
                    self.console.step(vertex)
                if live is not None:
                    live.update(events)
                    live.finish(None if stopped else {t.name: succeeded for t in targets})
                run.buildx_seconds += time.monotonic() - started
                self.timeline.bake_ended()
            metadata = _read_json(metadata_file)
        tally.add(events, [t.name for t in targets])
        return BakeRun(succeeded and watchdog.stalled is None, events, metadata, stderr, watchdog.stalled)

    def _record(
        self, targets: Sequence[Target], bake: BakeRun, tally: Tally, results: Mapping[str, StageResult]
    ) -> None:
        """What one bake run did for each target it ran: status, image, cache export, cache problems."""
        exported = tally.exported()
        problems = tally.cache_problems()
        for target in targets:
            result = results[target.name]
            for problem in problems[target.name]:
                result.warn(self.console, problem)
            result.exported = bool(target.caches.sink) and exported[target.name]
            if not bake.succeeded:
                continue
            result.status = "ok"
            meta = bake.metadata.get(target.name)
            digest = meta.get("containerimage.digest") if isinstance(meta, dict) else None
            result.digest = digest if isinstance(digest, str) else None
            result.pushed = target.push

    def _after_failure(
        self,
        plan: Plan,
        bake: BakeRun,
        tally: Tally,
        run: RunResult,
        results: Mapping[str, StageResult],
        stores: Stores,
    ) -> None:
        """Name the failing target, show its output, then keep the caches of the work that succeeded.

        Bake cancels every target when one fails and may export no cache at all; so the targets that did
        not fail and do not build on the failed stage are baked again, cache only (no push, no load): the
        local BuildKit cache answers what the first run built, and their caches are written as planned.
        """
        failures = tally.failures()
        failed_stages = {f.stage for f in failures if f.stage}
        failed = {name for f in failures for name in f.targets}
        failed |= {t.name for t in plan.targets if failed_stages & set(t.graph)}
        for target in plan.targets:
            results[target.name].status = "failed" if target.name in failed or not failures else "cancelled"
        run.exit_code = 1
        if bake.stalled:  # stopped by the watchdog: not the build's fault, nor anything to rescue
            for target in plan.running:
                results[target.name].status, results[target.name].error = "failed", f"stopped: {bake.stalled}"
            run.error = f"{', '.join(s.name for s in plan.services)}: stopped: a transfer stalled ({bake.stalled})"
            return
        if not failures:
            pushing = _push_failure(bake)
            reason = pushing or bake.events.last_error_line() or _last_line(bake.stderr) or "buildx bake failed"
            for target in plan.running:
                results[target.name].error = reason
            names = ", ".join(s.name for s in plan.services)
            run.error = f"{names}: {pushing}" if pushing else f"{names}: build failed: {reason}"
            return
        for failure in failures:
            for target in plan.targets:
                if target.name in failure.targets or target.stage == failure.stage:
                    results[target.name].error = failure.describe()
            if failure.logs:
                self.console.section(f":rotating_light: output of {failure.name} (target {', '.join(failure.targets)})")
                for line in failure.logs:
                    self.console.info(f"    {line}")
                self.console.open_failed_group()
        step_failures = [f for f in failures if f.stage]
        if not step_failures:
            # Not a Dockerfile step (booting the builder, pushing the image): nothing to tell apart, no rescue.
            services = ", ".join(dict.fromkeys(t.service for t in plan.targets if t.name in failed))
            pushing = _push_failure(bake)
            run.error = f"{services}: {pushing}" if pushing else f"{services}: build failed: {failures[0].describe()}"
            return
        first_failed = next(t for t in plan.targets if t.name in failed and results[t.name].error)
        run.error = f"{first_failed.service}/{first_failed.stage}: build failed: {step_failures[0].describe()}"
        # Keep what did build: the largest stages that do not build on a failed one, cache only.
        kept = [t for t in plan.targets if t.name not in failed and t.caches.sink is not None]
        rescue = [
            dataclasses.replace(t, output="cacheonly", tags=())
            for t in kept
            if not any(t.stage in o.graph for o in kept if o is not t and o.identity == t.identity)
        ]
        if not rescue:
            return
        self.console.info(
            f"keeping the caches of what did build: {', '.join(t.name for t in rescue)} (cache only, nothing pushed)"
        )
        stores.fresh_sinks(rescue)
        again = self._bake(plan.only(rescue), tally, run, "save the caches of", "collapsed")
        self._record(rescue, dataclasses.replace(again, succeeded=False), tally, results)
        if not again.succeeded:
            self.console.warn("saving the caches of the targets that did not fail failed too")

    # ------------------------------------------------------------------------------------- skip_unchanged

    def _skip_unchanged(self, plan: Plan, results: Mapping[str, StageResult]) -> tuple[Plan, dict[str, SkipReport]]:
        """For every service with skip_unchanged on: its key, and a retag instead of a build when its
        repository holds an image tagged with it. Returns the plan of what is left to build, the key's tag
        pushed beside each pushed image's own tags, and a report per such service."""
        reports: dict[str, SkipReport] = {}
        tagged: list[Target] = []
        for svc in plan.services:
            if svc.skip is None or not svc.skip.enabled or not svc.image:
                continue
            started = time.monotonic()
            self.console.section(f":mag: {svc.name}: skip if unchanged", "quiet")
            report = reports[svc.name] = self._unchanged(svc, svc.skip)
            self.console.info(f"{svc.name}: {report.reason}")
            pushed = [t for t in svc.targets if t.runs and t.push]
            if report.skipped:
                for target in svc.targets:
                    result = results[target.name]
                    result.status, result.pushed = "skipped", target in pushed
                result = results[next(t.name for t in svc.targets if t.final)]
                result.digest, result.seconds = report.digest, time.monotonic() - started
            elif report.key:
                for target in pushed:
                    tag = f"{svc.image}:{key_tag(report.key, None if target.final else target.stage)}"
                    tagged.append(dataclasses.replace(target, tags=(*target.tags, tag)))
        plan = plan.with_targets(tagged)
        left = tuple(s for s in plan.services if not (s.name in reports and reports[s.name].skipped))
        return dataclasses.replace(plan, services=left), reports

    def _unchanged(self, svc: ServicePlan, setting: SkipSetting) -> SkipReport:
        """The service's key, and whether the image it names is in the repository (then retagged)."""
        scan = setting.scan
        assert scan is not None and svc.image is not None
        with ThreadPoolExecutor(max_workers=8) as pool:
            bases = dict(zip(setting.bases, pool.map(self.docker.manifest_digest, setting.bases), strict=True))
        missing = next((ref for ref, digest in bases.items() if digest is None), None)
        if missing is not None:
            reason = f"base image {missing} cannot be resolved in its registry: building"
            return SkipReport(False, reason, files=scan.files, bytes=scan.bytes)
        digests = {ref: digest for ref, digest in bases.items() if digest is not None}
        try:
            context = context_digest(scan)
        except Unavailable as exc:
            return SkipReport(False, f"{exc}: building", bases=digests, files=scan.files, bytes=scan.bytes)
        running = [t for t in svc.targets if t.runs]
        final = next(t for t in svc.targets if t.final)
        key = KeyInputs(
            dockerfile=sha256_bytes(scan.dockerfile_bytes),
            context=context,
            patterns=scan.patterns,
            args=final.args,
            targets=tuple((t.dockerfile_target or t.stage, t.output) for t in running),
            bases=digests,
            platforms=final.platforms,
            secrets=final.secrets,
            ssh=final.ssh,
            labels=final.labels,
            attest=final.attest,
        ).key()
        tag = key_tag(key)
        source = f"{svc.image}:{tag}"
        report = SkipReport(False, "", key, tag, source, bases=digests, files=scan.files, bytes=scan.bytes)
        digest = self.docker.manifest_digest(source)
        if digest is None:
            return dataclasses.replace(report, reason=f"no image tagged {tag} in {svc.image}: building, and pushing it")
        try:
            for target in (t for t in running if t.push):
                self.docker.retag(f"{svc.image}:{key_tag(key, None if target.final else target.stage)}", target.tags)
        except EnvironmentProblem as exc:
            self.console.warn(f"{svc.name}: {exc}")
            return dataclasses.replace(report, reason=f"{exc}: building")
        retagged = ", ".join(final.tags)
        reason = f"unchanged: {source} was built from the same inputs; retagged as {retagged} (nothing built)"
        return dataclasses.replace(report, skipped=True, reason=reason, digest=digest)

    def _prune(self, builder: BuilderPlan, results: Mapping[str, StageResult]) -> None:
        """Bound the builder's build cache (``builder.keep_storage``) once everything built: a long-lived agent
        otherwise keeps every record of every build until BuildKit's own collector runs."""
        argv = builder.prune_argv()
        if argv is None or not all(r.status in ("ok", "skipped") for r in results.values()):
            return
        try:
            said = self.docker.prune_builder(argv)
        except EnvironmentProblem as exc:
            self.console.warn(f"builder '{builder.name}': {exc}")
            return
        self.console.info(f"builder '{builder.name}': build cache pruned to {builder.keep_storage} ({said or 'done'})")

    def _secret(self, value: str) -> None:
        add = getattr(self.console.redact, "add", None)  # a Redactor (commands.py); tests may pass plain str
        if callable(add):
            add((value,))

    # ------------------------------------------------------------------------------------------ Buildkite

    def _meta_data_get(self, key: str) -> str | None:
        if self.agent is None:
            return None
        try:
            return self.agent.meta_data_get(key)
        except AgentError as exc:
            self.console.warn(str(exc))
            return None

    def _publish(self, svc: ServicePlan, result: ServiceResult, store_values: Mapping[str, str]) -> None:
        """Meta-data for later steps, written only after the whole service built successfully."""
        if self.agent is None:
            return
        values: dict[str, str] = {}
        final = result.final
        key = svc.image_meta_data_key
        if key and final and final.tags and final.pushed:  # a later step (another agent) pulls it
            values[key] = final.tags[0]
        values.update(store_values)
        for k, v in values.items():
            try:
                self.agent.meta_data_set(k, v)
            except AgentError as exc:
                self.console.warn(str(exc))

    def _annotate(self, result: ServiceResult) -> None:
        if self.agent is None:
            return
        warnings = any(s.cache_warnings for s in result.stages)
        style = {"ok": "warning" if warnings else "success", "skipped": "success", "failed": "error"}.get(
            result.status, "info"
        )
        try:
            env = self.agent.env or {}
            self.agent.annotate(
                render_markdown(result, job_log_url(env), self.console.redact),
                style,
                annotation_context(result.name, env),
            )
        except AgentError as exc:
            self.console.warn(str(exc))


def _credit_holders(plan: Plan, results: Mapping[str, StageResult]) -> None:
    """A stage built inside another target has its layers in that target's (mode=max) cache: say which."""
    for target in plan.targets:
        result = results[target.name]
        if result.cache_written is not None or result.status == "failed":
            continue
        holders = [t for t in plan.targets if t is not target and target.stage in t.graph]
        holders = [t for t in holders if t.identity == target.identity]
        holders.sort(key=lambda t: t.name != target.built_by)  # the target that built it first
        result.cache_written = next((w for w in (results[t.name].cache_written for t in holders) if w), None)


#: BuildKit's words when it could not push an image (``exporting to image: failed to push REF: WHY``).
_PUSH = re.compile(r"failed to push (?P<ref>[^\s:/]+(?::\d+)?/\S+?): (?P<why>[^\n]+)")
#: The end of Go's ``failed to do request: Head "https://...": dial tcp ...: connect: connection refused``.
_AFTER_URL = re.compile(r'^.*"[a-z]+://[^"]*":\s*')


def _push_failure(bake: BakeRun) -> str | None:
    """``push to HOST failed (REF): WHY`` when a run failed pushing an image rather than building it or reading a
    cache: the image registry is at fault, not a cache (no rebuild without caches, no cache warning)."""
    for text in (*(v.error or "" for v in bake.events.vertexes.values()), bake.stderr):
        match = _PUSH.search(text)
        if match:
            ref = match["ref"]
            why = _AFTER_URL.sub("", match["why"]).strip() or match["why"]
            return f"push to {ref.split('/', 1)[0]} failed ({ref}): {why}"
    return None


_SOLVER_RACE = "failed to get state for index"
#: The containerd image store refusing a name another job of the same commit stored an instant before, or losing
#: the parent snapshot of a layer another job's export was unpacking at the same moment.
_IMAGE_RACE = re.compile(
    r'image "[^"\n]+"[^\n]*already exists'
    r"|failed to prepare extraction snapshot[^\n]*parent snapshot [^\n]*does not exist"
)
#: Docker 26's image store (the docker driver, which pushes a named image through the daemon) losing the name the
#: export gave an instant before, while another export or a cache export of the same run was still writing.
_NAME_LOST = re.compile(r"pushing \S+ with docker: tag does not exist")


def _race(bake: BakeRun) -> str | None:
    """What went wrong when a run failed on a race that a second try does not meet, rather than on the build:

    - BuildKit 0.13's solver can fail a solve of concurrent targets that share vertices (moby/buildkit#3635);
    - two jobs of one commit on one agent store the same image name at once, and the containerd image store
      refuses the second (``exporting to image: image "app:<commit>": already exists``), or loses a layer's parent
      snapshot while both unpack it (``failed to prepare extraction snapshot ...: parent snapshot ... does not
      exist``);
    - the docker driver's push finds no image under the name its export just gave (``pushing ... with docker: tag
      does not exist``; seen when a cache export of the same run failed at that moment).
    """
    texts = [*(v.error or "" for v in bake.events.vertexes.values()), *bake.events.text, bake.stderr]
    for text in texts:
        if _SOLVER_RACE in text:
            return f"BuildKit lost track of a shared step ({first_line(text[text.index(_SOLVER_RACE) :])})"
        match = _IMAGE_RACE.search(text)
        if match:
            return f"another job stored the same image at the same moment ({match.group()})"
        match = _NAME_LOST.search(text)
        if match:
            return f"the image store lost the image's name before its push ({match.group()})"
    return None


def _close(chunks: Iterator[str]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _last_line(text: str) -> str | None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("ERROR:").strip() if lines else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
