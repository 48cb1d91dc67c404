"""Outside CI a test that needs a missing binary skips, and the run's end says so loudly, naming the
binary, how to install it and the tests that did not run (tests/fixtures/binaries.py)."""

from __future__ import annotations

import pytest

NEEDS_A_MISSING_BINARY = """
from tests.fixtures.binaries import require_binary

def test_needs_it():
    require_binary("wva-no-such-binary", "apt-get install wva-no-such-binary")

def test_needs_nothing():
    pass
"""


def test_missing_binaries_are_named_in_a_banner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WVA_NO_SKIP", raising=False)
    pytester.makepyfile(test_inner=NEEDS_A_MISSING_BINARY)
    result = pytester.runpytest_inprocess(
        "-p", "tests.fixtures.binaries", "-p", "no:cacheprovider", "-p", "no:asyncio"
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*1 TESTS DID NOT RUN: BINARIES MISSING*",
            "wva-no-such-binary not found (apt-get install wva-no-such-binary); skipped 1:",
            "*test_inner.py::test_needs_it",
        ]
    )


def test_no_banner_when_nothing_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner="def test_fine():\n    pass\n")
    result = pytester.runpytest_inprocess(
        "-p", "tests.fixtures.binaries", "-p", "no:cacheprovider", "-p", "no:asyncio"
    )
    result.assert_outcomes(passed=1)
    assert "BINARIES MISSING" not in result.stdout.str()
