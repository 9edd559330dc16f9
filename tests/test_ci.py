from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from dockercache.adapters.ci import CIContext, branch_slug, slugify
from dockercache.config.load import parse_config
from dockercache.errors import ConfigError
from dockercache.reference import TAG


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
    assert asked == [["rev-parse", "HEAD"], ["status", "--porcelain"]]
    assert ci.branch == "dev"
    assert ci.default_branch == "develop"
    assert not ci.on_ci


def test_no_git_at_all() -> None:
    ci = CIContext({}, Path("/tmp/my project"), git=lambda cwd, args: None)
    assert (ci.commit, ci.branch, ci.default_branch, ci.pipeline) == ("dev", "detached", "main", "my-project")
    assert ci.notes() == [
        "/tmp/my project is not in a git repository: images are tagged 'dev' (set BUILDKITE_COMMIT to name it)"
    ]


def test_a_dirty_checkout_never_gets_the_commits_own_tag(clone: Path) -> None:
    clean = CIContext({}, clone)
    head = clean.commit
    assert re.fullmatch(r"[0-9a-f]{40}", head) and clean.notes() == [] and clean.revision == head
    (clone / "Dockerfile").write_text("FROM busybox\n")  # untracked files count: the build context sends them
    dirty = CIContext({}, clone)
    assert dirty.commit == f"{head}-dirty" and dirty.short_commit == f"{head[:12]}-dirty"
    assert dirty.variables()["BUILDKITE_COMMIT"] == f"{head}-dirty"
    assert dirty.revision is None  # no label claims the commit for an image of other content
    assert dirty.notes() == [
        f"uncommitted changes: tagged {head[:12]}-dirty, never the commit's own tag (commit them first)"
    ]
    # CI names its own commit: no git question, no note.
    on_ci = CIContext({"BUILDKITE": "true", "BUILDKITE_COMMIT": "a" * 40}, clone)
    assert on_ci.commit == "a" * 40 and on_ci.notes() == []


def test_off_ci_pipeline_is_the_origin_repositorys_name() -> None:
    for url, name in [
        ("git@github.com:acme/app.git", "app"),
        ("https://github.com/acme/app", "app"),
        ("https://github.com/acme/app.git/", "app"),
        ("ssh://git@host/acme/shop.git", "shop"),
    ]:

        def git(cwd: Path, args: list[str], url: str = url) -> str | None:
            return url if args == ["remote", "get-url", "origin"] else "/work/s3app"

        assert CIContext({}, Path("/work/s3app"), git=git).pipeline == name
    assert CIContext({"BUILDKITE_PIPELINE_SLUG": "x"}, Path("/work/s3app")).pipeline == "x"


def test_branch_names_map_one_to_one_onto_keys() -> None:
    """Names that slugify to one string (``feature/x`` and ``feature-x``, ``.`` and ``..``) keep distinct keys:
    one untrusted branch can never write another's cache."""
    names = ["main", "feature/x", "feature-x", "feature--x", ".", "..", "ünïcode", "n-code", "a/b/c", "a-b/c", "x"]
    names += ["feature-x-217d2bf5", "release/1.x", "release-1.x", "b" * 300, "b" * 299, "-x", "x-"]
    slugs = [branch_slug(n) for n in names]
    assert len(set(slugs)) == len(names), dict(zip(names, slugs, strict=True))
    assert branch_slug("main") == "main" and branch_slug("release-1.x") == "release-1.x"  # safe names unchanged
    assert branch_slug("feature/x") == "feature-x-217d2bf5"
    assert all(TAG.fullmatch(s) and len(s) <= 100 for s in slugs)


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
    """A real clone, in a folder named ``shop-app``, of a repository ``shop.git`` whose default branch is
    ``develop``; the clone has ``feature/x`` checked out."""
    origin = tmp_path / "shop.git"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "develop")
    git(origin, "commit", "-q", "--allow-empty", "-m", "first")
    git(tmp_path, "clone", "-q", str(origin), "shop-app")
    checkout = tmp_path / "shop-app"
    git(checkout, "checkout", "-q", "-b", "feature/x")
    (checkout / "services" / "web").mkdir(parents=True)
    return checkout


