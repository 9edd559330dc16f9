"""The Buildkite plugin: its options (plugin.yml) mapped onto a dockercache.toml document, then ``build``.

``hooks/command`` runs ``python -m dockercache.plugin`` in the job's checkout. The options come from
``$BUILDKITE_PLUGIN_CONFIGURATION`` (the agent's JSON of them) or, without it, from the agent's
``BUILDKITE_PLUGIN_<NAME>_<OPTION>`` variables (arrays as ``_0``, ``_1``, ...). They are checked as plugin.yml's
schema says (:data:`OPTIONS` is that schema; a test keeps the two equal), mapped as docs/buildkite.md's migration table
says, merged over dockercache.toml when there is one (the options win, table by table), and checked by
:func:`dockercache.config.load.parse_config` like any file. Then the same build as ``dockercache build --service S``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import commands
from .adapters.ci import CIContext
from .commands.boundary import Stop, guarded  # the one error boundary: signals, one-line errors, exit codes
from .config.fields import suggest, type_name
from .config.load import MAX_DEPTH, check_depth, find_config, parse_config, read_document
from .config.model import CONFIG_NAME, ENV_CONFIG, Config
from .config.services import split_variant
from .errors import ConfigError
from .model import BuildOptions


@dataclass(frozen=True)
class Option:
    """One plugin option: ``strings`` is a string or an array of strings."""

    kind: Literal["string", "strings", "boolean"]
    doc: str
    choices: tuple[str, ...] = ()


OPTIONS: dict[str, Option] = {
    "s3_bucket": Option("string", "S3 bucket of the cache ([caches.s3] bucket)."),
    "s3_key": Option("string", "Snapshot key this build writes (caches.s3.key); {pipeline}, {branch}, {commit}."),
    "cache_from": Option("strings", "Snapshot keys restored first (caches.s3.cache_from)."),
    "service": Option("string", "Service to build: a dockercache.toml service, else the Compose service."),
    "config": Option("strings", "Compose file(s) of the service (compose_files), relative to the checkout."),
    "image_repository": Option("string", "Image repository pushed to (services.<service>.image)."),
    "image_name": Option("string", "Tag pushed (services.<service>.tags); default: the commit."),
    "metadata_key": Option("string", "Meta-data key receiving the pushed image (services.<service>.metadata_key)."),
    "dockercache_config": Option("string", "dockercache.toml to read (default: found as the CLI finds it)."),
    "push": Option("boolean", "Push the image (false: load it into the agent's Docker). Default true."),
    "cache_write": Option("string", "settings.cache_write: auto, always or never.", ("auto", "always", "never")),
    "stage": Option("string", "Build this stage (and those it builds on) only."),
    "dry_run": Option("boolean", "Print the plan (build --dry-run) and build nothing."),
}

Namer = Callable[[str], str]
"""How a message names an option: ``plugin option s3_key``, or the variable it came from."""

ENGINE_BUILDER = {"name": "default", "driver": "docker"}


def read_options(env: Mapping[str, str]) -> tuple[dict[str, Any], Namer]:
    """The options as given: the agent's JSON of them when set, else its ``BUILDKITE_PLUGIN_<NAME>_*``
    variables (``<NAME>`` is ``$BUILDKITE_PLUGIN_NAME``, the agent's name for this plugin; default DOCKERCACHE)."""
    text = env.get("BUILDKITE_PLUGIN_CONFIGURATION", "").strip()
    if text:
        try:
            options = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"BUILDKITE_PLUGIN_CONFIGURATION: not JSON ({exc})") from None
        except RecursionError:
            raise ConfigError(f"BUILDKITE_PLUGIN_CONFIGURATION: nested more than {MAX_DEPTH} levels deep") from None
        check_depth(options, "BUILDKITE_PLUGIN_CONFIGURATION")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError(f"BUILDKITE_PLUGIN_CONFIGURATION: expected an object, got {type_name(options)}")
        return options, lambda key: f"plugin option {key}"
    prefix = f"BUILDKITE_PLUGIN_{env.get('BUILDKITE_PLUGIN_NAME') or 'DOCKERCACHE'}_"
    found: dict[str, Any] = {}
    items: dict[str, dict[int, str]] = {}
    for name, value in env.items():
        if not name.startswith(prefix) or name == f"{prefix}NAME":
            continue
        suffix = name[len(prefix) :]
        item = re.fullmatch(r"(.+)_(\d+)", suffix)
        if suffix.lower() not in OPTIONS and item and item.group(1).lower() in OPTIONS:
            items.setdefault(item.group(1).lower(), {})[int(item.group(2))] = value
            continue
        key = suffix.lower()
        spec = OPTIONS.get(key)
        found[key] = {"true": True, "false": False}.get(value, value) if spec and spec.kind == "boolean" else value
    for key, values in items.items():
        found[key] = [values[i] for i in sorted(values)]
    return found, lambda key: prefix + key.upper()


