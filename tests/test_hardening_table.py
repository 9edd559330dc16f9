"""The hardening suite's table (tests/conftest.py) counts a case whose teardown errors as failed."""

from __future__ import annotations

import pytest

from .conftest import ROOT

pytest_plugins = ["pytester"]


def test_a_teardown_error_counts_as_a_failed_case(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(
        "from tests.conftest import pytest_configure, pytest_runtest_makereport, pytest_terminal_summary  # noqa\n"
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def breaks_on_teardown():
            yield
            raise RuntimeError("teardown failed")

        @pytest.mark.hardening("faults")
        def test_passes_then_teardown_fails(breaks_on_teardown):
            pass

        @pytest.mark.hardening("faults")
        def test_passes():
            pass

        @pytest.mark.hardening("faults")
        def test_fails():
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    table = [line.split() for line in result.outlines if line.startswith(("faults", "total"))]
    assert table == [["faults", "3", "1", "2"], ["total", "3", "1", "2"]], result.outlines
