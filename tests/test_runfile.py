"""The ``run`` retriever's readers on malformed run files, and what a pytest run shows.

(The happy paths and the first error cases live in tests/test_retrievers_extra.py.)
"""

from __future__ import annotations

import os
import re
import textwrap
import warnings
from pathlib import Path

import pytest
from conftest import BASE_INI, DOCS, QUERIES, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.datasets import DataFileError, Document, Query
from pytest_ragbench.registry import BuildContext
from pytest_ragbench.retrievers.runfile import (
    RunDepthWarning,
    RunFileRetriever,
    read_jsonl_run,
    read_trec_run,
)

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

CORPUS = [Document(id=f"d{i}", text="x") for i in range(1, 5)]


def trec(tmp_path: Path, text: str | bytes, name: str = "run.trec") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_extra_trailing_columns_are_ignored_as_trec_eval_does(tmp_path: Path) -> None:
    path = trec(tmp_path, "q1 Q0 d1 1 2.5 sys extra more\nq1\tQ0\td2\t2\t1.5\tsys\tx\n")
    assert read_trec_run(path) == {"q1": {"d1": 2.5, "d2": 1.5}}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("q1 Q0 d1 1 1 s\nq1 Q0 d2 1\n", 2, r"expected 'qid Q0 docid rank score tag' \(6 columns\), "
                                        "got 4"),
    ("q1 Q0 d1 one 1.0 s\n", 1, "rank 'one' is not a number"),
    ("q1 Q0 d1 1 1.0.0 s\n", 1, r"score '1\.0\.0' is not a number"),
    ("q1 Q0 d1 1 inf s\n", 1, "score 'inf' is not finite"),
    ("q1 Q0 d1 1 -Infinity s\n", 1, "score '-Infinity' is not finite"),
    ("q1 Q0 d1 1 1e999 s\n", 1, "score '1e999' is not finite"),
    # Python's float() reads digit grouping and other scripts' digits, trec_eval does not
    ("q1 Q0 d1 1 1_000 s\n", 1, "score '1_000' is not a number"),
    ("q1 Q0 d1 1 \u0663 s\n", 1, "score '\u0663' is not a number"),
    ("q1 Q0 d1 1 1 s\nq2 Q0 d1 1 1 s\nq1 Q0 d1 2 0.5 s\n", 3,
     "document 'd1' is listed twice for query 'q1'"),
])
def test_trec_run_errors_name_file_and_line(tmp_path: Path, text: str, line: int,
                                            message: str) -> None:
    path = trec(tmp_path, text)
    with pytest.raises(DataFileError, match=message) as exc:
        read_trec_run(path)
    assert (exc.value.file, exc.value.line) == (str(path), line)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_run_file_is_an_error(tmp_path: Path, content: str) -> None:
    with pytest.raises(DataFileError, match="holds no results"):
        read_trec_run(trec(tmp_path, content))
    with pytest.raises(DataFileError, match="holds no results"):
        read_jsonl_run(trec(tmp_path, content, "run.jsonl"))


@pytest.mark.parametrize(("data", "message"), [
    (b"q1 Q0 d\xe91 1 1 s\n", "invalid UTF-8 byte 0xe9"),
    ("q1 Q0 d1 1 1 s\n".encode("utf-16"), "UTF-16"),
])
def test_run_file_encoding_errors(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(DataFileError, match=message) as exc:
        read_trec_run(trec(tmp_path, data))
    assert exc.value.line == 1


def test_unreadable_run_files(tmp_path: Path) -> None:
    (tmp_path / "dir.trec").mkdir()
    with pytest.raises(DataFileError, match="is a directory"):
        read_trec_run(tmp_path / "dir.trec")
    (tmp_path / "loop.trec").symlink_to(tmp_path / "loop.trec")
    with pytest.raises(DataFileError, match="symlink loop"):
        read_trec_run(tmp_path / "loop.trec")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.trec")
        with pytest.raises(DataFileError, match="not a regular file"):
            read_jsonl_run(tmp_path / "fifo.trec")
    if Path("/proc/self/mem").exists():
        (tmp_path / "eio.trec").symlink_to("/proc/self/mem")
        with pytest.raises(DataFileError, match="cannot read the file: Input/output error"):
            read_trec_run(tmp_path / "eio.trec")


@pytest.mark.parametrize(("line", "message"), [
    ('{"query_id": "q1", "results": [["d1", true]]}', "score True is not a number"),
    ('{"query_id": "q1", "results": [["d1", null]]}', "score None is not a number"),
    ('{"query_id": "q1", "results": [["d1", "x"]]}', "score 'x' is not a number"),
    ('{"query_id": "q1", "results": [["d1", "1_0"]]}', "score '1_0' is not a number"),
    ('{"query_id": "q1", "results": [["d1", Infinity]]}', "score inf is not finite"),
    ('{"query_id": "q1", "results": [["d1", NaN]]}', "score nan is not finite"),
    ('{"query_id": "q1", "results": [["", 1]]}', "document id '' is not a string"),
    ('{"query_id": "q1", "results": [[["d1"], 1]]}', r"document id \['d1'\] is not a string"),
    ('{"query_id": ["q1"], "results": []}', "missing query_id"),
    ('{"query_id": true, "results": []}', "missing query_id"),
    ('[["d1", 1]]', "expected an object with query_id and results"),
    ("[" * 100_000, "malformed JSON line: nested too deeply"),
])
def test_jsonl_run_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"query_id": "q0", "results": [["d1", 1]]}\n' + line + "\n")
    with pytest.raises(DataFileError, match=message) as exc:
        read_jsonl_run(path)
    assert (exc.value.file, exc.value.line) == (str(path), 2)


