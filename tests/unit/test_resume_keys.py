"""Case keys, the choice of the run to resume, and what a resumed run says."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_ragbench.datasets import Dataset, Document, Query
from pytest_ragbench.records import make_record
from pytest_ragbench.results.resume import (
    EarlierRun,
    ResumeError,
    SuiteKeys,
    annotations_hash,
    crashed_cases,
    errored_cases,
    pick_run,
    resolve_run_folder,
    resume_line,
    run_folders,
    settings_digest,
    settings_hash,
    system_hashes,
)
from pytest_ragbench.suite.loader import ComponentSpec

SUITE = """\
name: s  # a comment
dataset: {corpus: c.jsonl, queries: q.jsonl}
retrievers:
  a: {type: bm25, k1: 1.2}
metrics: [ndcg@10]
gates: {ndcg@10: 0.5}
"""


def _keys(**changes: object) -> SuiteKeys:
    base: dict = {"suite_id": "s.yaml", "suite_name": "s", "suite_hash": "h", "settings": "S",
                  "dataset": "D", "annotations": "M", "version": "1",
                  "systems": {"a": "A", "p": "P"},
                  "pipelines": frozenset({"p"})}
    return SuiteKeys(**{**base, **changes})


def test_settings_ignore_comments_gates_xfail_and_systems_but_not_metrics(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    before = settings_hash(path)
    path.write_text(SUITE.replace("# a comment", "").replace("0.5", "0.9")
                    .replace("k1: 1.2", "k1: 2.0") + "xfail: {q1: known}\n")
    assert settings_hash(path) == before
    path.write_text(SUITE.replace("[ndcg@10]", "[ndcg@10, recall@10]"))
    assert settings_hash(path) != before


LLM_SUITE = {
    "name": "s", "description": "first try", "dataset": {"corpus": "c.jsonl"},
    "metrics": ["ndcg@10", "faithfulness"],
    "llm": {"type": "openai", "base_url": "http://x/v1", "model": "m", "concurrency": 16,
            "retries": 4, "case_timeout": 30},
    "judge": {"llm": {"type": "openai", "base_url": "http://x/v1", "model": "j", "rpm": 600}},
    "embedder": {"type": "openai", "base_url": "http://x/v1", "model": "e", "tpm": 10_000},
    "cache": {"mode": "off"}, "max_cost": 5.0, "prices": {"m": {"prompt": 1, "completion": 2}},
}


@pytest.mark.parametrize(("path", "value"), [
    (("description",), "second try"),
    (("cache",), {"mode": "readwrite"}),
    (("max_cost",), 50.0),
    (("llm", "concurrency"), {"auto": True, "max": 4}),
    (("llm", "retries"), 8),
    (("llm", "backoff"), 2.0),
    (("judge", "llm", "rpm"), 60),
    (("embedder", "tpm"), 1_000),
])
def test_settings_ignore_how_calls_are_made(path: tuple[str, ...], value: object) -> None:
    """A run stopped by 429s or its cost cap is resumed with other limits: its finished cases
    measured the same under any."""
    changed = json.loads(json.dumps(LLM_SUITE))
    at = changed
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    assert settings_digest(changed) == settings_digest(LLM_SUITE)


@pytest.mark.parametrize(("path", "value"), [
    (("llm", "model"), "m2"),
    (("llm", "case_timeout"), 5),
    (("judge", "llm", "model"), "j2"),
    (("embedder", "model"), "e2"),
    (("prices",), {"m": {"prompt": 2, "completion": 2}}),
    (("metrics",), ["ndcg@10"]),
])
def test_settings_keep_what_a_case_measures(path: tuple[str, ...], value: object) -> None:
    changed = json.loads(json.dumps(LLM_SUITE))
    at = changed
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    assert settings_digest(changed) != settings_digest(LLM_SUITE)


def test_a_systems_key_ignores_how_its_nested_endpoint_is_called():
    def spec(**embedder: object) -> list[ComponentSpec]:
        return [ComponentSpec("dense", "dense", {"embedder": {
            "type": "openai", "model": "e", "concurrency": 16, **embedder}})]

    before = system_hashes(spec())["dense"]
    assert system_hashes(spec(concurrency=2))["dense"] == before
    assert system_hashes(spec(model="e2"))["dense"] != before


def test_a_pipelines_key_ignores_how_many_cases_it_is_asked_at_once(tmp_path: Path):
    """A pipeline's ``concurrency`` (the cases it is asked for at once, and an http
    pipeline's requests in flight) sets only how it is called: a run stopped by an overloaded
    service, resumed with a lower one, reused none of its cases ("pipeline 'prod' parameters
    changed"), as it did for a higher one to finish sooner. A user's own pipeline's
    ``concurrency`` parameter is its own (the plugin reads ``ragbench_concurrency``), which may
    change its answers: it stays in its key."""
    def specs(**params: object) -> list[ComponentSpec]:
        return [ComponentSpec("prod", "http", {"url": "http://x/answer", **params}),
                ComponentSpec("chain", "langchain", {"object": "m:chain", **params}),
                ComponentSpec("app", "my_app", {"model": "small", **params})]

    names = {"prod", "chain", "app"}
    eight = system_hashes(specs(concurrency=8), pipelines=names)
    for concurrency in (2, 16):
        other = system_hashes(specs(concurrency=concurrency), pipelines=names)
        assert (other["prod"], other["chain"]) == (eight["prod"], eight["chain"])
        assert other["app"] != eight["app"]
    assert system_hashes(specs(concurrency=8, mode="eval"), pipelines=names)["prod"] != \
        eight["prod"]
    from pytest_ragbench.suite.loader import load_suite

    for name in ("c.jsonl", "q.jsonl"):
        (tmp_path / name).write_text("")

    def loaded(concurrency: int) -> str:
        path = tmp_path / f"s{concurrency}.yaml"
        path.write_text("name: s\ndataset: {corpus: c.jsonl, queries: q.jsonl}\n"
                        f"pipelines: {{prod: {{type: http, url: 'http://x/answer', "
                        f"concurrency: {concurrency}}}}}\nmetrics: [recall@10]\n")
        return SuiteKeys.of(load_suite(path, None), "s.yaml", "D", "1").systems["prod"]

    assert loaded(2) == loaded(8)
    # a retriever's parameter of that name is its own
    retriever = [ComponentSpec("r", "my_retriever", {"concurrency": 2})]
    assert system_hashes(retriever)["r"] != system_hashes(
        [ComponentSpec("r", "my_retriever", {"concurrency": 4})])["r"]


def test_a_hybrid_key_follows_the_retrievers_it_fuses_and_no_other():
    def specs(k1: float) -> list[ComponentSpec]:
        return [ComponentSpec("bm25", "bm25", {"k1": k1}), ComponentSpec("dense", "dense", {}),
                ComponentSpec("both", "hybrid", {"retrievers": ["bm25", "dense"]}),
                ComponentSpec("solo", "hybrid", {"retrievers": ["dense"]})]

    before, after = system_hashes(specs(1.2)), system_hashes(specs(0.9))
    assert before["bm25"] != after["bm25"] and before["both"] != after["both"]
    assert before["dense"] == after["dense"] and before["solo"] == after["solo"]


@pytest.mark.parametrize(("changes", "why"), [
    ({"version": "2"}, "pytest-ragbench version changed"),
    ({"settings": "S2"}, "suite 's' settings changed"),
    ({"dataset": "D2"}, "suite 's' dataset changed"),
    ({"systems": {"a": "A2", "p": "P"}}, "retriever 'a' parameters changed"),
    ({"annotations": "M2"}, "suite 's' dataset metadata changed (documents' metadata, "
                            "queries' type, difficulty, tags, metadata or whether they have "
                            "labels)"),
])
def test_a_changed_part_is_named(changes: dict, why: str):
    old = _keys().case_key("a", "q1", 0)
    new = _keys(**changes)
    assert new.case_key("a", "q1", 0)["key"] != old["key"]
    assert new.change("a", old) == why


def test_a_record_keyed_without_the_datasets_metadata_is_not_reused():
    old = _keys().case_key("a", "q1", 0)
    del old["annotations"]
    assert _keys().change("a", old) == ("recorded without the dataset's metadata in its case "
                                        "key")


@pytest.mark.parametrize("change", [
    lambda d: replace(d, corpus=(replace(d.corpus[0], metadata={"timestamp": "2026"}),
                                 *d.corpus[1:])),
    lambda d: replace(d, queries=(replace(d.queries[0], tags=("new",)), *d.queries[1:])),
    lambda d: replace(d, queries=(replace(d.queries[0], type="list"), *d.queries[1:])),
    lambda d: replace(d, queries=(replace(d.queries[0], difficulty="hard"), *d.queries[1:])),
    lambda d: replace(d, queries=(replace(d.queries[0], metadata={"x": 1}), *d.queries[1:])),
    # judged with no relevant document (label metrics score 0) or not judged (not scored)
    lambda d: replace(d, queries=(replace(d.queries[0], judged=True), *d.queries[1:])),
    # the same metadata on another document
    lambda d: replace(d, corpus=(replace(d.corpus[0], metadata={"y": 1}),
                                 replace(d.corpus[1], metadata={}))),
])
def test_the_datasets_metadata_is_hashed(change) -> None:
    dataset = Dataset("d", (Document("d1", "one"), Document("d2", "two", metadata={"y": 1})),
                      (Query("q1", "first"), Query("q2", "second")), "C", "H")
    assert annotations_hash(change(dataset)) != annotations_hash(dataset)
    assert annotations_hash(replace(dataset, content_hash="H2")) == annotations_hash(dataset)


def test_keys_differ_per_case_and_repetition_and_name_pipelines():
    k = _keys()
    assert len({k.case_key("a", "q1", 0)["key"], k.case_key("a", "q1", 1)["key"],
                k.case_key("a", "q2", 0)["key"], k.case_key("p", "q1", 0)["key"]}) == 4
    assert _keys(systems={"a": "A", "p": "P2"}).change("p", k.case_key("p", "q1", 0)) == \
        "pipeline 'p' parameters changed"
    assert k.change("a", None) == "recorded without a case key"


def _write_run(root: Path, run_id: str, records: list[dict], *, summary: dict | None = None,
               suites: tuple[str, ...] = ("s.yaml",)) -> Path:
    folder = root / run_id
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"suites": {s: {} for s in suites}}))
    (folder / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                        + '{"torn')
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _rec(case_id: str, status: str = "ok", keys: SuiteKeys | None = None) -> dict:
    rec = dict(make_record(suite="s.yaml", retriever="a", case_id=case_id, metrics={"m": 1.0}))
    rec["status"] = status
    rec["case_key"] = (keys or _keys()).case_key("a", case_id, 0)
    return rec


def test_an_earlier_run_reuses_finished_matching_records_only(tmp_path: Path):
    keys = _keys()
    folder = _write_run(tmp_path, "r1", [
        _rec("q1"), _rec("q2", "failed"), _rec("q3", "error"),
        _rec("q4", keys=_keys(dataset="old")), _rec("q5", "error"), _rec("q5")])
    run = EarlierRun.load(folder)
    assert run.run_id == "r1"
    reuse = {cid: run.reusable(_keys(suite_hash="now"), "a", cid, 0)
             for cid in ("q1", "q2", "q3", "q4", "q5", "q6")}
    assert reuse["q1"][0] is not None and reuse["q1"][0]["suite_hash"] == "now"
    assert reuse["q2"][0] is not None  # a failed case is finished: reused, still failed
    assert reuse["q3"] == (None, "errored")
    assert reuse["q4"] == (None, "suite 's' dataset changed")
    assert reuse["q5"][0] is not None  # the finished record wins over an error record
    assert reuse["q6"] == (None, None)
    assert keys.change("a", reuse["q1"][0]["case_key"]) == "case key changed"


def test_a_finished_record_is_reused_whichever_comes_last_and_no_unknown_status_is(
        tmp_path: Path):
    # an error record of a case written after its finished one must not make it run (and
    # be paid for) again; a record of a status this version does not know is not a result
    unknown = {**_rec("q3"), "status": None}
    run = EarlierRun.load(_write_run(tmp_path, "r1", [
        _rec("q1"), _rec("q1", "error"), _rec("q2", "skipped"), unknown]))
    (reused, why) = run.reusable(_keys(), "a", "q1", 0)
    assert why is None and reused is not None and reused["status"] == "ok"
    assert run.reusable(_keys(), "a", "q2", 0)[0] is None
    assert run.reusable(_keys(), "a", "q3", 0)[0] is None


def test_saving_run_files_reuses_a_record_only_when_it_holds_the_top_k(tmp_path: Path):
    def ranked(case_id: str, n: int, depth: int | None, system: str = "a") -> dict:
        rec = _rec(case_id)
        rec["retriever"], rec["case_key"] = system, _keys().case_key(system, case_id, 0)
        rec["retrieved"] = [[f"d{i}", 1.0 / (i + 1), None] for i in range(n)]
        rec["record_depth"] = depth
        return rec

    run = EarlierRun.load(_write_run(tmp_path, "r1", [
        ranked("deep", 10, 20), ranked("short", 3, 20), ranked("cut", 5, 5),
        ranked("older", 3, None), ranked("odd", 3, True),  # type: ignore[arg-type]
        ranked("cut", 2, 2, "p"), ranked("short", 6, 20, "p")]))
    saving = _keys(depth=10)
    assert run.reusable(saving, "a", "deep", 0)[0] is not None
    # a ranking shorter than the depth it was kept at is whole: its run file is the same
    assert run.reusable(saving, "a", "short", 0)[0] is not None
    assert run.reusable(saving, "a", "cut", 0) == (
        None, "recorded with 5 documents, the run files keep 10")
    # a record that does not say its depth may have been cut: it runs again
    assert run.reusable(saving, "a", "older", 0) == (
        None, "recorded with 3 documents, the run files keep 10")
    assert run.reusable(saving, "a", "odd", 0)[0] is None
    assert all(run.reusable(_keys(), "a", c, 0)[0] is not None for c in ("cut", "older"))
    # a pipeline's contexts make its run files the same way
    assert run.reusable(saving, "p", "cut", 0) == (
        None, "recorded with 2 documents, the run files keep 10")
    assert run.reusable(saving, "p", "short", 0)[0] is not None


def test_an_earlier_run_holds_the_records_of_the_runs_it_resumed(tmp_path: Path):
    old = _write_run(tmp_path, "r1", [_rec("q1"), _rec("q2", "failed"), _rec("q3"),
                                      _rec("q4", keys=_keys(dataset="old"))])
    new = _write_run(tmp_path, "r2", [_rec("q2", "error"), _rec("q3", "error"), _rec("q4")])
    for folder, source in ((new, old), (old, new)):  # a loop ends too
        doc = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**doc, "resumed_from": str(source)}))
    run = EarlierRun.load(new)
    assert run.run_id == "r2"
    status = {cid: (rec["status"], rec["case_key"]["dataset"])
              for (_, _, cid, _), rec in run.records.items()}
    # finished records win over errors, whichever run; a run's own finished one over older
    assert status == {"q1": ("ok", "D"), "q2": ("failed", "D"), "q3": ("ok", "D"),
                      "q4": ("ok", "D")}
    (old / "cases.jsonl").unlink()  # an older run of the chain that is gone is left out
    assert {cid for _, _, cid, _ in EarlierRun.load(new).records} == {"q2", "q3", "q4"}


def test_the_chain_of_resumed_runs_follows_its_runs_folder_when_moved(tmp_path: Path):
    """run.json names the run it resumed by its absolute folder: once the runs folder was
    moved (a CI artifact unpacked in another job's workspace), a resume of a resumed run
    stopped before its replays lost the records it had not replayed yet."""
    old = _write_run(tmp_path / "job1", "r1", [_rec("q1")])
    new = _write_run(tmp_path / "job1", "r2", [_rec("q2")])
    doc = json.loads((new / "run.json").read_text())
    (new / "run.json").write_text(json.dumps({**doc, "resumed_from": str(old)}))
    moved = (tmp_path / "job1").rename(tmp_path / "job2")
    assert {cid for _, _, cid, _ in EarlierRun.load(moved / "r2").records} == {"q1", "q2"}


@pytest.mark.parametrize(("older_clock", "follows"), [(1.0, True), (2.0, False), (None, True)])
def test_the_chain_of_resumed_runs_stops_at_another_clock(tmp_path: Path, older_clock,
                                                          follows: bool):
    """A resumed run that kept no record of the run it resumed took a clock of its own: the
    records before it were scored against another, and a resume of it must not mix them."""
    old = _write_run(tmp_path, "r1", [_rec("q1")])
    new = _write_run(tmp_path, "r2", [_rec("q2")])
    if older_clock is not None:
        (old / "run.json").write_text(json.dumps({"suites": {"s.yaml": {}},
                                                  "clock": older_clock}))
    (new / "run.json").write_text(json.dumps({"suites": {"s.yaml": {}}, "clock": 1.0,
                                              "resumed_from": str(old)}))
    run = EarlierRun.load(new)
    assert run.clock == 1.0
    assert {cid for _, _, cid, _ in run.records} == ({"q1", "q2"} if follows else {"q2"})


def test_the_datasets_metadata_hash_is_the_same_in_every_process() -> None:
    """A set (YAML's !!set in an inline dataset) has no repr order across hash seeds."""
    import os
    import subprocess
    import sys

    script = (
        "from pytest_ragbench.datasets import Dataset, Document, Query\n"
        "from pytest_ragbench.results.resume import annotations_hash\n"
        "d = Dataset('d', (Document('d1', 't', metadata={'labels': set('abcdefgh'),"
        " 'deep': [{'s': frozenset({'x', 'y', 'z'})}]}),"
        " Document('d2', 't', metadata={1: set('abcdefgh'), 'a': 2})),"  # keys of two types
        " (Query('q1', 't'),), 'C', 'H')\n"
        "print(annotations_hash(d))\n")
    hashes = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}
                             ).stdout for seed in (1, 2, 3)}
    assert len(hashes) == 1


