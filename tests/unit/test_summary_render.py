"""The one-screen summary: terminal and Markdown renderers on a synthetic 5 x 13 summary."""

from __future__ import annotations

import copy
import re

import pytest
from summary_fixture import METRICS, SYSTEMS, synthetic_summary, synthetic_verdict

from pytest_ragbench.options import summary_level
from pytest_ragbench.report.markdown import summary_markdown
from pytest_ragbench.report.terminal import MAX_ERRORS, render_summary, table_notes
from pytest_ragbench.report.views import ab_view, headline_metrics, suite_table

pytestmark = pytest.mark.unit

FAILURES = ["ragbench: gate failed: bench/bm25 ndcg@10 = 0.3000, expected >= 0.45",
            "ragbench: gate failed: bench/dense ndcg@10 = 0.4000, expected >= 0.45"]


def render(level: str, **kwargs) -> list[str]:
    summary = kwargs.pop("summary", None) or synthetic_summary()
    return [line.text for line in render_summary(
        summary, level=level, verdict=synthetic_verdict(),
        messages=["results: .ragbench/runs/x"], failures=FAILURES, **kwargs)]


def test_headline_metrics_are_the_gated_ones_then_the_first_listed() -> None:
    summary = synthetic_summary()
    suite = summary["suites"][0]
    # gates name ndcg@10 and map@10 (the 4th listed); one more from the top makes three
    assert headline_metrics(suite, summary["gates"]) == ["ndcg@10", "recall@10", "map@10"]
    assert headline_metrics(suite) == ["ndcg@10", "recall@10", "mrr@10"]
    # latency is never a headline metric: it has its own column
    latency_first = {**suite, "metrics": ["latency_ms", *METRICS[:-1]]}
    assert "latency_ms" not in headline_metrics(latency_first)
    table = suite_table(suite, summary["gates"])
    assert table.resources == ["latency_ms"]
    assert len(table.hidden) == 13 - 3 - 1


def test_default_fits_in_60_lines_and_holds_the_table_ab_gates_and_verdict() -> None:
    lines = render("default")
    assert len(lines) <= 60, "\n".join(lines)
    text = "\n".join(lines)
    header = next(line for line in lines if line.lstrip().startswith("system"))
    assert re.split(r"\s{2,}", header.strip()) == [
        "system", "cases", "errors", "ndcg@10", "recall@10", "map@10", "n", "latency_ms"]
    # one row per system, with mean, CI and n
    for name in SYSTEMS:
        assert re.search(rf"^  {name} +50 +0 +\d\.\d{{4}} \[\d\.\d{{4}}, \d\.\d{{4}}\]", text,
                         re.MULTILINE)
    assert "  bm25       50       0  0.3000 [0.2500, 0.3500]" in text
    assert "9 more metrics" in text
    # A/B: significant pairs spelled out (the better system first), the rest counted
    assert "20 of 30 pairs differ significantly" in text
    assert re.search(r"^    ndcg@10 +splade > bm25 +\+0\.4000 \[\+0\.0500, \+0\.1500\]  "
                     r"p = 0\.0010$", text, re.MULTILINE)
    assert "... 12 more significant" in text
    # gates: a count, then the failed ones first
    gates_at = lines.index("gates: 2 failed, 8 passed")
    assert lines[gates_at + 1].startswith("  FAIL bench/bm25: ndcg@10")
    assert lines[gates_at + 2].startswith("  FAIL bench/dense: ndcg@10")
    assert all(line.startswith("  PASS") for line in lines[gates_at + 3:gates_at + 11])
    assert lines[-1] == "ragbench: FAILED: 2 gates failed"
    assert lines[-3:-1] == FAILURES


def test_short_is_means_failed_gates_and_the_verdict() -> None:
    lines = render("short")
    text = "\n".join(lines)
    assert len(lines) < len(render("default"))
    assert "[" not in "".join(lines[1:7])  # means without their CIs
    assert "A/B" not in text and "PASS" not in text and "more metrics" not in text
    assert [line for line in lines if line.startswith("  FAIL")] == [
        line for line in lines if "FAIL" in line and line.startswith("  ")]
    assert sum(line.startswith("  FAIL") for line in lines) == 2
    assert lines[-1] == "ragbench: FAILED: 2 gates failed"


def test_full_shows_every_metric_pair_and_gate() -> None:
    lines = render("full")
    text = "\n".join(lines)
    for m in METRICS:
        assert re.search(rf"^    {re.escape(m)} +\d", text, re.MULTILINE), m
        assert f"A/B bench {m} " in text
    assert sum(" vs " in line for line in lines) == 13 * 10
    assert sum(line.startswith(("  PASS", "  FAIL")) for line in lines) == 10
    first_gate = lines.index("gates:") + 1
    assert lines[first_gate].startswith("  FAIL") and lines[first_gate + 2].startswith("  PASS")
    assert lines[-1] == "ragbench: FAILED: 2 gates failed"


