"""End-to-end: the local directory store (the default with no [caches] table), on the real Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import DOCKERCACHE, Project, Stack, base_env, copy_example, docker, docker_env, fresh_agent

STAGES = ("base", "deps", "final")


def local_config(stack: Stack, extra: str = "") -> str:
    return f"""
[builder]
name = "default"
driver = "docker"

[services.ruby]
context = "."
stages = ["base", "deps"]
target = "final"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
{extra}"""


def cached(result: object) -> dict[str, tuple[int, int]]:
    return {
        s: (result.stage("ruby", s)["steps_cached"], result.stage("ruby", s)["steps_total"])  # type: ignore[attr-defined]
        for s in STAGES
    }


def index_files(root: Path) -> list[Path]:
    return sorted(root.rglob("index.json"))


def assert_complete(directory: Path) -> None:
    """A complete BuildKit local export: every blob its index names is there."""
    index = directory / "index.json"
    assert index.is_file(), directory
    blobs = directory / "blobs" / "sha256"
    for manifest in json.loads(index.read_text())["manifests"]:
        assert (blobs / manifest["digest"].removeprefix("sha256:")).is_file(), manifest


@pytest.mark.usefixtures("agent")
def test_the_local_store_restores_on_an_agent_whose_build_cache_is_gone(project: Project, stack: Stack) -> None:
    project.write_config(local_config(stack))
    fresh_agent()
    first = project.build()
    assert first.returncode == 0, first.stderr
    assert all(done == 0 for done, _ in cached(first).values())
    store = project.user_cache
    assert not (project.path / ".dockercache").exists()  # outside the project: no build context holds it
    indexes = index_files(store)
    assert indexes, f"no cache was written under {store}"
    for index in indexes:
        assert_complete(index.parent)
    assert not [p for p in store.rglob("*") if ".incoming" in p.name or ".old-" in p.name]  # nothing half-swapped
    # The previous release's layout (a real directory per stage, no symlink) is read, then moved to versions.
    links = [p for p in store.rglob("*") if p.is_symlink()]
    assert links
    for link in links:
        version = link.resolve()
        link.unlink()
        version.rename(link)
    # Docker's own build cache and images gone, the directory kept (a persistent agent volume): all from it.
    fresh_agent()
    second = project.build()
    assert second.returncode == 0, second.stderr
    assert all(link.is_symlink() for link in links)
    assert {s: done == total for s, (done, total) in cached(second).items()} == dict.fromkeys(STAGES, True)
    assert second.json["services"][0]["steps_cached"] == second.json["services"][0]["steps_total"] > 0


def shared_store_config(stack: Stack, store: Path) -> str:
    return local_config(stack).replace(
        "[services.ruby]", f'[caches.shared]\ntype = "local"\npath = "{store}"\n\n[services.ruby]', 1
    )


@pytest.mark.usefixtures("agent")
@pytest.mark.hardening("faults")
def test_two_builds_at_once_share_one_local_store(stack: Stack, tmp_path: Path) -> None:
    """Two jobs on one agent, one cache directory (a `path` outside the checkouts): both succeed, neither trips
    over the other's lock or half-swapped directory, and the store left behind is one complete export."""
    name = f"t{uuid.uuid4().hex[:10]}"
    store = tmp_path / "shared-cache"
    checkouts = [Project(tmp_path / f"job{n}" / "ruby", name) for n in (1, 2)]
    for checkout in checkouts:  # two checkouts of one commit: the same steps, the same cache keys
        copy_example(checkout.path, name)
        checkout.write_config(shared_store_config(stack, store))
    fresh_agent()
    jobs = [
        subprocess.Popen(
            [str(DOCKERCACHE), "build", "--json"],
            cwd=checkout.path,
            # Two commits, so the images they load are two (the cache keys are the same: the files are).
            env=base_env(BUILDKITE_JOB_ID=f"job{n}", BUILDKITE_COMMIT=f"{n}" * 40),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, checkout in enumerate(checkouts, 1)
    ]
    outputs = [job.communicate(timeout=300) for job in jobs]
    for job, (_, stderr) in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, stderr
        assert "could not lock" not in stderr and "Traceback" not in stderr, stderr
        assert "not updated" not in stderr, stderr
    # Each stage directory is one complete export (the last swap's); beside it at most the other run's version
    # (kept a minute for readers of the path) and nothing half-written or left behind.
    entries = sorted(p.name for p in (store / "ruby").iterdir())
    live = [p for p in (store / "ruby").iterdir() if p.is_symlink()]
    assert live, entries
    for final in live:
        assert_complete(final)
        versions = [e for e in entries if e.startswith(f"{final.name}.v-")]
        assert os.readlink(final) in versions and len(versions) <= 2, entries
    assert all(".v-" in e or e in {p.name for p in live} for e in entries), entries
    # A fresh agent (no build cache, no images) restores the winner's store: everything cached.
    fresh_agent()
    again = checkouts[0].build()
    assert again.returncode == 0, again.stderr
    assert {s: done == total for s, (done, total) in cached(again).items()} == dict.fromkeys(STAGES, True)


@pytest.mark.hardening("faults")
def test_four_jobs_of_one_commit_at_once_all_succeed(stack: Stack, tmp_path: Path) -> None:
    """Four jobs of the same commit on one agent, three times over: they store the same image name at once,
    which the containerd image store refuses to all but one (`image "...": already exists`); every job
    succeeds (the refused one builds again, all cached by then)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    store = tmp_path / "shared-cache"
    checkouts = [Project(tmp_path / f"job{n}" / "ruby", name) for n in range(4)]
    for checkout in checkouts:
        copy_example(checkout.path, name)
        checkout.write_config(shared_store_config(stack, store))
    fresh_agent()
    retried = 0
    for round_ in range(3):
        for checkout in checkouts:  # one commit: the same change in every checkout
            with (checkout.path / "app" / "main.sh").open("a") as source:
                source.write(f"# round {round_}\n")
        jobs = [
            subprocess.Popen(
                [str(DOCKERCACHE), "build", "--json"],
                cwd=checkout.path,
                env=base_env(BUILDKITE_JOB_ID=f"job{n}-{round_}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n, checkout in enumerate(checkouts)
        ]
        for job in jobs:
            _, stderr = job.communicate(timeout=300)
            assert job.returncode == 0, stderr
            retried += "another job stored the same image at the same moment" in stderr
    print(f"jobs that met the image store's race and built again: {retried} of 12")


@pytest.mark.usefixtures("agent")
def test_a_copy_everything_project_without_dockerignore_stays_clean(stack: Stack, tmp_path: Path) -> None:
    """`COPY . /app` and no .dockerignore, on a laptop (off CI) in a git checkout: the built-in store is outside
    the project, so the second build hits every step (the COPY too), the image holds no cache, the tree stays
    clean (no `-dirty` tag)."""
    project = tmp_path / "app"
    project.mkdir()
    marker = uuid.uuid4().hex
    (project / "Dockerfile").write_text(
        f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN echo {marker} > /marker\nCOPY . /app\nRUN ls -a /app > /listing\n"
    )
    (project / "main.sh").write_text("echo hello\n")
    (project / "dockercache.toml").write_text(
        '[builder]\nname = "default"\ndriver = "docker"\n\n'
        f'[services.app]\nargs = {{ BASE_IMAGE = "{stack.base_image}" }}\n'
    )
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=project, check=True)
    env = {k: v for k, v in base_env().items() if not k.startswith(("BUILDKITE", "CI"))}
    env["DOCKERCACHE_CACHE_DIR"] = str(tmp_path / "user-cache")
    builds = []
    for _ in range(2):
        fresh_agent()
        proc = subprocess.run(
            [str(DOCKERCACHE), "build", "--json"],
            cwd=project,
            env=docker_env(env),  # this agent's daemon (fresh_agent() may have started another)
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        builds.append(json.loads(proc.stdout))
    stage = builds[1]["services"][0]["stages"][0]
    assert stage["steps_cached"] == stage["steps_total"] >= 3, stage  # FROM, RUN, COPY, RUN: all from the store
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True)
    assert status.stdout == ""  # nothing untracked: the next tag is not -dirty
    tag = builds[1]["services"][0]["stages"][0]["image"]["tags"][0]
    assert not tag.endswith("-dirty"), tag
    listing = docker("run", "--rm", tag, "cat", "/listing")
    assert ".dockercache" not in listing.stdout and "main.sh" in listing.stdout, listing.stdout
    assert (tmp_path / "user-cache").is_dir()


@pytest.mark.usefixtures("agent")
def test_an_export_that_adds_nothing_is_not_swapped_in(project: Project, stack: Stack) -> None:
    """The local store's side of "a cache never gets worse": the live version holds a layer the next export
    lacks; that export is dropped and the live version stays."""
    project.write_config(local_config(stack))
    dockerfile = project.path / "Dockerfile"
    plain = dockerfile.read_text()
    dockerfile.write_text(plain.replace('CMD ["sh"', 'RUN echo extra > /extra\nCMD ["sh"', 1))
    fresh_agent()
    assert project.build().returncode == 0
    live = next(project.user_cache.rglob("final"))
    richer = os.readlink(live)
    dockerfile.write_text(plain)
    fresh_agent()
    result = project.build()
    assert result.returncode == 0, result.stderr
    final = result.stage("ruby", "final")
    assert final["cache_written"] is None and final["cache_kept"].startswith(f"kept {live}: this build's cache")
    assert os.readlink(live) == richer
    assert not [p for p in live.parent.iterdir() if ".incoming-" in p.name]  # the dropped export is gone
