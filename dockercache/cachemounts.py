"""Cache mounts that survive a fresh agent: ``RUN --mount=type=cache`` directories, saved after a build and
restored before the next one.

BuildKit exports no cache-mount content with a cache (moby/buildkit#1474), so a fresh agent runs every
package-manager step with an empty cache. With ``cache_mounts = true`` dockercache:

- finds every ``RUN --mount=type=cache`` of the stages a service builds (:func:`find_cache_mounts`; the id
  defaults to the target path, as in the Dockerfile frontend; uid, gid and mode are kept, since they are part of
  the cache's identity in BuildKit; mounts with ``from=``/``source=`` are left out with a note);
- after a successful build, runs one helper build (:func:`export_dockerfile`) that mounts the same cache ids,
  writes one tar archive per non-empty mount under the size cap, and saves them in the service's cache store,
  keyed per branch (:class:`MountsPlan`): a registry store gets them pushed by that build as a one-layer image
  (zstd) tagged ``mounts-<service>-<branch>`` in the store's repository, a local store exported to
  ``<path>.mounts/<service>/<branch>`` with an ``index.json`` (a symlink to a complete version, swapped in one
  step), an S3 store keeps the same image as the snapshot
  ``<key>/<service>/_mounts``, pushed through the run's endpoint (:mod:`dockercache.endpoint`): its blobs are
  content-addressed beside the caches', its index written last, and promote, prune and verify see it as any
  snapshot;
- before the build, restores them with a second helper build (:func:`restore_dockerfile`) that extracts each
  archive into its cache mount, only when that mount is empty (a warm agent keeps its own, newer content): from
  this branch's archives, else the default branch's (S3: the store's restore keys, in order). A registry
  store's image is bind-mounted straight from the registry (``from=<ref>@<digest>``), an S3 store's from the
  endpoint (BuildKit fetches its blobs from presigned S3 URLs): nothing is downloaded to the host.

Nothing here ever fails a build: every problem is one warning and the build goes on without the mounts.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .ci import slugify
from .config import CacheStore, LocalCache, RegistryCache, S3Cache, split_variant
from .dockerfile import expand, from_values, global_args, logical_lines, parse_stages
from .errors import EnvironmentProblem, HelperBuildFailed
from .stores.entry import _csv_field
from .stores.layout import MOUNTS_STAGE, S3Layout, SnapshotName, repository_name

if TYPE_CHECKING:
    from .plan import Plan
    from .progress import StepCount
    from .report import Console, ServiceResult, StageResult
    from .snapshots import Snapshot
    from .stores import Keys

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
INDEX = "index.json"

_INSTRUCTION = re.compile(r"^(?P<keyword>[A-Za-z]+)(?:\s+(?P<rest>.*))?$", re.DOTALL)


@dataclass(frozen=True)
class CacheMount:
    """One cache of a Dockerfile: BuildKit keys it by id and, when set, uid, gid and mode."""

    id: str
    target: str
    stage: str
    """The stage where it is first mounted."""
    uid: str | None = None
    gid: str | None = None
    mode: str | None = None

    @property
    def file(self) -> str:
        """The archive's name: stable for the same cache whatever the Dockerfile's order."""
        identity = json.dumps([self.id, self.uid, self.gid, self.mode])
        return f"m-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.tar"

    def mount(self, target: str) -> str:
        """``--mount=...`` of this cache at ``target`` (the same id, uid, gid and mode: the same cache)."""
        parts = ["type=cache", f"id={self.id}", f"target={target}"]
        parts += [f"{k}={v}" for k, v in (("uid", self.uid), ("gid", self.gid), ("mode", self.mode)) if v is not None]
        return "--mount=" + ",".join(_csv_field(p) for p in parts)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None} | {"file": self.file}


def _mount_options(word: str) -> dict[str, str] | None:
    """The options of one ``--mount=`` flag (CSV, as BuildKit reads it); None for another flag."""
    if not word.startswith("--mount="):
        return None
    try:
        fields = next(csv.reader([word.removeprefix("--mount=")]))
    except (csv.Error, StopIteration):
        return {}
    options: dict[str, str] = {}
    for item in fields:
        key, _, value = item.partition("=")
        options[key.strip().lower()] = value
    return options


def find_cache_mounts(
    text: str, stages: Collection[str] | None = None, args: Mapping[str, str] | None = None
) -> tuple[tuple[CacheMount, ...], tuple[str, ...]]:
    """The cache mounts of ``RUN`` instructions in the stages labelled ``stages`` (None: every stage), each
    once, in Dockerfile order; and notes on the mounts left out (with ``from=``/``source=``, an option whose
    build argument has no value, an id with whitespace)."""
    mounts, notes, _ = scan_cache_mounts(text, stages, args)
    return mounts, notes


def scan_cache_mounts(
    text: str, stages: Collection[str] | None = None, args: Mapping[str, str] | None = None
) -> tuple[tuple[CacheMount, ...], tuple[str, ...], tuple[str, ...]]:
    """:func:`find_cache_mounts`, and every stage with a ``RUN`` that mounts one of them (in Dockerfile order):
    when none of those stages ran a step, nothing in the mounts changed."""
    labels = [s.label for s in parse_stages(text)]
    build_args = dict(args or {})
    declared = from_values(global_args(text), build_args)
    values: dict[str, str] = {}
    found: dict[tuple[str, str | None, str | None, str | None], CacheMount] = {}
    notes: list[str] = []
    mounting: dict[str, None] = {}
    index = -1
    for line in logical_lines(text):
        instruction = _INSTRUCTION.match(line)
        if instruction is None:
            continue
        keyword = instruction.group("keyword").upper()
        if keyword == "FROM":
            index += 1
            values = {}  # a stage sees the ARGs it declares, as the Dockerfile frontend has it
            continue
        if keyword == "ARG" and index >= 0:
            for word in (instruction.group("rest") or "").split():
                name, equals, default = word.partition("=")
                if name in build_args:
                    values[name] = build_args[name]
                elif equals:
                    values[name] = expand(default.strip("\"'"), values)[0]
                elif name in declared:
                    values[name] = declared[name]
            continue
        if keyword != "RUN" or index < 0 or index >= len(labels):
            continue
        stage = labels[index]
        if stages is not None and stage not in stages:
            continue
        rest = instruction.group("rest") or ""
        try:
            words = shlex.split(rest, posix=False)
        except ValueError:
            words = rest.split()
        for word in words:
            if not word.startswith("--"):
                break
            options = _mount_options(word)
            if options is None or options.get("type", "bind").lower() != "cache":
                continue
            missing: list[str] = []
            for key, value in list(options.items()):
                options[key], empty = expand(value, values)
                missing += empty
            target = options.get("target") or options.get("dst") or options.get("destination") or ""
            mount_id = options.get("id") or target
            where = f"{stage}: cache mount {mount_id or '?'}"
            if options.get("from") or options.get("source") or options.get("src"):
                notes.append(f"{where}: left out (it has from= or source=: its content comes from another stage)")
                continue
            if missing:
                notes.append(f"{where}: left out (build argument {missing[0]} has no value)")
                continue
            if not mount_id or any(c.isspace() for c in mount_id):
                notes.append(f"{where}: left out (no usable id or target)")
                continue
            mount = CacheMount(mount_id, target, stage, options.get("uid"), options.get("gid"), options.get("mode"))
            found.setdefault((mount.id, mount.uid, mount.gid, mount.mode), mount)
            mounting[stage] = None
    return tuple(found.values()), tuple(notes), tuple(mounting)


def _in(index: int) -> str:
    return f"/dc/{index}"


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


# ----------------------------------------------------------------------------------------------- plan

Kind = Literal["registry", "local", "s3"]


@dataclass(frozen=True)
class Place:
    """Where one branch's archives of a service live: a registry ref, a local directory, or an S3 snapshot
    (``key``: its snapshot key; ``location`` is then the index's object URL; ``branch`` is empty for a
    ``cache_from`` key)."""

    branch: str
    location: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.location} (branch {self.branch})" if self.branch else self.location

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class MountsPlan:
    """A service's cache mounts: which, where they are restored from (in order) and saved to."""

    service: str
    kind: Kind | None
    """The store kind keeping them (None: this store cannot keep them; see :attr:`no_save`)."""
    mounts: tuple[CacheMount, ...]
    image: str
    max_bytes: int
    restore_from: tuple[Place, ...] = ()
    save_to: Place | None = None
    no_save: str | None = None
    """Why nothing is saved (cache writes off, a store that cannot keep them)."""
    notes: tuple[str, ...] = ()
    store: str = ""
    """The cache store's name (an S3 store's mounts go through that store's endpoint)."""
    stages: tuple[str, ...] = ()
    """The stages whose ``RUN`` steps mount these caches."""

    def to_json(self) -> dict[str, Any]:
        return {
            "mounts": [m.to_json() for m in self.mounts],
            "store": self.kind,
            "image": self.image,
            "max_mb": self.max_bytes // (1 << 20),
            "restore_from": [p.to_json() for p in self.restore_from],
            "save_to": self.save_to.to_json() if self.save_to else None,
            "no_save": self.no_save,
            "notes": list(self.notes),
        }

    def summary(self) -> list[str]:
        """Lines for the printed plan."""
        found = ", ".join(f"{m.id} ({m.stage})" for m in self.mounts) or "none found"
        lines = [f"cache mounts: {found}"]
        lines += [f"  {'restore from:' if i == 0 else '':<13} {p}" for i, p in enumerate(self.restore_from)]
        if self.save_to:
            lines.append(f"  {'save to:':<13} {self.save_to} (after a successful build)")
        elif self.no_save:
            lines.append(f"  {'no save:':<13} {self.no_save}")
        lines += [f"  {'note:':<13} {n}" for n in self.notes]
        return lines


