"""What every cache store offers, and what it is given.

A store kind (one module each: registry, local, s3, s3_native) does two things, as BuildKit's remote cache
backends and restic's backends do:

- **plan** (pure): for one target, the cache entries to read in priority order, the one to write, and any
  work of its own before and after the BuildKit run (a :class:`StoreStep`). It gets a :class:`CacheRequest`
  and returns :class:`TargetCaches`; nothing else crosses from the plan to a store.
- **run** (side effects): a :class:`StoreRuntime` prepares its targets before the bake run (serve S3
  snapshots through an endpoint on loopback, empty export directories, drop sources that cannot answer),
  empties export directories again before a second run (the rescue of caches after a failure), tells the
  runner when a failed run's error came from importing its cache (so the runner builds again without it),
  finishes targets after the runs (swap a local directory into place, say what was written) and names the
  meta-data a successful service records for later steps.

A kind also answers what the planner and the commands would otherwise ask of a store by its name
(:class:`KindDefaults` gives the answers of a kind with nothing to add): whether it lives on the agent, what
a builder needs to reach it, what the bake process needs in its environment, where a service's cache mounts
go (a :class:`MountsRequest` in, :class:`MountsPlaces` out), and whether it answers (``check --remote``).

The planner and the runner know no store by name: they ask :func:`dockercache.stores.kind_for`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config.caches import CacheStore, S3Cache
from ..config.model import Settings
from ..model import BuilderPlan, Kind, MountsPlan, Place, TargetCaches

if TYPE_CHECKING:
    from ..model import Target
    from ..output.console import Console
    from ..output.results import StageResult
    from .s3.endpoint import Endpoint
    from .s3.snapshots import BlobStore


@dataclass(frozen=True)
class Keys:
    """Names the stores derive refs, tags and snapshot keys from (slugs, safe in a tag)."""

    pipeline: str
    commit: str
    branch: str
    default_branch: str
    writes_shared: bool
    """This branch may write what the default branch reads (the default branch, or a trusted one)."""
    reads_too: tuple[str, ...] = ()
    """Branches whose caches this run reads after its own and before the default branch's: a pull request's
    head branch (its earlier builds hold what the pull request changed; it writes only its own, ``pr-N``)."""

    @property
    def read_branches(self) -> tuple[str, ...]:
        """Every branch this run reads the caches of, in order: its own, ``reads_too``, the default branch."""
        return tuple(dict.fromkeys((self.branch, *self.reads_too, self.default_branch)))


def may_write_shared(branch: str, default_branch: str, settings: Settings) -> bool:
    """Only the default branch (and explicitly trusted branches) write the cache other branches read."""
    return branch == default_branch or any(fnmatch.fnmatchcase(branch, p) for p in settings.trusted_branches)


@dataclass(frozen=True)
class CacheRequest:
    """Everything a store needs to plan the caches of one target."""

    service: str
    store_name: str
    store: CacheStore
    stage: str
    """The target's Dockerfile stage (its label: the stage name, or ``stage-N``)."""
    graph: tuple[str, ...]
    """The service's other stages whose caches can hold this target's vertices: those it builds on, nearest
    first, then those that build on the same stages (:func:`dockercache.planning.plan.related_stages`)."""
    keys: Keys
    cache_write: bool
    root: Path
    """The directory of dockercache.toml (local store paths are relative to it)."""
    exists: Callable[[str], bool]
    """Whether a local directory exists (injected, so planning stays pure)."""
    siblings: tuple[str, ...] = ()
    """For a matrix variant (``ruby[3.3]``): the names of the service's other variants, whose caches this one
    must never overwrite."""

    @property
    def stages(self) -> tuple[str, ...]:
        """This target's stage, then the cached stages of its graph: the order sources are read in."""
        return (self.stage, *self.graph)


BlobStoreFactory = Callable[[str, S3Cache], "BlobStore"]
"""Opens the remote blob store of an S3 cache by name (default: boto3 against its bucket; tests pass a fake)."""


@dataclass
class RunContext:
    """What store runtimes may use while a build runs: output, Buildkite meta-data and run-level policy."""

    console: Console
    commit: str = ""
    branch: str = ""
    cache_errors: str = "warn"
    meta_data_get: Callable[[str], str | None] = lambda key: None
    blob_store: BlobStoreFactory | None = None
    builder_driver: str = "docker"
    """The buildx driver of the run's builder (what a store serving BuildKit on loopback must allow for)."""
    warnings: list[str] = field(default_factory=list)
    """Run-level warnings (a store that cannot be reached at all)."""
    read_manifest: Callable[[str], Mapping[str, Any] | None] = lambda ref: None
    """A registry manifest by reference, with Docker's credentials (None when it cannot be read)."""
    secret: Callable[[str], None] = lambda value: None
    """Hands a secret the run made (an endpoint's) to the redactor, before anything can print it."""


