"""Carrying out a plan: the runner (:mod:`.runner`: the pipeline of named steps), the builder (:mod:`.builder`),
skip_unchanged's retags (:mod:`.unchanged`), the build and its failure policy (:mod:`.build`), one bake run
(:mod:`.bake`) and why it failed (:mod:`.diagnosis`), what they need of Docker (:mod:`.port`), and the cache
mounts' helper builds (:mod:`.mounts`)."""
