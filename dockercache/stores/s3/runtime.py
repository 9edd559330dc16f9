"""The S3 store at run time: each store opened, and served to BuildKit through an endpoint of its own.

Before the bake, the run opens each S3 store (boto3 is imported, the bucket checked, while the runner waits
for Docker), starts an :class:`~dockercache.stores.s3.endpoint.Endpoint` on a free address with a secret
for this run only, reads the snapshots each target may restore from, and points the target's sources at
those that are complete. After the bake it publishes the snapshot indexes the builds wrote, stops the
endpoint, and reports per stage what came from S3 and what went up (:func:`report_traffic`). A blob
BuildKit could not fetch, or fetched corrupt, is named (and a corrupt one removed from the store).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ...adapters.netcheck import unreachable, url_host
from ...config.caches import CacheStore, S3Cache
from ...errors import CacheError, StoreError
from ..base import RunContext
from .keys import CONTAINER_PORTS, ENDPOINT, S3_KEY, S3Step, source
from .layout import MOUNTS_STAGE, SnapshotName, repository_name
from .snapshots import BlobCorrupt, Snapshots

if TYPE_CHECKING:
    from ...model import Target
    from ...output.results import StageResult
    from .endpoint import Endpoint
    from .endpoint_access import Repository
    from .snapshots import BlobStore


#: BuildKit's error for a blob it could not fetch: ``unexpected status code https://HOST/v2/REPO/blobs/DIGEST: 500 ...``
_ENDPOINT_BLOB = re.compile(
    r"https?://(?P<host>[^/\s]+)/v2/\S+?/blobs/(?P<digest>sha256:[0-9a-f]{64})(?::\s*(?P<status>\d{3}[^\n:]*))?"
)

#: ... and for one whose content is not its digest.
_CORRUPT = re.compile(r"unexpected commit digest sha256:[0-9a-f]{64}, expected (?P<expected>sha256:[0-9a-f]{64})")


def open_store(name: str, config: S3Cache, context: RunContext | None = None) -> BlobStore:
    """The blob store of one S3 cache, its endpoint and bucket checked first (boto3 is imported only here)."""
    blob_store: BlobStore
    if context is not None and context.blob_store is not None:
        blob_store = context.blob_store(name, config)
    else:
        from .client import S3Store  # start-up: boto3, imported when a build opens a bucket

        blob_store = S3Store(config)
        if config.endpoint_url:
            why = unreachable(*url_host(config.endpoint_url))
            if why:
                raise StoreError(f"{blob_store.url}: endpoint {config.endpoint_url} unreachable ({why})")
    blob_store.check()
    return blob_store


def probe(name: str, store: CacheStore) -> str | None:
    """``check --remote``: None when the store's endpoint and bucket answer, else why not."""
    assert isinstance(store, S3Cache)
    try:
        open_store(name, store)
    except StoreError as exc:
        return str(exc)
    return None


def open_snapshots(name: str, config: S3Cache) -> Snapshots:
    return Snapshots(open_store(name, config))


def listen_addresses(config: S3Cache, builder_driver: str) -> list[tuple[str, int]]:
    """Where an endpoint may bind, in order of preference: ``listen``; for a docker-container builder the
    ports its buildkitd.toml names; else any free port on loopback."""
    if config.listen:
        host, _, port = config.listen.rpartition(":")
        return [(host.strip("[]"), int(port))]
    if builder_driver == "docker-container":
        return [("127.0.0.1", p) for p in CONTAINER_PORTS]
    return [("127.0.0.1", 0)]


