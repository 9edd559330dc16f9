"""A local store's cache mounts: a directory per branch beside the store's own, each a symlink to a complete
version (an ``index.json`` and an archive per mount), swapped in one step after a save."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import MountsSource

if TYPE_CHECKING:
    from ...model import MountsPlan, Place

INDEX = "index.json"


class LocalMounts:
    """The helper builds read a saved version as their context and export a new one to the agent."""

    def ready(self, mounts: MountsPlan) -> str | None:
        return None

    def find(self, mounts: MountsPlan, place: Place) -> MountsSource | None:
        directory = Path(place.location)
        return MountsSource(context=directory.resolve()) if (directory / INDEX).is_file() else None  # never rewritten

    def output(self, mounts: MountsPlan, out: Path) -> str:
        return f"type=local,dest={out}"

    def publish(self, mounts: MountsPlan, out: Path, index: Mapping[str, Any]) -> None:
        assert mounts.save_to is not None
        (out / INDEX).write_text(json.dumps({"version": 1, "mounts": dict(index)}, indent=2))
        swap_into_place(out, Path(mounts.save_to.location))


def swap_into_place(source: Path, final: Path) -> None:
    """Copy ``source`` to a new version beside ``final`` and point the symlink ``final`` at it in one step:
    a reader sees the previous version or this one, never half of one. Versions but the live one and the one
    it replaced are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    version = final.with_name(f"{final.name}.v-{token}")
    incoming = final.with_name(f"{final.name}.incoming-{token}")
    shutil.copytree(source, incoming)
    incoming.rename(version)
    previous = final.resolve() if final.is_symlink() else None
    link = final.with_name(f"{final.name}.link-{token}")
    link.symlink_to(version.name)
    if final.exists() and not final.is_symlink():
        shutil.rmtree(final)  # not a layout of ours
    os.replace(link, final)
    for old in final.parent.glob(f"{glob_escape(final.name)}.v-*"):
        if old != version and old != previous:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
