from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from dockercache.ci import CIContext, slugify
from dockercache.errors import ConfigError
from dockercache.loader import parse_config


def no_git(cwd: Path, args: list[str]) -> str | None:
    raise AssertionError("git must not be asked when Buildkite sets the value")


def test_buildkite_values_win() -> None:
    env = {
        "BUILDKITE": "true",
        "BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "BUILDKITE_BRANCH": "feature/x",
        "BUILDKITE_PIPELINE_SLUG": "shop",
        "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "trunk",
    }
    ci = CIContext(env, Path("/"), git=no_git)
    assert ci.on_buildkite and ci.on_ci
    assert ci.short_commit == "0123456789ab"
    assert (ci.branch, ci.pipeline, ci.default_branch) == ("feature/x", "shop", "trunk")
    assert ci.variables()["BUILDKITE_BRANCH"] == "feature/x"


def test_git_fallback_is_lazy() -> None:
    asked: list[list[str]] = []

    def git(cwd: Path, args: list[str]) -> str | None:
        asked.append(args)
        return {
            "rev-parse HEAD": "f" * 40,
            "rev-parse --abbrev-ref HEAD": "dev",
            "symbolic-ref --quiet refs/remotes/origin/HEAD": "refs/remotes/origin/develop",
        }.get(" ".join(args))

    ci = CIContext({}, Path("/repo"), git=git)
    variables = ci.variables()
    assert "HOME" not in variables
    assert asked == []
    assert variables["BUILDKITE_COMMIT"] == "f" * 40
    assert asked == [["rev-parse", "HEAD"]]
    assert ci.branch == "dev"
    assert ci.default_branch == "develop"
    assert not ci.on_ci


def test_no_git_at_all() -> None:
    ci = CIContext({}, Path("/tmp/my project"), git=lambda cwd, args: None)
    assert (ci.commit, ci.branch, ci.default_branch, ci.pipeline) == ("dev", "detached", "main", "my-project")


def test_slugify() -> None:
    assert slugify("feature/ABC_1.2") == "feature-ABC_1.2"
    assert slugify("--x--") == "x"
    long = slugify("b" * 300, 40)
    assert len(long) == 40 and long != slugify("b" * 299, 40)


def git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=30)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A real clone, in a folder named ``shop-app``, of a repository whose default branch is ``develop``; the
    clone has ``feature/x`` checked out."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "develop")
    git(origin, "commit", "-q", "--allow-empty", "-m", "first")
    git(tmp_path, "clone", "-q", str(origin), "shop-app")
    checkout = tmp_path / "shop-app"
    git(checkout, "checkout", "-q", "-b", "feature/x")
    (checkout / "services" / "web").mkdir(parents=True)
    return checkout


def test_off_ci_pipeline_slug_and_default_branch_come_from_git(clone: Path) -> None:
    """README: off CI ``${BUILDKITE_PIPELINE_SLUG}`` is the repository's folder name (also when run from a
    sub-directory) and ``${BUILDKITE_PIPELINE_DEFAULT_BRANCH}`` the remote's default branch, from git."""
    ci = CIContext({}, clone / "services" / "web")
    variables = ci.variables()
    assert variables["BUILDKITE_PIPELINE_SLUG"] == "shop-app"
    assert variables["BUILDKITE_PIPELINE_DEFAULT_BRANCH"] == "develop"
    assert variables["BUILDKITE_BRANCH"] == "feature/x"
    assert re.fullmatch(r"[0-9a-f]{40}", variables["BUILDKITE_COMMIT"])
    assert not ci.on_ci
    config = parse_config(
        {
            "services": {
                "web": {"image": "reg/${BUILDKITE_PIPELINE_SLUG}", "tags": ["${BUILDKITE_PIPELINE_DEFAULT_BRANCH}"]}
            }
        },
        variables,
        clone / "dockercache.toml",
    )
    assert (config.service("web").image, config.service("web").tags) == ("reg/shop-app", ("develop",))


