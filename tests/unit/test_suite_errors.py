"""Every kind of bad input gets one clear message naming file, key (and line), never a traceback.

Unit tests of the loader (:func:`pytest_ragbench.suite.load_suite`, and
:func:`~pytest_ragbench.datasets.load_dataset` for what the dataset files hold); two pytester
runs (tests/test_suite_errors_e2e.py) show the same messages reach the user as a usage error.
"""

from __future__ import annotations

import fnmatch
import textwrap
from pathlib import Path

import pytest
from conftest import DOCS, QUERIES, write_jsonl
from conftest import LOADER_SUITE as GOOD

from pytest_ragbench.datasets import load_dataset
from pytest_ragbench.errors import SuiteError
from pytest_ragbench.registry import Registry
from pytest_ragbench.suite.loader import Suite, load_suite


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    write_jsonl(tmp_path / "queries.jsonl", QUERIES)
    return tmp_path


def load(folder: Path, suite: str, **files: str) -> Suite:
    for name, content in files.items():
        (folder / name.replace("__", ".")).write_text(textwrap.dedent(content))
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(suite))
    return load_suite(path, Registry(use_entry_points=False).names("retriever"))


def error(folder: Path, suite: str, *, dataset: bool = False, **files: str) -> str:
    """The one message a bad suite (or, with ``dataset``, a bad dataset file) gets."""
    with pytest.raises(SuiteError) as info:
        loaded = load(folder, suite, **files)
        if dataset:
            load_dataset(loaded.dataset)
    return str(info.value)


#: What an unknown document's error says to do, the option named.
UNKNOWN_HINT = ("a document the corpus lacks; set 'dataset.unknown_documents: keep' to score "
                "it as trec_eval and BEIR do (relevant, never retrieved) or 'drop' to ignore "
                "the label")


def check(message: str, pattern: str) -> None:
    assert fnmatch.fnmatchcase(message, pattern), message


def test_good_suite_loads(folder):
    suite = load(folder, GOOD)
    assert [m.name for m in suite.metrics] == ["ndcg@10", "recall@10"]
    assert [r.name for r in suite.retrievers] == ["bm25"]
    assert suite.k == 10 and suite.record_depth == 20


def test_unknown_top_level_key_with_did_you_mean(folder):
    check(error(folder, GOOD + "metric: [mrr@10]\n"),
          "*suite.yaml:8: metric: unknown key 'metric' (did you mean 'metrics'?) "
          "(expected one of: *)")


def test_unknown_dataset_key(folder):
    check(error(folder, GOOD.replace("  corpus:", "  corpse:")),
          "*suite.yaml:3: dataset.corpse: unknown key 'corpse' (did you mean 'corpus'?)*")


def test_missing_required_key(folder):
    check(error(folder, GOOD.replace("metrics: [ndcg@10, recall@10]\n", "")),
          "*suite.yaml:1: missing required key 'metrics'*")


def test_missing_corpus_file(folder):
    check(error(folder, GOOD.replace("corpus.jsonl", "nothere.jsonl")),
          "*suite.yaml:3: dataset.corpus: corpus file not found: *nothere.jsonl")


def test_unknown_retriever_lists_known_names(folder):
    check(error(folder, GOOD.replace("bm25: {}", "bm52: {}")),
          "*suite.yaml:6: retrievers.bm52: unknown retriever 'bm52' (did you mean 'bm25'?) "
          "(known: *bm25*)")


def test_unknown_metric_lists_known_metrics(folder):
    check(error(folder, GOOD.replace("recall@10]", "recal@10]")),
          "*suite.yaml:7: metrics[[]1[]]: unknown metric 'recal@10' (did you mean 'recall'?)"
          "*ndcg@K*")


@pytest.mark.parametrize(("change", "message"), [
    ("k: 0\n", "*suite.yaml:8: k: must be a positive integer, got 0"),
    ("k: -5\n", "*suite.yaml:8: k: must be a positive integer, got -5"),
    ("k: ten\n", "*suite.yaml:8: k: expected a positive integer, got 'ten'"),
])
def test_k_must_be_positive(folder, change, message):
    check(error(folder, GOOD + change), message)


def test_metric_cutoff_must_be_positive(folder):
    check(error(folder, GOOD.replace("recall@10]", "recall@0]")),
          "*metrics[[]1[]]: *k must be a positive integer, got 0*")


