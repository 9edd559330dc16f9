"""Write the benchmark figures of the README and docs/benchmarks.md from the committed results, so that no figure
there is typed by hand.

Each generated block sits between ``<!-- benchmark:NAME -->`` and ``<!-- /benchmark:NAME -->`` in the document
that shows it (:data:`DOCUMENTS`): ``table`` (every strategy and change, from results.json), ``figures`` (the
comparisons docs/benchmarks.md's prose refers to, from results.json), ``example`` (examples/ruby, from
example.md), ``cache-mounts`` (from cache-mounts.md, written by benchmarks/cache_mounts.py) and ``cold-start``
(from cold-start.md, written by benchmarks/cold_start.py) in docs/benchmarks.md; ``sequence``
(benchmarks/sequence.py's sums, from sequence.json), the README's comparison with the alternatives, where a
document has its marker. A block is written into whichever document holds its marker. ``bench.py`` rewrites them
after a full run; ``python benchmarks/readme.py`` does it by hand and ``--check`` exits 1 when a document differs
(tests/test_benchmark_readme.py runs the check).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCHMARKS_DOC = ROOT / "docs" / "benchmarks.md"
DOCUMENTS = (README, BENCHMARKS_DOC)
"""The documents that hold generated blocks, each block in the one that has its marker."""
RESULTS = ROOT / "benchmarks" / "results" / "results.json"
EXAMPLE = ROOT / "benchmarks" / "results" / "example.md"
CACHE_MOUNTS = ROOT / "benchmarks" / "results" / "cache-mounts.md"
SEQUENCE = ROOT / "benchmarks" / "results" / "sequence.json"
COLD_START = ROOT / "benchmarks" / "results" / "cold-start.md"
"""benchmarks/cold_start.py's full run: the ``cold-start`` block, when it has been run."""
SEQUENCE_MARKER = "<!-- benchmark:sequence -->"
"""The ``sequence`` block (benchmarks/sequence.py's sums) is generated where a document has this marker."""

LABELS = {
    "no-cache": "no cache",
    "inline": "inline cache",
    "old-plugin-s3-tarball": "old plugin (S3 tarball)",
    "compose-plugin-v5": "docker-compose plugin v5 (one ref, final only)",
    "hand-written-bake": "hand-written bake (a registry ref per target)",
    "dockercache-registry": "**dockercache, registry**",
    "dockercache-registry-skip": "**dockercache, registry, skip_unchanged**",
    "dockercache-s3": "**dockercache, S3**",
    "warm-local": "warm local rebuild",
}
CHANGE_LABELS = {"none": "no change", "one-file": "one-file change", "dependency": "dependency change"}
WARM, HAND, REGISTRY, S3, INLINE, OLD, SKIP = (
    "warm-local",
    "hand-written-bake",
    "dockercache-registry",
    "dockercache-s3",
    "inline",
    "old-plugin-s3-tarball",
    "dockercache-registry-skip",
)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


