"""A week of commits: one project's history replayed build by build, each build's cache hits against the ideal.

benchmarks/bench.py measures single builds from a seeded cache; this replays a history of commits of
benchmarks/project (a copy, each commit made by editing files): a seed, one-file changes, reruns where nothing
changed (one right before a dependency bump), a dependency bump, a commit whose test stage fails and its fix, a
feature branch commit and a pull request build. Every CI step builds `test` and `final` and pushes `final`, as in
bench.py. Each strategy replays the history twice, each time with stores of its own:

- fresh agents: every build on a new private dockerd with an empty data root (benchmarks/agents.py), so every
  cached step came from the strategy's cache;
- one long-lived agent: one private dockerd per strategy builds every commit, cleaned between jobs as kept
  Buildkite agents are (`docker buildx prune -af`, every image removed; BuildKit 0.13 keeps what it keeps).

The ideal for a commit is what a warm agent that built every earlier commit has cached: one more private dockerd
builds the whole history without cache import, export or pruning (bench.py's warm-local strategy), and its
cached steps are each commit's ``steps_ideal``. Steps are counted as bench.py counts them (``count_steps`` for
bakes; dockercache's own report, the same rule, for dockercache). A commit whose test fails is expected to fail;
what its build cached counts.

Usage: python benchmarks/sequence.py [--quick] [--scale N] [--only STRATEGY,...] [--agents fresh,long-lived]
       python benchmarks/sequence.py --render   (sequence.md again from sequence.json)
Writes benchmarks/results/sequence.json and sequence.md. Needs the stack (bash scripts/stack.sh up) and root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents import Daemon, fresh_daemon, preflight, start_daemon
from bench import (
    DOCKERCACHE,
    HAND,
    KNOWN_RACES,
    REGISTRY_CACHE,
    WARM,
    Bench,
    Registry,
    count_steps,
    fold_vertexes,
    free_port,
    machine,
    rotated,
    s3_client,
    stack_values,
    step_key,
)

OUT = Path(__file__).resolve().parent / "results"
COMPOSE = "compose-plugin-v5"
REGISTRY, S3 = "dockercache-registry", "dockercache-s3"
STRATEGIES = (REGISTRY, S3, HAND, COMPOSE)
QUICK_STRATEGIES = (REGISTRY, S3)
AGENTS = ("fresh", "long-lived")
LABELS = {
    REGISTRY: "dockercache, registry",
    S3: "dockercache, S3",
    HAND: "hand-written bake",
    COMPOSE: "compose plugin v5",
    WARM: "warm local (the ideal)",
}
MAX_RETRIES = 2
"""Per build, after a known race: fresh and long-lived agents build again (a fresh one on a new daemon). The warm
agent does not: a second try would find the first one's steps in its build cache, which is no ideal."""
PUSH_RACE = re.compile(r"unexpected status from HEAD request to \S+/manifests/\S+: 500 Internal Server Error")
"""The benchmark registry (distribution 2.8.2) answering 500 ("invalid checksum digest format") to a HEAD of a tag
that BuildKit and dockerd's containerd store push at once; seen once in about 60 pushes."""
TEST_STEP = "RUN test -s /out/app.bin && "
ASSERTIONS = "! grep -q '^assert false' /src/* && "
"""The copy's test stage also fails on a source file holding a line ``assert false`` (a failing test)."""
UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}

Edit = Callable[[Path], None]


def append(path: str, text: str) -> Edit:
    def edit(root: Path) -> None:
        with (root / path).open("a") as f:
            f.write(text)

    return edit


def write(path: str, text: str) -> Edit:
    def edit(root: Path) -> None:
        (root / path).write_text(text)

    return edit


