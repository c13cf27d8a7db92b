"""Known failures (a suite's ``xfail`` key) end to end: the record says that a case was expected
to fail and how pytest reported it, with and without xdist, and the HTML report, the terminal
summary, the summary counts and the CSV show it as xfailed / xpassed, not as a failure."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import latest_run
from test_report_browser import CHROMIUM, DRIVER_PRELUDE, _drive
from test_report_html import data_block, make_record, make_summary

from pytest_ragbench.records import case_outcome, mark_expected_failure, xfail_outcome
from pytest_ragbench.report.html import render_html, write_html
from pytest_ragbench.results.aggregate import summarize_run

SUITE = "--ragbench=suite.yaml"
# q4's only relevant document is dropped, so it misses the recall threshold; q1 passes it.
KNOWN = "thresholds: {recall@10: 0.5}\nxfail: {q4: known miss, q1: listed but fine}\n"


def run_records(run: Path) -> dict[str, dict[str, Any]]:
    lines = (run / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["case_id"]: r for r in map(json.loads, lines)}


def html_rows(page: str) -> dict[str, str]:
    """Query id -> the status class of its row in the report's HTML table."""
    return dict((cid, st) for st, cid in
                re.findall(r'<tr class="rb-row st-(\w+)"><td class="rb-nw">([^<]+)</td>', page))


# -- the plugin ------------------------------------------------------------------------------


def check_known_failures(result: pytest.RunResult, run: Path, *, xdist: bool) -> None:
    """Known failures are recorded and reported as xfailed: what a ``--ragbench-summary=full``
    run of the mini suite with ``drop=d4`` and :data:`KNOWN` shows, serial or under ``-n 2``
    (test_plugin_core's xdist parity test makes both runs)."""
    result.assert_outcomes(passed=3, xfailed=1, xpassed=1)
    assert result.ret == 0
    summary = json.loads((run / "summary.json").read_text())
    # The records really came from workers in the xdist variant.
    assert summary["run"]["workers"] in ((2,) if xdist else (None, 0))

    recs = run_records(run)
    assert recs["q4"]["xfail"] == {"reason": "known miss", "outcome": "xfailed"}
    assert recs["q4"]["status"] == "failed"  # the case's own verdict is kept
    assert recs["q1"]["xfail"] == {"reason": "listed but fine", "outcome": "xpassed"}
    assert recs["q1"]["status"] == "ok"
    assert all(recs[c]["xfail"] is None for c in ("q2", "q3", "q5"))

    group = summary["suites"][0]["retrievers"][0]
    assert (group["n_failed"], group["n_xfailed"], group["n_xpassed"]) == (0, 1, 1)
    result.stdout.fnmatch_lines([
        "  overlap: 5 cases, 0 errors, 0 below per-query thresholds, "
        "1 xfailed (expected), 1 xpassed",
    ])

    with (run / "cases.csv").open(encoding="utf-8", newline="") as fh:
        rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert (rows["q4"]["outcome"], rows["q4"]["xfail_reason"]) == ("xfailed", "known miss")
    assert (rows["q1"]["outcome"], rows["q2"]["outcome"]) == ("xpassed", "ok")

    page = (run / "report.html").read_text(encoding="utf-8")
    assert html_rows(page) == {"q1": "xpassed", "q4": "xfailed", "q2": "ok", "q3": "ok",
                               "q5": "ok"}
    assert '"rb-row st-failed"' not in page and '"badge st-failed"' not in page
    assert '<span class="badge st-xfailed">xfailed</span>' in page
    assert '<span class="k">expected failure (xfailed)</span> known miss' in page
    assert '<li class="xfail">XFAIL recall@10 = 0.0000, expected &gt;= 0.5</li>' in page
    assert ">FAIL " not in page
    # Counts table: nothing below threshold, one xfailed and one xpassed.
    assert re.search(r'<td class="num">0</td><td class="num">1 / 1</td>', page)
    statuses = {row[1]: row[4] for row in data_block(page)["tables"][0]["rows"]}
    assert statuses == {"q1": "xpassed", "q2": "ok", "q3": "ok", "q4": "xfailed", "q5": "ok"}