class Results:
    """The rows of one results.json, by (strategy, change)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.meta: Mapping[str, Any] = document["meta"]
        self.rows: dict[tuple[str, str], Mapping[str, Any]] = {
            (r["strategy"], r["change"]): r for r in document["rows"]
        }
        self.changes = [c for c in CHANGE_LABELS if any(k[1] == c for k in self.rows)]
        self.strategies = [s for s in LABELS if any(k[0] == s for k in self.rows)]

    def get(self, strategy: str, change: str) -> Mapping[str, Any] | None:
        return self.rows.get((strategy, change))

    def median(self, strategy: str, change: str) -> float:
        return float(self.rows[(strategy, change)]["median_s"])


def table(results: Results) -> str:
    meta = results.meta
    head = f"Full run of {meta['date']}: " if not meta["quick"] else f"Quick run of {meta['date']}: "
    repeats = meta["repeats"]
    headline = meta.get("headline_repeats") or repeats
    lines = [
        head + f"median wall time over {repeats} fresh-agent builds per cell ({headline} for "
        f"{', '.join(s for s in meta.get('headline', []) if s in results.strategies) or 'every strategy'}), "
        "min-max, and the ratio to a warm local rebuild on the same agent.",
        "",
        "| strategy | " + " | ".join(CHANGE_LABELS[c] for c in results.changes) + " |",
        "|---|" + "---|" * len(results.changes),
    ]
    for strategy in results.strategies:
        cells = []
        for change in results.changes:
            row = results.get(strategy, change)
            if row is None:
                cells.append("-")
                continue
            spread = f"{row['median_s']:.1f}s ({row['min_s']:.1f}-{row['max_s']:.1f}, n={row['runs']})"
            ratio = row.get("ratio_to_warm")
            cells.append(spread if strategy == WARM or ratio is None else f"{spread}, {ratio:.2f}x")
        lines.append(f"| {LABELS[strategy]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(results: Results) -> str:
    """The comparisons the README's prose is about, each computed here."""
    lines = []
    have = {s for s, _ in results.rows}
    if {REGISTRY, HAND} <= have:
        parts = [
            f"{CHANGE_LABELS[c]} {_x(results.median(REGISTRY, c), results.median(HAND, c))} "
            f"({results.median(REGISTRY, c):.1f}s / {results.median(HAND, c):.1f}s)"
            for c in results.changes
        ]
        lines.append("- dockercache (registry store) against the hand-written bake: " + "; ".join(parts) + ".")
    if {REGISTRY, WARM} <= have and "one-file" in results.changes:
        r, w = results.median(REGISTRY, "one-file"), results.median(WARM, "one-file")
        lines.append(f"- One-file change on a fresh agent, registry store: {_x(r, w)} a warm local rebuild.")
    if {S3, REGISTRY} <= have:
        parts = []
        for c in results.changes:
            s3, reg = results.rows[(S3, c)], results.rows[(REGISTRY, c)]
            down = f", bytes down {_x(s3['down_bytes'], reg['down_bytes'])}" if reg["down_bytes"] else ""
            parts.append(f"{CHANGE_LABELS[c]} {_x(s3['median_s'], reg['median_s'])}{down}")
        lines.append("- S3 store against the registry store on the same builds: " + "; ".join(parts) + ".")
    if {S3, OLD} <= have and "one-file" in results.changes:
        s3, old = results.rows[(S3, "one-file")], results.rows[(OLD, "one-file")]
        registry_part = f" (with the image push to the registry: {_mb(s3['up_bytes'])})"
        cache_up = s3.get("s3_up_bytes")
        if cache_up is not None:
            same = ""
            if REGISTRY in have:  # the registry store's new blobs: its cache and the image, stored once
                reg = results.rows[(REGISTRY, "one-file")]["up_bytes"]
                same = (
                    f"; the registry store adds {_mb(reg)} of new blobs (cache and image) on the same build "
                    f"({_x(cache_up, reg)}): the layers the change rebuilt, which every cache must store"
                )
            lines.append(
                f"- S3 uploads after a one-file change: {_mb(cache_up)} of cache{registry_part}, against the old "
                f"plugin's {_mb(old['up_bytes'])} tarball ({cache_up / old['up_bytes']:.1%}){same}."
            )
    if {SKIP, REGISTRY} <= have and "none" in results.changes:
        skip, built = results.rows[(SKIP, "none")], results.rows[(REGISTRY, "none")]
        ratio = _x(skip["median_s"], built["median_s"])
        lines.append(
            f"- Nothing changed, skip_unchanged on: {skip['median_s']:.1f}s (a retag, nothing built), against "
            f"{built['median_s']:.1f}s for the registry store building from its cache ({ratio})."
        )
    if {REGISTRY, INLINE} <= have and "none" in results.changes:
        nothing, inline = results.rows[(REGISTRY, "none")], results.rows[(INLINE, "none")]
        lines.append(
            f"- Nothing changed: registry store {nothing['median_s']:.1f}s with {nothing['cached']:.0f}/"
            f"{nothing['total']:.0f} "
            f"steps cached, inline cache {inline['median_s']:.1f}s with {inline['cached']:.0f}/"
            f"{inline['total']:.0f}."
        )
    overhead = results.meta.get("overhead")
    if overhead:
        lines.append(
            f"- `dockercache plan` from a cold start: {overhead['plan_median_s']:.2f}s median "
            f"({overhead['plan_min_s']:.2f}-{overhead['plan_max_s']:.2f})."
        )
    own = []
    for store in (REGISTRY, S3):
        cells = [(c, results.get(store, c)) for c in results.changes]
        times = [
            f"{CHANGE_LABELS[c]} {row.get('own_s', row.get('overhead_s')):.2f}s"
            for c, row in cells
            if row and row.get("own_s", row.get("overhead_s")) is not None
        ]
        if times:
            own.append(f"{store.removeprefix('dockercache-')}: " + ", ".join(times))
    if own:
        lines.append(
            "- dockercache's own time (the build's wall time minus the bake it drives; goal <= 0.3s with the registry "
            "store, <= 0.5s with S3): " + "; ".join(own) + "."
        )
    for store in (REGISTRY, S3, SKIP):
        ratios = [
            f"{CHANGE_LABELS[c]} {row['ratio_to_best_anchor']:.2f}x"
            for c in results.changes
            if (row := results.get(store, c)) is not None and row.get("ratio_to_best_anchor") is not None
        ]
        if ratios:
            lines.append(
                f"- {LABELS[store].strip('*')} against the faster of the hand-written bake and the compose plugin: "
                + "; ".join(ratios)
                + "."
            )
    lines += below_warm(results)
    retries = results.meta.get("retries") or []
    if retries:
        lines.append(
            f"- Builds retried after a known BuildKit race (moby/buildkit#3635), every strategy seeded again: "
            f"{len(retries)}."
        )
    return "\n".join(lines)


