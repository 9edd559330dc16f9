"""Carrying out a plan: the runner (:class:`Runner`), a short pipeline of named steps, each timed.

Connect (Docker, registry logins); skip what is unchanged (:mod:`.unchanged`); ready the stores; on the builder
(:mod:`.builder`), restore the cache mounts, build (:mod:`.build`: the bake runs of :mod:`.bake`, and the failure
policy), save the cache mounts, prune; the stores after the build; the results gathered; meta-data and
annotations for Buildkite.

The runner knows the Docker adapter (any object with :class:`~dockercache.run.port.DockerPort`'s methods), the
Buildkite agent and the :class:`~dockercache.stores.Stores` it drives over every target; it knows no store kind by
name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ..adapters.buildkite import S3_KEY, Agent, AgentError, annotation_context, job_log_url
from ..adapters.dockerconfig import run_config
from ..config.model import RegistryLogin
from ..errors import CacheError, EnvironmentProblem
from ..model import BuilderPlan, Plan, ServicePlan
from ..output.console import Console
from ..output.report import render_markdown
from ..output.results import RunResult, ServiceResult, SkipReport, StageResult
from ..output.tally import Tally, TargetInfo
from ..stores import BlobStoreFactory, RunContext, Stores
from ..timeline import Timeline
from .bake import Baker
from .build import Build
from .builder import builder_session, check_platforms
from .mounts import CacheMounts
from .port import DockerPort
from .records import Records
from .unchanged import skip_unchanged

#: The user name and password to log in to a registry with (commands passes :func:`.adapters.ecr.credentials`).
Credentials = Callable[[str, RegistryLogin], tuple[str, str]]


def given_credentials(host: str, login: RegistryLogin) -> tuple[str, str]:
    """The entry's own user name and password."""
    if login.username is None or login.password is None:
        raise EnvironmentProblem(f"no user name and password to log in to {host} with")
    return login.username, login.password


