"""Dataset readers: property tests for the parsers, and the real BEIR files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.datasets import (
    DatasetSpec,
    load_dataset,
    load_queries,
    read_corpus,
    read_qrels,
    read_queries,
    read_records,
    scope_meta,
)
from pytest_ragbench.errors import SuiteError

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
              min_size=1, max_size=12)
qrels_rows = st.lists(st.tuples(ids, ids, st.integers(-1, 4)), max_size=30,
                      unique_by=lambda r: (r[0], r[1]))
tmp_settings = settings(max_examples=60, deadline=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture])


@tmp_settings
@given(rows=qrels_rows, trec=st.booleans(), crlf=st.booleans(), header=st.booleans())
def test_qrels_round_trip(tmp_path: Path, rows, trec, crlf, header) -> None:
    eol = "\r\n" if crlf else "\n"
    lines = []
    if header and not trec:
        lines.append("query-id\tcorpus-id\tscore")
    for q, d, g in rows:
        lines.append(f"{q} 0 {d} {g}" if trec else f"{q}\t{d}\t{g}")
    path = tmp_path / "qrels.txt"
    path.write_bytes((eol.join(lines) + eol).encode())
    parsed = read_qrels(path)
    assert [(r.query_id, r.doc_id, r.grade) for r in parsed] == rows


@tmp_settings
@given(docs=st.lists(st.tuples(ids, st.text(max_size=40), st.text(min_size=1, max_size=80)),
                     min_size=1, max_size=20, unique_by=lambda d: d[0]))
def test_jsonl_corpus_round_trip(tmp_path: Path, docs) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                            for i, t, x in docs), encoding="utf-8")
    corpus = read_corpus(read_records(path), path)
    assert [(d.id, d.title, d.text) for d in corpus] == docs


@tmp_settings
@given(line=st.integers(1, 5), junk=st.sampled_from(["{", "[1,", '{"_id": }', "nope"]))
def test_malformed_jsonl_names_line(tmp_path: Path, line, junk) -> None:
    rows = [json.dumps({"_id": f"d{i}", "text": "x"}) for i in range(1, 6)]
    rows[line - 1] = junk
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(SuiteError) as exc:
        read_corpus(read_records(path), path)
    assert exc.value.line == line and str(path) in str(exc.value)


def test_inline_labels_forms(tmp_path: Path) -> None:
    recs = [
        (1, {"id": "a", "question": "x?", "relevant": ["d1", "d2"], "tags": "t1, t2"}),
        (2, {"qid": "b", "query": "y", "relevant": {"d1": 2, "d2": 0},
             "reference_answers": ["r1", "r2"], "difficulty": "hard"}),
        (3, {"_id": "c", "text": "z", "metadata": {"answer": "m"}}),
    ]
    qs = read_queries(recs, tmp_path / "q.jsonl", answer_field="metadata.answer")
    assert qs[0].relevant == {"d1": 1, "d2": 1} and qs[0].tags == ("t1", "t2")
    assert qs[1].relevant == {"d1": 2, "d2": 0} and qs[1].num_relevant == 1
    assert qs[1].reference_answers == ("r1", "r2") and qs[1].difficulty == "hard"
    assert qs[2].judged is False and qs[2].reference_answers == ("m",)
    # a list on the way is looked into (ClapNQ's output: [{"answer": ...}, ...])
    recs = [(1, {"_id": "a", "text": "x", "output": [{"answer": "one"}, {"answer": ["two"]},
                                                     {"meta": 1}, {"answer": ""}]}),
            (2, {"_id": "b", "text": "y", "output": []})]
    qs = read_queries(recs, tmp_path / "q.jsonl", answer_field="output.answer")
    assert [q.reference_answers for q in qs] == [("one", "two"), ()]


def test_only_texts_and_numbers_in_an_answer_list_are_answers(tmp_path: Path) -> None:
    # a null in a list (a table exported with its gaps) was the reference answer "None", which
    # a model's "None" matched exactly; false was "False", an object its repr. As at the top
    # level and for answer_field, only texts and finite numbers are answers.
    recs = [(1, {"_id": "a", "text": "x", "answers": ["Paris", None, float("nan"), 0, 2.5]}),
            (2, {"_id": "b", "text": "y", "answers": [False, {"text": "x"}, ["z"], " ", "no"]}),
            (3, {"_id": "c", "text": "z", "answers": [None], "answer": True})]
    qs = read_queries(recs, tmp_path / "q.jsonl")
    assert [q.reference_answers for q in qs] == [("Paris", "0", "2.5"), ("no",), ()]


def test_inline_ids_are_what_the_suite_writes(tmp_path: Path, loader: ModuleType) -> None:
    """YAML reads 007 and 7 as the same number, 010 as 8 (octal), 1:30 as 90, 1.10 as 1.1, no
    as False and 2024-1-1 as a date: an inline id is its text, as in the dataset's files."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("""\
name: s
dataset:
  documents:
    - {_id: 007, text: alpha, year: 2024}
    - {_id: 7, text: beta}
    - {id: 1.10, text: gamma}
    - {_id: "08", text: delta}
    - {_id: 2024-1-1, text: epsilon}
  items:
    - {_id: 010, text: alpha, relevant: {007: 2, 7: 1}}
    - {qid: 1:30, text: gamma, relevant: [1.10, "08", 2024-1-1]}
    - {_id: no, text: beta}
