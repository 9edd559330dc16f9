"""Registry store: BuildKit's ``type=registry`` cache, one OCI image manifest per service stage and branch.

Sources, in priority order: the target's own ref on this branch, then on the default branch, then the same
for each cached stage in its graph (nearest first), then ``extra_from``. It writes its own ref only: the
default branch's (shared) when this branch may write shared caches, else this branch's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters.ci import slugify
from ..config.caches import CacheStore, RegistryCache
from ..config.services import split_variant
from ..errors import CacheError, StoreError
from ..model import TargetCaches
from ..model.entry import CacheEntry
from ..reference import REFERENCE
from .base import (
    CacheRequest,
    Digests,
    KindDefaults,
    MountsPlaces,
    MountsRequest,
    MountsSource,
    MountsTransport,
    NoRuntime,
    RunContext,
    StoreRuntime,
    branch_places,
)
from .content import adds_nothing, cache_content

if TYPE_CHECKING:
    from ..adapters.oci import Manifest
    from ..model import MountsPlan, Place, Target
    from ..output.results import StageResult


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


class RegistryKind(KindDefaults):
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
        refs = [ref(s, b) for s in request.stages for b in keys.read_branches]
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

    def mounts(self, request: MountsRequest) -> MountsPlaces:
        """An image per branch in the store's repository (:func:`mounts_ref`), pushed by the save's helper build."""
        store = request.store
        assert isinstance(store, RegistryCache)
        return branch_places("registry", request, lambda branch: mounts_ref(store, request.service, branch))

    def mounts_transport(self, docker: Digests, endpoint: Callable[[str], Any]) -> MountsTransport:
        return RegistryMounts(docker)

    def probe(self, name: str, store: CacheStore, root: Path, env: Mapping[str, str]) -> str | None:
        from ..adapters.netcheck import registry_host, unreachable  # socket: as the runtime's

        assert isinstance(store, RegistryCache)
        host, port = registry_host(store.ref)
        why = unreachable(host, port)
        return f"registry {host}:{port} unreachable ({why})" if why else None

    def runtime(self, context: RunContext) -> StoreRuntime:
        return RegistryRuntime(context)


class RegistryRuntime(NoRuntime):
    """Before the run: drop caches whose registry does not answer (an outage costs a warning, not a timeout) and
    refs that do not exist (a stage's own ref that only a failed build's rescue writes: no ``MISS`` line), and
    read what every ref this run writes holds. After it: a ref whose new cache adds nothing to what it held gets
    that back (a cache never gets worse, see :mod:`dockercache.stores.content`)."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._clients: dict[str, Any] = {}
        self._held: dict[str, Manifest] = {}
        """A ref this run writes -> the cache manifest it held before the run."""
        self._seen: dict[str, Manifest] = {}
        """Every ref this run reads or writes -> the cache manifest it held before the run."""
        self._plain: set[str] = set()
        """Registries (``host:port``) that answered the reachability check in plain HTTP."""

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        return self._probe(self._reachable(targets))

    def _reachable(self, targets: Sequence[Target]) -> list[Target]:
        from ..adapters.netcheck import answers, registry_host  # socket: only a build needs it

        hosts = sorted({registry_host(e.location) for t in targets for e in _entries(t)})
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:  # a silent one takes seconds
            found = dict(zip(hosts, pool.map(lambda host: answers(*host), hosts), strict=True))
        self._plain = {f"{host}:{port}" for (host, port), (_, plain) in found.items() if plain}
        down = {host: why for host, (why, _) in found.items() if why}
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

    def _probe(self, targets: Sequence[Target]) -> list[Target]:
        """Every ref a running target reads or writes, asked of its registry at once: one that is not there is no
        source (a ref that cannot be asked stays one: BuildKit decides), and what a written one holds is kept."""
        from ..adapters.oci import Manifest  # urllib: as above

        running = [t for t in targets if t.runs]
        read = {e.location for t in running for e in t.caches.sources if e.type == "registry"}
        written = {t.caches.sink.location for t in running if t.caches.sink and t.caches.sink.type == "registry"}
        refs = sorted(read | written)
        if not refs:
            return list(targets)
        for place in filter(None, map(_split, refs)):
            self._client(place[0])  # one client per registry, made before the probes share it
        with ThreadPoolExecutor(max_workers=min(8, len(refs))) as pool:
            found = dict(zip(refs, pool.map(self._manifest, refs), strict=True))
        self._seen = {ref: m for ref, m in found.items() if isinstance(m, Manifest)}
        self._held = {ref: m for ref, m in self._seen.items() if ref in written}
        return [
            dataclasses.replace(
                t,
                caches=dataclasses.replace(
                    t.caches, sources=tuple(e for e in t.caches.sources if found.get(e.location, True) is not None)
                ),
            )
            if t.runs
            else t
            for t in targets
        ]

    def client(self, host: str) -> Any:
        """The run's client of a registry (plain HTTP where the reachability check found it): records use it too."""
        return self._client(host)

    def _client(self, host: str) -> Any:
        from ..adapters.oci import Registry, Scheme, is_loopback  # urllib: only a build needs it

        if host not in self._clients:
            # A loopback registry that answered in plain HTTP is asked in it at once (no failing TLS handshake).
            scheme: Scheme = "http" if host in self._plain and is_loopback(host) else "auto"
            self._clients[host] = Registry.from_docker_config(host, timeout=PROBE_SECONDS, scheme=scheme)
        return self._clients[host]

    def _manifest(self, ref: str) -> Manifest | bool | None:
        """What ``ref`` holds: a manifest, None when it is not there, True when that cannot be told."""
        place = _split(ref)
        if place is None:
            return True
        host, repo, tag = place
        try:
            return self._client(host).get_manifest(repo, tag)  # type: ignore[no-any-return]
        except (StoreError, OSError, ValueError):
            return True

    def import_failed(self, targets: Sequence[Target], error: str) -> dict[str, str]:
        """As every registry source (:func:`registry_import_failure`), then the repair: a layer that could not be
        fetched (truncated, corrupt, a 500) while the registry says it has it is deleted from the repositories
        whose caches name it, so the next export uploads it whole instead of naming the broken one again."""
        found = super().import_failed(targets, error)
        if found:
            for digest in sorted(broken_digests(error)):
                for ref, manifest in self._seen.items():
                    if digest in _layers(manifest.body):
                        self._delete_broken(ref, digest)
        return found

    def _delete_broken(self, ref: str, digest: str) -> None:
        place = _split(ref)
        if place is None:
            return
        host, repo, _ = place
        try:
            deleted = self._client(host).delete_blob(repo, digest)
        except (StoreError, OSError, ValueError) as exc:
            self.context.console.warn(f"cache layer {digest} of {ref} could not be removed: {exc}")
            return
        if deleted:
            self.context.console.info(
                f"removed broken cache layer {digest} from {host}/{repo}: the next save uploads it"
            )
        else:
            self.context.console.warn(
                f"cache layer {digest} of {ref} is broken and {host} does not allow deleting blobs: caches will name "
                "it again until it is deleted there"
            )

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        super().after(targets, results)
        exported = [
            t
            for t in targets
            if t.caches.sink is not None and results[t.name].exported and t.caches.sink.location in self._held
        ]
        if exported:
            with ThreadPoolExecutor(max_workers=min(8, len(exported))) as pool:
                list(pool.map(lambda t: self._keep_the_better(t, results[t.name]), exported))

    def _keep_the_better(self, target: Target, result: StageResult) -> None:
        """Put back what the ref held when this run's cache adds nothing to it (a manifest PUT: the blobs are
        still in the registry); say so in the report."""
        assert target.caches.sink is not None
        ref = target.caches.sink.location
        old, place = self._held[ref], _split(ref)
        assert place is not None
        host, repo, tag = place
        try:
            new = self._client(host).get_manifest(repo, tag)
            why = adds_nothing(new.body, old.body) if new is not None and new.digest != old.digest else None
            if why is None:
                return
            self._client(host).put_manifest(repo, tag, old.body, old.media_type)
        except (StoreError, OSError, ValueError) as exc:
            result.warn(self.context.console, f"{ref}: could not compare with the cache it replaced: {exc}")
            return
        result.cache_written = None
        result.kept = f"kept {ref}: {why}, so it restores at least as much"
        self.context.console.info(f"{target.name}: {result.kept}")


