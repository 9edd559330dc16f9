"""The plugin's options: plugin.yml's schema as :data:`OPTIONS` (a test keeps the two equal), read from the
agent's JSON of them or its ``BUILDKITE_PLUGIN_<NAME>_*`` variables, and checked as that schema says."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..config.fields import suggest, type_name
from ..config.load import MAX_DEPTH, check_depth
from ..errors import ConfigError


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


def strings(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]
