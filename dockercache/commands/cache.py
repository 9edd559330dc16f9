"""The S3 store's snapshots by hand: ``cache.promote``, ``cache.prune``, ``cache.verify``, ``cache.list``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..adapters.ci import CIContext, branch_slug, slugify
from ..config.caches import S3Cache
from ..config.model import Config
from ..errors import ConfigError
from ..output.words import human_age, human_bytes
from ..planning.plan import run_keys
from ..stores import Keys
from ..stores.s3.keys import save_key, snapshot_key
from ..stores.s3.runtime import open_snapshots
from ..stores.s3.snapshots import Retention, parse_snapshot
from .environment import Environment, load

if TYPE_CHECKING:
    from ..stores.s3.snapshots import Snapshots


def _s3_store_name(config: Config, store: str | None) -> str:
    names = [n for n, c in config.caches.items() if isinstance(c, S3Cache)]
    if store:
        if store not in names:
            raise ConfigError(
                f"{config.path}: --store: no S3 cache store '{store}' (S3 stores: {', '.join(names) or 'none'})"
            )
        return store
    if len(names) != 1:
        raise ConfigError(
            f"{config.path}: --store: name the S3 cache store ({', '.join(names)})"
            if names
            else f'{config.path}: caches: no S3 cache store (type = "s3")'
        )
    return names[0]


def _snapshots(
    environment: Environment, config: str | None, store: str | None
) -> tuple[Snapshots, CIContext, Config, S3Cache]:
    cfg, ci = load(environment, config)
    name = _s3_store_name(cfg, store)
    s3 = cfg.caches[name]
    assert isinstance(s3, S3Cache)
    return open_snapshots(name, s3), ci, cfg, s3


def parse_duration(text: str, option: str) -> timedelta:
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if not match:
        raise ConfigError(f"{option}: '{text}' is not a duration (e.g. 90m, 12h, 7d, 2w)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def _s3_store(config: Config, store: str | None) -> tuple[str, S3Cache]:
    name = _s3_store_name(config, store)
    s3 = config.caches[name]
    assert isinstance(s3, S3Cache)
    return name, s3


def _writer_keys(config: Config, ci: CIContext) -> Keys:
    """This run's key names and whether it may write what the default branch reads, as ``make_plan`` has
    them: a pull request writes as ``pr-N`` and never a shared key, a branch only when it is the default
    branch or a trusted one. Off CI the branch is git's, as for a build."""
    return run_keys(
        config.settings,
        slugify(ci.pipeline),
        ci.short_commit,
        ci.branch,
        ci.default_branch,
        ci.pull_request,
        ci.pull_request_base_branch,
    )


def _retention(config: Config, ci: CIContext, s3: S3Cache, delete: frozenset[str] = frozenset()) -> Retention:
    """What prune keeps: the store's templates, and the default branch (never a pull request's base)."""
    default_branch = branch_slug(config.settings.default_branch or ci.default_branch)
    return Retention(key=s3.key, cache_from=s3.cache_from, default_branch=default_branch, delete=delete)


_KEY_FIELD = re.compile(r"\{(pipeline|branch|commit)\}")


_BAD_KEY = re.compile(r"[{}\x00-\x1f\x7f]")


