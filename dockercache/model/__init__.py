"""The plan model: what a build plan is made of, and nothing that makes one.

A :class:`Plan` holds the builder (:class:`BuilderPlan`), a :class:`ServicePlan` per service and its
:class:`Target` per (service, stage); each target carries its :class:`TargetCaches` (the cache entries
(:class:`CacheEntry`) a store planned for it, and the store's own :class:`StoreStep`), and a service its
:class:`MountsPlan` for cache mounts. The planner (:mod:`dockercache.planning.plan`) makes these, the stores plan a
target's caches in them, the runner carries them out: the model imports none of them, so each can import it.
"""

from .entry import CacheEntry, StoreStep, TargetCaches
from .mounts import CacheMount, Kind, MountsPlan, Place
from .plan import (
    BAKE_FILE,
    BAKE_OUTPUT,
    METADATA_FILE,
    BuilderPlan,
    BuildOptions,
    Output,
    Plan,
    ServicePlan,
    Target,
    group_name,
    target_name,
)

__all__ = [
    "BAKE_FILE",
    "BAKE_OUTPUT",
    "METADATA_FILE",
    "BuildOptions",
    "BuilderPlan",
    "CacheEntry",
    "CacheMount",
    "Kind",
    "MountsPlan",
    "Output",
    "Place",
    "Plan",
    "ServicePlan",
    "StoreStep",
    "Target",
    "TargetCaches",
    "group_name",
    "target_name",
]
