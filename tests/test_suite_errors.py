"""Every kind of bad input gets one clear message naming file, key (and line), never a traceback."""

from __future__ import annotations

import textwrap

import pytest

GOOD = """\
name: e
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
retrievers:
  bm25: {}
metrics: [ndcg@10, recall@10]
"""


def run_bad(pytester: pytest.Pytester, suite: str, **files: str) -> pytest.RunResult:
    for name, content in files.items():
        (pytester.path / name.replace("__", ".")).write_text(textwrap.dedent(content))
    (pytester.path / "suite.yaml").write_text(textwrap.dedent(suite))
    result = pytester.runpytest("--ragbench=suite.yaml")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR)
    return result


@pytest.fixture
def data(mini_suite):
    mini_suite(GOOD)  # writes corpus.jsonl and queries.jsonl


def test_good_suite_runs(pytester, data):
    assert pytester.runpytest("--ragbench=suite.yaml").ret == 0


def test_unknown_top_level_key_with_did_you_mean(pytester, data):
    result = run_bad(pytester, GOOD + "metric: [mrr@10]\n")
    result.stdout.fnmatch_lines(["*suite.yaml:8: metric: unknown key 'metric' "
                                 "(did you mean 'metrics'?) (expected one of: *)"])


def test_unknown_dataset_key(pytester, data):
    result = run_bad(pytester, GOOD.replace("  corpus:", "  corpse:"))
    result.stdout.fnmatch_lines(["*suite.yaml:3: dataset.corpse: unknown key 'corpse' "
                                 "(did you mean 'corpus'?)*"])


def test_missing_required_key(pytester, data):
    result = run_bad(pytester, GOOD.replace("metrics: [ndcg@10, recall@10]\n", ""))
    result.stdout.fnmatch_lines(["*suite.yaml:1: missing required key 'metrics'*"])


def test_missing_corpus_file(pytester, data):
    result = run_bad(pytester, GOOD.replace("corpus.jsonl", "nothere.jsonl"))
    result.stdout.fnmatch_lines(["*suite.yaml:3: dataset.corpus: corpus file not found: "
                                 "*nothere.jsonl"])


def test_unknown_retriever_lists_known_names(pytester, data):
    result = run_bad(pytester, GOOD.replace("bm25: {}", "bm52: {}"))
    result.stdout.fnmatch_lines(["*suite.yaml:6: retrievers.bm52: unknown retriever 'bm52' "
                                 "(did you mean 'bm25'?) (known: *bm25*)"])


def test_unknown_metric_lists_known_metrics(pytester, data):
    result = run_bad(pytester, GOOD.replace("recall@10]", "recal@10]"))
    result.stdout.fnmatch_lines(["*suite.yaml:7: metrics[[]1[]]: unknown metric 'recal@10' "
                                 "(did you mean 'recall'?)*ndcg@K*"])


@pytest.mark.parametrize(("change", "message"), [
    ("k: 0\n", "*suite.yaml:8: k: must be a positive integer, got 0"),
    ("k: -5\n", "*suite.yaml:8: k: must be a positive integer, got -5"),
    ("k: ten\n", "*suite.yaml:8: k: expected a positive integer, got 'ten'"),
])
def test_k_must_be_positive(pytester, data, change, message):
    run_bad(pytester, GOOD + change).stdout.fnmatch_lines([message])


def test_metric_cutoff_must_be_positive(pytester, data):
    result = run_bad(pytester, GOOD.replace("recall@10]", "recall@0]"))
    result.stdout.fnmatch_lines(["*metrics[[]1[]]: *k must be a positive integer, got 0*"])


