"""Image references as Docker reads them (distribution/reference), and values safe in a cache attribute.

Refs, tags and snapshot keys end up in ``--cache-from``/``--cache-to`` values, which buildx reads as CSV
(``type=registry,ref=...``): a comma there would add an attribute of its own (a ``ref=`` pointing at another
repository), a newline would end the entry. Such values are refused with the key named, before Docker runs;
paths are quoted instead (:mod:`dockercache.model.entry`), since a directory may well have a comma in its name.
"""

from __future__ import annotations

import re

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"

REPOSITORY = re.compile(_REPOSITORY)
REFERENCE = re.compile(rf"(?P<name>{_REPOSITORY})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
TAG = re.compile(_TAG)
NAME_LIMIT = 255
"""Docker's limit on a repository name, registry host included."""

_UNSAFE = re.compile(r'[,"\s\x00-\x1f\x7f]')
"""What a cache attribute cannot hold unquoted: CSV's separator and quote, whitespace, control characters."""


def unsafe_character(value: str) -> str | None:
    """The first character of ``value`` that would change a cache entry's meaning, described; or None."""
    match = _UNSAFE.search(value)
    return describe(match.group()) if match else None


def describe(char: str) -> str:
    names = {",": "a comma", '"': "a double quote", " ": "a space", "\n": "a newline", "\r": "a carriage return"}
    return names.get(char) or ("a tab" if char == "\t" else f"the character {char!r}")


def repository_problem(value: str) -> str | None:
    """Why ``value`` is not an image repository (a name, no tag or digest) Docker accepts; None if it is."""
    unsafe = unsafe_character(value)
    if unsafe:
        return f"{unsafe} is not allowed"
    if REPOSITORY.fullmatch(value):
        return None if len(value) <= NAME_LIMIT else f"longer than {NAME_LIMIT} characters"
    full = REFERENCE.fullmatch(value)
    if full and "/" not in value and (full.group("tag") or "").isdigit():
        return "give a repository (HOST:PORT/NAME), not a registry host"
    if full and (full.group("tag") or full.group("digest")):
        return "give a repository without a tag or digest"
    if REPOSITORY.fullmatch(_lower_path(value)):
        return "repository names must be lower case"
    return "not a valid repository name (lower-case letters, digits, '.', '_', '-', separated by '/')"


def reference_problem(value: str) -> str | None:
    """Why ``value`` is not an image reference (``repository[:tag][@digest]``); None if it is."""
    unsafe = unsafe_character(value)
    if unsafe:
        return f"{unsafe} is not allowed"
    full = REFERENCE.fullmatch(value)
    if full:
        return None if len(full.group("name")) <= NAME_LIMIT else f"longer than {NAME_LIMIT} characters"
    lowered = REFERENCE.fullmatch(_lower_path(value))
    if lowered:
        return "repository names must be lower case"
    return "not a valid image reference (repository[:tag])"


def _lower_path(value: str) -> str:
    """``value`` with its path lowered (the registry host, before the first '/', may have capitals)."""
    host, slash, rest = value.partition("/")
    if slash and re.fullmatch(_DOMAIN, host) and ("." in host or ":" in host or host == "localhost"):
        return f"{host}/{rest.lower()}"
    return value.lower()
