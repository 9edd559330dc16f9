"""Hardening, group faults: a real build interrupted mid-way (Ctrl-C, or Buildkite's cancel: SIGTERM).

buildx stops with dockercache (it must not go on to push or load), nothing is pushed or recorded, the run's
temporary files are gone, and the exit is 130/143 with one line.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..e2e.conftest import DOCKERCACHE, S3Project, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.hardening("faults")]

SLEEP = 20  # long enough that an orphaned buildx would push well before the test looks


def slow_final_stage(project: S3Project, marker: str) -> None:
    dockerfile = project.path / "Dockerfile"
    text = dockerfile.read_text()
    text = text.replace(
        'CMD ["sh"',
        f'RUN echo {marker}\nRUN sleep {SLEEP} && echo finished-{marker}\nCMD ["sh"',
        1,
    )
    dockerfile.write_text(text)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_build_interrupted_mid_way_stops_buildx_and_leaves_nothing(
    s3_project: S3Project, stack: Stack, s3_client: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    marker = f"before-sleep-{uuid.uuid4().hex[:8]}"
    slow_final_stage(s3_project, marker)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = s3_project.env(TMPDIR=str(tmpdir))
    process = subprocess.Popen(
        [str(DOCKERCACHE), "build"],
        cwd=s3_project.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdout is not None
    lines: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if marker in line:  # the step before the sleep has finished: the sleep is running
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert reached.wait(240), "".join(lines)
    time.sleep(2)
    bake_running = processes_mentioning(str(tmpdir))
    assert any("bake" in p for p in bake_running), bake_running  # the interrupt lands on a running buildx
    sent = time.monotonic()
    process.send_signal(sig)  # to dockercache alone, not its process group: it must stop buildx itself
    code = process.wait(60)
    stopped_after = time.monotonic() - sent
    reader.join(10)
    stderr = "".join(lines)

    assert code == 128 + sig, stderr
    assert stopped_after < 15, stopped_after
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == f"dockercache: interrupted by {sig.name}", stderr
    assert process.stdout.read() == ""  # no report: nothing was built
    assert processes_mentioning(str(tmpdir)) == []  # buildx is gone, not orphaned
    assert list(tmpdir.iterdir()) == []  # the bake file's directory is removed

    # An orphaned buildx would finish the sleep and push; wait past that point and look.
    time.sleep(max(0.0, SLEEP + 5 - (time.monotonic() - sent)))
    assert f"finished-{marker}" not in stderr
    assert stack.registry.tags(f"{s3_project.name}/ruby") == []
    assert s3_project.meta_data() == {}
    assert s3_project.annotations() == {}
    listed = s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/snapshots/")
    assert listed.get("KeyCount", 0) == 0


def test_a_signal_after_a_target_saved_its_cache_publishes_no_snapshot(
    s3_project: S3Project, stack: Stack, s3_client: Any
) -> None:
    """Two services in one bake: `quick` finishes and BuildKit saves its cache through the endpoint while `ruby`
    still sleeps; SIGTERM then. The endpoint held the snapshot's index until the bake ended, so the signal
    publishes nothing: no snapshot in S3, no meta-data, exit 143."""
    marker = f"before-sleep-{uuid.uuid4().hex[:8]}"
    slow_final_stage(s3_project, marker)
    (s3_project.path / "Dockerfile.quick").write_text(
        f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}} AS final\nRUN echo quick-{uuid.uuid4().hex} > /quick\n"
    )
    config = (s3_project.path / "dockercache.toml").read_text()
    quick = f"""
[services.quick]
context = "."
dockerfile = "Dockerfile.quick"
image = "{stack.host}/{s3_project.name}/quick"
args = {{ BASE_IMAGE = "{stack.base_image}" }}
"""
    (s3_project.path / "dockercache.toml").write_text(config + quick)
    process = subprocess.Popen(
        [str(DOCKERCACHE), "build"],
        cwd=s3_project.path,
        env=s3_project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdout is not None
    lines: list[str] = []
    saved = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "[quick-final] exporting cache to registry" in line and "DONE" in line:
                saved.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert saved.wait(240), "".join(lines)
    process.send_signal(signal.SIGTERM)
    code = process.wait(60)
    reader.join(10)
    stderr = "".join(lines)
    assert code == 143, stderr
    assert f"finished-{marker}" not in stderr  # ruby was still building: the signal landed inside the bake
    listed = s3_client.list_objects_v2(Bucket=s3_project.bucket, Prefix="cache/snapshots/")
    assert listed.get("KeyCount", 0) == 0, [o["Key"] for o in listed.get("Contents", [])]
    assert s3_project.meta_data() == {}
    assert s3_project.annotations() == {}