def test_summary_md_counts_known_failures_as_the_terminal_does(pytester, mini_suite) -> None:
    """The terminal's table had an "xfail/xpass" column (and its full summary "1 xfailed
    (expected), 1 xpassed", beside the cases below the thresholds); summary.md, the PR
    comment, had neither at any level: a run with known failures read as one without."""
    from pytest_ragbench.report.markdown import summary_markdown

    path = mini_suite(drop="d4,d6")  # q5 now misses the threshold too: one failed item
    path.write_text(path.read_text() + KNOWN)
    result = pytester.runpytest(SUITE)
    result.assert_outcomes(passed=2, failed=1, xfailed=1, xpassed=1)
    result.stdout.fnmatch_lines(["  system   cases  errors  failed  xfail/xpass  *",
                                 "  overlap      5       0       1          1/1  *"])
    run = latest_run(pytester.path)
    md = (run / "summary.md").read_text(encoding="utf-8")
    assert "| system | cases | errors | failed | xfail/xpass | ndcg@10 |" in md
    assert "| overlap | 5 | 0 | 1 | 1/1 | " in md
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    full = summary_markdown(summary, level="full")
    assert "| retriever | cases | errors | failed | xfail/xpass | ndcg@10 |" in full
    assert "| overlap | 5 | 0 | 1 | 1/1 | " in full


def test_an_error_in_a_known_failure_is_xfailed_and_still_an_error(pytester,
                                                                    mini_suite) -> None:
    path = mini_suite(fail_on="citric")  # q4's retrieval raises
    path.write_text(path.read_text() + "xfail: {q4: backend flaky}\n")
    result = pytester.runpytest("--ragbench-summary=full", SUITE)
    result.assert_outcomes(passed=4, xfailed=1)
    run = latest_run(pytester.path)
    rec = run_records(run)["q4"]
    assert rec["status"] == "error"
    assert rec["xfail"] == {"reason": "backend flaky", "outcome": "xfailed"}
    # pytest calls it xfailed; the error is still counted, as error-rate gates need.
    result.stdout.fnmatch_lines([
        "  overlap: 5 cases, 1 error, 0 below per-query thresholds, "
        "1 xfailed (expected), 0 xpassed",
    ])
    assert html_rows((run / "report.html").read_text(encoding="utf-8"))["q4"] == "xfailed"


def test_a_known_failure_whose_setup_fails_outside_the_case_is_an_error_record(
        pytester, mini_suite) -> None:
    # A conftest hook that fails a case's setup makes an error record of it, as the run keeps
    # every case; under the suite's xfail pytest reports it xfailed, and the case had vanished
    # from the records: a whole run read "partial: 4 of 5 cases" (never a baseline).
    path = mini_suite()
    path.write_text(path.read_text() + "xfail: {q4: backend flaky}\n")
    pytester.makeconftest("""
        def pytest_runtest_setup(item):
            if item.name == "q4":
                raise RuntimeError("no fixture data for q4")
    """)
    result = pytester.runpytest(SUITE)
    result.assert_outcomes(passed=4, xfailed=1)
    run = latest_run(pytester.path)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"]["coverage"] == "5 of 5 cases" and summary["passed"] is True
    rec = run_records(run)["q4"]
    assert rec["status"] == "error" and rec["error"]["stage"] == "setup"
    assert rec["xfail"] == {"reason": "backend flaky", "outcome": "xfailed"}


def test_a_case_xfailed_without_running_is_not_recorded(pytester, mini_suite) -> None:
    # pytest.xfail() in a hook (or an xfail mark with run=False) stops a case before it runs,
    # as a skip does: no record, and a partial run
    mini_suite()
    pytester.makeconftest("""
        import pytest

        def pytest_runtest_setup(item):
            if item.name == "q4":
                pytest.xfail("not today")
    """)
    pytester.runpytest(SUITE).assert_outcomes(passed=4, xfailed=1)
    assert "q4" not in run_records(latest_run(pytester.path))


