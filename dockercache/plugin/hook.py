"""What ``python -m dockercache.plugin`` does with the options: find dockercache.toml, make the configuration,
then build (``dockercache build --service S``) or, without ``service`` but with ``s3_key``, promote a snapshot
to that key as the old plugin's copy step did (``dockercache cache.promote``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import commands
from ..adapters.buildkite import S3_KEY, Agent, AgentError
from ..adapters.ci import CIContext
from ..commands.cache import key_option, writer_keys
from ..config.load import find_config, parse_config, read_document
from ..config.model import ENV_CONFIG, Config
from ..errors import ConfigError, StoreError
from ..model import BuildOptions
from .mapping import Mapped, explain, mapping, merge
from .options import read_options, validate

ENGINE_BUILDER = {"name": "default", "driver": "docker"}

PLACEHOLDER = {"promote": {"context": "."}}
"""A promote reads no service, but a configuration has one: this stands in when the options are all there is."""


def find(environment: commands.Environment, explicit: str | None) -> Path | None:
    """dockercache.toml as the CLI finds it (``dockercache_config``, $DOCKERCACHE_CONFIG, upwards), or None."""
    if explicit or environment.env.get(ENV_CONFIG):
        return find_config(environment.cwd, explicit, environment.env)
    try:
        return find_config(environment.cwd, None, environment.env)
    except ConfigError:  # none: the options alone make the configuration
        return None


def run(environment: commands.Environment) -> int:
    """Read and check the options, make the configuration, build (or print the plan), or promote."""
    options = validate(*read_options(environment.env))
    path = find(environment, options.get("dockercache_config"))
    checkout = environment.cwd
    raw, shown = read_document(path) if path else ({}, checkout / "plugin options")
    if path is not None and path.parent.resolve() != checkout.resolve():
        raw = _compose_files_from(raw, path.parent, checkout)
    mapped = mapping(options, raw if path else None, environment.env, checkout)
    ci = CIContext(env=environment.env, cwd=path.parent if path else checkout)
    with _in_option_terms(mapped, shown, path is not None):
        if mapped.promote is not None:
            document = mapped.document if path else {**mapped.document, "services": PLACEHOLDER}
            cfg = parse_config(merge(raw, document), ci.variables(), shown)
            environment.hide_passwords(cfg)
            return promote(environment, cfg, ci, mapped, options, bool(options.get("dry_run")))
        cfg = _configuration(environment, raw, mapped, ci, shown)
        build = BuildOptions(
            services=(mapped.service,) if mapped.service else (),
            stage=options.get("stage"),
            push=options.get("push", True),
        )
        if options.get("dry_run"):
            environment.out.result(commands.render_plan(commands.plan_for(environment, cfg, ci, build)))
            return 0
        return commands.build_config(environment, cfg, ci, build, as_json=False)


def _configuration(
    environment: commands.Environment, raw: Mapping[str, Any], mapped: Mapped, ci: CIContext, shown: Path
) -> Config:
    """The options over dockercache.toml, checked (every configuration error before any Docker command), with the
    plugins' ways: Compose files and images as the docker-compose plugin finds them, the full commit as tag."""
    cfg = parse_config(merge(raw, mapped.document), ci.variables(), shown)
    # Where the builder is chosen. dockercache's default is a docker-container builder of its own, with the
    # BuildKit version pinned in builder.image, as the old plugin's `docker buildx create --driver docker-container`:
    # the engine's own BuildKit, on the classic image store, hits a --cache-from only every second build
    # (moby/buildkit#2274; `dockercache check` warns of it). An engine on the containerd image store builds and
    # exports caches with its own builder, which needs no BuildKit image pulled: there the plugin uses it.
    if "builder" not in raw and environment.get_docker().containerd_image_store():
        with contextlib.suppress(ConfigError):  # not where it cannot build the configuration (native S3)
            cfg = parse_config(merge(raw, {**mapped.document, "builder": dict(ENGINE_BUILDER)}), ci.variables(), shown)
    environment.hide_passwords(cfg)
    commit = ci.commit if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", ci.commit) else None
    return dataclasses.replace(
        cfg,
        compose_root=environment.cwd,
        compose_images=True,
        default_tags=(commit,) if commit else (),  # the old plugin's image_name default: $BUILDKITE_COMMIT
    )