def below_warm(results: Results) -> list[str]:
    """Where the warm local rebuild is not a lower bound, and whether the runs' spread explains it."""
    lines = []
    for change in results.changes:
        warm = results.get(WARM, change)
        if warm is None:
            continue
        for strategy in results.strategies:
            row = results.get(strategy, change)
            if strategy == WARM or row is None or row["median_s"] >= warm["median_s"]:
                continue
            overlap = row["max_s"] >= warm["min_s"] and row["min_s"] <= warm["max_s"]
            why = (
                "within the spread of repeated runs: both run the same changed steps, so this is noise"
                if overlap
                else "outside the spread of repeated runs: not explained by noise (not investigated)"
            )
            lines.append(
                f"- The warm local rebuild is not a lower bound for {LABELS[strategy].strip('*')} on a "
                f"{CHANGE_LABELS[change]}: {row['median_s']:.1f}s ({row['min_s']:.1f}-{row['max_s']:.1f}) against "
                f"{warm['median_s']:.1f}s ({warm['min_s']:.1f}-{warm['max_s']:.1f}), {why}."
            )
    return lines


def sequence(document: Mapping[str, Any]) -> str:
    """benchmarks/sequence.py's sums: per strategy and agent kind, steps cached against the warm agent's, and
    wall time against the warm agent's over the same commits."""
    meta = document["meta"]
    labels = {**LABELS, "compose-plugin-v5": "docker-compose plugin v5 (one ref)"}
    lines = [
        f"{'Full' if not meta['quick'] else 'Quick'} run of {meta['date']}: {len(document['commits'])} commits in a "
        "row, each built on a fresh agent (a new dockerd, empty data root) and on one long-lived agent (pruned and "
        "its images removed between jobs); the ideal is what a warm agent that built every earlier commit had cached.",
        "",
        "| strategy | agent | steps cached / ideal | commits short of it | wall, sum | x warm |",
        "|---|---|---|---|---|---|",
    ]
    for row in document["rows"]:
        if row["strategy"] == WARM:
            continue
        lines.append(
            f"| {labels[row['strategy']]} | {row['agent']} | {row['steps_cached']}/{row['steps_ideal']} | "
            f"{row['commits_short']} | {row['wall_s']:.1f}s | {_x(row['wall_s'], row['warm_wall_s'])} |"
        )
    warm = next((r for r in document["rows"] if r["strategy"] == WARM), None)
    if warm:
        lines.append(
            f"| {labels[WARM]} | warm | {warm['steps_cached']}/{warm['steps_ideal']} | 0 | {warm['wall_s']:.1f}s | - |"
        )
    return "\n".join(lines)