def test_jsonl_duplicate_query_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_jsonl(path, [{"query_id": "q1", "results": []}, {"qid": "q1", "results": []}])
    with pytest.raises(DataFileError, match="query 'q1' appears twice") as exc:
        read_jsonl_run(path)
    assert exc.value.line == 2


def test_check_parses_the_file_at_collection(tmp_path: Path) -> None:
    trec(tmp_path, "q1 Q0 d1 1 1 s\nq1 Q0 d2 2 x s\n")
    with pytest.raises(ValueError, match=r"run\.trec:2: score 'x' is not a number"):
        RunFileRetriever.ragbench_check({"path": "run.trec"}, BuildContext(base_dir=tmp_path))


def test_deeper_than_k_warns_once(tmp_path: Path) -> None:
    path = trec(tmp_path, "".join(f"q1 Q0 d{i} {i} {10 - i} s\n" for i in range(1, 5))
                + "q2 Q0 d1 1 1 s\n")
    r = RunFileRetriever(path=str(path))
    r.index(CORPUS)
    assert r.retrieve_case(Query(id="q1", text="x"), 4) == [
        ("d1", 9.0), ("d2", 8.0), ("d3", 7.0), ("d4", 6.0)]
    with pytest.warns(RunDepthWarning, match=r"holds up to 4 results per query, deeper than "
                                             r"k=2: only the top 2 of each query are scored"):
        assert r.retrieve_case(Query(id="q1", text="x"), 2) == [("d1", 9.0), ("d2", 8.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r.retrieve_case(Query(id="q2", text="x"), 2) == [("d1", 1.0)]
        assert len(r.retrieve_case(Query(id="q1", text="x"), 1)) == 1


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | st.lists(
    st.sampled_from(["q1", "Q0", "d1", "d2", "1", "0.5", "nan", "inf", "x", " ", "\t", "\n",
                     "\xe9", "\x00", "-1e999"]), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8")))
def test_any_bytes_in_a_trec_run_parse_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    path = trec(tmp_path, data)
    try:
        run = read_trec_run(path)
    except DataFileError as exc:
        assert exc.file == str(path)
        return
    assert run and all(all(isinstance(s, float) for s in docs.values()) for docs in run.values())


# -- end to end --------------------------------------------------------------------------------

SUITE = """\
name: e
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
retrievers:
  submitted: {type: run, path: run.trec}
metrics: [ndcg@K]  # a cutoff above k is refused at load
k: K
"""


def run_suite(pytester: pytest.Pytester, run: str, k: int = 10) -> pytest.RunResult:
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl", QUERIES)
    pytester.makeini(BASE_INI)
    (pytester.path / "run.trec").write_text(run)
    (pytester.path / "suite.yaml").write_text(textwrap.dedent(SUITE).replace("K", str(k)))
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    return result


def good_run() -> str:
    return "".join(f"{q['_id']} Q0 {d} 1 {g} sys\n"
                   for q in QUERIES for d, g in q["relevant"].items())


def test_broken_run_file_is_one_collection_error(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, good_run() + "q5 Q0 d1 1 high sys\n")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # as any bad suite input
    n = len(good_run().splitlines()) + 1
    result.stdout.fnmatch_lines([f"*suite.yaml:6: retrievers.submitted: retriever 'run': "
                                 f"*run.trec:{n}: score 'high' is not a number"])
    out = result.stdout.str()
    # One message, not one per query (five queries here, 323 for NFCorpus).
    # (no case of q1 either; the pytester folder's random name may hold the letters "q1")
    assert out.count("is not a number") == 1 and not re.search(r"\bq1\b", out)


def test_extra_columns_run_and_depth_warning(pytester: pytest.Pytester) -> None:
    run = "".join(line + " extra\n" for line in good_run().splitlines())
    result = run_suite(pytester, run, k=1)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=len(QUERIES), warnings=1)
    result.stdout.fnmatch_lines(["*RunDepthWarning: run file *run.trec holds up to 2 results "
                                 "per query, deeper than k=1: only the top 1 of each query "
                                 "are scored"])
