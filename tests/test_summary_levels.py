"""The terminal summary's levels in a real run: default, -q (short), -v (full), and the
option winning over the verbosity; summary.md follows the option, not -q/-v."""

from __future__ import annotations

import re

import pytest
from conftest import latest_run

SUITE = """\
name: mini
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers:
  overlap: {type: "overlap_retriever:Overlap"}
  bm25: {type: bm25}
metrics: [ndcg@10, recall@10, mrr@10, map@10, precision@1, latency_ms]
gates: ["precision@1 >= 0.5", "ndcg@10 >= 0.9", "latency_ms <= 0.001"]
"""


def _summary(result: pytest.RunResult) -> list[str]:
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "ragbench summary" in line)
    return lines[start + 1:next(i for i in range(start + 1, len(lines))
                                if lines[i].startswith("results: "))]


def test_default_short_and_full_in_a_run(pytester: pytest.Pytester, mini_suite) -> None:
    mini_suite(SUITE)
    default = pytester.runpytest("--ragbench=suite.yaml")
    assert default.ret == 1
    lines = _summary(default)
    # the table: systems x headline metrics (the gated one, precision@1, among them)
    assert lines[1].split() == ["system", "cases", "errors", "ndcg@10", "recall@10",
                                "precision@1", "n", "latency_ms"]
    assert lines[2].split()[:3] == ["overlap", "5", "0"] and lines[3].split()[0] == "bm25"
    assert "  2 more metrics (--ragbench-summary=full or -v): mrr@10, map@10" in lines
    assert any(line.startswith("  A/B on ndcg@10, recall@10, precision@1 (")
               for line in lines)
    gates = lines.index(next(line for line in lines if line.startswith("gates: ")))
    assert lines[gates + 1].startswith("  FAIL mini/")
    assert default.outlines[-2].startswith("ragbench: FAILED: ")

    quiet = pytester.runpytest("--ragbench=suite.yaml", "-q")
    short = _summary(quiet)
    assert len(short) < len(lines)
    assert "A/B" not in "\n".join(short) and "  PASS" not in "\n".join(short)
    assert any(line.startswith("  FAIL mini/") for line in short)
    assert quiet.outlines[-2].startswith("ragbench: FAILED: ")

    verbose = pytester.runpytest("--ragbench=suite.yaml", "-v")
    full = _summary(verbose)
    verbose.stdout.fnmatch_lines(["  overlap: 5 cases, 0 errors, 0 below per-query thresholds",
                                  "    metric * mean * 95% CI * n * nan",
                                  "    map@10 *"])
    assert len(full) > len(lines)
    # the option wins over the verbosity, and it alone chooses what summary.md shows
    def shape(summary: list[str]) -> list[str]:  # latencies differ from run to run
        return [re.sub(r"\d+\.\d+", "x", line) for line in summary]

    assert shape(_summary(pytester.runpytest("--ragbench=suite.yaml", "-v",
                                             "--ragbench-summary=default"))) == shape(lines)
    md = (latest_run(pytester.path) / "summary.md").read_text(encoding="utf-8")
    assert "| system | cases | errors | ndcg@10 |" in md
    pytester.runpytest("--ragbench=suite.yaml", "-q", "--ragbench-summary=full")
    md = (latest_run(pytester.path) / "summary.md").read_text(encoding="utf-8")
    assert "| retriever | cases | errors | ndcg@10 | recall@10 | mrr@10 | map@10 |" in md
    # ragbench report re-renders summary.md at the level it is asked for
    from pytest_ragbench.cli import main as ragbench_main

    run = latest_run(pytester.path)
    assert ragbench_main(["report", str(run), "--summary", "short"]) == 0
    md = (run / "summary.md").read_text(encoding="utf-8")
    assert "| system | cases | errors |" in md and "A/B" not in md and "| PASS |" not in md
