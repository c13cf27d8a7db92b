"""Tests of the HTML report (pytest_ragbench.report.html, .svg) and of re-rendering run folders
(pytest_ragbench.report.rerender)."""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import json
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.cli import main as ragbench_main
from pytest_ragbench.report import svg
from pytest_ragbench.report.files import CASES_JSONL, RUN_JSON, SUMMARY_JSON, read_jsonl
from pytest_ragbench.report.html import (
    PAGE_SIZE,
    REPORT_HTML,
    _cut,
    _snippet,
    embed_json,
    fmt,
    heat,
    render_html,
    write_html,
)
from pytest_ragbench.report.rerender import (
    RunFolderError,
    history_from_runs,
    load_run,
    rerender,
)
from pytest_ragbench.results.aggregate import summarize_run

XSS = "<script>alert(1)</script>\"' onmouseover=\"x"


def make_record(case_id: str, *, retriever: str = "bm25", suite: str = "suites/s.yaml",
                ndcg: float | None = 0.5, status: str = "ok", **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema": 1, "suite": suite, "suite_name": "smoke", "suite_hash": "a" * 64,
        "dataset_hash": "b" * 64, "retriever": retriever, "case_id": case_id, "run": 0,
        "query": f"question {case_id}", "type": None, "difficulty": "easy", "tags": ["t1"],
        "status": status, "error": None,
        "metrics": {"ndcg@10": ndcg, "recall@10": None if ndcg is None else min(1.0, ndcg * 2)},
        "latency_ms": 12.5, "n_relevant": 1, "no_relevant": False,
        "retrieved": [["d1", 3.25, 2], ["d2", 1.5, 0]], "missed": [["d9", 1]], "thresholds": [],
    }
    rec.update(extra)
    return rec