class S3Runtime:
    """Serves every S3 store of the run through an endpoint of its own, from before the bake run to after."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._endpoints: dict[str, Endpoint] = {}
        self._secrets: dict[str, str] = {}
        self._started = datetime.now(timezone.utc).isoformat()
        """When the run began: of two saves of one snapshot, the later run's stays (see Endpoint._keep_current)."""
        self._opening: dict[str, Future[BlobStore]] = {}

    def open(self, targets: Sequence[Target]) -> None:
        """Import boto3, build the client and check the bucket (about half a second, mostly CPU) while the
        runner waits for Docker."""
        for target in targets:
            name, config = target.caches.store, target.caches.config
            if name not in self._opening and isinstance(config, S3Cache):
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockercache-s3-open")
                self._opening[name] = pool.submit(open_store, name, config, self.context)
                pool.shutdown(wait=False)  # the thread ends with its one task

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        by_store: dict[str, list[Target]] = {}
        for target in targets:
            by_store.setdefault(target.caches.store, []).append(target)
            results[target.name].s3_store = True  # --json tells its S3 traffic, none too
        prepared: dict[str, Target] = {}
        for name, group in by_store.items():
            for target in self._prepare(name, group, results):
                prepared[target.name] = target
        return [prepared[t.name] for t in targets]

    def _prepare(self, name: str, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        from .endpoint import Endpoint  # start-up: http.server and threads, for a build only

        config = targets[0].caches.config
        assert isinstance(config, S3Cache)
        console = self.context.console
        store = self._open(name, config, targets, results)
        if store is None:
            return [_without_caches(t) for t in targets]
        recorded = {
            service: self.context.meta_data_get(S3_KEY.format(service=service))
            for service in dict.fromkeys(t.service for t in targets)
        }
        secret = secrets.token_urlsafe(32)
        self.context.secret(secret)
        endpoint = Endpoint(
            store,
            self._repositories(targets, recorded),
            meta={"commit": self.context.commit, "branch": self.context.branch, "started": self._started},
            listen=listen_addresses(config, self.context.builder_driver),
            secret=secret,
            hold=True,
            spool_dir=next((t.caches.step.spool for t in targets if isinstance(t.caches.step, S3Step)), None),
        )
        wanted = [name for target in targets if target.runs for name in self._wanted(target, recorded[target.service])]
        try:
            address = endpoint.start()
            # One listing of the bucket's blobs per run, alongside the snapshot reads that need it.
            with ThreadPoolExecutor(max_workers=16) as pool:
                listing = pool.submit(endpoint.known)
                list(pool.map(endpoint.snapshot, dict.fromkeys(wanted)))
                listing.result()
        except (OSError, StoreError) as exc:
            endpoint.stop()
            if self.context.cache_errors == "fail":
                raise CacheError(f"{store.url}: {exc} and settings.cache_errors = 'fail'") from None
            console.warn(f"{store.url}: {exc}: building without this cache")
            return [_without_caches(t) for t in targets]
        self._endpoints[name] = endpoint
        self._secrets[name] = secret
        prepared = []
        for service in recorded:
            console.section(f":s3: {service}: restore caches")
            console.info(f"{store.url}: serving snapshots to BuildKit at {address}")
            for target in (t for t in targets if t.service == service):
                prepared.append(self._resolve(endpoint, address, target, recorded[service], results[target.name]))
        return prepared

    def _open(
        self, name: str, config: S3Cache, targets: Sequence[Target], results: Mapping[str, StageResult]
    ) -> BlobStore | None:
        """Store ``name``, opened by :meth:`open` or now; None (each target warned) when it cannot be."""
        try:
            opening = self._opening.pop(name, None)
            return opening.result() if opening is not None else open_store(name, config, self.context)
        except StoreError as exc:
            if self.context.cache_errors == "fail":  # decided before anything is built, pushed or recorded
                raise CacheError(f"{exc} and settings.cache_errors = 'fail'") from None
            self.context.console.warn(f"{exc}: building without this cache")
            for target in targets:
                if target.runs:  # a stage built inside another target is reported there
                    results[target.name].cache_warnings.append(f"cache store '{name}' unavailable")
            return None

    def _repositories(self, targets: Sequence[Target], recorded: Mapping[str, str | None]) -> dict[str, Repository]:
        """The repositories the endpoint serves: every key a target restores from, read-only; and each save's
        key, writable under the exact tags this run writes (each once)."""
        from .endpoint_access import Repository  # start-up: the endpoint's modules, for a build only

        repositories: dict[str, Repository] = {}
        for target in targets:
            step = target.caches.step
            assert isinstance(step, S3Step)
            for key in self._keys(step, recorded[target.service]):
                repositories.setdefault(repository_name(key, target.service), Repository(key, target.service))
            if step.save and target.runs:  # the exact tags this run writes, each once
                repo = repository_name(step.save.key, target.service)
                existing = repositories.get(repo)
                tags = existing.tags if existing is not None and existing.writable else frozenset()
                repositories[repo] = Repository(step.save.key, target.service, True, tags | {target.stage})
        return repositories

    @staticmethod
    def _keys(step: S3Step, recorded: str | None) -> list[str]:
        return list(dict.fromkeys([recorded, *step.restore_keys] if recorded else step.restore_keys))

    def _wanted(self, target: Target, recorded: str | None) -> list[SnapshotName]:
        """Every (key, stage) the target may restore from, in restore order."""
        step = target.caches.step
        assert isinstance(step, S3Step)
        return [SnapshotName(k, target.service, s) for k in self._keys(step, recorded) for s in step.stages]

    def _resolve(
        self, endpoint: Endpoint, address: str, target: Target, recorded: str | None, result: StageResult
    ) -> Target:
        """The target's sources: every (key, stage) that has a complete snapshot, in restore order."""
        step = target.caches.step
        assert isinstance(step, S3Step)
        config = target.caches.config
        assert isinstance(config, S3Cache)
        host = config.listen or ENDPOINT
        sink = target.caches.sink
        if sink is not None:
            sink = sink.with_attrs(ref=(sink.get("ref") or "").replace(host, address, 1))
        if not target.runs:
            return dataclasses.replace(target, caches=dataclasses.replace(target.caches, sources=(), sink=sink))
        found = {name: endpoint.snapshot(name) for name in self._wanted(target, recorded)}  # read in _prepare
        sources = []
        for name, snapshot in found.items():
            if isinstance(snapshot, str):
                result.warn(self.context.console, f"{snapshot}: ignored (cache miss)")
            elif snapshot is not None:
                sources.append(source(address, name.key, name.service, name.stage))
        own = [n.key for n, s in found.items() if s is not None and not isinstance(s, str) and n.stage == target.stage]
        any_stage = [n.key for n, s in found.items() if s is not None and not isinstance(s, str)]
        result.restored_from = (own or any_stage)[0] if own or any_stage else None
        keys = ", ".join(self._keys(step, recorded))
        if result.restored_from:
            self.context.console.info(f"  {target.stage}: {len(sources)} snapshot(s) under {keys}")
        else:
            self.context.console.info(f"  {target.stage}: no snapshot under {keys} (cache miss)")
        return dataclasses.replace(target, caches=dataclasses.replace(target.caches, sources=tuple(sources), sink=sink))

    def endpoint(self, name: str) -> Endpoint | None:
        """The endpoint serving store ``name`` (None before :meth:`before`, after :meth:`after`, or when the
        store could not be opened)."""
        return self._endpoints.get(name)

    def logins(self) -> dict[str, tuple[str, str]]:
        """Every endpoint's address and the run's secret for it: BuildKit presents it, nobody else knows it."""
        from .endpoint_access import USERNAME  # start-up: as above

        return {endpoint.address: (USERNAME, self._secrets[name]) for name, endpoint in self._endpoints.items()}

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        """A second run of ``targets`` may write their snapshots again (each tag once per run of the bake)."""
        for name, endpoint in self._endpoints.items():
            endpoint.allow_again(
                (repository_name(t.caches.step.save.key, t.service), t.stage)
                for t in targets
                if t.caches.store == name and isinstance(t.caches.step, S3Step) and t.caches.step.save
            )

    def refused_saves(self, targets: Sequence[Target]) -> dict[str, str]:
        """Saves the endpoint refused because a blob they name was gone (a prune that ran meanwhile, and has
        ended by the time the refusal was answered): BuildKit uploads such a blob again on a second try."""
        found: dict[str, str] = {}
        for name, endpoint in self._endpoints.items():
            for target in targets:
                step = target.caches.step
                if target.caches.store == name and isinstance(step, S3Step) and step.save:
                    why = endpoint.traffic.refused.get((repository_name(step.save.key, target.service), target.stage))
                    if why:
                        found[target.name] = why
        return found

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        for name, endpoint in self._endpoints.items():
            # Snapshot indexes are written now, once BuildKit is done: a signal before this publishes nothing.
            published = endpoint.publish()
            endpoint.stop()
            mine = [t for t in targets if t.caches.store == name]
            report_traffic(endpoint, mine, results)
            problems = [*endpoint.traffic.problems, *(p for p in published if p not in endpoint.traffic.problems)]
            for problem in problems:
                self.context.console.warn(problem)
            for target in mine:  # what S3 said is why a planned save did not happen
                step = target.caches.step
                if not (isinstance(step, S3Step) and step.save and target.runs) or results[target.name].s3_saved:
                    continue
                kept = endpoint.traffic.kept.get((repository_name(step.save.key, target.service), target.stage))
                if kept:  # the snapshot there restores at least as much: no problem, and the report says so
                    results[target.name].kept = kept
                    self.context.console.info(f"{target.name}: {kept}")
                else:
                    results[target.name].cache_warnings.extend(f"not saved: {p}" for p in problems)
        self._endpoints.clear()

    def abort(self, targets: Sequence[Target]) -> None:
        """Stop serving and publish nothing: the snapshot indexes BuildKit asked for are dropped (an upload in
        flight too), so a signal leaves every key as it was."""
        for endpoint in self._endpoints.values():
            endpoint.discard()
            endpoint.stop()
        self._endpoints.clear()

    def import_failed(self, targets: Sequence[Target], error: str) -> dict[str, str]:
        """A blob BuildKit could not fetch through an endpoint, or fetched corrupt (which is then removed from
        the store, so no snapshot is trusted with it again and the next export uploads a good copy)."""
        found: dict[str, str] = {}
        for name, endpoint in self._endpoints.items():
            url = endpoint.store.url
            for match in _ENDPOINT_BLOB.finditer(error):
                if match["host"] == endpoint.address:
                    status = match["status"] or "failed"
                    found.setdefault(name, f"fetching cache blob {match['digest']} from {url}: {status}")
            for match in _CORRUPT.finditer(error):
                digest = match["expected"]
                if name not in found and endpoint.served(digest):
                    found[name] = self._remove_if_corrupt(endpoint, digest)
        return found

    @staticmethod
    def _remove_if_corrupt(endpoint: Endpoint, digest: str) -> str:
        store = endpoint.store
        with tempfile.TemporaryDirectory(prefix="dockercache-check-") as scratch:
            try:
                store.download_blob(digest, Path(scratch) / "blob")
            except BlobCorrupt:
                store.delete_blobs([digest])
                endpoint.forget(digest)
                return f"blob {digest} is corrupt: removed from {store.url}"
            except StoreError as exc:
                return f"blob {digest}: {exc}"
        return f"blob {digest} arrived corrupt from {store.url}"

    def meta_data(self, service: str, targets: Sequence[Target], results: Mapping[str, StageResult]) -> dict[str, str]:
        saved = [
            t.caches.step.save
            for t in targets
            if isinstance(t.caches.step, S3Step) and t.caches.step.save and results[t.name].s3_saved
        ]
        return {S3_KEY.format(service=service): saved[-1].key} if saved else {}


def _without_caches(target: Target) -> Target:
    return dataclasses.replace(target, caches=dataclasses.replace(target.caches, sources=(), sink=None))


def report_traffic(endpoint: Endpoint, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
    """Say per stage what came from S3 and what went up: a blob counts in the row of the first stage (in
    Dockerfile order) whose snapshot holds it; uploads in the row of the snapshot that first named them."""
    traffic = endpoint.traffic
    rows = {(t.service, t.stage): results[t.name] for t in targets}
    for result in rows.values():
        result.s3_store = True  # its S3 traffic is told, none too
    order = {(t.service, t.stage): i for i, t in enumerate(targets)}
    repos = {name: repo.service for name, repo in endpoint.repositories.items()}
    holders: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for (repo, tag), blobs in traffic.manifests.items():
        for digest in blobs:
            holders.setdefault((repos.get(repo, ""), digest), []).append((repos.get(repo, ""), tag))

    def row(repo: str, digest: str) -> StageResult | None:
        service = repos.get(repo, "")
        held = holders.get((service, digest), [])
        candidates = sorted((k for k in held if k in rows), key=order.__getitem__)
        if candidates:
            return rows[candidates[0]]
        if held and all(stage == MOUNTS_STAGE for _, stage in held):
            return None  # a cache-mount archive: the service's cache_mounts report counts it
        firsts = [t for t in targets if t.service == service and t.runs]
        return results[firsts[0].name] if firsts else None

    for repo, digest, size in traffic.redirects:
        hit = row(repo, digest)
        if hit is not None:
            hit.down_objects += 1
            hit.down_bytes += size
    for repo, digest in traffic.heads:
        hit = row(repo, digest)
        if hit is not None:
            hit.s3_lookups += 1
    counted: set[str] = set()
    for target in targets:
        step = target.caches.step
        if not isinstance(step, S3Step) or step.save is None:
            continue
        result = results[target.name]
        key = (repository_name(step.save.key, target.service), target.stage)
        if key in traffic.kept:
            continue  # the snapshot there stays: this run's adds nothing to it
        if key not in traffic.saved and not (result.exported and key in traffic.manifests):
            continue  # BuildKit skips a manifest the store already has: that is saved too
        result.s3_saved = result.cache_written = str(step.save)
        for digest in sorted(traffic.manifests.get(key, frozenset())):
            if digest in traffic.uploaded and digest not in counted:
                counted.add(digest)
                result.up_objects += 1
                result.up_bytes += traffic.uploaded[digest]
