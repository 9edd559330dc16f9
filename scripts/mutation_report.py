"""Write tests/mutation.md from the results of ``mutmut run`` (``invoke mutate`` runs both).

Reads ``mutants/<module>.meta`` for every module of ``[tool.mutmut] only_mutate`` in pyproject.toml and
writes, per module, the mutants, how many the tests killed, how many survived, and every survivor with its
line, its mutation and its verdict: equivalent (the reason is in :data:`EQUIVALENT` below, by mutant name)
or UNEXPLAINED (a test is missing, or a reason is).

``--baseline FILE`` (a JSON list of mutant names, e.g. the survivors of an earlier run as written by
``--save-survivors``) adds a section naming, for each of them that is killed now, the test that kills it:
each is run again, alone, with the tests mutmut found covering its function. Without ``--baseline`` that
section is carried over from the existing report.

Run from the project root, after ``mutmut run``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
HISTORY_START = "<!-- history:start -->"
HISTORY_END = "<!-- history:end -->"

_TOP = "the document's top level is the Config table, which `_convert_table` checks, never a bare value"
_OPTIONAL = "every optional field is `X | None` with one X, and `Union[(X,)]` is X"
_FORM = "the only field with a pattern (`listen`) has a form, so the default is never shown"
_EMPTY = "None and '' are both an empty path: `dotted` and `or` treat them alike"

#: Survivors that no test can kill, by mutant name (mutmut numbers mutants per function, in source order;
#: a name goes stale when its function changes, and the survivor then shows as UNEXPLAINED until checked).
EQUIVALENT: dict[str, str] = {
    # config.py
    "dockercache.config.fields.x_suggest__mutmut_8": (
        "only the best match is shown; `n` limits how many difflib returns"
    ),
    "dockercache.config.fields.x_suggest__mutmut_9": "0.6 is difflib's default cutoff",
    "dockercache.config.fields.x_suggest__mutmut_11": "only the best match is shown; `n` limits difflib's answers",
    # loader.py
    "dockercache.config.load.x_load_config__mutmut_5": (
        "the default encoding is UTF-8 on every machine this runs on (UTF-8 locale or Python's UTF-8 mode)"
    ),
    "dockercache.config.load.x_load_config__mutmut_7": "codec names are case-insensitive",
    "dockercache.config.load.x_parse_config__mutmut_28": _EMPTY,
    "dockercache.config.load.x_parse_config__mutmut_38": _EMPTY,
    "dockercache.config.load.x__convert__mutmut_3": _TOP,
    "dockercache.config.load.x__convert__mutmut_4": _TOP,
    "dockercache.config.load.x__convert__mutmut_19": _OPTIONAL,
    "dockercache.config.load.x__convert__mutmut_20": _OPTIONAL,
    "dockercache.config.load.x__convert__mutmut_22": _OPTIONAL,
    "dockercache.config.load.x__convert__mutmut_23": _OPTIONAL,
    "dockercache.config.load.x__convert__mutmut_24": _OPTIONAL + " (the branch is never taken)",
    "dockercache.config.load.x__convert__mutmut_121": (
        "unreachable: raised only for an annotation config.py does not use (a bug in the definitions)"
    ),
    "dockercache.config.convert.x__convert_table__mutmut_3": "unreachable: a TOML document is always a table",
    "dockercache.config.convert.x__convert_table__mutmut_4": "unreachable: a TOML document is always a table",
    "dockercache.config.convert.x__check_limits__mutmut_25": _FORM,
    "dockercache.config.convert.x__check_limits__mutmut_27": _FORM,
    "dockercache.config.convert.x__check_limits__mutmut_30": _FORM,
    "dockercache.config.convert.x__check_limits__mutmut_31": _FORM,
    "dockercache.config.load.x__check_references__mutmut_106": "any maxsplit gives the same last path segment",
    "dockercache.config.load.x__check_references__mutmut_109": "any maxsplit gives the same last path segment",
    "dockercache.config.load.x__check_references__mutmut_107": (
        "differs only for a ':' in a middle path segment, which no valid repository has"
    ),
    # interpolation.py
    "dockercache.config.interpolate.x_interpolate_tree__mutmut_8": (
        "unreachable from the loader: it passes a table, and every value inside has a non-empty dotted key"
    ),
    "dockercache.config.interpolate.x_interpolate_tree__mutmut_9": (
        "unreachable from the loader: it passes a table, and every value inside has a non-empty dotted key"
    ),
    # dockerfile.py
    "dockercache.planning.dockerfile.x_logical_lines__mutmut_10": (
        "a comment line is dropped by the next check (`if stripped.startswith('#')`) anyway"
    ),
    "dockercache.planning.dockerfile.x__mount_sources__mutmut_20": (
        "differs only for a from= value containing '=', which no stage name or image reference has"
    ),
    "dockercache.planning.dockerfile.x_stage_graph__mutmut_22": (
        "a stage that names itself is already in the graph: it is pushed again only to be skipped as seen"
    ),
}

#: Survivors left alive on purpose: the code they mutate is wrong, and a test of the right behaviour waits for
#: the fix (each is reported as a bug).
KNOWN_BUGS: dict[str, str] = {
    "dockercache.config.load.x__check_references__mutmut_113": (
        "the message is not an f-string: it prints `caches.{name}.tag` literally; a test of the right text "
        "waits for the fix"
    ),
    "dockercache.config.load.x__check_references__mutmut_114": (
        "the message is not an f-string: it prints `caches.{name}.tag` literally; a test of the right text "
        "waits for the fix"
    ),
}


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    status: str
    line: int | None
    change: str


def statuses() -> dict[int | None, str]:
    from mutmut.stats import status_by_exit_code

    return dict(status_by_exit_code)


def mutable_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def function_span(source: str, mutant: str) -> tuple[int, int] | None:
    """Lines of the function a mutant (``x_func__mutmut_3`` or ``xǁClassǁmethod__mutmut_3``) mutates."""
    mangled = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    if "ǁ" in mangled:
        _, cls, func = mangled.split("ǁ")
    else:
        cls, func = "", mangled.removeprefix("x_")
    for node in ast.walk(ast.parse(source)):
        if cls and isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == func:
                    return item.lineno, item.end_lineno or item.lineno
        if not cls and isinstance(node, ast.FunctionDef) and node.name == func:
            return node.lineno, node.end_lineno or node.lineno
    return None


def compact(old: str, new: str, context: int = 24) -> str:
    """The changed part of a line and some context around it: ``old`` → ``new``."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    start = max(0, prefix - context)

    def cut(text: str) -> str:
        end = min(len(text), len(text) - suffix + context)
        return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")

    return f"`{cut(old)}` → `{cut(new)}`".replace("|", "\\|")


