"""Why a cache missed (issue 29): the record kept beside a cache, made from a working tree, and the cause of a
miss named from the record and the working tree, for every kind of cause; where each store keeps the record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dockercache.adapters.oci import Manifest
from dockercache.model import CacheEntry, TargetCaches
from dockercache.model.record import Record, cause, from_another_branch, would_run
from dockercache.output.misses import CAUSE_KINDS, Cause, Miss, files_phrase
from dockercache.output.progress import BuildEvents
from dockercache.output.report import render_markdown, render_table
from dockercache.output.results import RunResult, ServiceResult, StageResult
from dockercache.output.tally import Tally, TargetInfo
from dockercache.planning.steps import record_of, working_tree
from dockercache.run.records import Found, find
from dockercache.stores.records import ANNOTATION, RecordStore, Unreadable, record_ref

DOCKERFILE = """\
ARG BASE_IMAGE=localhost:5000/dockercache/busybox:stable
FROM ${BASE_IMAGE} AS base
ARG SCALE=4
RUN mkdir -p /opt && echo $SCALE > /opt/scale
WORKDIR /app

FROM base AS deps
COPY Gemfile Gemfile.lock ./
RUN cat Gemfile.lock

FROM deps AS final
ENV MODE=production
COPY lib/ /app/lib/
COPY app/ /app/app/
RUN sh /app/app/selftest.sh
CMD ["sh"]
"""
GRAPH = ("base", "deps", "final")


def project(tmp_path: Path, dockerfile: str = DOCKERFILE) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "Gemfile").write_text("gem 'rack'\n")
    (tmp_path / "Gemfile.lock").write_text("rack 3.0\n")
    for folder, names in (("lib", ["greeting.sh"]), ("app", ["main.rb", "selftest.sh"])):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name in names:
            (tmp_path / folder / name).write_text(f"{name}\n")
    (tmp_path / ".dockerignore").write_text("app/*.log\n")
    return tmp_path


def record(root: Path, salt: str = "s4lt", args: dict[str, str] | None = None) -> Record:
    text, files = working_tree(root, root / "Dockerfile")
    return record_of(text, args or {}, GRAPH, files, salt)


def never_ran(stage: str) -> Sequence[tuple[int, str]]:
    return ()


# ------------------------------------------------------------------------------------------ the record


def test_steps_are_numbered_as_buildkit_numbers_them(tmp_path: Path) -> None:
    """FROM of an image is step 1; ADD, COPY, RUN and WORKDIR count; ENV, ARG, CMD do not (they go before the next
    step); a stage built on another stage starts at 1 with its first instruction."""
    r = record(project(tmp_path))
    assert [(s.n, s.instruction.split()[0]) for s in r.stages["base"].steps] == [
        (1, "FROM"),
        (2, "RUN"),
        (3, "WORKDIR"),
    ]
    assert [s.n for s in r.stages["deps"].steps] == [1, 2]
    final = r.stages["final"]
    assert (final.steps[0].n, final.steps[0].instruction) == (1, "COPY lib/ /app/lib/")
    assert final.steps[0].before == ("ENV MODE=production",) and final.parent == "deps"
    assert sorted(final.steps[1].files or {}) == ["app", "app/main.rb", "app/selftest.sh"]


def test_a_record_keeps_no_build_arg_value_and_decodes_to_itself(tmp_path: Path) -> None:
    r = record(project(tmp_path), args={"SCALE": "hunter2-secret"})
    data = r.encode()
    assert b"hunter2" not in data and "hunter2" not in json.dumps(r.to_json())
    assert Record.decode(data) == r and Record.from_text(r.text()) == r
    assert (
        r.stages["base"].steps[1].args["SCALE"]
        != record(tmp_path, salt="other", args={"SCALE": "hunter2-secret"}).stages["base"].steps[1].args["SCALE"]
    )
    with pytest.raises(ValueError):
        Record.decode(b"not gzip")


def test_the_ignore_file_keeps_ignored_files_out_of_a_step(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "app" / "debug.log").write_text("noise")
    assert "app/debug.log" not in (record(root).stages["final"].steps[1].files or {})


# ------------------------------------------------------------------------------------------ every cause


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    root = project(tmp_path)
    then = record(root)
    (root / "app" / "main.rb").write_text("changed\n")
    found = cause("final", 2, record(root), then, never_ran)
    assert found == Cause("files", "`app/main.rb` changed", ("app/main.rb",))


def test_files_added_and_removed_are_named_then_counted(tmp_path: Path) -> None:
    root = project(tmp_path)
    then = record(root)
    (root / "app" / "main.rb").write_text("changed\n")
    for n in range(4):
        (root / "app" / f"new{n}.rb").write_text("x")
    (root / "app" / "selftest.sh").unlink()
    found = cause("final", 2, record(root), then, never_ran)
    assert found.kind == "files"
    assert found.text == "`app/main.rb` changed, `app/new0.rb` added, `app/new1.rb` added (and 3 more files)"
    assert found.paths[-1] == "app/selftest.sh" and len(found.paths) == 6


def test_a_lockfile_change_names_the_lockfile_and_the_stages_built_on_it(tmp_path: Path) -> None:
    """deps misses at its COPY (the lockfile); final's first step misses because deps ran: it says so, and why."""
    root = project(tmp_path)
    then = record(root)
    (root / "Gemfile.lock").write_text("rack 3.1\n")
    now = record(root)
    assert cause("deps", 1, now, then, never_ran) == Cause("files", "`Gemfile.lock` changed", ("Gemfile.lock",))
    ran = {"deps": [(1, "COPY Gemfile Gemfile.lock ./"), (2, "RUN cat Gemfile.lock")]}
    found = cause("final", 1, now, then, lambda s: ran.get(s, ()))
    assert found.kind == "earlier" and found.paths == ("Gemfile.lock",)
    assert found.text == "builds on `deps`, which ran (`COPY Gemfile Gemfile.lock ./`: `Gemfile.lock` changed)"