retrievers: {bm25: {}}
k: 10
metrics: [recall@10]
""")
    ds = load_dataset(loader.load_suite(suite, None).dataset)
    assert [d.id for d in ds.corpus] == ["007", "7", "1.10", "08", "2024-1-1"]
    assert [(q.id, q.relevant) for q in ds.queries] == [
        ("010", {"007": 2, "7": 1}), ("1:30", {"1.10": 1, "08": 1, "2024-1-1": 1}),
        ("no", {})]
    # other values keep what YAML makes of them
    assert ds.corpus[0].metadata == {"year": 2024}


def test_ids_that_read_back_as_written_stay_what_yaml_made_of_them() -> None:
    """An id YAML reads as the number it spells (1, 2.5) is the same id as before, and the
    suite document (whose hash the resume's case keys hold) is unchanged: an earlier run of
    such a suite is still resumed."""
    from pytest_ragbench.suite.loader import parse_document

    data, _ = parse_document("""\
dataset:
  documents: [{_id: 1, text: a}, {_id: 2.5, text: b}, {_id: 007, text: c}]
  items: [{_id: 10, text: a, relevant: {1: 1, 007: 2}}]
  query_ids: [10, 2.5]
xfail: [10]
""", Path("suite.yaml"))
    # (2.5 was no document id: the reader refuses a number that is not whole; as a query id
    # in query_ids it was "2.5" and stays 2.5)
    assert data == {"dataset": {
        "documents": [{"_id": 1, "text": "a"}, {"_id": "2.5", "text": "b"},
                      {"_id": "007", "text": "c"}],
        "items": [{"_id": 10, "text": "a", "relevant": {1: 1, "007": 2}}],
        "query_ids": [10, 2.5]}, "xfail": [10]}


def test_decimal_boolean_and_date_ids_read_as_written(tmp_path: Path,
                                                      loader: ModuleType) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("""\
name: s
dataset:
  documents: [{_id: 2.5, text: alpha}, {_id: True, text: beta}, {_id: 2024-01-01, text: c}]
  items:
    - {_id: 1.5, text: alpha, relevant: {2.5: 1}}
    - {_id: 2024-01-01 10:00:00, text: beta, relevant: [True, 2024-01-01]}
  query_ids: [1.5, 2024-01-01 10:00:00]
retrievers: {bm25: {}}
metrics: [recall@10]
xfail: [2024-01-01 10:00:00]
""")
    loaded = loader.load_suite(suite, None)
    ds = load_dataset(loaded.dataset)
    assert [d.id for d in ds.corpus] == ["2.5", "True", "2024-01-01"]
    assert [(q.id, q.relevant) for q in ds.queries] == [
        ("1.5", {"2.5": 1}), ("2024-01-01 10:00:00", {"True": 1, "2024-01-01": 1})]
    assert list(loaded.xfail) == ["2024-01-01 10:00:00"]


def _inline_answers(tmp_path: Path, loader: ModuleType, dataset: str) -> list[tuple[str, ...]]:
    """The reference answers of the inline queries a suite's ``dataset`` lines (YAML, under
    the key) give, each query answered by a recorded pipeline."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ndataset:\n  documents: [{_id: d1, text: alpha}]\n" + dataset
                     + "pipelines: {p: {type: recorded, path: out.jsonl}}\n"
                       "metrics: [exact_match]\n")
    queries = len(re.findall(r"_id: q", dataset))
    (tmp_path / "out.jsonl").write_text("".join(
        json.dumps({"query_id": f"q{i}", "answer": "a"}) + "\n" for i in range(1, queries + 1)))
    ds = load_dataset(loader.load_suite(suite, None).dataset)
    return [q.reference_answers for q in ds.queries]


