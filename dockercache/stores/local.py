"""Local store: BuildKit's ``type=local`` cache in a directory per service stage (the built-in default).

A target reads the directories of its own stage and of the cached stages in its graph that exist, and writes
its own. Several runs may share one directory at once (a Buildkite agent runs jobs side by side, and a
``path`` outside the checkout is theirs in common), so a stage directory is laid out as versions behind a
symlink::

    final -> final.v-<pid>-<random>         the live store: a symlink, replaced atomically (os.replace)
    final.v-<pid>-<random>/                 a complete export (index.json, blobs/), never written again
    final.incoming-<pid>-<random>/          one run's export in progress, its own: no two runs share one

- **Writing.** Each run exports into a fresh directory of its own (so a cache never grows without bound and
  no two runs meet on BuildKit's ``index.json.lock``). Only a complete export (its ``index.json`` exists) is
  renamed to a version and made live, by replacing the symlink: a reader sees the old store or the new one,
  never none and never half of one. Two runs racing: the last swap wins, and the store is that run's
  complete export; the other's version is removed.
- **Reading.** The plan names ``src=<stage dir>``; before the build the run resolves the symlink once and
  gives BuildKit the version directory itself, so a swap by another run in the middle of the build changes
  nothing under it (BuildKit reads the index when the solve starts and blobs while it runs).
- **Leases.** A run holds a shared ``flock`` on ``<version>/.dockercache-lease`` of every version it reads, and
  on its own export directory, for as long as it uses them. A directory is deleted only when it is not live
  and an exclusive lock on its lease can be taken at once: a reader mid-build never loses its blobs,
  however long the build, and a directory left by a killed run (the kernel drops its locks) is removed by
  the next run that writes that stage. ``flock`` holds across processes and containers of one machine.
  A replaced version is also kept for :data:`GRACE` seconds after a cleaner first finds it replaced, for
  whoever resolved the symlink an instant before a swap without a lease (``ls``, a script): so
  ``<stage dir>/index.json`` can always be opened. The store holds the live version, the versions in use,
  and those replaced in the last minute or so; the next run that writes the stage removes the rest.
- **Migration.** A previous release kept a real directory at ``<stage dir>``; the first run that meets it
  moves it to a version and links it (under the same exclusive lease, so no run reading it in place loses it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.caches import CacheStore, LocalCache
from ..model import StoreStep, TargetCaches
from ..model.entry import CacheEntry
from .base import CacheRequest, NoRuntime, RunContext, StoreRuntime
from .content import adds_nothing

if TYPE_CHECKING:
    from ..model import Target
    from ..output.report import StageResult

LEASE = ".dockercache-lease"
"""The file in a version or export directory that runs using it hold a shared lock on."""

LOCK_WAIT = 10.0
"""Seconds a reader waits for a lease (held exclusively only while a directory is being moved away)."""

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


@dataclass(frozen=True)
class LocalSwap(StoreStep):
    """The export goes to a directory of the run's own (``incoming`` in the plan, ``incoming-<pid>-<random>`` when
    it runs); ``final`` is pointed at it only after a good export."""

    incoming: str
    final: str

    def summary(self) -> list[tuple[str, str]]:
        return [("swap:", f"{self.incoming}-<run> -> {self.final} (after a complete export)")]


class LocalKind:
    name = "local"

    def handles(self, store: CacheStore) -> bool:
        return isinstance(store, LocalCache)

    def plan(self, request: CacheRequest) -> TargetCaches:
        store = request.store
        assert isinstance(store, LocalCache) and store.path is not None, "resolving a service fills in the path"
        base = (request.root / store.path / request.service).resolve()
        directories = [str(base / s) for s in request.stages]
        sources = tuple(CacheEntry.make("local", src=d) for d in directories if request.exists(d))
        plan = TargetCaches(self.name, request.store_name, sources, config=store)
        if not request.cache_write:
            return plan
        final = str(base / request.stage)
        swap = LocalSwap(incoming=f"{final}.incoming", final=final)
        attrs = {"dest": swap.incoming, "mode": store.mode, "compression": store.compression, "ignore-error": "true"}
        sink = CacheEntry.make("local", attrs)
        return dataclasses.replace(plan, sink=sink, step=swap)

    def runtime(self, context: RunContext) -> StoreRuntime:
        return LocalRuntime(context)


class LocalRuntime(NoRuntime):
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._reading: dict[str, Lease | None] = {}
        """Stage directory -> the version this run reads (None: none to read)."""
        self._writing: dict[str, Lease] = {}
        """Target name -> this run's export directory."""

    def before(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> list[Target]:
        prepared = []
        for target in targets:
            caches = dataclasses.replace(target.caches, sources=tuple(self._pinned(target.caches.sources)))
            swap, sink = caches.step, caches.sink
            if isinstance(swap, LocalSwap) and sink is not None:
                try:
                    lease = new_export_directory(swap.final)
                except OSError as exc:
                    results[target.name].warn(self.context.console, f"cache directory unusable: {describe(exc)}")
                    caches = dataclasses.replace(caches, sink=None, step=None)
                else:
                    self._writing[target.name] = lease
                    caches = dataclasses.replace(
                        caches,
                        sink=sink.with_attrs(dest=lease.path),
                        step=dataclasses.replace(swap, incoming=lease.path),
                    )
            prepared.append(dataclasses.replace(target, caches=caches))
        return prepared

    def _pinned(self, sources: Sequence[CacheEntry]) -> Iterator[CacheEntry]:
        """Each source pointed at the version it resolves to now, leased for the run; gone ones left out."""
        for entry in sources:
            directory = entry.get("src")
            if entry.type != "local" or directory is None:
                yield entry
                continue
            if directory not in self._reading:
                try:
                    self._reading[directory] = pin(directory)
                except OSError:  # unreadable: BuildKit finds nothing there either, a miss
                    self._reading[directory] = Lease(directory, None)
            lease = self._reading[directory]
            if lease is not None:
                yield entry.with_attrs(src=lease.path)

    def fresh_sinks(self, targets: Sequence[Target]) -> None:
        for target in targets:
            lease = self._writing.get(target.name)
            if lease is not None:
                # What cannot be removed makes the export incomplete or fail: it is never swapped in.
                with contextlib.suppress(OSError):
                    empty_directory(lease.path)

    def after(self, targets: Sequence[Target], results: Mapping[str, StageResult]) -> None:
        self._stop_reading()  # the builds are over: what this run read may go now
        for target in targets:
            swap = target.caches.step
            if not isinstance(swap, LocalSwap):
                continue
            lease = self._writing.pop(target.name, None)
            result = results[target.name]
            swapped = False
            kept = lease is not None and result.exported and adds_nothing_to_live(lease.path, swap.final)
            if kept:
                result.kept = f"kept {swap.final}: {kept}, so it restores at least as much"
                self.context.console.info(f"{target.name}: {result.kept}")
            try:
                swapped = lease is not None and result.exported and not kept and swap_in(lease, swap.final)
            except OSError as exc:
                result.warn(self.context.console, f"local cache not updated: {describe(exc)}")
            finally:
                if lease is not None and swapped:
                    lease.release()
                elif lease is not None:
                    lease.remove()
            if swapped:
                result.cache_written = swap.final
            clean(swap.final)

    def abort(self, targets: Sequence[Target]) -> None:
        """Interrupted: this run's exports are removed, its leases dropped; the live stores stay as they were."""
        self._stop_reading()
        for lease in self._writing.values():
            lease.remove()
        self._writing.clear()

    def _stop_reading(self) -> None:
        for lease in self._reading.values():
            if lease is not None:
                lease.release()
        self._reading.clear()


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


# ---------------------------------------------------------------------------------------------- leases


class Lease:
    """A shared lock on a directory's lease file, held while this run reads or writes the directory.

    Cleaners delete a directory only under an exclusive lock, so never one a run holds; the kernel drops the
    lock when the process dies, so a killed run's directories become removable."""

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self.fd = fd
        """None: held without a lock (a file system that has none, a directory this user cannot write)."""

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        """Delete the directory (this run's own export, which nobody else reads), then let go."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()


def _open_lease(directory: str) -> int:
    return os.open(os.path.join(directory, LEASE), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _lock(fd: int, exclusive: bool, wait: float = 0.0) -> bool:
    """Lock ``fd`` (flock); False if another holds a conflicting lock for longer than ``wait`` seconds."""
    deadline = time.monotonic() + wait
    operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    while True:
        try:
            fcntl.flock(fd, operation)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _still_there(fd: int, directory: str) -> bool:
    """Whether the lease file ``fd`` is still the one in ``directory`` (not moved away before it was locked)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.path.join(directory, LEASE)))
    except OSError:
        return False


