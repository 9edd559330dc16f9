from __future__ import annotations

import pytest

from dockercache.planning.dockerfile import (
    expand,
    from_values,
    global_args,
    logical_lines,
    parse_stages,
    same_name,
    stage_graph,
    unset_base,
)


def test_stages_names_and_labels() -> None:
    text = """# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM --platform=$BUILDPLATFORM ${BASE} AS Base
RUN echo \\
  FROM not-a-stage AS nope
FROM base
from scratch as final
"""
    stages = parse_stages(text)
    assert [(s.name, s.label) for s in stages] == [("base", "base"), (None, "stage-1"), ("final", "final")]


def test_logical_lines_join_continuations_and_drop_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "\n"
        "FROM busybox AS base\n"
        "RUN apk add \\\n"
        "    # a comment inside a continued instruction is dropped\n"
        "    curl \\\n"
        "    git\n"
        "  # an indented comment\n"
        "COPY a b\n"
        "RUN echo unfinished \\\n"
    )
    assert logical_lines(text) == [
        "FROM busybox AS base",
        "RUN apk add  curl  git",
        "COPY a b",
        "RUN echo unfinished  ",
    ]


def test_parse_stages_keeps_each_base_and_what_it_copies_or_mounts_from() -> None:
    text = """FROM busybox AS Base
FROM base AS deps
RUN --mount=type=cache,target=/root/.cache --mount=type=bind,FROM=Base,source=/x,target=/y make
COPY --from=base /a /a
copy --chown=1:1 --from=Base /b /b
ADD --from=0 /c /c
RUN echo --mount=type=bind,from=ignored,target=/z
FROM deps
run --mount=type=bind,from=deps,target=/d --mount=type=secret,id=npm 'unbalanced
"""
    base, deps, last = parse_stages(text)
    assert (base.name, base.base, base.uses) == ("base", "busybox", ())
    # FROM= in a mount counts too (BuildKit reads mount keys in any case); repeated sources once, in order.
    assert (deps.name, deps.base, deps.uses) == ("deps", "base", ("base", "0"))
    assert (last.name, last.base, last.uses) == (None, "deps", ("deps",))


def test_mount_sources_are_read_from_the_flags_only() -> None:
    stages = parse_stages("FROM a AS one\nFROM b AS two\nRUN --network=none --mount=from=one,target=/x echo\n")
    assert stages[1].uses == ("one",)
    stages = parse_stages("FROM a AS one\nFROM b AS two\nRUN echo x --mount=from=one,target=/x\n")
    assert stages[1].uses == ()
    stages = parse_stages("FROM a AS one\nFROM b AS two\nRUN --mount=type=cache,target=/x,from= echo\n")
    assert stages[1].uses == ()


GRAPH_DOCKERFILE = """FROM node AS assets
FROM ruby AS base
FROM base AS deps
RUN --mount=type=bind,from=assets,target=/a true
FROM deps AS test
FROM base AS final
COPY --from=deps /gems /gems
COPY --from=node:20 /usr/local/bin/node /usr/local/bin/
COPY --from=later /x /x
FROM busybox AS later
FROM final
COPY --from=1 /y /y
"""


def test_stage_graph_follows_from_copy_and_mounts_in_dockerfile_order() -> None:
    stages = parse_stages(GRAPH_DOCKERFILE)
    assert stage_graph(stages, "assets") == ("assets",)
    assert stage_graph(stages, "deps") == ("assets", "base", "deps")
    assert stage_graph(stages, "test") == ("assets", "base", "deps", "test")
    # An image (node:20) adds nothing; a stage defined later cannot be built on.
    assert stage_graph(stages, "final") == ("assets", "base", "deps", "final")
    assert stage_graph(stages, "later") == ("later",)
    # The unnamed last stage by its label; a reference by index ("1": base).
    assert stage_graph(stages, "stage-6") == ("assets", "base", "deps", "final", "stage-6")
    assert stage_graph(stages, "nope") == ()


def test_stage_graph_matches_names_in_any_case() -> None:
    stages = parse_stages("FROM busybox AS Base\nFROM BASE AS App\nCOPY --from=BaSe /a /a\n")
    assert stage_graph(stages, "app") == ("base", "app")


def test_a_stage_never_builds_on_itself() -> None:
    stages = parse_stages("FROM busybox AS one\nFROM one AS two\nCOPY --from=two /a /a\nFROM two AS three\n")
    assert stage_graph(stages, "three") == ("one", "two", "three")


def test_a_reference_by_index_and_every_branch_of_the_graph_count() -> None:
    stages = parse_stages("FROM a AS one\nFROM b AS two\nCOPY --from=0 /x /x\n")
    assert stage_graph(stages, "two") == ("one", "two")
    # Stages reached twice (a via final and via c) do not end the walk before x is reached.
    text = (
        "FROM busybox AS x\nFROM busybox AS a\nFROM a AS c\nFROM x AS final\nCOPY --from=a /a /a\nCOPY --from=c /c /c\n"
    )
    assert stage_graph(parse_stages(text), "final") == ("x", "a", "c", "final")


def test_heredoc_lines_are_not_instructions() -> None:
    text = "FROM busybox AS base\nRUN <<EOF\necho hi\nEOF\nFROM base AS app\nCOPY <<EOT /etc/motd\nhello\nEOT\n"
    assert [(s.label, s.base) for s in parse_stages(text)] == [("base", "busybox"), ("app", "base")]