def test_many_failed_gates_are_capped_at_the_default_level_but_counted() -> None:
    summary = synthetic_summary()
    many = []
    for i in range(30):
        g = copy.deepcopy(summary["gates"][0])
        g["retriever"] = f"sys{i}"
        many.append(g)
    summary["gates"] = many
    lines = render("default", summary=summary)
    assert len(lines) <= 60
    assert "gates: 30 failed" in lines
    assert "  ... 18 more (18 failed) (--ragbench-summary=full or -v)" in lines


def test_ab_view_orients_lower_is_better_metrics() -> None:
    summary = synthetic_summary()
    suite = summary["suites"][0]
    table = next(t for t in suite["ab"] if t["metric"] == "latency_ms")
    table["pairs"][0].update(significant=True, delta=2.0, ci_low=1.0, ci_high=3.0)
    ab = ab_view(suite, ["latency_ms"])
    assert ab is not None and len(ab.significant) == 1
    pair = ab.significant[0]
    # b (dense) is 2 ms slower than a (bm25): bm25 is the better one, by -2 ms
    assert (pair.better, pair.worse, pair.delta, pair.ci_low, pair.ci_high) == (
        "bm25", "dense", -2.0, -3.0, -1.0)


def test_summary_level_from_the_option_or_pytest_verbosity() -> None:
    assert summary_level(None, 0) == "default"
    assert summary_level(None, -1) == "short" and summary_level(None, -2) == "short"
    assert summary_level(None, 1) == "full"
    assert summary_level("short", 2) == "short" and summary_level("full", -1) == "full"


def test_markdown_default_fits_in_60_lines_with_failed_gates_first() -> None:
    md = summary_markdown(synthetic_summary(), level="default")
    lines = md.splitlines()
    assert len(lines) <= 60, md
    assert lines[0] == "## ragbench: FAILED"
    assert "Failed because: 2 gates failed." in lines
    assert "| system | cases | errors | ndcg@10 | recall@10 | map@10 | n | latency\\_ms |" in lines
    assert "| bm25 | 50 | 0 | 0.3000 [0.2500, 0.3500] | 0.3100 [0.2600, 0.3600] | " \
           "0.3300 [0.2800, 0.3800] | 50 | 10.0 |" in lines
    assert any(line.startswith("A/B on ndcg@10, recall@10, map@10") and
               "20 of 30 pairs differ significantly" in line for line in lines)
    assert "| ndcg@10 | splade | bm25 | +0.4000 | [+0.0500, +0.1500] | 0.0010 |" in lines
    assert "12 more significant differences in the full summary." in lines
    gate_rows = [line for line in lines if line.startswith(("| **FAIL**", "| PASS"))]
    assert len(gate_rows) == 10
    assert all(r.startswith("| **FAIL**") for r in gate_rows[:2])
    assert all(r.startswith("| PASS") for r in gate_rows[2:])
    # every table row has as many cells as its header
    for block in re.split(r"\n\n", md):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count(" | ") for r in rows if not r.startswith("|-")}) == 1, block


def test_markdown_short_and_full() -> None:
    short = summary_markdown(synthetic_summary(), level="short")
    full = summary_markdown(synthetic_summary(), level="full")
    assert short.startswith("## ragbench: FAILED")
    assert "A/B" not in short and "| PASS |" not in short and "[0.2500" not in short
    assert short.count("| **FAIL** |") == 2
    assert len(short.splitlines()) < len(
        summary_markdown(synthetic_summary()).splitlines()) < len(full.splitlines())
    for m in METRICS:
        assert f"A/B on {m.replace('_', chr(92) + '_')} " in full
    # full lists the gates failed first too
    rows = [line for line in full.splitlines() if line.startswith(("| **FAIL**", "| PASS"))]
    assert rows[0].startswith("| **FAIL**") and rows[1].startswith("| **FAIL**")


def test_markdown_escapes_names_in_the_compact_tables() -> None:
    summary = synthetic_summary()
    suite = summary["suites"][0]
    evil = "<b>x|y</b>"
    suite["retrievers"][0]["name"] = evil
    for table in suite["ab"]:
        for pair in table["pairs"]:
            if pair["a"] == "bm25":
                pair["a"] = evil
    md = summary_markdown(summary)
    assert "<b>" not in md
    assert "| &lt;b&gt;x\\|y&lt;/b&gt; | 50 |" in md
    assert "| ndcg@10 | splade | &lt;b&gt;x\\|y&lt;/b&gt; |" in md