def test_buildkite_values_win_over_git(clone: Path) -> None:
    env = {"BUILDKITE_PIPELINE_SLUG": "shop", "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "trunk"}
    variables = CIContext(env, clone).variables()
    assert (variables["BUILDKITE_PIPELINE_SLUG"], variables["BUILDKITE_PIPELINE_DEFAULT_BRANCH"]) == ("shop", "trunk")


def test_without_a_remote_default_branch_it_is_main(clone: Path) -> None:
    git(clone, "remote", "remove", "origin")
    assert CIContext({}, clone).default_branch == "main"


def test_a_pull_request_is_known_by_buildkites_variables() -> None:
    from dockercache.ci import CIContext

    def ctx(**env: str) -> CIContext:
        return CIContext(env=env, cwd=Path("."), git=lambda cwd, args: None)

    assert ctx(BUILDKITE_PULL_REQUEST="123").pull_request == "123"
    assert ctx(BUILDKITE_PULL_REQUEST="false").pull_request is None
    assert ctx().pull_request is None
    assert ctx(BUILDKITE_PULL_REQUEST_BASE_BRANCH="develop").pull_request_base_branch == "develop"
    assert ctx(BUILDKITE_PULL_REQUEST_BASE_BRANCH="").pull_request_base_branch is None


# ------------------------------------------------------------------ OCI labels (issue 12, item 5)

FULL = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://user:token@github.com/acme/shop.git", "https://github.com/acme/shop"),
        ("https://x-access-token:ghs_secret@github.com/acme/shop", "https://github.com/acme/shop"),
        ("git@github.com:acme/shop.git", "https://github.com/acme/shop"),
        ("ssh://git@git.example.com:7999/acme/shop.git", "https://git.example.com/acme/shop"),
        ("http://gitea.local:3000/acme/shop/", "http://gitea.local:3000/acme/shop"),
        ("https://github.com/acme/shop?token=abc#frag", "https://github.com/acme/shop"),
        ("/srv/git/shop.git", None),
        ("file:///srv/git/shop.git", None),
    ],
)
def test_repository_url_never_carries_credentials(url: str, public: str | None) -> None:
    ci = CIContext({"BUILDKITE_REPO": url}, Path("/"), git=no_git)
    assert ci.repository_url == public
    assert "token" not in str(ci.repository_url) and "secret" not in str(ci.repository_url)


def test_labels_from_buildkite_and_the_commits_own_time() -> None:
    asked: list[list[str]] = []

    def git(cwd: Path, args: list[str]) -> str | None:
        asked.append(args)
        return "2026-11-02T10:20:30+01:00" if args == ["show", "-s", "--format=%cI", FULL] else None

    env = {"BUILDKITE_COMMIT": FULL, "BUILDKITE_REPO": "https://bk:tok@github.com/acme/shop.git"}
    labels = CIContext(env, Path("/"), git=git).oci_labels()
    assert labels == {
        "org.opencontainers.image.revision": FULL,
        "org.opencontainers.image.source": "https://github.com/acme/shop",
        "org.opencontainers.image.created": "2026-11-02T09:20:30Z",  # the commit's time, in UTC
    }
    assert asked == [["show", "-s", "--format=%cI", FULL]]


def test_source_date_epoch_wins_and_a_laptop_uses_git() -> None:
    def git(cwd: Path, args: list[str]) -> str | None:
        return {
            "rev-parse HEAD": "e" * 40,
            "remote get-url origin": "git@github.com:acme/shop.git",
        }.get(" ".join(args))

    ci = CIContext({"SOURCE_DATE_EPOCH": "1700000000"}, Path("/"), git=git)
    assert ci.oci_labels() == {
        "org.opencontainers.image.revision": "e" * 40,
        "org.opencontainers.image.source": "https://github.com/acme/shop",
        "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
    }
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        _ = CIContext({"SOURCE_DATE_EPOCH": "yesterday"}, Path("/"), git=git).created


def test_without_git_no_label_is_guessed() -> None:
    """No build clock for .created: it would change the image digest on every rebuild of the same commit."""
    ci = CIContext({}, Path("/"), git=lambda cwd, args: None)
    assert ci.commit == "dev" and ci.oci_labels() == {}
    # BUILDKITE_COMMIT=HEAD (a build of a branch's tip): the checkout says which commit it is.
    head = CIContext({"BUILDKITE_COMMIT": "HEAD"}, Path("/"), git=lambda cwd, args: "a" * 40)
    assert head.revision == "a" * 40


def test_labels_in_a_real_repository(tmp_path: Path) -> None:
    env = {**os.environ, "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z", "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z"}
    for args in (
        ["init", "-q"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
        ["remote", "add", "origin", "https://ci:hunter2@git.example.com/acme/shop.git"],
    ):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)
    labels = CIContext({}, tmp_path).oci_labels()
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/acme/shop"
    assert labels["org.opencontainers.image.created"] == "2026-01-02T03:04:05Z"
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
