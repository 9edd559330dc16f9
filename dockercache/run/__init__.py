"""Carrying out a plan: the runner (:mod:`.runner`: builder, logins, stores before, one bake run, rescue,
stores after, report) and the cache mounts' helper builds (:mod:`.mounts`)."""