def describe(name: str, module: str, source: str) -> tuple[int | None, str]:
    """The line a mutant changes and the change, from mutmut's diff of the function."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=module).splitlines()[2:]
    removed = [d[1:] for d in diff if d.startswith("-")]
    added = [d[1:] for d in diff if d.startswith("+")]
    old = " ⏎ ".join(r.strip() for r in removed)
    new = " ⏎ ".join(a.strip() for a in added)
    line = None
    span = function_span(source, name)
    if removed and span:
        lines = source.splitlines()
        first = removed[0].strip()
        line = next((n for n in range(span[0], span[1] + 1) if lines[n - 1].strip() == first), None)
    return line, compact(old, new)


def collect() -> dict[str, list[Mutant]]:
    names = statuses()
    results: dict[str, list[Mutant]] = {}
    for module in mutable_modules():
        meta = ROOT / "mutants" / f"{module}.meta"
        if not meta.exists():
            raise SystemExit(f"{meta.relative_to(ROOT)}: missing; run `mutmut run` (or `invoke mutate`) first")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        source = (ROOT / module).read_text()
        mutants = []
        for name, code in codes.items():
            status = names.get(code, "suspicious")
            line, change = describe(name, module, source) if status != "killed" else (None, "")
            mutants.append(Mutant(name, module, status, line, change))
        results[module] = mutants
    return results


def killers(names: list[str]) -> dict[str, str]:
    """The first test that fails with each mutant switched on (run in mutants/, as mutmut runs them)."""
    import pytest

    stats = json.loads((ROOT / "mutants" / "mutmut-stats.json").read_text())
    tests_by_function: dict[str, list[str]] = stats["tests_by_mangled_function_name"]

    class FirstFailure:
        def __init__(self) -> None:
            self.nodeid = ""

        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.failed and not self.nodeid:
                self.nodeid = report.nodeid

    os.chdir(ROOT / "mutants")
    sys.path.insert(0, str(ROOT / "mutants"))
    found = {}
    for name in names:
        tests = sorted(tests_by_function.get(name.partition("__mutmut_")[0], []))
        if not tests:
            continue
        os.environ["MUTANT_UNDER_TEST"] = name
        collector = FirstFailure()
        pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--rootdir=.", "--no-header", *tests], plugins=[collector])
        found[name] = collector.nodeid
    os.environ.pop("MUTANT_UNDER_TEST", None)
    os.chdir(ROOT)
    return found


def short(module: str) -> str:
    return module.removeprefix("dockercache/")


def history(results: dict[str, list[Mutant]], baseline: list[str]) -> str:
    by_name = {m.name: m for mutants in results.values() for m in mutants}
    now_killed = [n for n in baseline if n in by_name and by_name[n].status == "killed"]
    found = killers(now_killed)
    old_results = {n: by_name[n] for n in now_killed}
    lines = [
        HISTORY_START,
        "## Survivors of the first run, and the tests that kill them now",
        "",
        f"The first full run left {len(baseline)} survivors (no test failed, or no test ran the function). "
        f"{len(now_killed)} of them are killed now; each was run again alone to name the test that kills it.",
        "",
    ]
    for module in results:
        rows = [n for n in now_killed if old_results[n].module == module]
        if not rows:
            continue
        lines += [f"### {short(module)} ({len(rows)})", "", "| line | mutation | killed by |", "|---|---|---|"]
        sources = (ROOT / module).read_text()
        for name in rows:
            line, change = describe(name, module, sources)
            test = found.get(name) or "(no covering test failed when run alone)"
            lines.append(f"| {short(module)}:{line or '?'} | {change} | `{test}` |")
        lines.append("")
    lines.append(HISTORY_END)
    return "\n".join(lines)


def carried_history(output: Path) -> str:
    if not output.exists():
        return ""
    text = output.read_text()
    match = re.search(re.escape(HISTORY_START) + r".*?" + re.escape(HISTORY_END), text, re.DOTALL)
    return match.group(0) if match else ""


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "not measured"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def render(results: dict[str, list[Mutant]], seconds: int | None, workers: int, history_text: str) -> str:
    total = sum(len(m) for m in results.values())
    out = [
        "# Mutation testing",
        "",
        "Generated by `invoke mutate` (`scripts/mutation_report.py`); the reasons for equivalent mutants live in "
        "that script.",
        "",
        f"- **Tool**: mutmut {version('mutmut')} (`pip install -e '.[mutation]'`). It works with this layout as "
        "it is: it copies the package and the tests into `mutants/`, switches each mutant on in-process through "
        "a trampoline, and runs only the tests that it saw calling the mutated function, so a full run of the "
        "pure core takes minutes on one core; cosmic-ray would run the whole selected suite for each mutant.",
        "- **Command**: `invoke mutate` (`mutmut run --max-children 1`, configured in `[tool.mutmut]` in "
        "pyproject.toml, then this report). Tests: the fast unit tests only, everything under `tests/` but "
        "`tests/e2e` and `tests/hardening`; no Docker, registry or S3.",
        f"- **Last full run**: {date.today().isoformat()}, {total} mutants in {duration(seconds)} on "
        f"{os.cpu_count()} cores with {workers} worker ({platform.python_implementation()} "
        f"{platform.python_version()}). Not in CI: too slow for every submission; run it when the core changes.",
        "- **Not mutated**: the two field helpers and `_doc` in config.py (`do_not_mutate_patterns`): they run "
        "only while the dataclasses are defined, at import, and mutmut switches mutants on per call after "
        "import, so none of their mutants could ever be on. Their defaults are asserted by test_loader's "
        "tests and their docs by test_schema's.",
        "- **Survivors %** counts mutants that survived and mutants no test reached (no tests) against all of "
        "the module's mutants.",
        "",
        "| module | mutants | killed | survived | no tests | timeout | other | survivors % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for module, mutants in results.items():
        count = Counter(m.status for m in mutants)
        other = len(mutants) - count["killed"] - count["survived"] - count["no tests"] - count["timeout"]
        missed = count["survived"] + count["no tests"]
        share = 100 * missed / len(mutants) if mutants else 0.0
        out.append(
            f"| {module} | {len(mutants)} | {count['killed']} | {count['survived']} | {count['no tests']} | "
            f"{count['timeout']} | {other} | {share:.1f} % |"
        )
    out += ["", "## Survivors of the last run", ""]
    unexplained = 0
    for module, mutants in results.items():
        left = [m for m in mutants if m.status not in ("killed", "timeout", "caught by type check")]
        out.append(f"### {short(module)} ({len(left)})")
        out.append("")
        if not left:
            out += ["None.", ""]
            continue
        out += ["| line | mutant | mutation | status | verdict |", "|---|---|---|---|---|"]
        for m in left:
            if m.name in EQUIVALENT:
                verdict = f"equivalent: {EQUIVALENT[m.name]}"
            elif m.name in KNOWN_BUGS:
                verdict = f"known bug: {KNOWN_BUGS[m.name]}"
            else:
                verdict = "**UNEXPLAINED**"
                unexplained += 1
            where = f"{short(module)}:{m.line or '?'}"
            verdict = verdict.replace("|", "\\|")
            out.append(f"| {where} | `{m.name.rpartition('.')[2]}` | {m.change} | {m.status} | {verdict} |")
        out.append("")
    if history_text:
        out += [history_text, ""]
    if unexplained:
        print(f"mutation report: {unexplained} survivor(s) without a test or a reason", file=sys.stderr)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=ROOT / "tests" / "mutation.md")
    parser.add_argument("--seconds", type=int, help="how long the mutmut run took")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="JSON list of mutant names that survived an earlier run")
    parser.add_argument("--save-survivors", type=Path, help="write the survivors' names as JSON, and stop")
    args = parser.parse_args()
    os.chdir(ROOT)
    results = collect()
    if args.save_survivors:
        names = [m.name for ms in results.values() for m in ms if m.status in ("survived", "no tests")]
        args.save_survivors.write_text(json.dumps(names, indent=0) + "\n")
        return
    output = args.output if args.output.is_absolute() else ROOT / args.output
    history_text = history(results, json.loads(args.baseline.read_text())) if args.baseline else ""
    history_text = history_text or carried_history(output)
    output.write_text(render(results, args.seconds, args.workers, history_text) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
