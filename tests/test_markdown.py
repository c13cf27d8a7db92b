"""summary.md shows user-provided strings as text: no raw HTML, no emphasis, no broken table.
Checked by rendering with a CommonMark renderer (HTML passthrough on, as on many CI pages)."""

from __future__ import annotations

import html
import json
import re
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.report.markdown import md_text, summary_markdown

markdown_it = pytest.importorskip("markdown_it")

# printable text, with the characters Markdown and HTML give meaning to over-represented
TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(list("<>&|*_`~#![]()\\ \n\r\t'\"/=:-+.")),
                       st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                       st.characters(min_codepoint=0xA0, max_codepoint=0x2FF)),
    max_size=40,
)


def renderer() -> object:
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")


def flat(text: str) -> str:
    return re.sub(r"\r\n|[\r\n]", " ", text)


@given(TEXT)
def test_md_text_renders_as_exactly_the_text(text: str) -> None:
    out = renderer().renderInline(md_text(text))
    assert "<" not in out.replace("&lt;", "")  # no element at all
    assert html.unescape(out) == flat(text)


@given(TEXT, TEXT)
def test_cells_keep_a_table_row_whole(a: str, b: str) -> None:
    table = f"| x | y | z |\n|---|---|---|\n| {md_text(a)} | {md_text(b)} | end |\n"
    out = renderer().render(table)
    cells = re.findall(r"<td>(.*?)</td>", out, flags=re.DOTALL)
    assert len(cells) == 3 and cells[2] == "end"
    # a renderer trims a cell's outer whitespace (Unicode spaces too)
    assert [html.unescape(c).strip() for c in cells[:2]] == [flat(a).strip(), flat(b).strip()]


def test_examples() -> None:
    assert md_text("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert md_text("a|b *c* `d` _e_\nf") == "a\\|b \\*c\\* \\`d\\` \\_e\\_ f"


HOSTILE_SUITE = """\
    name: "<script>alert(1)</script> | *bold* `tick` _u_ [l](http://x)\\nsecond line"
    dataset:
      corpus: corpus.jsonl
      items:
        - {_id: q1, text: "<img src=x onerror=alert(1)> espresso grind", relevant: {d1: 1}}
        - {_id: q2, text: "cold brew | `x` *y*\\n<b>z", relevant: {d2: 1}}
    retrievers:
      "<b>bm|25<b>*": {type: bm25}
      "r`2`_x_": {type: bm25, k1: 1.2}
    metrics: [ndcg@10, {name: recall@10, as: "<i>rec<i>|*"}]
    gates: ["ndcg@10 >= 0.1"]
"""


def test_summary_md_escapes_names_from_the_suite(pytester, mini_suite) -> None:
    # One run writes summary.md at the full level; the default level is rendered from the
    # run's summary.json by the same function (the full file shows they agree).
    mini_suite(textwrap.dedent(HOSTILE_SUITE))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-summary=full")
    result.assert_outcomes(passed=4)
    run = (pytester.path / ".ragbench" / "runs" / "latest").resolve()
    full = (run / "summary.md").read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary_markdown(summary, level="full") == full
    for level, text in (("full", full), ("default", summary_markdown(summary))):
        _check_escaped(text, level)


def _check_escaped(text: str, level: str) -> None:
    page = renderer().render(text)
    # no element came from a name: only the renderer's own structure and (full: the A/B
    # tables' legend) bold
    tags = set(re.findall(r"</?([a-z0-9]+)", page))
    assert tags <= {"h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td",
                    "strong"}, tags
    assert re.findall(r"<strong>(.*?)</strong>", page) == (
        ["bold"] * 2 if level == "full" else [])
    # every table row has as many cells as its header
    for table in re.findall(r"<table>.*?</table>", page, flags=re.DOTALL):
        width = len(re.findall(r"<th[ >]", table))
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.DOTALL)[1:]
        assert rows and all(len(re.findall(r"<td[ >]", r)) == width for r in rows)
    # the names are there, as text
    plain = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "<script>alert(1)</script> | *bold* `tick` _u_ [l](http://x) second line" in plain
    assert "<b>bm|25<b>*" in plain and "r`2`_x_" in plain and "<i>rec<i>|*" in plain
    # and the file itself holds no raw tag a renderer could pass through
    assert not re.search(r"<(script|img|b|i)\b", text)


