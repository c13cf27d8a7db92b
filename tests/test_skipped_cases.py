"""Cases that a conftest or another plugin marks to skip are skipped like any test."""

from __future__ import annotations


def test_a_skip_mark_added_to_cases_skips_them(pytester, mini_suite):
    mini_suite()
    pytester.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name in ("q2", "q4"):
                    item.add_marker(pytest.mark.skip(reason="not today"))
    """)
    result = pytester.runpytest("--ragbench=suite.yaml", "-rs")
    # pytest asks the item for its location to report a skip (an INTERNALERROR before)
    assert result.ret == 0
    result.assert_outcomes(passed=3, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED [[]2[]] suite.yaml*: not today"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