def test_an_empty_line_inside_a_continued_instruction_does_not_end_it() -> None:
    """BuildKit skips empty continuation lines: the mount after one still belongs to the RUN."""
    text = "FROM a AS one\nFROM b AS two\nRUN \\\n\n  --mount=type=bind,from=one,target=/x true\n"
    assert logical_lines(text)[-1] == "RUN  --mount=type=bind,from=one,target=/x true"
    assert parse_stages(text)[1].uses == ("one",)


def test_stage_names_that_differ_only_in_case_are_one_name_to_docker() -> None:
    stages = parse_stages("FROM busybox AS Base\nFROM busybox\nFROM busybox AS base\nFROM base AS app\n")
    twins = same_name(stages)
    assert twins is not None and [(s.index, s.spelled) for s in twins] == [(0, "Base"), (2, "base")]
    assert same_name(parse_stages("FROM a AS one\nFROM b\nFROM c\nFROM d AS two\n")) is None


def test_global_args_are_those_before_the_first_from() -> None:
    text = 'ARG A\nARG B=busybox C="x y"\n# comment\nFROM ${B} AS base\nARG D=1\n'
    assert global_args(text) == {"A": None, "B": "busybox", "C": "x y"}


def test_a_from_line_sees_build_args_then_defaults_then_the_platform() -> None:
    declared = {"REPO": "r.example", "IMAGE": "${REPO}/app", "TAG": None, "UNUSED": None}
    values = from_values(declared, {"TAG": "1.0", "OTHER": "x"})
    assert values["IMAGE"] == "r.example/app" and values["TAG"] == "1.0" and values["TARGETARCH"] == "amd64"
    assert "UNUSED" not in values and "OTHER" not in values  # a build argument no ARG declares is not seen


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${A}", ("a", ())),
        ("$A/x", ("a/x", ())),
        ("${UNSET}", ("", ("UNSET",))),
        ("${EMPTY}", ("", ("EMPTY",))),
        ("${UNSET:-d}", ("d", ())),
        ("${EMPTY:-d}", ("d", ())),
        ("${EMPTY-d}", ("", ())),
        ("${UNSET-d}", ("d", ())),
        ("${A:+alt}", ("alt", ())),
        ("${EMPTY:+alt}", ("", ())),
        ("${EMPTY+alt}", ("alt", ())),
        ("${UNSET:?needed}", ("", ("UNSET",))),
        ("${A:?needed}", ("a", ())),
        ("\\$A", ("$A", ())),
        ("${UNSET}${UNSET}", ("", ("UNSET",))),
    ],
)
def test_expand_as_the_dockerfile_frontend_does(word: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert expand(word, {"A": "a", "EMPTY": ""}) == expected


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        ("ARG B\nFROM ${B} AS x\n", {}, ("x", "B")),
        ("ARG B\nFROM ${B} AS x\n", {"B": "busybox"}, None),
        ("ARG B\nFROM ${B} AS x\n", {"B": ""}, ("x", "B")),
        ("ARG B=busybox\nFROM ${B}\n", {}, None),
        ("ARG B\nFROM ${B:-busybox}\n", {}, None),
        # Not declared before the first FROM: BuildKit leaves it empty, whatever the build arguments say.
        ("FROM ${B}\n", {"B": "busybox"}, ("stage-0", "B")),
        ("FROM busybox AS base\nARG B=busybox\nFROM ${B} AS x\n", {}, ("x", "B")),
        # A base that is still an image, or a stage, without the variable is what BuildKit accepts too.
        ("ARG SUFFIX\nFROM busybox${SUFFIX}\n", {}, None),
        ("ARG S\nFROM busybox AS base\nFROM ${S}base AS app\n", {}, None),
        ("ARG R\nFROM registry.example/${R}:1\n", {}, ("stage-0", "R")),
        ("ARG R=r.example\nARG I=${R}/app\nFROM ${I}\n", {}, None),
        ("FROM --platform=$BUILDPLATFORM busybox:${TARGETARCH}\n", {}, None),
    ],
)
def test_a_from_whose_variable_has_no_value(text: str, args: dict[str, str], expected: tuple[str, str] | None) -> None:
    found = unset_base(text, parse_stages(text), args)
    assert ((found[0].label, found[1]) if found else None) == expected


def test_syntax_problems_are_what_the_frontend_would_refuse_with_their_line() -> None:
    """`check` parses every Dockerfile: an unknown instruction, a bare FROM, an instruction before FROM."""
    from dockercache.planning.dockerfile import syntax_problems

    text = (
        "FROM busybox AS base\nRUNN echo hi\nRUN <<EOF\nnot an instruction\nEOF\nFROM\nCOPY --from=base \\\n  /a /b\n"
    )
    assert syntax_problems(text) == [
        (2, "unknown instruction 'RUNN' (did you mean RUN?)"),
        (6, "FROM without an image (FROM <image> [AS <name>])"),
    ]
    assert syntax_problems("ARG V=1\nWORKDIR /x\nFROM busybox:$V\n") == [
        (2, "WORKDIR before the first FROM (only ARG may come before it)")
    ]
    assert syntax_problems("# escape=`\nFROM busybox\nRUN echo a `\n  b\nCMD x\n") == []
    assert syntax_problems("# syntax=example.com/other-frontend\nFROM a\nBAKE it\n") == []
    assert syntax_problems("# syntax=docker/dockerfile:1\nFROM a\nBAKE it\n") == [(3, "unknown instruction 'BAKE'")]
