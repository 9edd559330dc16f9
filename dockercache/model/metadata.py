"""The Buildkite meta-data keys that name a service's image for later steps: dockercache's own, or the
docker-compose plugin's."""

from __future__ import annotations

from collections.abc import Sequence

COMPOSE_PLUGIN_KEY = "docker-compose-plugin-built-image-tag-{service}"


COMPOSE_PLUGIN_DEFAULT_FILE = "docker-compose.yml"


def image_metadata_key(configured: str | None, service: str, compose_files: Sequence[str] = ()) -> str | None:
    """The meta-data key for a service's image: its own, or the docker-compose plugin's when asked."""
    if configured == "docker-compose":
        return compose_plugin_key(service, compose_files)
    return configured


def compose_plugin_key(service: str, compose_files: Sequence[str]) -> str:
    """The key under which the docker-compose plugin looks a service's pre-built image up, for its Compose files.

    As buildkite-plugins/docker-compose-buildkite-plugin computes it (lib/metadata.bash,
    ``prebuilt_image_meta_data_key``, with ``docker_compose_config_files`` in lib/shared.bash and the namespace
    default ``docker-compose-plugin-`` in commands/run.sh; commit 69bd3fa5a94a9caacff1b6d90c2c7001fdf61e3a,
    v5.14): ``for file in $(docker_compose_config_files); do config_key+="-$file"; done``, so every file name
    exactly as the ``config`` option wrote it (directories and extensions kept, no normalisation) follows a
    ``-``, in order; the unquoted ``$(...)`` splits names at whitespace. Only when that suffix is exactly
    ``-docker-compose.yml`` (the default file, given or not; ``./docker-compose.yml`` is not it) is the key
    the plain ``...-built-image-tag-<service>``. ``compose_files`` empty means the plugin's default file: what
    a service that is no Compose service (context and dockerfile in dockercache.toml) records, since an old
    plugin user's later steps read it with the plugin's default configuration.
    """
    suffix = "".join(f"-{word}" for name in compose_files for word in name.split())
    if suffix == f"-{COMPOSE_PLUGIN_DEFAULT_FILE}":
        suffix = ""
    return COMPOSE_PLUGIN_KEY.format(service=service) + suffix