def test_inline_reference_answers_read_as_written(tmp_path: Path, loader: ModuleType) -> None:
    """A yes/no question's `reference_answer: no` was YAML's False: dropped, the query had
    no reference (its answer metrics NaN, left out of the means), and in a list it became
    the answer "False"; 010 and 1:30 (a time) were refused as unclear numbers."""
    assert _inline_answers(tmp_path, loader, """\
  items:
    - {_id: q1, text: does it, reference_answer: no}
    - {_id: q2, text: is it, answers: [yes, "Yes."]}
    - {_id: q3, text: when, answer: 2024-01-01, reference_answers: [1:30, 010]}
    - {_id: q4, text: how many, reference_answer: 0, answers: [2.5, 1.10]}
""") == [("no",), ("yes", "Yes."), ("1:30", "010", "2024-01-01"), ("0", "2.5", "1.10")]


def test_inline_answers_an_answer_field_names_read_as_written(tmp_path: Path,
                                                              loader: ModuleType) -> None:
    """``answer_field: metadata.answer`` over inline queries: ``no`` was YAML's False and
    dropped, as a reference_answer's was."""
    assert _inline_answers(tmp_path, loader, """\
  answer_field: metadata.answer
  items:
    - {_id: q1, text: does it, metadata: {answer: no}}
    - {_id: q2, text: when, metadata: {answer: [yes, 1:30, 7]}}
    - {_id: q3, text: what, metadata: {other: no}}
    - {_id: q4, text: what, metadata: no}
""") == [("no",), ("yes", "1:30", "7"), (), ()]


def test_an_answer_field_under_an_answer_key_reads_its_answers_as_written(
        tmp_path: Path, loader: ModuleType) -> None:
    """``answer_field: answer.text`` (SQuAD's shape) over inline queries: the check of
    unclear numbers looked under an answer key for that key's own answers only, so 1:30 and
    010 under ``answer.text`` were refused as numbers while the field read them as written."""
    assert _inline_answers(tmp_path, loader, """\
  answer_field: answer.text
  items:
    - {_id: q1, text: when, answer: {text: 1:30}}
    - {_id: q2, text: which, answer: {text: [no, 010]}}
""") == [("1:30",), ("no", "010")]


def test_an_inline_nan_or_infinity_is_no_reference_answer(tmp_path: Path,
                                                         loader: ModuleType) -> None:
    """A NaN is no answer in a dataset file; read as written, YAML's `.nan` in a suite was
    the answer ".nan" (and `.inf` the answer ".inf"), which only a model saying so matched."""
    assert _inline_answers(tmp_path, loader, """\
  items:
    - {_id: q1, text: a, reference_answer: .nan}
    - {_id: q2, text: b, answers: [.inf, -.Inf, yes, .NaN, 1.5]}
""") == [(), ("yes", "1.5")]


