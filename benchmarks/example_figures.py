"""Figures for examples/ruby: cold build, fresh-agent rebuild after a one-file change, warm local rebuild
(registry store), and S3 bytes: first save, one-file-change save, and the old plugin's whole-directory tarball.

Usage: python benchmarks/example_figures.py   (needs the stack: bash scripts/stack.sh up)
Writes benchmarks/results/example.md.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import run_dockercache, s3_client, stack_values, wipe_agent  # noqa: E402


def build(project: Path, config: str, agent: Path, commit: str) -> tuple[float, dict[str, Any]]:
    seconds, service, _ = run_dockercache(project, config, agent, "main", commit, "example")
    return seconds, service


def steps(svc: dict[str, Any]) -> str:
    per = ", ".join(f"{s['stage']} {s['steps_cached']}/{s['steps_total']}" for s in svc["stages"])
    return f"{svc['steps_cached']}/{svc['steps_total']} ({per})"


def up(svc: dict[str, Any]) -> tuple[int, int]:
    return (sum(s["s3"]["up"]["objects"] for s in svc["stages"]), sum(s["s3"]["up"]["bytes"] for s in svc["stages"]))


def tarball_size(s3: Any, bucket: str, digests: list[str]) -> int:
    """The old plugin's upload: the build's whole local cache directory (index + every blob), gzipped."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for digest in digests:
            hexdigest = digest.removeprefix("sha256:")
            body = s3.get_object(Bucket=bucket, Key=f"dockercache/blobs/sha256/{hexdigest}")["Body"].read()
            info = tarfile.TarInfo(f"blobs/sha256/{hexdigest}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return len(buffer.getvalue())


def main() -> int:
    values = stack_values()
    registry = values.get("DOCKERCACHE_REGISTRY", "localhost:5000")
    work = Path(tempfile.mkdtemp(prefix="dockercache-figures-"))
    project = work / "ruby"
    shutil.copytree(ROOT / "examples" / "ruby", project, ignore=shutil.ignore_patterns(".dockercache"))
    name = f"fig{uuid.uuid4().hex[:6]}"
    bucket = name
    s3 = s3_client(values)
    s3.create_bucket(Bucket=bucket)
    common = f"""[builder]
name = "default"
driver = "docker"
[services.ruby]
context = "."
stages = ["base", "deps"]
target = "final"
image = "{registry}/{name}/ruby"
args = {{ BASE_IMAGE = "{values["DOCKERCACHE_BASE_IMAGE"]}" }}
"""
    (project / "registry.toml").write_text(
        f'[caches.default]\ntype = "registry"\nref = "{registry}/{name}/cache"\n' + common
    )
    (project / "s3.toml").write_text(
        f'[caches.default]\ntype = "s3"\nbucket = "{bucket}"\nendpoint_url = "{values["DOCKERCACHE_S3_ENDPOINT"]}"\n'
        f'region = "us-east-1"\n' + common
    )
    agent = work / "agent"
    rows: list[str] = []

    def change() -> None:
        with (project / "app" / "main.sh").open("a") as f:
            f.write(f"# {uuid.uuid4().hex}\n")

    try:
        for config in ("registry.toml", "s3.toml"):
            wipe_agent(agent)
            cold, cold_svc = build(project, config, agent, "c1")
            change()
            wipe_agent(agent)
            fresh, fresh_svc = build(project, config, agent, "c2")
            change()
            warm, warm_svc = build(project, config, agent, "c3")  # same agent, nothing wiped
            store = config.removesuffix(".toml")
            rows.append(f"| {store} | cold build | {cold:.1f}s | {steps(cold_svc)} |")
            rows.append(f"| {store} | fresh agent, one-file change | {fresh:.1f}s | {steps(fresh_svc)} |")
            rows.append(f"| {store} | warm local rebuild, one-file change | {warm:.1f}s | {steps(warm_svc)} |")
            if store == "s3":
                first_up, fresh_up = up(cold_svc), up(fresh_svc)
                snapshot = s3.get_object(Bucket=bucket, Key="dockercache/snapshots/example/main/ruby/final.json")
                tar = tarball_size(s3, bucket, list(json.loads(snapshot["Body"].read())["blobs"]))
        lines = [
            "# examples/ruby figures",
            "",
            "| store | build | wall | steps cached |",
            "|---|---|---|---|",
            *rows,
            "",
            "| S3 bytes | objects | bytes |",
            "|---|---|---|",
            f"| dockercache, first save (cold) | {first_up[0]} | {first_up[1]:,} |",
            f"| dockercache, save after a one-file change | {fresh_up[0]} | {fresh_up[1]:,} |",
            f"| old plugin: whole cache directory as one .tar.gz, every save | 1 | {tar:,} |",
            "",
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    out = ROOT / "benchmarks" / "results" / "example.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