def test_a_build_arg_is_named_never_its_value(tmp_path: Path) -> None:
    root = project(tmp_path)
    then = record(root, args={"SCALE": "4"})
    now = record(root, salt=then.salt, args={"SCALE": "8"})
    found = cause("base", 2, now, then, never_ran)
    assert found == Cause("arg", "build arg `SCALE` changed") and "8" not in found.text


def test_a_base_image_digest_and_a_base_image_are_named(tmp_path: Path) -> None:
    root = project(tmp_path)
    ref = "localhost:5000/dockercache/busybox:stable"
    then = record(root).with_bases({"base": f"{ref}@sha256:{'a' * 64}"})
    now = record(root).with_bases({"base": f"{ref}@sha256:{'b' * 64}"})
    found = cause("base", 2, now, then, never_ran)
    assert found == Cause("base", f"base image `{ref}` changed (aaaaaaaaaaaa -> bbbbbbbbbbbb)")
    moved = record(root, args={"BASE_IMAGE": "localhost:5000/other:1"})
    assert cause("base", 2, moved, record(root), never_ran) == Cause("arg", "build arg `BASE_IMAGE` changed")
    edited = project(tmp_path / "edited", DOCKERFILE.replace("${BASE_IMAGE}", "localhost:5000/other:1"))
    text = cause("base", 2, record(edited), record(root), never_ran).text
    assert text == "`FROM localhost:5000/other:1` (was `localhost:5000/dockercache/busybox:stable`)"


def test_an_instruction_a_step_before_it_and_a_new_stage_are_named(tmp_path: Path) -> None:
    root = project(tmp_path)
    then = record(root)
    changed = project(
        tmp_path / "a", DOCKERFILE.replace("RUN sh /app/app/selftest.sh", "RUN sh -x /app/app/selftest.sh")
    )
    assert cause("final", 3, record(changed), then, never_ran) == Cause(
        "instruction", "the instruction changed (was `RUN sh /app/app/selftest.sh`)"
    )
    env = project(tmp_path / "b", DOCKERFILE.replace("MODE=production", "MODE=staging"))
    assert cause("final", 1, record(env), then, never_ran) == Cause(
        "instruction", "`ENV MODE=staging` before it changed"
    )
    renamed = project(tmp_path / "c", DOCKERFILE.replace("AS final", "AS release"))
    text, files = working_tree(renamed, renamed / "Dockerfile")
    now = record_of(text, {}, ("base", "deps", "release"), files, "s")
    assert cause("release", 1, now, then, never_ran).text == "stage `release` is new since the cache was written"