def test_runxfail_records_and_reports_a_plain_failure(pytester, mini_suite) -> None:
    path = mini_suite(drop="d4")
    path.write_text(path.read_text() + KNOWN)
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "--runxfail")
    result.assert_outcomes(passed=4, failed=1)
    run = latest_run(pytester.path)
    recs = run_records(run)
    assert recs["q4"]["xfail"] == {"reason": "known miss", "outcome": None}
    assert recs["q1"]["xfail"] == {"reason": "listed but fine", "outcome": None}
    result.stdout.fnmatch_lines(["  overlap: 5 cases, 0 errors, 1 below per-query thresholds"])
    page = (run / "report.html").read_text(encoding="utf-8")
    assert html_rows(page)["q4"] == "failed" and html_rows(page)["q1"] == "ok"
    assert "listed as a known failure, not applied (--runxfail)</span> known miss" in page


def test_a_known_failure_of_a_query_the_dataset_lacks_is_a_collection_error(pytester,
                                                                             mini_suite) -> None:
    # a typo (q04 for q4) left q4 failing and the entry unused, without a word
    path = mini_suite(drop="d4")
    text = path.read_text() + "thresholds: {recall@10: 0.5}\n"
    path.write_text(text + "xfail: {q1: fine, q04: known miss}\n")
    result = pytester.runpytest(SUITE)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*suite.yaml:11: xfail.q04: known failures of queries the "
                                 "dataset does not have: 'q04' (did you mean 'q4'?)"])
    # a query the selection leaves out is one the dataset has: still fine
    path.write_text(text.replace("  queries: queries.jsonl", "  queries: queries.jsonl\n"
                                 "  query_ids: [q1, q2]") + "xfail: [q4]\n")
    pytester.runpytest(SUITE).assert_outcomes(passed=2)


# -- records and the report, without pytest ----------------------------------------------------


def test_outcome_of_records_old_and_new() -> None:
    old = make_record("q1", status="failed")  # written before the xfail field existed
    assert "xfail" not in old
    assert (case_outcome(old), xfail_outcome(old)) == ("failed", None)
    assert case_outcome(make_record("q1", status="weird")) == "error"
    rec = make_record("q1", status="failed")
    mark_expected_failure(rec, "why", applied=True)
    assert (case_outcome(rec), rec["xfail"]) == ("xfailed", {"reason": "why",
                                                             "outcome": "xfailed"})
    rec = make_record("q1", status="ok")
    mark_expected_failure(rec, "why", applied=True)
    assert case_outcome(rec) == "xpassed"
    mark_expected_failure(rec, "why", applied=False)
    assert (case_outcome(rec), rec["xfail"]["outcome"]) == ("ok", None)


def xfail_run() -> list[dict[str, Any]]:
    """One case of each outcome, in an order the report has to change."""
    threshold = [{"metric": "ndcg@10", "op": ">=", "threshold": 0.5, "value": 0.1,
                  "passed": False, "margin": -0.4}]
    return [
        make_record("q1", ndcg=0.9),
        make_record("q2", ndcg=0.1, status="failed", thresholds=threshold,
                    xfail={"reason": "known hard", "outcome": "xfailed"}),
        make_record("q3", ndcg=0.8, xfail={"reason": "fixed?", "outcome": "xpassed"}),
        make_record("q4", ndcg=0.1, status="failed", thresholds=threshold),
        make_record("q5", status="error", metrics={}, error={
            "stage": "retrieve", "type": "TimeoutError", "message": "took 30 s"}),
    ]


