"""Checks across keys, on a converted :class:`~dockercache.config.model.Config`: store, service and secret
names, references between tables (a service's cache store, its stages), placeholders in templates, registry
logins, and combinations of settings that cannot work together. The first failure raises a
:class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..reference import reference_problem
from .caches import CacheStore
from .ecr_hosts import USERNAME as ECR_USERNAME
from .ecr_hosts import token_registry
from .fields import check_template, dotted, suggest
from .model import Config, RegistryLogin
from .services import ServiceConfig, matrix_variants

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_login(host: str, login: RegistryLogin, path: Path) -> None:
    """A registry entry logs in with a user name and password, or (an ECR host, ``ecr = true``) with a token."""
    where = f"registries.{host}"
    if login.ecr and login.password is not None:
        raise ConfigError(f"{path}: {where}.ecr: an entry with a password does not log in with an ECR token")
    if token_registry(host, login) is None:
        if login.password is None:
            raise ConfigError(
                f"{path}: {where}.password: missing (required; only an ECR host, or ecr = true, logs in without "
                "one, with a token from the AWS credential chain)"
            )
        if login.username is None:
            raise ConfigError(f"{path}: {where}.username: missing (required with a password)")
        for key in ("region", "profile", "endpoint_url"):
            if getattr(login, key) is not None:
                raise ConfigError(f"{path}: {where}.{key}: only for ECR token logins (an ECR host without a password)")
        return
    if login.username not in (None, ECR_USERNAME):
        raise ConfigError(f"{path}: {where}.username: an ECR token logs in as '{ECR_USERNAME}' (leave it out)")
    if login.endpoint_url and not re.match(r"https?://[^/]+", login.endpoint_url):
        raise ConfigError(f"{path}: {where}.endpoint_url: not an http(s) URL: {login.endpoint_url!r}")


def check_references(config: Config) -> None:
    """Checks across keys: names, references between tables, combinations that cannot work."""
    path = config.path
    for name, store in config.caches.items():
        _check_store(config, name, store)
    for host, login in config.registries.items():
        if "/" in host or not host:
            raise ConfigError(f"{path}: registries.{host}: give a registry host (and port), not a repository")
        _check_login(host, login, path)
    builder = config.builder
    if builder.driver == "remote" and not builder.endpoint:
        raise ConfigError(f"{path}: builder.endpoint: required with driver 'remote' (e.g. tcp://buildkitd:1234)")
    if builder.driver == "docker" and builder.ephemeral:
        raise ConfigError(f"{path}: builder.ephemeral: the 'docker' driver cannot create builders")
    helper = config.settings.cache_mounts_image
    problem = reference_problem(helper)
    if problem:
        raise ConfigError(f"{path}: settings.cache_mounts_image: {helper!r} is not a valid image reference: {problem}")
    for name, svc in config.services.items():
        _check_service(config, name, svc)


def _check_store(config: Config, name: str, store: CacheStore) -> None:
    """A cache store's name, its templates' placeholders, and what its kind needs of the builder."""
    path = config.path
    if not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(f"{path}: caches.{name}: invalid store name (letters, digits, '_', '.', '-')")
    store.check(path, name, config.builder.driver)


def _check_service(config: Config, name: str, svc: ServiceConfig) -> None:
    """A service's name, where its build comes from, its cache store, stages, platforms and what needs an image."""
    path = config.path
    where = f"services.{name}"
    if not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(f"{path}: {where}: invalid service name (letters, digits, '_', '.', '-')")
    if svc.compose_service and (svc.context or svc.dockerfile):
        raise ConfigError(
            f"{path}: {where}: compose_service conflicts with context/dockerfile (they come from Compose)"
        )
    check_template(svc.stage_tag, ("stage", "tag"), path, f"{where}.stage_tag")
    if svc.compose_files and not svc.compose_service:
        raise ConfigError(f"{path}: {where}.compose_files: only used with compose_service")
    if svc.cache is not None and svc.cache not in config.caches:
        raise ConfigError(
            f"{path}: {where}.cache: no cache store '{svc.cache}'{suggest(svc.cache, config.caches)}"
            f" (stores: {', '.join(config.caches) or 'none'})"
        )
    if svc.cache is None and len(config.caches) > 1 and "default" not in config.caches:
        raise ConfigError(
            f"{path}: {where}.cache: several cache stores are defined; name one ({', '.join(config.caches)})"
        )
    _check_stages(svc, path, where)
    _check_platforms(svc.platforms, path, f"{where}.platforms")
    if svc.skip_unchanged and not svc.image:
        raise ConfigError(
            f"{path}: {where}.skip_unchanged: needs {where}.image (a skipped build retags the image it pushed before)"
        )
    _check_matrix(svc, path, where)
    _check_secrets(svc, path, where)
    _check_image_metadata(svc, path, where)


