"""Which suites the xdist controller's head start may lead (pytest_ragbench/headstart.py
``eligible``): only those whose cases it answers exactly as a worker does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import DOCS, QUERIES, write_jsonl

from pytest_ragbench.headstart import eligible
from pytest_ragbench.registry import Registry
from pytest_ragbench.suite.loader import load_suite

BASE = """\
name: hs
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers: {bm25: {}}
metrics: [recall@5, token_f1, faithfulness]
llm: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m}
judge: {llm: same}
"""


def _eligible(folder: Path, text: str) -> bool:
    write_jsonl(folder / "corpus.jsonl", DOCS)
    write_jsonl(folder / "queries.jsonl", [{**q, "answer": "x"} for q in QUERIES])
    (folder / "suite.yaml").write_text(text, encoding="utf-8")
    registry = Registry(use_entry_points=False)
    suite = load_suite(folder / "suite.yaml", registry.names("retriever"))
    return eligible(SimpleNamespace(registry=registry), suite)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    ("retrievers: {bm25: {}}", "retrievers: {bm25: {case_timeout: 5}}"),
    ('model: m}', 'model: m, case_timeout: 5}'),
    ("judge: {llm: same}", 'judge: {llm: {type: openai, base_url: "http://127.0.0.1:9/v1", '
                           'model: j, case_timeout: 5}}'),
    ("judge: {llm: same}\n", "judge: {llm: same}\ngeneration: {timeout: 5}\n"),
], ids=["retriever", "llm", "judge", "generation"])
def test_a_time_limit_keeps_the_suite_from_the_head_start(tmp_path: Path,
                                                          change: tuple[str, str]) -> None:
    # a limit the controller's call meets need not be met by the worker's, and the other way
    # round: a request stopped by it was sent again by the worker (twice at -n 2), and one
    # made for a case whose retrieval then timed out on its worker was paid for nothing
    assert _eligible(tmp_path, BASE)
    assert change[0] in BASE
    assert not _eligible(tmp_path, BASE.replace(*change))
