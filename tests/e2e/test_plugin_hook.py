"""End-to-end: hooks/command as the agent runs it, with only the old docker-cache plugin's options and no
dockercache.toml: dockercache installed from this checkout into a virtualenv, the image pushed, meta-data set,
the S3 snapshot written; a second job on a fresh agent restores it (the S3 endpoint comes, as the old plugin
had no option for it, from boto3's own $AWS_ENDPOINT_URL_S3)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

from ..conftest import ROOT
from .conftest import ACCESS_KEY, COMMIT, SECRET_KEY, STUB_AGENT, Stack, base_env, copy_example, fresh_agent

HOOK = ROOT / "hooks" / "command"


def hook(
    checkout: Path, options: dict[str, Any], tmp_path: Path, s3_endpoint: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """The job's environment as the agent makes it: both forms of the options, the stand-in agent on PATH."""
    env = base_env(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=s3_endpoint,
        BUILDKITE="true",
        BUILDKITE_AGENT_STUB_DIR=str(tmp_path / "bk"),
        BUILDKITE_JOB_ID=uuid.uuid4().hex,
        BUILDKITE_PLUGIN_NAME="DOCKERCACHE",
        BUILDKITE_PLUGIN_CONFIGURATION=json.dumps(options),
        DOCKERCACHE_PLUGIN_VENV_ROOT=str(tmp_path / "venvs"),
        PATH=f"{STUB_AGENT}:{os.environ['PATH']}",
        **extra,
    )
    env.update({f"BUILDKITE_PLUGIN_DOCKERCACHE_{k.upper()}": v for k, v in options.items()})
    proc = subprocess.run([str(HOOK)], cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_the_old_plugins_options_alone(stack: Stack, tmp_path: Path, s3_client: Any) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    checkout = tmp_path / "checkout"
    copy_example(checkout, name)
    (checkout / "dockercache.toml").unlink()
    (checkout / "docker-compose.ci.yml").write_text(
        f"services:\n  ruby:\n    build:\n      context: .\n      target: final\n"
        f"      args:\n        BASE_IMAGE: {stack.base_image}\n"
    )
    s3_client.create_bucket(Bucket=name)
    options = {  # the README's "Before" step, ${...} expanded by the agent
        "s3_bucket": name,
        "s3_key": f"example/{COMMIT}",
        "cache_from": "example/latest",
        "service": "ruby",
        "config": "docker-compose.ci.yml",
        "image_repository": f"{stack.host}/{name}/ruby",
        "image_name": COMMIT,
        "metadata_key": "ruby-image",
    }
    fresh_agent()
    first = hook(checkout, options, tmp_path, stack.s3_endpoint)
    assert first.returncode == 0, first.stderr
    assert not (checkout / "dockercache.toml").exists()
    image = f"{stack.host}/{name}/ruby:{COMMIT}"
    assert COMMIT in stack.registry.tags(f"{name}/ruby")
    meta = json.loads((tmp_path / "bk" / "meta-data.json").read_text())
    assert meta["ruby-image"] == image
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=name).get("Contents", [])]
    assert f"dockercache/snapshots/example/{COMMIT}/ruby/final.json" in keys, keys
    venvs = list((tmp_path / "venvs").iterdir())
    assert [v.name for v in venvs if v.is_dir()] == [re.sub(r".lock$", "", v.name) for v in venvs if v.is_file()]

    # Another agent, another job: the virtualenv is reused, the build restores the snapshot.
    fresh_agent()
    (tmp_path / "bk").rename(tmp_path / "bk-first")
    second = hook(checkout, options, tmp_path, stack.s3_endpoint)
    assert second.returncode == 0, second.stderr
    assert "dockercache plugin: installing" in first.stderr and "dockercache plugin: installing" not in second.stderr
    cached = re.search(r"ruby: .*?(\d+)/(\d+) steps cached", second.stdout)
    assert cached and cached.group(1) == cached.group(2) != "0", second.stdout

    # A branch build given the old plugin's per-commit key (expanded by the agent) writes its branch's key in its
    # place: the default branch reads a commit's key when it builds that commit, so no branch may write one.
    branch_commit = "b" * 40
    branch = hook(
        checkout,
        {**options, "s3_key": f"example/{branch_commit}", "image_name": branch_commit},
        tmp_path,
        stack.s3_endpoint,
        BUILDKITE_BRANCH="feature/y",
        BUILDKITE_COMMIT=branch_commit,
    )
    assert branch.returncode == 0, branch.stderr
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=name).get("Contents", [])]
    assert "dockercache/snapshots/example/feature-y-a2bcce4a/ruby/final.json" in keys, branch.stdout + branch.stderr
    assert f"dockercache/snapshots/example/{branch_commit}/ruby/final.json" not in keys