def registry_mounts_ref(store: RegistryCache, service: str, branch: str) -> str:
    """``<the store's repository>:mounts-<service>-<branch>`` (a variant's name in the tag)."""
    return f"{store.ref.format(service=split_variant(service)[0])}:{slugify(f'mounts-{service}-{branch}', 128)}"


def local_mounts_dir(store: LocalCache, root: Path, service: str, branch: str) -> str:
    """``<the store's directory>.mounts/<service>/<branch>``, beside the store's own."""
    assert store.path is not None, "resolving a service fills in the path"
    directory = (root / store.path).resolve()
    return str(directory.with_name(directory.name + ".mounts") / service / branch)


def s3_mounts_place(store: S3Cache, service: str, key: str, branch: str) -> Place:
    """The S3 snapshot ``<key>/<service>/_mounts``: where an S3 store keeps a service's cache mounts."""
    index = S3Layout(store.prefix.strip("/")).snapshot(SnapshotName(key, service, MOUNTS_STAGE))
    location = f"s3://{store.bucket}/{index}"
    return Place(branch, location, key)


def _s3_places(
    store: S3Cache, service: str, keys: Keys, cache_write: bool
) -> tuple[tuple[Place, ...], Place | None, str | None]:
    """An S3 store's mounts follow its caches: read under its restore keys in order, saved under the key its
    caches are saved under (or not, and why)."""
    from .stores.s3 import restore_keys, save_key, snapshot_key

    def branch(key: str) -> str:
        named = (b for b in keys.read_branches if key == snapshot_key(store.key, keys, b))
        return next(named, "")  # a cache_from key: no branch of its own

    restore = tuple(s3_mounts_place(store, service, k, branch(k)) for k in restore_keys(store, keys))
    if not cache_write:
        return restore, None, "cache writes are off"
    save, refused = save_key(store, keys)
    if save is None:
        return restore, None, refused
    return restore, s3_mounts_place(store, service, save, branch(save)), None