def _key_option(text: str, keys: Keys, option: str) -> str:
    """A snapshot key given on the command line, ``{pipeline}``, ``{branch}`` and ``{commit}`` filled in as
    in the store's templates (``--target '{pipeline}/latest'``)."""
    values = {"pipeline": keys.pipeline, "branch": keys.branch, "commit": keys.commit}
    key = _KEY_FIELD.sub(lambda m: values[m.group(1)], text.strip())
    if _BAD_KEY.search(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ConfigError(f"{option}: {text!r} is not a snapshot key (a relative path such as {{pipeline}}/latest)")
    return key


def _write_refusal(key: str, action: str, keys: Keys, config: Config, ci: CIContext, s3: S3Cache) -> str | None:
    """Why this run may not ``action`` (promote to, delete) ``key``, or None. The rule a save follows
    (:func:`dockercache.stores.s3.keys.save_key`): a key the default branch writes or reads only from the default
    branch and ``settings.trusted_branches``, never from a pull request, which writes only its own key."""
    pr = ci.pull_request
    if pr:
        if config.settings.pull_request_writes == "none":
            return f"settings.pull_request_writes: pull request #{pr} writes no cache; it may not {action} '{key}'"
        own, _ = save_key(s3, keys)
        if key != own:
            return (
                f"pull request #{pr} (branch '{ci.branch}') may not {action} '{key}': pull requests write only "
                f"their own key{f' ({own})' if own else ''}, never what other builds read"
            )
        return None
    protected = _retention(config, ci, s3).protected(key)
    if protected and not keys.writes_shared:
        default_branch = config.settings.default_branch or ci.default_branch
        return (
            f"settings.trusted_branches: branch '{ci.branch}' may not {action} '{key}' ({protected}: default "
            f"branch '{default_branch}' reads it); only the default branch and trusted branches write it: add "
            f"'{ci.branch}' to settings.trusted_branches to allow it"
        )
    return None


def cmd_promote(
    environment: Environment,
    config: str | None,
    source: str | None,
    target: str | None,
    store: str | None,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Copy a snapshot key (default: this branch's) to another (default: the first cache_from key), if this
    run may write it as a save would (checked before S3 is touched)."""
    cfg, ci = load(environment, config)
    name, s3 = _s3_store(cfg, store)
    keys = _writer_keys(cfg, ci)
    own = save_key(s3, keys)[0] or snapshot_key(s3.key, keys, keys.branch)
    source = _key_option(source, keys, "--source") if source else own
    first = s3.cache_from[0] if s3.cache_from else "{pipeline}/latest"
    target = _key_option(target, keys, "--target") if target else snapshot_key(first, keys, keys.branch)
    refused = _write_refusal(target, "promote to", keys, cfg, ci, s3)
    if refused:
        raise ConfigError(f"{cfg.path}: {refused}")
    pairs = open_snapshots(name, s3).promote(source, target, dry_run)
    if as_json:
        copies = [{"snapshot": w, "from": c} for c, w in pairs]
        environment.out.document(
            {"exit_code": 0, "source": source, "target": target, "dry_run": dry_run, "written": copies}
        )
        return 0
    for copied, written in pairs:
        environment.out.result(f"  {'would write' if dry_run else 'wrote'} {written} (from {copied})")
    verb = "would promote" if dry_run else "promoted"
    environment.out.result(f"{verb} {source} to {target}: {len(pairs)} snapshot(s), no blobs copied")
    return 0


def cmd_prune(
    environment: Environment,
    config: str | None,
    store: str | None,
    keep: int | None,
    older_than: str | None,
    grace: str,
    dry_run: bool,
    delete: Sequence[str] = (),
    as_json: bool = False,
) -> int:
    """Delete old snapshots, never those the default branch writes or reads unless named in ``delete``; then
    the blobs nothing kept needs."""
    if keep is None and older_than is None and not delete:
        raise ConfigError("prune: give --keep N and/or --older-than AGE (what to keep), or --delete KEY")
    if keep is not None and keep < 1:
        raise ConfigError(f"--keep: must be at least 1 (got {keep})")
    age = parse_duration(older_than, "--older-than") if older_than else None
    grace_period = parse_duration(grace, "--grace")
    cfg, ci = load(environment, config)
    name, s3 = _s3_store(cfg, store)
    keys = _writer_keys(cfg, ci)
    named = frozenset(_key_option(k, keys, "--delete") for k in delete)
    for key in sorted(named):
        refused = _write_refusal(key, "delete", keys, cfg, ci, s3)
        if refused:
            raise ConfigError(f"{cfg.path}: {refused}")
    result = open_snapshots(name, s3).prune(
        keep, age, dry_run, grace=grace_period, retention=_retention(cfg, ci, s3, named)
    )
    if as_json:
        environment.out.document(
            {
                "exit_code": 0,
                "dry_run": dry_run,
                "deleted": [{"snapshot": n, "reason": result.reasons[n]} for n in result.snapshots],
                "kept": [{"snapshot": n, "reason": result.reasons[n]} for n in result.kept],
                "blobs_deleted": len(result.blobs),
                "bytes_deleted": result.bytes,
            }
        )
        return 0
    verb = "would delete" if dry_run else "deleted"
    for snapshot in result.kept:
        environment.out.result(f"  keep {snapshot} ({result.reasons[snapshot]})")
    for snapshot in result.snapshots:
        environment.out.result(f"  {verb} {snapshot} ({result.reasons[snapshot]})")
    environment.out.result(
        f"{verb} {len(result.snapshots)} snapshot(s) and {len(result.blobs)} blob(s) "
        f"({result.bytes / 1e6:.1f} MB); kept {len(result.kept)} snapshot(s)"
    )
    return 0


def cmd_verify(
    environment: Environment, config: str | None, store: str | None, deep: bool, as_json: bool = False
) -> int:
    """Check that every snapshot S3 lists restores completely (blobs present with the right size; --deep: sha256)."""
    snapshots, *_ = _snapshots(environment, config, store)
    problems = snapshots.verify(deep)
    count = len(snapshots.store.list_snapshots())
    checked = (
        "every blob present with its size, downloaded and its sha256 compared with its name"
        if deep
        else ("every blob present with its size (--deep also hashes them)")
    )
    code = 1 if problems else 0
    if as_json:
        environment.out.document(
            {"exit_code": code, "snapshots": count, "checked": checked, "deep": deep, "problems": problems}
        )
        return code
    for problem in problems:
        environment.out.info(f"  {problem}")
    environment.out.result(f"{count} snapshot(s), {len(problems)} problem(s); checked {checked}")
    return code


def cmd_list(environment: Environment, config: str | None, store: str | None, as_json: bool = False) -> int:
    """The snapshots, newest first, with their age, the bytes of the blobs each names and the commit that wrote
    it (one index read each)."""
    snapshots, *_ = _snapshots(environment, config, store)
    now = datetime.now(timezone.utc)
    rows = []
    for info in sorted(snapshots.store.list_snapshots(), key=lambda s: (s.modified, s.name), reverse=True):
        body = snapshots.store.get_snapshot(info.name)
        parsed = parse_snapshot(body) if body is not None else "is gone"
        size = sum(parsed.blobs.values()) if not isinstance(parsed, str) else None
        commit = parsed.meta.get("commit") if not isinstance(parsed, str) else None
        rows.append((info, size, (now - info.modified).total_seconds(), commit))
    if as_json:
        environment.out.document(
            {
                "exit_code": 0,
                "snapshots": [
                    {
                        "snapshot": i.name,
                        "modified": i.modified.isoformat(),
                        "age_seconds": round(a),
                        "bytes": n,
                        "commit": c,
                    }
                    for i, n, a, c in rows
                ],
            }
        )
        return 0
    table = [("modified", "age", "size", "commit", "snapshot")]
    table += [
        (
            f"{i.modified:%Y-%m-%d %H:%M:%S}",
            human_age(a),
            human_bytes(n) if n is not None else "broken",
            (c or "-")[:12],
            i.name,
        )
        for i, n, a, c in rows
    ]
    widths = [max(len(r[c]) for r in table) for c in range(4)]
    for row in table:
        environment.out.result("  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)), row[4]]))
    return 0