def _unique() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def live_version(final: str) -> str | None:
    """The version directory ``final`` points at (None: not a symlink)."""
    try:
        target = os.readlink(final)
    except OSError:
        return None
    return os.path.join(os.path.dirname(final), target)


def pin(final: str) -> Lease | None:
    """The complete version a reader should use for the whole build, leased; None if there is none."""
    if not os.path.islink(final) and os.path.isdir(final):
        with contextlib.suppress(OSError):  # cannot move it (read-only, another user's): read it in place
            migrate(final)
    for _ in range(5):
        version = live_version(final) or (final if os.path.isdir(final) else None)
        if version is None:
            time.sleep(0.05)  # at most a migration's moment between its rename and its link
            continue
        try:
            fd = _open_lease(version)
        except FileNotFoundError:
            continue  # replaced and removed since it was resolved: resolve again
        except OSError:  # a store this user may read but not lock
            return Lease(version, None) if os.path.isfile(os.path.join(version, "index.json")) else None
        if (
            _lock(fd, exclusive=False, wait=LOCK_WAIT)
            and _still_there(fd, version)
            and os.path.isfile(os.path.join(version, "index.json"))
            and (version != final or not os.path.islink(final))
        ):
            return Lease(version, fd)
        os.close(fd)
    return None


def new_export_directory(final: str) -> Lease:
    """A fresh, empty directory of this run's own for BuildKit to export ``final``'s next version into."""
    Path(final).parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        path = f"{final}.incoming-{_unique()}"
        os.mkdir(path)
        try:
            fd = _open_lease(path)
        except FileNotFoundError:
            continue  # a cleaner took it for a killed run's in the moment before it was locked
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        if _lock(fd, exclusive=False) and _still_there(fd, path):
            return Lease(path, fd)
        os.close(fd)  # the same, a moment later
    raise OSError(errno.EBUSY, "no export directory could be reserved", final)