def make_summary(records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    summary = summarize_run(records, {})
    summary["run"] = {"id": "20260101T000000Z-abcdef", "started": "2026-01-01T00:00:00+00:00",
                      "finished": "2026-01-01T00:00:05+00:00", "duration_s": 5.0,
                      "command": ["pytest", "--ragbench=s.yaml"], "cwd": "/work",
                      "git_commit": "0123456789abcdef", "versions": {"python": "3.11.7"},
                      "workers": 2, "exitstatus": 0, "partial": False,
                      "n_records": len(records)}
    summary.update(extra)
    return summary


GATES = [
    {"kind": "threshold", "suite": "smoke", "retriever": "bm25", "metric": "ndcg@10",
     "scope": "", "op": ">=", "threshold": 0.4, "value": 0.5, "passed": True, "margin": 0.1,
     "text": "ndcg@10 >= 0.4"},
    {"kind": "threshold", "suite": "smoke", "retriever": "bm25", "metric": "recall@10",
     "scope": "", "op": ">=", "threshold": 0.99, "value": 0.9, "passed": False,
     "margin": -0.09, "text": "recall@10 >= 0.99"},
]


class Page(HTMLParser):
    """Collects what the escaping tests look at: script elements, attributes, SVG blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.tags: list[str] = []
        self.metas: list[list[tuple[str, str | None]]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "meta":
            self.metas.append(attrs)
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
            self.script_text.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text[-1] += data


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg[\s>].*?</svg>", html, flags=re.S)


def data_block(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="rb-data">(.*?)</script>', html, re.S)
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


@pytest.fixture
def records() -> list[dict[str, Any]]:
    recs = [make_record(f"q{i}", ndcg=i / 10) for i in range(1, 6)]
    recs += [make_record(f"q{i}", retriever="dense", ndcg=min(1.0, i / 8)) for i in range(1, 6)]
    recs[0]["status"] = "failed"
    recs[0]["thresholds"] = [{"metric": "ndcg@10", "op": ">=", "threshold": 0.3,
                              "value": 0.1, "passed": False, "margin": -0.2}]
    recs[1].update(status="error", metrics={},
                   error={"stage": "retrieve", "type": "TimeoutError", "message": "took 30 s"})
    return recs


# -- structure ----------------------------------------------------------------------------


def test_the_run_budget_is_shown_as_the_terminal_gives_it(records: list[dict[str, Any]]) -> None:
    summary = make_summary(records)
    summary["run"]["budget"] = {
        "spent": 72.0, "costs": {"s.yaml": {"spent": 72.0, "max_cost": 60.0, "refused": 3,
                                            "exhausted": True}},
        "pools": [{"endpoint": "http://127.0.0.1:9/v1", "model": "m<x>", "requests": 12,
                   "max_in_flight": 3, "throttled": 8, "timeouts": 0, "concurrency": 10,
                   "adaptive": {"level": 3, "max_level": 8, "bound": 10, "decreases": 8}}]}
    html = render_html(summary, records)
    assert ("<dt>LLM budget</dt><dd>run budget s.yaml: spent $72.0000 of $60.0000 (all "
            "workers), cap reached</dd>") in html
    assert ("<dd>llm pool m&lt;x&gt; at http://127.0.0.1:9/v1: 12 requests, max 3 in flight, 8 "
            "throttled (429), 0 timed out; concurrency auto reached 3 (max 8 of bound 10, 8 "
            "back-offs)</dd>") in html


def test_gates_metrics_and_run_metadata_are_shown(records: list[dict[str, Any]]) -> None:
    summary = make_summary(records, gates=GATES, gates_passed=False)
    html = render_html(summary, records)
    assert "ragbench <span class=\"rb-verdict\">FAILED</span>" in html
    assert html.count('<span class="badge pass">PASS</span>') == 1
    assert html.count('<span class="badge fail">FAIL</span>') == 1
    assert "recall@10 &gt;= 0.99" in html
    # Means and CIs of the summary appear in the metric table, as the terminal prints them.
    for r in summary["suites"][0]["retrievers"]:
        st = r["metrics"]["ndcg@10"]
        assert f"{st['mean']:.4f}" in html
        assert f"[{st['ci_low']:.4f}, {st['ci_high']:.4f}]" in html
    for text in ("20260101T000000Z-abcdef", "0123456789abcdef", "pytest --ragbench=s.yaml",
                 "took 30 s"):
        assert text in html


def test_verdict_follows_the_sessions_overall_result(records: list[dict[str, Any]]) -> None:
    # Gates pass but the session failed the run for another reason (e.g. a changed dataset).
    html = render_html(make_summary(records, gates=GATES[:1], passed=False), records)
    assert "FAILED</span>" in html
    html = render_html(make_summary(records, gates=GATES[:1], gates_passed=True), records)
    assert "PASSED</span>" in html
    assert "no gates</span>" in render_html(make_summary(records), records)


def test_charts_are_well_formed_svg(records: list[dict[str, Any]]) -> None:
    html = render_html(make_summary(records), records)
    blocks = svgs(html)
    # One bar chart and one histogram panel per metric.
    assert len(blocks) == 1 + 2
    for block in blocks:
        root = ET.fromstring(block)
        assert root.tag == "svg"
        assert root.get("viewBox")
        assert root.find("title") is not None
    bars = ET.fromstring(blocks[0])
    # 2 retrievers x 2 metrics bars, each with a whisker (3 lines).
    assert len(bars.findall(".//g[@class='bar']")) == 4
    assert len(bars.findall(".//g[@class='bar']/line")) == 12


def test_baseline_deltas_and_trends(records: list[dict[str, Any]]) -> None:
    row = {"suite": "smoke", "suite_id": "suites/s.yaml", "retriever": "dense",
           "metric": "ndcg@10", "scope": "", "baseline": 0.7, "current": 0.55, "delta": -0.15,
           "ci_low": -0.2, "ci_high": -0.1, "p_holm": 0.004, "test": "permutation",
           "direction": "higher", "tolerance": "0.02", "allowed": 0.02, "regressed": True,
           "same_dataset": True}
    ok_row = {**row, "retriever": "bm25", "delta": 0.01, "regressed": False, "p_holm": 0.8}
    summary = make_summary(records, baseline={"path": "base.json", "rows": [row, ok_row]})
    history = [{"run_id": f"r{i}", "finished": f"2025-12-0{i}T00:00:00",
                "means": {"suites/s.yaml/bm25/ndcg@10": 0.2 + i / 100}} for i in range(1, 4)]
    html = render_html(summary, records, history=history)
    assert "REGRESSED" in html
    assert "FAILED</span>" in html
    assert "[-0.2000, -0.1000]" in html and "0.0040" in html
    delta = next(b for b in svgs(html) if 'class="chart delta"' in b)
    root = ET.fromstring(delta)
    fills = [r.get("fill") for r in root.iter("rect") if r.get("fill-opacity") is None]
    assert svg._BAD in fills and svg._GOOD in fills
    spark = [b for b in svgs(html) if 'class="chart spark"' in b]
    assert len(spark) == 1  # only bm25/ndcg@10 has history
    # Three earlier runs and this one.
    assert ET.fromstring(spark[0]).get("aria-label", "").count(",") == 3
    # a partial run's means cover some queries: the trend is of the earlier runs alone
    summary["suites"][0]["partial"] = True
    html = render_html(summary, records, history=history)
    (spark,) = [b for b in svgs(html) if 'class="chart spark"' in b]
    assert ET.fromstring(spark).get("aria-label", "").count(",") == 2


def test_ab_tables_and_statistical_gates(records: list[dict[str, Any]]) -> None:
    summary = make_summary(records)
    assert summary["suites"][0]["ab"], "summarize_run compares two retrievers"
    summary["gates"] = [
        {"kind": "significance", "suite": "smoke", "retriever": "dense", "metric": "ndcg@10",
         "scope": "difficulty=hard", "text": "ndcg@10: no significant drop", "passed": False,
         "value": -0.1, "p_holm": 0.01, "alpha": 0.05,
         "row": {"baseline": 0.6, "current": 0.5, "delta": -0.1, "ci_low": -0.15,
                 "ci_high": -0.05, "p_value": 0.01, "p_holm": 0.01, "test": "wilcoxon",
                 "n": 5}},
        {"kind": "drop", "suite": "smoke", "retriever": "*", "metric": "ndcg@10", "scope": "",
         "text": "ndcg@10: drop <= 0.02", "passed": True, "skipped": True,
         "note": "no baseline to compare with"},
    ]
    html = render_html(summary, records)
    assert "Retriever comparisons" in html
    assert "smoke / dense [difficulty=hard]" in html
    assert "p (Holm) = 0.0100 (wilcoxon), alpha 0.05" in html
    assert '<span class="badge skip">SKIP</span>' in html
    assert "no baseline to compare with" in html


def test_drill_down_shows_everything_about_a_case() -> None:
    rec = make_record(
        "q1", answer="Espresso needs a fine grind.", contexts=["ctx one", "ctx two"],
        judge={"faithfulness": {"claims": [
            {"claim": "fine grind", "supported": 1, "ctx": [1]},
            {"claim": "hot water", "supported": 0, "why": "not in the contexts"}],
            "supported": 1, "total": 2},
            "answer_relevancy": {"verdicts": [1, 0], "reasons": ["on topic", "evasive"]}},
        usage={"prompt_tokens": 1200, "completion_tokens": 80, "requests": 2}, cost=0.0042,
        status="failed", thresholds=[{"metric": "ndcg@10", "op": ">=", "threshold": 0.9,
                                      "value": 0.5, "passed": False, "margin": -0.4}],
    )
    html = render_html(make_summary([rec]), [rec], doc_text={"d1": "Espresso text  here"})
    for text in ("question q1", "Espresso needs a fine grind.", "ctx two", "fine grind",
                 "not in the contexts", "evasive", "1200 prompt + 80 completion, 2 requests",
                 "$0.004200", "12.50 ms", "FAIL ndcg@10 = 0.5000, expected &gt;= 0.9",
                 "Espresso text here", "missed relevant", "<td>d9</td>"):
        assert text in html, text
    # Relevant retrieved documents are marked; the claim verdicts are shown as marks.
    assert '<tr class="rel"><td>1</td><td>d1</td><td>3.2500</td><td>2</td>' in html
    assert '<span class="rb-v yes">\u2713</span>' in html
    assert '<span class="rb-v no">\u2717</span>' in html
    detail = data_block(html)["tables"][0]["rows"][0][8]
    assert detail["judge"]["faithfulness"][1] == ["claims", "hot water", 0,
                                                  "not in the contexts"]
    assert detail["usage"] == [1200, 80, 2]


def test_a_threshold_nothing_could_check_is_no_failure_in_the_details() -> None:
    """A case whose metric could not be computed (an unjudged query) neither passes nor fails
    its per-query threshold, and its row read "ok"; its details said "FAIL recall@10 = nan"."""
    rec = make_record("q1", ndcg=None, thresholds=[
        {"metric": "recall@10", "op": ">=", "threshold": 0.5, "value": None, "passed": None,
         "margin": None}])
    html = render_html(make_summary([rec]), [rec])
    assert data_block(html)["tables"][0]["rows"][0][4] == "ok"
    assert "FAIL recall@10" not in html
    assert '<li class="na">NOT COMPUTED recall@10 = nan, expected &gt;= 0.5</li>' in html
    assert data_block(html)["tables"][0]["rows"][0][8]["thresholds"][0][4] is None


def test_problems_come_first_and_only_the_first_page_is_html() -> None:
    recs = [make_record(f"q{i:04d}", ndcg=0.5) for i in range(PAGE_SIZE + 50)]
    recs[-1]["status"] = "failed"
    html = render_html(make_summary(recs), recs)
    assert html.count('<tr class="rb-row') == PAGE_SIZE
    rows = data_block(html)["tables"][0]["rows"]
    assert len(rows) == PAGE_SIZE + 50
    assert rows[0][1] == f"q{PAGE_SIZE + 49:04d}" and rows[0][4] == "failed"
    assert f"Showing the first {PAGE_SIZE} of {PAGE_SIZE + 50} rows" in html


# -- escaping and self-containment ----------------------------------------------------------


def _hostile_run() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    rec = make_record(
        "q-" + XSS, retriever="dense " + XSS, query="why " + XSS + " \u2028 end",
        retrieved=[[XSS, 1.0, 1], ["https://evil.example/x.js", 0.5, 0]], missed=[[XSS, 2]],
        answer="answer " + XSS + "</script><!--", contexts=[XSS],
        judge={"faithfulness": {"claims": [{"claim": XSS, "supported": 0, "why": XSS}]}},
        status="error", error={"stage": "retrieve", "type": XSS, "message": XSS},
        tags=[XSS], type=XSS,
    )
    summary = make_summary([rec], gates=[{**GATES[0], "retriever": "dense " + XSS,
                                          "text": "ndcg@10 >= 0.4 " + XSS}])
    summary["suites"][0]["name"] = "suite " + XSS
    summary["run"]["command"] = ["pytest", XSS]
    return summary, [rec], {XSS: XSS, "d1": "<img src=x onerror=alert(1)>"}


def test_data_is_escaped_everywhere() -> None:
    summary, recs, docs = _hostile_run()
    html = render_html(summary, recs, doc_text=docs)
    page = parse(html)
    # The only scripts are the report's own: the JSON data block and the inline script.
    assert page.scripts == [{"type": "application/json", "id": "rb-data"}, {}]
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert not [name for name, _ in page.attrs if name.lower().startswith("on")]
    assert "img" not in page.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for block in svgs(html):
        ET.fromstring(block)  # names in charts did not break the SVG
    # The data block holds the hostile strings intact, with no raw <, > or & and no U+2028.
    raw = page.script_text[0]
    assert not set(raw) & {"<", ">", "&", "\u2028", "\u2029"}
    data = json.loads(raw)
    row = data["tables"][0]["rows"][0]
    assert row[1] == "q-" + XSS
    assert data["tables"][0]["retrievers"] == ["dense " + XSS]
    assert row[8]["answer"] == "answer " + XSS + "</script><!--"


def test_no_network_urls_and_a_strict_content_security_policy() -> None:
    summary, recs, docs = _hostile_run()
    html = render_html(summary, recs, doc_text=docs)
    page = parse(html)
    for name, value in page.attrs:
        if name in ("src", "href", "xlink:href", "action", "srcset", "data"):
            assert value is not None
            assert not re.match(r"\s*(https?:)?//", value), (name, value)
    # Apart from data (shown as text), no URL at all: no CDN, fonts, images or namespaces.
    clean = render_html(*(make_summary([make_record("q1")]), [make_record("q1")]))
    assert "http://" not in clean and "https://" not in clean
    metas = [dict(a) for a in page.metas if dict(a).get("http-equiv") ==
             "Content-Security-Policy"]
    assert len(metas) == 1
    policy = dict(d.strip().split(" ", 1) for d in (metas[0]["content"] or "").split(";"))
    assert policy["default-src"] == "'none'"
    # Only the report's own script may run: its hash, no 'unsafe-inline', no other source.
    script = page.script_text[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"


def test_embed_json_escapes_what_could_end_or_confuse_the_block() -> None:
    text = str(embed_json({"a": "</script><!-- & \u2028\u2029", "n": float("nan")}))
    assert text == ('{"a":"\\u003c/script\\u003e\\u003c!-- \\u0026 \\u2028\\u2029",'
                    '"n":null}')
    assert json.loads(text)["a"] == "</script><!-- & \u2028\u2029"


def test_value_formatting_and_shading_agree_with_the_script() -> None:
    assert fmt(None) == fmt(float("nan")) == "nan"
    assert fmt(0.123456) == "0.1235" and fmt(0.5, signed=True) == "+0.5000"
    assert heat(1.0) == "h10" and heat(0.0) == "h0" and heat(0.25) == "h3"  # half up
    assert heat(0.9, "lower") == "h1"
    assert heat(1.5) == heat(None) == ""


# -- scale ------------------------------------------------------------------------------------


def _big_run(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield make_record(
            f"q{i:05d}", ndcg=(i % 97) / 96, query=f"how does query number {i} work in practice",
            retrieved=[[f"doc{(i * 7 + k) % 50_000:05d}", 10.0 - k, k % 2] for k in range(10)],
            relevant_ranks={**{f"doc{(i * 7 + k) % 50_000:05d}": k + 1 for k in range(1, 10, 2)},
                            "d9": None},
            answer="word " * 60, contexts=["context text " * 40] * 5,
            judge={"faithfulness": {"claims": [{"claim": "a claim " * 8, "supported": 1,
                                                "why": "because " * 10}] * 4}},
        )


# sha256 of the 10,000-query report: a change meant to make rendering faster must leave
# the bytes alone. A change of the page on purpose updates it (the test prints the new one).
TEN_THOUSAND_SHA256 = "77456e1e7eb35bde"


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Building 10,000 records and reading the 12 MB data block back make millions of small
    # containers; the cyclic collector run over them meanwhile doubled that part of the test.
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_ten_thousand_queries_fit_in_fifteen_megabytes() -> None:
    with _gc_paused():
        recs = list(_big_run(10_000))
        summary = make_summary(recs)
        docs = {f"doc{k:05d}": "document text " * 30 for k in range(50_000)}
    t0 = time.perf_counter()
    html = render_html(summary, recs, doc_text=docs)
    elapsed = time.perf_counter() - t0
    size = len(html.encode("utf-8"))
    digest = hashlib.sha256(html.encode("utf-8")).hexdigest()
    print(f"10,000 queries: {size / 1e6:.2f} MB in {elapsed:.2f} s, sha256 {digest}")
    assert size < 15 * 1024 * 1024
    assert elapsed < 30, "rendering should take seconds, not minutes"
    assert digest.startswith(TEN_THOUSAND_SHA256), (
        f"the 10,000-query report changed (sha256 {digest}); update TEN_THOUSAND_SHA256 if "
        "the page changed on purpose")
    assert html.count('<tr class="rb-row') == PAGE_SIZE
    with _gc_paused():
        data = data_block(html)
    assert len(data["tables"][0]["rows"]) == 10_000
    # Long texts were shortened to fit, and the page says so.
    assert data["trimmed"] is True
    assert "complete records are in cases.jsonl" in html


# -- svg ------------------------------------------------------------------------------------


def test_svg_charts_handle_missing_and_out_of_range_values() -> None:
    bars = svg.ci_bar_chart(["m", "latency"], [
        svg.CiSeries("a", svg.color(0), ((None, None, None), (250.0, 200.0, 300.0))),
        svg.CiSeries("b & c", svg.color(1), ((0.5, 0.4, 0.6), (-3.0, -5.0, 1.0)))],
        label="x < y")
    root = ET.fromstring(str(bars))
    assert root.get("aria-label") == "x < y"
    assert any(t.text == "\u00d7" for t in root.iter("text"))  # the NaN mean is marked
    hist = ET.fromstring(str(svg.histogram_panel("m", [
        svg.HistSeries("a", svg.color(0), (0.0, 1.0, 1.0, None))])))
    counts = [r.find("title").text for r in hist.iter("rect")]  # type: ignore[union-attr]
    assert counts == ["a m in [0, 0.05): 1 queries", "a m in [0.95, 1]: 2 queries"]
    assert any(t.text == "n=3 nan=1" for t in hist.iter("text"))
    spark = ET.fromstring(str(svg.sparkline([0.1, None, 0.3, 0.4], label="t")))
    assert len(spark.findall("polyline")) == 1 and len(spark.findall("circle")) == 2


# -- re-rendering run folders --------------------------------------------------------------------

SUITE = """\
name: smoke
dataset:
  documents:
    - {_id: d1, title: Espresso, text: espresso needs fine grind}
    - {_id: d2, title: Cold brew, text: cold brew steeps coarse grounds for hours}
    - {_id: d3, title: Milk, text: steam milk to 60 degrees}
  items:
    - {_id: q1, text: how fine is espresso grind, relevant: {d1: 2}, difficulty: easy}
    - {_id: q2, text: cold brew time, relevant: {d2: 1, d3: 0}, difficulty: hard}
    - {_id: q3, text: milk temperature, relevant: [d3]}
retrievers:
  ov: {type: "rbret_html:Overlap"}
metrics: [ndcg@10, recall@10]
gates:
  ndcg@10: ">= 0.5"
"""

RETRIEVER = """\
class Overlap:
    def index(self, corpus):
        self.docs = [(d.id, set((d.title + " " + d.text).lower().split())) for d in corpus]

    def retrieve(self, query, k):
        q = set(query.lower().split())
        scored = [(i, float(len(q & t))) for i, t in self.docs if q & t]
        return sorted(scored, key=lambda x: -x[1])[:k]
"""


@pytest.fixture(scope="module")
def shared_runs() -> dict[str, Any]:
    """Runs made once for this module, each by the first test that needs it."""
    return {}


@pytest.fixture
def run_dir(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
            shared_runs: dict[str, Any]) -> Path:
    """A run folder written by the plugin itself for a small suite.

    Every test changes its folder, and each gets one as the run left it: the first test that
    needs it makes the run (in its own pytester folder, which it then uses); the others get
    a copy of that folder taken right after the run (the run costs about 0.2 s, a copy a few
    milliseconds; about ten tests use it)."""
    pytester.syspathinsert()
    if "run" not in shared_runs:
        try:
            pytester.makepyfile(rbret_html=RETRIEVER)
            pytester.makefile(".ragbench.yaml", s=SUITE)
            pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
            result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly",
                                        "s.ragbench.yaml")
            result.assert_outcomes(passed=3)
            folder = (pytester.path / ".ragbench" / "runs" / "latest").resolve()
            assert (folder / SUMMARY_JSON).is_file()
            # the whole project as the run left it (suite, retriever, ini, .ragbench with
            # its "latest" link), before this test changes anything in it
            pristine = tmp_path_factory.mktemp("run_dir") / "project"
            shutil.copytree(pytester.path, pristine, symlinks=True)
            shared_runs["run"] = (pristine, folder.relative_to(pytester.path))
        except Exception as exc:
            # the first test shows the failure; the others say so instead of running it again
            shared_runs["run"] = f"{type(exc).__name__}: {exc}"
            raise
        return folder
    run = shared_runs["run"]
    if isinstance(run, str):
        pytest.fail(f"the shared run failed (see the first test that used it): {run}")
    pristine, relative = run
    shutil.copytree(pristine, pytester.path, symlinks=True, dirs_exist_ok=True)
    folder = pytester.path / relative
    assert (folder / SUMMARY_JSON).is_file()
    return folder


def test_rerender_round_trip(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "cases.csv").unlink()
    assert ragbench_main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run_dir / REPORT_HTML), str(run_dir / "cases.csv"),
                       str(run_dir / "summary.md")]
    html = (run_dir / REPORT_HTML).read_text(encoding="utf-8")
    summary = json.loads((run_dir / SUMMARY_JSON).read_text(encoding="utf-8"))
    assert summary["run"]["id"] in html
    assert "how fine is espresso grind" in html
    assert '<span class="badge pass">PASS</span>' in html
    assert len(data_block(html)["tables"][0]["rows"]) == 3
    assert (run_dir / "cases.csv").read_text().count("\n") == 4
    assert "ragbench: passed" in (run_dir / "summary.md").read_text()
    # --html writes elsewhere; the same inputs give the same page.
    other = run_dir.parent / "copy.html"
    assert ragbench_main(["report", str(run_dir), "--html", str(other)]) == 0
    assert other.read_text(encoding="utf-8") == html


def test_rerender_refuses_a_finished_run_without_its_records(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder whose cases.jsonl was left out (a CI artifact without the large file) was
    rewritten from the summary alone: cases.csv emptied, the per-query rows gone, exit 0."""
    csv_before = (run_dir / "cases.csv").read_text()
    html_before = (run_dir / REPORT_HTML).read_text(encoding="utf-8")
    (run_dir / CASES_JSONL).unlink()
    assert ragbench_main(["report", str(run_dir)]) != 0
    assert "cases.jsonl is missing" in capsys.readouterr().err
    assert (run_dir / "cases.csv").read_text() == csv_before
    assert (run_dir / REPORT_HTML).read_text(encoding="utf-8") == html_before


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_finished_run_whose_records_were_cut_short_is_refused(
        run_dir: Path, capsys: pytest.CaptureFixture[str], keep: float) -> None:
    """A finished run's cases.jsonl cut short (a copy or an artifact upload that stopped
    midway, an emptied file) was read as a crash's torn last line: 'ragbench report'
    rewrote cases.csv and the report from what was left, exit 0, and 'ragbench compare' of
    the folder judged the missing queries as regressions."""
    from pytest_ragbench.results.baseline import BaselineError
    from pytest_ragbench.results.compare import doc_from_run_dir

    raw = (run_dir / CASES_JSONL).read_bytes()
    (run_dir / CASES_JSONL).write_bytes(raw[:int(len(raw) * keep)])
    left = len(read_jsonl(run_dir / CASES_JSONL))
    csv_before = (run_dir / "cases.csv").read_text()
    html_before = (run_dir / REPORT_HTML).read_text(encoding="utf-8")
    assert ragbench_main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert (f"{run_dir / CASES_JSONL} holds {left} case records, and the run recorded 3 "
            f"({SUMMARY_JSON}): nothing was rewritten") in err, err
    assert (run_dir / "cases.csv").read_text() == csv_before
    assert (run_dir / REPORT_HTML).read_text(encoding="utf-8") == html_before
    with pytest.raises(BaselineError, match=f"holds {left} case records, and the run "
                                            "recorded 3"):
        doc_from_run_dir(run_dir)


def test_a_run_still_going_is_not_reported_as_interrupted(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'ragbench report latest' while the run was still going rewrote its folder's reports
    with 'FAILED (partial: 2 of 10 cases): the run was interrupted', and 'ragbench compare'
    of it said it did not finish and to resume it, which a resume refuses."""
    import subprocess
    import sys

    from pytest_ragbench.results.baseline import BaselineError
    from pytest_ragbench.results.compare import doc_from_run_dir
    from pytest_ragbench.results.runfolder import _process_start

    (run_dir / SUMMARY_JSON).unlink()
    (run_dir / REPORT_HTML).unlink()
    start = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    # a process of this host that lives until its input closes: the run, still going
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as proc:
        try:
            start["process"]["pid"] = proc.pid
            start["process"]["start"] = _process_start(proc.pid)
            (run_dir / RUN_JSON).write_text(json.dumps(start), encoding="utf-8")
            assert ragbench_main(["report", str(run_dir)]) == 2
            err = capsys.readouterr().err
            assert (f"ragbench report: {run_dir}: the run is still going (process "
                    f"{proc.pid} on this host)") in err, err
            assert "the run was interrupted" not in err
            assert not (run_dir / REPORT_HTML).exists()
            with pytest.raises(BaselineError, match=f"the run is still going \\(process "
                                                    f"{proc.pid} on this host\\)") as caught:
                doc_from_run_dir(run_dir)
            assert "--ragbench-resume" not in str(caught.value)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
    # its process gone without a summary: a run that did not finish, as before
    assert ragbench_main(["report", str(run_dir)]) == 0
    assert "the run did not finish" in capsys.readouterr().err


@pytest.mark.parametrize("edit", ["drop-metrics", "run-not-a-mapping"])
def test_rerender_names_a_summary_this_version_cannot_read(
        run_dir: Path, capsys: pytest.CaptureFixture[str], edit: str) -> None:
    """A summary.json of the right outline the reports cannot read (another version's, or
    edited by hand) ended 'ragbench report' in a traceback, after report.html was rewritten;
    'ragbench compare' of the same folder named the file."""
    summary = json.loads((run_dir / SUMMARY_JSON).read_text(encoding="utf-8"))
    if edit == "drop-metrics":
        del summary["suites"][0]["metrics"]
    else:
        summary["run"] = 3
    (run_dir / SUMMARY_JSON).write_text(json.dumps(summary), encoding="utf-8")
    html_before = (run_dir / REPORT_HTML).read_text(encoding="utf-8")
    assert ragbench_main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ragbench report: {run_dir / SUMMARY_JSON}: not a ragbench "
                          "summary this version reads (")
    assert (run_dir / REPORT_HTML).read_text(encoding="utf-8") == html_before


def test_rerender_a_crashed_run_without_summary(run_dir: Path) -> None:
    # A run folder of a version that kept no run.json: nothing says what the suite gates.
    (run_dir / SUMMARY_JSON).unlink()
    (run_dir / RUN_JSON).unlink()
    with (run_dir / CASES_JSONL).open("a", encoding="utf-8") as fh:
        fh.write('{"torn": ')  # the last line of a crashed run
    paths = rerender(run_dir)
    html = paths[0].read_text(encoding="utf-8")
    assert "Partial run: summary.json is missing" in html
    assert "without gates" in html
    # the run did not finish: interrupted, as a run stopped by SIGTERM says (a SIGKILL, a
    # CI job cancelled hard), not "passed" beside the SIGTERM's "FAILED"
    assert 'class="rb-verdict">FAILED</span> <span class="rb-partial">partial: ' in html
    assert "the run was interrupted" in html
    md = paths[2].read_text(encoding="utf-8")
    assert md.startswith("> **Partial run**")
    summary, records = load_run(run_dir)
    assert summary["run"]["partial"] is True
    assert len(records) == 3 == summary["run"]["n_records"]
    assert summary["suites"][0]["metrics"] == ["ndcg@10", "recall@10"]


def test_a_run_killed_before_its_first_case_is_a_run_that_did_not_finish(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed before any case ended (an index still building, a first LLM call) leaves
    run.json alone: 'ragbench report latest' said its folder was 'not a ragbench run folder
    (it has neither cases.jsonl nor summary.json)', 'ragbench compare' 'not a run folder'."""
    from pytest_ragbench.results.baseline import BaselineError
    from pytest_ragbench.results.compare import doc_from_run_dir

    for name in (SUMMARY_JSON, CASES_JSONL, REPORT_HTML, "cases.csv", "summary.md"):
        (run_dir / name).unlink()
    assert ragbench_main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "summary.json is missing (the run did not finish)" in err, err
    md = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "## ragbench: FAILED (partial: 0 of 3 cases)" in md
    assert "the run was interrupted" in md
    assert (run_dir / "cases.csv").read_text().count("\n") == 1  # the header alone
    with pytest.raises(BaselineError, match="the run did not finish") as caught:
        doc_from_run_dir(run_dir)
    assert "not a run folder" not in str(caught.value)


def test_rerendered_crashed_run_counts_the_cases_of_a_suite_that_recorded_none(
        run_dir: Path) -> None:
    """A run of two suites killed before the second one's first case: the live run said
    "3 of 8 cases", the re-render "3 of 3" (the second suite has no row in the summary)."""
    (run_dir / SUMMARY_JSON).unlink()
    start = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    start["collected"]["other.yaml"] = 5
    (run_dir / RUN_JSON).write_text(json.dumps(start), encoding="utf-8")
    paths = rerender(run_dir)
    summary, _ = load_run(run_dir)
    assert (summary["run"]["n_cases"], summary["run"]["n_cases_total"]) == (3, 8)
    assert "partial: 3 of 8 cases" in paths[2].read_text(encoding="utf-8")
    # a suite that recorded cases but whose count run.json lacks counts as it ran
    start["collected"] = {"other.yaml": 5}
    (run_dir / RUN_JSON).write_text(json.dumps(start), encoding="utf-8")
    rerender(run_dir)
    summary, _ = load_run(run_dir)
    assert (summary["run"]["n_cases"], summary["run"]["n_cases_total"]) == (3, 8)


def test_rerendered_crashed_run_keeps_its_failed_and_errored_cases_in_the_verdict(
        run_dir: Path) -> None:
    # rebuilt from cases.jsonl, the verdict counted the gates only: a crashed run whose cases
    # failed read "passed (partial ...)" while its own table listed the failures
    (run_dir / SUMMARY_JSON).unlink()
    records = read_jsonl(run_dir / CASES_JSONL)
    records[0]["status"] = "failed"
    records[1]["status"] = "failed"  # an expected failure: not counted
    records[1]["xfail"] = {"reason": "known", "outcome": "xfailed"}
    records[2]["status"] = "error"
    (run_dir / CASES_JSONL).write_text("".join(json.dumps(r) + "\n" for r in records))
    paths = rerender(run_dir)
    summary, _ = load_run(run_dir)
    verdict = summary["verdict"]
    # every collected case has its record: not "partial: 3 of 3 cases" (the note says that
    # the run did not finish)
    assert summary["passed"] is False and verdict["partial"] is False
    assert verdict["headline"] == "FAILED" and summary["run"]["partial"] is True
    assert [r["text"] for r in verdict["reasons"] if r["fails"]] == [
        "1 item failed", "1 item errored", "the run was interrupted"]
    md = paths[2].read_text(encoding="utf-8")
    assert md.startswith("> **Partial run**: summary.json is missing")
    assert "## ragbench: FAILED\n" in md and "of 3 cases" not in md
    assert "FAILED" in paths[0].read_text(encoding="utf-8")


CRASHING_RETRIEVER = RETRIEVER + """\

    def retrieve_crashing(self, query, k):
        if "milk" in query:
            import os

            os._exit(3)  # killed mid-run: no summary, no report, no sessionfinish
        return self.retrieve_plain(query, k)

Overlap.retrieve_plain = Overlap.retrieve
Overlap.retrieve = Overlap.retrieve_crashing
"""


def test_report_of_a_run_killed_before_the_end_shows_the_gates(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    pytester.makepyfile(rbret_html=CRASHING_RETRIEVER)
    pytester.makefile(".ragbench.yaml", s=SUITE.replace("ndcg@10: \">= 0.5\"",
                                                        "ndcg@10: \">= 0.5\"\n"
                                                        "  'difficulty=hard: recall@10': 0.9"))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "s.ragbench.yaml")
    assert result.ret == 3
    folder = (pytester.path / ".ragbench" / "runs" / "latest").resolve()
    assert not (folder / SUMMARY_JSON).exists()
    assert len(read_jsonl(folder / CASES_JSONL)) == 2  # q1 and q2 finished, q3 killed it
    assert ragbench_main(["report", str(folder)]) == 0
    capsys.readouterr()
    summary, _ = load_run(folder)
    # The gates come from the suite's spec in run.json, checked on the cases that ran.
    checked = {g["text"]: g["passed"] for g in summary["gates"]}
    assert checked == {"ndcg@10 >= 0.5": True, "difficulty=hard: recall@10 >= 0.9": True}
    # the scoped gate judged q2 alone, the one hard case of the two that ran
    assert {g["text"]: g["coverage"] for g in summary["gates"]} == {
        "ndcg@10 >= 0.5": "2 of 3 cases",
        "difficulty=hard: recall@10 >= 0.9": "1 case of its scope"}
    assert summary["suites"][0]["partial"] and summary["suites"][0]["seed"] == 0
    assert summary["run"]["partial"] and "without baseline comparison" in summary["run"]["note"]
    html = (folder / REPORT_HTML).read_text(encoding="utf-8")
    # the scope said once, beside the system
    assert ("smoke / ov [difficulty=hard]</td><td><code>recall@10 &gt;= 0.9</code>" in html
            and "no gates</span>" not in html)
    md = (folder / "summary.md").read_text(encoding="utf-8")
    assert ("| PASS | smoke/ov | difficulty=hard: recall@10 &gt;= 0.9 (on 1 case of its scope "
            "that ran) | 1.0000 | +0.1000 |") in md


@pytest.mark.parametrize(("line", "message"), [
    ("42", "line 2: expected a case record (a JSON object), got number"),
    ("{}", "line 2: expected a case record with 'suite', 'retriever' and 'case_id'"),
    ('{"suite": "s", "retr', "line 2: not JSON"),
])
def test_a_damaged_cases_file_is_one_clear_error_naming_its_line(
        run_dir: Path, capsys: pytest.CaptureFixture[str], line: str, message: str) -> None:
    # a line that is valid JSON but no record crashed `ragbench report` with a traceback, and
    # a line that is not JSON in the middle was skipped without a word (59 cases of 60)
    lines = (run_dir / CASES_JSONL).read_text().splitlines()
    (run_dir / CASES_JSONL).write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    assert ragbench_main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{CASES_JSONL}: {message}" in err and "Traceback" not in err


def test_a_torn_last_line_is_what_a_crash_leaves_and_is_skipped(run_dir: Path) -> None:
    text = (run_dir / CASES_JSONL).read_text()
    (run_dir / CASES_JSONL).write_text(text + '{"suite": "s.ragbench.yaml", "retr')
    _, records = load_run(run_dir)
    assert len(records) == 3


def test_a_line_torn_inside_a_character_is_skipped_too(run_dir: Path) -> None:
    # records are written as UTF-8 (not ASCII escapes): a crash may cut a character in two,
    # which stopped `ragbench report` and a resume with a decoding error
    raw = (run_dir / CASES_JSONL).read_bytes()
    (run_dir / CASES_JSONL).write_bytes(raw + '{"suite": "s.ragbench.yaml", "query": "café'
                                        .encode()[:-1])
    _, records = load_run(run_dir)
    assert len(records) == 3
    (run_dir / CASES_JSONL).write_bytes(b'{"x": "\xc3"}\n' + raw)
    with pytest.raises(RunFolderError, match=r"cases\.jsonl: line 1: not UTF-8 text"):
        load_run(run_dir)
    # the same folder as a baseline: one line, not a traceback (ragbench compare printed one)
    from pytest_ragbench.results.baseline import BaselineError
    from pytest_ragbench.results.compare import doc_from_run_dir

    with pytest.raises(BaselineError, match=r"cases\.jsonl: line 1: not UTF-8 text"):
        doc_from_run_dir(run_dir)
    # a hand-edited metric value: named, where `ragbench report` ended in a traceback
    first = json.loads(raw.decode().splitlines()[0])
    first["metrics"][next(iter(first["metrics"]))] = "oops"
    (run_dir / CASES_JSONL).write_bytes(json.dumps(first).encode() + b"\n" + raw)
    with pytest.raises(RunFolderError, match=r"line 1: metric '.*' is string, expected a number"):
        load_run(run_dir)


def test_folders_that_are_not_run_folders(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert ragbench_main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    runs = tmp_path / "runs"
    (runs / "20260101T000000Z-aaaaaa").mkdir(parents=True)
    (runs / "20260101T000000Z-aaaaaa" / CASES_JSONL).write_text("")
    assert ragbench_main(["report", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "not a ragbench run folder" in err and "pass one of them" in err
    with pytest.raises(RunFolderError):
        rerender(tmp_path)
    assert ragbench_main(["report"]) == 2  # argparse: RUN_DIR is required


def test_a_sibling_run_whose_summary_cannot_be_read_is_left_out_of_the_trends(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder beside the one re-rendered (no history database: its trends come from
    the folders) whose summary.json has another shape (another tool's, edited by hand)
    ended 'ragbench report' of every other run in a traceback, and a run's own end too."""
    recs = [make_record("q1", ndcg=0.25)]
    odd = make_summary(recs)
    odd["suites"][0]["retrievers"][0]["metrics"] = ["ndcg@10"]
    no_id = make_summary(recs)
    del no_id["suites"][0]["id"]
    for name, summary in (("20260101T000000Z-aaaaaa", odd), ("20260102T000000Z-bbbbbb", no_id),
                          ("20260103T000000Z-cccccc", make_summary(recs))):
        folder = tmp_path / name
        folder.mkdir()
        summary["run"]["id"] = name
        (folder / SUMMARY_JSON).write_text(json.dumps(summary))
        (folder / CASES_JSONL).write_text(json.dumps(recs[0]) + "\n")
    assert history_from_runs(tmp_path) == [
        {"run_id": "20260103T000000Z-cccccc", "finished": "2026-01-01T00:00:05+00:00",
         "means": {"suites/s.yaml/bm25/ndcg@10": pytest.approx(0.25),
                   "suites/s.yaml/bm25/recall@10": pytest.approx(0.5)}}]
    assert ragbench_main(["report", str(tmp_path / "20260103T000000Z-cccccc")]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_history_from_sibling_run_folders(tmp_path: Path) -> None:
    recs = [make_record("q1", ndcg=0.25)]
    for i, (name, partial) in enumerate((("20260101T000000Z-aaaaaa", False),
                                         ("20260102T000000Z-bbbbbb", True),
                                         ("20260103T000000Z-cccccc", False),
                                         ("20260104T000000Z-dddddd", False))):
        folder = tmp_path / name
        folder.mkdir()
        summary = make_summary(recs)
        summary["run"].update(id=name, partial=partial, finished=f"2026-01-0{i + 1}")
        summary["suites"][0]["retrievers"][0]["metrics"]["ndcg@10"]["mean"] = i / 10
        (folder / SUMMARY_JSON).write_text(json.dumps(summary))
        (folder / CASES_JSONL).write_text(json.dumps(recs[0]) + "\n")
    history = history_from_runs(tmp_path, before="20260104T000000Z-dddddd")
    assert [h["run_id"] for h in history] == ["20260101T000000Z-aaaaaa",
                                              "20260103T000000Z-cccccc"]
    assert history[1]["means"]["suites/s.yaml/bm25/ndcg@10"] == pytest.approx(0.2)
    html = rerender(tmp_path / "20260104T000000Z-dddddd")[0].read_text(encoding="utf-8")
    assert "Trend over recent runs" in html
    assert read_jsonl(tmp_path / "20260104T000000Z-dddddd" / CASES_JSONL) == recs

    # a copy of run 2 made by a tool that follows links is named "latest", which sorts after
    # every run id: its trend holds the runs before run 2, not run 2 and the ones after it
    shutil.copytree(tmp_path / "20260102T000000Z-bbbbbb", tmp_path / "latest")
    from pytest_ragbench.report import rerender as module

    seen: list[Any] = []
    real_write = module.write_html

    def write_html(path: Path, *args: Any, history: Any = None, **kwargs: Any) -> Path:
        seen.append([h["run_id"] for h in history or ()])
        return real_write(path, *args, history=history, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "write_html", write_html)
        rerender(tmp_path / "latest")
    assert seen == [["20260101T000000Z-aaaaaa"]]


def test_write_html_writes_the_rendered_page(tmp_path: Path,
                                             records: list[dict[str, Any]]) -> None:
    summary = make_summary(records)
    path = write_html(tmp_path / "sub" / "r.html", summary, records)
    assert path.read_text(encoding="utf-8") == render_html(summary, records)
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_sparse_summaries_still_render() -> None:
    # A summary from another version or tool may lack keys; the report must not crash.
    rec = make_record("q1")
    summary: dict[str, Any] = {"suites": [{
        "id": "suites/s.yaml", "metrics": ["ndcg@10"],
        "retrievers": [{"name": "bm25", "metrics": {"ndcg@10": {"mean": 0.5}}}],
        "ab": [{"metric": "ndcg@10", "pairs": [{"a": "bm25", "b": "dense"}]}]}],
        "baseline": {"rows": [{"retriever": "bm25", "metric": "ndcg@10", "delta": 0.1}]}}
    html = render_html(summary, [rec])
    assert "Suite suites/s.yaml" in html  # the id stands in for a missing name
    assert "0.5000" in html and "question q1" in html
    assert "No suite results in this run." in render_html({}, [])


def test_compiled_template_is_cached_and_renders_the_same(
    records: list[dict[str, Any]], tmp_path: Path
) -> None:
    summary = make_summary(records)
    plain = render_html(summary, records)
    cache = tmp_path / "templates"
    assert render_html(summary, records, template_cache=cache) == plain
    entries = list(cache.glob("__jinja2_*.cache"))
    assert entries, "no compiled template was stored"
    stamps = [p.stat().st_mtime_ns for p in entries]
    # The second render loads the stored code instead of compiling (and rewriting) it.
    assert render_html(summary, records, template_cache=cache) == plain
    assert [p.stat().st_mtime_ns for p in entries] == stamps


def test_runs_share_compiled_templates_in_the_per_user_cache(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # jinja2's default per-user folder: two runs in different projects (and runs without
    # pytest's cache) compile the template once and then load the stored code.
    import tempfile

    import jinja2

    # The per-user folder lives in the temp directory: a private one, so other processes
    # rendering reports meanwhile (xdist workers, other test runs) cannot touch its entries.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tmpdir")))
    folder = Path(jinja2.FileSystemBytecodeCache().directory)
    assert not list(folder.glob("__jinja2_*.cache"))
    pytester.makepyfile(rbret_html=RETRIEVER)
    pytester.syspathinsert()
    pytester.makefile(".ragbench.yaml", s=SUITE)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider",
                       "s.ragbench.yaml").assert_outcomes(passed=3)
    cached = {p: p.stat().st_mtime_ns for p in folder.glob("__jinja2_*.cache")}
    assert cached
    assert not (pytester.path / ".pytest_cache").exists()
    other = pytester.mkdir("other")
    for name in ("rbret_html.py", "s.ragbench.yaml", "tox.ini"):
        if (pytester.path / name).exists():
            (other / name).write_bytes((pytester.path / name).read_bytes())
    pytester.chdir()
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider",
                                str(other / "s.ragbench.yaml"), "--rootdir", str(other))
    result.assert_outcomes(passed=3)
    # Nothing compiled and rewritten again.
    assert {p: p.stat().st_mtime_ns for p in cached} == cached


def test_an_unusable_template_cache_never_costs_the_report(
    records: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = make_summary(records)
    plain = render_html(summary, records)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert render_html(summary, records, template_cache=blocker / "templates") == plain

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tempfile.NamedTemporaryFile", full_disk)
    cache = tmp_path / "templates"
    assert render_html(summary, records, template_cache=cache) == plain
    assert not list(cache.glob("__jinja2_*"))


@given(st.text(alphabet=st.sampled_from("ab \t\n\u00a0\u2003xy."), max_size=400),
       st.integers(min_value=1, max_value=150))
def test_a_snippet_collapses_only_what_it_shows_and_equals_collapsing_everything(text, length):
    assert _snippet(text, length) == _cut(" ".join(text.split()), length)


@given(st.text(alphabet=st.sampled_from("ab \t\n\u00a0xy."), max_size=900),
       st.text(alphabet=st.sampled_from("T \n"), max_size=5),
       st.integers(min_value=1, max_value=300))
def test_the_shown_text_a_worker_sends_gives_the_snippets_of_the_whole_text(text, title,
                                                                            length):
    # xdist workers send shortened texts instead of the controller reading the corpus: every
    # snippet the report can show must come out the same.
    from pytest_ragbench.datasets import Document
    from pytest_ragbench.report.documents import SNIPPET_MAX, shown_text

    doc = Document("d", text, title)
    full = f"{title}. {text}" if title else text
    assert length <= SNIPPET_MAX
    assert _snippet(shown_text(doc), length) == _snippet(full, length)
    assert len(shown_text(doc)) <= SNIPPET_MAX + 2


def test_shown_documents_get_their_text_unless_two_corpora_disagree() -> None:
    from pytest_ragbench.datasets import Document
    from pytest_ragbench.report.documents import shown_document_texts

    corpora = {
        "a.yaml": {"d1": Document("d1", "same", "Title"), "d2": Document("d2", "A's d2"),
                   "d9": Document("d9", "never shown")},
        "b.yaml": {"d1": Document("d1", "same", "Title"), "d2": Document("d2", "B's d2"),
                   "d3": Document("d3", "missed in b")},
    }
    records = [
        {"suite": "a.yaml", "retrieved": [["d1", 1.0, 1], ["d2", 0.5, None]], "missed": []},
        {"suite": "b.yaml", "retrieved": [["d2", 2.0, None], ["dX", 1.0, None]],
         "missed": [["d3", 2]]},
        {"suite": "gone.yaml", "retrieved": [["d7", 1.0, None]], "missed": []},
    ]
    texts = shown_document_texts(records, corpora.get)
    assert texts == {"d1": "Title. same", "d3": "missed in b"}
    # Texts the workers sent stand in for a corpus when they cover every shown id.
    sent = {"a.yaml": {"d1": "Title. same", "d2": "A's d2"},
            "b.yaml": {"d2": "B's d2", "dX": None, "d3": "missed in b"}}
    assert shown_document_texts(records, lambda sid: None, sent) == texts
    partial = {"a.yaml": {"d1": "Title. same"}}  # d2 missing: a.yaml's corpus is read
    assert shown_document_texts(records, corpora.get, partial) == texts


# -- axes, gate order, headline trends ------------------------------------------------------


def _axis_ticks(block: str) -> list[float]:
    """The y-axis tick labels of a bar chart (the end-anchored numbers at its left)."""
    return [float(t.text) for t in ET.fromstring(block).iter("text")
            if t.get("text-anchor") == "end" and t.text]


def test_latency_and_cost_get_axes_of_their_own(records: list[dict[str, Any]]) -> None:
    for i, r in enumerate(records):
        if r["metrics"]:
            r["metrics"]["latency_ms"] = 100.0 + 10 * i
        r["cost"] = 0.002
    summary = make_summary(records)
    html = render_html(summary, records)
    bars = [b for b in svgs(html) if 'class="chart bars"' in b]
    assert len(bars) == 3  # scores, latency, cost
    scores, latency, cost = bars
    # The scores keep their 0-1 axis: no latency bar stretches it.
    assert max(_axis_ticks(scores)) == 1.0
    assert "latency_ms" not in scores and "latency_ms" in latency
    # The axis reaches past the highest whisker, and its top is a labelled tick.
    highest = max(r["metrics"]["latency_ms"]["ci_high"]
                  for r in summary["suites"][0]["retrievers"])
    assert max(_axis_ticks(latency)) >= highest > 100
    assert ">ms</text>" in latency and ">$</text>" in cost
    assert 0.002 <= max(_axis_ticks(cost)) < 0.01
    assert "Mean latency_ms (ms) with 95% CI" in html
    assert "Mean LLM cost per query ($)" in html
    # One latency column in the per-query table: the metric's.
    keys = [c[0] for c in data_block(html)["tables"][0]["columns"]]
    assert "latency" not in keys and len(keys) == len(set(keys))
    plain = [make_record("q1")]
    assert "latency" in [c[0] for c in data_block(
        render_html(make_summary(plain), plain))["tables"][0]["columns"]]


def test_failed_gates_are_listed_first(records: list[dict[str, Any]]) -> None:
    html = render_html(make_summary(records, gates=GATES, gates_passed=False), records)
    gates = html[html.index('<section id="gates">'):html.index("</section>")]
    assert gates.index("FAIL</span>") < gates.index("PASS</span>")
    assert gates.index("recall@10 &gt;= 0.99") < gates.index("ndcg@10 &gt;= 0.4")


def test_trends_show_the_headline_metrics_only() -> None:
    metrics = ["ndcg@10", "recall@10", "mrr@10", "hit@10", "precision@5"]
    recs = [make_record(f"q{i}", metrics={m: i / 10 for m in metrics}) for i in range(1, 5)]
    summary = make_summary(recs, gates=[{**GATES[0], "metric": "precision@5"}])
    summary["suites"][0]["metrics"] = metrics
    history = [{"run_id": f"r{i}", "finished": f"2025-12-0{i}T00:00:00",
                "means": {f"suites/s.yaml/bm25/{m}": 0.2 + i / 100 for m in metrics}}
               for i in range(1, 4)]
    html = render_html(summary, recs, history=history)
    trend = html[html.index('<table class="rb-trends">'):]
    trend = trend[:trend.index("</table>")]
    shown = re.findall(r"<tr><td>([^<]+)</td><td>bm25</td>", trend)
    # The gated one, then the first listed until there are three, in the suite's order.
    assert shown == ["ndcg@10", "recall@10", "precision@5"]
    assert trend.count('class="chart spark"') == 3
    # One earlier run: a change, shown as numbers, not a two-dot line.
    html = render_html(summary, recs, history=history[-1:])
    trend = html[html.index('<table class="rb-trends">'):]
    trend = trend[:trend.index("</table>")]
    assert 'class="chart spark"' not in trend
    assert re.search(r"<tr><td>ndcg@10</td><td>bm25</td><td></td><td class=\"num\">2</td>"
                     r"<td class=\"num\">0.2300</td><td class=\"num\">0.2500</td>"
                     r"<td class=\"num\">\+0.0200</td></tr>", trend), trend


def test_cases_csv_has_one_latency_column(tmp_path: Path) -> None:
    import csv

    from pytest_ragbench.report.files import write_cases_csv

    rec = make_record("q1", latency_ms=7.25)
    write_cases_csv(tmp_path / "a.csv", [rec])
    rec_metric = make_record("q1", latency_ms=7.25,
                             metrics={"ndcg@10": 0.5, "latency_ms": 7.25})
    write_cases_csv(tmp_path / "b.csv", [rec_metric])
    for name in ("a.csv", "b.csv"):
        with (tmp_path / name).open(newline="") as fh:
            header, row = list(csv.reader(fh))
        assert header.count("latency_ms") == 1, name
        assert float(row[header.index("latency_ms")]) == 7.25
        assert header[-2:] == ["outcome", "xfail_reason"] and len(row) == len(header)


def test_cases_csv_cells_from_datasets_never_start_a_formula(tmp_path: Path) -> None:
    """Ids, types and tags come from datasets anyone may publish: '=cmd|...' in a tag ran as
    a formula (or a DDE call) in a spreadsheet. Numbers, negative ones too, stay numbers."""
    import csv

    from pytest_ragbench.report.files import write_cases_csv

    rec = make_record("=1+1", metrics={"ndcg@10": -0.5}, type="@SUM(A1)",
                      tags=["=cmd|' /C calc'!A0"], retriever="+x")
    write_cases_csv(tmp_path / "c.csv", [rec])
    with (tmp_path / "c.csv").open(newline="") as fh:
        header, row = list(csv.reader(fh))
    cell = dict(zip(header, row, strict=True))
    assert (cell["case_id"], cell["type"], cell["tags"], cell["retriever"]) == (
        "'=1+1", "'@SUM(A1)", "'=cmd|' /C calc'!A0", "'+x")
    assert cell["ndcg@10"] == "-0.5"


def test_readme_screenshot_shows_the_current_templates() -> None:
    import struct

    from pytest_ragbench.report.html import PAGE_FILES, template_digest

    root = Path(__file__).resolve().parents[1]
    image = root / "docs" / "img" / "quickstart-report.png"
    made = json.loads(image.with_suffix(".json").read_text(encoding="utf-8"))
    assert f"]({image.relative_to(root).as_posix()})" in (root / "README.md").read_text(
        encoding="utf-8")
    data = image.read_bytes()
    assert made["image_sha256"] == hashlib.sha256(data).hexdigest(), \
        "the picture is not the one the sidecar describes"
    assert struct.unpack(">II", data[16:24]) == (made["width"], made["height"])
    assert made["templates"] == list(PAGE_FILES)
    assert made["templates_sha256"] == template_digest(), (
        "docs/img/quickstart-report.png was made from older report templates; regenerate it "
        "with `python scripts/render_readme_screenshot.py`")


def test_template_digest_follows_every_template_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_ragbench.report import html as html_module

    before = html_module.template_digest()
    real = html_module._page_source
    assert {"report.html.j2", "report.css", "report.js", "svg.py"} <= set(html_module.PAGE_FILES)
    for name in html_module.PAGE_FILES:
        monkeypatch.setattr(html_module, "_page_source",
                            lambda n, name=name: real(n) + (" " if n == name else ""))
        assert html_module.template_digest() != before, name
    monkeypatch.setattr(html_module, "_page_source", real)
    assert html_module.template_digest() == before


KILL_THE_CONTROLLER = """
import os
import signal

import pytest

_reports = []


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    # on the xdist controller, once it has taken two cases' results: the run is killed
    if report.when == "setup" and not hasattr(pytest, "_in_worker"):
        _reports.append(report.nodeid)
        if len(_reports) == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        pytest._in_worker = True
"""


def test_report_of_an_xdist_run_killed_before_the_end_counts_every_case(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    # under xdist the case totals reach the controller after run.json was written: a killed
    # run was re-rendered as "2 of 2 cases" instead of "2 of 3"
    pytester.makepyfile(rbret_html=RETRIEVER)
    pytester.makeconftest(KILL_THE_CONTROLLER)
    pytester.makefile(".ragbench.yaml", s=SUITE)
    pytester.makeini("[pytest]\npythonpath = .\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "-n", "2", "s.ragbench.yaml")
    assert result.ret == -9
    folder = (pytester.path / ".ragbench" / "runs" / "latest").resolve()
    assert not (folder / SUMMARY_JSON).exists()
    assert json.loads((folder / "run.json").read_text())["collected"] == {"s.ragbench.yaml": 3}
    assert len(read_jsonl(folder / CASES_JSONL)) == 2
    assert ragbench_main(["report", str(folder)]) == 0
    capsys.readouterr()
    summary, _ = load_run(folder)
    assert summary["run"]["partial"]
    assert [g["coverage"] for g in summary["gates"]] == ["2 of 3 cases"]
