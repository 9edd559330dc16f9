"""The S3 store's snapshots by hand (``cache.promote``, ``cache.prune``, ``cache.verify``, ``cache.list``): which
store a command means, which keys this run may write, and what a prune keeps."""

from __future__ import annotations

from dataclasses import dataclass

from ...adapters.ci import CIContext, branch_slug
from ...config.caches import S3Cache
from ...config.model import Config
from ...errors import ConfigError
from ..base import Keys
from .keys import save_key, snapshot_key
from .runtime import open_snapshots
from .snapshots import Retention, Snapshots


@dataclass(frozen=True)
class SnapshotAdmin:
    """One S3 store of a configuration, as this run (its branch, its pull request) may handle it."""

    name: str
    store: S3Cache
    config: Config
    ci: CIContext

    @classmethod
    def of(cls, config: Config, ci: CIContext, store: str | None) -> SnapshotAdmin:
        """The S3 store ``--store`` names, or the only one."""
        names = [n for n, c in config.caches.items() if isinstance(c, S3Cache)]
        if store and store not in names:
            raise ConfigError(
                f"{config.path}: --store: no S3 cache store '{store}' (S3 stores: {', '.join(names) or 'none'})"
            )
        if not store and len(names) != 1:
            raise ConfigError(
                f"{config.path}: --store: name the S3 cache store ({', '.join(names)})"
                if names
                else f'{config.path}: caches: no S3 cache store (type = "s3")'
            )
        name = store or names[0]
        s3 = config.caches[name]
        assert isinstance(s3, S3Cache)
        return cls(name, s3, config, ci)

    def snapshots(self) -> Snapshots:
        return open_snapshots(self.name, self.store)

    def own_key(self, keys: Keys) -> str:
        """The key this run's builds save under (a branch that may not write the shared key: its own)."""
        return save_key(self.store, keys)[0] or snapshot_key(self.store.key, keys, keys.branch)

    def promotion_key(self, keys: Keys) -> str:
        """Where ``cache.promote`` copies to by default: the first ``cache_from`` key."""
        first = self.store.cache_from[0] if self.store.cache_from else "{pipeline}/latest"
        return snapshot_key(first, keys, keys.branch)

    def retention(self, delete: frozenset[str] = frozenset()) -> Retention:
        """What prune keeps: the store's templates, and the default branch (never a pull request's base)."""
        default_branch = branch_slug(self.config.settings.default_branch or self.ci.default_branch)
        return Retention(
            key=self.store.key, cache_from=self.store.cache_from, default_branch=default_branch, delete=delete
        )

    def write_refusal(self, key: str, action: str, keys: Keys) -> str | None:
        """Why this run may not ``action`` (promote to, delete) ``key``, or None. The rule a save follows
        (:func:`dockercache.stores.s3.keys.save_key`): a key the default branch writes or reads only from the
        default branch and ``settings.trusted_branches``, never from a pull request, which writes only its own."""
        ci, settings = self.ci, self.config.settings
        if ci.pull_request:
            pr = ci.pull_request
            if settings.pull_request_writes == "none":
                return f"settings.pull_request_writes: pull request #{pr} writes no cache; it may not {action} '{key}'"
            own, _ = save_key(self.store, keys)
            if key != own:
                return (
                    f"pull request #{pr} (branch '{ci.branch}') may not {action} '{key}': pull requests write only "
                    f"their own key{f' ({own})' if own else ''}, never what other builds read"
                )
            return None
        protected = self.retention().protected(key)
        if protected and not keys.writes_shared:
            default_branch = settings.default_branch or ci.default_branch
            return (
                f"settings.trusted_branches: branch '{ci.branch}' may not {action} '{key}' ({protected}: default "
                f"branch '{default_branch}' reads it); only the default branch and trusted branches write it: add "
                f"'{ci.branch}' to settings.trusted_branches to allow it"
            )
        return None