def _summary(**extra: object) -> dict:
    """A one-suite summary with what summary_markdown reads."""
    return {"suites": [{"id": "s.yaml", "name": "s", "metrics": ["ndcg@10"],
                        "n_cases_run": 1, "n_cases_total": 1, "partial": False, "ab": [],
                        "retrievers": [{"name": "bm25", "n_cases": 1, "n_errors": 0,
                                        "n_failed": 0,
                                        "errors": [], "metrics": {"ndcg@10": {
                                            "mean": 0.5, "ci_low": 0.5, "ci_high": 0.5,
                                            "std": 0.0, "n": 1, "n_nan": 0,
                                            "direction": "higher"}}}]}],
            "gates": [], "gates_passed": True, **extra}


@pytest.mark.parametrize("level", ["short", "default", "full"])
def test_the_step_summary_says_the_cap_was_reached_and_what_changed_since_the_baseline(
        level: str) -> None:
    """The CI step summary left out the run budget (a run stopped by its cap never said so)
    and the baseline notes the terminal and the report show."""
    budget = {"spent": 1.246, "costs": {"s.yaml": {"spent": 1.246, "max_cost": 1.0,
                                                   "exhausted": True}},
              "pools": [{"model": "m", "endpoint": "http://h/v1", "requests": 28,
                         "max_in_flight": 3, "throttled": 0, "timeouts": 0,
                         "concurrency": 3}]}
    baseline = {"path": "base.json", "suites": [
        {"id": "s.yaml", "name": "s", "in_baseline": True, "baseline_id": "old/s.yaml",
         "suite_changed": True, "n_common": 1}]}
    row = {"regressed": False, "suite": "s", "retriever": "bm25", "metric": "ndcg@10",
           "baseline": 0.5, "current": 0.5, "delta": 0.0, "ci_low": 0.0, "ci_high": 0.0,
           "p_holm": 1.0, "test": "permutation", "n": 1}
    text = summary_markdown(_summary(run={"budget": budget}, baseline=baseline), [row],
                            level=level)
    assert "run budget s.yaml: spent $1.2460 of $1.0000 (all workers), cap reached" in text
    assert "llm pool" not in text  # timing-dependent: the file is the same at any -n
    assert ("suite s: matched by name to old/s.yaml in the baseline, suite file changed; "
            "compared on the 1 common queries") in md_text_unescaped(text)


def md_text_unescaped(text: str) -> str:
    return text.replace("\\", "")


def test_the_full_summary_md_shows_each_systems_llm_use_as_the_default_one_does() -> None:
    """At the default level summary.md has an llm cell per system (requests, tokens, cost);
    at ``full``, which the docs say shows everything, it had no tokens or cost at all."""
    usage = {"requests": 5, "prompt_tokens": 80, "completion_tokens": 20, "cost": 0.0001,
             "n_items": 5, "n_costed": 5, "n_estimated": 5,
             "per_item": {"requests": 1.0, "prompt_tokens": 16.0, "completion_tokens": 4.0,
                          "cost": 0.00002}}
    summary = _summary()
    summary["suites"][0]["retrievers"][0]["usage"] = usage
    assert "5 req, 100 tok (estimated), $" in summary_markdown(summary, level="default")
    full = summary_markdown(summary, level="full")
    assert ("bm25: llm: 5 requests, 80 prompt + 20 completion tokens (estimated for 5 of 5 "
            "cases: the endpoint sent no usage), cost $") in md_text_unescaped(full)


def test_a_gates_margin_reads_as_in_the_terminal() -> None:
    """summary.md gave a passed gate's margin without its sign ("0.1000") where the
    terminal, the HTML report and junit say "+0.1000" (and a failed one's "-0.2000")."""
    from pytest_ragbench.report.terminal import gate_lines

    gates = [{"kind": "threshold", "suite": "s", "suite_id": "s.yaml", "retriever": "bm25",
              "metric": "ndcg@10", "scope": "", "op": ">=", "threshold": threshold,
              "value": 0.5, "passed": margin >= 0, "margin": margin,
              "text": f"ndcg@10 >= {threshold}", "n": 1}
             for threshold, margin in ((0.4, 0.1), (0.7, -0.2), (0.5, 0.0))]
    md = summary_markdown(_summary(gates=gates, gates_passed=False), level="full")
    terminal = "\n".join(gate_lines(gates))
    for margin in ("+0.1000", "-0.2000", "+0.0000"):
        assert f"(margin {margin})" in terminal
        assert f" | 0.5000 | {margin} |" in md