def test_report_shows_expected_failures_apart_from_failures() -> None:
    recs = xfail_run()
    page = render_html(make_summary(recs), recs)
    # Problems first: error, failed, then xpassed (a known failure that now passes), xfailed.
    assert list(html_rows(page).items()) == [("q5", "error"), ("q4", "failed"),
                                             ("q3", "xpassed"), ("q2", "xfailed"),
                                             ("q1", "ok")]
    assert '<option value="xfailed">xfailed (expected)</option>' in page
    # Counts: one below threshold (q4 only), one xfailed, one xpassed.
    assert re.search(r'<td class="num">1</td><td class="num">1 / 1</td>', page)
    assert page.count('<li class="fail">FAIL ndcg@10') == 1  # q4's, not q2's
    assert page.count('<li class="xfail">XFAIL ndcg@10') == 1
    assert "expected to fail, but passed (xpassed)</span> fixed?" in page
    assert page.count(", expected failure</summary>") == 2
    detail = {row[1]: row[8] for row in data_block(page)["tables"][0]["rows"]}
    assert detail["q2"]["xfail"] == ["known hard", "xfailed"]
    assert "xfail" not in detail["q4"]


def test_report_of_records_without_the_field_is_unchanged() -> None:
    recs = [r for r in xfail_run() if "xfail" not in r]
    page = render_html(make_summary(recs), recs)
    assert html_rows(page) == {"q5": "error", "q4": "failed", "q1": "ok"}
    # No xfail column or filter option when nothing was expected to fail.
    assert "xfailed / xpassed" not in page and 'value="xfailed"' not in page
    # A summary from before the xfail counts (no n_xfailed) still renders the new records.
    summary = make_summary(xfail_run())
    for group in summary["suites"][0]["retrievers"]:
        del group["n_xfailed"], group["n_xpassed"]
    page = render_html(summary, xfail_run())
    assert html_rows(page)["q2"] == "xfailed"
    assert '<td class="num">0 / 0</td>' in page


# -- the page's script ------------------------------------------------------------------------