def test_off_ci_pipeline_slug_and_default_branch_come_from_git(clone: Path) -> None:
    """README: off CI ``${BUILDKITE_PIPELINE_SLUG}`` is the name of the repository origin points at (not the
    clone's folder name, also when run from a sub-directory) and ``${BUILDKITE_PIPELINE_DEFAULT_BRANCH}`` the
    remote's default branch, from git."""
    ci = CIContext({}, clone / "services" / "web")
    variables = ci.variables()
    assert variables["BUILDKITE_PIPELINE_SLUG"] == "shop"
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
    assert (config.service("web").image, config.service("web").tags) == ("reg/shop", ("develop",))


def test_buildkite_values_win_over_git(clone: Path) -> None:
    env = {"BUILDKITE_PIPELINE_SLUG": "shop", "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "trunk"}
    variables = CIContext(env, clone).variables()
    assert (variables["BUILDKITE_PIPELINE_SLUG"], variables["BUILDKITE_PIPELINE_DEFAULT_BRANCH"]) == ("shop", "trunk")


def test_without_a_remote_default_branch_it_is_main(clone: Path) -> None:
    git(clone, "remote", "remove", "origin")
    assert CIContext({}, clone).default_branch == "main"


def test_a_pull_request_is_known_by_buildkites_variables() -> None:
    from dockercache.adapters.ci import CIContext

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


# ------------------------------------------------------------------ GitHub Actions and GitLab CI (issue 13, item 5)

SHA = "1111111111111111111111111111111111111111"
MERGE = "2222222222222222222222222222222222222222"


def github(tmp_path: Path, event: dict[str, object] | None = None, **env: str) -> dict[str, str]:
    """A GitHub Actions job's variables (a push to feature/x unless overridden), with its event payload."""
    path = tmp_path / "event.json"
    if event is not None:
        import json

        path.write_text(json.dumps(event))
    return {
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_SHA": SHA,
        "GITHUB_REF": "refs/heads/feature/x",
        "GITHUB_REF_NAME": "feature/x",
        "GITHUB_REF_TYPE": "branch",
        "GITHUB_HEAD_REF": "",  # GitHub sets it, empty, on events other than pull requests
        "GITHUB_BASE_REF": "",
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "9001",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "build",
        "RUNNER_NAME": "runner-3",
        "GITHUB_TOKEN": "ghs_never_read",
        **env,
    }


def gitlab(**env: str) -> dict[str, str]:
    """A GitLab CI job's variables (a branch pipeline for feature/x unless overridden)."""
    return {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_REF_NAME": "feature/x",
        "CI_COMMIT_BRANCH": "feature/x",
        "CI_DEFAULT_BRANCH": "trunk",
        "CI_PROJECT_NAME": "shop",
        "CI_PROJECT_PATH": "acme/shop",
        "CI_PROJECT_URL": "https://gitlab.example.com/acme/shop",
        "CI_JOB_ID": "777",
        "CI_JOB_TOKEN": "glcbt-never-read",
        **env,
    }


def values(ci: CIContext) -> dict[str, object]:
    return {
        "provider": ci.provider,
        "commit": ci.commit,
        "branch": ci.branch,
        "default_branch": ci.default_branch,
        "pipeline": ci.pipeline,
        "pull_request": ci.pull_request,
        "base": ci.pull_request_base_branch,
        "job_id": ci.job_id,
        "source": ci.repository_url,
    }


def test_github_push_on_a_branch(tmp_path: Path) -> None:
    ci = CIContext(github(tmp_path, {"repository": {"default_branch": "trunk"}}), Path("/"), git=no_git)
    assert ci.on_ci and not ci.on_buildkite
    assert values(ci) == {
        "provider": "github",
        "commit": SHA,
        "branch": "feature/x",
        "default_branch": "trunk",  # from the event payload: GitHub has no variable for it
        "pipeline": "shop",
        "pull_request": None,
        "base": None,
        "job_id": "9001-1-build-runner-3",
        "source": "https://github.com/acme/shop",
    }
    variables = ci.variables()
    assert [variables[k] for k in ("BUILDKITE_COMMIT", "BUILDKITE_BRANCH")] == [SHA, "feature/x"]
    assert [variables[k] for k in ("BUILDKITE_PIPELINE_SLUG", "BUILDKITE_PIPELINE_DEFAULT_BRANCH")] == ["shop", "trunk"]
    assert ci.revision == SHA


def test_github_pull_request(tmp_path: Path) -> None:
    """GITHUB_REF_NAME is '42/merge' there: the branch is the head branch, the commit GITHUB_SHA (the merge
    commit actions/checkout checks out, so the one built)."""
    env = github(
        tmp_path,
        {"number": 42, "repository": {"default_branch": "main"}},
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_SHA=MERGE,
        GITHUB_REF="refs/pull/42/merge",
        GITHUB_REF_NAME="42/merge",
        GITHUB_HEAD_REF="feature/x",
        GITHUB_BASE_REF="develop",
    )
    ci = CIContext(env, Path("/"), git=no_git)
    assert (ci.commit, ci.branch, ci.default_branch) == (MERGE, "feature/x", "main")
    assert (ci.pull_request, ci.pull_request_base_branch) == ("42", "develop")
    # Without a payload the number still comes from the ref.
    assert CIContext({**env, "GITHUB_EVENT_PATH": ""}, Path("/"), git=lambda c, a: None).pull_request == "42"


def test_github_pull_request_target_is_a_pull_request_too(tmp_path: Path) -> None:
    """pull_request_target runs on the base branch's ref (refs/heads/main), with the number in the payload only:
    a fork's branch called main is still an untrusted writer."""
    env = github(
        tmp_path,
        {"number": 7, "pull_request": {"number": 7, "head": {"ref": "main"}, "base": {"ref": "main"}}},
        GITHUB_EVENT_NAME="pull_request_target",
        GITHUB_REF="refs/heads/main",
        GITHUB_REF_NAME="main",
        GITHUB_HEAD_REF="main",
        GITHUB_BASE_REF="main",
    )
    ci = CIContext(env, Path("/"), git=no_git)
    assert (ci.pull_request, ci.branch, ci.pull_request_base_branch) == ("7", "main", "main")
    # A review event: refs/pull/N/merge without GITHUB_HEAD_REF; the payload names the branches.
    review = github(
        tmp_path,
        {"pull_request": {"number": 8, "head": {"ref": "fix/y"}, "base": {"ref": "develop"}}},
        GITHUB_EVENT_NAME="pull_request_review",
        GITHUB_REF="refs/pull/8/merge",
        GITHUB_REF_NAME="8/merge",
    )
    ci = CIContext(review, Path("/"), git=no_git)
    assert (ci.pull_request, ci.branch, ci.pull_request_base_branch) == ("8", "fix/y", "develop")


def test_github_tag_is_named_by_its_tag_as_on_buildkite(tmp_path: Path) -> None:
    env = github(tmp_path, None, GITHUB_REF="refs/tags/v1.2.0", GITHUB_REF_NAME="v1.2.0", GITHUB_REF_TYPE="tag")
    ci = CIContext(env, Path("/"), git=lambda c, a: None)
    assert (ci.branch, ci.pull_request) == ("v1.2.0", None)


def test_github_without_its_variables_falls_back_to_git(tmp_path: Path) -> None:
    """Only GITHUB_ACTIONS set, no event payload on disk: git answers, as on a laptop (but it is CI)."""
    git = {
        "rev-parse HEAD": "e" * 40,
        "rev-parse --abbrev-ref HEAD": "dev",
        "rev-parse --show-toplevel": "/work/shop-app",
        "symbolic-ref --quiet refs/remotes/origin/HEAD": "refs/remotes/origin/develop",
        "remote get-url origin": "https://x-access-token:ghs_x@github.com/acme/shop-app",
    }
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(tmp_path / "missing.json")}
    ci = CIContext(env, Path("/"), git=lambda cwd, args: git.get(" ".join(args)))
    assert ci.on_ci and ci.provider == "github"
    assert values(ci) == {
        "provider": "github",
        "commit": "e" * 40,
        "branch": "dev",
        "default_branch": "develop",
        "pipeline": "shop-app",
        "pull_request": None,
        "base": None,
        "job_id": None,
        "source": "https://github.com/acme/shop-app",
    }
    (tmp_path / "broken.json").write_text("{not json")
    broken = CIContext({**env, "GITHUB_EVENT_PATH": str(tmp_path / "broken.json")}, Path("/"), git=lambda c, a: None)
    assert broken.default_branch == "main"