def test_a_records_own_id_wins_over_a_merged_one(tmp_path: Path) -> None:
    from pytest_ragbench.suite import loader

    suite = tmp_path / "suite.yaml"
    suite.write_text("""\
name: s
dataset:
  documents: [&doc {_id: 007, text: alpha}, {<<: *doc, _id: d2}, {<<: *doc, _id: 12}]
  items: [&base {_id: 010, text: alpha}, {<<: *base, _id: q2}, {<<: *base, _id: "q3"}]
retrievers: {bm25: {}}
metrics: [recall@10]
""")
    ds = load_dataset(loader.load_suite(suite, None).dataset)
    assert [d.id for d in ds.corpus] == ["007", "d2", "12"]
    assert [q.id for q in ds.queries] == ["010", "q2", "q3"]
    data, _ = loader.parse_document(suite.read_text(), suite)
    assert data["dataset"]["documents"][2]["_id"] == 12  # what YAML makes of it


def test_query_ids_and_known_failures_name_queries_as_written(tmp_path: Path,
                                                              loader: ModuleType) -> None:
    """The ids that select queries and mark known failures are read as the queries' own: the
    query 010 is not the 8 YAML makes of the word, nor 007 the 7."""
    suite = tmp_path / "suite.yaml"
    text = """\
name: s
dataset:
  documents: [{_id: d1, text: alpha}]
  items:
    - {_id: 010, text: alpha}
    - {_id: 007, text: alpha}
    - {_id: 7, text: alpha}
  query_ids: [010, 007]
retrievers: {bm25: {}}
metrics: [recall@10]
"""
    suite.write_text(text + "xfail: [010]\n")
    loaded = loader.load_suite(suite, None)
    assert [q.id for q in load_dataset(loaded.dataset).queries] == ["010", "007"]
    assert list(loaded.xfail) == ["010"]
    suite.write_text(text + "xfail: {007: known, 7: also known}\n")
    assert dict(loader.load_suite(suite, None).xfail) == {"007": "known", "7": "also known"}


def test_an_id_overridden_after_a_merge_is_the_one_kept(tmp_path: Path) -> None:
    """A merge key (<<) brings its pairs first; the mapping's own pair wins, for the ids as
    for the rest of the record."""
    from pytest_ragbench.suite import loader

    suite = tmp_path / "suite.yaml"
    suite.write_text("""\
name: s
dataset:
  <<: {documents: [{_id: 5, text: alpha}]}
  documents: [{_id: 007, text: beta}]
  items: [{_id: q, text: beta, relevant: {<<: {007: 2}, 007: 1}}]
retrievers: {bm25: {}}
metrics: [recall@10]
""")
    ds = load_dataset(loader.load_suite(suite, None).dataset)
    assert [(d.id, d.text) for d in ds.corpus] == [("007", "beta")]
    assert ds.queries[0].relevant == {"007": 1}