def test_baseline_section_by_level() -> None:
    from pytest_ragbench.report.terminal import baseline_section

    row = {"suite": "bench", "retriever": "bm25", "metric": "ndcg@10", "baseline": 0.5,
           "current": 0.4, "delta": -0.1, "ci_low": -0.15, "ci_high": -0.05, "p_holm": 0.001,
           "test": "permutation", "n": 50, "tolerance": "0.02", "regressed": True}
    rows = [row, *({**row, "retriever": name, "regressed": False, "delta": 0.0}
                   for name in SYSTEMS[1:])]
    base = {"path": "base.json", "suites": []}
    default = baseline_section(base, rows, "default")
    assert default[:2] == ["baseline base.json:", "  1 of 5 metrics regressed"]
    assert len(default) == 3 and default[2].startswith("  REGRESSED bench/bm25: ndcg@10")
    assert baseline_section(base, rows, "short") == default[:2]
    full = baseline_section(base, rows, "full")
    assert len(full) == 6 and sum(line.startswith("  ok") for line in full) == 4


def test_the_errors_left_out_are_counted_from_every_case() -> None:
    # a summary lists a system's first 20 errors: with 32 errors, 3 shown, 29 are left out
    # (the line said 17)
    summary = synthetic_summary()
    row = summary["suites"][0]["retrievers"][0]
    row["n_errors"] = 32
    row["errors"] = [{"case_id": f"q{i}", "stage": "retrieve", "message": "boom"}
                     for i in range(20)]
    notes = table_notes(suite_table(summary["suites"][0]))
    assert f"  ... {32 - MAX_ERRORS} more errors" in "\n".join(notes)
    # summary.md counts every errored case as well (it said 20 beside a row of 32)
    assert "\n32 errors; the first: " in summary_markdown(summary)


def test_one_case_and_one_error_read_in_the_singular() -> None:
    # the full summary said "1 cases, 1 errors", the error notes "... 1 more errors" and
    # summary.md "1 errors; the first", a partial suite "1 of 1 cases ran"
    from pytest_ragbench.report.terminal import summary_lines

    summary = synthetic_summary()
    suite = summary["suites"][0]
    suite.update(partial=True, n_cases_run=1, n_cases_total=1)
    row = suite["retrievers"][0]
    row.update(n_cases=1, n_errors=1, errors=[
        {"case_id": "q1", "stage": "retrieve", "message": "boom"}])
    assert f"  {row['name']}: 1 case, 1 error, 0 below per-query thresholds" in \
        summary_lines(summary)
    assert "suite bench [suite.yaml] dataset 0123456789ab: partial, 1 of 1 case ran" in \
        summary_lines(summary)
    markdown = summary_markdown(summary)
    assert "\n1 error; the first: " in markdown and "1 of 1 case ran." in markdown
    row.update(n_errors=MAX_ERRORS + 1, errors=[
        {"case_id": f"q{i}", "stage": "retrieve", "message": "boom"} for i in range(20)])
    assert "  ... 1 more error (" in "\n".join(table_notes(suite_table(suite)))


@pytest.mark.parametrize(("limits", "said"), [
    ({"concurrency": 3}, " (concurrency 3)"),
    ({"concurrency": 16, "rpm": 6.0}, " (concurrency 16, rpm 6)"),
    ({"concurrency": None, "tpm": 400}, " (tpm 400)"),
    ({"concurrency": 8, "rpm": 60,
      "adaptive": {"level": 4, "max_level": 5, "bound": 16, "decreases": 2}},
     "; concurrency auto reached 4 (max 5 of bound 16, 2 back-offs); rpm 60"),
])
def test_a_pool_line_names_its_limits(limits: dict, said: str) -> None:
    """A run that took a minute for a dozen requests says why: its pool's rpm/tpm."""
    from pytest_ragbench.report.budget import budget_lines

    pool = {"model": "m", "endpoint": "u", "requests": 12, "max_in_flight": 1,
            "throttled": 0, "timeouts": 0, **limits}
    (line,) = budget_lines({"pools": [pool]})
    assert line == "llm pool m at u: 12 requests, max 1 in flight, 0 throttled (429), " \
                   "0 timed out" + said


def test_one_request_reads_in_the_singular() -> None:
    # the llm line and a pool's line said "llm: 1 requests" and "...: 1 requests, max 1"
    from pytest_ragbench.report.budget import budget_lines
    from pytest_ragbench.report.views import UsageView

    pool = {"model": "m", "endpoint": "u", "requests": 1, "max_in_flight": 1,
            "throttled": 0, "timeouts": 0}
    assert budget_lines({"pools": [pool]})[0].startswith("llm pool m at u: 1 request, max 1")
    view = UsageView(requests=1, prompt_tokens=3, completion_tokens=2, total_cost=0.0,
                     per_item={"requests": 1.0, "prompt_tokens": 3.0, "completion_tokens": 2.0},
                     costed=False)
    assert view.line().startswith("llm: 1 request, 3 prompt + 2 completion tokens")


