"""Where the build runs: commit, branch, pipeline and default branch.

Buildkite's variables win; on a laptop the same values come from git, so one dockercache.toml serves both.
Git is only asked when a value is actually needed (``plan`` on a big repository stays fast).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

GitRunner = Callable[[Path, list[str]], str | None]

#: Variables dockercache derives from git when Buildkite does not set them.
DERIVED = (
    "BUILDKITE_COMMIT",
    "BUILDKITE_BRANCH",
    "BUILDKITE_PIPELINE_SLUG",
    "BUILDKITE_PIPELINE_DEFAULT_BRANCH",
)


def run_git(cwd: Path, args: list[str]) -> str | None:
    """Run a read-only git command; None when git or the repository is absent."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


@dataclass
class CIContext:
    """Values describing this build; lazily derived from ``env`` then git."""

    env: Mapping[str, str]
    cwd: Path
    git: GitRunner = run_git

    @property
    def on_buildkite(self) -> bool:
        return self.env.get("BUILDKITE") == "true"

    @property
    def on_ci(self) -> bool:
        return self.on_buildkite or self.env.get("CI", "").lower() in ("true", "1", "yes")

    @cached_property
    def commit(self) -> str:
        return self.env.get("BUILDKITE_COMMIT") or self.git(self.cwd, ["rev-parse", "HEAD"]) or "dev"

    @cached_property
    def short_commit(self) -> str:
        return self.commit[:12] if re.fullmatch(r"[0-9a-f]{40}", self.commit) else self.commit

    @cached_property
    def branch(self) -> str:
        branch = self.env.get("BUILDKITE_BRANCH") or self.git(self.cwd, ["rev-parse", "--abbrev-ref", "HEAD"])
        return branch if branch and branch != "HEAD" else "detached"

    @cached_property
    def pipeline(self) -> str:
        slug = self.env.get("BUILDKITE_PIPELINE_SLUG")
        if slug:
            return slug
        top = self.git(self.cwd, ["rev-parse", "--show-toplevel"])
        return slugify(Path(top).name if top else self.cwd.resolve().name)

    @cached_property
    def default_branch(self) -> str:
        branch = self.env.get("BUILDKITE_PIPELINE_DEFAULT_BRANCH")
        if branch:
            return branch
        ref = self.git(self.cwd, ["symbolic-ref", "--quiet", "refs/remotes/origin/HEAD"])
        return ref.rsplit("/", 1)[-1] if ref else "main"

    @property
    def job_id(self) -> str | None:
        return self.env.get("BUILDKITE_JOB_ID")

    @property
    def pull_request(self) -> str | None:
        """The pull request number on Buildkite (``BUILDKITE_PULL_REQUEST`` is ``false`` for other builds)."""
        value = (self.env.get("BUILDKITE_PULL_REQUEST") or "").strip()
        return value if value and value.lower() != "false" else None

    @property
    def pull_request_base_branch(self) -> str | None:
        return self.env.get("BUILDKITE_PULL_REQUEST_BASE_BRANCH") or None

    def variables(self) -> Mapping[str, str]:
        """The environment for ``${VAR}`` interpolation, with the derived CI values filled in lazily."""
        return _Variables(self)


class _Variables(Mapping[str, str]):
    def __init__(self, ci: CIContext) -> None:
        self._ci = ci

    def __getitem__(self, key: str) -> str:
        if key in self._ci.env:
            return self._ci.env[key]
        derived = {
            "BUILDKITE_COMMIT": lambda: self._ci.commit,
            "BUILDKITE_BRANCH": lambda: self._ci.branch,
            "BUILDKITE_PIPELINE_SLUG": lambda: self._ci.pipeline,
            "BUILDKITE_PIPELINE_DEFAULT_BRANCH": lambda: self._ci.default_branch,
        }.get(key)
        if derived is None:
            raise KeyError(key)
        return derived()

    def __iter__(self) -> Iterator[str]:
        yield from self._ci.env
        yield from (k for k in DERIVED if k not in self._ci.env)

    def __len__(self) -> int:
        return len(set(self._ci.env) | set(DERIVED))


def slugify(value: str, limit: int = 100) -> str:
    """A string safe as (part of) an image tag: [A-Za-z0-9_.-], not starting with . or -."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip(".-") or "x"
    if len(slug) > limit:
        import hashlib

        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        slug = f"{slug[: limit - 9]}-{digest}"
    return slug