@contextlib.contextmanager
def _in_option_terms(mapped: Mapped, shown: Path, from_file: bool) -> Iterator[None]:
    """Configuration errors said in the options' terms; without a dockercache.toml, never naming one."""
    try:
        yield
    except ConfigError as exc:
        if not from_file and not str(exc).startswith(f"{shown}: "):
            raise
        raise explain(exc, mapped.origins, from_file) from None


def _compose_files_from(raw: Mapping[str, Any], root: Path, checkout: Path) -> dict[str, Any]:
    """dockercache.toml's ``compose_files`` (relative to its folder) named from the checkout, where the plugin
    looks for Compose files (as the plugins it replaces, which ran there)."""

    def moved(names: Any) -> Any:
        if not isinstance(names, list):
            return names
        return [n if not isinstance(n, str) or os.path.isabs(n) else os.path.relpath(root / n, checkout) for n in names]

    document = dict(raw)
    if "compose_files" in document:
        document["compose_files"] = moved(document["compose_files"])
    services = document.get("services")
    if isinstance(services, dict):
        document["services"] = {
            name: {**svc, "compose_files": moved(svc["compose_files"])}
            if isinstance(svc, dict) and "compose_files" in svc
            else svc
            for name, svc in services.items()
        }
    return document


def promote(
    environment: commands.Environment,
    cfg: Config,
    ci: CIContext,
    mapped: Mapped,
    options: Mapping[str, Any],
    dry_run: bool,
) -> int:
    """The old plugin without ``service``: copy the snapshot this build wrote to ``s3_key`` (``cache.promote``).
    Its source, first found: ``<metadata_key>-s3`` (what the old plugin read), the keys dockercache's steps of
    this build recorded (``dockercache-s3-key-<service>``), else ``cache_from`` (the old plugin's fallback)."""
    assert mapped.promote is not None
    keys = writer_keys(cfg, ci)
    target = key_option(mapped.promote, keys, "plugin option s3_key")
    found = _sources(environment, cfg, options, mapped.store)
    sources = [s for s in dict.fromkeys(key_option(k, keys, "plugin option cache_from") for k in found) if s != target]
    if not sources:
        environment.out.warn(f"plugin option s3_key: nothing to promote to '{target}' (no other snapshot key found)")
        return 0
    promoted = 0
    for source in sources:
        try:
            commands.promote_config(environment, cfg, ci, source, target, mapped.store, dry_run)
            promoted += 1
        except StoreError as exc:
            if "no snapshot under key" not in str(exc):
                raise
            environment.out.warn(str(exc))
    if not promoted:
        environment.out.warn(f"plugin option s3_key: nothing promoted to '{target}'")
    return 0


def _sources(
    environment: commands.Environment, cfg: Config, options: Mapping[str, Any], store: str | None
) -> list[str]:
    agent = Agent.detect(environment.env, environment.redact)
    if agent is not None:
        try:
            if options.get("metadata_key"):
                recorded = agent.meta_data_get(f"{options['metadata_key']}-s3")
                if recorded:
                    return [recorded]
            prefix = S3_KEY.format(service="")
            keys = [k for k in agent.meta_data_keys() if k.startswith(prefix)]
            values = [v for v in (agent.meta_data_get(k) for k in keys) if v]
            if values:
                return list(dict.fromkeys(values))
        except AgentError as exc:
            environment.out.warn(str(exc))
    return list(getattr(cfg.caches.get(store or ""), "cache_from", ()))
