"""dockercache.reference: image references as Docker reads them, and what a cache attribute cannot hold."""

from __future__ import annotations

import pytest

from dockercache.reference import reference_problem, repository_problem, unsafe_character


@pytest.mark.parametrize(
    "value",
    [
        "ruby",
        "localhost:5000/cache/ruby",
        "Registry.Example.com/team/web-app",  # the host may have capitals, the path may not
        "123456789.dkr.ecr.eu-west-1.amazonaws.com/cache/ruby",
        "[::1]:5000/cache",
        "a/b__c/d.e/f---g",
    ],
)
def test_repositories_docker_accepts(value: str) -> None:
    assert repository_problem(value) is None
    assert reference_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("localhost:5000/cache,ref=evil/x", "a comma is not allowed"),
        ("localhost:5000/cache\nx", "a newline is not allowed"),
        ("cache x", "a space is not allowed"),
        ('cache"x', "a double quote is not allowed"),
        ("cache\tx", "a tab is not allowed"),
        ("cache\x00x", "the character '\\x00' is not allowed"),
        ("localhost:5000/Team/app", "repository names must be lower case"),
        ("localhost:5000/app:1.0", "give a repository without a tag or digest"),
        ("app@sha256:" + "a" * 64, "give a repository without a tag or digest"),
        ("localhost:5000", "give a repository (HOST:PORT/NAME), not a registry host"),
        ("a/-b", "not a valid repository name (lower-case letters, digits, '.', '_', '-', separated by '/')"),
        ("a/" + "b" * 255, "longer than 255 characters"),
    ],
)
def test_repository_problems(value: str, problem: str) -> None:
    assert repository_problem(value) == problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("busybox:stable", None),
        ("localhost:5000/base:deps-main", None),
        ("busybox@sha256:" + "a" * 64, None),
        ("busybox:1.36@sha256:" + "a" * 64, None),
        ("localhost:5000/Base:x", "repository names must be lower case"),
        ("busybox:", "not a valid image reference (repository[:tag])"),
        ("busybox:-x", "not a valid image reference (repository[:tag])"),
        ("busybox:" + "t" * 129, "not a valid image reference (repository[:tag])"),
        ("busybox:a,b", "a comma is not allowed"),
    ],
)
def test_reference_problems(value: str, problem: str | None) -> None:
    assert reference_problem(value) == problem


def test_unsafe_characters_are_those_csv_or_a_line_gives_meaning() -> None:
    assert unsafe_character("feature/x+y@z=1:2") is None
    assert [unsafe_character(c) for c in ",\r"] == ["a comma", "a carriage return"]
