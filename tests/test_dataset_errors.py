"""Malformed dataset files: each gives one DataFileError naming file, line and field.

Unit tests per category of bad input, hypothesis for the parsers (any bytes give a parsed
result or a clean error), and end-to-end runs showing one collection error, no traceback.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import BASE_INI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.datasets import (
    DataFileError,
    DatasetSpec,
    check_file,
    load_dataset,
    read_corpus,
    read_qrels,
    read_queries,
    read_records,
)
from pytest_ragbench.errors import SuiteError

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

tmp_settings = settings(max_examples=150, deadline=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture])

CORPUS = '{"_id": "d1", "text": "espresso grind"}\n{"_id": "d2", "text": "cold brew"}\n'
QUERIES = ('{"_id": "q1", "text": "espresso"}\n{"_id": "q2", "text": "brew"}\n')


def corpus_of(path: Path) -> tuple:
    return read_corpus(read_records(path), path)


def write_dataset(root: Path, corpus: str | bytes = CORPUS, queries: str | bytes = QUERIES,
                  qrels: str | bytes | None = "q1 0 d1 1\nq2 0 d2 2\n") -> DatasetSpec:
    for name, content in (("corpus.jsonl", corpus), ("queries.jsonl", queries),
                          ("qrels.txt", qrels)):
        if content is not None:
            data = content.encode() if isinstance(content, str) else content
            (root / name).write_bytes(data)
    return DatasetSpec(name="x", source=root / "suite.yaml", corpus=root / "corpus.jsonl",
                       queries=root / "queries.jsonl",
                       qrels=root / "qrels.txt" if qrels is not None else None)


def error_of(spec: DatasetSpec) -> DataFileError:
    with pytest.raises(DataFileError) as exc:
        load_dataset(spec)
    return exc.value


def test_good_dataset_loads(tmp_path: Path) -> None:
    ds = load_dataset(write_dataset(tmp_path))
    assert [(q.id, dict(q.relevant)) for q in ds.queries] == [("q1", {"d1": 1}),
                                                               ("q2", {"d2": 2})]


def test_data_file_error_is_a_suite_error_and_a_value_error() -> None:
    err = DataFileError("bad", file="c.jsonl", line=3)
    assert isinstance(err, SuiteError) and isinstance(err, ValueError)
    assert str(err) == "c.jsonl:3: bad"


# -- encodings ---------------------------------------------------------------------------------


def test_latin1_byte_names_line_and_expected_encoding(tmp_path: Path) -> None:
    corpus = CORPUS.encode() + '{"_id": "d3", "text": "caf\u00e9"}\n'.encode("latin-1")
    err = error_of(write_dataset(tmp_path, corpus=corpus))
    assert err.file == str(tmp_path / "corpus.jsonl") and err.line == 3
    assert "invalid UTF-8 byte 0xe9 at column 27" in str(err) and "expected UTF-8" in str(err)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_say_utf8_is_expected(tmp_path: Path, encoding: str) -> None:
    spec = write_dataset(tmp_path, queries=QUERIES.encode(encoding))
    err = error_of(spec)
    assert err.file == str(tmp_path / "queries.jsonl") and err.line == 1
    assert "expected UTF-8" in str(err)
    assert ("UTF-16" in str(err)) or ("UTF-32" in str(err))


def test_utf16_qrels_is_not_read_as_a_header(tmp_path: Path) -> None:
    # Without the check the first line would pass for a header and the rest for garbage.
    spec = write_dataset(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n"
                         .encode("utf-16-le"))
    err = error_of(spec)
    assert err.file == str(tmp_path / "qrels.txt") and "UTF-16" in str(err)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path, corpus=b"\xef\xbb\xbf" + CORPUS.encode(),
                         qrels=b"\xef\xbb\xbfq1 0 d1 1\n")
    assert [d.id for d in load_dataset(spec).corpus] == ["d1", "d2"]


def test_unpaired_surrogate_escape_names_the_document(tmp_path: Path) -> None:
    corpus = CORPUS + '{"_id": "d3", "text": "bad \\ud800 text"}\n'
    err = error_of(write_dataset(tmp_path, corpus=corpus))
    assert "document 'd3': field 'text' holds an unpaired surrogate" in str(err)
    assert err.file == str(tmp_path / "corpus.jsonl")


# -- files that are not readable regular files -------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc/self/mem (EIO)")
def test_read_error_eio_names_the_file(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path)
    (tmp_path / "corpus.jsonl").unlink()
    # A regular file whose read() fails with EIO at offset 0.
    (tmp_path / "corpus.jsonl").symlink_to("/proc/self/mem")
    err = error_of(spec)
    assert err.file == str(tmp_path / "corpus.jsonl")
    assert "cannot read the file: Input/output error" in str(err)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_permission_denied_names_the_file(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path)
    (tmp_path / "qrels.txt").chmod(0)
    try:
        err = error_of(spec)
    finally:
        (tmp_path / "qrels.txt").chmod(0o644)
    assert err.file == str(tmp_path / "qrels.txt") and "Permission denied" in str(err)


def test_open_failure_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same path as a permission error when the tests run as root.
    path = tmp_path / "c.jsonl"
    path.write_text(CORPUS)

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataFileError, match="cannot open the file: Permission denied") as exc:
        corpus_of(path)
    assert exc.value.file == str(path)


def test_symlink_loop(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path)
    (tmp_path / "corpus.jsonl").unlink()
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "corpus.jsonl")
    (tmp_path / "corpus.jsonl").symlink_to(tmp_path / "a.jsonl")
    err = error_of(spec)
    assert err.file == str(tmp_path / "suite.yaml") and err.key == "dataset.corpus"
    assert "symlink loop" in str(err)
    with pytest.raises(DataFileError, match="symlink loop"):
        corpus_of(tmp_path / "corpus.jsonl")


def test_directory_where_a_file_is_expected(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path)
    (tmp_path / "queries.jsonl").unlink()
    (tmp_path / "queries.jsonl").mkdir()
    err = error_of(spec)
    assert err.key == "dataset.queries" and "is a directory (expected a file)" in str(err)
    with pytest.raises(DataFileError, match="is a directory"):
        read_qrels(tmp_path / "queries.jsonl")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "q.tsv")
    with pytest.raises(DataFileError, match="not a regular file"):
        read_qrels(tmp_path / "q.tsv")
    with pytest.raises(DataFileError, match="not a regular file"):
        check_file(tmp_path / "q.tsv", "qrels")


def test_file_where_a_beir_folder_is_expected(tmp_path: Path) -> None:
    (tmp_path / "beir").write_text(CORPUS)
    spec = DatasetSpec(name="x", source=tmp_path / "suite.yaml", path=tmp_path / "beir",
                       split="test")
    with pytest.raises(SuiteError) as exc:
        load_dataset(spec)
    assert exc.value.key == "dataset.path" and "expected a BEIR folder" in str(exc.value)


def test_beir_folder_without_corpus_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "beir" / "qrels").mkdir(parents=True)
    (tmp_path / "beir" / "queries.jsonl").write_text(QUERIES)
    spec = DatasetSpec(name="x", source=tmp_path / "suite.yaml", path=tmp_path / "beir")
    err = error_of(spec)
    assert err.key == "dataset.path" and "corpus file not found" in str(err)
    assert str(tmp_path / "beir" / "corpus.jsonl") in str(err)


# -- empty files -------------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "message"), [
    ("corpus", "the corpus is empty"),
    ("queries", "no queries (expected at least one)"),
    ("qrels", "no relevance judgements in the qrels file"),
])
@pytest.mark.parametrize("content", ["", "\n\n", "  \r\n"])
def test_empty_files(tmp_path: Path, which: str, message: str, content: str) -> None:
    err = error_of(write_dataset(tmp_path, **{which: content}))
    assert err.file == str(tmp_path / ("qrels.txt" if which == "qrels" else f"{which}.jsonl"))
    assert message in str(err)


def test_header_only_qrels_is_empty(tmp_path: Path) -> None:
    err = error_of(write_dataset(tmp_path, qrels="query-id\tcorpus-id\tscore\n"))
    assert "no relevance judgements" in str(err)


@pytest.mark.parametrize("suffix", [".json", ".csv", ".tsv"])
def test_empty_json_and_csv_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text("")
    with pytest.raises(DataFileError, match="empty") as exc:
        corpus_of(path)
    assert exc.value.file == str(path)


# -- malformed JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "message"), [
    ('{"_id": "d3", "text": "x"', "malformed JSON line: Expecting ',' delimiter"),
    ("[" * 100_000, "malformed JSON line: nested too deeply"),
    ('{"_id": ' + "9" * 5000 + "}", "malformed JSON line: Exceeds the limit"),
    ('"just a string"', "expected a JSON object per line, got string"),
    ("[1, 2]", "expected a JSON object per line, got array"),
])
def test_malformed_json_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(CORPUS + line + "\n")
    with pytest.raises(DataFileError, match=message) as exc:
        corpus_of(path)
    assert exc.value.line == 3


@pytest.mark.parametrize(("content", "message", "line"), [
    ('[{"_id": "d1", "text": "a"},\n {"_id": "d2", ', "malformed JSON: Expecting", 2),
    ('"text"', "expected a JSON list of objects or an object keyed by id, got string", None),
    ('[{"_id": "d1", "text": "a"},\n 3]', "expected an object, got integer", 2),
    ('[{"_id": "d1", "text": "a"}] []', "malformed JSON: Extra data", 1),
    ('{"d1": "a",\n "d2" 3}', "malformed JSON: Expecting ':' delimiter", 2),
])
def test_malformed_json_files(tmp_path: Path, content: str, message: str, line: int | None
                              ) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message) as exc:
        corpus_of(path)
    assert exc.value.line == line


def test_csv_row_longer_than_header(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,text\nd1,hello\nd2,hello,extra\n")
    with pytest.raises(DataFileError, match="row has 3 fields, the header 2") as exc:
        corpus_of(path)
    assert exc.value.line == 3


@pytest.mark.parametrize(("part", "sep"), [("corpus", "\t"), ("queries", "\t"),
                                          ("queries", ",")])
def test_a_tsv_or_csv_without_a_header_row_says_so(tmp_path: Path, part: str, sep: str
                                                   ) -> None:
    # MS MARCO's collection.tsv and queries.tsv have no header: its first row was taken for
    # one, and the second reported as a record without an id
    suffix = ".tsv" if sep == "\t" else ".csv"
    files = {"corpus": tmp_path / "corpus.jsonl", "queries": tmp_path / "queries.jsonl"}
    files["corpus"].write_text(CORPUS)
    files["queries"].write_text(QUERIES)
    files[part] = tmp_path / f"{part}{suffix}"
    files[part].write_text(f"\nd1{sep}espresso grind\nd2{sep}cold brew\n")
    spec = DatasetSpec(name="x", source=tmp_path / "s.yaml", corpus=files["corpus"],
                       queries=files["queries"])
    with pytest.raises(DataFileError) as exc:
        load_dataset(spec)
    assert (exc.value.file, exc.value.line) == (str(files[part]), 2)
    assert "the header row names no id column (got 'd1', 'espresso grind'" in exc.value.detail
    assert f"a {suffix[1:].upper()} file starts with a row naming its fields" in exc.value.detail


@pytest.mark.parametrize(("suffix", "content", "line"), [
    (".jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b", '
               '"relevant": {"d1": 2, "d2": 1, "d1": 0}}\n', 2),
    (".json", '[{"_id": "q1", "text": "a"},\n {"_id": "q2", "_id": "q3", "text": "b"}]', 2),
])
def test_a_key_given_twice_in_a_query_record_is_an_error(tmp_path: Path, suffix: str,
                                                         content: str, line: int) -> None:
    # json.loads keeps the last: q2's label of d1 read 0, where a qrels file giving the pair
    # two grades is an error (trec_eval refuses it too)
    queries = tmp_path / f"queries{suffix}"
    queries.write_text(content)
    (tmp_path / "corpus.jsonl").write_text(CORPUS)
    spec = DatasetSpec(name="x", source=tmp_path / "s.yaml", corpus=tmp_path / "corpus.jsonl",
                       queries=queries)
    with pytest.raises(DataFileError, match="duplicate key") as exc:
        load_dataset(spec)
    assert (exc.value.file, exc.value.line) == (str(queries), line)


def test_csv_nul_byte_and_bad_quoting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,text\n" + b"d1,hello\n" * 400 + b"d2,he\x00llo\n")
    with pytest.raises(DataFileError, match="NUL") as exc:
        corpus_of(path)
    assert exc.value.line == 402
    # a field past the reader's limit (100 MB of text; lowered here to keep the file small)
    before = csv.field_size_limit()
    monkeypatch.setattr("pytest_ragbench.datasets.core._CSV_FIELD_LIMIT", 150_000)
    strict = tmp_path / "big.csv"
    strict.write_text("id,text\nd1," + "x" * 200_000 + "\n")
    csv.field_size_limit(131_072)  # the csv module's default (an earlier read raised it)
    try:
        with pytest.raises(DataFileError, match="malformed CSV: field larger than field limit"):
            corpus_of(strict)
    finally:
        csv.field_size_limit(before)


# -- missing fields and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(("record", "message"), [
    ({"text": "no id"}, "document has no id (expected one of the keys _id, id, "),
    ({"_id": "  ", "text": "blank id"}, "document has no id"),
    ({"_id": "d9"}, "document 'd9' has no text (expected a 'text' or 'title' field)"),
    ({"_id": ["d9"], "text": "x"}, "document id: field '_id' must be a string or an integer, "
                                   "got array"),
    ({"_id": True, "text": "x"}, "field '_id' must be a string or an integer, got boolean"),
    ({"_id": 1.5, "text": "x"}, "field '_id' must be a string or an integer, got number"),
    ({"_id": "d9", "text": 42}, "document 'd9': field 'text' must be a string, got integer"),
    ({"_id": "d9", "text": {"a": 1}}, "field 'text' must be a string, got object"),
    ({"_id": "d9", "text": "x", "title": ["t"]}, "field 'title' must be a string, got array"),
])
def test_corpus_missing_fields_and_wrong_types(tmp_path: Path, record: dict, message: str
                                               ) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(CORPUS + json.dumps(record) + "\n")
    with pytest.raises(DataFileError, match=message.replace("(", r"\(").replace(")", r"\)")
                       ) as exc:
        corpus_of(path)
    assert exc.value.line == 3 and exc.value.file == str(path)


def test_integer_ids_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": 7, "text": "x"}\n')
    assert corpus_of(path)[0].id == "7"


@pytest.mark.parametrize(("record", "message"), [
    ({"_id": "q9"}, "query 'q9' has no text"),
    ({"_id": "q9", "text": "   "}, "query 'q9' has no text"),
    ({"_id": "q9", "text": ["a"]}, "query 'q9': field 'text' must be a string, got array"),
    ({"_id": "q9", "question": 3}, "field 'question' must be a string, got integer"),
    ({"_id": "q9", "text": "a", "tags": 5}, "field 'tags' must be a list of strings"),
    ({"_id": "q9", "text": "a", "tags": [{"x": 1}]}, "field 'tags' must be a list of strings"),
    ({"_id": "q9", "text": "a", "type": {"x": 1}}, "field 'type' must be a string, got object"),
    ({"_id": "q9", "text": "a", "difficulty": [1]}, "field 'difficulty' must be a string"),
    ({"_id": "q9", "text": "a", "relevant": 3}, "'relevant' must be a mapping doc_id -> grade "
                                                "or a list of doc ids, got integer"),
    ({"_id": "q9", "text": "a", "relevant": [{"d1": 1}]}, "'relevant' document ids must be"),
    ({"_id": "q9", "text": "a", "relevant": {"d1": "2"}}, "relevance grade for 'd1' must be an "
                                                          "integer, got '2'"),
    ({"_id": "q9", "text": "a", "relevant": {"d1": 1.5}}, "must be an integer, got 1.5"),
    ({"_id": "q9", "text": "a", "relevant": {"d1": True}}, "must be an integer, got True"),
    ({"_id": "q9", "text": "a", "relevant": {"d1": 2**40}}, "must be an integer, got 1099"),
])
def test_query_missing_fields_and_wrong_types(tmp_path: Path, record: dict, message: str
                                              ) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(QUERIES + json.dumps(record) + "\n")
    with pytest.raises(DataFileError, match=message.replace("(", r"\(").replace(")", r"\)")
                       ) as exc:
        read_queries(read_records(path), path)
    assert exc.value.line == 3 and exc.value.file == str(path)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_inline_grades(tmp_path: Path, value: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(f'{{"_id": "q1", "text": "a", "relevant": {{"d1": {value}}}}}\n')
    with pytest.raises(DataFileError, match="relevance grade for 'd1' must be an integer"):
        read_queries(read_records(path), path)


def test_integral_float_grade_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"_id": "q1", "text": "a", "relevant": {"d1": 2.0}}\n')
    assert dict(read_queries(read_records(path), path)[0].relevant) == {"d1": 2}


@pytest.mark.parametrize("qid", ["c::d", "a\nb", "tab\there", "nul\x00", "nel\x85",
                                 "ls\u2028"])
def test_query_ids_that_cannot_be_part_of_a_test_id(tmp_path: Path, qid: str) -> None:
    spec = write_dataset(tmp_path, queries=QUERIES + json.dumps({"_id": qid, "text": "x"}) + "\n",
                         qrels=None)
    with pytest.raises(SuiteError, match="contains '::' or a control character") as exc:
        load_dataset(spec)
    err = exc.value
    assert repr(qid) in str(err)
    assert err.file == str(tmp_path / "queries.jsonl")
    # left out of the suite, the query is no problem
    from dataclasses import replace

    assert [q.id for q in load_dataset(replace(spec, query_ids=("q1", "q2"))).queries] == [
        "q1", "q2"]


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    err = error_of(write_dataset(tmp_path, corpus=CORPUS + '{"_id": "d2", "text": "x"}\n'))
    assert (err.line, "duplicate document id 'd2' (first seen at line 2)" in str(err)) == (3, True)
    err = error_of(write_dataset(tmp_path, queries=QUERIES + '{"_id": "q1", "text": "x"}\n'))
    assert (err.line, "duplicate query id 'q1' (first seen at line 1)" in str(err)) == (3, True)


# -- qrels -------------------------------------------------------------------------------------


def qrels_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qrels.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize("grade", ["1.5", "inf", "-inf", "nan", "NaN", "1e400", "2147483648",
                                   "9" * 5000, "high", "1_0", "1_0.0", "\u0663", "\uff11"])
def test_qrels_grade_must_be_an_integer(tmp_path: Path, grade: str) -> None:
    path = qrels_file(tmp_path, f"q1 0 d1 1\nq2 0 d2 {grade}\n")
    with pytest.raises(DataFileError, match="relevance grade must be an integer, got") as exc:
        read_qrels(path)
    assert exc.value.line == 2 and exc.value.file == str(path)


@pytest.mark.parametrize("grade", ["nan", "inf", "1.5", "1_0"])
def test_non_finite_grade_on_line_one_is_not_taken_for_a_header(tmp_path: Path, grade: str
                                                                 ) -> None:
    with pytest.raises(DataFileError, match="relevance grade must be an integer") as exc:
        read_qrels(qrels_file(tmp_path, f"q1\td1\t{grade}\nq2\td2\t1\n"))
    assert exc.value.line == 1


def test_qrels_integral_grades_and_header(tmp_path: Path) -> None:
    rows = read_qrels(qrels_file(tmp_path, "# comment\nquery-id\tcorpus-id\tscore\n"
                                           "q1\td1\t1.0\nq2\td2\t-1\nq3\td3\t+2\n"))
    assert [(r.query_id, r.doc_id, r.grade, r.line) for r in rows] == [
        ("q1", "d1", 1, 3), ("q2", "d2", -1, 4), ("q3", "d3", 2, 5)]


def test_qrels_mixing_tabs_and_spaces_read_as_trec_eval_reads_them(tmp_path: Path) -> None:
    """'q1 0 d1<TAB>1' (a file edited by hand) was refused, 'got 2 columns'; trec_eval splits
    on white space. Tabs that give the columns stay the separator (an id may hold a space)."""
    rows = read_qrels(qrels_file(tmp_path, "q1 0 d1\t1\nq2\t0 d2 2\nq3\tdoc three\t1\n"))
    assert [(r.query_id, r.doc_id, r.grade) for r in rows] == [
        ("q1", "d1", 1), ("q2", "d2", 2), ("q3", "doc three", 1)]


def test_conflicting_duplicate_qrels_rows(tmp_path: Path) -> None:
    path = qrels_file(tmp_path, "q1 0 d1 1\nq1 0 d2 0\nq1 0 d1 2\n")
    with pytest.raises(DataFileError) as exc:
        read_qrels(path)
    assert exc.value.line == 3
    assert "query 'q1', document 'd1': grade 2 conflicts with grade 1 at line 1" in str(exc.value)


def test_identical_duplicate_qrels_rows_count_once(tmp_path: Path) -> None:
    rows = read_qrels(qrels_file(tmp_path, "q1 0 d1 1\nq1 0 d1 1\nq1 0 d2 0\n"))
    assert [(r.doc_id, r.grade, r.line) for r in rows] == [("d1", 1, 1), ("d2", 0, 3)]


@pytest.mark.parametrize(("line", "count"), [
    ("q1 d1", 2), ("q1 0 d1 1 extra", 5), ("q1", 1), ("q1\t0\td1\t1\tx\ty", 6)])
def test_qrels_wrong_column_count(tmp_path: Path, line: str, count: int) -> None:
    with pytest.raises(DataFileError, match=f"columns, got {count}") as exc:
        read_qrels(qrels_file(tmp_path, f"q1 0 d1 1\n{line}\n"))
    assert exc.value.line == 2


def test_qrels_empty_id_column(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="empty document id") as exc:
        read_qrels(qrels_file(tmp_path, "q1\t0\td1\t1\nq1\t0\t \t1\n"))
    assert exc.value.line == 2


def test_qrels_naming_unknown_query_is_an_error(tmp_path: Path) -> None:
    # Documented choice (as before): the queries file lists the queries; a qrels id it lacks
    # means a wrong split or folder, so it is an error rather than silently dropped.
    err = error_of(write_dataset(tmp_path, qrels="q1 0 d1 1\nq7 0 d1 1\n"))
    assert (err.line, "unknown query 'q7'" in str(err)) == (2, True)


# -- property tests: any bytes give a result or a clean error ---------------------------------


@tmp_settings
@given(data=st.binary(max_size=300) | st.lists(
    st.sampled_from(["q1", "d1", "0", "1", "1.5", "nan", "inf", "-", "\t", " ", "\n", "\r\n",
                     "#", "\xe9", "\x00", "query-id", "\ufeff"]), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8")))
def test_any_bytes_in_qrels_parse_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "qrels.txt"
    path.write_bytes(data)
    try:
        rows = read_qrels(path)
    except DataFileError as exc:
        assert exc.file == str(path)
        return
    pairs = [(r.query_id, r.doc_id) for r in rows]
    assert len(pairs) == len(set(pairs))
    assert all(r.query_id and r.doc_id and isinstance(r.grade, int) for r in rows)


def test_json_records_name_the_line_they_start_on(tmp_path: Path) -> None:
    # an indented JSON file: the record at fault, not its index (read as a line number)
    path = tmp_path / "queries.json"
    path.write_text(json.dumps([{"_id": "q1", "text": "x"}, {"text": "no id"}], indent=2))
    with pytest.raises(DataFileError, match="query has no id") as exc:
        read_queries(read_records(path), path)
    assert exc.value.line == 6  # '  {' of the second record
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps({"d1": {"text": "a"}, "d2": {"text": "b"}, "d1 ": 3}, indent=2))
    with pytest.raises(DataFileError, match="'d1 ': field 'text' must be a string") as exc:
        corpus_of(path)
    assert exc.value.line == 8


def test_an_entry_keyed_by_id_giving_another_id_is_an_error_at_its_line(tmp_path: Path) -> None:
    """``{"d2": {"_id": "zz"}}`` ran as document 'zz' without a word (its inner ``_id``
    replaced the key), and ``{"d2": {"id": "zz"}}`` as 'd2'."""
    path = tmp_path / "corpus.json"
    for field_name in ("_id", "id"):
        path.write_text(json.dumps({"d1": {"text": "a", "_id": "d1"},
                                    "d2": {"text": "b", field_name: "zz"}}, indent=2))
        with pytest.raises(DataFileError, match=f"entry 'd2' gives another id, {field_name}: "
                                                 "'zz'") as exc:
            corpus_of(path)
        assert exc.value.line == 6
    # a query naming the document it was written from keeps it as metadata
    path = tmp_path / "queries.json"
    path.write_text(json.dumps({"q1": {"text": "what", "doc_id": "d1"}}))
    (query,) = read_queries(read_records(path), path)
    assert query.id == "q1" and query.metadata == {"doc_id": "d1"}


def test_inline_records_name_their_line_in_the_suite(tmp_path: Path) -> None:
    from pytest_ragbench.suite.loader import load_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent("""\
        name: s
        dataset:
          items:
            - {_id: a, text: first question}
            - {_id: a, text: again}
          documents:
            - {_id: d1, text: doc one}
            -
              text: no id
        retrievers: {bm25: {}}
        metrics: [recall@10]
        """))
    spec = load_suite(suite, None).dataset
    with pytest.raises(DataFileError, match="has no id") as exc:
        load_dataset(spec)
    assert (exc.value.file, exc.value.line) == (str(suite), 9)
    suite.write_text(suite.read_text().replace("-\n      text: no id", "- {_id: d2, text: two}"))
    spec = load_suite(suite, None).dataset
    with pytest.raises(DataFileError, match=r"duplicate query id 'a' \(first seen at line 4\)"
                       ) as exc:
        load_dataset(spec)
    assert exc.value.line == 5


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(doc=st.lists(json_values, max_size=6) | st.dictionaries(st.text(max_size=4),
                                                               json_values, max_size=6),
       indent=st.sampled_from([None, 0, 2, "\t"]))
def test_json_entries_read_what_json_loads_reads_with_each_entrys_line(doc, indent) -> None:
    from pytest_ragbench.datasets.core import json_entries

    content = json.dumps(doc, indent=indent)
    entries = list(json_entries(content))
    if isinstance(doc, dict):
        assert [(k, v) for _, k, v in entries] == list(json.loads(content).items())
    else:
        assert [v for _, k, v in entries] == json.loads(content)
        assert all(k is None for _, k, _ in entries)
    lines = content.split("\n")
    for line, key, value in entries:
        if indent is None:  # all on one line
            assert line == 1
            continue
        start = json.dumps(key if key is not None else value, indent=indent).split("\n")[0]
        assert lines[line - 1].strip().startswith(start.strip()), (line, key, value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@tmp_settings
@given(data=st.binary(max_size=300) | st.lists(
    st.sampled_from(['{"_id": "d1", ', '"text": "a"', '"title": 3', "}", "\n", '"_id": 2',
                     '"text": null', "[", "]", ",", ":", '"d1"', "NaN", '"\\ud800"', "\xff",
                     "\x00", " "]),
    max_size=30).map(lambda parts: "".join(parts).encode("utf-8", "surrogateescape")))
def test_any_bytes_in_a_json_or_jsonl_corpus_parse_or_fail_cleanly(tmp_path: Path, suffix: str,
                                                                   data: bytes) -> None:
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(data)
    try:
        docs = corpus_of(path)
    except DataFileError as exc:
        assert exc.file == str(path)
        return
    assert all(isinstance(d.text, str) and isinstance(d.title, str) for d in docs)


@tmp_settings
@given(data=st.binary(max_size=300))
def test_any_bytes_in_a_csv_corpus_parse_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "corpus.csv"
    path.write_bytes(b"id,text\n" + data)
    try:
        docs = corpus_of(path)
    except DataFileError as exc:
        assert exc.file == str(path)
        return
    assert all(isinstance(d.text, str) and d.id for d in docs)


# -- end to end: one collection error, no traceback --------------------------------------------

SUITE = """\
name: e
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
  qrels: qrels.txt