def test_gitlab_branch_pipeline() -> None:
    ci = CIContext(gitlab(), Path("/"), git=no_git)
    assert ci.on_ci
    assert values(ci) == {
        "provider": "gitlab",
        "commit": SHA,
        "branch": "feature/x",
        "default_branch": "trunk",
        "pipeline": "shop",
        "pull_request": None,
        "base": None,
        "job_id": "777",
        "source": "https://gitlab.example.com/acme/shop",
    }
    assert ci.variables()["BUILDKITE_PIPELINE_DEFAULT_BRANCH"] == "trunk"


def test_gitlab_merge_request_pipeline() -> None:
    """No CI_COMMIT_BRANCH in a merge request pipeline: the source branch names it; the MR is untrusted."""
    env = gitlab(
        CI_COMMIT_BRANCH="",
        CI_COMMIT_REF_NAME="feature/x",
        CI_MERGE_REQUEST_IID="5",
        CI_MERGE_REQUEST_SOURCE_BRANCH_NAME="feature/x",
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="release/1.x",
    )
    del env["CI_COMMIT_BRANCH"]
    ci = CIContext(env, Path("/"), git=no_git)
    assert (ci.branch, ci.pull_request, ci.pull_request_base_branch) == ("feature/x", "5", "release/1.x")


