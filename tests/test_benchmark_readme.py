"""The benchmark figures of the README and docs/benchmarks.md are generated from the committed results
(benchmarks/readme.py)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


readme = load("readme")
bench = load("bench")


def test_the_readme_shows_exactly_what_the_committed_results_say() -> None:
    current, wanted = readme.expected()
    assert set(current) == {readme.README, readme.BENCHMARKS_DOC}
    for path in current:
        assert current[path] == wanted[path], f"{path.name}'s benchmark blocks differ: run python benchmarks/readme.py"


def documents() -> dict[Path, str]:
    return {path: path.read_text() for path in readme.DOCUMENTS}


def test_each_block_lives_in_one_document_the_comparison_in_the_readme() -> None:
    """The README shows the comparison with the alternatives (the sequence block); the method and the other
    figures are in docs/benchmarks.md. Each block is written into the one document that holds its marker."""
    names = ["sequence", "table", "figures", "example", "cache-mounts"]
    where = {
        name: [p.name for p, text in documents().items() if f"<!-- benchmark:{name} -->" in text] for name in names
    }
    assert where == {
        "sequence": ["README.md"],
        "table": ["benchmarks.md"],
        "figures": ["benchmarks.md"],
        "example": ["benchmarks.md"],
        "cache-mounts": ["benchmarks.md"],
    }
    with pytest.raises(ValueError, match="benchmark:table"):
        readme.render_all({readme.README: documents()[readme.README]}, {"table": "x"})


def results() -> dict[str, Any]:
    return copy.deepcopy(json.loads(readme.RESULTS.read_text()))


def test_a_figure_changed_in_the_results_changes_the_readme() -> None:
    document = results()
    row = next(r for r in document["rows"] if r["strategy"] == "dockercache-registry" and r["change"] == "none")
    row["median_s"] = 123.4
    texts = readme.render_all(documents(), readme.blocks(document, readme.EXAMPLE.read_text()))
    text = texts[readme.BENCHMARKS_DOC]
    assert "123.4s" in text and text != readme.BENCHMARKS_DOC.read_text()
    assert texts[readme.README] == readme.README.read_text()  # the README holds no block of results.json


def test_a_missing_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="benchmark:table"):
        readme.render("no markers here\n", {"table": "x"})


def test_rendering_twice_changes_nothing() -> None:
    generated = readme.blocks(results(), readme.EXAMPLE.read_text())
    generated["sequence"] = readme.sequence(json.loads(readme.SEQUENCE.read_text()))
    once = readme.render_all(documents(), generated)
    assert readme.render_all(once, generated) == once


def row(strategy: str, change: str, median: float, low: float, high: float) -> dict[str, Any]:
    return {"strategy": strategy, "change": change, "median_s": median, "min_s": low, "max_s": high, "runs": 3}


def test_where_the_warm_rebuild_is_not_a_lower_bound_is_said_with_the_reason() -> None:
    document = {
        "meta": {"quick": False, "date": "d", "repeats": 3},
        "rows": [
            row("warm-local", "dependency", 14.0, 13.5, 14.5),
            row("inline", "dependency", 13.8, 13.6, 14.1),  # below, ranges overlap: noise
            row("no-cache", "dependency", 12.0, 11.9, 12.1),  # below, no overlap: said so
            row("dockercache-registry", "dependency", 17.0, 16.0, 18.0),  # above: not listed
        ],
    }
    lines = readme.below_warm(readme.Results(document))
    assert len(lines) == 2
    inline = next(line for line in lines if "for inline cache on a dependency change" in line)
    assert "noise" in inline and "13.8s (13.6-14.1) against 14.0s (13.5-14.5)" in inline
    no_cache = next(line for line in lines if "for no cache on a dependency change" in line)
    assert "not explained" in no_cache


def test_the_order_of_strategies_rotates_every_repeat() -> None:
    names = ["a", "b", "c"]
    orders = [bench.rotated(names, r) for r in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert {o[0] for o in orders[:3]} == set(names)  # each runs first once in three repeats
    assert bench.rotated([], 2) == []


def test_the_cache_mounts_block_is_computed_from_its_samples() -> None:
    mounts = load("cache_mounts")
    rows = [
        {"store": s, "variant": v, "deps_s": d, "wall_s": w, "restored_mb": r, "saved_mb": r}
        for s in mounts.STORES
        for v, d, w, r in (("with cache mounts", [1.0, 2.0, 1.5], [8.0, 8.0, 9.0], 14.7), ("without", [6.0], [12.0], 0))
    ]
    text = mounts.markdown({"finished": "now", "repeats": 3, "packages": 13, "rows": rows})
    assert "| registry | with cache mounts | 1.5s (1.0-2.0) | 8.0s | 14.7 MB | 14.7 MB |" in text
    assert "- s3: with cache mounts the dependency step is 4.0x faster, the build 1.5x." in text
    assert text.startswith("# Cache mounts figures\n\nFull run, now, 3 repeats")
    generated = readme.blocks(results(), readme.EXAMPLE.read_text(), text)
    assert readme.render_all(documents(), generated)[readme.BENCHMARKS_DOC].count("4.0x faster") == 2
