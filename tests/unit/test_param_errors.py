"""A component parameter at fault is reported at its own key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DOCS, QUERIES, write_jsonl

from pytest_ragbench.errors import ComponentError, SuiteError
from pytest_ragbench.registry import Registry
from pytest_ragbench.suite.loader import load_suite

pytestmark = pytest.mark.unit

HEAD = """\
name: e
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
"""


def _suite(tmp_path: Path, body: str) -> Path:
    write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    write_jsonl(tmp_path / "queries.jsonl", QUERIES)
    path = tmp_path / "suite.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def _retriever_error(path: Path) -> str:
    """What the plugin reports when it checks the suite's retriever."""
    (spec,) = load_suite(path, None).retrievers
    with pytest.raises(ComponentError) as info:
        Registry(use_entry_points=False).check("retriever", spec.type, spec.params)
    return str(spec.error(path, info.value))


@pytest.mark.parametrize(("body", "expected"), [
    ("retrievers:\n  bm25:\n    b: 0.5\n    k1: fast\nmetrics: [ndcg@10]\n",
     "8: retrievers.bm25.k1: expected a number, got 'fast'"),
    ("retrievers:\n  bm25:\n    b: 0.5\n    stopwords:\n      - a\n      - 3\n"
     "metrics: [ndcg@10]\n",
     "10: retrievers.bm25.stopwords[1]: expected a string, got 3"),
    ("retrievers:\n  bm25:\n    b: 0.5\n    stopword: [a]\nmetrics: [ndcg@10]\n",
     "8: retrievers.bm25.stopword: retriever 'bm25' got unknown parameter(s) stopword (did you "
     "mean 'stopwords'?); it accepts: k1, b, stemmer, stopwords, fields, engine, idf"),
    ("retrievers:\n  mine:\n    type: run\n    format: trec\nmetrics: [ndcg@10]\n",
     "6: retrievers.mine: retriever 'run' is missing required parameter(s) path; it accepts: "
     "path, format, missing, unknown_docs"),
])
def test_retriever_parameters(tmp_path: Path, body: str, expected: str) -> None:
    # the last is no one parameter's fault: it stays at the component's own line
    assert _retriever_error(_suite(tmp_path, body)) == f"{tmp_path / 'suite.yaml'}:{expected}"


def test_metric_parameters_in_the_mapping_form(tmp_path: Path) -> None:
    path = _suite(tmp_path, "retrievers:\n  bm25: {}\nmetrics:\n  - ndcg@10\n"
                            "  - name: temporal_ndcg@10\n    lambda: high\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, None)
    assert str(info.value) == f"{path}:10: metrics[1].lambda: expected a number, got 'high'"
    assert (info.value.line, info.value.key) == (10, "metrics[1].lambda")


def test_a_nested_components_parameter_is_at_its_own_key(tmp_path: Path) -> None:
    # the embedder's `dim` is not a key of the dense retriever but of its `embedder`: the
    # error points at that key's line (it was at the retriever's)
    body = ("retrievers:\n  dense:\n    type: dense\n    embedder:\n      type: hashing\n"
            "      dim: abc\nmetrics: [ndcg@10]\n")
    assert _retriever_error(_suite(tmp_path, body)) == (
        f"{tmp_path / 'suite.yaml'}:10: retrievers.dense.embedder.dim: expected an integer, "
        "got 'abc'")


@pytest.mark.parametrize("kind", ["retrievers", "pipelines"])
@pytest.mark.parametrize(("value", "said"), [
    ("abc", "expected a number, got 'abc'"),
    ("0", "expected a finite number > 0, got 0"),
    ("-1", "expected a finite number > 0, got -1"),
    (".nan", "expected a finite number > 0, got nan"),
    ("true", "expected a number, got boolean"),
])
def test_a_bad_case_timeout_is_one_message_at_its_line(tmp_path: Path, kind: str, value: str,
                                                       said: str) -> None:
    """Retrievers and pipelines take the same ``case_timeout``; a pipeline's used to reach
    ``float()`` unchecked (a traceback) or be taken as it came (0, -1, NaN, true)."""
    path = _suite(tmp_path, f"{kind}:\n  mine:\n    type: m:F\n    case_timeout: {value}\n"
                            "metrics: [recall@10]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, None)
    assert str(info.value) == f"{path}:8: {kind}.mine.case_timeout: {said}"


def test_every_key_the_schema_refuses_is_a_line_of_the_one_error(tmp_path: Path) -> None:
    # only the first in the file was reported (llm.model), so a user fixed it, ran again and
    # met llm.timeout, then k; each key once, however many ways pydantic finds it wrong
    body = ("retrievers:\n  bm25: {}\n"
            "llm: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: 3, timeout: soon}\n"
            "metrics: [token_f1]\nk: many\n")
    path = _suite(tmp_path, body)
    with pytest.raises(SuiteError) as info:
        load_suite(path, None)
    assert str(info.value).splitlines() == [
        f"{path}:7: llm.model: expected a non-empty string, got 3",
        f"{path}:7: llm.timeout: expected a number, got 'soon'",
        f"{path}:9: k: expected a positive integer, got 'many'"]