def plan_mounts(
    service: str,
    dockerfile_text: str,
    stages: Collection[str],
    args: Mapping[str, str],
    store: CacheStore,
    keys: Keys,
    cache_write: bool,
    root: Path,
    image: str,
    max_mb: int,
    store_name: str = "",
) -> MountsPlan:
    """A service's cache mounts (in the stages its running targets build) and where they go: this branch's
    archives, then the default branch's, are read; this branch writes its own, or the default branch's when it
    may write what the default branch reads (as the store's caches)."""
    mounts, notes, mounting = scan_cache_mounts(dockerfile_text, stages, args)
    base = MountsPlan(service, None, mounts, image, max_mb << 20, notes=notes, store=store_name, stages=mounting)
    branches = keys.read_branches
    write = keys.default_branch if keys.writes_shared else keys.branch

    place: Callable[[str], str]
    if isinstance(store, RegistryCache):
        kind: Kind = "registry"

        def place(branch: str) -> str:
            return registry_mounts_ref(store, service, branch)
    elif isinstance(store, LocalCache):
        kind = "local"

        def place(branch: str) -> str:
            return local_mounts_dir(store, root, service, branch)
    else:
        assert isinstance(store, S3Cache)
        if store.native:
            why = "a native S3 store (BuildKit's type=s3) cannot keep cache mounts; the registry endpoint can"
            return dataclasses.replace(base, no_save=why, notes=(*notes, f"not restored: {why}"))
        kind = "s3"
    if not mounts:
        return dataclasses.replace(base, kind=kind, no_save="no cache mounts in the stages built")
    if isinstance(store, S3Cache):
        restore, save_to, no_save = _s3_places(store, service, keys, cache_write)
        plan = dataclasses.replace(base, kind=kind, restore_from=restore, save_to=save_to, no_save=no_save)
    else:
        plan = dataclasses.replace(base, kind=kind, restore_from=tuple(Place(b, place(b)) for b in branches))
    bare = [m.id for m in mounts if m.uid is None and m.gid is None and m.mode is None]
    if bare:
        # Docker 26's own BuildKit (driver docker, containerd image store) keeps no such cache from one build to
        # the next, dockercache or not (two plain builds of one such RUN: the second sees it empty); so the
        # helper builds cannot reach it either. With uid=0 (the same directory, owned by root) it is kept.
        note = (
            f"{', '.join(bare)}: no uid/gid/mode: builder driver 'docker' keeps no such cache between builds; "
            "add uid=0 (see README)"
        )
        plan = dataclasses.replace(plan, notes=(*plan.notes, note))
    if kind == "s3":
        return plan
    if not cache_write:
        return dataclasses.replace(plan, no_save="cache writes are off")
    return dataclasses.replace(plan, save_to=Place(write, place(write)))


