"""The build of a plan, and what follows when its bake run fails (the failure policy).

A cache is a miss, never an outage, and a failure not of the build's making gets a second chance: a run that
met a race (:func:`~dockercache.run.diagnosis.race`) runs again once; one stopped because a blob transfer
stalled runs again without any cache source; one that could not read a cache runs again without that store's.
Then every target's outcome is recorded; a store's refused save is tried once more; and when the build itself
failed, the failing step's output is shown and the caches of what did build are kept (the rescue). With
``settings.cache_errors = "fail"`` a broken or stalled cache stops the build instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..model import Plan, Target
from ..output.console import Console, GroupKind
from ..output.results import RunResult, StageResult
from ..output.tally import Failure, Tally
from ..stores import Stores
from .bake import Baker, BakeRun
from .diagnosis import error_text, last_line, push_failure, race


def _without_sources(target: Target, stores: Mapping[str, str]) -> Target:
    if target.caches.store not in stores:
        return target
    return dataclasses.replace(target, caches=dataclasses.replace(target.caches, sources=()))


@dataclasses.dataclass
class Build:
    """Builds a plan (:meth:`__call__`) into ``results``, ``run`` and ``tally``, with ``stores`` ready."""

    baker: Baker
    console: Console
    tally: Tally
    run: RunResult
    results: Mapping[str, StageResult]
    stores: Stores

    def __call__(self, plan: Plan) -> None:
        """The bake run (again once after a race that is not the build's fault), then the rescue if it failed."""
        first = self._again_after_a_race(plan, self._bake(plan, "build"))
        if first.stalled:
            first = self._without_caches_after_a_stall(plan, first)
        plan, first = self._without_broken_caches(plan, first)
        self._record(plan.running, first)
        if first.succeeded:
            for target in plan.targets:
                self.results[target.name].status = "ok"
            self._save_again(plan)
        else:
            self._after_failure(plan, first)

    def _bake(self, plan: Plan, what: str, group: GroupKind = "expanded") -> BakeRun:
        return self.baker(plan, self.tally, self.run, what, group)

    def _warn(self, message: str) -> None:
        """A warning of the run: in its report, and printed."""
        self.run.warnings.append(message)
        self.console.warn(message)

    def _again_after_a_race(self, plan: Plan, first: BakeRun) -> BakeRun:
        """A run that failed on a race (not the build's fault) is run once more."""
        met = race(first) if not first.succeeded else None
        if not met:
            return first
        self._warn(f"{met}: building again")
        self.tally.drop_last()
        self.stores.fresh_sinks(plan.running)
        return self._bake(plan, "build (again)")

    def _without_caches_after_a_stall(self, plan: Plan, first: BakeRun) -> BakeRun:
        """A transfer stalled and the run was stopped: a cache is never worth more than a miss, so build once
        more without any cache source (with ``cache_errors = "fail"``: stop here). A second stall is a failure."""
        message = f"a transfer stalled ({first.stalled})"
        if plan.cache_errors == "fail":
            self._warn(f"{message} (settings.cache_errors = 'fail': not building without caches)")
            return first
        self._warn(f"{message}: building again without caches")
        every = {t.caches.store: "" for t in plan.targets}
        self.tally.drop_last()
        self.stores.fresh_sinks(plan.running)
        return self._bake(plan.with_targets([_without_sources(t, every) for t in plan.targets]), "build")

    def _without_broken_caches(self, plan: Plan, first: BakeRun) -> tuple[Plan, BakeRun]:
        """A run that failed reading a cache (not pushing an image): a cache is a miss, never an outage, so build
        once more without the caches that could not be read (with ``cache_errors = "fail"``: stop here). Returns
        the plan last baked and its run."""
        pushing = push_failure(first) if not first.succeeded else None
        broken = (
            self.stores.import_failed(plan.running, error_text(first)) if not first.succeeded and not pushing else {}
        )
        if not broken:
            return plan, first
        for store, reason in broken.items():
            message = f"cache store '{store}': {reason}"
            if plan.cache_errors == "fail":
                self._warn(f"{message} (settings.cache_errors = 'fail': not building without it)")
            else:
                self._warn(f"{message}: building again without it")
        if plan.cache_errors == "fail":
            return plan, first
        plan = plan.with_targets([_without_sources(t, broken) for t in plan.targets])
        self.tally.drop_last()
        self.stores.fresh_sinks(plan.running)
        return plan, self._bake(plan, "build (without the broken cache)")

    def _save_again(self, plan: Plan) -> None:
        """Saves a store refused for a passing reason (a prune that deleted a blob meanwhile): once more, cache
        only; everything is in BuildKit's local cache by now, and it uploads what the prune took again."""
        refused = self.stores.refused_saves(plan.running)
        if not refused:
            return
        retry = [dataclasses.replace(t, output="cacheonly", tags=()) for t in plan.running if t.name in refused]
        for target in retry:
            self.console.info(f"{target.name}: {refused[target.name]}: saving again")
        self.stores.fresh_sinks(retry)
        again = self._bake(plan.only(retry), "save again", "collapsed")
        exported = self.tally.exported()
        for target in retry:
            self.results[target.name].exported = again.succeeded and exported[target.name]

    def _record(self, targets: Sequence[Target], bake: BakeRun) -> None:
        """What one bake run did for each target it ran: status, image, cache export, cache problems."""
        exported = self.tally.exported()
        problems = self.tally.cache_problems()
        for target in targets:
            result = self.results[target.name]
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

    # ------------------------------------------------------------------------------------------ failures

    def _after_failure(self, plan: Plan, bake: BakeRun) -> None:
        """Name the failing target, show its output, then keep the caches of the work that succeeded.

        Bake cancels every target when one fails and may export no cache at all; so the targets that did
        not fail and do not build on the failed stage are baked again, cache only (no push, no load): the
        local BuildKit cache answers what the first run built, and their caches are written as planned.
        """
        failures = self.tally.failures()
        failed = self._mark_failed(plan, failures)
        self.run.exit_code = 1
        if bake.stalled:  # stopped by the watchdog: not the build's fault, nor anything to rescue
            self._stopped(plan, bake.stalled)
            return
        if not failures:
            self._failed_outside_the_steps(plan, bake)
            return
        self._show(plan, failures)
        step_failures = [f for f in failures if f.stage]
        if not step_failures:
            # Not a Dockerfile step (booting the builder, pushing the image): nothing to tell apart, no rescue.
            services = ", ".join(dict.fromkeys(t.service for t in plan.targets if t.name in failed))
            pushing = push_failure(bake)
            self.run.error = (
                f"{services}: {pushing}" if pushing else f"{services}: build failed: {failures[0].describe()}"
            )
            return
        first_failed = next(t for t in plan.targets if t.name in failed and self.results[t.name].error)
        self.run.error = f"{first_failed.service}/{first_failed.stage}: build failed: {step_failures[0].describe()}"
        self._rescue(plan, failed)

    def _mark_failed(self, plan: Plan, failures: Sequence[Failure]) -> set[str]:
        """Every target failed (a step of its failed, or of a stage it builds) or cancelled; when no step failed
        at all, every one failed. Returns the names of the failed."""
        failed_stages = {f.stage for f in failures if f.stage}
        failed = {name for f in failures for name in f.targets}
        failed |= {t.name for t in plan.targets if failed_stages & set(t.graph)}
        for target in plan.targets:
            self.results[target.name].status = "failed" if target.name in failed or not failures else "cancelled"
        return failed

    def _stopped(self, plan: Plan, stalled: str) -> None:
        """The watchdog stopped the run: every target it ran failed, for that reason."""
        for target in plan.running:
            self.results[target.name].status, self.results[target.name].error = "failed", f"stopped: {stalled}"
        self.run.error = f"{', '.join(s.name for s in plan.services)}: stopped: a transfer stalled ({stalled})"

    def _failed_outside_the_steps(self, plan: Plan, bake: BakeRun) -> None:
        """No vertex failed: buildx's own last word (or the image push that failed) is every target's error."""
        pushing = push_failure(bake)
        reason = pushing or bake.events.last_error_line() or last_line(bake.stderr) or "buildx bake failed"
        for target in plan.running:
            self.results[target.name].error = reason
        names = ", ".join(s.name for s in plan.services)
        self.run.error = f"{names}: {pushing}" if pushing else f"{names}: build failed: {reason}"

    def _show(self, plan: Plan, failures: Sequence[Failure]) -> None:
        """Each failure is the error of the targets it concerns; its output is shown in a group of its own,
        the one Buildkite opens."""
        for failure in failures:
            for target in plan.targets:
                if target.name in failure.targets or target.stage == failure.stage:
                    self.results[target.name].error = failure.describe()
            if failure.logs:
                self.console.section(f":rotating_light: output of {failure.name} (target {', '.join(failure.targets)})")
                for line in failure.logs:
                    self.console.info(f"    {line}")
                self.console.open_failed_group()

    def _rescue(self, plan: Plan, failed: set[str]) -> None:
        """Keep what did build: the largest stages that do not build on a failed one, cache only."""
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
        self.stores.fresh_sinks(rescue)
        again = self._bake(plan.only(rescue), "save the caches of", "collapsed")
        met = race(again) if not again.succeeded else None
        if met:  # not the caches' fault: once more
            self._warn(f"{met}: saving the caches again")
            self.tally.drop_last()
            self.stores.fresh_sinks(rescue)
            again = self._bake(plan.only(rescue), "save the caches of", "collapsed")
        self._record(rescue, dataclasses.replace(again, succeeded=False))
        if not again.succeeded:
            self.console.warn("saving the caches of the targets that did not fail failed too")