def test_csv_and_json_corpora(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,title,text\nd1,T,hello\nd2,,world\n")
    (tmp_path / "c.json").write_text(json.dumps({"d1": "hello", "d2": {"text": "world"}}))
    csv_docs = read_corpus(read_records(tmp_path / "c.csv"), tmp_path / "c.csv")
    json_docs = read_corpus(read_records(tmp_path / "c.json"), tmp_path / "c.json")
    assert [(d.id, d.text) for d in csv_docs] == [("d1", "hello"), ("d2", "world")]
    assert [(d.id, d.text) for d in json_docs] == [("d1", "hello"), ("d2", "world")]


def test_a_query_naming_its_document_keeps_its_own_id(tmp_path: Path) -> None:
    # QA data often names the query's source document: {"qid": ..., "doc_id": ...}; the
    # document's id was taken for the query's (doc_id came first of the id keys)
    (tmp_path / "c.jsonl").write_text('{"doc_id": "d1", "qid": "q7", "text": "espresso"}\n'
                                      '{"docid": "d2", "text": "cold brew"}\n')
    (tmp_path / "q.jsonl").write_text(
        '{"qid": "q1", "doc_id": "d1", "question": "espresso?", "relevant": ["d1"]}\n'
        '{"query_id": "q2", "docid": "d2", "question": "cold brew?", "relevant": ["d2"]}\n')
    ds = load_dataset(DatasetSpec(name="x", source=tmp_path / "s.yaml",
                                  corpus=tmp_path / "c.jsonl", queries=tmp_path / "q.jsonl"))
    assert [(q.id, dict(q.metadata)) for q in ds.queries] == [
        ("q1", {"doc_id": "d1"}), ("q2", {"docid": "d2"})]
    assert [(d.id, dict(d.metadata)) for d in ds.corpus] == [("d1", {"qid": "q7"}), ("d2", {})]
    # a query's id keys are the query's: a doc_id alone is no query id
    (tmp_path / "q.csv").write_text("doc_id,question\nd1,espresso?\n")
    with pytest.raises(SuiteError, match="expected one of _id, id, query_id, qid"):
        load_dataset(DatasetSpec(name="x", source=tmp_path / "s.yaml",
                                 corpus=tmp_path / "c.jsonl", queries=tmp_path / "q.csv"))


def test_max_queries_and_query_ids(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "a"}\n')
    (tmp_path / "q.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": "a", "relevant": ["d1"]}) + "\n" for i in range(5)))
    base = {"name": "x", "source": tmp_path / "s.yaml", "corpus": tmp_path / "c.jsonl",
            "queries": tmp_path / "q.jsonl"}
    assert [q.id for q in load_dataset(DatasetSpec(**base, max_queries=2)).queries] == ["q0",
                                                                                          "q1"]
    ds = load_dataset(DatasetSpec(**base, query_ids=("q3", "q1")))
    assert [q.id for q in ds.queries] == ["q1", "q3"]
    with pytest.raises(SuiteError, match="unknown query ids: q9"):
        load_dataset(DatasetSpec(**base, query_ids=("q9",)))


def test_query_ids_naming_a_query_the_qrels_leave_out_say_so(tmp_path: Path) -> None:
    # q2 is in the queries file (another split's): 'unknown query ids: q2' sent the user to
    # a file that holds it
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "a"}\n')
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n')
    (tmp_path / "test.tsv").write_text("q1\td1\t1\n")
    base = {"name": "x", "source": tmp_path / "s.yaml", "corpus": tmp_path / "c.jsonl",
            "queries": tmp_path / "q.jsonl", "qrels": tmp_path / "test.tsv"}
    with pytest.raises(SuiteError) as exc:
        load_dataset(DatasetSpec(**base, query_ids=("q1", "q2", "q9")))
    assert exc.value.key == "dataset.query_ids"
    assert exc.value.detail == (
        f"unknown query ids: q9; not in the qrels ({tmp_path / 'test.tsv'}), which select the "
        "queries run: q2")


def test_load_queries_reads_no_corpus(tmp_path: Path) -> None:
    # the xdist controller reads a suite's queries for their scope metadata, not its corpus
    (tmp_path / "corpus.jsonl").write_text("not json\n")
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "a", "difficulty": "hard", "tags": "x, y"}\n'
        '{"_id": "q2", "text": "b"}\n')
    spec = DatasetSpec(name="x", source=tmp_path / "s.yaml", path=tmp_path)
    with pytest.raises(SuiteError):
        load_dataset(spec)
    assert scope_meta(load_queries(spec)) == {
        "q1": {"type": None, "difficulty": "hard", "tags": ["x", "y"]}}


@pytest.mark.skipif(not (SHARED / "nfcorpus").is_dir(), reason="shared NFCorpus not present")
def test_nfcorpus_test_split() -> None:
    spec = DatasetSpec(name="nf", source=SHARED / "x.yaml", path=SHARED / "nfcorpus",
                       split="test")
    ds = load_dataset(spec)
    assert len(ds.corpus) == 3633
    assert len(ds.queries) == 323
    assert sum(len(q.relevant) for q in ds.queries) == 12334