def replace(path: str, old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        text = (root / path).read_text()
        if old not in text:
            raise ValueError(f"{path}: no {old!r} to replace")
        (root / path).write_text(text.replace(old, new, 1))

    return edit


@dataclass(frozen=True)
class Commit:
    """One CI build of the history: the commit's own edits on top of its parent's tree."""

    name: str
    change: str
    """seed, one-file, none, dependency, failing, fix, feature, pull-request"""
    parent: int | None
    edits: tuple[Edit, ...] = ()
    branch: str = "main"
    pull_request: str | None = None
    fails: bool = False


FULL = (
    Commit("seed", "seed", None),
    Commit("one-file change (src/main.txt)", "one-file", 0, (append("src/main.txt", "search\n"),)),
    Commit("one-file change (src/util.txt)", "one-file", 1, (append("src/util.txt", "slugify\n"),)),
    Commit("nothing changed (a rerun)", "none", 2),
    Commit("dependency bump (deps.lock)", "dependency", 3, (replace("deps.lock", "dep3 1.3.0", "dep3 1.3.1"),)),
    Commit("one-file change", "one-file", 4, (append("src/main.txt", "filters\n"),)),
    Commit(
        "dependency bump, a test fails",
        "failing",
        5,
        (replace("deps.lock", "dep7 1.7.0", "dep7 2.0.0"), write("src/checks.txt", "assert false\n")),
        fails=True,
    ),
    Commit("the fix (one file)", "fix", 6, (write("src/checks.txt", "assert true\n"),)),
    Commit("nothing changed (a rerun)", "none", 7),
    Commit("feature/x: adds a dependency", "feature", 8, (append("deps.lock", "newdep 0.1.0\n"),), "feature/x"),
    Commit(
        "pull request #7 (feature/x): one-file change",
        "pull-request",
        9,
        (append("src/main.txt", "x\n"),),
        "feature/x",
        "7",
    ),
    Commit("main: one-file change", "one-file", 8, (append("src/util.txt", "trim\n"),)),
)
QUICK = (
    Commit("seed", "seed", None),
    Commit("one-file change (src/main.txt)", "one-file", 0, (append("src/main.txt", "search\n"),)),
    Commit("nothing changed (a rerun)", "none", 1),
    Commit("dependency bump (deps.lock)", "dependency", 2, (replace("deps.lock", "dep3 1.3.0", "dep3 1.3.1"),)),
)


def lineage(history: Sequence[Commit], index: int) -> list[Commit]:
    """The commits whose edits make ``history[index]``'s tree, oldest first."""
    chain: list[Commit] = []
    at: int | None = index
    while at is not None:
        chain.append(history[at])
        at = history[at].parent
    return chain[::-1]


def slug(commit: Commit) -> str:
    """The anchors' ref suffix: the branch's, or ``pr-N`` (as dockercache keys a pull request)."""
    if commit.pull_request:
        return f"pr-{commit.pull_request}"
    return re.sub(r"[^a-z0-9]+", "-", commit.branch.lower()).strip("-")


@dataclass
class Build:
    """What one CI step of one commit did."""

    seconds: float
    cached: int
    total: int
    ok: bool
    stages: dict[str, list[int]]
    """stage -> [cached, total]"""
    log: str
    retries: int = 0
    left_bytes: int | None = None
    """Long-lived agents: the build cache ``docker buildx du`` still counted after the clean before this job."""

    @property
    def error(self) -> str | None:
        """A failed build's last error line (bake's ``ERROR: ...``, dockercache's ``... build failed: ...``)."""
        if self.ok:
            return None
        lines = [line.strip() for line in self.log.splitlines()]
        return next((line for line in reversed(lines) if line.startswith(("ERROR", "dockercache: error"))), None)


def stage_counts(stream: str, targets: Sequence[str]) -> dict[str, list[int]]:
    """count_steps's rule, per Dockerfile stage, for one bake's rawjson stream."""
    vertexes = fold_vertexes(stream)
    ran: dict[tuple[str, int], bool] = {}
    hit: dict[tuple[str, int], bool] = {}
    for seen in vertexes.values():
        for step in {step_key(name, targets) for name in seen["names"]} - {None}:
            assert step is not None
            ran[step] = ran.get(step, False) or (seen["completed"] and not seen["cached"] and not seen["error"])
            hit[step] = hit.get(step, False) or (seen["completed"] and seen["cached"])
    stages: dict[str, list[int]] = {}
    for step, did_run in sorted(ran.items()):
        counts = stages.setdefault(step[0], [0, 0])
        counts[0] += int(hit[step] and not did_run)
        counts[1] += 1
    return stages


def du_bytes(daemon: Daemon) -> int:
    out = daemon.docker("buildx", "du", check=False).stdout
    totals = re.findall(r"^Total:\s+([0-9.]+)\s*([kKMGT]?B)", out, re.MULTILINE)
    return int(float(totals[-1][0]) * UNITS[totals[-1][1]]) if totals else 0


def clean(daemon: Daemon) -> int:
    """Between two jobs on a kept agent: every image removed, the build cache pruned. Returns what is left."""
    ids = daemon.docker("image", "ls", "--all", "--quiet").stdout.split()
    if ids:
        daemon.docker("image", "rm", "--force", *sorted(set(ids)), check=False)
    daemon.docker("buildx", "prune", "--all", "--force")
    return du_bytes(daemon)


@dataclass
class Replay(Bench):
    """One replay of the history (one agent kind, or the warm ideal): its own project copy, registry, bucket and
    cache keys (``BENCH_RUN``)."""

    history: Sequence[Commit] = ()
    logs: Path = Path()
    kind: str = ""

    def checkout(self, index: int) -> None:
        """The project as of ``history[index]``: bench.py's copy and configurations, then every edit that leads
        there; the test stage also runs the project's assertions (a failing test is a file's content)."""
        self.reset()
        dockerfile = self.project / "Dockerfile"
        text = dockerfile.read_text()
        if TEST_STEP not in text:
            raise SystemExit(f"benchmarks/project/Dockerfile: its test stage no longer has {TEST_STEP!r}")
        dockerfile.write_text(text.replace(TEST_STEP, TEST_STEP + ASSERTIONS, 1))
        for commit in lineage(self.history, index):
            for edit in commit.edits:
                edit(self.project)

    def sha(self, index: int) -> str:
        return hashlib.sha1(f"{self.run_id}-{index}".encode()).hexdigest()

    def sequence_targets(self, strategy: str, commit: Commit, tag: str) -> dict[str, dict[str, Any]]:
        """Each bake strategy's targets for a commit, by branch: the default branch reads and writes the shared
        refs; the hand-written bake on another branch reads its own refs, then the default branch's, and writes
        only its own (as dockercache keys branches); the compose plugin's one ref is read and written by every
        build, whatever its branch (a docker-compose.yml's cache_from and cache_to name one ref)."""
        push: dict[str, Any] = {"tags": [f"{self.image(strategy)}:{tag}"], "output": ["type=registry"]}
        cacheonly: dict[str, Any] = {"output": ["type=cacheonly"]}
        if strategy == WARM:
            return {"test": cacheonly, "final": push}
        if strategy == COMPOSE:
            ref = f"{self.registry.host}/bench/compose-cache:cache"
            return {
                "test": {**cacheonly, "cache-from": [f"type=registry,ref={ref}"]},
                "final": {
                    **push,
                    "cache-from": [f"type=registry,ref={ref}"],
                    "cache-to": [f"type=registry,ref={ref},{REGISTRY_CACHE}"],
                },
            }
        if strategy == HAND:
            ref = f"{self.registry.host}/bench/bake-cache"
            own = "" if commit.branch == "main" and not commit.pull_request else f"-{slug(commit)}"
            read = [f"type=registry,ref={ref}:{t}{own}" for t in ("test", "final") if own]
            read += [f"type=registry,ref={ref}:{t}" for t in ("test", "final")]
            return {
                t: {
                    **(push if t == "final" else cacheonly),
                    "cache-from": read,
                    "cache-to": [f"type=registry,ref={ref}:{t}{own},{REGISTRY_CACHE}"],
                }
                for t in ("test", "final")
            }
        raise ValueError(f"not a bake strategy: {strategy}")

    def build(self, strategy: str, index: int, env: Mapping[str, str], label: str) -> Build:
        """One CI step of ``history[index]`` on the daemon ``env`` points at."""
        commit = self.history[index]
        self.checkout(index)
        log = self.logs / f"{label}.log"
        if strategy.startswith("dockercache-"):
            config = "registry.toml" if strategy == REGISTRY else "s3.toml"
            shutil.rmtree(self.agent, ignore_errors=True)
            self.agent.mkdir(parents=True)
            raw = self.logs / f"{label}.rawjson"
            seconds, proc = self.dockercache_build(config, commit, self.sha(index), env, raw)
            log.write_text(proc.stderr + "\n--- stdout ---\n" + proc.stdout)
            try:
                report = json.loads(proc.stdout)
                svc = report["services"][0]
            except (ValueError, KeyError, IndexError):
                return Build(seconds, 0, 0, False, {}, proc.stderr)
            stages = {s["stage"]: [s["steps_cached"], s["steps_total"]] for s in svc["stages"]}
            text = proc.stderr + (f"\nERROR: {report['error']}" if report.get("error") else "")
            return Build(seconds, svc["steps_cached"], svc["steps_total"], proc.returncode == 0, stages, text)
        targets = self.sequence_targets(strategy, commit, self.sha(index)[:12])
        definition = {
            "target": {
                t: {"context": str(self.project), "dockerfile": "Dockerfile", "target": t, "args": self.args, **attrs}
                for t, attrs in targets.items()
            }
        }
        bake_file = self.logs / f"{label}.bake.json"
        bake_file.write_text(json.dumps(definition, indent=2))
        argv = ["docker", "buildx", "bake", "--builder", "default", "--progress", "rawjson", "--file", str(bake_file)]
        started = time.monotonic()
        proc = subprocess.run([*argv, *targets], capture_output=True, text=True, check=False, env=dict(env))
        seconds = time.monotonic() - started
        log.write_text(proc.stderr)
        cached, total = count_steps((proc.stderr, list(targets)))
        return Build(
            seconds, cached, total, proc.returncode == 0, stage_counts(proc.stderr, list(targets)), proc.stderr
        )

    def dockercache_build(
        self, config: str, commit: Commit, sha: str, env: Mapping[str, str], raw: Path
    ) -> tuple[float, subprocess.CompletedProcess[str]]:
        """`dockercache build --json` as a Buildkite job of ``commit`` runs it (bench.run_dockercache, with pull
        requests); the report is printed for a failed build too. BuildKit's own stream of its bakes goes to
        ``raw`` (a ``docker`` on PATH that tees it), for telling where a miss came from."""
        shim = self.logs / "bin" / "docker"
        if not shim.exists():
            shim.parent.mkdir(parents=True, exist_ok=True)
            shim.write_text(RAW_SHIM)
            shim.chmod(0o755)
        values = {k: v for k, v in env.items() if not k.startswith(("BUILDKITE", "DOCKERCACHE_"))}
        values["SEQUENCE_REAL_DOCKER"] = shutil.which("docker", path=env.get("PATH")) or "docker"
        values["SEQUENCE_RAW_LOG"] = str(raw)
        values["PATH"] = f"{shim.parent}:{env.get('PATH', '')}"
        values.update(
            {
                "CI": "true",
                "BUILDKITE_BRANCH": commit.branch,
                "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "main",
                "BUILDKITE_PIPELINE_SLUG": "sequence",
                "BUILDKITE_COMMIT": sha,
                "BUILDKITE_PULL_REQUEST": commit.pull_request or "false",
                "DOCKERCACHE_CACHE_DIR": str(self.agent),
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        if commit.pull_request:
            values["BUILDKITE_PULL_REQUEST_BASE_BRANCH"] = "main"
        started = time.monotonic()
        proc = subprocess.run(
            [str(DOCKERCACHE), "build", "--json", "--config", config],
            cwd=self.project,
            capture_output=True,
            text=True,
            env=values,
            check=False,
        )
        return time.monotonic() - started, proc


def transient(build: Build) -> bool:
    return not build.ok and (any(race in build.log for race in KNOWN_RACES) or bool(PUSH_RACE.search(build.log)))


RAW_SHIM = """#!/bin/bash
# benchmarks/sequence.py: BuildKit's rawjson stream of dockercache's bakes, kept beside its report.
if [ "$1" = buildx ] && [ "$2" = bake ] && [ -n "$SEQUENCE_RAW_LOG" ]; then
  "$SEQUENCE_REAL_DOCKER" "$@" 2> >(tee -a "$SEQUENCE_RAW_LOG" >&2)
  status=$?
  wait
  exit $status
fi
exec "$SEQUENCE_REAL_DOCKER" "$@"
"""


@dataclass
class Run:
    """The whole replay: the warm ideal and every (strategy, agent kind)."""

    history: Sequence[Commit]
    strategies: Sequence[str]
    agents: Sequence[str]
    replays: dict[str, Replay]
    log: Callable[[str], None]
    builds: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[tuple[str, str], Daemon] = field(default_factory=dict)
    daemon_seconds: list[tuple[float, float]] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)

    def record(self, strategy: str, agent: str, index: int, build: Build) -> None:
        commit = self.history[index]
        row = {
            "commit": index,
            "strategy": strategy,
            "agent": agent,
            "steps_cached": build.cached,
            "steps_total": build.total,
            "wall_s": round(build.seconds, 2),
            "ok": build.ok,
            "expected_ok": not commit.fails,
            "stages": build.stages,
            "retries": build.retries,
            "error": build.error,
        }
        if build.left_bytes is not None:
            row["left_after_clean_bytes"] = build.left_bytes
        self.builds.append(row)
        surprise = "" if build.ok != commit.fails else f"  (unexpectedly {'passed' if build.ok else 'failed'})"
        self.log(
            f"[{index + 1}/{len(self.history)}] {commit.name[:38]:<38} {strategy:<21} {agent:<10} "
            f"{build.seconds:6.1f}s {build.cached}/{build.total} cached{surprise}"
        )

    def attempt(self, strategy: str, agent: str, index: int) -> Build:
        """One build with retries after a known race: a fresh agent on a new daemon, a kept one on its own."""
        replay = self.replays["warm" if agent == "warm" else agent]
        label = f"{agent}-{strategy}-{index:02d}"
        for retry in range(MAX_RETRIES + 1):
            left: int | None = None
            if agent == "fresh":
                with fresh_daemon() as daemon:
                    build = replay.build(strategy, index, daemon.environ(), f"{label}-{retry}")
                self.daemon_seconds.append((daemon.started_s, daemon.stopped_s))
            else:
                key = (strategy, agent)
                daemon = self.kept.get(key) or self.keep(key)
                if agent == "long-lived" and (index > 0 or retry > 0):
                    left = clean(daemon)
                build = replay.build(strategy, index, daemon.environ(), f"{label}-{retry}")
            build.retries, build.left_bytes = retry, left
            if agent == "warm" or not transient(build) or retry == MAX_RETRIES:
                return build
            self.retries.append(f"{label}: a known race ({'push' if PUSH_RACE.search(build.log) else 'BuildKit'})")
            self.log(self.retries[-1])
        raise AssertionError("unreachable")

    def keep(self, key: tuple[str, str]) -> Daemon:
        daemon = self.kept[key] = start_daemon()
        self.daemon_seconds.append((daemon.started_s, 0.0))
        return daemon

    def replay(self) -> None:
        for index in range(len(self.history)):
            self.record(WARM, "warm", index, self.attempt(WARM, "warm", index))
            for strategy in rotated(list(self.strategies), index):
                for agent in self.agents:
                    self.record(strategy, agent, index, self.attempt(strategy, agent, index))

    def close(self) -> None:
        for daemon in self.kept.values():
            daemon.stop()


# ------------------------------------------------------------------------------------------------- results


def summarise(history: Sequence[Commit], builds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per strategy and agent kind: sums over the history, against the warm agent's."""
    ideal = {b["commit"]: b for b in builds if b["strategy"] == WARM}
    rows = []
    pairs = dict.fromkeys((b["strategy"], b["agent"]) for b in builds)
    for strategy, agent in sorted(pairs, key=lambda p: ([*STRATEGIES, WARM].index(p[0]), p[1])):
        mine = [b for b in builds if (b["strategy"], b["agent"]) == (strategy, agent)]
        short = [max(0, ideal[b["commit"]]["steps_cached"] - b["steps_cached"]) for b in mine]
        rows.append(
            {
                "strategy": strategy,
                "agent": agent,
                "commits": len(mine),
                "steps_cached": sum(b["steps_cached"] for b in mine),
                "steps_ideal": sum(ideal[b["commit"]]["steps_cached"] for b in mine),
                "steps_total": sum(b["steps_total"] for b in mine),
                "steps_short": sum(short),
                "commits_short": sum(1 for s in short if s),
                "wall_s": round(sum(b["wall_s"] for b in mine), 2),
                "warm_wall_s": round(sum(ideal[b["commit"]]["wall_s"] for b in mine), 2),
                "failed_unexpectedly": sum(1 for b in mine if b["ok"] != b["expected_ok"]),
            }
        )
    return rows


def cell(build: Mapping[str, Any] | None, ideal: int) -> str:
    if build is None:
        return "-"
    cached = f"**{build['steps_cached']}**" if build["steps_cached"] < ideal else str(build["steps_cached"])
    failed = ", failed" if not build["ok"] else ""
    return f"{cached}/{ideal}, {build['wall_s']:.1f}s{failed}"


def markdown(document: Mapping[str, Any]) -> str:
    meta, commits, builds = document["meta"], document["commits"], document["builds"]
    pairs = [(r["strategy"], r["agent"]) for r in document["rows"] if r["strategy"] != WARM]
    by = {(b["strategy"], b["agent"], b["commit"]): b for b in builds}
    lines = [
        f"# A week of commits ({'quick' if meta['quick'] else 'full'} run, {meta['date']})",
        "",
        f"benchmarks/project (SCALE={meta['scale']}) through {len(commits)} commits; every CI step builds `test` "
        "and `final` and pushes `final`. Fresh: every build on a new dockerd with an empty data root. Long-lived: "
        "one dockerd per strategy builds every commit, `docker buildx prune -af` and every image removed between "
        "jobs. Ideal: what a warm agent that built every earlier commit had cached (no cache import, export or "
        f"prune). Machine: {meta['machine']['cpus']} CPUs, Docker {meta['machine']['docker']}.",
        "",
        "Cells: steps cached / steps the warm agent had cached, wall time; **bold**: fewer than the ideal.",
        "",
        "| # | commit | branch | warm (ideal): cached/total, wall | "
        + " | ".join(f"{LABELS[s]}, {a}" for s, a in pairs)
        + " |",
        "|---|---|---|---|" + "---|" * len(pairs),
    ]
    for c in commits:
        warm = by[(WARM, "warm", c["index"])]
        branch = c["branch"] + (f" (PR #{c['pull_request']})" if c["pull_request"] else "")
        lines.append(
            f"| {c['index']} | {c['name']}{' (test fails)' if c['fails'] else ''} | {branch} | "
            f"{warm['steps_cached']}/{warm['steps_total']}, {warm['wall_s']:.1f}s{'' if warm['ok'] else ', failed'} | "
            + " | ".join(cell(by.get((s, a, c["index"])), warm["steps_cached"]) for s, a in pairs)
            + " |"
        )
    lines += [
        "",
        "| strategy | agent | steps cached / ideal | short (commits) | wall | x warm |",
        "|---|---|---|---|---|---|",
    ]
    for r in document["rows"]:
        ratio = r["wall_s"] / r["warm_wall_s"] if r["warm_wall_s"] else 0.0
        lines.append(
            f"| {LABELS[r['strategy']]} | {r['agent']} | {r['steps_cached']}/{r['steps_ideal']} | "
            f"{r['steps_short']} ({r['commits_short']}) | {r['wall_s']:.1f}s | {ratio:.2f}x |"
        )
    shortfalls = []
    for b in builds:
        warm = by[(WARM, "warm", b["commit"])]
        if b["strategy"] == WARM or b["steps_cached"] >= warm["steps_cached"]:
            continue
        stages = ", ".join(
            f"{stage} {got[0]}/{warm['stages'][stage][0]}"
            for stage, got in sorted(b["stages"].items())
            if stage in warm["stages"] and got[0] < warm["stages"][stage][0]
        )
        shortfalls.append(
            f"- commit {b['commit']} ({commits[b['commit']]['name']}), {LABELS[b['strategy']]}, {b['agent']}: "
            f"{b['steps_cached']}/{warm['steps_cached']}" + (f" ({stages})" if stages else "")
        )
    lines += ["", "Short of the ideal (stage: cached / the warm agent's):", "", *(shortfalls or ["- none"])]
    if meta.get("retries"):
        lines += ["", "Built again after a known race: " + "; ".join(meta["retries"])]
    surprises = [b for b in builds if b["ok"] != b["expected_ok"]]
    if surprises:
        lines += ["", "Builds that failed though their commit is good (counted as they are):", ""]
        lines += [
            f"- commit {b['commit']}, {LABELS[b['strategy']]}, {b['agent']}: {b.get('error') or 'no error line'}"
            for b in surprises
        ]
    agents = meta.get("daemons")
    if agents:
        lines += [
            "",
            f"Private daemons: {agents['count']} started, {agents['start_median_s']:.2f}s median to answer "
            f"`docker info`, {agents['stop_median_s']:.2f}s median to stop and remove (not in the wall times).",
        ]
    return "\n".join(lines) + "\n"


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def make_replay(
    kind: str, work: Path, logs: Path, history: Sequence[Commit], scale: int, values: Mapping[str, str], s3: Any
) -> Replay:
    """A replay with a registry (started) and an S3 bucket of its own."""
    registry = Registry(work / kind / "registry", free_port())
    registry.start()
    bucket = f"seq-{kind}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    return Replay(
        scale,
        work / kind,
        registry,
        values["DOCKERCACHE_S3_ENDPOINT"],
        values["DOCKERCACHE_BASE_IMAGE"],
        bucket,
        s3,
        history=history,
        logs=logs,
        kind=kind,
    )


def document(run: Run, quick: bool, scale: int, started: float) -> dict[str, Any]:
    starts = [s for s, _ in run.daemon_seconds]
    stops = [s for _, s in run.daemon_seconds if s]
    return {
        "meta": {
            "quick": quick,
            "scale": scale,
            "strategies": list(run.strategies),
            "agents": list(run.agents),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "retries": run.retries,
            "daemons": {
                "count": len(starts),
                "start_median_s": median(starts),
                "stop_median_s": median(stops),
            },
            "total_seconds": round(time.monotonic() - started, 1),
        },
        "rows": summarise(run.history, run.builds),
        "commits": [
            {
                "index": i,
                "name": c.name,
                "change": c.change,
                "parent": c.parent,
                "branch": c.branch,
                "pull_request": c.pull_request,
                "fails": c.fails,
            }
            for i, c in enumerate(run.history)
        ],
        "builds": run.builds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four commits, the dockercache stores only, SCALE=1")
    parser.add_argument("--scale", type=int, default=None, help="project size and step durations (default 4; quick 1)")
    parser.add_argument("--only", default=None, help=f"comma-separated, of: {', '.join(STRATEGIES)}")
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated, of: fresh, long-lived")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--logs", type=Path, default=None, help="keep every build's output here (default: a temp dir)")
    parser.add_argument("--render", action="store_true", help="write sequence.md again from sequence.json, no build")
    args = parser.parse_args(argv)
    name = "sequence-quick" if args.quick else "sequence"
    if args.render:
        (args.out / f"{name}.md").write_text(markdown(json.loads((args.out / f"{name}.json").read_text())))
        return 0
    default = QUICK_STRATEGIES if args.quick else STRATEGIES
    strategies = [s.strip() for s in args.only.split(",")] if args.only else list(default)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    if set(strategies) - set(STRATEGIES) or not strategies:
        parser.error(f"--only: one or more of {', '.join(STRATEGIES)}")
    if set(agents) - set(AGENTS) or not agents:
        parser.error(f"--agents: one or more of {', '.join(AGENTS)}")
    problem = preflight()
    if problem:
        print(f"sequence: {problem}: every agent here is a private dockerd", file=sys.stderr)
        return 1
    history = QUICK if args.quick else FULL
    scale = args.scale or (1 if args.quick else 4)
    values = stack_values()
    s3 = s3_client(values)
    work = Path(tempfile.mkdtemp(prefix="dockercache-sequence-"))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="dockercache-sequence-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    replays: dict[str, Replay] = {}
    run = Run(history, strategies, agents, replays, log)
    try:
        for kind in ("warm", *agents):
            replays[kind] = make_replay(kind, work, logs, history, scale, values, s3)
        run.replay()
    finally:
        run.close()
        for replay in replays.values():
            replay.registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = document(run, args.quick, scale, started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    log(f"build logs: {logs}")
    if not args.quick and args.out.resolve() == OUT:
        import readme  # benchmarks/readme.py: a README that shows these sums gets them from this file only

        if readme.SEQUENCE_MARKER in readme.README.read_text():
            readme.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
