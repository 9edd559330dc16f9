"""Retention of a local stage directory: what no run uses any more next to it is removed (best effort).

Old versions, exports left by killed runs, temporary links and trash go; the live version and any version
or export a run holds a lease on stay. A replaced version is also kept for :data:`GRACE` seconds after a
cleaner first finds it replaced (at most :data:`KEEP_RETIRED` of them), for whoever resolved the symlink an
instant before a swap without a lease.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Sequence

from .versions import live_version, open_lease, still_there, take_lock, unique

RETIRED = ".dockercache-retired"
"""The file a cleaner puts in a version it finds replaced; its time is when the version was known retired."""
GRACE = 60.0
"""Seconds a replaced version is kept after it is known retired, leased or not: for whoever resolved the
symlink an instant before the swap and opens a file under it an instant after (a lease protects longer reads)."""
KEEP_RETIRED = 1
"""Replaced versions kept within their grace period at most, newest first: on a long-lived agent that builds
every few seconds the grace period alone would keep one version per build of the last minute."""
STALE_LINK = 60.0
"""Seconds after which a temporary symlink left by a killed swap is removed."""


def _debris(final: str) -> re.Pattern[str]:
    name = re.escape(os.path.basename(final))
    # Versions and exports of this stage, temporary links and trash; the previous release's fixed export
    # directory (.incoming) and its trash (.old-<pid>).
    return re.compile(rf"{name}\.(?:(?P<kind>v|incoming|link|trash)-\d+-[0-9a-f]{{8}}|incoming|old-\d+)")


def clean(final: str) -> None:
    """Remove what no run uses any more next to ``final``: old versions, exports of killed runs, trash.

    Best effort: whatever cannot be removed now is tried again by the next run that writes this stage."""
    parent = os.path.dirname(final)
    pattern = _debris(final)
    try:
        with os.scandir(parent) as scan:
            entries = [e for e in scan if pattern.fullmatch(e.name)]
    except OSError:
        return
    live = live_version(final)
    recent = _newest_versions(entries, pattern, live)
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        assert match is not None
        kind = match["kind"] or ("incoming" if entry.name.endswith(".incoming") else "trash")
        try:
            if entry.is_symlink():  # a swap's temporary link (in use for a moment, so only an old one)
                if kind != "link" or time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_LINK:
                    os.unlink(entry.path)
            elif kind == "trash":  # already out of every run's way
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.path != live:
                _remove_unused(entry.path, final, grace=GRACE if entry.path in recent else 0.0)
        except OSError:
            continue


def _newest_versions(entries: Sequence[os.DirEntry[str]], pattern: re.Pattern[str], live: str | None) -> set[str]:
    """The :data:`KEEP_RETIRED` newest versions besides the live one: only they get a grace period (a version a
    run reads is kept anyway, by its lease)."""
    versions = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and match["kind"] == "v" and entry.path != live and not entry.is_symlink():
            with contextlib.suppress(OSError):
                versions.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    return {path for _, path in sorted(versions, reverse=True)[:KEEP_RETIRED]}


def _remove_unused(path: str, final: str, grace: float) -> None:
    """Delete a version or export directory if no run holds its lease, it is not live, and it has been known
    retired for ``grace`` seconds (the first clean that finds it so marks it, a later one deletes it)."""
    try:
        fd = open_lease(path)
    except OSError:
        return
    try:
        # Under the exclusive lock nothing can make it live any more: only its writer, holding its lease, does.
        if not take_lock(fd, exclusive=True) or not still_there(fd, path) or live_version(final) == path:
            return
        if grace > 0 and not _retired_for(path, grace):
            return
        trash = f"{final}.trash-{unique()}"
        os.rename(path, trash)  # out of every reader's way at once, then deleted at leisure
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)


def _retired_for(path: str, seconds: float) -> bool:
    marker = os.path.join(path, RETIRED)
    try:
        return time.time() - os.stat(marker).st_mtime >= seconds
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        return False