def test_malformed_json_line_names_the_line(pytester, data):
    lines = (pytester.path / "queries.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-3]
    result = run_bad(pytester, GOOD, queries__jsonl="\n".join(lines) + "\n")
    result.stdout.fnmatch_lines(["*queries.jsonl:3: malformed JSON line: *"])


def test_duplicate_document_ids(pytester, data):
    corpus = '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n{"_id": "d1", "text": "c"}\n'
    result = run_bad(pytester, GOOD, corpus__jsonl=corpus)
    result.stdout.fnmatch_lines(["*corpus.jsonl:3: duplicate document id 'd1' "
                                 "(first seen at line 1)"])


def test_duplicate_query_ids(pytester, data):
    queries = ('{"_id": "q1", "text": "a", "relevant": ["d1"]}\n'
               '{"_id": "q1", "text": "b", "relevant": ["d2"]}\n')
    result = run_bad(pytester, GOOD, queries__jsonl=queries)
    result.stdout.fnmatch_lines(["*queries.jsonl:2: duplicate query id 'q1' "
                                 "(first seen at line 1)"])


def test_empty_corpus(pytester, data):
    result = run_bad(pytester, GOOD, corpus__jsonl="\n")
    result.stdout.fnmatch_lines(["*corpus.jsonl: the corpus is empty*"])


def test_qrels_row_with_unknown_query(pytester, data):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  qrels: qrels.tsv\n")
    result = run_bad(pytester, suite,
                     qrels__tsv="query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nqX\td1\t1\r\n")
    result.stdout.fnmatch_lines(["*qrels.tsv:3: qrels row names unknown query 'qX'"])


def test_qrels_row_with_unknown_document(pytester, data):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  qrels: qrels.txt\n")
    result = run_bad(pytester, suite, qrels__txt="q1 0 d1 1\nq2 0 d99 2\n")
    result.stdout.fnmatch_lines(["*qrels.txt:2: qrels row names unknown document 'd99'"])


def test_qrels_bad_grade(pytester, data):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  qrels: qrels.txt\n")
    result = run_bad(pytester, suite, qrels__txt="q1 0 d1 1\nq2 0 d2 high\n")
    result.stdout.fnmatch_lines(["*qrels.txt:2: relevance grade must be an integer, got 'high'"])


def test_inline_label_for_unknown_document(pytester, data):
    queries = '{"_id": "q1", "text": "a", "relevant": {"zz": 1}}\n'
    result = run_bad(pytester, GOOD, queries__jsonl=queries)
    result.stdout.fnmatch_lines(["*queries.jsonl: relevant: query 'q1' labels unknown "
                                 "document 'zz' as relevant"])


def test_bad_gate_expression(pytester, data):
    result = run_bad(pytester, GOOD + "gates:\n  ndcg@10: at least 0.5\n")
    result.stdout.fnmatch_lines(["*suite.yaml:9: gates.ndcg@10: cannot parse 'at least 0.5'*"])


def test_gate_on_metric_not_in_suite(pytester, data):
    result = run_bad(pytester, GOOD + "gates:\n  mrr@10: 0.5\n")
    result.stdout.fnmatch_lines(["*gates.mrr@10: gate on 'mrr@10', which is not among the "
                                 "suite's metrics (ndcg@10, recall@10, error_rate)"])


def test_bad_tolerance(pytester, data):
    result = run_bad(pytester, GOOD + "baseline:\n  tolerance: 5 percent\n")
    result.stdout.fnmatch_lines(["*baseline.tolerance: cannot parse tolerance '5 percent'*"])


def test_invalid_yaml_names_the_line(pytester, data):
    result = run_bad(pytester, GOOD + "gates: [unclosed\n")
    result.stdout.fnmatch_lines(["*suite.yaml:*: not valid YAML/JSON: *"])


def test_split_without_qrels_lists_available_splits(pytester, data):
    beir = pytester.path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text((pytester.path / "corpus.jsonl").read_text())
    (beir / "queries.jsonl").write_text((pytester.path / "queries.jsonl").read_text())
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    suite = GOOD.replace("  corpus: corpus.jsonl\n  queries: queries.jsonl\n",
                         "  path: beir\n  split: dev\n")
    result = run_bad(pytester, suite)
    result.stdout.fnmatch_lines(["*dataset.split: no qrels for split 'dev' at * "
                                 "(available splits: test)"])


def test_retriever_name_unfit_for_test_ids(pytester, data):
    result = run_bad(pytester, GOOD.replace("bm25: {}", "'my bm25': {type: bm25}"))
    result.stdout.fnmatch_lines(["*retrievers.my bm25: retriever name 'my bm25' must be*"])


def test_top_level_not_a_mapping(pytester, data):
    result = run_bad(pytester, "- just\n- a list\n")
    result.stdout.fnmatch_lines(["*suite.yaml:1: expected a mapping at the top level, got list"])
