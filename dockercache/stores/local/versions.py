"""The versions of a local stage directory: leases on them, a fresh export directory, and the atomic swap.

A stage directory is a symlink to its live version (see :mod:`dockercache.stores.local`). A run reads the
version the symlink resolves to when the build starts (:func:`pin`), under a shared ``flock`` on its lease
file; it exports into a fresh directory of its own (:func:`new_export_directory`), and a complete export
becomes the live version by a rename and one atomic replacement of the symlink (:func:`swap_in`). A previous
release's real directory is moved to a version and linked first (:func:`migrate`), under an exclusive lease.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import time
from pathlib import Path

from ..content import adds_nothing

LEASE = ".dockercache-lease"
"""The file in a version or export directory that runs using it hold a shared lock on."""
LOCK_WAIT = 10.0
"""Seconds a reader waits for a lease (held exclusively only while a directory is being moved away)."""


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


def open_lease(directory: str) -> int:
    return os.open(os.path.join(directory, LEASE), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)


def take_lock(fd: int, exclusive: bool, wait: float = 0.0) -> bool:
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


def still_there(fd: int, directory: str) -> bool:
    """Whether the lease file ``fd`` is still the one in ``directory`` (not moved away before it was locked)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.path.join(directory, LEASE)))
    except OSError:
        return False


def unique() -> str:
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
            fd = open_lease(version)
        except FileNotFoundError:
            continue  # replaced and removed since it was resolved: resolve again
        except OSError:  # a store this user may read but not lock
            return Lease(version, None) if os.path.isfile(os.path.join(version, "index.json")) else None
        if (
            take_lock(fd, exclusive=False, wait=LOCK_WAIT)
            and still_there(fd, version)
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
        path = f"{final}.incoming-{unique()}"
        os.mkdir(path)
        try:
            fd = open_lease(path)
        except FileNotFoundError:
            continue  # a cleaner took it for a killed run's in the moment before it was locked
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        if take_lock(fd, exclusive=False) and still_there(fd, path):
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
    version = f"{final}.v-{unique()}"
    os.rename(export.path, version)  # the lease goes with it: no cleaner takes it before it is live
    export.path = version
    link_to(final, version)
    return True


def link_to(final: str, version: str) -> None:
    """Point ``final`` at ``version`` in one step (``rename(2)`` of a symlink over it)."""
    link = f"{final}.link-{unique()}"
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
    fd = open_lease(final)
    try:
        if not take_lock(fd, exclusive=True) or os.path.islink(final) or not still_there(fd, final):
            return
        version = f"{final}.v-{unique()}"
        os.rename(final, version)
        try:
            link = f"{final}.link-{unique()}"
            os.symlink(os.path.basename(version), link)
            os.replace(link, final)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk: put it back as it was
                os.rename(version, final)
            raise
    finally:
        os.close(fd)