# ------------------------------------------------------------------------------------------------ run


class HelperDocker(Protocol):
    """What the helper builds need of Docker (:class:`dockercache.docker.Docker`)."""

    def buildx_build(self, argv: Sequence[str], timeout: float = ..., env: Mapping[str, str] | None = None) -> str: ...
    def manifest_digest(self, ref: str) -> str | None: ...


class MountsEndpoint(Protocol):
    """What an S3 store's mounts need of the run's endpoint (:class:`dockercache.endpoint.Endpoint`)."""

    @property
    def address(self) -> str: ...
    def snapshot(self, name: SnapshotName) -> Snapshot | str | None: ...
    def permit(self, pairs: Iterable[tuple[str, str]]) -> None: ...


def endpoint_ref(endpoint: MountsEndpoint, key: str, service: str) -> str:
    """The mounts image of snapshot key ``key`` as the endpoint serves it (``<address>/<repository>:_mounts``)."""
    return f"{endpoint.address}/{repository_name(key, service)}:{MOUNTS_STAGE}"


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

    def _endpoint(self, mounts: MountsPlan) -> MountsEndpoint | None:
        endpoint = self.endpoints(mounts.store)
        if endpoint is None:  # the store said why when it was opened
            self.console.info(f"{mounts.service}: cache mounts: cache store '{mounts.store}' unavailable")
        return endpoint

    def _restore(self, builder: str, mounts: MountsPlan, report: MountsReport) -> None:
        endpoint = self._endpoint(mounts) if mounts.kind == "s3" else None
        if mounts.kind == "s3" and endpoint is None:
            return
        with tempfile.TemporaryDirectory(prefix="dockercache-mounts-") as tmp:
            context, source, found = Path(tmp) / "context", None, None
            context.mkdir()
            for place in mounts.restore_from:
                if endpoint is not None:
                    assert place.key is not None
                    snapshot = endpoint.snapshot(SnapshotName(place.key, mounts.service, MOUNTS_STAGE))
                    if isinstance(snapshot, str):
                        self._warn(mounts.service, f"{snapshot}: ignored")
                    elif snapshot is not None:  # by tag: the endpoint serves what it just checked
                        found, source = place, endpoint_ref(endpoint, place.key, mounts.service)
                        break
                elif mounts.kind == "registry":
                    digest = self.docker.manifest_digest(place.location)
                    if digest:
                        found, source = place, f"{place.location}@{digest}"
                        break
                elif (Path(place.location) / INDEX).is_file():
                    found, context = place, Path(place.location).resolve()  # a version: never written again
                    break
            if found is None:
                self.console.info(f"{mounts.service}: cache mounts: none saved yet ({mounts.restore_from[0]})")
                return
            dockerfile = _dockerfile(Path(tmp), restore_dockerfile(mounts.image, mounts.mounts, source))
            argv = ["--builder", builder, "--no-cache", "--file", dockerfile, "--output", "type=cacheonly"]
            output = self.docker.buildx_build([*argv, str(context)], env=self.env)
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
        ref = mounts.save_to.location
        if mounts.kind == "s3":
            endpoint = self._endpoint(mounts)
            if endpoint is None:
                return
            assert mounts.save_to.key is not None
            ref = endpoint_ref(endpoint, mounts.save_to.key, mounts.service)
            endpoint.permit([(repository_name(mounts.save_to.key, mounts.service), MOUNTS_STAGE)])
        with tempfile.TemporaryDirectory(prefix="dockercache-mounts-") as tmp:
            out, empty, helper = Path(tmp) / "out", Path(tmp) / "empty", Path(tmp) / "helper"
            empty.mkdir()
            helper.mkdir()
            if mounts.kind == "local":
                output = f"type=local,dest={out}"
            else:
                output = f"type=registry,name={ref},compression=zstd,oci-mediatypes=true"
            dockerfile = _dockerfile(helper, export_dockerfile(mounts.image, mounts.mounts, mounts.max_bytes))
            argv = ["--builder", builder, "--no-cache", "--provenance=false", "--file", dockerfile, "--output", output]
            try:
                outcome = parse_mark_lines(self.docker.buildx_build([*argv, str(empty)], env=self.env))
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
            if mounts.kind == "local":
                (out / INDEX).write_text(json.dumps({"version": 1, "mounts": index}, indent=2))
                swap_into_place(out, Path(mounts.save_to.location))
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


def swap_into_place(source: Path, final: Path) -> None:
    """Copy ``source`` to a new version beside ``final`` and point the symlink ``final`` at it in one step:
    a reader sees the previous version or this one, never half of one. Versions but the live one and the one
    it replaced are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    version = final.with_name(f"{final.name}.v-{token}")
    incoming = final.with_name(f"{final.name}.incoming-{token}")
    shutil.copytree(source, incoming)
    incoming.rename(version)
    previous = final.resolve() if final.is_symlink() else None
    link = final.with_name(f"{final.name}.link-{token}")
    link.symlink_to(version.name)
    if final.exists() and not final.is_symlink():
        shutil.rmtree(final)  # not a layout of ours
    os.replace(link, final)
    for old in final.parent.glob(f"{glob_escape(final.name)}.v-*"):
        if old != version and old != previous:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