class StoreRuntime(Protocol):
    """One store kind's side of a build: before the run, after it, and what success records."""

    def open(self, targets: Sequence[Target]) -> None:
        """Start slow work that needs nothing from the run yet (connecting to a remote store) in the
        background, while the runner checks Docker; :meth:`before` waits for it."""
        ...

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        """Prepare ``targets``; returns them, adjusted (sources that cannot answer dropped, and so on)."""
        ...

    def logins(self) -> dict[str, tuple[str, str]]:
        """Registry logins (``host:port`` -> user name, secret) that this run's buildx alone must present: a
        store serving BuildKit on loopback answers only its own build (between :meth:`before` and :meth:`after`)."""
        ...

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        """Make every export destination empty again, before a second bake run of ``targets``."""
        ...

    def refused_saves(self, targets: Sequence[Target]) -> dict[str, str]:
        """{target name: why} for the targets whose cache save the store refused for a reason that is gone by now
        (a concurrent prune deleted a blob the save needed): saved once more by a cache-only run."""
        ...

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        """Finish ``targets`` whose cache export succeeded; say in each result what was written."""
        ...

    def meta_data(self, service: str, targets: Sequence[Target], results: Mapping[str, StageResult]) -> dict[str, str]:
        """Buildkite meta-data to record once the service built successfully."""
        ...

    def import_failed(self, targets: Sequence[Target], error: str) -> dict[str, str]:
        """If a failed run's ``error`` comes from importing one of this kind's caches (a blob that cannot be
        fetched, or is corrupt): {store name: what went wrong}, after repairing what can be repaired."""
        ...

    def endpoint(self, store_name: str) -> Endpoint | None:
        """The registry endpoint serving store ``store_name`` to BuildKit in this run, if this kind runs one."""
        ...

    def abort(self, targets: Sequence[Target]) -> None:
        """The run was interrupted: stop what the store started and remove what it created; publish nothing."""
        ...


@dataclass(frozen=True)
class MountsRequest:
    """Where a store keeps one service's cache mounts: what it is told."""

    service: str
    store: CacheStore
    keys: Keys
    cache_write: bool
    root: Path
    """The directory of dockercache.toml (local store paths are relative to it)."""


@dataclass(frozen=True)
class MountsPlaces:
    """Where a store keeps one service's cache mounts: where they are read from, in order, and saved to."""

    transport: Kind | None
    """How the helper builds reach them: a registry image, a local directory, the S3 store's endpoint (None:
    this store cannot keep them, and :attr:`no_save` says why)."""
    restore_from: tuple[Place, ...] = ()
    save_to: Place | None = None
    no_save: str | None = None


def branch_places(transport: Kind, request: MountsRequest, place: Callable[[str], str]) -> MountsPlaces:
    """Mounts kept per branch: read this branch's, then the others the run reads; saved as this branch's, or
    the default branch's when it may write what the default branch reads (as the store's caches)."""
    keys = request.keys
    restore = tuple(Place(b, place(b)) for b in keys.read_branches)
    if not request.cache_write:
        return MountsPlaces(transport, restore, no_save="cache writes are off")
    write = keys.default_branch if keys.writes_shared else keys.branch
    return MountsPlaces(transport, restore, Place(write, place(write)))


@dataclass(frozen=True)
class MountsSource:
    """Where a restore's helper build finds a service's archives: an image it bind-mounts, or a directory that
    is its build context."""

    image: str | None = None
    context: Path | None = None


class MountsTransport(Protocol):
    """How the cache mounts' helper builds reach one kind of store (:mod:`dockercache.run.mounts` runs them)."""

    def ready(self, mounts: MountsPlan) -> str | None:
        """None when the store can be reached in this run, else why not (nothing is restored or saved)."""
        ...

    def find(self, mounts: MountsPlan, place: Place) -> MountsSource | str | None:
        """The archives saved at ``place``; None: none there; a string: what is there cannot be used, and why."""
        ...

    def output(self, mounts: MountsPlan, out: Path) -> str:
        """The save's ``--output``: an image pushed to :attr:`MountsPlan.save_to`, or the directory ``out``."""
        ...

    def publish(self, mounts: MountsPlan, out: Path, index: Mapping[str, Any]) -> None:
        """After the save's helper build: make what it wrote (``index``: the archives, by mount id) the saved
        mounts, in one step."""
        ...


class Digests(Protocol):
    """What a registry store's mounts need of Docker: a manifest's digest, with Docker's credentials."""

    def manifest_digest(self, ref: str) -> str | None: ...


