"""Values that are encoded into cache attributes (CSV, as buildx reads them) and image names: cache refs and
tags, snapshot keys, image repositories and tags, matrix values. One that would not be read as written is
refused, naming the key and the ``${VARIABLE}`` it came from. Paths are quoted where they are encoded instead
(:mod:`dockercache.model.entry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..reference import TAG, repository_problem, unsafe_character
from .fields import Key, Refuse, dotted, fill
from .interpolate import variables_used
from .model import Config, default_cache_name
from .services import ServiceConfig, matrix_variants


def check_encoded(config: Config, raw: Mapping[str, Any], variables: Mapping[str, str]) -> None:
    """Refs, tags and snapshot keys go into cache attributes (CSV, as buildx reads them) and image names: one
    that would not be read as written is refused, naming the key and the variable it came from. Paths are
    quoted where they are encoded instead (:mod:`dockercache.model.entry`)."""

    def refuse(key: Key, value: str, shown: str, problem: str) -> ConfigError:
        origin = _origin(raw, key, variables, value)
        return ConfigError(f"{config.path}: {_dotted_key(key)}: {shown}{': ' if problem else ''}{problem}{origin}")

    users: dict[str, list[str]] = {}
    for name, svc in config.services.items():
        users.setdefault(default_cache_name(config, svc) or "", []).append(name)
    for name, store in config.caches.items():
        store.check_encoded(name, users.get(name) or ["service"], refuse)
    for name, svc in config.services.items():
        _check_image_names(name, svc, refuse)
        _check_variant_tags(name, svc, refuse)


def _check_image_names(name: str, svc: ServiceConfig, refuse: Refuse) -> None:
    """A service's image repository and tags."""
    if svc.image is not None:
        problem = repository_problem(svc.image)
        if problem:
            raise refuse(
                ("services", name, "image"), svc.image, f"{svc.image!r} is not a valid image repository", problem
            )
    for i, tag in enumerate(svc.tags):
        if not TAG.fullmatch(tag):
            raise refuse(("services", name, "tags", i), tag, f"{tag!r} is not a valid image tag", _tag_rule(tag))


def _check_variant_tags(name: str, svc: ServiceConfig, refuse: Refuse) -> None:
    """The tags a service's templates make: matrix values and the longest variant id in variant_tag, and
    stage_tag."""
    for axis, values in svc.matrix.items():
        for i, value in enumerate(values):
            if not _TAG_PART.fullmatch(value):
                raise refuse(
                    ("services", name, "matrix", axis, i),
                    value,
                    f"{value!r} cannot be part of an image tag (a variant's id goes into its tags)",
                    _tag_rule(value) or "letters, digits, '_', '.' and '-' only",
                )
    if svc.matrix:
        longest = max((v for v, _ in matrix_variants(svc)), key=len)
        for tag in svc.tags or ("0123456789ab",):  # the default tag: the commit, 12 characters
            filled = fill(svc.variant_tag, tag=tag, variant=longest)
            if not TAG.fullmatch(filled):
                raise refuse(
                    ("services", name, "variant_tag"),
                    filled,
                    f"{svc.variant_tag!r} does not make a valid image tag ({filled!r})",
                    _tag_rule(filled) or "at most 128 characters",
                )
    example = fill(svc.stage_tag, stage="stage", tag="tag")
    if not TAG.fullmatch(example):
        raise refuse(
            ("services", name, "stage_tag"),
            example,
            f"{svc.stage_tag!r} does not make a valid image tag ({example!r})",
            _tag_rule(example),
        )


_TAG_PART = re.compile(r"[A-Za-z0-9_.-]+")
"""What a matrix value may be: characters of an image tag (a variant's id goes into its tags and cache refs)."""


def _tag_rule(tag: str) -> str:
    unsafe = unsafe_character(tag)
    return f"{unsafe} is not allowed" if unsafe else ""


def _dotted_key(key: Key) -> str:
    where = ""
    for part in key:
        where = f"{where}[{part}]" if isinstance(part, int) else dotted(where, part)
    return where


def _origin(raw: Mapping[str, Any], key: Key, variables: Mapping[str, str], value: str) -> str:
    """`` (from ${VAR})``: the variables in the key's raw text that brought what is wrong with ``value``
    (every variable it uses when that cannot be told)."""
    text: Any = raw
    for part in key:
        try:
            text = text[part]
        except (KeyError, IndexError, TypeError):
            return ""
    if not isinstance(text, str):
        return ""
    used = variables_used(text, variables)
    if unsafe_character(value):
        names = [n for n, v in used.items() if unsafe_character(v)]
    elif value != value.lower():
        names = [n for n, v in used.items() if v != v.lower()]
    else:
        names = list(used)
    return f" (from {', '.join('${' + n + '}' for n in names)})" if names else ""