def test_the_default_run_is_the_newest_of_the_suites_and_only_when_unfinished(tmp_path: Path):
    partial = {"run": {"partial": True}}
    whole = {"run": {"partial": False}}
    _write_run(tmp_path, "20260101T000000Z-aaaaaa", [_rec("q1")], summary=partial)
    _write_run(tmp_path, "20260102T000000Z-bbbbbb", [_rec("q1")])  # killed: no summary
    _write_run(tmp_path, "20260103T000000Z-cccccc", [_rec("q1")], summary=whole,
               suites=("other.yaml",))
    folders = run_folders(tmp_path)
    assert [f.name[:8] for f in folders] == ["20260103", "20260102", "20260101"]
    picked = pick_run(folders, ["s.yaml"], unfinished_only=True)
    assert picked is not None and picked.run_id == "20260102T000000Z-bbbbbb"
    _write_run(tmp_path, "20260104T000000Z-dddddd", [_rec("q1")], summary=whole)
    assert pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True) is None
    picked = pick_run(run_folders(tmp_path), ["s.yaml"])  # --lf: the newest, finished or not
    assert picked is not None and picked.run_id == "20260104T000000Z-dddddd"
    assert pick_run(run_folders(tmp_path), ["nope.yaml"]) is None


def test_the_default_run_is_taken_per_suite_the_newest_of_each(tmp_path: Path):
    """A run of s and t stopped; s resumed alone since (a newer run of s, finished): the bare
    option of both took that newest run for both suites and resumed nothing of t."""
    def rec(suite: str, case_id: str) -> dict:
        return {**_rec(case_id), "suite": suite}

    partial, whole = {"run": {"partial": True}}, {"run": {"partial": False}}
    _write_run(tmp_path, "20260101T000000Z-aaaaaa", [rec("s.yaml", "q1"), rec("t.yaml", "q1")],
               summary=partial, suites=("s.yaml", "t.yaml"))
    _write_run(tmp_path, "20260102T000000Z-bbbbbb", [rec("s.yaml", "q1"), rec("s.yaml", "q2")],
               summary=whole)
    picked = pick_run(run_folders(tmp_path), ["s.yaml", "t.yaml"], unfinished_only=True)
    # t's records only: s's newest run finished, it is not resumed from an older one
    assert picked is not None and picked.run_id == "20260101T000000Z-aaaaaa"
    assert list(picked.records) == [("t.yaml", "a", "q1", 0)]
    # --lf: the newest run of any of them, finished or not, whole
    picked = pick_run(run_folders(tmp_path), ["s.yaml", "t.yaml"])
    assert picked is not None and picked.run_id == "20260102T000000Z-bbbbbb"
    # a newer unfinished run of s: one run is resumed (one clock, one resumed_from), the
    # newest; the other is named, with its suites
    _write_run(tmp_path, "20260103T000000Z-cccccc", [rec("s.yaml", "q1")], summary=partial)
    passed_over: list[tuple[Path, list[str]]] = []
    picked = pick_run(run_folders(tmp_path), ["s.yaml", "t.yaml"], unfinished_only=True,
                      passed_over=passed_over)
    assert picked is not None and picked.run_id == "20260103T000000Z-cccccc"
    assert list(picked.records) == [("s.yaml", "a", "q1", 0)]
    assert passed_over == [(tmp_path / "20260101T000000Z-aaaaaa", ["t.yaml"])]
    assert resume_line({"from": "C", "reused": 1, "run": 3,
                        "passed_over": [{"run": "A", "suites": ["t.yaml"]}]}) == (
        "resumed from C: 1 case reused, 3 run; not resumed: A, the newest run of t.yaml, "
        "unfinished too (a run resumes one run: resume those suites alone with "
        "--ragbench-resume=A)")


