"""The S3 store's snapshots by hand: ``cache.promote``, ``cache.prune``, ``cache.verify``, ``cache.list``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..adapters.ci import CIContext, slugify
from ..config.model import Config
from ..errors import ConfigError
from ..output.words import human_age, human_bytes
from ..planning.plan import run_keys
from ..stores import Keys
from ..stores.s3.admin import SnapshotAdmin
from ..stores.s3.snapshots import parse_snapshot
from .environment import Environment, load

if TYPE_CHECKING:
    from ..stores.s3.snapshots import Snapshots


def parse_duration(text: str, option: str) -> timedelta:
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if not match:
        raise ConfigError(f"{option}: '{text}' is not a duration (e.g. 90m, 12h, 7d, 2w)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def writer_keys(config: Config, ci: CIContext) -> Keys:
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


_KEY_FIELD = re.compile(r"\{(pipeline|branch|commit)\}")


_BAD_KEY = re.compile(r"[{}\x00-\x1f\x7f]")


def key_option(text: str, keys: Keys, option: str) -> str:
    """A snapshot key given on the command line, ``{pipeline}``, ``{branch}`` and ``{commit}`` filled in as
    in the store's templates (``--target '{pipeline}/latest'``)."""
    values = {"pipeline": keys.pipeline, "branch": keys.branch, "commit": keys.commit}
    key = _KEY_FIELD.sub(lambda m: values[m.group(1)], text.strip())
    if _BAD_KEY.search(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ConfigError(f"{option}: {text!r} is not a snapshot key (a relative path such as {{pipeline}}/latest)")
    return key


def _snapshots(environment: Environment, config: str | None, store: str | None) -> Snapshots:
    cfg, ci = load(environment, config)
    return SnapshotAdmin.of(cfg, ci, store).snapshots()


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
    return promote_config(environment, cfg, ci, source, target, store, dry_run, as_json)


def promote_config(
    environment: Environment,
    cfg: Config,
    ci: CIContext,
    source: str | None,
    target: str | None,
    store: str | None,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """``cache.promote`` of a configuration loaded already (the Buildkite plugin's, without ``service``)."""
    admin = SnapshotAdmin.of(cfg, ci, store)
    keys = writer_keys(cfg, ci)
    source = key_option(source, keys, "--source") if source else admin.own_key(keys)
    target = key_option(target, keys, "--target") if target else admin.promotion_key(keys)
    refused = admin.write_refusal(target, "promote to", keys)
    if refused:
        raise ConfigError(f"{cfg.path}: {refused}")
    pairs = admin.snapshots().promote(source, target, dry_run)
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
    admin = SnapshotAdmin.of(cfg, ci, store)
    keys = writer_keys(cfg, ci)
    named = frozenset(key_option(k, keys, "--delete") for k in delete)
    for key in sorted(named):
        refused = admin.write_refusal(key, "delete", keys)
        if refused:
            raise ConfigError(f"{cfg.path}: {refused}")
    result = admin.snapshots().prune(keep, age, dry_run, grace=grace_period, retention=admin.retention(named))
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
    snapshots = _snapshots(environment, config, store)
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
    snapshots = _snapshots(environment, config, store)
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
