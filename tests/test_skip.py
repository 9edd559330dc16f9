"""dockercache.planning.skip, .dockerignore and .context: ignore files as moby/patternmatcher reads and matches
them, the context walk, the key."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from dockercache.model.skip import Unavailable
from dockercache.planning.context import context_digest, scan_context
from dockercache.planning.dockerignore import Ignore, Pattern, clean, ignore_file, read_ignore
from dockercache.planning.skip import KeyInputs, base_images, key_tag, remote_sources, syntax_image

# ------------------------------------------------------------------------------------------ reading patterns


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("node_modules\n*.log\n", ("node_modules", "*.log")),
        (
            "# a comment\n  # not a comment once trimmed? no: it starts with a space\n",
            ("# not a comment once trimmed? no: it starts with a space",),
        ),
        ("\ufeffdocs\n", ("docs",)),  # a BOM on the first line
        ("  spaced  \n\n\t\n", ("spaced",)),
        ("/root-only\n", ("root-only",)),  # a leading slash means the context's root: removed
        ("!/keep\n", ("!keep",)),
        ("! spaced-exception \n", ("!spaced-exception",)),
        ("./a/../b//c/\n", ("b/c",)),  # cleaned as Go's filepath.Clean
        ("dir/\n", ("dir",)),
        ("/\n", ("/",)),  # a lone slash stays (and matches nothing)
        ("line\r\nother\r\n", ("line", "other")),
        ("!\n", ("!",)),
    ],
)
def test_an_ignore_file_is_read_as_patternmatcher_reads_it(text: str, patterns: tuple[str, ...]) -> None:
    assert read_ignore(text) == patterns


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), ("a/./b", "a/b"), ("a/../..", ".."), ("/../a", "/a"), ("//a//b/", "/a/b"), ("a/b/..", "a")],
)
def test_paths_are_cleaned_as_go_cleans_them(path: str, cleaned: str) -> None:
    assert clean(path) == cleaned


# ------------------------------------------------------------------------------------------ matching

SINGLE = [
    # (pattern, path, excluded)
    ("*", "file.go", True),
    ("*", "dir/file", True),  # "*" matches the top-level directory, so everything in it
    ("*.go", "file.go", True),
    ("*.go", "dir/file.go", False),  # no implicit "**/" as in .gitignore
    ("docs", "docs/README.md", True),  # a directory's pattern excludes its contents
    ("docs", "sub/docs", False),
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/dir", "dir", True),
    ("**/dir", "a/dir", True),
    ("**/dir", "a/dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/file", "dir/dir/file", True),
    ("**file", "dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("abc/**", "abc", False),  # the directory itself is kept, its contents are not
    ("abc/**", "abc/def/ghi", True),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcZdef", False),  # a dot is a dot
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("a?b", "a/b", False),  # '?' and '*' never match a slash
    ("a*b", "a/b", False),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\*b", "a*b", True),  # a backslash escapes
    ("a\\*b", "axb", False),
    ("a*", "ab/c", True),
    ("a*/b", "a/c/b", False),
    ("/abs", "abs", True),  # leading slash: the context's root
    ("dir/", "dir/file", True),
]


@pytest.mark.parametrize(("pattern", "path", "excluded"), SINGLE, ids=[f"{p}~{t}" for p, t, _ in SINGLE])
def test_one_pattern_matches_as_patternmatcher_does(pattern: str, path: str, excluded: bool) -> None:
    ignore = Ignore.parse(read_ignore(pattern))
    assert ignore.excluded(path) is excluded


MULTI = [
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),  # the last matching pattern wins
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/*.whl"], "dist/x.whl", False),
    (["**", "!dist/*.whl"], "dist/x.txt", True),
    (["*", "!src"], "src/deep/file.c", False),  # an exception re-includes a directory's contents
    (["*", "!src", "src/*.o"], "src/main.o", True),
    (["a", "!a/b", "a/b/c"], "a/b/c/d", True),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), MULTI, ids=[f"{'|'.join(p)}~{t}" for p, t, _ in MULTI])
def test_exceptions_and_order_follow_patternmatcher(patterns: list[str], path: str, excluded: bool) -> None:
    assert Ignore.parse(patterns).excluded(path) is excluded


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("*", "regexp"),
        ("**", "suffix"),
        ("**/dir", "suffix"),
        ("dir/**", "prefix"),
        ("**/**", "regexp"),
        ("a", "exact"),
    ],
)
def test_patterns_compile_to_the_same_kind_of_match(pattern: str, kind: str) -> None:
    assert Pattern.compile(pattern).kind == kind


def test_a_lone_exclamation_mark_or_a_broken_class_makes_the_key_unavailable() -> None:
    with pytest.raises(Unavailable, match="illegal exclusion"):
        Ignore.parse(["!"])
    with pytest.raises(Unavailable, match="invalid pattern"):
        Ignore.parse(["a["])


# ------------------------------------------------------------------------------------------ the context


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    write(
        root,
        {
            "Dockerfile": "FROM busybox\nCOPY . /app\n",
            ".dockerignore": "*.log\nnode_modules\n/tmp\n",
            "app/main.sh": "echo hi\n",
            "app/debug.log": "top-level only: kept\n",
            "debug.log": "ignored\n",
            "node_modules/x/index.js": "ignored\n",
            "tmp/cache": "ignored\n",
            "sub/tmp/kept": "a leading slash anchors at the root\n",
        },
    )
    return root


def key_of(root: Path, **inputs: object) -> str:
    scan = scan_context(root, root / "Dockerfile")
    values: dict[str, object] = {
        "dockerfile": "d",
        "context": context_digest(scan),
        "patterns": scan.patterns,
        "args": {},
        "targets": (("final", "push"),),
        "bases": {"busybox": "sha256:1"},
    }
    values.update(inputs)
    return KeyInputs(**values).key()  # type: ignore[arg-type]


def test_the_walk_sends_what_the_ignore_file_lets_through(ctx: Path) -> None:
    scan = scan_context(ctx, ctx / "Dockerfile")
    paths = [e.path for e in scan.entries]
    assert paths == [
        ".dockerignore",
        "Dockerfile",
        "app",
        "app/debug.log",
        "app/main.sh",
        "sub",
        "sub/tmp",
        "sub/tmp/kept",
    ]
    assert scan.files == 5 and scan.bytes == sum((ctx / p).stat().st_size for p in paths if (ctx / p).is_file())
    assert scan.summary()["ignore_file"] == str(ctx / ".dockerignore")


def test_an_exception_inside_an_excluded_directory_brings_its_parents(tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM x\n", ".dockerignore": "docs\n!docs/keep/README.md\n"})
    write(tmp_path, {"docs/keep/README.md": "kept", "docs/keep/other.md": "not", "docs/index.md": "not"})
    paths = [e.path for e in scan_context(tmp_path, tmp_path / "Dockerfile").entries]
    assert paths == [".dockerignore", "Dockerfile", "docs", "docs/keep", "docs/keep/README.md"]


def test_an_excluded_directory_is_walked_only_when_exceptions_could_bring_something_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"Dockerfile": "FROM x\n", ".dockerignore": "node_modules\n", "node_modules/a/b": "x"})
    listed: list[str] = []
    scandir = os.scandir

    def recording(path: Path) -> object:
        listed.append(Path(path).relative_to(tmp_path).as_posix())
        return scandir(path)

    monkeypatch.setattr(os, "scandir", recording)
    assert [e.path for e in scan_context(tmp_path, tmp_path / "Dockerfile").entries] == [".dockerignore", "Dockerfile"]
    assert listed == ["."]
    (tmp_path / ".dockerignore").write_text("node_modules\n!node_modules/a/b\n")
    listed.clear()
    paths = [e.path for e in scan_context(tmp_path, tmp_path / "Dockerfile").entries]
    assert paths == [".dockerignore", "Dockerfile", "node_modules", "node_modules/a", "node_modules/a/b"]
    assert listed == [".", "node_modules", "node_modules/a"]


def test_the_dockerfiles_own_ignore_file_wins(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "build/app.Dockerfile": "FROM x\n",
            "build/app.Dockerfile.dockerignore": "b\n",
            ".dockerignore": "a\n",
            "a": "",
            "b": "",
        },
    )
    dockerfile = tmp_path / "build" / "app.Dockerfile"
    assert ignore_file(tmp_path, dockerfile) == tmp_path / "build" / "app.Dockerfile.dockerignore"
    paths = [e.path for e in scan_context(tmp_path, dockerfile).entries]
    assert "a" in paths and "b" not in paths
    assert ignore_file(tmp_path, tmp_path / "Dockerfile") == tmp_path / ".dockerignore"


def test_a_one_byte_change_changes_the_key(ctx: Path) -> None:
    before = key_of(ctx)
    (ctx / "app" / "main.sh").write_text("echo hI\n")
    assert key_of(ctx) != before


def test_a_new_or_removed_file_changes_the_key(ctx: Path) -> None:
    before = key_of(ctx)
    (ctx / "app" / "new.sh").write_text("")
    assert key_of(ctx) != before
    (ctx / "app" / "new.sh").unlink()
    assert key_of(ctx) == before
    (ctx / "app" / "main.sh").rename(ctx / "app" / "renamed.sh")
    assert key_of(ctx) != before


def test_a_mode_change_changes_the_key_and_a_new_mtime_does_not(ctx: Path) -> None:
    before = key_of(ctx)
    os.utime(ctx / "app" / "main.sh", (1, 1))
    assert key_of(ctx) == before
    (ctx / "app" / "main.sh").chmod(0o755)
    assert key_of(ctx) != before
    (ctx / "app" / "main.sh").chmod(0o644)
    (ctx / "app").chmod(0o700)  # a directory's mode counts too
    try:
        assert key_of(ctx) != before
    finally:
        (ctx / "app").chmod(0o755)


def test_an_ignored_file_does_not_change_the_key(ctx: Path) -> None:
    before = key_of(ctx)
    (ctx / "debug.log").write_text("changed")
    (ctx / "node_modules" / "x" / "index.js").write_text("changed")
    (ctx / "node_modules" / "y").mkdir()
    (ctx / "tmp" / "cache").write_text("changed")
    assert key_of(ctx) == before
    (ctx / "sub" / "tmp" / "kept").write_text("changed")  # not the root's tmp
    assert key_of(ctx) != before


def test_changing_the_ignore_file_changes_the_key(ctx: Path) -> None:
    before = key_of(ctx)
    (ctx / ".dockerignore").write_text("*.log\nnode_modules\n/tmp\napp/debug.log\n")
    assert key_of(ctx) != before


def test_a_symlink_counts_by_its_target_and_is_not_followed(ctx: Path) -> None:
    (ctx / "app" / "link").symlink_to("main.sh")
    before = key_of(ctx)
    (ctx / "app" / "link").unlink()
    (ctx / "app" / "link").symlink_to("other.sh")
    assert key_of(ctx) != before
    (ctx / "outside").symlink_to("/etc")  # a link to a directory is not walked
    assert "outside/passwd" not in [e.path for e in scan_context(ctx, ctx / "Dockerfile").entries]


def test_every_file_is_read_once_and_ignored_ones_never(ctx: Path) -> None:
    os.link(ctx / "app" / "main.sh", ctx / "app" / "hard.sh")
    reads: list[str] = []

    def read(path: Path) -> str:
        reads.append(path.relative_to(ctx).as_posix())
        return "x"

    scan = scan_context(ctx, ctx / "Dockerfile")
    context_digest(scan, read)
    assert sorted(reads) == [".dockerignore", "Dockerfile", "app/debug.log", "app/hard.sh", "sub/tmp/kept"]
    main = next(e for e in scan.entries if e.path == "app/main.sh")  # the same inode as app/hard.sh, seen first
    assert (main.kind, main.link) == ("hardlink", "app/hard.sh")


def test_a_file_that_cannot_be_read_makes_the_key_unavailable(ctx: Path) -> None:
    scan = scan_context(ctx, ctx / "Dockerfile")
    (ctx / "app" / "main.sh").unlink()  # gone between the walk and the read
    with pytest.raises(Unavailable, match=r"cannot read .*main\.sh"):
        context_digest(scan)


# ------------------------------------------------------------------------------------------ the key


def test_a_base_digest_change_changes_the_key(ctx: Path) -> None:
    assert key_of(ctx, bases={"busybox": "sha256:1"}) != key_of(ctx, bases={"busybox": "sha256:2"})


def test_args_targets_and_platforms_change_the_key(ctx: Path) -> None:
    before = key_of(ctx)
    assert key_of(ctx, args={"A": "1"}) != before
    assert key_of(ctx, args={"A": "1"}) != key_of(ctx, args={"A": "2"})
    assert key_of(ctx, targets=(("test", "push"),)) != before
    assert key_of(ctx, targets=(("final", "push"), ("deps", "push"))) != before
    assert key_of(ctx, platforms=("linux/arm64",)) != before
    assert key_of(ctx, platforms=("linux/amd64", "linux/arm64")) != key_of(ctx, platforms=("linux/arm64",))


def test_secrets_count_by_id_never_by_value(ctx: Path) -> None:
    npm = key_of(ctx, secrets=("id=npm,env=NPM_TOKEN",))
    assert key_of(ctx, secrets=("id=npm,src=/run/token",)) == npm
    assert key_of(ctx, secrets=("id=netrc,env=NPM_TOKEN",)) != npm
    assert key_of(ctx, ssh=("default",)) != key_of(ctx)
    assert key_of(ctx, ssh=("default=/a",)) == key_of(ctx, ssh=("default=/b",))


def test_labels_count_but_not_the_commit_or_the_time(ctx: Path) -> None:
    labels = {"org.opencontainers.image.revision": "abc", "org.opencontainers.image.created": "now", "team": "x"}
    before = key_of(ctx, labels=labels)
    changed = {**labels, "org.opencontainers.image.revision": "def", "org.opencontainers.image.created": "later"}
    assert key_of(ctx, labels=changed) == before
    assert key_of(ctx, labels={**labels, "team": "y"}) != before


def test_the_key_document_holds_no_secret_values(ctx: Path) -> None:
    scan = scan_context(ctx, ctx / "Dockerfile")
    inputs = KeyInputs("d", context_digest(scan), (), {"TOKEN": "hunter22"}, (), {}, secrets=("id=npm,env=NPM",))
    document = inputs.document()
    assert "NPM" not in str(document["secrets"])
    assert dataclasses.replace(inputs, args={"TOKEN": "other"}).key() != inputs.key()


def test_the_tag_holds_a_prefix_of_the_key() -> None:
    key = "ab" * 32
    assert key_tag(key) == "dc-" + "ab" * 16
    assert key_tag(key, "deps") == "dc-" + "ab" * 16 + "-deps"


# ------------------------------------------------------------------------------------------ base images

DOCKERFILE = """\
# syntax=docker/dockerfile:1.7
ARG BASE=busybox:stable
ARG TOOLS
FROM ${BASE} AS base
RUN true
FROM base AS deps
COPY --from=registry:5000/tools:1 /bin/x /x
RUN --mount=type=bind,from=localhost:5000/assets:2,target=/a true
FROM scratch AS final
COPY --from=deps /x /x
COPY --from=0 /x /y
FROM base AS test
COPY --from=other/image /a /b
"""


def test_base_images_are_the_from_and_copy_sources_of_the_built_stages() -> None:
    images = base_images(DOCKERFILE, {}, ["base", "deps", "final"])
    assert images == (
        "docker/dockerfile:1.7",
        "busybox:stable",
        "registry:5000/tools:1",
        "localhost:5000/assets:2",
    )
    assert base_images(DOCKERFILE, {"BASE": "alpine:3"}, ["base"])[1:] == ("alpine:3",)
    assert "other/image" in base_images(DOCKERFILE, {}, ["test"])


def test_base_images_follow_the_target_platforms() -> None:
    text = "FROM --platform=$BUILDPLATFORM tool:1 AS tool\nFROM img-${TARGETARCH}:1\n"
    assert base_images(text, {}, ["tool", "stage-1"], ["linux/amd64", "linux/arm64"]) == (
        "tool:1",
        "img-amd64:1",
        "img-arm64:1",
    )


def test_a_base_whose_variable_has_no_value_makes_the_key_unavailable() -> None:
    with pytest.raises(Unavailable, match=r"\$TOOLS"):
        base_images("ARG TOOLS\nFROM x\nCOPY --from=${TOOLS} /a /b\n", {}, ["stage-0"])


def test_the_syntax_directive_must_come_first() -> None:
    assert syntax_image("# syntax=docker/dockerfile:1\nFROM x\n") == "docker/dockerfile:1"
    assert syntax_image("# escape=`\n# syntax=a/b\nFROM x\n") == "a/b"
    assert syntax_image("FROM x\n# syntax=a/b\n") is None
    assert syntax_image("# a comment\n# syntax=a/b\n") is None


def test_add_from_a_url_without_a_checksum_cannot_be_known_in_advance() -> None:
    text = (
        "FROM x\nADD https://example.com/a.tgz /a\nADD --checksum=sha256:00 https://example.com/b /b\n"
        "ADD local /c\nADD git@github.com:o/r.git /r\n"
    )
    assert remote_sources(text) == ("https://example.com/a.tgz", "git@github.com:o/r.git")