def test_a_suite_without_a_dataset_hash_leaves_it_out_of_its_header() -> None:
    # when every case of a suite crashed its worker no record carries the dataset's hash: the
    # header read "suite bench [suite.yaml] dataset : partial, ..."
    from pytest_ragbench.report.terminal import summary_lines, table_lines

    summary = synthetic_summary()
    suite = summary["suites"][0]
    suite.update(dataset_hash=None, partial=True, n_cases_run=0, n_cases_total=2)
    assert "suite bench [suite.yaml]: partial, 0 of 2 cases ran" in summary_lines(summary)
    assert table_lines(suite_table(suite))[0].startswith("suite bench [suite.yaml]: ")


def test_the_full_summary_md_gives_each_metrics_n_and_nan_count() -> None:
    # the docs say the full level shows every metric's mean, CI, n and NaN count; summary.md
    # at full gave the mean and CI only
    summary = synthetic_summary()
    row = summary["suites"][0]["retrievers"][0]
    metric = next(iter(row["metrics"]))
    row["metrics"][metric].update(n=7, n_nan=3)
    full = summary_markdown(summary, level="full")
    assert re.search(r"\] \(n 7, 3 nan\) \|", full)
    cells = sum(len(s["retrievers"]) * len(s["metrics"]) for s in summary["suites"])
    assert full.count("] (n ") == cells


def test_a_gates_bound_reads_as_written_in_every_line() -> None:
    """The terminal's gate line and the failure lines (the gate's, a case's threshold) gave
    a bound to 6 digits: 'ndcg@10 >= 0.99999999' read '>= 1' there, beside the bound as
    written in summary.md, the HTML report and junit."""
    from pytest_ragbench.report.failure import format_case_failure
    from pytest_ragbench.report.terminal import gate_lines
    from pytest_ragbench.report.views import gate_failure_line
    from pytest_ragbench.results.gates import Gate, evaluate_threshold

    gate = Gate("ndcg@10", ">=", 0.99999999)
    g = evaluate_threshold(gate, suite="s", retriever="bm25", mean=0.5, error_rate=0.0,
                           cases={}, meta={})
    assert g["text"] == "ndcg@10 >= 0.99999999" and not g["passed"]
    assert gate_lines([g]) == ["  FAIL s/bm25: ndcg@10 0.5000 >= 0.99999999 (margin -0.5000)"]
    assert "expected >= 0.99999999 (missed by 0.5000)" in gate_failure_line(g)
    rec = {"case_id": "q1", "retriever": "bm25", "query": "q", "metrics": {},
           "thresholds": [{"metric": "recall@10", "op": ">=", "threshold": 0.1234567,
                           "value": 0.0, "passed": False, "margin": -0.1234567}]}
    assert ("threshold failed: recall@10 = 0.0000, expected >= 0.1234567 (missed by 0.1235)"
            in format_case_failure(rec))


def test_labels_of_documents_the_corpus_lacks_are_said_at_every_level() -> None:
    summary = synthetic_summary()
    summary["suites"][0]["unknown_labels"] = {"action": "dropped", "n_labels": 3,
                                              "n_queries": 2}
    said = ("3 labels of 2 queries name a document the corpus lacks: dropped, not scored "
            "(dataset.unknown_documents: drop)")
    for level in ("short", "default", "full"):
        assert f"  {said}" in render(level, summary=summary), level
        md = summary_markdown(summary, level=level).replace("\\_", "_")
        assert f"{said[:1].upper()}{said[1:]}." in md, level
    plain = synthetic_summary()
    assert not any("corpus lacks" in t for t in render("full", summary=plain))
    assert "corpus lacks" not in summary_markdown(plain, level="full")


def test_a_baseline_that_compared_nothing_is_said_at_every_level() -> None:
    """A `-k` of only systems the baseline lacks: `--ragbench-summary=full` wrote a
    summary.md with no word of the baseline, where the terminal (at every level) and the
    default summary.md say why nothing was compared."""
    summary = synthetic_summary()
    summary["baseline"] = {"path": "base.json", "rows": [], "suites": [{
        "name": "bench", "id": "bench.yaml", "nothing_compared": True,
        "not_in_baseline": ["new"],
        "baseline_systems": ["old"]}]}
    for level in ("short", "default", "full"):
        terminal = render(level, summary=summary)
        md = summary_markdown(summary, level=level)
        assert "  nothing was compared against the baseline" in terminal, level
        assert "Baseline: base.json" in md, level
        assert "Nothing was compared against the baseline." in md, (level, md)
