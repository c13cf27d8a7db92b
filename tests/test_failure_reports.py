"""What pytest shows for a failing or erroring case: the rank of a relevant document below the
top shown, one paragraph for a retriever that raises by default, its own traceback under
-vv / --tb=long (also from an xdist worker) and --pdb starting in the frame that raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BASE_INI, latest_run, write_jsonl

# Deep returns every document in id order: q012's relevant d056 ranks 57 of a top 100 (nDCG@10
# 0, recall@100 1, nothing missed). Bad raises from a helper, two frames down.
RETRIEVERS = '''
def helper(text):
    raise ValueError(f"index unavailable for {text!r}")


class Bad:
    def index(self, corpus):
        pass

    def retrieve(self, text, k):
        return helper(text)


class Deep:
    def index(self, corpus):
        self.ids = [d.id for d in corpus]

    def retrieve(self, text, k):
        return [(d, float(100 - i)) for i, d in enumerate(self.ids[:k])]
'''

SUITE = """\
name: deep
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers:
  bad: {type: "user_retrievers:Bad"}
  deep: {type: "user_retrievers:Deep"}
metrics: [ndcg@10, recall@100]
k: 100
thresholds: {ndcg@10: 0.5}
"""

# Records the last frame of each exception pytest hands to the debugging hook.
CONFTEST = '''
import json


def pytest_exception_interact(node, call, report):
    last = call.excinfo.traceback[-1]
    with open("interact.jsonl", "a") as f:
        f.write(json.dumps([str(last.path), last.name]) + "\\n")
'''

# A --pdbcls that records where the post-mortem starts.
RECORDING_PDB = '''
import json
import pdb


class RecordingPdb(pdb.Pdb):
    """Writes the frames of the post-mortem traceback instead of reading commands."""

    def interaction(self, frame, tb_or_exc):
        tb = tb_or_exc.__traceback__ if isinstance(tb_or_exc, BaseException) else tb_or_exc
        frames = []
        while tb is not None:
            frames.append([tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name])
            tb = tb.tb_next
        with open("pdb.jsonl", "a") as f:
            f.write(json.dumps(frames) + "\\n")
'''


@pytest.fixture
def deep_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    write_jsonl(pytester.path / "corpus.jsonl",
                [{"_id": f"d{i:03d}", "text": f"document {i}"} for i in range(100)])
    write_jsonl(pytester.path / "queries.jsonl",
                [{"_id": "q012", "text": "where is it", "relevant": {"d056": 1, "d003": 0}}])
    pytester.makepyfile(user_retrievers=RETRIEVERS, recording_pdb=RECORDING_PDB)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(BASE_INI)
    (pytester.path / "suite.yaml").write_text(SUITE, encoding="utf-8")
    return pytester


def _section(lines: list[str], title: str) -> list[str]:
    """The lines under the separator line holding ``title``, up to the next such line."""
    start = next(i for i, line in enumerate(lines) if f" {title} " in line) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(("====", ">>>>"))),
               len(lines))
    return lines[start:end]


def test_default_output_ranks_the_relevant_document_and_keeps_an_error_to_one_paragraph(
    deep_suite: pytest.Pytester,
) -> None:
    result = deep_suite.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*query q012 (deep): 'where is it'",
        "threshold failed: ndcg@10 = 0.0000, expected >= 0.5 (missed by 0.5000)",
        "metrics: ndcg@10=0.0000, recall@100=1.0000",
        "top 10 retrieved (rank, doc id, score, grade):",
        "*4. d003  97.0000  grade 0",
        "relevant documents by rank: d056 at 57",
    ])
    errors = _section(result.outlines, "ERRORS")
    assert errors[1:] == [
        "query q012 (bad): 'where is it'",
        "error [retrieve]: retriever 'bad' raised ValueError: index unavailable for "
        "'where is it'",
    ]
    # Nothing reached a debugger: no --pdb, and the exception was pytest's one-line failure.
    interact = [json.loads(x) for x in (deep_suite.path / "interact.jsonl").read_text()
                .splitlines()]
    assert [Path(path).name for path, _ in interact] == ["outcomes.py", "outcomes.py"]
    # The record and the HTML drill-down have the rank too.
    run = latest_run(deep_suite.path)
    recs = {r["retriever"]: r for r in map(json.loads, (run / "cases.jsonl").read_text()
                                           .splitlines())}
    assert recs["deep"]["relevant_ranks"] == {"d056": 57} and recs["deep"]["missed"] == []
    assert len(recs["deep"]["retrieved"]) == 20
    assert "relevant documents by rank</span> d056 at 57" in (run / "report.html").read_text()


def test_vv_shows_the_retrievers_frames_and_pdb_starts_where_it_raised(
    deep_suite: pytest.Pytester,
) -> None:
    result = deep_suite.runpytest("--ragbench=suite.yaml", "-k", "bad", "-vv", "--pdb",
                                  "--pdbcls=recording_pdb:RecordingPdb")
    result.assert_outcomes(errors=1)
    # --pdb shows the report as it enters the debugger, not again at the end
    errors = "\n".join(_section(result.outlines, "traceback"))
    for text in ("    def retrieve(self, text, k):", ">       return helper(text)",
                 ">       raise ValueError(f\"index unavailable for {text!r}\")",
                 "E       ValueError: index unavailable for 'where is it'",
                 "user_retrievers.py:2: ValueError", "query q012 (bad): 'where is it'"):
        assert text in errors, text
    assert "pytest_ragbench" not in errors and "_pytest" not in errors
    user = str(deep_suite.path / "user_retrievers.py")
    interact = json.loads((deep_suite.path / "interact.jsonl").read_text())
    assert interact == [user, "helper"]
    [frames] = [json.loads(x) for x in (deep_suite.path / "pdb.jsonl").read_text().splitlines()]
    # the debugger starts in the frame that raised; above it, the retriever's frames and the
    # item's setup, none of the plugin's frames in between
    assert frames[-2:] == [[user, "retrieve"], [user, "helper"]]
    assert frames[-3][1] == "setup" and frames[-3][0].endswith("collect.py")


def test_tb_long_under_xdist_brings_the_traceback_to_the_controller(
    deep_suite: pytest.Pytester,
) -> None:
    # one worker is enough to cross xdist's wire, and starts faster than two, and faster
    # still without hypothesis's plugin (0.1 s CPU), which this run does not need
    result = deep_suite.runpytest("--ragbench=suite.yaml", "-n", "1", "--tb=long",
                                  "-p", "no:hypothesispytest")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["created: 1/1 worker*"])
    errors = "\n".join(_section(result.outlines, "ERRORS"))
    for text in (">       return helper(text)", "user_retrievers.py:2: ValueError",
                 "- ragbench case -", "error [retrieve]: retriever 'bad' raised ValueError"):
        assert text in errors, text
    assert "pytest_ragbench" not in errors
    result.stdout.fnmatch_lines(["relevant documents by rank: d056 at 57",
                                 "ERROR suite.yaml::bad::q012 - ValueError: index unavailable*"])