def example(text: str) -> str:
    """example.md without its heading."""
    return "\n".join(line for line in text.strip().splitlines() if not line.startswith("# ")).strip()


def blocks(results: Mapping[str, Any], example_md: str, mounts_md: str | None = None) -> dict[str, str]:
    parsed = Results(results)
    generated = {"table": table(parsed), "figures": figures(parsed), "example": example(example_md)}
    if mounts_md is not None:
        generated["cache-mounts"] = example(mounts_md)
    return generated


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + body + "\n" + m.group(2)


def render(readme: str, generated: Mapping[str, str]) -> str:
    """``readme`` (any document) with each of the ``generated`` blocks rewritten; each must be there."""
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- benchmark:{name} -->\n)(?:.*?\n)?(<!-- /benchmark:{name} -->)", re.DOTALL)
        if not pattern.search(readme):
            raise ValueError(f"the document has no <!-- benchmark:{name} --> block")
        readme = pattern.sub(_replacement(body), readme)
    return readme


def render_all(documents: Mapping[Path, str], generated: Mapping[str, str]) -> dict[Path, str]:
    """Each document with the blocks whose markers it holds rewritten; a block no document holds is an error."""
    placed: dict[Path, dict[str, str]] = {path: {} for path in documents}
    for name, body in generated.items():
        holders = [path for path, text in documents.items() if f"<!-- benchmark:{name} -->" in text]
        if not holders:
            raise ValueError(f"no document has a <!-- benchmark:{name} --> block ({', '.join(map(str, documents))})")
        for path in holders:
            placed[path][name] = body
    return {path: render(text, placed[path]) for path, text in documents.items()}


def expected(
    documents: Sequence[Path] = DOCUMENTS,
    results: Path = RESULTS,
    example_md: Path = EXAMPLE,
    mounts_md: Path = CACHE_MOUNTS,
) -> tuple[dict[Path, str], dict[Path, str]]:
    """(the documents as they are, the documents as the committed results make them)."""
    texts = {path: path.read_text() for path in documents}
    generated = blocks(json.loads(results.read_text()), example_md.read_text(), mounts_md.read_text())
    if any(SEQUENCE_MARKER in text for text in texts.values()):
        generated["sequence"] = sequence(json.loads(SEQUENCE.read_text()))
    if COLD_START.exists():
        generated["cold-start"] = example(COLD_START.read_text())
    return texts, render_all(texts, generated)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a document differs from the results")
    parser.add_argument(
        "--sequence", action="store_true", help="print the sequence block (from sequence.json) and exit"
    )
    args = parser.parse_args(argv)
    if args.sequence:
        print(SEQUENCE_MARKER + "\n" + sequence(json.loads(SEQUENCE.read_text())) + "\n<!-- /benchmark:sequence -->")
        return 0
    current, wanted = expected()
    differ = [path for path in current if current[path] != wanted[path]]
    if args.check:
        for path in differ:
            print(f"{path.relative_to(ROOT)}: its benchmark blocks differ from the results (run benchmarks/readme.py)")
        return 1 if differ else 0
    for path in differ:
        path.write_text(wanted[path])
        print(f"{path.relative_to(ROOT)}: benchmark blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
