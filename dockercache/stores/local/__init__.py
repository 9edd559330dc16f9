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

The kind (planning, and the run's use of the directories) is :mod:`.kind`; versions, leases and the swap are
:mod:`.versions`; removing what no run uses any more is :mod:`.retention`. Their names are handed on here.
"""

from .kind import KIND, LocalKind, LocalRuntime, LocalSwap, describe
from .retention import GRACE, KEEP_RETIRED, RETIRED, STALE_LINK, clean
from .versions import (
    LEASE,
    LOCK_WAIT,
    Lease,
    adds_nothing_to_live,
    cache_manifest,
    empty_directory,
    link_to,
    live_version,
    migrate,
    new_export_directory,
    pin,
    swap_in,
)

__all__ = [
    "GRACE",
    "KEEP_RETIRED",
    "KIND",
    "LEASE",
    "LOCK_WAIT",
    "RETIRED",
    "STALE_LINK",
    "Lease",
    "LocalKind",
    "LocalRuntime",
    "LocalSwap",
    "adds_nothing_to_live",
    "cache_manifest",
    "clean",
    "describe",
    "empty_directory",
    "link_to",
    "live_version",
    "migrate",
    "new_export_directory",
    "pin",
    "swap_in",
]
