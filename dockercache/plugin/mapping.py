"""The plugin's options as a dockercache.toml document: docs/buildkite.md's migration table as code, with the
plugins it replaces' defaults (docker-compose-buildkite-plugin v5.14's lib/shared.bash and lib/metadata.bash;
envato/docker-cache-buildkite-plugin v0.1.0's hooks/command)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.model import CONFIG_NAME
from ..config.services import split_variant
from ..errors import ConfigError
from ..model.metadata import COMPOSE_PLUGIN_DEFAULT_FILE
from .options import strings


@dataclass(frozen=True)
class Mapped:
    """What the options make: a document to merge over dockercache.toml's (or to stand alone), the keys each
    option set (for messages), and the service to build (None: every service)."""

    document: dict[str, Any]
    origins: dict[str, str]
    service: str | None
    promote: str | None = None
    """Without ``service``, ``s3_key``: the old plugin copied a snapshot there and built nothing (its "update image
    cache" step); this is the key to promote to, and ``document`` holds the S3 store only."""
    store: str | None = None
    """The S3 store a promote copies in."""


def mapping(
    options: Mapping[str, Any],
    file: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    checkout: Path | None = None,
) -> Mapped:
    """docs/buildkite.md's migration table as code. ``file`` is dockercache.toml's raw document (None: none);
    ``env`` the job's environment, ``checkout`` its folder (where the plugins' default Compose file is)."""
    file = file or {}
    file_services = _table(file, "services")
    file_caches = _table(file, "caches")
    document: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if "service" not in options and "s3_key" in options:
        rest = {k: v for k, v in options.items() if k in ("s3_bucket", "cache_from")}
        store = _s3_table(rest, None, file_caches, origins) if rest else None
        store_name = store[0] if store else _s3_store_name(None, file_caches)
        if store is None and store_name not in file_caches:
            raise ConfigError(f"plugin option s3_key: needs s3_bucket (or an S3 cache store in {CONFIG_NAME})")
        document = {"caches": store[1]} if store else {}
        return Mapped(document, origins, None, promote=options["s3_key"], store=store_name)

    service = options.get("service")
    name = split_variant(service)[0] if service else None
    per_service = [k for k in ("config", "image_repository", "image_name", "metadata_key") if k in options]
    if name is None and file_services and len(file_services) == 1:
        name = next(iter(file_services))
    if name is None and (per_service or not file):
        first = per_service[0] if per_service else "service"
        raise ConfigError(
            f"plugin option {first}: needs service (the service to build)"
            if per_service
            else f"plugin option service: required without a {CONFIG_NAME} (the Compose service to build)"
        )
    in_file = file_services.get(name) if name else None
    in_file = in_file if isinstance(in_file, dict) else None
    svc = _service_table(options, name, in_file, origins, env or {})
    default_file = checkout is not None and (checkout / COMPOSE_PLUGIN_DEFAULT_FILE).is_file()
    if svc.get("compose_service") and default_file and not _compose_given(options, file, in_file, env or {}):
        svc["compose_files"] = [COMPOSE_PLUGIN_DEFAULT_FILE]  # both plugins' default, before compose.yaml
        origins[f"services.{name}.compose_files"] = "config"
    s3 = _s3_table(options, in_file, file_caches, origins)
    if s3 is not None:
        store_name, document["caches"] = s3
        if name:
            svc["cache"] = store_name
            origins[f"services.{name}.cache"] = "s3_bucket"
    if name and (svc or in_file is None):
        document["services"] = {name: svc}
    if "cache_write" in options:
        document["settings"] = {"cache_write": options["cache_write"]}
        origins["settings.cache_write"] = "cache_write"
    return Mapped(document, origins, service)


def _service_table(
    options: Mapping[str, Any],
    name: str | None,
    in_file: Mapping[str, Any] | None,
    origins: dict[str, str],
    env: Mapping[str, str],
) -> dict[str, Any]:
    """The service's table from ``service``, ``config``, ``image_repository``, ``image_name``, ``metadata_key``.
    A Compose service without ``metadata_key`` records its image under the docker-compose plugin's key."""
    svc: dict[str, Any] = {}
    if name and (
        in_file is None or ("config" in options and not (in_file.get("context") or in_file.get("dockerfile")))
    ):
        svc["compose_service"] = (in_file or {}).get("compose_service", name)
        origins[f"services.{name}.compose_service"] = "service"
        if "metadata_key" not in options and not (in_file or {}).get("metadata_key"):
            svc["metadata_key"] = "docker-compose"
    for option, key, value in (
        ("config", "compose_files", compose_names(options["config"], env) if "config" in options else None),
        ("image_repository", "image", options.get("image_repository")),
        ("image_name", "tags", [options["image_name"]] if "image_name" in options else None),
        ("metadata_key", "metadata_key", options.get("metadata_key")),
    ):
        if value is not None:
            svc[key] = value
            origins[f"services.{name}.{key}"] = option
    return svc


def _s3_table(
    options: Mapping[str, Any],
    in_file: Mapping[str, Any] | None,
    file_caches: Mapping[str, Any],
    origins: dict[str, str],
) -> tuple[str, dict[str, Any]] | None:
    """The S3 store's name and ``[caches]`` table from ``s3_bucket``, ``s3_key``, ``cache_from`` (None: none)."""
    s3_options = [k for k in ("s3_bucket", "s3_key", "cache_from") if k in options]
    if not s3_options:
        return None
    store_name = _s3_store_name(in_file, file_caches)
    store: dict[str, Any] = {}
    if store_name not in file_caches:
        if "s3_bucket" not in options:
            raise ConfigError(f"plugin option {s3_options[0]}: needs s3_bucket (or an S3 cache store in {CONFIG_NAME})")
        store["type"] = "s3"
    for option, key in (("s3_bucket", "bucket"), ("s3_key", "key"), ("cache_from", "cache_from")):
        if option in options:
            store[key] = strings(options[option]) if option == "cache_from" else options[option]
            origins[f"caches.{store_name}.{key}"] = option
    return store_name, {store_name: store}


def compose_names(config: str | list[str], env: Mapping[str, str]) -> list[str]:
    """The ``config`` option's Compose files, each entry split at ``$COMPOSE_PATH_SEPARATOR`` (default ``:``) as
    the docker-compose plugin splits it (lib/shared.bash, ``docker_compose_config_files``)."""
    separator = env.get("COMPOSE_PATH_SEPARATOR") or ":"
    return [name for entry in strings(config) for name in entry.split(separator) if name]


def _compose_given(
    options: Mapping[str, Any], file: Mapping[str, Any], in_file: Mapping[str, Any] | None, env: Mapping[str, str]
) -> bool:
    """Whether the Compose files are named: by ``config``, dockercache.toml or $COMPOSE_FILE."""
    return bool(
        "config" in options
        or file.get("compose_files")
        or (in_file or {}).get("compose_files")
        or env.get("COMPOSE_FILE")
    )


def _table(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key)
    return value if isinstance(value, dict) else {}


def _s3_store_name(service: Mapping[str, Any] | None, caches: Mapping[str, Any]) -> str:
    """The file's S3 store the service uses (as :func:`dockercache.config.model.default_cache_name` picks it), else
    ``s3``, a new one."""
    used = (service or {}).get("cache") or ("default" if "default" in caches else None)
    if used is None and len(caches) == 1:
        used = next(iter(caches))
    store = caches.get(used) if isinstance(used, str) else None
    return str(used) if isinstance(store, dict) and store.get("type") == "s3" else "s3"


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: tables key by key, anything else (arrays too) replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def explain(error: ConfigError, origins: Mapping[str, str], from_file: bool) -> ConfigError:
    """A configuration error about a key an option set, said in the option's terms: ``plugin option
    image_name (services.ruby.tags[0]): ...``; without a dockercache.toml, not naming a file that is not there."""
    message = str(error)
    _, sep, rest = message.partition(": ")
    key, _, what = rest.partition(": ")
    option = (
        origins.get(key)
        or origins.get(re.sub(r"\[\d+\]$", "", key))
        or next((o for k, o in origins.items() if k.endswith(f".{key}")), None)  # compose_files of a service
    )
    if sep and what and option:
        return ConfigError(f"plugin option {option} ({key}): {what}")
    if sep and not from_file:
        return ConfigError(f"plugin options: {rest}")
    return error
