"""hooks/requirements.txt: the plugin's virtualenv holds every dependency dockercache needs, pinned to versions
within pyproject.toml's ranges, installed with --no-deps (no resolve on the agent): nothing may be missing."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, Requirement]:
    lines = (ROOT / "hooks" / "requirements.txt").read_text().splitlines()
    found = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in found}


def pinned_version(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", requirement
    return spec.version


def applies(requirement: Requirement, python: str) -> bool:
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0", "extra": ""}
    return requirement.marker is None or requirement.marker.evaluate(env)


def test_every_dependency_of_pyproject_is_pinned_within_its_range() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = pins()
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in hooks/requirements.txt"
        assert requirement.specifier.contains(pinned_version(pinned[name])), (line, str(pinned[name]))
        assert str(requirement.marker or "") == str(pinned[name].marker or ""), (line, str(pinned[name]))


def test_the_pins_are_closed_under_their_own_dependencies() -> None:
    """--no-deps installs exactly the list: every dependency of a pinned package (on each supported Python)
    must be in it too, within the package's own range."""
    pinned = pins()
    for python in ("3.10", "3.11", "3.12", "3.13"):
        for name, requirement in pinned.items():
            if not applies(requirement, python) or name == "tomli":
                continue
            for line in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(line)
                if not applies(needed, python):
                    continue
                other = canonicalize_name(needed.name)
                assert other in pinned, f"{requirement.name} needs {needed} (Python {python}), not pinned"
                assert needed.specifier.contains(pinned_version(pinned[other])), (str(needed), str(pinned[other]))


def test_the_suite_runs_the_pinned_versions() -> None:
    """scripts/stack.sh installs with the pins as constraints: what the tests exercise is what agents get."""
    for name, requirement in pins().items():
        if applies(requirement, f"{sys.version_info.major}.{sys.version_info.minor}"):
            assert importlib.metadata.version(requirement.name) == pinned_version(requirement), name