@pytest.mark.skipif(not (SHARED / "nq-utd").is_dir(), reason="shared NQ-UTD not present")
def test_nq_utd_keeps_grade_zero_as_judged_nonrelevant() -> None:
    spec = DatasetSpec(name="nq", source=SHARED / "x.yaml", path=SHARED / "nq-utd",
                       split="test", answer_field="metadata.answer")
    ds = load_dataset(spec)
    zeros = sum(1 for q in ds.queries for g in q.relevant.values() if g == 0)
    assert zeros == 503
    assert all(q.reference_answers for q in ds.queries)


def test_tsv_has_no_quoting(tmp_path: Path) -> None:
    # a TSV (MS MARCO's collection, most IR corpora) holds raw quotes: read as CSV quoting,
    # '"To be' opened a field that swallowed the next rows (d3 and d4 vanished)
    path = tmp_path / "c.tsv"
    path.write_text('id\ttext\nd1\t"Hamlet" is a play\nd2\t"To be, or not to be\n'
                    'd3\tplain text about espresso\nd4\tsecond " quote closes here\nd5\tlast\n',
                    encoding="utf-8")
    docs = read_corpus(read_records(path), path)
    assert [(d.id, d.text) for d in docs] == [
        ("d1", '"Hamlet" is a play'), ("d2", '"To be, or not to be'),
        ("d3", "plain text about espresso"), ("d4", 'second " quote closes here'),
        ("d5", "last")]


def test_a_tsv_field_quoted_as_pandas_writes_it_is_unwrapped(tmp_path: Path) -> None:
    # pandas' to_csv(sep="\t") and csv's excel-tab quote a field that holds a quote
    path = tmp_path / "c.tsv"
    path.write_text('id\ttext\nd1\t"He said ""hi"""\nd2\t"""Hello"""\nd3\t"Hello"\n'
                    'd4\t"a ""b"" c" d"\n', encoding="utf-8")
    docs = read_corpus(read_records(path), path)
    assert [d.text for d in docs] == ['He said "hi"', '"Hello"', '"Hello"', '"a ""b"" c" d"']


def test_a_tsv_field_quoted_over_several_lines_as_pandas_writes_it(tmp_path: Path) -> None:
    # ClapNQ's retrieval TSVs (pandas' to_csv(sep="\t")): an answer holding a line break is
    # quoted over two lines; its second line was read as a query of its own, without text
    path = tmp_path / "q.tsv"
    path.write_bytes(
        b'id\tquestion\tdoc-id-list\tanswers\n'
        b'1\tfirst question\td1\tplain answer\n'
        b'2\tsecond question\td2\t"Russian Blue is ""blue"".\r\nThe British Blue is not."\n'
        b'3\t"a question\n\nover lines"\td3\t"""quoted"" start\nend"\n'
        b'4\t"To be\td4\t\n')
    queries = read_queries(read_records(path), path)
    assert [(q.id, q.text, q.reference_answers, q.line) for q in queries] == [
        ("1", "first question", ("plain answer",), 2),
        ("2", "second question", ('Russian Blue is "blue".\r\nThe British Blue is not.',), 3),
        ("3", "a question\n\nover lines", ('"quoted" start\nend',), 5),
        ("4", '"To be', (), 9)]
    # a row after one is named at its own line
    path.write_bytes(b'id\ttext\n1\t"two\nlines"\n2\tx\textra\n')
    with pytest.raises(SuiteError, match=r"q\.tsv:4: row has 3 fields, the header 2"):
        read_queries(read_records(path), path)


@tmp_settings
@given(rows=st.lists(st.tuples(
    st.lists(st.sampled_from(["a", "b c", '"', "\n", "\r\n", "\u00e9", " ", "''"]),
             max_size=8).map("".join),
    st.lists(st.sampled_from(["x", '"', "\n", "\r\n", "y z"]), max_size=8).map("".join)),
    min_size=1, max_size=5))
