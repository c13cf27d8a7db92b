"""Cases that a conftest or another plugin marks to skip are skipped like any test."""

from __future__ import annotations

import json

import pytest
from conftest import latest_run

from pytest_ragbench.cli import main as ragbench_main
from pytest_ragbench.report.rerender import rerender


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


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_run_whose_every_case_is_skipped_says_so(pytester, mini_suite, workers, capsys):
    """With no case run the summary, the verdict line and the run's files were left out:
    a green run that said nothing, and a run folder `latest` named that no command read."""
    mini_suite()
    pytester.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                item.add_marker(pytest.mark.skip(reason="no key in this environment"))
    """)
    result = pytester.runpytest("--ragbench=suite.yaml", *workers)
    assert result.ret == 0
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(["partial run: 0 of 5 cases ran",
                                 "ragbench: passed (partial: 0 of 5 cases)"])
    run = latest_run(pytester.path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"]["headline"] == "passed (partial: 0 of 5 cases)"
    assert (run / "summary.md").read_text().startswith(
        "## ragbench: passed (partial: 0 of 5 cases)")
    assert rerender(run)  # `ragbench report` reads the folder, `ragbench compare` too
    assert (run / "cases.jsonl").read_text() == ""
    assert ragbench_main(["compare", str(run), str(run)]) == 2  # nothing to compare
    err = capsys.readouterr().err
    assert "not a run folder" not in err
    # the suite is listed (0 of 5 cases ran), and is no baseline
    assert "the baseline: mini (no case of it ran))" in err, err
