"""``--ragbench-save-run``: TREC run files that trec_eval (pytrec_eval) and the ``run``
retriever read back to the same per-query scores, identical with ``-n 0`` and ``-n 2``."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import QUERIES, latest_run

from pytest_ragbench.results.runfile import (
    RunFileError,
    RunTable,
    collect_runs,
    format_run,
    run_file_names,
    write_run_files,
)

# record_depth below k: the option must still give files of depth k.
SUITE = """\
name: mini
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
retrievers:
  overlap:
    type: overlap_retriever:Overlap
  pruned:
    type: overlap_retriever:Overlap
    drop: d1
  tied:
    type: tied_retriever:Tied
k: 5
record_depth: 1
metrics: [ndcg@5, recall@5, mrr@5, map@5]
"""

REPLAY = """\
name: replay
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
retrievers:
  overlap:
    type: run
    path: runs/mini.overlap.trec
  pruned:
    type: run
    path: runs/mini.pruned.trec
    missing: empty
  tied:
    type: run
    path: runs/mini.tied.trec
k: 5
metrics: [ndcg@5, recall@5, mrr@5, map@5]
"""


# Two tied groups, returned in an order that is not trec_eval's.
TIED = """
class Tied:
    def index(self, corpus):
        self.ids = [d.id for d in corpus]

    def retrieve(self, query, k):
        return [(i, 1.0 if i in ("d2", "d4") else 0.5) for i in self.ids[:k]]