_BLOB_URL = re.compile(r"/v2/\S+?/blobs/(?P<digest>sha256:[0-9a-f]{64})")
_NAMED = re.compile(r"(?:could not fetch content descriptor|expected) (?P<digest>sha256:[0-9a-f]{64})")


def broken_digests(error: str) -> set[str]:
    """The layers a failed run's error says could not be fetched whole: by URL, by descriptor, by expected digest."""
    return {m["digest"] for pattern in (_BLOB_URL, _NAMED) for m in pattern.finditer(error)}


def _layers(manifest: bytes) -> set[str]:
    content = cache_content(manifest)
    return set(content.layers) if content is not None else set()


#: Seconds a registry has to answer a question before the run (a ref's manifest); else BuildKit asks itself.
PROBE_SECONDS = 5.0


def _split(ref: str) -> tuple[str, str, str] | None:
    """(host, repository, tag) of a cache ref (``host[:port]/repo:tag``); None for one without a registry host."""
    match = REFERENCE.fullmatch(ref)
    if match is None or match["tag"] is None or match["digest"]:
        return None
    host, sep, repo = match["name"].partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        return None
    return host, repo, match["tag"]


def _entries(target: Target) -> list[CacheEntry]:
    """The registry entries of a target (imported lazily with netcheck by the caller)."""
    sink = target.caches.sink
    return [e for e in (*target.caches.sources, *([sink] if sink else [])) if e.type == "registry"]


class RegistryMounts:
    """The helper builds bind-mount the branch's image, by digest, and push a new one as its tag."""

    def __init__(self, docker: Digests) -> None:
        self.docker = docker

    def ready(self, mounts: MountsPlan) -> str | None:
        return None

    def find(self, mounts: MountsPlan, place: Place) -> MountsSource | None:
        digest = self.docker.manifest_digest(place.location)
        return MountsSource(image=f"{place.location}@{digest}") if digest else None

    def output(self, mounts: MountsPlan, out: Path) -> str:
        assert mounts.save_to is not None
        return f"type=registry,name={mounts.save_to.location},compression=zstd,oci-mediatypes=true"

    def publish(self, mounts: MountsPlan, out: Path, index: Mapping[str, Any]) -> None:
        pass  # pushed by the helper build itself


def mounts_ref(store: RegistryCache, service: str, branch: str) -> str:
    """``<the store's repository>:mounts-<service>-<branch>`` (a variant's name in the tag)."""
    return f"{store.ref.format(service=split_variant(service)[0])}:{slugify(f'mounts-{service}-{branch}', 128)}"


KIND = RegistryKind()
