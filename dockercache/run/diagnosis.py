"""Why a bake run failed, read from what it said: every vertex's error and buildx's own output.

Pure functions over a :class:`~dockercache.run.bake.BakeRun`: a race a second try does not meet, an image push the
registry refused, buildx's last word. What to do about each is :mod:`.build`'s.
"""

from __future__ import annotations

import re

from ..output.progress import first_line
from .bake import BakeRun


def error_text(bake: BakeRun) -> str:
    """Everything a failed run said about why: every vertex's error and buildx's own output."""
    errors = [v.error for v in bake.events.vertexes.values() if v.error]
    return "\n".join([*errors, bake.stderr])


#: BuildKit's words when it could not push an image (``exporting to image: failed to push REF: WHY``).
_PUSH = re.compile(r"failed to push (?P<ref>[^\s:/]+(?::\d+)?/\S+?): (?P<why>[^\n]+)")
#: The end of Go's ``failed to do request: Head "https://...": dial tcp ...: connect: connection refused``.
_AFTER_URL = re.compile(r'^.*"[a-z]+://[^"]*":\s*')


def push_failure(bake: BakeRun) -> str | None:
    """``push to HOST failed (REF): WHY`` when a run failed pushing an image rather than building it or reading a
    cache: the image registry is at fault, not a cache (no rebuild without caches, no cache warning)."""
    for text in (*(v.error or "" for v in bake.events.vertexes.values()), bake.stderr):
        match = _PUSH.search(text)
        if match:
            ref = match["ref"]
            why = _AFTER_URL.sub("", match["why"]).strip() or match["why"]
            return f"push to {ref.split('/', 1)[0]} failed ({ref}): {why}"
    return None


_SOLVER_RACE = "failed to get state for index"
#: The containerd image store refusing a name another job of the same commit stored an instant before, or losing
#: the parent snapshot of a layer another job's export was unpacking at the same moment.
_IMAGE_RACE = re.compile(
    r'image "[^"\n]+"[^\n]*already exists'
    r"|failed to prepare extraction snapshot[^\n]*parent snapshot [^\n]*does not exist"
)
#: Docker 26's image store (the docker driver, which pushes a named image through the daemon) losing the name the
#: export gave an instant before, while another export or a cache export of the same run was still writing.
_NAME_LOST = re.compile(r"pushing \S+ with docker: tag does not exist")
#: BuildKit 0.13 losing a snapshot it was committing (seen in the rescue's cache export right after the failed run's
#: image export was cancelled).
_SNAPSHOT_LOST = re.compile(r"failed to stat active key during commit: snapshot \S+ does not exist")


def race(bake: BakeRun) -> str | None:
    """What went wrong when a run failed on a race that a second try does not meet, rather than on the build:

    - BuildKit 0.13's solver can fail a solve of concurrent targets that share vertices (moby/buildkit#3635);
    - two jobs of one commit on one agent store the same image name at once, and the containerd image store
      refuses the second (``exporting to image: image "app:<commit>": already exists``), or loses a layer's parent
      snapshot while both unpack it (``failed to prepare extraction snapshot ...: parent snapshot ... does not
      exist``);
    - the docker driver's push finds no image under the name its export just gave (``pushing ... with docker: tag
      does not exist``; seen when a cache export of the same run failed at that moment);
    - BuildKit loses a snapshot it was committing (``failed to stat active key during commit: snapshot ... does not
      exist``).
    """
    texts = [*(v.error or "" for v in bake.events.vertexes.values()), *bake.events.text, bake.stderr]
    for text in texts:
        if _SOLVER_RACE in text:
            return f"BuildKit lost track of a shared step ({first_line(text[text.index(_SOLVER_RACE) :])})"
        match = _IMAGE_RACE.search(text)
        if match:
            return f"another job stored the same image at the same moment ({match.group()})"
        match = _NAME_LOST.search(text)
        if match:
            return f"the image store lost the image's name before its push ({match.group()})"
        match = _SNAPSHOT_LOST.search(text)
        if match:
            return f"BuildKit lost a snapshot it was committing ({match.group()})"
    return None


def last_line(text: str) -> str | None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("ERROR:").strip() if lines else None