retrievers:
  bm25: {}
metrics: [ndcg@10]
"""


def run_suite(pytester: pytest.Pytester, *args: str, **files: bytes) -> pytest.RunResult:
    spec = write_dataset(pytester.path)
    for name, content in files.items():
        (pytester.path / name.replace("__", ".")).write_bytes(content)
    (pytester.path / "suite.yaml").write_text(textwrap.dedent(SUITE))
    pytester.makeini(BASE_INI)
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider", *args)
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert spec.corpus is not None
    return result


def test_non_utf8_corpus_is_one_collection_error(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, corpus__jsonl=CORPUS.encode() + b'{"_id": "d\xe9"}\n')
    # As every other bad suite input: 2 (interrupted by a collection error, see
    # tests/test_suite_errors_e2e.py). Under xdist (exit 1: the controller reports workers'
    # collection errors as errors) the same error is shown once: the -n 2 run of
    # tests/test_bad_inputs_battery.py (case xdist-duplicate-key) collects such a corpus too.
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*corpus.jsonl:3: invalid UTF-8 byte 0xe9 at column 11 "
                                 "(expected UTF-8 text*"])
    assert result.stdout.str().count("invalid UTF-8 byte") == 1
    assert "passed" not in result.stdout.str()


def test_conflicting_qrels_is_one_collection_error(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, qrels__txt=b"q1 0 d1 1\nq2 0 d2 1\nq1 0 d1 0\n")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*qrels.txt:3: query 'q1', document 'd1': grade 0 conflicts "
                                 "with grade 1 at line 1 (expected one grade per pair)"])
    assert result.stdout.str().count("conflicts with") == 1


def test_a_dataset_naming_documents_the_corpus_lacks_runs_with_unknown_documents(
        pytester: pytest.Pytester) -> None:
    # ArguAna's qrels name documents its corpus left out: refused by default (the error says
    # how to run it), scored as trec_eval does under 'keep', and every output says so
    qrels = b"q1 0 d1 1\nq1 0 gone 1\nq2 0 d2 2\n"
    result = run_suite(pytester, "-q", qrels__txt=qrels)
    result.stdout.fnmatch_lines(["*qrels.txt:2: qrels row names unknown document 'gone': a "
                                 "document the corpus lacks; set 'dataset.unknown_documents: "
                                 "keep' to score it*"])
    (pytester.path / "suite.yaml").write_text(SUITE.replace(
        "  qrels: qrels.txt\n", "  qrels: qrels.txt\n  unknown_documents: keep\n"
    ).replace("[ndcg@10]", "[recall@10]"))
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    said = ("1 label of 1 query names a document the corpus lacks: kept with their grades, "
            "never retrieved, as trec_eval and BEIR score them (dataset.unknown_documents: keep)")
    result.stdout.fnmatch_lines([f"  {said}"])
    run = pytester.path / ".ragbench" / "runs" / "latest"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["suites"][0]["unknown_labels"] == {"action": "kept", "n_labels": 1,
                                                      "n_queries": 1}
    cases = {c["case_id"]: c for c in map(json.loads, (run / "cases.jsonl").open())}
    assert cases["q1"]["unknown_labels"] == {"action": "kept", "documents": ["gone"]}
    assert cases["q2"]["unknown_labels"] is None
    # relevant and never retrieved: half of q1's relevant documents at best
    assert cases["q1"]["metrics"]["recall@10"] == 0.5
    assert ["gone", 1] in cases["q1"]["missed"]
    # Markdown escapes the underscores
    assert f"{said[:1].upper()}{said[1:]}." in (run / "summary.md").read_text().replace(
        "\\_", "_")
    assert f"{said[:1].upper()}{said[1:]}." in (run / "report.html").read_text()
