from __future__ import annotations

from pathlib import Path

from dockercache.ci import CIContext, slugify


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