def test_the_default_run_is_also_a_finished_one_that_a_crash_left_cases_of(tmp_path: Path):
    """A crashed xdist worker leaves an error record of stage "crash" and the run finishes;
    without workers the crash kills the run. The bare option resumed only the latter."""
    whole = {"run": {"partial": False}}

    def crash(case_id: str, stage: str = "crash") -> dict:
        rec = _rec(case_id, "error")
        rec["error"] = {"stage": stage, "type": "Error", "message": "worker 'gw1' crashed"}
        return rec

    _write_run(tmp_path, "20260101T000000Z-aaaaaa", [_rec("q1"), crash("q2")], summary=whole)
    assert crashed_cases(tmp_path / "20260101T000000Z-aaaaaa") == 1
    picked = pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True)
    assert picked is not None and picked.run_id == "20260101T000000Z-aaaaaa"
    # a case that errored in its own right finished: it is rerun only when the run is named
    _write_run(tmp_path, "20260102T000000Z-bbbbbb", [_rec("q1"), crash("q2", "retrieve")],
               summary=whole)
    assert pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True) is None
    # a crashed case the run finished later (put back to run again) is no crash left
    _write_run(tmp_path, "20260103T000000Z-cccccc", [crash("q2"), _rec("q1"), _rec("q2")],
               summary=whole)
    assert crashed_cases(tmp_path / "20260103T000000Z-cccccc") == 0
    finished: list[Path] = []
    assert pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True,
                    finished=finished) is None
    # passed over, it is named, with the errored cases a resume of it would run again
    assert finished == [tmp_path / "20260103T000000Z-cccccc"]
    assert errored_cases(tmp_path / "20260103T000000Z-cccccc") == 0
    assert errored_cases(tmp_path / "20260102T000000Z-bbbbbb") == 1
    _write_run(tmp_path, "20260104T000000Z-dddddd",
               [_rec("q1", "error"), crash("q2", "retrieve"), _rec("q3", "failed"),
                crash("q4"), _rec("q4")], summary=whole)
    assert errored_cases(tmp_path / "20260104T000000Z-dddddd") == 2