def test_an_earlier_step_that_ran_is_named(tmp_path: Path) -> None:
    root = project(tmp_path)
    ran = {"final": [(1, "COPY lib/ /app/lib/")]}
    found = cause("final", 3, record(root), record(root), lambda s: ran.get(s, ()))
    assert found == Cause("earlier", "an earlier step ran (`COPY lib/ /app/lib/`)")


def test_a_step_the_record_has_unchanged_that_missed_is_a_degraded_cache(tmp_path: Path) -> None:
    root = project(tmp_path)
    found = cause("final", 2, record(root), record(root), never_ran)
    assert found.kind == "not-hit" and "BuildKit did not hit" in found.text


def test_a_record_of_another_branch_says_so() -> None:
    found = from_another_branch(Cause("files", "`a` changed", ("a",)), "main", "feature-x")
    assert found.text == "`a` changed (against branch main's cache)"
    assert from_another_branch(found, "main", "main") is found


def test_the_files_phrase_names_three_then_counts() -> None:
    assert files_phrase(["a"], [], []) == "`a` changed"
    assert files_phrase([], ["b", "c"], ["d", "e"]) == "`b` added, `c` added, `d` removed (and 1 more file)"


def test_explain_predicts_the_first_step_each_stage_would_run(tmp_path: Path) -> None:
    root = project(tmp_path)
    then = record(root)
    assert would_run(record(root), then) == {}
    (root / "Gemfile.lock").write_text("rack 3.1\n")
    assert would_run(record(root), then) == {
        "deps": [(1, "COPY Gemfile Gemfile.lock ./")],
        "final": [(1, "COPY lib/ /app/lib/")],
    }


# ------------------------------------------------------------------------------------------ no record


class FakeStore(RecordStore):
    def __init__(self, records: dict[str, Record | Exception | None]) -> None:
        super().__init__(lambda host: None)
        self.records = records
        self.asked: list[str] = []

    def read(self, kind: str, place: str) -> Record | None:
        self.asked.append(place)
        found = self.records.get(place)
        if isinstance(found, Exception):
            raise Unreadable(str(found))
        return found


def target(sources: Sequence[str], kind: str = "registry") -> Any:
    entries = tuple(CacheEntry.make("registry", ref=r) for r in sources)

    class T:
        caches = TargetCaches(kind, "default", entries)

    return T()


def test_a_target_without_a_record_says_whether_its_cache_was_absent_unreadable_or_unrecorded() -> None:
    refs = ["reg.test/cache/app:final-feature", "reg.test/cache/app:final-main"]
    assert find(FakeStore({}), target([])).why == Cause("absent", "no cache to read (none of its caches exists yet)")
    unreadable = find(FakeStore({record_ref(refs[0]) or "": OSError("boom")}), target(refs))
    assert unreadable.why is not None and unreadable.why.kind == "unreadable"
    unrecorded = find(FakeStore({}), target(refs))
    assert unrecorded.why is not None and unrecorded.why.kind == "unrecorded"
    r = Record("s", {}, "main")
    store = FakeStore({record_ref(refs[1]) or "": r})
    assert find(store, target(refs)) == Found(r, "reg.test/cache/app:final-main.why")
    assert store.asked == ["reg.test/cache/app:final-feature.why", "reg.test/cache/app:final-main.why"]
    assert find(FakeStore({}), target(refs, "s3")).why == Cause("unrecorded", "the s3 cache store keeps no records yet")
    assert set(CAUSE_KINDS) >= {"files", "arg", "base", "instruction", "earlier", "absent", "unreadable", "not-hit"}


# ------------------------------------------------------------------------------------------ where records live