class StoreKind(Protocol):
    """A kind of cache store: how it plans a target's caches, how it runs, and what else a planner or a command
    would ask of a store."""

    name: str
    on_agent: bool
    """Its caches live on this agent: writing them is this agent's own business (always on)."""

    def handles(self, store: CacheStore) -> bool: ...

    def plan(self, request: CacheRequest) -> TargetCaches: ...

    def runtime(self, context: RunContext) -> StoreRuntime: ...

    def builder(self, builder: BuilderPlan, stores: Sequence[CacheStore]) -> BuilderPlan:
        """The builder, with what it needs to reach ``stores`` (this kind's, of the services built)."""
        ...

    def bake_env(self, stores: Mapping[str, CacheStore]) -> dict[str, str]:
        """What the bake process needs in its environment for ``stores`` (this kind's, by name)."""
        ...

    def mounts(self, request: MountsRequest) -> MountsPlaces: ...

    def mounts_transport(self, docker: Digests, endpoint: Callable[[str], Any]) -> MountsTransport | None:
        """How the helper builds reach this kind's mounts (``endpoint``: the S3 endpoint of a store, by name)."""
        ...

    def probe(self, name: str, store: CacheStore, root: Path, env: Mapping[str, str]) -> str | None:
        """``check --remote``: None when the store answers, else why not (one line)."""
        ...


class KindDefaults:
    """The answers of a kind that has nothing to add: not on the agent, nothing for the builder or the bake's
    environment, no cache mounts, nothing to probe."""

    on_agent = False

    def builder(self, builder: BuilderPlan, stores: Sequence[CacheStore]) -> BuilderPlan:
        return builder

    def bake_env(self, stores: Mapping[str, CacheStore]) -> dict[str, str]:
        return {}

    def mounts(self, request: MountsRequest) -> MountsPlaces:
        return MountsPlaces(None, no_save="this cache store cannot keep cache mounts")

    def mounts_transport(self, docker: Digests, endpoint: Callable[[str], Any]) -> MountsTransport | None:
        return None

    def probe(self, name: str, store: CacheStore, root: Path, env: Mapping[str, str]) -> str | None:
        return None


class NoRuntime:
    """For stores BuildKit reads and writes by itself: nothing before, nothing after but the report."""

    def open(self, targets: Sequence[Target]) -> None:
        pass

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        return list(targets)

    def logins(self) -> dict[str, tuple[str, str]]:
        return {}

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        pass

    def refused_saves(self, targets: Sequence[Target]) -> dict[str, str]:
        return {}

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        for target in targets:
            result = results[target.name]
            if result.exported and target.caches.sink is not None:
                result.cache_written = target.caches.sink.location

    def meta_data(self, service: str, targets: Sequence[Target], results: Mapping[str, StageResult]) -> dict[str, str]:
        return {}

    def import_failed(self, targets: Sequence[Target], error: str) -> dict[str, str]:
        context: RunContext | None = getattr(self, "context", None)
        return registry_import_failure(targets, error, context.read_manifest if context else None)

    def endpoint(self, store_name: str) -> Endpoint | None:
        return None

    def abort(self, targets: Sequence[Target]) -> None:
        pass


#: A blob or manifest URL in BuildKit's errors: ``https://HOST/v2/REPO/blobs/sha256:...``.
_REGISTRY_URL = re.compile(r"https?://(?P<host>[^/\s]+)/v2/(?P<repo>[^\s]+?)/(?:blobs|manifests)/")
#: A lazily imported layer that the registry no longer has (the error names the digest, not the registry).
_DESCRIPTOR = re.compile(
    r"could not fetch content descriptor (?P<digest>sha256:[0-9a-f]{64})[^\n]*?: (?P<why>[^:\n]+)$", re.M
)
#: A layer whose bytes do not match its digest.
_CORRUPT = re.compile(r"unexpected commit digest sha256:[0-9a-f]{64}, expected (?P<digest>sha256:[0-9a-f]{64})")


def registry_import_failure(
    targets: Sequence[Target], error: str, read_manifest: Callable[[str], Mapping[str, Any] | None] | None = None
) -> dict[str, str]:
    """The stores whose ``type=registry`` cache sources made a run fail: a URL in ``error`` points at one, or
    a layer ``error`` names by digest (missing, corrupt) is one that a source's cache manifest lists."""
    sources: dict[tuple[str, str], str] = {}
    refs: dict[str, str] = {}
    for target in targets:
        for entry in target.caches.sources:
            ref = entry.get("ref") if entry.type == "registry" else None
            if ref and "/" in ref:
                host, repo = ref.split("/", 1)
                sources[(host, repo.split("@", 1)[0].rsplit(":", 1)[0])] = target.caches.store
                refs.setdefault(ref, target.caches.store)
    found: dict[str, str] = {}
    for match in _REGISTRY_URL.finditer(error):
        store = sources.get((match["host"], match["repo"]))
        if store is not None:
            found.setdefault(store, f"fetching a cache blob from {match['host']}/{match['repo']} failed")
    layers = {m["digest"]: m["why"].strip() for m in _DESCRIPTOR.finditer(error)}
    layers.update({m["digest"]: "corrupt (its content does not match its digest)" for m in _CORRUPT.finditer(error)})
    if not layers or read_manifest is None:
        return found
    for ref, store in refs.items():
        if store in found:
            continue
        manifest = read_manifest(ref)
        listed = {layer.get("digest") for layer in (manifest or {}).get("layers", []) if isinstance(layer, dict)}
        for digest, why in layers.items():
            if digest in listed:
                found[store] = f"cache layer {digest[:19]}... of {ref}: {why}"
                break
    return found
