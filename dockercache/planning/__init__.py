"""From configuration to a plan: a service's Dockerfile read (:mod:`.dockerfile`), resolved into concrete
build inputs (:mod:`.resolve`), skip-unchanged keys (:mod:`.skip`, over the context that :mod:`.context` walks
with :mod:`.dockerignore`'s patterns), cache mounts found and placed (:mod:`.mounts`), and the plan itself
(:mod:`.plan`, a service's targets in :mod:`.targets`), which asks the stores for each target's caches."""