def test_a_tsv_written_by_csv_or_pandas_reads_back(tmp_path: Path, rows) -> None:
    path = tmp_path / "c.tsv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["_id", "title", "text"])
        writer.writerows((f"d{i}", title, text) for i, (title, text) in enumerate(rows))
    got = [(r["_id"], r["title"], r["text"]) for _, r in read_records(path)]
    assert got == [(f"d{i}", title, text) for i, (title, text) in enumerate(rows)]


def test_blank_lines_keep_the_line_numbers_right(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,text\nd1,a\n\n\nd2,x,extra\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"c\.csv:5: row has 3 fields"):
        read_corpus(read_records(path), path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_long_csv_fields_are_read_and_bad_rows_name_their_line(tmp_path: Path,
                                                               suffix: str) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    path = tmp_path / f"c{suffix}"
    long_text = "word " * 40_000  # 200,000 characters: over csv's default field limit
    path.write_text(f"id{sep}text\nd1{sep}short\nd2{sep}{long_text}\n", encoding="utf-8")
    docs = read_corpus(read_records(path), path)
    assert [len(d.text) for d in docs] == [5, len(long_text)]
    if suffix == ".csv":
        # the bad row starts on line 4 (a quoted field before it spans two lines)
        path.write_text('id,text\nd1,"two\nlines"\nd2,x,extra\n', encoding="utf-8")
        with pytest.raises(SuiteError, match=r"c\.csv:4: row has 3 fields, the header 2"):
            read_corpus(read_records(path), path)


def test_an_empty_or_null_relevant_field_means_no_labels(tmp_path: Path) -> None:
    # a CSV cell left empty, a column every row carries (Hugging Face, parquet): no labels,
    # as a record without the key, not "judged with nothing relevant" (scored 0)
    path = tmp_path / "q.csv"
    path.write_text('_id,text,relevant\nq1,espresso,d1\nq2,cold brew,\nq3,latte,"d3,d1"\n',
                    encoding="utf-8")
    qs = read_queries(read_records(path), path)
    assert [q.judged for q in qs] == [True, False, True]
    recs = [(1, {"_id": "q1", "text": "a", "relevant": None}),
            (2, {"_id": "q2", "text": "b", "relevant": " "}),
            (3, {"_id": "q3", "text": "c", "relevant": {}})]
    assert [q.judged for q in read_queries(recs, tmp_path / "q.jsonl")] == [False, False, True]


def _unknown_docs_spec(tmp_path: Path, policy: str, qrels: str = "q1\td1\t1\nq1\tgone\t2\n"
                       "q2\td2\t1\nq2\tlost\t0\nq3\tgone\t1\n") -> DatasetSpec:
    """A BEIR-like dataset whose qrels name documents ('gone', 'lost') its corpus lacks, as
    ArguAna's do."""
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n')
    (tmp_path / "q.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": "x"}) + "\n" for i in (1, 2, 3)))
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return DatasetSpec(name="x", source=tmp_path / "s.yaml", corpus=tmp_path / "c.jsonl",
                       queries=tmp_path / "q.jsonl", qrels=tmp_path / "test.tsv",
                       unknown_documents=policy)