def test_malformed_json_line_names_the_line(folder):
    lines = (folder / "queries.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-3]
    check(error(folder, GOOD, dataset=True, queries__jsonl="\n".join(lines) + "\n"),
          "*queries.jsonl:3: malformed JSON line: *")


def test_duplicate_document_ids(folder):
    corpus = '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n{"_id": "d1", "text": "c"}\n'
    check(error(folder, GOOD, dataset=True, corpus__jsonl=corpus),
          "*corpus.jsonl:3: duplicate document id 'd1' (first seen at line 1)")


def test_duplicate_query_ids(folder):
    queries = ('{"_id": "q1", "text": "a", "relevant": ["d1"]}\n'
               '{"_id": "q1", "text": "b", "relevant": ["d2"]}\n')
    check(error(folder, GOOD, dataset=True, queries__jsonl=queries),
          "*queries.jsonl:2: duplicate query id 'q1' (first seen at line 1)")


def test_empty_corpus(folder):
    check(error(folder, GOOD, dataset=True, corpus__jsonl="\n"),
          "*corpus.jsonl: the corpus is empty*")


def test_qrels_row_with_unknown_query(folder):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  qrels: qrels.tsv\n")
    check(error(folder, suite, dataset=True,
                qrels__tsv="query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nqX\td1\t1\r\n"),
          "*qrels.tsv:3: qrels row names unknown query 'qX'")


def test_qrels_row_with_unknown_document(folder):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  qrels: qrels.txt\n")
    check(error(folder, suite, dataset=True, qrels__txt="q1 0 d1 1\nq2 0 d99 2\n"),
          "*qrels.txt:2: qrels row names unknown document 'd99': "
          f"{UNKNOWN_HINT}")


def test_qrels_bad_grade(folder):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  qrels: qrels.txt\n")
    check(error(folder, suite, dataset=True, qrels__txt="q1 0 d1 1\nq2 0 d2 high\n"),
          "*qrels.txt:2: relevance grade must be an integer, got 'high'")


def test_inline_label_for_unknown_document(folder):
    # the line of the query's record: found only once the corpus is read, after the queries
    queries = ('{"_id": "q1", "text": "a", "relevant": {"d1": 1}}\n'
               '{"_id": "q2", "text": "b", "relevant": {"zz": 1}}\n')
    check(error(folder, GOOD, dataset=True, queries__jsonl=queries),
          "*queries.jsonl:2: relevant: query 'q2' labels unknown document 'zz' as relevant: "
          f"{UNKNOWN_HINT}")
    inline = GOOD.replace("  queries: queries.jsonl\n", "  items:\n"
                          "    - {_id: q1, text: a, relevant: [d1]}\n"
                          "    - {_id: q2, text: b, relevant: [zz]}\n")
    check(error(folder, inline, dataset=True),
          "*suite.yaml:6: relevant: query 'q2' labels unknown document 'zz' as relevant: "
          f"{UNKNOWN_HINT}")


def test_a_bad_unknown_documents_value_is_an_error_at_its_line(folder):
    suite = GOOD.replace("  queries: queries.jsonl\n", "  queries: queries.jsonl\n"
                         "  unknown_documents: ignore\n")
    check(error(folder, suite), "*suite.yaml:5: dataset.unknown_documents: expected one of "
                                "error, keep, drop, got 'ignore'")
    check(error(folder, suite.replace("ignore", "[keep]")),
          "*suite.yaml:5: dataset.unknown_documents: expected one of error, keep, drop, "
          "got [[]'keep']")  # fnmatch's escape of '['


def test_bad_gate_expression(folder):
    check(error(folder, GOOD + "gates:\n  ndcg@10: at least 0.5\n"),
          "*suite.yaml:9: gates.ndcg@10: cannot parse 'at least 0.5'*")


def test_gate_on_metric_not_in_suite(folder):
    check(error(folder, GOOD + "gates:\n  mrr@10: 0.5\n"),
          "*gates.mrr@10: gate on 'mrr@10', which is not among the suite's metrics "
          "(ndcg@10, recall@10, error_rate)")


def test_bad_tolerance(folder):
    check(error(folder, GOOD + "baseline:\n  tolerance: 5 percent\n"),
          "*baseline.tolerance: cannot parse tolerance '5 percent'*")


def test_invalid_yaml_names_the_line(folder):
    check(error(folder, GOOD + "gates: [unclosed\n"), "*suite.yaml:*: not valid YAML/JSON: *")


def test_split_without_qrels_lists_available_splits(folder):
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text((folder / "corpus.jsonl").read_text())
    (beir / "queries.jsonl").write_text((folder / "queries.jsonl").read_text())
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    suite = GOOD.replace("  corpus: corpus.jsonl\n  queries: queries.jsonl\n",
                         "  path: beir\n  split: dev\n")
    check(error(folder, suite),
          "*suite.yaml:4: dataset.split: no qrels for split 'dev' at * (available splits: test)")


def test_retriever_name_unfit_for_test_ids(folder):
    check(error(folder, GOOD.replace("bm25: {}", "'my bm25': {type: bm25}")),
          "*retrievers.my bm25: retriever name 'my bm25' must be*")
    # a line break or tab split the test ids and every report line naming the system
    for name in ("bm\\nx", "bm\\tx", "bm\\u2028x"):
        text = error(folder, GOOD.replace("bm25: {}", f'"{name}": {{type: bm25}}'))
        assert "must be non-empty and contain no" in text and "control characters" in text


def test_a_path_holding_a_nul_character_is_one_suite_error(folder):
    # found by the any-document property test: os functions raised a bare ValueError
    check(error(folder, GOOD.replace("  corpus: corpus.jsonl", '  corpus: "c\\u0000.jsonl"')),
          "*suite.yaml:*: dataset.corpus: 'c\\x00.jsonl' is not a path (it holds a NUL "
          "character)")


def test_top_level_not_a_mapping(folder):
    check(error(folder, "- just\n- a list\n"),
          "*suite.yaml:1: expected a mapping at the top level, got list")




def test_unknown_query_ids_name_their_line(folder):
    # found only once the dataset is read, after the loader: the message still has the line
    suite = GOOD.replace("  queries: queries.jsonl\n",
                         "  queries: queries.jsonl\n  query_ids: [q1, qX]\n")
    check(error(folder, suite, dataset=True),
          "*suite.yaml:5: dataset.query_ids: unknown query ids: qX")
    # a dataset named by its folder alone: the line of ``dataset``
    beir = folder / "beir"
    beir.mkdir()
    check(error(folder, GOOD.replace("dataset:\n  corpus: corpus.jsonl\n  queries: "
                                     "queries.jsonl\n", "dataset: beir\n"), dataset=True),
          "*suite.yaml:2: dataset.path: corpus file not found: *beir/corpus.jsonl")
    check(error(folder, GOOD.replace("  queries: queries.jsonl\n",
                                     "  queries: queries.jsonl\n  query_ids: []\n"),
                dataset=True), "*suite.yaml:2: dataset: no queries selected*")


@pytest.mark.parametrize(("lines", "pattern"), [
    # the inline data replaced the file without a word
    ("  documents: [{_id: d9, text: x}]\n",
     "*suite.yaml:5: dataset.documents: give the corpus either as 'corpus' (a file) or as "
     "'documents' (inline), not both"),
    ("  items: [{_id: q9, text: x}]\n",
     "*suite.yaml:5: dataset.items: give the queries either as 'queries' (a file) or as "
     "'items' (inline), not both"),
    # 'split' reads only a BEIR folder's qrels/<split>.tsv: the run had no labels, or a
    # qrels file's
    ("  split: test\n", "*suite.yaml:5: dataset.split: 'split' picks qrels/<split>.tsv of a "
                        "BEIR folder given with 'path'; name a qrels file with 'qrels'"),
    ("  path: .\n  qrels: qrels.txt\n  split: test\n",
     "*suite.yaml:7: dataset.split: give the labels either as 'split' (qrels/<split>.tsv of "
     "'path') or as 'qrels' (a file), not both"),
])
def test_dataset_keys_one_of_which_would_be_ignored(folder, lines, pattern):
    check(error(folder, GOOD.replace("  queries: queries.jsonl\n",
                                     "  queries: queries.jsonl\n" + lines)), pattern)


def test_a_tolerance_for_a_metric_the_suite_does_not_compute(folder):
    # never applied: the comparison has rows for the suite's metrics only
    check(error(folder, GOOD + "baseline:\n  tolerance: {ndgc@10: 0.05, recall@10: 0.1}\n"),
          "*suite.yaml:9: baseline.tolerance.ndgc@10: a tolerance for 'ndgc@10', which is not "
          "among the suite's metrics (ndcg@10, recall@10) (did you mean 'ndcg@10'?)")
    check(error(folder, GOOD + "baseline: {tolerance: {latency_ms: 20%}}\n"),
          "*suite.yaml:8: baseline.tolerance.latency_ms: a tolerance for 'latency_ms', which is "
          "not among the suite's metrics (ndcg@10, recall@10)")
    suite = load(folder, GOOD.replace("recall@10]", "recall@10, latency_ms]")
                 + "baseline: {tolerance: {'*': 0.01, latency_ms: 20%}}\n")
    assert set(suite.tolerances) == {"*", "latency_ms"}
