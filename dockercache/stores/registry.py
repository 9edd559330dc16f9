"""Registry store: BuildKit's ``type=registry`` cache, one OCI image manifest per service stage and branch.

Sources, in priority order: the target's own ref on this branch, then on the default branch, then the same
for each cached stage in its graph (nearest first), then ``extra_from``. It writes its own ref only: the
default branch's (shared) when this branch may write shared caches, else this branch's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..ci import slugify
from ..config import CacheStore, RegistryCache, split_variant
from ..errors import CacheError
from .base import CacheRequest, NoRuntime, RunContext, StoreRuntime, TargetCaches
from .entry import CacheEntry

if TYPE_CHECKING:
    from ..plan import Target
    from ..report import StageResult


def _bool(value: bool) -> str:
    return "true" if value else "false"


def registry_ref(store: RegistryCache, service: str, stage: str, branch_slug: str) -> str:
    """A stage's cache ref; a matrix variant (``ruby[3.3]``) shares its service's repository, and its id ends the
    tag (``final-main-3.3``), so variants never overwrite each other's caches."""
    base, variant = split_variant(service)
    repo = store.ref.format(service=base)
    tag = store.tag.format(service=base, stage=stage, branch=branch_slug)
    tag = slugify(f"{tag}-{variant}" if variant is not None else tag, 128)
    return f"{repo}:{tag}"


class RegistryKind:
    name = "registry"

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, RegistryCache)

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, RegistryCache)
        keys = request.keys

        def ref(stage: str, branch: str) -> str:
            return registry_ref(store, request.service, stage, branch)

        extra = [r.format(service=split_variant(request.service)[0], stage=request.stage) for r in store.extra_from]
        refs = [r for s in request.stages for r in (ref(s, keys.branch), ref(s, keys.default_branch))]
        sources = tuple(CacheEntry.make("registry", ref=r) for r in dict.fromkeys([*refs, *extra]))
        plan = TargetCaches(self.name, request.store_name, sources, config=store)
        if not request.cache_write:
            return plan
        write_ref = ref(request.stage, keys.default_branch if keys.writes_shared else keys.branch)
        if not keys.writes_shared:
            # Whatever the tag template says, an untrusted branch never writes a ref the default branch reads.
            shared = {ref(s, keys.default_branch) for s in request.stages} | set(extra)
            # ... nor one another variant of the service reads there (branch 'main-3.3' + variant 'slim').
            shared |= {
                registry_ref(store, other, s, keys.default_branch) for other in request.siblings for s in request.stages
            }
            if write_ref in shared:
                why = f"'{write_ref}' is read by the default branch; branch '{keys.branch}' may not write it"
                return dataclasses.replace(plan, refused=why)
        attrs = {
            "ref": write_ref,
            "mode": store.mode,
            "image-manifest": _bool(store.image_manifest),
            "oci-mediatypes": _bool(store.oci_mediatypes),
            "compression": store.compression,
        }
        if store.force_compression:
            attrs["force-compression"] = "true"
        attrs["ignore-error"] = "true"
        return dataclasses.replace(plan, sink=CacheEntry.make("registry", attrs))

    def runtime(self, context: RunContext) -> StoreRuntime:
        return RegistryRuntime(context)


class RegistryRuntime(NoRuntime):
    """Before the run, drop caches whose registry does not answer: an outage costs a warning, not a timeout."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        from ..netcheck import registry_host, unreachable  # socket: only a build needs it

        hosts = sorted({registry_host(e.location) for t in targets for e in _entries(t)})
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:  # a silent one takes seconds
            answers = dict(zip(hosts, pool.map(lambda host: unreachable(*host), hosts), strict=True))
        down = {host: why for host, why in answers.items() if why}
        if not down:
            return list(targets)
        if self.context.cache_errors == "fail":
            (host, port), why = next(iter(down.items()))
            raise CacheError(f"cache registry {host}:{port} unreachable ({why}) and settings.cache_errors = 'fail'")
        for (host, port), why in down.items():
            message = f"cache registry {host}:{port} unreachable ({why}): building without its cache"
            self.context.warnings.append(message)
            self.context.console.warn(message)

        def up(entry: CacheEntry | None) -> bool:
            return entry is not None and registry_host(entry.location) not in down

        kept = []
        for target in targets:
            caches = target.caches
            caches = dataclasses.replace(
                caches,
                sources=tuple(e for e in caches.sources if up(e)),
                sink=caches.sink if up(caches.sink) else None,
            )
            kept.append(dataclasses.replace(target, caches=caches))
        return kept


def _entries(target: Target) -> list[CacheEntry]:
    """The registry entries of a target (imported lazily with netcheck by the caller)."""
    sink = target.caches.sink
    return [e for e in (*target.caches.sources, *([sink] if sink else [])) if e.type == "registry"]


KIND = RegistryKind()