def test_gitlab_tag_pipeline() -> None:
    env = gitlab(CI_COMMIT_TAG="v2.0", CI_COMMIT_REF_NAME="v2.0")
    del env["CI_COMMIT_BRANCH"]
    assert CIContext(env, Path("/"), git=no_git).branch == "v2.0"


def test_gitlab_without_its_variables_falls_back_to_git() -> None:
    ci = CIContext({"GITLAB_CI": "true"}, Path("/tmp/my project"), git=lambda cwd, args: None)
    assert ci.on_ci and ci.provider == "gitlab"
    assert (ci.commit, ci.branch, ci.default_branch, ci.pipeline) == ("dev", "detached", "main", "my-project")
    assert (ci.pull_request, ci.job_id, ci.repository_url) == (None, None, None)


def test_precedence_buildkite_then_github_then_gitlab_then_git(tmp_path: Path) -> None:
    buildkite = {
        "BUILDKITE": "true",
        "BUILDKITE_COMMIT": FULL,
        "BUILDKITE_BRANCH": "bk-branch",
        "BUILDKITE_PIPELINE_SLUG": "bk-pipeline",
        "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "bk-main",
        "BUILDKITE_PULL_REQUEST": "false",
        "BUILDKITE_JOB_ID": "bk-job",
        "BUILDKITE_REPO": "git@github.com:acme/bk.git",
    }
    gh = github(
        tmp_path,
        {"number": 42, "repository": {"default_branch": "gh-main"}},
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_REF="refs/pull/42/merge",
        GITHUB_HEAD_REF="gh-branch",
        GITHUB_BASE_REF="gh-base",
    )
    gl = gitlab(CI_MERGE_REQUEST_IID="5", CI_MERGE_REQUEST_TARGET_BRANCH_NAME="gl-base")
    everything = CIContext({**gl, **gh, **buildkite}, Path("/"), git=no_git)
    assert values(everything) == {
        "provider": "buildkite",
        "commit": FULL,
        "branch": "bk-branch",
        "default_branch": "bk-main",
        "pipeline": "bk-pipeline",
        "pull_request": None,  # Buildkite says this build is no pull request; GitHub's is not asked
        "base": None,
        "job_id": "bk-job",
        "source": "https://github.com/acme/bk",
    }
    both = CIContext({**gl, **gh}, Path("/"), git=no_git)
    assert values(both) == {
        "provider": "github",
        "commit": SHA,
        "branch": "gh-branch",
        "default_branch": "gh-main",
        "pipeline": "shop",
        "pull_request": "42",
        "base": "gh-base",
        "job_id": "9001-1-build-runner-3",
        "source": "https://github.com/acme/shop",
    }
    # A BUILDKITE_* variable set by hand wins anywhere: it is what ${BUILDKITE_BRANCH} interpolates to as well.
    pinned = CIContext({**gh, "BUILDKITE_BRANCH": "pinned"}, Path("/"), git=no_git)
    assert (pinned.branch, pinned.variables()["BUILDKITE_BRANCH"], pinned.commit) == ("pinned", "pinned", SHA)
    # Another CI's variables left in a laptop's shell are not read without GITHUB_ACTIONS / GITLAB_CI = true.
    leftovers = {k: v for k, v in {**gl, **gh}.items() if k not in ("GITHUB_ACTIONS", "GITLAB_CI", "CI")}
    laptop = CIContext(leftovers, Path("/tmp/my project"), git=lambda cwd, args: None)
    assert (laptop.provider, laptop.on_ci, laptop.commit, laptop.branch, laptop.pull_request) == (
        None,
        False,
        "dev",
        "detached",
        None,
    )