def test_a_copied_latest_folder_is_no_run_of_its_own(tmp_path: Path):
    """A tool that follows links (a CI artifact upload, cp -rL) turns the ``latest`` link
    into a folder: it sorted after every run id, and a resume took that stale copy for the
    newest run."""
    from pytest_ragbench.results import runfolder

    _write_run(tmp_path, "20260101T000000Z-aaaaaa", [_rec("q1")], summary={"run": {}})
    _write_run(tmp_path, "latest", [_rec("q1")], summary={"run": {"partial": True}})
    assert [f.name for f in run_folders(tmp_path)] == ["20260101T000000Z-aaaaaa"]
    assert list(runfolder.run_folders(tmp_path)) == ["20260101T000000Z-aaaaaa"]
    assert pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True) is None


def test_a_copy_kept_under_a_name_of_its_own_is_never_the_newest_run(tmp_path: Path):
    """A run copied to a folder of its own name (release-1.0, the CI report kept) sorted
    after every run id: the default resume took the finished copy for the newest run and
    resumed nothing ("every case ran") while the run stopped by -x waited. Named on
    purpose, it is resumed from as any folder is."""
    _write_run(tmp_path, "release-1.0", [_rec("q1")], summary={"run": {"partial": False}})
    _write_run(tmp_path, "20260101T000000Z-aaaaaa", [_rec("q1")],
               summary={"run": {"partial": True}})
    assert [f.name for f in run_folders(tmp_path)] == ["20260101T000000Z-aaaaaa"]
    picked = pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True)
    assert picked is not None and picked.run_id == "20260101T000000Z-aaaaaa"
    assert resolve_run_folder("release-1.0", tmp_path, tmp_path) == \
        (tmp_path / "release-1.0").resolve()


