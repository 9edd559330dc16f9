"""Where the build runs: commit, branch, pipeline and default branch.

Each value comes from the first source that names it: a ``BUILDKITE_*`` variable (set by Buildkite, or by hand
anywhere: it is also what ``${BUILDKITE_...}`` interpolates to, so the config and the cache keys agree), then
GitHub Actions' variables (``GITHUB_ACTIONS=true``) or GitLab CI's (``GITLAB_CI=true``), then git on a laptop;
one dockercache.toml serves them all. Git is only asked when a value is actually needed (``plan`` on a big
repository stays fast).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

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
    def provider(self) -> Literal["buildkite", "github", "gitlab"] | None:
        """The CI service running this build, by precedence when several claim it; None on a laptop."""
        if self.on_buildkite:
            return "buildkite"
        if self.env.get("GITHUB_ACTIONS") == "true":
            return "github"
        if self.env.get("GITLAB_CI") == "true":
            return "gitlab"
        return None

    @property
    def on_ci(self) -> bool:
        return self.provider is not None or self.env.get("CI", "").lower() in ("true", "1", "yes")

    def _github(self, name: str) -> str | None:
        return (self.env.get(name) or None) if self.provider == "github" else None

    def _gitlab(self, name: str) -> str | None:
        return (self.env.get(name) or None) if self.provider == "gitlab" else None

    @cached_property
    def _github_event(self) -> Mapping[str, Any]:
        """The webhook payload GitHub leaves at $GITHUB_EVENT_PATH ({} when absent or unreadable): the only
        place naming the repository's default branch. It holds no token."""
        path = self._github("GITHUB_EVENT_PATH")
        try:
            event = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
        except (OSError, ValueError):
            return {}
        return event if isinstance(event, dict) else {}

    def _github_event_value(self, *keys: str) -> str | None:
        value: Any = self._github_event
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None

    @cached_property
    def _github_pull_request(self) -> str | None:
        """The pull request number of a GitHub run for one (``pull_request``, ``pull_request_target``, reviews)."""
        if self.provider != "github":
            return None
        match = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", self.env.get("GITHUB_REF", ""))
        if match:
            return match.group(1)
        # pull_request_target runs on the base branch's ref: the number is in the payload only.
        is_pr = self._github("GITHUB_HEAD_REF") or self.env.get("GITHUB_EVENT_NAME", "").startswith("pull_request")
        if not is_pr:
            return None
        # Without a number it still is a pull request (an untrusted writer): name it by its branch.
        return (
            self._github_event_value("number")
            or self._github_event_value("pull_request", "number")
            or self._github("GITHUB_HEAD_REF")
            or "unknown"
        )

    def _github_branch(self) -> str | None:
        if self.provider != "github":
            return None
        if self._github_pull_request:
            # GITHUB_REF_NAME is "N/merge" there: the branch is the pull request's own (head) branch.
            return self._github("GITHUB_HEAD_REF") or self._github_event_value("pull_request", "head", "ref")
        ref = self.env.get("GITHUB_REF", "")
        for prefix in ("refs/heads/", "refs/tags/"):  # a tag's build is named by its tag, as on Buildkite
            if ref.startswith(prefix) and ref != prefix:
                return ref.removeprefix(prefix)
        return None if ref.startswith("refs/") else self._github("GITHUB_REF_NAME")

    @cached_property
    def commit(self) -> str:
        """The CI's commit; else git's HEAD, with ``-dirty`` when the checkout has changes git would show (an
        image of uncommitted work never goes out under the commit's own tag); else ``dev``."""
        # On a GitHub pull request GITHUB_SHA is the merge commit actions/checkout checks out (and so is built).
        named = self.env.get("BUILDKITE_COMMIT") or self._github("GITHUB_SHA") or self._gitlab("CI_COMMIT_SHA")
        if named:
            return named
        head = self.git(self.cwd, ["rev-parse", "HEAD"])
        if head is None:
            return "dev"
        return f"{head}-dirty" if self.git(self.cwd, ["status", "--porcelain"]) else head

    @cached_property
    def short_commit(self) -> str:
        match = re.fullmatch(r"([0-9a-f]{40})(-dirty)?", self.commit)
        return match.group(1)[:12] + (match.group(2) or "") if match else self.commit

    def notes(self) -> list[str]:
        """What a person building off CI should know about the names this context gives their build."""
        if self.provider is not None or self.env.get("BUILDKITE_COMMIT"):
            return []
        if self.commit == "dev":
            return [f"{self.cwd} is not in a git repository: images are tagged 'dev' (set BUILDKITE_COMMIT to name it)"]
        if self.commit.endswith("-dirty"):
            return [f"uncommitted changes: tagged {self.short_commit}, never the commit's own tag (commit them first)"]
        return []

    @cached_property
    def branch(self) -> str:
        branch = (
            self.env.get("BUILDKITE_BRANCH")
            or self._github_branch()
            or self._gitlab("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME")
            or self._gitlab("CI_COMMIT_BRANCH")
            or self._gitlab("CI_COMMIT_REF_NAME")  # a tag pipeline: the tag's name
            or self.git(self.cwd, ["rev-parse", "--abbrev-ref", "HEAD"])
        )
        return branch if branch and branch != "HEAD" else "detached"

    @cached_property
    def pipeline(self) -> str:
        repository = self._github("GITHUB_REPOSITORY")
        slug = (
            self.env.get("BUILDKITE_PIPELINE_SLUG")
            or (repository.rsplit("/", 1)[-1] if repository else None)
            or self._gitlab("CI_PROJECT_NAME")
        )
        if slug:
            return slug
        # Off CI: the repository's name from its origin remote (what a CI pipeline is usually named after, and
        # the same in every clone whatever its folder is called), else the checkout's folder name.
        origin = self.git(self.cwd, ["remote", "get-url", "origin"])
        name = re.sub(r"\.git$", "", origin.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]) if origin else ""
        if name:
            return slugify(name)
        top = self.git(self.cwd, ["rev-parse", "--show-toplevel"])
        return slugify(Path(top).name if top else self.cwd.resolve().name)

    @cached_property
    def default_branch(self) -> str:
        branch = (
            self.env.get("BUILDKITE_PIPELINE_DEFAULT_BRANCH")
            or self._github_event_value("repository", "default_branch")
            or self._gitlab("CI_DEFAULT_BRANCH")
        )
        if branch:
            return branch
        ref = self.git(self.cwd, ["symbolic-ref", "--quiet", "refs/remotes/origin/HEAD"])
        return ref.rsplit("/", 1)[-1] if ref else "main"

    @property
    def job_id(self) -> str | None:
        """Unique among the jobs running at once (an ephemeral builder's name). GitHub has no job id: its run,
        attempt, job and runner (a runner runs one job at a time) together are one."""
        github = [self._github(k) for k in ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "RUNNER_NAME")]
        return (
            self.env.get("BUILDKITE_JOB_ID")
            or ("-".join(p for p in github if p) if github[0] else None)
            or self._gitlab("CI_JOB_ID")
        )

    @property
    def pull_request(self) -> str | None:
        """The pull request (merge request) number, or None: Buildkite's ``BUILDKITE_PULL_REQUEST`` (``false`` for
        other builds), GitHub's ``refs/pull/N/merge``, GitLab's ``CI_MERGE_REQUEST_IID``."""
        value = (self.env.get("BUILDKITE_PULL_REQUEST") or "").strip()
        if value and value.lower() != "false":
            return value
        return self._github_pull_request or self._gitlab("CI_MERGE_REQUEST_IID")

    @property
    def pull_request_base_branch(self) -> str | None:
        """The branch a pull request merges into (whose caches it reads)."""
        return (
            self.env.get("BUILDKITE_PULL_REQUEST_BASE_BRANCH")
            or self._github("GITHUB_BASE_REF")
            or (self._github_event_value("pull_request", "base", "ref") if self._github_pull_request else None)
            or self._gitlab("CI_MERGE_REQUEST_TARGET_BRANCH_NAME")
        )

    @cached_property
    def revision(self) -> str | None:
        """The full commit (a label's revision), or None when neither Buildkite nor git names one."""
        if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", self.commit):
            return self.commit
        # Buildkite sets BUILDKITE_COMMIT=HEAD for a build of a branch's tip: the checkout knows which commit.
        resolved = self.git(self.cwd, ["rev-parse", "--verify", "--quiet", f"{self.commit}^{{commit}}"])
        return resolved if resolved and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", resolved) else None

    @cached_property
    def repository_url(self) -> str | None:
        """Where the source lives, as a URL safe to publish (see :func:`public_url`): $BUILDKITE_REPO, GitHub's
        $GITHUB_SERVER_URL/$GITHUB_REPOSITORY, GitLab's $CI_PROJECT_URL, else git's origin."""
        server, repository = self._github("GITHUB_SERVER_URL"), self._github("GITHUB_REPOSITORY")
        url = (
            self.env.get("BUILDKITE_REPO")
            or (f"{server.rstrip('/')}/{repository}" if server and repository else None)
            or self._gitlab("CI_PROJECT_URL")
            or self.git(self.cwd, ["remote", "get-url", "origin"])
        )
        return public_url(url) if url else None

    @cached_property
    def created(self) -> str | None:
        """The image's creation time, RFC 3339 in UTC: $SOURCE_DATE_EPOCH, else the commit's committer date.
        Never the build's own clock: a rebuild of the same commit then makes the same image config (and digest)."""
        epoch = self.env.get("SOURCE_DATE_EPOCH", "").strip()
        if epoch:
            if not epoch.isdigit():
                raise ConfigError(f"$SOURCE_DATE_EPOCH: {epoch!r} is not a number of seconds since 1970")
            moment = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
        else:
            text = self.git(self.cwd, ["show", "-s", "--format=%cI", self.revision]) if self.revision else None
            try:
                moment = datetime.fromisoformat(text or "")
            except ValueError:
                return None
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def oci_labels(self) -> dict[str, str]:
        """The OCI annotations every pushed image gets by default (those that can be known)."""
        values = {"revision": self.revision, "source": self.repository_url, "created": self.created}
        return {f"org.opencontainers.image.{k}": v for k, v in values.items() if v}

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


