"""What a cache restores, and whether a new cache would restore less than the one it replaces.

Every store kind writes BuildKit's cache as an OCI image manifest (``image-manifest=true``) or a local export
whose index names one: its config is BuildKit's cache config (the records, one per cached step, which makes it
grow with them) and its layers are the cached results. BuildKit 0.13 can export, from a build whose steps all came
from a cache, a cache without the intermediate records it read (moby/buildkit#1515): published over the richer
one, the next dependency change misses a stage that did not change. So a store replaces a cache only with one that
adds something: :func:`adds_nothing`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheContent:
    """A cache manifest's records (as the size of its cache config) and layers."""

    records_size: int
    layers: frozenset[str]


CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


def cache_content(manifest: bytes) -> CacheContent | None:
    """The content of a cache manifest's body: an image manifest (``image-manifest=true``: the cache config is
    its config) or BuildKit's index form (a local export, ``image-manifest=false``: the cache config is one of its
    descriptors); None when it is neither (then nothing is compared)."""
    try:
        document = json.loads(manifest)
        if "layers" in document:
            layers = frozenset(str(layer["digest"]) for layer in document["layers"])
            return CacheContent(int(document["config"]["size"]), layers)
        descriptors = document["manifests"]
        config = [d for d in descriptors if d.get("mediaType") == CACHE_CONFIG]
        layers = frozenset(str(d["digest"]) for d in descriptors if d.get("mediaType") != CACHE_CONFIG)
        return CacheContent(int(config[0]["size"]), layers) if len(config) == 1 else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def adds_nothing(new: bytes, old: bytes) -> str | None:
    """Why cache manifest ``new`` restores nothing that ``old`` does not (its layers all in ``old``'s, and no more
    records when they are the same), or None when it may add something (or either is not a cache manifest)."""
    ours, theirs = cache_content(new), cache_content(old)
    if ours is None or theirs is None:
        return None
    fewer = ours.layers < theirs.layers
    same = ours.layers == theirs.layers and ours.records_size <= theirs.records_size
    if not (fewer or same):
        return None
    return f"this build's cache adds nothing to it ({len(ours.layers)} layers, all in the {len(theirs.layers)} there)"
