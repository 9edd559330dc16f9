"""The pure core: resolved services and CI facts in, a build plan out.

A plan is one bake definition: a target per (service, stage) with its context, Dockerfile, Dockerfile target,
args, tags, output (push, load or cache only) and its cache entries; a group per service and a default group
hold the targets ``build`` runs. ``build`` runs the default group as ``docker buildx bake`` in one BuildKit
session, where targets run concurrently as their graph allows and the vertices they share are solved once;
``plan --bake`` prints the same file.

Which targets run: the service's *leaves*, the stages no other selected stage builds on (the final image and,
say, a test stage beside it), plus stages whose image is pushed. A stage that a leaf builds on is built
inside that leaf, and its layers are in the leaf's ``mode=max`` cache. Running it as a target of its own
costs a second cache export and, on BuildKit 0.13, makes the leaves miss their own caches: the short job ends
first and cancels lazy cache records the leaf shares with it (seen in 40% of fresh-agent builds of
examples/ruby; 0% with leaves only). Its target stays in the file (``docker buildx bake -f FILE ruby-deps``).

Planning does no I/O except the injected ``exists`` check for local cache directories.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters.ci import branch_slug, slugify
from ..config.model import BuilderConfig, Settings
from ..config.services import split_variant
from ..errors import ConfigError
from ..model import BuilderPlan, BuildOptions, Plan, ServicePlan, Target, group_name
from ..model.skip import ContextScan, SkipSetting, Unavailable
from ..reference import TAG
from ..stores import KINDS, CacheRequest, Keys, kind_for, may_write_shared
from .context import scan_context
from .resolve import ResolvedService
from .skip import base_images, remote_sources
from .targets import (
    ImageOptions,
    make_target,
    mark_running,
    related_stages,
    selected_stages,
    variant_tags,
    with_image_options,
)

if TYPE_CHECKING:
    from ..model import MountsPlan


def cache_write_decision(
    settings: Settings, options: BuildOptions, on_ci: bool, local_store: bool, pull_request: str | None = None
) -> tuple[bool, str]:
    """Whether this run writes caches, and why (shown in the plan)."""
    if options.cache_write is False:
        return False, "--no-cache-write"
    if settings.cache_write == "never":
        return False, "settings.cache_write = 'never'"
    if pull_request and settings.pull_request_writes == "none":
        return False, f"pull request #{pull_request}: settings.pull_request_writes = 'none'"
    if options.cache_write:
        return True, "--cache-write"
    if settings.cache_write == "always":
        return True, "settings.cache_write = 'always'"
    if local_store:
        return True, "local cache store"
    if on_ci and pull_request:
        return True, f"pull request #{pull_request}: its own refs and keys only (pr-{branch_slug(pull_request)})"
    if on_ci:
        return True, "running in CI"
    return False, "not in CI (a laptop reads shared caches; pass --cache-write to write)"


@dataclass(frozen=True)
class PlanInputs:
    """Everything the planner needs, gathered by the caller."""

    services: tuple[ResolvedService, ...]
    builder: BuilderConfig
    settings: Settings
    root: Path
    commit: str
    branch: str
    default_branch: str
    on_ci: bool
    job_id: str | None = None
    pipeline: str = "pipeline"
    pull_request: str | None = None
    """The pull request this build is for (an untrusted writer whatever its branch is called), or None."""
    base_branch: str | None = None
    """A pull request's base branch: whose caches it reads (else the default branch's)."""
    source: str = "dockercache.toml"
    """The configuration file, named in errors."""
    skip_unchanged: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    """Per service (by name) that sets it: ``skip_unchanged``; the others follow ``settings.skip_unchanged``."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Labels every tagged image gets (the OCI labels the CI context knows), under each service's own."""
    images: Mapping[str, ImageOptions] = dataclasses.field(default_factory=dict)
    """Per service (by name): its labels and attestations; a service not named has none of its own."""
    cache_mounts: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    """Per service (by name) that sets it: ``cache_mounts``; the others follow ``settings.cache_mounts``."""


def run_keys(
    settings: Settings,
    pipeline: str,
    commit: str,
    branch: str,
    default_branch: str,
    pull_request: str | None,
    base_branch: str | None,
) -> Keys:
    """A run's key names and whether it may write what the default branch reads (builds, promote, prune):
    a pull request writes as ``pr-N`` (a fork's branch may be called main) and never a shared key, reading its
    head branch's then its base branch's; a branch writes shared keys only as the default branch or a trusted
    one."""
    default_branch = settings.default_branch or default_branch
    return Keys(
        pipeline=pipeline,
        commit=commit,
        branch=f"pr-{branch_slug(pull_request)}" if pull_request else branch_slug(branch),
        default_branch=branch_slug(base_branch or default_branch) if pull_request else branch_slug(default_branch),
        writes_shared=not pull_request and may_write_shared(branch, default_branch, settings),
        reads_too=(branch_slug(branch),) if pull_request and branch else (),
    )


