"""From configuration to a plan: a service's Dockerfile read (:mod:`.dockerfile`), resolved into concrete
build inputs (:mod:`.resolve`), skip-unchanged keys (:mod:`.skip`), cache mounts found and placed
(:mod:`.mounts`), and the plan itself (:mod:`.plan`), which asks the stores for each target's caches."""