def test_unknown_documents_keep_scores_as_trec_eval_does(tmp_path: Path) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from pytest_ragbench.metrics.retrieval import parse_metric

    ds = load_dataset(_unknown_docs_spec(tmp_path, "keep"))
    by_id = {q.id: q for q in ds.queries}
    assert dict(by_id["q1"].relevant) == {"d1": 1, "gone": 2}
    assert dict(by_id["q2"].relevant) == {"d2": 1, "lost": 0}
    assert [by_id[q].unknown_labels for q in ("q1", "q2", "q3")] == [("gone",), ("lost",),
                                                                     ("gone",)]
    assert ds.unknown_documents == "keep" and ds.unknown_label_count() == 3
    # the whole corpus retrieved, the missing documents never: trec_eval counts them relevant
    run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 2.0, "d1": 1.0},
           "q3": {"d1": 2.0, "d2": 1.0}}
    qrels = {"q1": {"d1": 1, "gone": 2}, "q2": {"d2": 1, "lost": 0}, "q3": {"gone": 1}}
    trec = pytrec_eval.RelevanceEvaluator(
        qrels, {"recall.10", "ndcg_cut.10", "P.10", "map", "recip_rank"}).evaluate(run)
    for qid, ranking in run.items():
        ranked = sorted(ranking, key=lambda d: -ranking[d])
        grades = by_id[qid].relevant
        for ours, theirs in (("recall@10", "recall_10"), ("ndcg@10", "ndcg_cut_10"),
                             ("precision@10", "P_10"), ("map", "map"), ("mrr", "recip_rank")):
            value = parse_metric(ours).compute(ranked, grades)
            assert value == pytest.approx(trec[qid][theirs], abs=1e-9), (qid, ours)
    # recall counts the missing document: d1 found, 'gone' never
    assert parse_metric("recall@10").compute(["d1", "d2"], by_id["q1"].relevant) == 0.5


def test_unknown_documents_drop_ignores_the_label(tmp_path: Path) -> None:
    ds = load_dataset(_unknown_docs_spec(tmp_path, "drop"))
    by_id = {q.id: q for q in ds.queries}
    assert dict(by_id["q1"].relevant) == {"d1": 1}
    assert dict(by_id["q2"].relevant) == {"d2": 1}
    # a query whose every label is dropped is still run, judged with nothing relevant
    assert dict(by_id["q3"].relevant) == {} and by_id["q3"].judged
    assert by_id["q1"].unknown_labels == ("gone",) and ds.unknown_label_count() == 3
    assert ds.unknown_documents == "drop"


def test_unknown_documents_change_the_dataset_hash_only_when_a_label_names_one(
        tmp_path: Path) -> None:
    keep, drop = (load_dataset(_unknown_docs_spec(tmp_path, p)) for p in ("keep", "drop"))
    # a resumed run or a baseline of one is not taken for the other
    assert keep.content_hash != drop.content_hash and keep.labels_hash != drop.labels_hash
    assert keep.corpus_hash == drop.corpus_hash
    clean = "q1\td1\t1\nq2\td2\t1\n"
    hashes = {load_dataset(_unknown_docs_spec(tmp_path, p, clean)).content_hash
              for p in ("error", "keep", "drop")}
    assert len(hashes) == 1  # nothing to keep or drop: the same dataset as the default's


def test_unknown_documents_error_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as exc:
        load_dataset(_unknown_docs_spec(tmp_path, "error"))
    assert exc.value.line == 3
    assert exc.value.detail == (
        "qrels row names unknown document 'gone': a document the corpus lacks; set "
        "'dataset.unknown_documents: keep' to score it as trec_eval and BEIR do (relevant, "
        "never retrieved) or 'drop' to ignore the label")


def test_unknown_documents_apply_to_inline_labels(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "a"}\n')
    (tmp_path / "q.jsonl").write_text(
        '{"_id": "q1", "text": "a", "relevant": {"d1": 1, "zz": 2}}\n')
    base = {"name": "x", "source": tmp_path / "s.yaml", "corpus": tmp_path / "c.jsonl",
            "queries": tmp_path / "q.jsonl"}
    with pytest.raises(SuiteError, match=r"labels unknown document 'zz' as relevant: .*"
                                         r"'dataset\.unknown_documents: keep'"):
        load_dataset(DatasetSpec(**base))
    kept = load_dataset(DatasetSpec(**base, unknown_documents="keep")).queries[0]
    dropped = load_dataset(DatasetSpec(**base, unknown_documents="drop")).queries[0]
    assert dict(kept.relevant) == {"d1": 1, "zz": 2} and kept.unknown_labels == ("zz",)
    assert dict(dropped.relevant) == {"d1": 1} and dropped.unknown_labels == ("zz",)
    assert (kept.num_relevant, dropped.num_relevant) == (2, 1)
