"""Cache mounts that survive a fresh agent, planned: ``RUN --mount=type=cache`` directories, saved after a build and
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
  ``<key>/<service>/_mounts``, pushed through the run's endpoint (:mod:`dockercache.stores.s3.endpoint`): its blobs are
  content-addressed beside the caches', its index written last, and promote, prune and verify see it as any
  snapshot;
- before the build, restores them with a second helper build (:func:`restore_dockerfile`) that extracts each
  archive into its cache mount, only when that mount is empty (a warm agent keeps its own, newer content): from
  this branch's archives, else the default branch's (S3: the store's restore keys, in order). A registry
  store's image is bind-mounted straight from the registry (``from=<ref>@<digest>``), an S3 store's from the
  endpoint (BuildKit fetches its blobs from presigned S3 URLs): nothing is downloaded to the host.

This module finds the mounts and plans where they are restored from and saved to; :mod:`dockercache.run.mounts`
carries that out, and never fails a build: every problem is one warning and the build goes on without the mounts.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import shlex
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.caches import CacheStore
from ..model import CacheMount, MountsPlan
from ..stores import kind_for
from ..stores.base import MountsRequest
from .dockerfile import expand, from_values, global_args, logical_lines, parse_stages

if TYPE_CHECKING:
    from ..stores import Keys


_INSTRUCTION = re.compile(r"^(?P<keyword>[A-Za-z]+)(?:\s+(?P<rest>.*))?$", re.DOTALL)


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
            _declare_args(instruction.group("rest") or "", values, build_args, declared)
            continue
        if keyword != "RUN" or index < 0 or index >= len(labels):
            continue
        stage = labels[index]
        if stages is not None and stage not in stages:
            continue
        for mount in _run_cache_mounts(instruction.group("rest") or "", stage, values, notes):
            found.setdefault((mount.id, mount.uid, mount.gid, mount.mode), mount)
            mounting[stage] = None
    return tuple(found.values()), tuple(notes), tuple(mounting)


def _declare_args(
    rest: str, values: dict[str, str], build_args: Mapping[str, str], declared: Mapping[str, str]
) -> None:
    """An ``ARG`` instruction's names into the stage's ``values``: the build argument given, else the default it
    declares, else the global ARG's value."""
    for word in rest.split():
        name, equals, default = word.partition("=")
        if name in build_args:
            values[name] = build_args[name]
        elif equals:
            values[name] = expand(default.strip("\"'"), values)[0]
        elif name in declared:
            values[name] = declared[name]


def _run_cache_mounts(rest: str, stage: str, values: Mapping[str, str], notes: list[str]) -> list[CacheMount]:
    """The cache mounts among a ``RUN`` instruction's leading flags, its stage's ARG ``values`` expanded; a
    note in ``notes`` for each one left out."""
    try:
        words = shlex.split(rest, posix=False)
    except ValueError:
        words = rest.split()
    mounts = []
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
        mounts.append(CacheMount(mount_id, target, stage, options.get("uid"), options.get("gid"), options.get("mode")))
    return mounts


# ----------------------------------------------------------------------------------------------- plan


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
    places = kind_for(store).mounts(MountsRequest(service, store, keys, cache_write, root))
    if places.transport is None:
        return dataclasses.replace(base, no_save=places.no_save, notes=(*notes, f"not restored: {places.no_save}"))
    if not mounts:
        return dataclasses.replace(base, kind=places.transport, no_save="no cache mounts in the stages built")
    plan = dataclasses.replace(
        base, kind=places.transport, restore_from=places.restore_from, save_to=places.save_to, no_save=places.no_save
    )
    bare = [m.id for m in mounts if m.uid is None and m.gid is None and m.mode is None]
    if bare:
        # Docker 26's own BuildKit (driver docker, containerd image store) keeps no such cache from one build to
        # the next, dockercache or not (two plain builds of one such RUN: the second sees it empty); so the
        # helper builds cannot reach it either. With uid=0 (the same directory, owned by root) it is kept.
        note = (
            f"{', '.join(bare)}: no uid/gid/mode: builder driver 'docker' keeps no such cache between builds; "
            "add uid=0 (see docs/caching.md)"
        )
        plan = dataclasses.replace(plan, notes=(*plan.notes, note))
    return plan