DRIVER = DRIVER_PRELUDE + """
  const sort = table.querySelector('th[data-key="status"] button');
  sort.click();
  sort.click();
  out.descending = column("status");
  out.rowClasses = rows().map((r) => r.className);
  const status = section.querySelector(".rb-status");
  status.value = "xfailed";
  status.dispatchEvent(new Event("change"));
  out.xfailed = column("id");
  const details = table.querySelector("tr.rb-drill details");
  out.summary = details.querySelector("summary").textContent;
  details.open = true;
  setTimeout(() => {
    const body = details.querySelector(".rb-drill-body");
    out.drill = body ? body.textContent : null;
    out.thresholds = body ? [...body.querySelectorAll(".rb-thr li")].map((li) => li.className)
      : null;
    const pre = document.createElement("pre");
    pre.id = "rb-test-out";
    pre.textContent = JSON.stringify(out);
    document.body.append(pre);
  }, 50);
})();
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found")
def test_script_sorts_filters_and_explains_expected_failures(tmp_path: Path) -> None:
    recs = xfail_run()
    summary = summarize_run(recs, {})
    report = write_html(tmp_path / "report.html", summary, recs)
    out, _ = _drive(report, tmp_path, DRIVER)
    assert out["descending"] == ["ok", "xfailed", "xpassed", "failed", "error"]
    assert out["rowClasses"][1] == "rb-row st-xfailed"
    assert out["xfailed"] == ["q2"]
    assert out["summary"].endswith(", expected failure")
    assert "expected failure (xfailed) known hard" in out["drill"]
    assert "XFAIL ndcg@10 = 0.1000" in out["drill"]
    assert not re.search(r"(?<!X)FAIL", out["drill"])
    assert out["thresholds"] == ["xfail"]


def test_an_xfail_mark_of_the_users_own_counts_as_pytest_reports_it(pytester,
                                                                     mini_suite) -> None:
    """An xfail mark a conftest (or a plugin) adds to a case, not the suite's ``xfail`` key:
    the records said "failed" and "ok" where pytest said xfailed, xpassed and (a strict mark
    on a case that passed) failed, so the summary's counts, the CSV's outcome and the HTML
    rows disagreed with the verdict ("1 item failed" beside a table of 0 failed)."""
    # q4 and q5 miss the threshold, q2 errors, q1 and q3 pass
    mini_suite(drop="d4,d6", fail_on="cold brew")
    (pytester.path / "suite.yaml").write_text(
        (pytester.path / "suite.yaml").read_text() + "thresholds: {recall@10: 0.5}\n")
    pytester.makeconftest("""
        import pytest

        MARKS = {"q4": pytest.mark.xfail(reason="mine: misses"),
                 "q1": pytest.mark.xfail(reason="mine: strict", strict=True),
                 "q3": pytest.mark.xfail(reason="mine: passes"),
                 "q2": pytest.mark.xfail(reason="mine: errors"),
                 "q5": pytest.mark.xfail(reason="mine: other", raises=ValueError)}

        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name in MARKS:
                    item.add_marker(MARKS[item.name])
    """)
    result = pytester.runpytest(SUITE)
    result.assert_outcomes(failed=2, xfailed=2, xpassed=1)
    run = latest_run(pytester.path)
    recs = run_records(run)
    assert recs["q4"]["xfail"] == {"reason": "mine: misses", "outcome": "xfailed"}
    assert recs["q2"]["xfail"] == {"reason": "mine: errors", "outcome": "xfailed"}
    assert recs["q3"]["xfail"] == {"reason": "mine: passes", "outcome": "xpassed"}
    # pytest fails a strict mark's pass ([XPASS(strict)]): a failure in every output
    assert recs["q1"]["xfail"] == {"reason": "mine: strict", "outcome": "failed"}
    # raises=ValueError: pytest fails the case, whose failure is no ValueError
    assert recs["q5"]["xfail"] is None
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    group = summary["suites"][0]["retrievers"][0]
    assert (group["n_failed"], group["n_xfailed"], group["n_xpassed"]) == (2, 2, 1)
    assert [r["text"] for r in summary["verdict"]["reasons"]] == ["2 items failed"]
    with (run / "cases.csv").open(encoding="utf-8", newline="") as fh:
        outcomes = {r["case_id"]: r["outcome"] for r in csv.DictReader(fh)}
    assert outcomes == {"q1": "failed", "q2": "xfailed", "q3": "xpassed", "q4": "xfailed",
                        "q5": "failed"}
    page = (run / "report.html").read_text(encoding="utf-8")
    assert html_rows(page) == outcomes
    assert ("a failure under a strict mark (XPASS(strict))</span> mine: strict" in page
            and "not applied (--runxfail)</span> mine" not in page)


def test_a_case_whose_setup_fails_outside_the_case_says_what_was_raised(pytester,
                                                                         mini_suite) -> None:
    """The error record of a case whose setup a conftest hook failed (or a hand-written
    test's fixture) said 'conftest.py:4: RuntimeError', the last line of the traceback, in
    the CSV, the summary's errors and the report: where, not what went wrong."""
    mini_suite()
    pytester.makeconftest("""
        def pytest_runtest_setup(item):
            if item.name == "q4":
                raise RuntimeError("no fixture data for q4")
    """)
    pytester.makepyfile(test_hand="""
        import pytest

        @pytest.fixture
        def backend(ragbench_case):
            if ragbench_case.id == "q2":
                raise LookupError("no backend for q2")

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        def test_hand(ragbench_case, backend, ragbench_retriever, ragbench_record):
            ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))
    """)
    result = pytester.runpytest(SUITE, "test_hand.py", "-p", "no:randomly")
    result.assert_outcomes(passed=8, errors=2)
    run = latest_run(pytester.path)
    recs = [json.loads(x) for x in (run / "cases.jsonl").read_text().splitlines()]
    messages = {(r["suite"], r["case_id"]): r["error"]["message"] for r in recs
                if r["status"] == "error"}
    assert messages == {("suite.yaml", "q4"): "RuntimeError: no fixture data for q4",
                        ("test_hand.py::test_hand", "q2"): "LookupError: no backend for q2"}
    assert "overlap/q4 [setup]: RuntimeError: no fixture data for q4" in (
        run / "summary.md").read_text(encoding="utf-8")
