"""skip_unchanged carried out: for every service with it on, the key of its inputs, and a retag of the image built
from the same inputs instead of a build when its repository holds one (the key itself is
:mod:`dockercache.planning.skip`'s)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ..errors import EnvironmentProblem
from ..model import Plan, ServicePlan, Target
from ..model.skip import SkipSetting, Unavailable
from ..output.console import Console
from ..output.results import SkipReport, StageResult
from ..planning.context import context_digest
from ..planning.skip import KeyInputs, key_tag, sha256_bytes
from .port import DockerPort


def skip_unchanged(
    docker: DockerPort, console: Console, plan: Plan, results: Mapping[str, StageResult]
) -> tuple[Plan, dict[str, SkipReport]]:
    """For every service with skip_unchanged on: its key, and a retag instead of a build when its
    repository holds an image tagged with it. Returns the plan of what is left to build, the key's tag
    pushed beside each pushed image's own tags, and a report per such service."""
    reports: dict[str, SkipReport] = {}
    tagged: list[Target] = []
    for svc in plan.services:
        if svc.skip is None or not svc.skip.enabled or not svc.image:
            continue
        started = time.monotonic()
        console.section(f":mag: {svc.name}: skip if unchanged", "quiet")
        report = reports[svc.name] = unchanged(docker, console, svc, svc.skip)
        console.info(f"{svc.name}: {report.reason}")
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


def unchanged(docker: DockerPort, console: Console, svc: ServicePlan, setting: SkipSetting) -> SkipReport:
    """The service's key, and whether the image it names is in the repository (then retagged)."""
    scan = setting.scan
    assert scan is not None and svc.image is not None
    with ThreadPoolExecutor(max_workers=8) as pool:
        bases = dict(zip(setting.bases, pool.map(docker.manifest_digest, setting.bases), strict=True))
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
    digest = docker.manifest_digest(source)
    if digest is None:
        return dataclasses.replace(report, reason=f"no image tagged {tag} in {svc.image}: building, and pushing it")
    try:
        for target in (t for t in running if t.push):
            docker.retag(f"{svc.image}:{key_tag(key, None if target.final else target.stage)}", target.tags)
    except EnvironmentProblem as exc:
        console.warn(f"{svc.name}: {exc}")
        return dataclasses.replace(report, reason=f"{exc}: building")
    retagged = ", ".join(final.tags)
    reason = f"unchanged: {source} was built from the same inputs; retagged as {retagged} (nothing built)"
    return dataclasses.replace(report, skipped=True, reason=reason, digest=digest)
