"""Cache mounts carried out: the helper builds that restore a service's ``RUN --mount=type=cache`` directories
before the bake and save them after a successful build (what :mod:`dockercache.planning.mounts` planned).

After a successful build one helper build (:func:`export_dockerfile`) mounts the same cache ids, writes one tar
archive per non-empty mount under the size cap, and saves them in the service's cache store: a registry store
gets them pushed by that build as a one-layer image, a local store exported to a directory swapped into place in
one step, an S3 store pushed through the run's endpoint. Before the build a second helper build
(:func:`restore_dockerfile`) extracts each archive into its cache mount, only when that mount is empty.

Nothing here ever fails a build: every problem is one warning and the build goes on without the mounts.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import EnvironmentProblem, HelperBuildFailed
from ..model import CacheMount, MountsPlan, buildx
from ..model.entry import _csv_field
from ..stores import mounts_transport
from ..stores.base import MountsSource, MountsTransport
from ..stores.s3.mounts import MountsEndpoint

if TYPE_CHECKING:
    from ..model import Plan
    from ..output.console import Console
    from ..output.results import ServiceResult, StageResult
    from ..output.tally import StepCount


#: What the helper builds print per mount, so the progress output says what happened.
MARK = "dockercache-mount"


NOTHING = "nothing-to-save"
"""The export helper's last word when every mount is empty or over the cap: it then fails on purpose, so that
nothing is pushed over the archives saved before."""


_MARK_LINE = re.compile(
    rf"^#\d+ [\d.]+ {MARK} (?P<file>\S+) (?P<what>restored|kept|absent|saved|over|empty|{NOTHING})"
    r"(?: (?P<bytes>\d+))?\s*$",
    re.M,
)


def export_dockerfile(image: str, mounts: Sequence[CacheMount], max_bytes: int) -> str:
    """The helper that writes ``/out/<file>`` (a tar of the mount, ``tar -C mount -cf``) for every non-empty
    mount not over ``max_bytes``, saying which (:func:`parse_mark_lines`); its last stage holds ``/out`` only,
    exported as it is (``type=local``) or pushed as a one-layer image (``type=registry``, in the same build).
    With nothing to save it fails on purpose (:data:`NOTHING`): no empty image replaces the last good one."""
    flags = " ".join(m.mount(_in(i)) for i, m in enumerate(mounts))
    script = ["mkdir -p /out"]
    for i, m in enumerate(mounts):
        archive = f"/out/{m.file}"
        script.append(
            f'if [ -z "$(ls -A {_in(i)})" ]; then echo "{MARK} {m.file} empty"; '
            f"else tar -C {_in(i)} -cf {archive} . && n=$(wc -c < {archive}) && "
            f'if [ "$n" -gt {max_bytes} ]; then rm {archive}; echo "{MARK} {m.file} over $n"; '
            f'else echo "{MARK} {m.file} saved $n"; fi; fi'
        )
    script.append(f'if [ -z "$(ls -A /out)" ]; then echo "{MARK} - {NOTHING}"; exit 3; fi')
    return f"FROM {image}\nRUN {flags} {' && '.join(script)}\nFROM scratch\nCOPY --from=0 /out /\n"


def restore_dockerfile(image: str, mounts: Sequence[CacheMount], source: str | None = None) -> str:
    """The helper that extracts each archive into its cache mount when that mount is empty; the archives are
    the build context, or the image ``source`` (bind-mounted: read from the registry, not downloaded)."""
    bind = "--mount=" + ",".join(
        _csv_field(p) for p in ("type=bind", "target=/dc-in", *([f"from={source}"] if source else ()))
    )
    lines = [f"FROM {image}"]
    for i, m in enumerate(mounts):
        archive = f"/dc-in/{m.file}"
        script = (
            f'if [ ! -f {archive} ]; then echo "{MARK} {m.file} absent"; '
            f'elif [ -n "$(ls -A {_in(i)})" ]; then echo "{MARK} {m.file} kept"; '
            f'else tar -C {_in(i)} -xf {archive} && echo "{MARK} {m.file} restored $(wc -c < {archive})"; fi'
        )
        lines.append(f"RUN {m.mount(_in(i))} {bind} {script}")
    return "\n".join(lines) + "\n"


def parse_mark_lines(text: str) -> dict[str, tuple[str, int]]:
    """{archive file: (what, bytes)} from a helper's ``--progress plain`` output: restored, kept or absent
    (restore); saved, over or empty (export)."""
    return {m["file"]: (m["what"], int(m["bytes"] or 0)) for m in _MARK_LINE.finditer(text)}


class HelperDocker(Protocol):
    """What the helper builds need of Docker (:class:`dockercache.adapters.docker.Docker`)."""

    def buildx_build(self, argv: Sequence[str], timeout: float = ..., env: Mapping[str, str] | None = None) -> str: ...
    def manifest_digest(self, ref: str) -> str | None: ...


@dataclass
class MountsReport:
    """What happened to one service's cache mounts in this run (``--json``: the service's ``cache_mounts``)."""

    restored_from: str | None = None
    restored: dict[str, int] = field(default_factory=dict)
    """Mount id -> bytes extracted into it."""
    kept: list[str] = field(default_factory=list)
    """Mounts that were not empty (a warm agent): left as they were."""
    saved_to: str | None = None
    saved: dict[str, int] = field(default_factory=dict)
    """Mount id -> bytes of its archive, saved."""
    unchanged: bool = False
    """Not saved: no step that mounts them ran (every one came from the layer cache)."""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "restored_from": self.restored_from,
            "restored": dict(self.restored),
            "restored_bytes": sum(self.restored.values()),
            "kept": list(self.kept),
            "saved_to": self.saved_to,
            "saved": dict(self.saved),
            "saved_bytes": sum(self.saved.values()),
            "unchanged": self.unchanged,
            "warnings": list(self.warnings),
        }


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _dockerfile(directory: Path, text: str) -> str:
    path = directory / "Dockerfile"
    path.write_text(text)
    return str(path)


class CacheMounts:
    """The runner's side: :meth:`restore` before the bake run, :meth:`save` after it, in the same builder."""

    def __init__(
        self,
        docker: HelperDocker,
        console: Console,
        warnings: list[str],
        endpoints: Callable[[str], MountsEndpoint | None] | None = None,
    ) -> None:
        self.docker = docker
        self.console = console
        self.warnings = warnings
        self.endpoints = endpoints or (lambda _store: None)
        """The endpoint serving an S3 store in this run, by store name (None: the store is unavailable)."""
        self.reports: dict[str, MountsReport] = {}
        self.env: Mapping[str, str] = {}
        """The environment of the helper builds (the run's Docker configuration, with the stores' logins)."""

    def _warn(self, service: str, text: str) -> None:
        message = f"{service}: cache mounts: {text}"
        self.reports.setdefault(service, MountsReport()).warnings.append(message)
        self.warnings.append(message)
        self.console.warn(message)

    @staticmethod
    def _planned(plan: Plan) -> list[MountsPlan]:
        return [s.cache_mounts for s in plan.services if s.cache_mounts is not None and s.cache_mounts.kind]

    def restore(self, plan: Plan) -> None:
        """Fill every empty cache mount of the services that persist them, from the first place that has them."""
        for mounts in self._planned(plan):
            if mounts.mounts and mounts.restore_from:
                report = self.reports.setdefault(mounts.service, MountsReport())
                try:
                    self._restore(plan.builder.name, mounts, report)
                except (EnvironmentProblem, OSError) as exc:
                    self._warn(mounts.service, f"restore failed, building without them: {exc}")

    def _transport(self, mounts: MountsPlan) -> MountsTransport | None:
        """How the helper builds reach ``mounts``' store, or None when it cannot be reached in this run (said;
        the store said why when it was opened)."""
        transport = mounts_transport(mounts.kind or "", self.docker, self.endpoints)
        why = transport.ready(mounts) if transport else "no way to reach them"
        if why:
            self.console.info(f"{mounts.service}: cache mounts: {why}")
            return None
        return transport

    def _restore(self, builder: str, mounts: MountsPlan, report: MountsReport) -> None:
        transport = self._transport(mounts)
        if transport is None:
            return
        with tempfile.TemporaryDirectory(prefix="dockercache-mounts-") as tmp:
            context, found, source = Path(tmp) / "context", None, MountsSource()
            context.mkdir()
            for place in mounts.restore_from:
                there = transport.find(mounts, place)
                if isinstance(there, str):
                    self._warn(mounts.service, f"{there}: ignored")
                elif there is not None:
                    found, source = place, there
                    break
            if found is None:
                self.console.info(f"{mounts.service}: cache mounts: none saved yet ({mounts.restore_from[0]})")
                return
            dockerfile = _dockerfile(Path(tmp), restore_dockerfile(mounts.image, mounts.mounts, source.image))
            argv = buildx.helper_build(builder, dockerfile, "type=cacheonly", str(source.context or context))
            output = self.docker.buildx_build(argv, env=self.env)
        report.restored_from = str(found)
        outcome = parse_mark_lines(output)
        for mount in mounts.mounts:
            what, size = outcome.get(mount.file, ("absent", 0))
            if what == "restored":
                report.restored[mount.id] = size
            elif what == "kept":
                report.kept.append(mount.id)
        total = sum(report.restored.values())
        kept = f", {len(report.kept)} kept (not empty)" if report.kept else ""
        self.console.info(
            f"{mounts.service}: cache mounts: restored {len(report.restored)} of {len(mounts.mounts)} "
            f"({_size(total)}) from {found}{kept}"
        )

    def save(
        self, plan: Plan, results: Mapping[str, StageResult], steps: Mapping[str, Mapping[str, StepCount]] | None = None
    ) -> None:
        """Export and save the cache mounts of every service that built successfully, unless ``steps`` (per
        target, per stage: what the bake run did) shows that no step mounting them ran."""
        for mounts in self._planned(plan):
            svc = next(s for s in plan.services if s.name == mounts.service)
            if not mounts.save_to or not all(results[t.name].status == "ok" for t in svc.targets if t.runs):
                continue
            report = self.reports.setdefault(mounts.service, MountsReport())
            if steps is not None and _all_cached(mounts.stages, [steps.get(t.name, {}) for t in svc.targets]):
                report.unchanged = True
                self.console.info(
                    f"{mounts.service}: cache mounts: not saved again: every step that mounts them came from the "
                    "layer cache, so nothing in them changed"
                )
                continue
            try:
                self._save(plan.builder.name, mounts, report)
            except (EnvironmentProblem, OSError) as exc:
                self._warn(mounts.service, f"not saved: {exc}")

    def _save(self, builder: str, mounts: MountsPlan, report: MountsReport) -> None:
        """One helper build: archive the mounts and push them (a registry or S3 store: zstd, one layer) or
        export them to the agent (a local store, then swapped into place whole)."""
        assert mounts.save_to is not None
        transport = self._transport(mounts)
        if transport is None:
            return
        with tempfile.TemporaryDirectory(prefix="dockercache-mounts-") as tmp:
            out, empty, helper = Path(tmp) / "out", Path(tmp) / "empty", Path(tmp) / "helper"
            empty.mkdir()
            helper.mkdir()
            output = transport.output(mounts, out)
            dockerfile = _dockerfile(helper, export_dockerfile(mounts.image, mounts.mounts, mounts.max_bytes))
            argv = buildx.helper_build(builder, dockerfile, output, str(empty), provenance=False)
            try:
                outcome = parse_mark_lines(self.docker.buildx_build(argv, env=self.env))
            except HelperBuildFailed as exc:
                outcome = parse_mark_lines(exc.output)  # the script's own lines, not the command echoed above them
                if outcome.get("-", ("",))[0] != NOTHING:
                    raise
            index: dict[str, Any] = {}
            for mount in mounts.mounts:
                what, size = outcome.get(mount.file, ("empty", 0))
                if what == "over":
                    self._warn(
                        mounts.service,
                        f"{mount.id} not saved: {_size(size)} is over settings.cache_mounts_max_mb "
                        f"({mounts.max_bytes >> 20})",
                    )
                elif what == "saved":
                    index[mount.id] = {"file": mount.file, "bytes": size, **mount.to_json()}
            if not index or "-" in outcome:  # every mount empty: the archives saved before are the better ones
                self.console.info(f"{mounts.service}: cache mounts: nothing to save (every mount empty or too large)")
                return
            transport.publish(mounts, out, index)
        report.saved_to = str(mounts.save_to)
        report.saved = {k: v["bytes"] for k, v in index.items()}
        self.console.info(
            f"{mounts.service}: cache mounts: saved {len(index)} of {len(mounts.mounts)} "
            f"({_size(sum(report.saved.values()))}) to {mounts.save_to}"
        )

    def attach(self, services: Iterable[ServiceResult]) -> None:
        """Put each service's report in its result (``--json``)."""
        for result in services:
            if result.name in self.reports:
                result.cache_mounts = self.reports[result.name].to_json()


def _all_cached(stages: Collection[str], counts: Iterable[Mapping[str, StepCount]]) -> bool:
    """Whether every step of ``stages`` came from the cache (and there was at least one, so that a run whose
    steps could not be attributed is never taken for one that changed nothing)."""
    seen = [count for per_stage in counts for stage, count in per_stage.items() if stage in stages]
    return bool(seen) and all(c.total > 0 and c.cached == c.total for c in seen)


def _in(index: int) -> str:
    return f"/dc/{index}"