def validate(options: Mapping[str, Any], name: Namer) -> dict[str, Any]:
    """Check the options as plugin.yml's schema does: no unknown option, each of its type, no empty string."""
    for key, value in options.items():
        spec = OPTIONS.get(key)
        if spec is None:
            raise ConfigError(f"{name(key)}: unknown option '{key}'{suggest(key, OPTIONS)}")
        if spec.kind == "boolean":
            if not isinstance(value, bool):
                raise ConfigError(f"{name(key)}: expected true or false, got {_shown(value)}")
            continue
        values = value if spec.kind == "strings" and isinstance(value, list) else [value]
        expected = "a string or an array of strings" if spec.kind == "strings" else "a string"
        if not values:
            raise ConfigError(f"{name(key)}: must not be an empty array")
        for item in values:
            if not isinstance(item, str):
                raise ConfigError(f"{name(key)}: expected {expected}, got {_shown(item)}")
            if not item:
                raise ConfigError(f"{name(key)}: must not be empty")
            if spec.choices and item not in spec.choices:
                choices = ", ".join(repr(c) for c in spec.choices)
                raise ConfigError(f"{name(key)}: {item!r} is not one of {choices}{suggest(item, spec.choices)}")
    return dict(options)


def _shown(value: Any) -> str:
    return f"{type_name(value)} ({json.dumps(value)})" if not isinstance(value, (dict, list)) else type_name(value)


def _strings(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Mapped:
    """What the options make: a document to merge over dockercache.toml's (or to stand alone), the keys each
    option set (for messages), and the service to build (None: every service)."""

    document: dict[str, Any]
    origins: dict[str, str]
    service: str | None


def mapping(options: Mapping[str, Any], file: Mapping[str, Any] | None) -> Mapped:
    """docs/buildkite.md's migration table as code. ``file`` is dockercache.toml's raw document (None: none)."""
    file = file or {}
    file_services = _table(file, "services")
    file_caches = _table(file, "caches")
    document: dict[str, Any] = {}
    origins: dict[str, str] = {}

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
    svc = _service_table(options, name, in_file, origins)
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
    options: Mapping[str, Any], name: str | None, in_file: Mapping[str, Any] | None, origins: dict[str, str]
) -> dict[str, Any]:
    """The service's table from ``service``, ``config``, ``image_repository``, ``image_name``, ``metadata_key``."""
    svc: dict[str, Any] = {}
    if name and (
        in_file is None or ("config" in options and not (in_file.get("context") or in_file.get("dockerfile")))
    ):
        svc["compose_service"] = (in_file or {}).get("compose_service", name)
        origins[f"services.{name}.compose_service"] = "service"
    for option, key, value in (
        ("config", "compose_files", _strings(options["config"]) if "config" in options else None),
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
            store[key] = _strings(options[option]) if option == "cache_from" else options[option]
            origins[f"caches.{store_name}.{key}"] = option
    return store_name, {store_name: store}


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
    option = origins.get(key) or origins.get(re.sub(r"\[\d+\]$", "", key))
    if sep and what and option:
        return ConfigError(f"plugin option {option} ({key}): {what}")
    if sep and not from_file:
        return ConfigError(f"plugin options: {rest}")
    return error


def find(environment: commands.Environment, explicit: str | None) -> Path | None:
    """dockercache.toml as the CLI finds it (``dockercache_config``, $DOCKERCACHE_CONFIG, upwards), or None."""
    if explicit or environment.env.get(ENV_CONFIG):
        return find_config(environment.cwd, explicit, environment.env)
    try:
        return find_config(environment.cwd, None, environment.env)
    except ConfigError:  # none: the options alone make the configuration
        return None


def run(environment: commands.Environment) -> int:
    """Read and check the options, make the configuration, build (or print the plan)."""
    options = validate(*read_options(environment.env))
    path = find(environment, options.get("dockercache_config"))
    raw, shown = read_document(path) if path else ({}, environment.cwd / CONFIG_NAME)
    mapped = mapping(options, raw if path else None)
    ci = CIContext(env=environment.env, cwd=path.parent if path else environment.cwd)

    def parse(document: Mapping[str, Any]) -> Config:
        try:
            return parse_config(merge(raw, document), ci.variables(), shown)
        except ConfigError as exc:
            raise explain(exc, mapped.origins, path is not None) from None

    cfg = parse(mapped.document)  # every configuration error before any Docker command
    if "builder" not in raw and environment.get_docker().containerd_image_store():
        # As the old plugin's `docker build`: the engine's own builder, which needs no BuildKit image and, on the
        # containerd image store, exports caches. Not where it cannot build the configuration (native S3).
        with contextlib.suppress(ConfigError):
            cfg = parse({**mapped.document, "builder": dict(ENGINE_BUILDER)})
    environment.hide_passwords(cfg)
    build = BuildOptions(
        services=(mapped.service,) if mapped.service else (),
        stage=options.get("stage"),
        push=options.get("push", True),
    )
    if options.get("dry_run"):
        environment.out.result(commands.render_plan(commands.plan_for(environment, cfg, ci, build)))
        return 0
    return commands.build_config(environment, cfg, ci, build, as_json=False)


def main() -> None:
    """``python -m dockercache.plugin``: exit codes and one-line errors as the ``dockercache`` CLI's."""
    environment = commands.Environment()
    try:
        guarded(lambda: run(environment))
    except Stop as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        sys.exit(exc.code)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