def branch_slug(name: str, limit: int = 100) -> str:
    """A branch's name in refs, tags and keys, one-to-one: the name itself when it is safe there, else its slug
    and the first 8 hex digits of the name's sha256 (``feature/x`` -> ``feature-x-5b3e1c2a``), so two branches
    never share a cache (``feature/x`` and ``feature-x``, ``.`` and ``..``, ``ünïcode`` and ``n-code``). A safe
    name that already ends like such a suffix gets one of its own too, so no name can pass for another's slug."""
    if len(name) <= limit and _SAFE_BRANCH.fullmatch(name) and not _HASH_SUFFIX.search(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")[: limit - 9].rstrip(".-")
    return f"{slug}-{digest}" if slug else f"x-{digest}"


_SAFE_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


def slugify(value: str, limit: int = 100) -> str:
    """A string safe as (part of) an image tag: [A-Za-z0-9_.-], not starting with . or -."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip(".-") or "x"
    if len(slug) > limit:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        slug = f"{slug[: limit - 9]}-{digest}"
    return slug


_SCP_LIKE = re.compile(r"(?:[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!/).*)")


def public_url(url: str) -> str | None:
    """A repository URL fit for a label: ``https://user:token@host/x.git`` -> ``https://host/x``; SSH forms
    (``git@host:org/x.git``, ``ssh://git@host/org/x``) -> ``https://host/org/x``, the form registries link to a
    repository (GHCR, Docker Hub) and browsers open. User names, passwords, queries and fragments never pass:
    CI systems put tokens there. None when the value is no URL at all (a local path)."""
    url = url.strip()
    if "://" not in url:
        match = _SCP_LIKE.fullmatch(url)
        if not match or "/" in match.group("host"):
            return None
        scheme, host, path = "https", match.group("host"), "/" + match.group("path")
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh") or not parts.hostname:
            return None
        scheme = "http" if parts.scheme == "http" else "https"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.port is not None and parts.scheme in ("http", "https"):  # an SSH port is no web server's
            host = f"{host}:{parts.port}"
        path = parts.path
    path = path.rstrip("/").removesuffix(".git")
    return str(urlunsplit((scheme, host, path, "", "")))
