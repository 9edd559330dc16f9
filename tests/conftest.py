"""Shared fixtures. The end-to-end ones are in tests/e2e/conftest.py and need the stack (scripts/stack.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def docker_shim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A `docker` first on PATH that records every call and then runs the real one."""
    shim = tmp_path_factory.mktemp("shim")
    log = shim / "calls.log"
    real = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    (shim / "docker").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (shim / "docker").chmod(0o755)
    return shim, log


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal project: a three-stage Dockerfile and room for a dockercache.toml."""
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE=busybox\n"
        "FROM ${BASE_IMAGE} AS base\nRUN true\n"
        "FROM base AS deps\nRUN true\n"
        "FROM deps AS final\nRUN true\n"
    )
    return tmp_path


# --------------------------------------------------------------------------- the hardening suite's table

HARDENING: dict[str, dict[str, int]] = {}
HARDENING_GROUPS = ("bad-config", "faults", "secrets", "poisoning", "fuzz")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardening(group): a case of the hardening suite, counted per group")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("hardening")
    if marker is None:
        return
    group = HARDENING.setdefault(marker.args[0], {"tried": 0, "passed": 0, "failed": 0, "examples": 0})
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        group["tried"] += 1
        group["passed" if report.passed else "failed"] += 1
    if report.when == "teardown":
        group["examples"] += int(getattr(item, "hardening_examples", 0))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not HARDENING:
        return
    write = terminalreporter.write_line
    write("")
    write("hardening suite: cases tried per group")
    write(f"{'group':<12} {'tried':>6} {'passed':>7} {'failed':>7}")
    totals = [0, 0, 0]
    for name in sorted(HARDENING, key=lambda g: HARDENING_GROUPS.index(g) if g in HARDENING_GROUPS else 99):
        g = HARDENING[name]
        extra = f"  ({g['examples']} generated documents)" if g["examples"] else ""
        write(f"{name:<12} {g['tried']:>6} {g['passed']:>7} {g['failed']:>7}{extra}")
        totals = [totals[0] + g["tried"], totals[1] + g["passed"], totals[2] + g["failed"]]
    write(f"{'total':<12} {totals[0]:>6} {totals[1]:>7} {totals[2]:>7}")