def test_a_github_pull_request_plans_as_an_untrusted_writer_and_settings_default_branch_wins(tmp_path: Path) -> None:
    """End to end in process (no Docker): a fork's branch called main, on GitHub, writes pr-N refs only and
    reads its base branch's; settings.default_branch still beats the payload's."""
    import io

    from dockercache import commands
    from dockercache.model import BuildOptions, Plan
    from dockercache.output.console import Console

    project = tmp_path / "shop"
    project.mkdir()
    (project / "Dockerfile").write_text("FROM busybox AS final\n")
    toml = '{settings}[caches.default]\ntype = "registry"\nref = "reg:5000/cache/{{service}}"\n\n[services.app]\n'
    (project / "dockercache.toml").write_text(toml.format(settings=""))
    event = {"number": 42, "repository": {"default_branch": "main"}}
    pr = github(
        tmp_path,
        event,
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_SHA=MERGE,
        GITHUB_REF="refs/pull/42/merge",
        GITHUB_HEAD_REF="main",
        GITHUB_BASE_REF="develop",
    )

    def plan(env: dict[str, str]) -> Plan:
        environment = commands.Environment(env=env, cwd=project, console=Console(io.StringIO(), io.StringIO()))
        config, ci = commands.load(environment, None)
        return commands.plan_for(environment, config, ci, BuildOptions())

    final = plan(pr).targets[-1]
    assert final.cache_to is not None and final.cache_to.location == "reg:5000/cache/app:final-pr-42"
    assert [s.location for s in final.cache_from][:3] == [
        "reg:5000/cache/app:final-pr-42",
        "reg:5000/cache/app:final-main",  # its head branch's (here a fork's branch called main: ours, read only)
        "reg:5000/cache/app:final-develop",
    ]
    push = plan(github(tmp_path, event, GITHUB_REF="refs/heads/main", GITHUB_REF_NAME="main"))
    assert push.default_branch == "main" and push.cache_write
    assert push.targets[-1].cache_to is not None and push.targets[-1].cache_to.location.endswith(":final-main")
    (project / "dockercache.toml").write_text(toml.format(settings='[settings]\ndefault_branch = "trunk"\n\n'))
    trunk = plan(github(tmp_path, event, GITHUB_REF="refs/heads/main", GITHUB_REF_NAME="main")).targets[-1]
    assert trunk.cache_to is not None and trunk.cache_to.location.endswith(":final-main")
    assert [s.location for s in trunk.cache_from][:2] == [
        "reg:5000/cache/app:final-main",
        "reg:5000/cache/app:final-trunk",
    ]