"""


def _cases(root: Path) -> dict[tuple[str, str], dict[str, float | None]]:
    out = {}
    for line in (latest_run(root) / "cases.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[(rec["retriever"], rec["case_id"])] = rec["metrics"]
    return out


def _trec_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def test_saved_runs_hold_the_top_k_replay_identically_and_agree_with_trec_eval(
        pytester: pytest.Pytester, mini_suite) -> None:
    """One run saves the files; every check below reads them (each used to run it anew).
    That they are identical with ``-n 2`` is checked by the serial and the -n 2 run of
    tests/test_batch_identity.py::test_batching_retrievers_serial_equals_xdist, which collect
    this suite too."""
    mini_suite(SUITE)
    pytester.makepyfile(tied_retriever=TIED)
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-save-run=runs", "-q",
                                "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*ragbench: run file *mini.overlap.trec"])
    first = _cases(pytester.path)
    check_top_k_in_trec_order(pytester.path / "runs")
    check_replay(pytester, first)
    check_trec_eval_agrees(pytester.path / "runs", first)  # last: it may skip


def check_top_k_in_trec_order(runs: Path) -> None:
    assert sorted(p.name for p in runs.iterdir()) == [
        "mini.overlap.trec", "mini.pruned.trec", "mini.tied.trec"]
    lines = _trec_lines(runs / "mini.overlap.trec")
    assert all(len(parts) == 6 and parts[1] == "Q0" and parts[5] == "overlap"
               for parts in lines)
    by_query: dict[str, list[list[str]]] = {}
    for parts in lines:
        by_query.setdefault(parts[0], []).append(parts)
    # q1 "espresso grind size" matches d1 (2 words) and d5 (1 word); record_depth 1 < k.
    assert [p[2] for p in by_query["q1"]] == ["d1", "d5"]
    for rows in by_query.values():
        assert [int(p[3]) for p in rows] == list(range(1, len(rows) + 1))
        keys = [(-float(p[4]), tuple(-b for b in p[2].encode())) for p in rows]
        assert keys == sorted(keys)  # score descending, ties by doc id descending
        assert len(rows) <= 5
    assert list(by_query) == sorted(by_query)
    # ties are ordered as trec_eval orders them: by document id, descending; top k only
    tied = _trec_lines(runs / "mini.tied.trec")
    assert [p[2] for p in tied if p[0] == "q1"] == ["d4", "d2", "d5", "d3", "d1"]


def check_replay(saved: pytest.Pytester, first: dict) -> None:
    """The ``run`` retriever reading the saved files gives identical metrics."""
    (saved.path / "replay.yaml").write_text(REPLAY, encoding="utf-8")
    result = saved.runpytest("--ragbench=replay.yaml", "-q", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    replayed = _cases(saved.path)
    assert set(replayed) == set(first)
    assert replayed == first
    assert any(v for m in first.values() for v in m.values())  # not all zeros


def check_trec_eval_agrees(runs: Path, first: dict) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {q["_id"]: dict(q["relevant"]) for q in QUERIES}
    for system in ("overlap", "pruned", "tied"):
        run: dict[str, dict[str, float]] = {}
        for qid, _, doc, _, score, _ in _trec_lines(runs / f"mini.{system}.trec"):
            run.setdefault(qid, {})[doc] = float(score)
        measures = {"ndcg_cut.5", "recall.5", "recip_rank", "map_cut.5"}
        scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
        for qid, got in scores.items():
            ours = first[(system, qid)]
            assert ours["ndcg@5"] == pytest.approx(got["ndcg_cut_5"], abs=1e-12)
            assert ours["recall@5"] == pytest.approx(got["recall_5"], abs=1e-12)
            assert ours["mrr@5"] == pytest.approx(got["recip_rank"], abs=1e-12)
            assert ours["map@5"] == pytest.approx(got["map_cut_5"], abs=1e-12)
        assert scores


# -- the writer on records -------------------------------------------------------------------


def _rec(suite: str, system: str, qid: str, retrieved: list, run: int = 0,
         name: str | None = None) -> dict:
    return {"suite": suite, "suite_name": name or suite, "retriever": system, "case_id": qid,
            "run": run, "retrieved": retrieved}


def test_scores_round_trip_and_repetitions_are_written_once(tmp_path: Path) -> None:
    score = 0.1 + 0.2  # 0.30000000000000004: a rounded score would change ties
    records = [
        _rec("s.yaml", "bm25", "q2", [["b", score, 1], ["a", 1e-300, None]], name="s"),
        _rec("s.yaml", "bm25", "q2", [["z", 9.0, None]], run=1, name="s"),
        _rec("s.yaml", "bm25", "q1", [], name="s"),  # an errored case: no lines
    ]
    [path] = write_run_files(records, tmp_path)
    assert path.name == "s.bm25.trec"
    assert path.read_text() == (f"q2 Q0 b 1 {score!r} bm25\n"
                                "q2 Q0 a 2 1e-300 bm25\n")
    assert float(path.read_text().split()[4]) == score


def test_missing_scores_keep_the_recorded_order() -> None:
    [table] = collect_runs([_rec("s", "rag", "q1", [["c", None, None], ["a", None, 1]])]
                           ).values()
    assert format_run(table) == "q1 Q0 c 1 2.0 rag\nq1 Q0 a 2 1.0 rag\n"


def test_scores_out_of_the_recorded_order_keep_the_order() -> None:
    # A pipeline's contexts are ranked in the order it gives them, whatever their scores
    # (distances grow down the list, a reranker keeps its retriever's scores, ties). Written
    # with those scores, a replay (trec_eval, the run retriever) ordered them by score and
    # scored another ranking than the run did: an MRR of 1 replayed as 0.5.
    [table] = collect_runs([
        _rec("s", "rag", "q1", [["d9", 0.1, 1], ["d1", 0.2, None]]),
        _rec("s", "rag", "q2", [["a", 0.5, None], ["b", 0.5, 1]]),  # a tie: b would come first
        _rec("s", "rag", "q3", [["x", 0.9, 1], ["y", 0.4, None]]),  # in order: kept as given
    ]).values()
    assert format_run(table) == ("q1 Q0 d9 1 2.0 rag\nq1 Q0 d1 2 1.0 rag\n"
                                 "q2 Q0 a 1 2.0 rag\nq2 Q0 b 2 1.0 rag\n"
                                 "q3 Q0 x 1 0.9 rag\nq3 Q0 y 2 0.4 rag\n")


def test_ids_with_white_space_are_refused() -> None:
    table = RunTable("s", "bm25", {"q 1": [("d1", 1.0)]})
    with pytest.raises(RunFileError, match=r"query id 'q 1'.*white space"):
        format_run(table)


def test_file_names_are_safe_and_distinct_for_suites_sharing_a_name() -> None:
    tables = collect_runs([
        _rec("a/s.yaml", "my/retr ever", "q", [["d", 1.0, None]], name="nf"),
        _rec("b/s.yaml", "my/retr ever", "q", [["d", 1.0, None]], name="nf"),
        _rec("c.yaml", "x", "q", [["d", 1.0, None]], name=".."),
    ])
    names = run_file_names(tables)
    assert names[("a/s.yaml", "my/retr ever")] == "a_s.yaml.my_retr_ever.trec"
    assert names[("b/s.yaml", "my/retr ever")] == "b_s.yaml.my_retr_ever.trec"
    assert names[("c.yaml", "x")] == "_.x.trec"
    # two systems whose names coincide once made safe: one file was lost
    clash = run_file_names(collect_runs([
        _rec("s.yaml", "bm25#a", "q", [["d", 1.0, None]], name="clash"),
        _rec("s.yaml", "bm25_a", "q", [["d", 1.0, None]], name="clash"),
        _rec("s.yaml", "other", "q", [["d", 1.0, None]], name="clash")]))
    assert len(set(clash.values())) == 3 and clash[("s.yaml", "other")] == "clash.other.trec"
    assert all(re.fullmatch(r"clash\.bm25_a-[0-9a-f]{8}\.trec", clash[("s.yaml", s)])
               for s in ("bm25#a", "bm25_a"))


# -- the shipped BEIR example ----------------------------------------------------------------

BEIR_EXAMPLE = Path(__file__).resolve().parents[1] / "example_suites" / "beir" / "suite.yaml"


def test_the_beir_example_runs_on_its_sample_and_saves_a_run(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(f"--ragbench={BEIR_EXAMPLE}", "-q",
                                "--ragbench-save-run=runs", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=6)  # the six queries of sample/qrels/test.tsv, not dev's
    lines = _trec_lines(pytester.path / "runs" / "beir-bm25.bm25.trec")
    assert {parts[0] for parts in lines} == {"t1", "t2", "t3", "t4", "t5", "t6"}
    assert all(len(parts) == 6 for parts in lines)


def test_a_resumed_run_saves_the_same_run_files_as_a_fresh_one(pytester: pytest.Pytester,
                                                              mini_suite) -> None:
    # the earlier run kept its records' top record_depth (2) documents; reused by a resume
    # with --ragbench-save-run, they wrote run files of 2 documents a query, not the top k
    path = mini_suite()
    pytester.makepyfile(tied_retriever=TIED)  # every document, to k
    path.write_text(path.read_text().replace("overlap_retriever:Overlap", "tied_retriever:Tied")
                    + "record_depth: 2\n")
    assert pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider").ret == 0
    fresh = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-save-run=fresh",
                               "-p", "no:cacheprovider", "--ragbench-no-history")
    assert fresh.ret == 0
    pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider",
                       "--ragbench-no-history")  # the run to resume keeps 2 a query
    resumed = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-resume=latest",
                                 "--ragbench-save-run=resumed", "-p", "no:cacheprovider")
    assert resumed.ret == 0
    expected = (pytester.path / "fresh" / "mini.overlap.trec").read_text()
    assert max(Counter(line.split()[0] for line in expected.splitlines()).values()) > 2
    assert (pytester.path / "resumed" / "mini.overlap.trec").read_text() == expected


def test_a_resumed_save_run_reuses_the_rankings_shorter_than_k(pytester: pytest.Pytester,
                                                                mini_suite) -> None:
    # the overlap retriever ranks only the documents sharing a word with the query, fewer
    # than k: such a record holds the whole ranking, and a resume saving run files reuses it
    mini_suite()
    fresh = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-save-run=fresh",
                               "-p", "no:cacheprovider")
    assert fresh.ret == 0
    expected = (pytester.path / "fresh" / "mini.overlap.trec").read_text()
    assert 0 < max(Counter(line.split()[0] for line in expected.splitlines()).values()) < 10
    resumed = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-resume=latest",
                                 "--ragbench-save-run=resumed", "-p", "no:cacheprovider")
    assert resumed.ret == 0
    resumed.stdout.fnmatch_lines([f"*resumed from *: {len(QUERIES)} cases reused, 0 run"])
    assert (pytester.path / "resumed" / "mini.overlap.trec").read_text() == expected