def test_a_run_reference_is_an_id_or_a_folder(tmp_path: Path):
    root = tmp_path / "runs"
    folder = _write_run(root, "20260101T000000Z-aaaaaa", [_rec("q1")])
    assert resolve_run_folder("20260101T000000Z-aaaaaa", root, tmp_path) == folder.resolve()
    assert resolve_run_folder("runs/20260101T000000Z-aaaaaa", root, tmp_path) == \
        folder.resolve()
    with pytest.raises(ResumeError, match=r"cannot resume from 'nope': .*no such folder"):
        resolve_run_folder("nope", root, tmp_path)
    (tmp_path / "suite.yaml").write_text("x")
    with pytest.raises(ResumeError, match=r"a file, not a run folder .*--ragbench-resume=RUN"):
        resolve_run_folder("suite.yaml", root, tmp_path)
    with pytest.raises(ResumeError, match=r"holds no cases\.jsonl"):
        resolve_run_folder(".", root, tmp_path)


def test_the_resume_line():
    assert resume_line({"from": "R", "reused": 812, "run": 188,
                        "not_reused": {"retriever 'bm25' parameters changed": 12}}) == (
        "resumed from R: 812 cases reused, 188 run (12 not reused: retriever 'bm25' "
        "parameters changed)")
    assert resume_line({"from": "R", "reused": 1, "run": 4,
                        "not_reused": {"errored": 1, "suite 's' dataset changed": 3}}) == (
        "resumed from R: 1 case reused, 4 run (4 not reused: 3 suite 's' dataset changed; "
        "1 errored)")
    assert resume_line({"from": None}).startswith("ragbench: nothing to resume")
    # a run stopped at 8 of 40 cases (or narrowed by -k) said "every case ran"
    assert resume_line({"from": None, "reused": 0, "run": 8}) == (
        "ragbench: nothing to resume (no run of these suites, or the newest one finished): "
        "8 cases ran, none reused")
    # the newest run, passed over as finished, is named with what a resume of it would run
    newest = {"from": None, "reused": 0, "run": 10, "newest": {"run": "R", "errors": 0}}
    assert resume_line(newest) == ("ragbench: nothing to resume (the newest run of these "
                                   "suites, R, finished): 10 cases ran, none reused")
    newest["newest"] = {"run": "R", "errors": 3}
    assert resume_line(newest) == (
        "ragbench: nothing to resume (the newest run of these suites, R, finished; "
        "--ragbench-resume=R runs its 3 errored cases again): 10 cases ran, none reused")


def test_the_default_run_is_never_one_still_going(tmp_path: Path):
    """A resume started beside a running run of the same suites took it for a stopped one:
    93 cases "reused" while it still ran, then both stored as complete runs."""
    import socket
    import subprocess
    import sys

    folder = _write_run(tmp_path, "20260102T000000Z-bbbbbb", [_rec("q1")])  # no summary yet
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        doc = json.loads((folder / "run.json").read_text())
        from pytest_ragbench.results.runfolder import _process_start

        doc["process"] = {"pid": child.pid, "host": socket.gethostname(),
                          "start": _process_start(child.pid)}
        (folder / "run.json").write_text(json.dumps(doc))
        assert pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True) is None
        # a pid given to another process since (the run's was killed) is no running run
        if doc["process"]["start"] is not None:
            doc["process"]["start"] -= 1
            (folder / "run.json").write_text(json.dumps(doc))
            assert pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True)
            doc["process"]["start"] += 1
            (folder / "run.json").write_text(json.dumps(doc))
    finally:
        child.kill()
        child.wait()
    picked = pick_run(run_folders(tmp_path), ["s.yaml"], unfinished_only=True)
    assert picked is not None and picked.run_id == "20260102T000000Z-bbbbbb"
