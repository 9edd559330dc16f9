"""What the plan of an S3 target names: the snapshot keys it reads and saves, and where the endpoint will be.

A target restores from ``cache_from``, then this branch's key (an untrusted build's own key), the branches
it reads too, then the default branch's (:func:`restore_keys`); it saves to the default branch's key when
the build may write shared keys, else to a key of its own that the default branch never reads
(:func:`save_key`). The plan names the endpoint by a placeholder host (:data:`ENDPOINT`) that the run
replaces with the real address; a ``docker-container`` builder trusts :data:`CONTAINER_PORTS` as plain HTTP.
:class:`S3Step` carries what the run needs of all this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...config.caches import S3Cache
from ...model import Place, StoreStep
from ...model.entry import CacheEntry
from ..base import Keys, MountsPlaces, MountsRequest
from .layout import MOUNTS_STAGE, S3Layout, SnapshotName, repository_name

#: The Buildkite meta-data key that carries the snapshot key a service saved to later steps of the build.
S3_KEY = "dockercache-s3-key-{service}"


#: The host:port of cache refs in a plan; the run puts the endpoint's real address in its place.
ENDPOINT = "s3-endpoint.dockercache.invalid"

#: Ports an endpoint for a ``docker-container`` builder binds to (the builder's buildkitd.toml names them as
#: plain-HTTP registries; the endpoint takes the first free one, so a few jobs on one agent can run at once).
CONTAINER_PORTS = range(47310, 47326)


@dataclass(frozen=True)
class S3Step(StoreStep):
    restore_keys: tuple[str, ...]
    """Keys to restore from, in order (the meta-data key recorded by an earlier step comes first at run time)."""
    stages: tuple[str, ...]
    """The stages whose snapshots the target reads: its own, then those of its graph."""
    save: SnapshotName | None
    spool: str | None = None
    """Where uploads wait while hashed (``spool_dir``, resolved); None: the system's temporary directory."""

    def summary(self) -> list[tuple[str, str]]:
        lines = [("restore:", f"{', '.join(self.restore_keys)} (through a registry endpoint on loopback)")]
        if self.save:
            lines.append(("save:", f"{self.save} (uploads wait in {self.spool or 'the temporary directory'})"))
        return lines


def snapshot_key(template: str, keys: Keys, branch: str) -> str:
    return template.format(pipeline=keys.pipeline, branch=branch, commit=keys.commit)


def restore_keys(store: S3Cache, keys: Keys) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            [
                *(snapshot_key(t, keys, keys.branch) for t in store.cache_from),
                snapshot_key(store.key, keys, keys.branch) if keys.writes_shared else own_key(store.key, keys),
                *(snapshot_key(store.key, keys, b) for b in keys.reads_too),
                snapshot_key(store.key, keys, keys.default_branch),
            ]
        )
    )


_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def per_commit(template: str, keys: Keys) -> bool:
    """A key of one commit: ``{commit}`` in its template, or this build's full commit as one of its segments (the
    old plugin's ``s3_key: "${BUILDKITE_PIPELINE_SLUG}/${BUILDKITE_COMMIT}"`` arrives expanded by the agent)."""
    if "{commit}" in template:
        return True
    return any(_this_commit(segment, keys) for segment in template.split("/"))


def _this_commit(segment: str, keys: Keys) -> bool:
    return len(keys.commit) >= 7 and _FULL_SHA.fullmatch(segment) is not None and segment.startswith(keys.commit)


def own_key(template: str, keys: Keys) -> str:
    """The key an untrusted build (a pull request, a branch that may not write shared keys) writes: its branch's
    (``pr-N`` for a pull request) wherever the template names the commit. A per-commit key is one the default
    branch reads when it builds that commit (a fast-forward merge), so no untrusted build may write one."""
    key = template.format(pipeline=keys.pipeline, branch=keys.branch, commit=keys.branch)
    return "/".join(keys.branch if _this_commit(segment, keys) else segment for segment in key.split("/"))


def save_key(store: S3Cache, keys: Keys) -> tuple[str | None, str | None]:
    """The key this build saves to, or None and why not (an untrusted branch and a key the default reads)."""
    if keys.writes_shared:
        return snapshot_key(store.key, keys, keys.default_branch), None
    save = own_key(store.key, keys)
    # Keys the default branch reads: an untrusted branch never writes them, whatever the templates say; nor
    # anything named like a commit (the default branch reads every commit's key of a per-commit template).
    protected = {
        snapshot_key(t, keys, keys.default_branch) for t in (store.key, *store.cache_from) if not per_commit(t, keys)
    }
    if save in protected:
        return None, f"'{save}' is read by the default branch; branch '{keys.branch}' may not write it"
    if any(_FULL_SHA.fullmatch(segment) for segment in save.split("/")):
        why = "is named like a commit's key, which the default branch reads"
        return None, f"'{save}' {why}; branch '{keys.branch}' may not write it"
    return save, None


def source(host: str, key: str, service: str, stage: str) -> CacheEntry:
    return CacheEntry.make("registry", ref=f"{host}/{repository_name(key, service)}:{stage}")


def mounts_place(store: S3Cache, service: str, key: str, branch: str) -> Place:
    """The S3 snapshot ``<key>/<service>/_mounts``: where an S3 store keeps a service's cache mounts."""
    index = S3Layout(store.prefix.strip("/")).snapshot(SnapshotName(key, service, MOUNTS_STAGE))
    return Place(branch, f"s3://{store.bucket}/{index}", key)


def mounts_places(request: MountsRequest) -> MountsPlaces:
    """An S3 store's mounts follow its caches: read under its restore keys in order, saved under the key its
    caches are saved under (or not, and why)."""
    store, keys, service = request.store, request.keys, request.service
    assert isinstance(store, S3Cache)

    def branch(key: str) -> str:
        named = (b for b in keys.read_branches if key == snapshot_key(store.key, keys, b))
        return next(named, "")  # a cache_from key: no branch of its own

    restore = tuple(mounts_place(store, service, k, branch(k)) for k in restore_keys(store, keys))
    if not request.cache_write:
        return MountsPlaces("s3", restore, no_save="cache writes are off")
    save, refused = save_key(store, keys)
    if save is None:
        return MountsPlaces("s3", restore, no_save=refused)
    return MountsPlaces("s3", restore, mounts_place(store, service, save, branch(save)))