def test_the_registry_keeps_a_record_as_a_tag_beside_the_cache() -> None:
    assert record_ref("localhost:5000/cache/ruby:final-main") == "localhost:5000/cache/ruby:final-main.why"
    long = record_ref("localhost:5000/cache/ruby:" + "x" * 128)
    assert long is not None and len(long.rpartition(":")[2]) == 128 and long.endswith(".why")

    class Client:
        def __init__(self) -> None:
            self.manifests: dict[str, bytes] = {}
            self.blobs: set[str] = set()

        def head_blob(self, repo: str, digest: str) -> int | None:
            return 2 if digest in self.blobs else None

        def put_blob(self, repo: str, digest: str, data: bytes) -> None:
            self.blobs.add(digest)

        def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
            self.manifests[f"{repo}:{tag}"] = body
            return "sha256:x"

        def get_manifest(self, repo: str, tag: str) -> Manifest | None:
            body = self.manifests.get(f"{repo}:{tag}")
            return Manifest(body, "application/vnd.oci.image.manifest.v1+json", "sha256:x") if body else None

    client = Client()
    store = RecordStore(lambda host: client)  # type: ignore[arg-type,return-value]
    r = Record("s", {}, "main", "abc")
    place = "localhost:5000/cache/ruby:final-main.why"
    assert store.read("registry", place) is None
    store.write("registry", place, r)
    assert store.read("registry", place) == r
    assert ANNOTATION in json.loads(client.manifests["cache/ruby:final-main.why"])["annotations"]
    client.manifests["cache/ruby:final-main.why"] = b'{"annotations": {}}'
    with pytest.raises(Unreadable):
        store.read("registry", place)


def test_a_local_store_keeps_the_record_in_the_cache_version_it_describes(tmp_path: Path) -> None:
    store = RecordStore()
    entry = CacheEntry.make("local", src=str(tmp_path))
    place = store.source_place("local", entry)
    assert place == str(tmp_path / "dockercache-record.json.gz")
    assert store.read("local", place) is None
    r = Record("s", {}, "main", "abc")
    store.write("local", place, r)
    assert store.read("local", place) == r and [p.name for p in tmp_path.iterdir()] == ["dockercache-record.json.gz"]
    (tmp_path / "dockercache-record.json.gz").write_bytes(b"garbage")
    with pytest.raises(Unreadable):
        store.read("local", place)


# ------------------------------------------------------------------------------------------ tally and report


def test_the_tally_names_each_targets_misses_and_base_digests() -> None:
    tally = Tally([TargetInfo("app-final", "final", "i", ("base", "final"))])
    events = BuildEvents()
    stamp = {"started": "2026-01-01T00:00:00Z", "completed": "2026-01-01T00:00:01Z"}
    digest = "sha256:" + "c" * 64
    events.apply(
        {
            "vertexes": [
                {"digest": "a", "name": f"[base 1/2] FROM localhost:5000/x:1@{digest}", **stamp},
                {"digest": "b", "name": "[base 2/2] RUN make", "cached": True, **stamp},
                {"digest": "c", "name": "[final 1/2] COPY app/ /app/", **stamp},
                {"digest": "d", "name": "[final 2/2] RUN test", **stamp},
            ]
        }
    )
    tally.add(events, ["app-final"])
    assert [(s.stage, s.n, s.command) for s in tally.misses()["app-final"]] == [
        ("final", 1, "COPY app/ /app/"),
        ("final", 2, "RUN test"),
    ]
    assert tally.bases() == {"app-final": {"base": f"localhost:5000/x:1@{digest}"}}


def test_the_report_the_json_and_the_annotation_say_why() -> None:
    miss = Miss(
        "ruby", "final", "COPY app/ /app/app/", "final", Cause("files", "`app/main.rb` changed", ("app/main.rb",))
    )
    stage = StageResult("ruby", "final", "final", True, status="ok", miss=miss)
    service = ServiceResult("ruby", [stage])
    run = RunResult([service])
    assert render_table(run).splitlines()[-2:] == [
        "why steps missed:",
        "  ruby/final: missed at `COPY app/ /app/app/`: `app/main.rb` changed",
    ]
    assert run.to_json()["misses"] == [
        {
            "target": "ruby/final",
            "service": "ruby",
            "stage": "final",
            "step_stage": "final",
            "step": "COPY app/ /app/app/",
            "kind": "files",
            "cause": "`app/main.rb` changed",
            "paths": ["app/main.rb"],
        }
    ]
    assert "- :mag: **final** missed at `COPY app/ /app/app/`: `app/main.rb` changed" in render_markdown(service)