def make_plan(
    inputs: PlanInputs,
    options: BuildOptions,
    exists: Callable[[str], bool] = os.path.isdir,
    scan: Callable[[Path, Path], ContextScan] = scan_context,
) -> Plan:
    """The build plan: the builder, each service's targets with the caches its store planned for them, and
    whether this run writes caches (``exists`` checks local cache directories, ``scan`` walks a context)."""
    default_branch = inputs.settings.default_branch or inputs.default_branch
    pr = inputs.pull_request
    if options.push is None:
        options = dataclasses.replace(options, push=inputs.on_ci)
    keys = run_keys(
        inputs.settings, inputs.pipeline, inputs.commit, inputs.branch, inputs.default_branch, pr, inputs.base_branch
    )
    local_only = all(kind_for(s.store).on_agent for s in inputs.services)
    cache_write, reason = cache_write_decision(inputs.settings, options, inputs.on_ci, local_only, pr)
    builder = _builder_plan(inputs)
    _check_default_tags(inputs)
    services = [_service_plan(svc, inputs, options, keys, cache_write, exists, scan) for svc in inputs.services]
    _check_names(services, inputs.source)
    return Plan(
        builder=builder,
        services=tuple(services),
        commit=inputs.commit,
        branch=inputs.branch,
        default_branch=default_branch,
        cache_write=cache_write,
        cache_write_reason=reason,
        cache_errors=inputs.settings.cache_errors,
        stall_seconds=inputs.settings.stall_seconds,
        bake_env=_bake_env(inputs.services),
    )


def _builder_plan(inputs: PlanInputs) -> BuilderPlan:
    """The builder as configured; an ephemeral one named for this job, one that serves an S3 store's endpoint
    on the host network."""
    builder_name = inputs.builder.name
    if inputs.builder.ephemeral:
        builder_name = f"{builder_name}-{slugify(inputs.job_id or str(os.getpid()), 40)}"
    driver_opts = dict(inputs.builder.driver_opts)
    if inputs.builder.driver == "docker-container":  # a BuildKit of its own, pinned (builder.image)
        driver_opts.setdefault("image", inputs.builder.image)
    builder = BuilderPlan(
        name=builder_name,
        driver=inputs.builder.driver,
        driver_opts=driver_opts,
        endpoint=inputs.builder.endpoint,
        platforms=inputs.builder.platforms,
        ephemeral=inputs.builder.ephemeral,
        keep_storage=inputs.builder.keep_storage,
    )
    stores = [s.store for s in inputs.services]
    for kind in KINDS:
        builder = kind.builder(builder, [s for s in stores if kind.handles(s)])
    return builder


def _check_default_tags(inputs: PlanInputs) -> None:
    """The commit, the default tag, and every variant's tags must be valid image tags."""
    untagged = next((s for s in inputs.services if not s.tags), None)
    if untagged and not TAG.fullmatch(inputs.commit):
        raise ConfigError(
            f"{inputs.source}: services.{untagged.name}.tags: the default tag, the commit {inputs.commit!r} "
            "(from ${BUILDKITE_COMMIT} or git), is not a valid image tag; set tags"
        )
    for svc in inputs.services:
        bad = next((t for t in variant_tags(svc, inputs.commit) if not TAG.fullmatch(t)), None)
        if bad is not None:
            raise ConfigError(
                f"{inputs.source}: services.{split_variant(svc.name)[0]}.variant_tag: {bad!r} (for {svc.name}) is not "
                "a valid image tag (at most 128 characters)"
            )