def empty_directory(path: str) -> None:
    """Empty an export directory again (its lease stays held), before a second bake run exports into it."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name == LEASE:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


# ------------------------------------------------------------------------------------------------ swap


def cache_manifest(directory: str) -> bytes | None:
    """The cache manifest of a local export (its index names it; its blob holds it), or None."""
    try:
        with open(os.path.join(directory, "index.json"), "rb") as index:
            digest = str(json.load(index)["manifests"][0]["digest"])
        with open(os.path.join(directory, "blobs", *digest.split(":", 1)), "rb") as blob:
            return blob.read(4 * 1024 * 1024)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def adds_nothing_to_live(export: str, final: str) -> str | None:
    """Why a complete export adds nothing to the live version of ``final`` (then it is not swapped in), or None."""
    new, live = cache_manifest(export), cache_manifest(final)
    return adds_nothing(new, live) if new is not None and live is not None else None


def swap_in(export: Lease, final: str) -> bool:
    """Make a complete export the live version of ``final``; False (and nothing changed) if it is incomplete."""
    if not os.path.isfile(os.path.join(export.path, "index.json")):
        return False
    version = f"{final}.v-{_unique()}"
    os.rename(export.path, version)  # the lease goes with it: no cleaner takes it before it is live
    export.path = version
    link_to(final, version)
    return True


def link_to(final: str, version: str) -> None:
    """Point ``final`` at ``version`` in one step (``rename(2)`` of a symlink over it)."""
    link = f"{final}.link-{_unique()}"
    os.symlink(os.path.basename(version), link)
    try:
        for _ in range(50):
            try:
                os.replace(link, final)
                return
            except IsADirectoryError:
                migrate(final)  # a previous release's directory: move it aside first
            time.sleep(0.1)  # a run reads it in place, or moves it: it is a symlink in a moment
        raise OSError(errno.EBUSY, "a previous release's cache directory is in use by another build", final)
    finally:
        if os.path.lexists(link):
            os.unlink(link)


def migrate(final: str) -> None:
    """Turn a previous release's real directory at ``final`` into a version behind a symlink.

    Done under an exclusive lease, so never under a run that reads it in place; if one does (or another run
    is migrating it), this returns and the caller tries again."""
    fd = _open_lease(final)
    try:
        if not _lock(fd, exclusive=True) or os.path.islink(final) or not _still_there(fd, final):
            return
        version = f"{final}.v-{_unique()}"
        os.rename(final, version)
        try:
            link = f"{final}.link-{_unique()}"
            os.symlink(os.path.basename(version), link)
            os.replace(link, final)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk: put it back as it was
                os.rename(version, final)
            raise
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- clean-up


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
        fd = _open_lease(path)
    except OSError:
        return
    try:
        # Under the exclusive lock nothing can make it live any more: only its writer, holding its lease, does.
        if not _lock(fd, exclusive=True) or not _still_there(fd, path) or live_version(final) == path:
            return
        if grace > 0 and not _retired_for(path, grace):
            return
        trash = f"{final}.trash-{_unique()}"
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


KIND = LocalKind()