def test_the_old_plugins_readme_pipeline_after_swapping_the_name(stack: Stack, tmp_path: Path, s3_client: Any) -> None:
    """Issue 27: envato/docker-cache-buildkite-plugin v0.1.0's README pipeline, unchanged but for the plugin's
    name: a build step with a per-commit s3_key, then on main the "update image cache" step without service
    (its metadata_key differs from the build step's, as in the README). The next commit's build hits the cache.
    The README's build step names no service, with which the old plugin built nothing: ``service`` is added."""
    name = f"t{uuid.uuid4().hex[:10]}"
    checkout = tmp_path / "checkout"
    copy_example(checkout, name)
    (checkout / "dockercache.toml").unlink()
    (checkout / "docker-compose.yml").write_text(
        f"services:\n  ruby:\n    build:\n      context: .\n      target: final\n"
        f"      args:\n        BASE_IMAGE: {stack.base_image}\n"
    )
    s3_client.create_bucket(Bucket=name)

    def build_step(commit: str) -> dict[str, str]:  # ${BUILDKITE_PIPELINE_SLUG}, ${BUILDKITE_COMMIT} expanded
        return {
            "s3_bucket": name,
            "s3_key": f"example/{commit}",
            "image_repository": f"{stack.host}/{name}/ruby",
            "image_name": commit,
            "metadata_key": "docker-compose-plugin-built-image-tag-ruby",
            "service": "ruby",
        }

    update_step = {"s3_bucket": name, "s3_key": "example/latest", "metadata_key": "docker-cache-image-ruby"}

    fresh_agent()
    first = hook(checkout, build_step(COMMIT), tmp_path, stack.s3_endpoint)
    assert first.returncode == 0, first.stderr
    meta = json.loads((tmp_path / "bk" / "meta-data.json").read_text())
    assert meta["docker-compose-plugin-built-image-tag-ruby"] == f"{stack.host}/{name}/ruby:{COMMIT}"
    assert meta["docker-compose-plugin-built-image-tag-ruby-s3"] == f"example/{COMMIT}"  # the old plugin's record
    update = hook(checkout, update_step, tmp_path, stack.s3_endpoint)
    assert update.returncode == 0, update.stdout + update.stderr
    assert f"promoted example/{COMMIT} to example/latest" in update.stdout, update.stdout + update.stderr
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=name).get("Contents", [])]
    assert "dockercache/snapshots/example/latest/ruby/final.json" in keys, keys

    # The next commit, a new build on a fresh agent: its own key is empty; latest holds every step.
    fresh_agent()
    (tmp_path / "bk").rename(tmp_path / "bk-first")
    following = "c" * 40
    second = hook(checkout, build_step(following), tmp_path, stack.s3_endpoint, BUILDKITE_COMMIT=following)
    assert second.returncode == 0, second.stderr
    cached = re.search(r"ruby: .*?(\d+)/(\d+) steps cached", second.stdout)
    assert cached and cached.group(1) == cached.group(2) != "0", second.stdout