def _check_stages(svc: ServiceConfig, path: Path, where: str) -> None:
    """Stages named once each, a named target, and pushed stages among those the service builds."""
    seen: set[str] = set()
    for i, stage in enumerate(svc.stages):
        if not stage:
            raise ConfigError(f"{path}: {where}.stages[{i}]: must not be empty")
        if stage in seen:
            raise ConfigError(f"{path}: {where}.stages[{i}]: stage '{stage}' is listed twice")
        seen.add(stage)
    if svc.target is not None and svc.target == "":
        raise ConfigError(f"{path}: {where}.target: must not be empty")
    buildable = {*svc.stages, *([svc.target] if svc.target else [])}
    for i, stage in enumerate(svc.push_stages):
        if stage not in buildable:
            raise ConfigError(
                f"{path}: {where}.push_stages[{i}]: '{stage}' is not among the service's stages"
                f"{suggest(stage, buildable)}"
            )
    if svc.push_stages and not svc.image:
        raise ConfigError(f"{path}: {where}.push_stages: needs {where}.image to push to")


_LABEL_KEY_PROBLEM = re.compile(r"[=\s\x00-\x1f\x7f]")


def _check_image_metadata(svc: ServiceConfig, path: Path, where: str) -> None:
    for key in svc.labels:
        bad = _LABEL_KEY_PROBLEM.search(key)
        if not key:
            raise ConfigError(f"{path}: {where}.labels: a label key must not be empty")
        if bad:
            what = "'='" if bad.group() == "=" else "space or control character"
            raise ConfigError(f"{path}: {dotted(f'{where}.labels', key)}: a label key may hold no {what}")
    for name in ("provenance", "sbom"):
        if getattr(svc, name) is not None and not svc.image:
            raise ConfigError(
                f"{path}: {where}.{name}: attestations go with pushed images; set {where}.image, or remove it"
            )


_SECRET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_secrets(svc: ServiceConfig, path: Path, where: str) -> None:
    """Secret ids and ssh entries go into bake's ``secret`` and ``ssh`` fields, which buildx splits on ``,``
    and ``=``."""
    for key, secret in svc.secrets.items():
        at = dotted(f"{where}.secrets", key)
        if not _SECRET_ID.fullmatch(key):
            raise ConfigError(f"{path}: {at}: invalid secret id (letters, digits, '_', '.', '-')")
        if (secret.env is None) == (secret.file is None):
            raise ConfigError(f"{path}: {at}: give exactly one of env (a variable's name) or file (a path)")
    for i, entry in enumerate(svc.ssh):
        ident, _, target = entry.partition("=")
        if not _SECRET_ID.fullmatch(ident):
            raise ConfigError(
                f"{path}: {where}.ssh[{i}]: {entry!r} is not 'default', an id or 'ID=PATH' "
                "(ids: letters, digits, '_', '.', '-')"
            )
        if "=" in entry and (not target or re.search(r"[,\x00-\x1f\x7f]", target)):
            raise ConfigError(f"{path}: {where}.ssh[{i}]: {entry!r}: give one path, without commas, after '='")
    ids = [e.partition("=")[0] for e in svc.ssh]
    twice = next((i for i in ids if ids.count(i) > 1), None)
    if twice:
        raise ConfigError(f"{path}: {where}.ssh: id '{twice}' is given twice")


def _check_matrix(svc: ServiceConfig, path: Path, where: str) -> None:
    """Every variant must have an id of its own (its name, bake target, tags and cache refs come from it)."""
    check_template(svc.variant_tag, ("tag", "variant"), path, f"{where}.variant_tag")
    if not svc.matrix:
        return
    if "{variant}" not in svc.variant_tag:
        raise ConfigError(
            f"{path}: {where}.variant_tag: {svc.variant_tag!r} has no {{variant}}: every variant would push the "
            "same tags"
        )
    for axis, values in svc.matrix.items():
        at = dotted(f"{where}.matrix", axis)
        if not axis:
            raise ConfigError(f"{path}: {at}: a build argument needs a name")
        if not values:
            raise ConfigError(f"{path}: {at}: must not be empty (give the build argument's values)")
        twice = next((v for v in values if values.count(v) > 1), None)
        if twice is not None:
            raise ConfigError(f"{path}: {at}: value {twice!r} is listed twice")
    seen: dict[str, dict[str, str]] = {}
    for variant, args in matrix_variants(svc):
        if variant in seen:
            first, second = (", ".join(f"{k}={v}" for k, v in m.items()) for m in (seen[variant], args))
            raise ConfigError(
                f"{path}: {where}.matrix: variants {first} and {second} have the same id '{variant}' (values are "
                "joined with '-'); change a value"
            )
        seen[variant] = args


_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")


def _check_platforms(platforms: Sequence[str], path: Path, where: str) -> None:
    """``os/arch[/variant]``, each once (as ``--platform`` takes them; ``linux/arm64/v8``)."""
    for i, platform in enumerate(platforms):
        if not _PLATFORM.fullmatch(platform):
            raise ConfigError(
                f"{path}: {where}[{i}]: {platform!r} is not a platform (os/arch[/variant], e.g. linux/arm64)"
            )
        if platform in platforms[:i]:
            raise ConfigError(f"{path}: {where}[{i}]: {platform!r} is listed twice")