def _service_plan(
    svc: ResolvedService,
    inputs: PlanInputs,
    options: BuildOptions,
    keys: Keys,
    cache_write: bool,
    exists: Callable[[str], bool],
    scan: Callable[[Path, Path], ContextScan],
) -> ServicePlan:
    """One service's plan: a target per selected stage with the caches its store plans, which of them run,
    and its skip-unchanged and cache-mount settings."""
    targets = []
    identity = json.dumps([str(svc.context), str(svc.dockerfile), sorted(svc.args.items()), svc.platforms])
    selected = selected_stages(svc, options.stage)
    for stage in selected:
        request = CacheRequest(
            service=svc.name,
            store_name=svc.store_name or "built-in local",
            store=svc.store,
            stage=stage,
            graph=related_stages(svc, selected, stage),
            keys=keys,
            cache_write=cache_write,
            root=inputs.root,
            exists=exists,
            siblings=svc.siblings,
        )
        targets.append(make_target(svc, stage, inputs.commit, options, kind_for(svc.store).plan(request), identity))
    targets = with_image_options(targets, inputs.images, inputs.labels, svc.name)
    marked = mark_running(targets)
    return ServicePlan(
        name=svc.name,
        targets=marked,
        image=svc.image,
        metadata_key=svc.metadata_key,
        store=svc.store_name or "built-in local",
        skip=_skip_setting(svc, marked, inputs, options, scan),
        compose_files=svc.compose_files,
        compose_service=svc.compose_service,
        cache_mounts=_cache_mounts(svc, marked, inputs, keys, cache_write),
    )


def _skip_setting(
    svc: ResolvedService,
    targets: Sequence[Target],
    inputs: PlanInputs,
    options: BuildOptions,
    scan: Callable[[Path, Path], ContextScan],
) -> SkipSetting | None:
    """skip_unchanged for one service: off unless asked for; on only for a pushed build of the whole service,
    the context walked (stat only) and the base images named (their digests are resolved when building)."""
    name = split_variant(svc.name)[0]
    if name in inputs.skip_unchanged:
        asked, source = inputs.skip_unchanged[name], f"services.{name}.skip_unchanged"
    else:
        asked, source = inputs.settings.skip_unchanged, "settings.skip_unchanged"
    if not asked:
        return None
    why_not = None
    if not svc.image:
        why_not = f"services.{name} has no image to retag"
    elif options.stage:
        why_not = "--stage builds one stage"
    elif options.no_cache:
        why_not = "--no-cache"
    elif not options.push:
        why_not = "nothing is pushed (--no-push, or off CI without --push), and a skip retags an image in the registry"
    if why_not:
        return SkipSetting(False, f"off ({why_not}): building")
    try:
        found = scan(svc.context, svc.dockerfile)
        remote = remote_sources(found.dockerfile_text)
        if remote:
            raise Unavailable(f"ADD {remote[0]} has no --checksum: what it fetches is known only by building")
        stages = dict.fromkeys(s for t in targets if t.runs for s in t.graph)
        bases = base_images(found.dockerfile_text, svc.args, stages, svc.platforms)
    except Unavailable as exc:
        return SkipSetting(False, f"off ({exc}): building")
    return SkipSetting(True, f"on ({source})", found, bases, tuple(sorted(svc.args)))


def _cache_mounts(
    svc: ResolvedService, targets: Sequence[Target], inputs: PlanInputs, keys: Keys, cache_write: bool
) -> MountsPlan | None:
    """cache_mounts for one service: off unless asked for; the mounts of the stages its running targets build."""
    name = split_variant(svc.name)[0]
    if not inputs.cache_mounts.get(name, inputs.settings.cache_mounts):
        return None
    try:
        text = svc.dockerfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{inputs.source}: services.{name}.cache_mounts: cannot read {svc.dockerfile}: {exc}"
        ) from None
    from .mounts import plan_mounts  # only when a service asks: not on every plan's start-up path

    stages = {s for t in targets if t.runs for s in t.graph}
    image, max_mb = inputs.settings.cache_mounts_image, inputs.settings.cache_mounts_max_mb
    return plan_mounts(
        svc.name, text, stages, svc.args, svc.store, keys, cache_write, inputs.root, image, max_mb, svc.store_name or ""
    )


def _bake_env(services: Sequence[ResolvedService]) -> dict[str, str]:
    """What the stores of the services built need in the bake process's environment."""
    env: dict[str, str] = {}
    for kind in KINDS:
        env.update(kind.bake_env({s.store_name or "": s.store for s in services if kind.handles(s.store)}))
    return env


def _check_names(services: Sequence[ServicePlan], source: str) -> None:
    """Bake has one namespace for groups and targets: two names that meet would build the wrong thing."""
    owners: dict[str, str] = {"default": "the default group"}
    for svc in services:
        base, variant = split_variant(svc.name)
        groups = [(group_name(svc.name), f"service '{svc.name}'")]
        if variant is not None:
            groups.append((base, f"service '{base}'"))
        for name, owner in groups + [(t.name, f"stage '{t.stage}' of service '{svc.name}'") for t in svc.targets]:
            if name in owners and owners[name] != owner:
                raise ConfigError(
                    f"{source}: services.{base}: {owner} and {owners[name]} both become bake target or group "
                    f"'{name}'; rename one of them"
                )
            owners[name] = owner
