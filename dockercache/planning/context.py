"""The build context as BuildKit's file transfer (tonistiigi/fsutil) sends it, walked and digested for the
skip-unchanged key (:mod:`dockercache.planning.skip`).

The walk applies the ignore file (:mod:`dockercache.planning.dockerignore`). Entries count with their path, type,
permission bits, symlink target, hard-link source and content; never their times or owners. Where it cannot
tell exactly what BuildKit would send, it errs towards a different key (a build): an excluded directory is
walked whenever the patterns have exceptions, even where fsutil would prune it; a path it cannot read raises
:class:`~dockercache.model.skip.Unavailable`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..model.skip import ContextScan, Entry, Unavailable
from .dockerignore import Ignore, MatchInfo, ignore_file, read_ignore

_CHUNK = 1 << 20


def scan_context(context: Path, dockerfile: Path) -> ContextScan:
    """Walk the context as BuildKit's transfer would (lstat only, in name order), the ignore file applied."""
    try:
        dockerfile_bytes = dockerfile.read_bytes()
        ignore_path = ignore_file(context, dockerfile)
        patterns = read_ignore(ignore_path.read_text(encoding="utf-8", errors="replace")) if ignore_path else ()
    except OSError as exc:
        raise Unavailable(f"cannot read {exc.filename}: {exc.strerror}") from None
    ignore = Ignore.parse(patterns)
    entries: list[Entry] = []
    inodes: dict[tuple[int, int], str] = {}
    root = context.resolve()

    def include(entry: Entry, ancestors: list[list[Any]]) -> None:
        """Emit ``entry`` after the excluded directories above it not sent yet (fsutil sends the parents
        of every path it includes)."""
        for ancestor in ancestors:
            if not ancestor[1]:
                entries.append(ancestor[0])
                ancestor[1] = True
        entries.append(entry)

    def walk(directory: Path, prefix: str, parent: MatchInfo, ancestors: list[list[Any]]) -> None:
        try:
            children = sorted(os.scandir(directory), key=lambda d: d.name)
        except OSError as exc:
            raise Unavailable(f"cannot list {directory}: {exc.strerror}") from None
        for child in children:
            path = f"{prefix}{child.name}"
            try:
                info = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise Unavailable(f"cannot stat {child.path}: {exc.strerror}") from None
            excluded, inherited = ignore.match(path, parent) if ignore.patterns else (False, ())
            is_dir = stat.S_ISDIR(info.st_mode)
            if excluded and not (is_dir and ignore.exclusions):
                continue  # an excluded directory is walked only for exceptions (fsutil may prune more)
            entry = _entry(path, child.path, info, inodes)
            if not excluded:
                include(entry, ancestors)
                if entry.kind == "file" and info.st_nlink > 1:
                    inodes.setdefault((info.st_dev, info.st_ino), path)
            if is_dir:
                walk(Path(child.path), f"{path}/", inherited, [*ancestors, [entry, not excluded]])

    walk(root, "", (), [])
    return ContextScan(context, dockerfile, dockerfile_bytes, ignore_path, patterns, tuple(entries))


def _entry(path: str, full: str, info: os.stat_result, inodes: Mapping[tuple[int, int], str]) -> Entry:
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        return Entry(path, "dir", mode)
    if stat.S_ISLNK(info.st_mode):
        try:
            return Entry(path, "symlink", mode, link=os.readlink(full))
        except OSError as exc:
            raise Unavailable(f"cannot read symlink {full}: {exc.strerror}") from None
    if stat.S_ISREG(info.st_mode):
        first = inodes.get((info.st_dev, info.st_ino)) if info.st_nlink > 1 else None
        if first is not None:
            return Entry(path, "hardlink", mode, link=first)
        return Entry(path, "file", mode, size=info.st_size)
    return Entry(path, "other", mode, link=f"{stat.S_IFMT(info.st_mode)}:{info.st_rdev}")


def file_digest(path: Path) -> str:
    """sha256 of a file's content, read once in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def context_digest(scan: ContextScan, read: Callable[[Path], str] = file_digest) -> str:
    """One digest over every entry of the scan: path, type, mode, link, and each regular file's content."""
    digest = hashlib.sha256()
    for entry in scan.entries:
        content = read(scan.root / entry.path) if entry.kind == "file" else ""
        line = json.dumps([entry.path, entry.kind, entry.mode, entry.link, content], separators=(",", ":"))
        digest.update(line.encode("utf-8", errors="surrogateescape") + b"\n")
    return digest.hexdigest()