class Runner:
    """Carries plans out (:meth:`run`) with one Docker, console, Buildkite agent and set of registry logins."""

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
        self.records: Records | None = None
        """The records beside this run's caches: why steps missed (:mod:`.records`)."""

    def run(self, plan: Plan) -> RunResult:
        """Carry ``plan`` out, step by step; the run's result (its exit code, error, warnings, per service)."""
        run = RunResult(cache_write=plan.cache_write, cache_write_reason=plan.cache_write_reason)
        stores = Stores(self._context(plan, run))
        stores.open(plan.targets)
        records = self.records = Records(self.console, stores.records(), plan.branch, plan.commit)
        self._connect()
        started = time.monotonic()
        results = {
            t.name: StageResult(t.service, t.stage, t.dockerfile_target, t.final, name=t.name, tags=t.tags)
            for t in plan.targets
        }
        mounts = CacheMounts(self.docker, self.console, run.warnings, stores.endpoint)
        built, skips, tally = self._build(plan, run, results, stores, mounts)
        with self.timeline.step("cache stores after the build"):
            stores.after(built.targets, results)
            records.after(built.targets, tally, results)  # why steps missed; the records of what was written
        _credit_holders(built, results)
        _take_tally(tally, results)
        run.services.extend(_service_results(plan, results, skips, time.monotonic() - started))
        mounts.attach(run.services)
        _fail_on_cache_warnings(run, built.cache_errors)
        with self.timeline.step("meta-data and annotations"):
            self._tell_buildkite(plan, built, run, results, stores)
        run.timeline = self.timeline
        return run

    def _context(self, plan: Plan, run: RunResult) -> RunContext:
        """What the stores are given of the run."""
        return RunContext(
            console=self.console,
            commit=plan.commit,
            branch=plan.branch,
            cache_errors=plan.cache_errors,
            meta_data_get=lambda key: self._recorded(plan, key),
            blob_store=self.blob_store,
            builder_driver=plan.builder.driver,
            warnings=run.warnings,
            read_manifest=self.docker.read_manifest,
            secret=self._secret,
        )

    def _connect(self) -> None:
        """Docker answers, and every registry login is done."""
        step = self.timeline.step
        with step("docker ping"):
            self.docker.ping()
        if self.logins:
            self.console.section(":key: registry logins", "quiet")
        with step("registry logins"):
            for host, login in self.logins.items():
                username, password = self.credentials(host, login)  # an ECR token is asked for here, just in time
                self.console.info(f"logging in to {host} as {username} (password on stdin)")
                self.docker.login(host, username, password)

    def _build(
        self,
        plan: Plan,
        run: RunResult,
        results: Mapping[str, StageResult],
        stores: Stores,
        mounts: CacheMounts,
    ) -> tuple[Plan, dict[str, SkipReport], Tally]:
        """Skip what is unchanged, ready the stores, and build the rest on the builder. Returns the plan built
        (what was not skipped, with the stores' caches), skip_unchanged's reports, and the tally of the runs."""
        step = self.timeline.step
        try:
            with step("skip unchanged"):
                plan, skips = skip_unchanged(self.docker, self.console, plan, results)
            with step("cache stores before the build"):
                plan = plan.with_targets(stores.before(plan.targets, results))
                if self.records is not None:  # the records beside the caches each target reads
                    self.records.before(plan.targets)
            tally = Tally([TargetInfo(t.name, t.stage, t.identity, t.graph) for t in plan.targets])
            if plan.running:  # nothing to build when every service was skipped
                self._on_the_builder(plan, tally, run, results, stores, mounts)
        except BaseException:  # SIGINT, SIGTERM (buildx is stopped by now) or a run that cannot go on: save nothing
            stores.abort(plan.targets)
            raise
        return plan, skips, tally

    def _on_the_builder(
        self,
        plan: Plan,
        tally: Tally,
        run: RunResult,
        results: Mapping[str, StageResult],
        stores: Stores,
        mounts: CacheMounts,
    ) -> None:
        """On the builder (made sure of, removed after when ephemeral), with the stores' own logins: restore the
        cache mounts, build, save the cache mounts, prune."""
        step = self.timeline.step
        session = builder_session(self.docker, plan.builder, self.console, step("builder"))
        with session, run_config(stores.logins()) as env:
            self.docker_env = mounts.env = env  # the stores' own logins, for this run's buildx alone
            check_platforms(self.docker, plan)
            with step("cache mounts restore"):
                mounts.restore(plan)
            baker = Baker(self.docker, self.console, self.timeline, self.docker_env)
            Build(baker, self.console, tally, run, results, stores)(plan)
            if any(s.cache_mounts is not None for s in plan.services):  # attribution only when used
                with step("cache mounts save"):
                    mounts.save(plan, results, tally.steps())
            with step("builder prune"):
                self._prune(plan.builder, results)

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

    def _tell_buildkite(
        self, plan: Plan, built: Plan, run: RunResult, results: Mapping[str, StageResult], stores: Stores
    ) -> None:
        """Per service: its meta-data (when the run and the service succeeded) and its annotation."""
        for svc, service_result in zip(plan.services, run.services, strict=True):
            if run.exit_code == 0 and service_result.succeeded:
                self._publish(svc, service_result, stores.meta_data(svc.name, built.targets, results))
            self._annotate(service_result)

    def _meta_data_get(self, key: str) -> str | None:
        if self.agent is None:
            return None
        try:
            return self.agent.meta_data_get(key)
        except AgentError as exc:
            self.console.warn(str(exc))
            return None

    def _recorded(self, plan: Plan, key: str) -> str | None:
        """A meta-data value; for a service's snapshot key, when dockercache's own is not there, the old docker-cache
        plugin's ``<metadata_key>-s3`` (an earlier step of the build, with that plugin, wrote it)."""
        value = self._meta_data_get(key)
        for svc in plan.services:
            if value is None and key == S3_KEY.format(service=svc.name) and svc.image_meta_data_key:
                value = self._meta_data_get(f"{svc.image_meta_data_key}-s3")
        return value

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
        saved = store_values.get(S3_KEY.format(service=svc.name))
        if key and saved:  # the old docker-cache plugin's: where the image's cache went, for its later steps
            values[f"{key}-s3"] = saved
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


def _take_tally(tally: Tally, results: Mapping[str, StageResult]) -> None:
    """Per target: its steps, the caches its hits came from, whom it shares steps with, its time."""
    for name, counts in tally.steps().items():
        results[name].steps = counts
    for name, refs in tally.cache_read().items():
        results[name].cache_read = refs
    for name, owners in tally.shared().items():
        results[name].shared_with = owners
    for name, seconds in tally.seconds().items():
        results[name].seconds = seconds


def _service_results(
    plan: Plan, results: Mapping[str, StageResult], skips: Mapping[str, SkipReport], elapsed: float
) -> list[ServiceResult]:
    """A result per service of the plan: its stages, and its time (a skipped one's own, else the run's)."""
    services = []
    for svc in plan.services:
        stages = [results[t.name] for t in svc.targets]
        seconds = sum(s.seconds for s in stages) if svc.name in skips and skips[svc.name].skipped else elapsed
        services.append(ServiceResult(svc.name, stages, seconds, skips.get(svc.name)))
    return services


def _fail_on_cache_warnings(run: RunResult, cache_errors: str) -> None:
    """With ``settings.cache_errors = "fail"``, a run that built but met a cache warning fails with its exit code."""
    if run.exit_code == 0 and cache_errors == "fail":
        problem = next(
            (f"{s.service}/{s.stage}: {w}" for r in run.services for s in r.stages for w in s.cache_warnings), None
        )
        if problem:
            run.exit_code = CacheError.exit_code
            run.error = f"{problem} (settings.cache_errors = 'fail')"
