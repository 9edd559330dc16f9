"""Invoke tasks for this project: dockercache's collection (build, plan, check, builder.*)."""

from dockercache.tasks import ns  # noqa: F401
