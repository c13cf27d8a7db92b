"""Plugin behaviour end to end: collection, reports, gates, outputs, baselines, xdist parity."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import xml.etree.ElementTree as ET

import pytest
from conftest import BASE_INI, QUERIES, latest_run, write_jsonl
from test_verdict_plugin import _history_rows, _junit_cases, _outputs
from test_xfail_outcome import KNOWN, check_known_failures

from pytest_ragbench.report.rerender import rerender

SUITE = "--ragbench=suite.yaml"


def summary_section(lines: list[str]) -> list[str]:
    """The terminal summary lines that must not depend on timing or worker count."""
    start = next(i for i, line in enumerate(lines) if "ragbench summary" in line)
    out = []
    for line in lines[start + 1:]:
        if line.startswith(("results:", "=")):
            break
        out.append(line)
    return out


def test_collect_only_lists_each_retrievers_queries_in_dataset_order_and_writes_no_run(
        pytester, mini_suite):
    """One item per query and retriever, in the suite's retriever order then the dataset's
    query order, serial and at -n 2 (the two --collect-only runs share the suite and the run
    before them). --collect-only runs no case: it made a run folder holding only run.json and
    pointed `latest` at it, so `ragbench report latest` then refused it ("not a ragbench
    run")."""
    mini_suite("""
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          b: {type: "overlap_retriever:Overlap"}
          a: {type: "overlap_retriever:Overlap"}
        metrics: [ndcg@10]
    """)
    assert pytester.runpytest(SUITE).ret == 0
    run = latest_run(pytester.path)
    for workers in ([], ["-n", "2"]):
        result = pytester.runpytest(SUITE, "--collect-only", "-q", *workers)
        ids = [line for line in result.outlines if "::" in line]
        assert ids == [f"suite.yaml::{r}::q{i}" for r in ("b", "a") for i in range(1, 6)]
        result.stdout.fnmatch_lines(["10 tests collected*"])
        assert latest_run(pytester.path) == run
        assert [p.name for p in (pytester.path / ".ragbench" / "runs").iterdir()
                if p.name != "latest"] == [run.name]


def test_a_run_stopped_by_a_collection_error_writes_no_run(pytester, mini_suite):
    """A suite beside a test file that does not import stops at collection ('Interrupted: 1
    error during collection'), no case run: it made a run folder holding only run.json and
    pointed `latest` at it, so `ragbench report latest` reported an empty interrupted run in
    place of the last one. With --continue-on-collection-errors the run goes on, and is one."""
    mini_suite()
    assert pytester.runpytest(SUITE).ret == 0
    run = latest_run(pytester.path)
    pytester.makepyfile(test_broken="import no_such_module_here\n")
    result = pytester.runpytest(SUITE, "test_broken.py")
    result.stdout.fnmatch_lines(["*Interrupted: 1 error during collection*"])
    assert latest_run(pytester.path) == run
    assert [p.name for p in (pytester.path / ".ragbench" / "runs").iterdir()
            if p.name != "latest"] == [run.name]
    result = pytester.runpytest(SUITE, "test_broken.py", "--continue-on-collection-errors")
    result.assert_outcomes(passed=5, errors=1)
    assert latest_run(pytester.path) != run
    assert (latest_run(pytester.path) / "summary.json").is_file()


@pytest.mark.parametrize("option", ["--setup-plan", "--setup-only"])
def test_setup_only_and_plan_run_no_case(pytester, mini_suite, option):
    # A case runs in its item's setup: these options ran every case (each request paid),
    # then left out the call that raises a missed threshold, and the run was stored as a
    # whole, passed run (the history's and `last`'s) while its table counted the failure.
    path = mini_suite(fail_on="grind", drop="d3")
    path.write_text(path.read_text() + "thresholds:\n  recall@10: 0.99\n")
    result = pytester.runpytest(SUITE, option)
    assert result.ret == 0
    assert "backend unavailable" not in result.stdout.str()
    assert "ragbench summary" not in result.stdout.str()
    assert not (pytester.path / ".ragbench").exists()


def test_k_selects_queries_and_retrievers(pytester, mini_suite):
    mini_suite()
    result = pytester.runpytest(SUITE, "-k", "q2 or q4", "-q")
    result.assert_outcomes(passed=2)
    result = pytester.runpytest(SUITE, "-k", "overlap and not q1", "-q")
    result.assert_outcomes(passed=4)


def test_query_metadata_become_registered_markers(pytester, mini_suite):
    mini_suite()
    result = pytester.runpytest(SUITE, "--strict-markers", "-m",
                                "difficulty_hard and not tag_numeric", "-q")
    result.assert_outcomes(passed=1)  # q4: hard, not numeric
    result = pytester.runpytest(SUITE, "--strict-markers", "-m", "type_numeric", "-q")
    result.assert_outcomes(passed=2)
    result = pytester.runpytest(SUITE, "--markers")
    result.stdout.fnmatch_lines(["*ragbench: a case collected from a ragbench suite*"])
    # `--markers` prints before collection: the query markers of the given suites are there.
    result.stdout.fnmatch_lines(["@pytest.mark.difficulty_hard: ragbench query attribute"])
    result.stdout.fnmatch_lines(["@pytest.mark.tag_numeric: ragbench query attribute"])
    assert result.ret == 0
    # a suite found by collection (no --ragbench) shows its markers too; skipped folders
    # are not searched
    discovered = pytester.mkdir("suites")
    (discovered / "mini.ragbench.yaml").write_text(
        (pytester.path / "suite.yaml").read_text().replace("corpus.jsonl", "../corpus.jsonl")
        .replace("queries.jsonl", "../queries.jsonl"))
    (pytester.path / "suite.yaml").unlink()
    skipped = pytester.mkdir("build")
    (skipped / "broken.ragbench.yaml").write_text("not: [a suite")
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.difficulty_hard: ragbench query attribute"])
    assert result.ret == 0


def _report_section(lines: list[str], nodeid_part: str) -> pytest.LineMatcher:
    """The lines of the failure report of the item whose header names ``nodeid_part``."""
    start = next(n for n, line in enumerate(lines)
                 if line.startswith("_") and nodeid_part in line)
    end = next((n for n in range(start + 1, len(lines))
                if lines[n].startswith(("_", "="))), len(lines))
    return pytest.LineMatcher(lines[start:end])


def test_a_failed_thresholds_report_shows_query_hits_missed_margin_and_grades(pytester,
                                                                              mini_suite):
    """Two items of one run, each failing a threshold: q4 misses d4 (recall@10 below 0.5),
    q1 cannot reach ndcg@10 > 1 and lists the grades of what it retrieved."""
    path = mini_suite(drop="d4")
    path.write_text(path.read_text() + "thresholds:\n  recall@10: 0.5\n  ndcg@10: '> 1'\n")
    result = pytester.runpytest(SUITE, "-k", "q1 or q4")
    result.assert_outcomes(failed=2)
    _report_section(result.outlines, "overlap::q4").fnmatch_lines([
        "*query q4 (overlap): 'remove scale with citric acid'",
        "threshold failed: recall@10 = 0.0000, expected >= 0.5 (missed by 0.5000)",
        "top * retrieved (rank, doc id, score, grade):",
        "relevant but not retrieved: d4 (grade 1)",
    ])
    _report_section(result.outlines, "overlap::q1").fnmatch_lines([
        "*1. d1  *  grade 2", "*d5  *  grade 1"])


def test_retriever_error_is_an_error_item_counted_in_summary(pytester, mini_suite):
    path = mini_suite(fail_on="milk")
    path.write_text(path.read_text() + "gates:\n  error_rate: '<= 0.1'\n")
    result = pytester.runpytest("--ragbench-summary=full", SUITE)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines([
        "*error [[]retrieve[]]: retriever 'overlap' raised RuntimeError: backend unavailable",
        "  overlap: 5 cases, 1 error, 0 below per-query thresholds",
        "    ndcg@10 * 4 * 0",
        "*FAIL mini/overlap: error_rate 0.2000 <= 0.1*",
        "ragbench: gate failed: mini/overlap error_rate = 0.2000, expected <= 0.1*",
    ])
    assert "Traceback" not in result.stdout.str()


def _suite_with_retriever(pytester, mini_suite, name: str, methods: str) -> None:
    """A module ``name`` with a retriever class (``index`` plus ``methods``, indented as a
    class body) and a k=3 suite using it under the same name."""
    pytester.makepyfile(**{name: f"""
        class Retriever:
            def index(self, corpus):
                pass
{textwrap.indent(textwrap.dedent(methods), " " * 12)}
    """})
    mini_suite(f"""
        dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
        retrievers: {{{name}: {{type: "{name}:Retriever"}}}}
        metrics: [ndcg@3]
        k: 3
    """)


BAD_OUTPUTS = [
    ("return [('nope', 1.0)]", "returned unknown document id 'nope' at rank 1"),
    ("return [('d1', 1.0), ('d1', 0.5)]", "returned document 'd1' twice"),
    ("return [('d1', float('nan'))]", "returned a non-finite score (nan) for 'd1'"),
    ("return [('d1', 1.0)] * 0 + [(f'd{i}', 1.0) for i in range(1, 7)]",
     "returned 6 results, more than k=3"),
    ("return 'd1'", "returned str, expected a list of (doc_id, score) pairs"),
    ("return [('d1', 1.0), ('d2', 0.5, 'x')]",
     "result 1 is ('d2', 0.5, 'x'), expected a (doc_id, score) pair"),
    ("return [('d2', 1.0), ('d1', float('-inf'))]",
     "returned a non-finite score (-inf) for 'd1'"),
    ("from pytest_ragbench.retrievers.hits import RankedHits; "
     "return RankedHits(['d2', 'd2'], [1.0, 0.5])", "returned document 'd2' twice"),
]


def test_bad_retriever_output_is_a_clear_per_item_error(pytester, mini_suite):
    # One run, one retriever per kind of bad output, each erring on q1 alone.
    pytester.makepyfile(bad="\n".join(f"""
class Bad{i}:
    def index(self, corpus):
        pass

    def retrieve(self, query, k):
        {body}
""" for i, (body, _) in enumerate(BAD_OUTPUTS)))
    retrievers = "".join(f"\n  bad{i}: {{type: \"bad:Bad{i}\"}}" for i in range(len(BAD_OUTPUTS)))
    mini_suite("dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
               f"retrievers:{retrievers}\nmetrics: [ndcg@3]\nk: 3\n")
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "-k", "q1")
    result.assert_outcomes(errors=len(BAD_OUTPUTS))
    lines = result.outlines
    for i, (_, message) in enumerate(BAD_OUTPUTS):
        # the item of bad{i} errs with its message in its own report section ...
        start = next(n for n, line in enumerate(lines)
                     if line.startswith("_") and f"bad{i}::q1" in line)
        end = next((n for n in range(start + 1, len(lines))
                    if lines[n].startswith(("_", "="))), len(lines))
        pytest.LineMatcher(lines[start:end]).fnmatch_lines([f"*{message}*"])
        # ... and its summary counts one error
        result.stdout.fnmatch_lines([f"  bad{i}: 1 case, 1 error*"])


def test_hits_of_other_shapes_are_accepted_and_normalised_and_async_retrievers_awaited(
        pytester, mini_suite):
    """Two suites of one passing run, each with a retriever of its own (each one's cases
    pass or fail alone): hits of other shapes, and an async retriever."""
    # Lists for pairs, int and numpy scores, and scores whose sum overflows are all valid.
    _suite_with_retriever(pytester, mini_suite, "odd", """
            def retrieve(self, query, k):
                import numpy as np
                if query.startswith("milk"):
                    return [("d2", 1e308), ("d1", 1e308)]
                return [["d1", 2], ("d2", np.float32(1.5))]
    """)
    pytester.makepyfile(aret="""
        class Async:
            async def index(self, corpus):
                self.ids = [d.id for d in corpus]
            async def retrieve(self, query, k):
                return [(self.ids[0], 1.0)]
    """)
    mini_suite("""
        name: async
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers: {a: {type: "aret:Async"}}
        metrics: [recall@10]
    """, name="async.yaml")
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "--ragbench=async.yaml",
                                "--ragbench-out", "out")
    result.assert_outcomes(passed=10)
    all_records = [json.loads(line) for line in
                   (pytester.path / "out" / "latest" / "cases.jsonl").read_text().splitlines()]
    records = {r["case_id"]: r for r in all_records if r["retriever"] == "odd"}
    assert all(r["status"] == "ok" for r in records.values())
    plain = [r for r in records.values() if not r["query"].startswith("milk")]
    assert plain and all(r["retrieved"][0][:2] == ["d1", 2.0] for r in plain)
    assert all(r["retrieved"][1][:2] == ["d2", 1.5] for r in plain)
    # the async retriever's index and retrieve were awaited: d1 for every query
    awaited = {r["case_id"]: r["metrics"]["recall@10"] for r in all_records
               if r["retriever"] == "a"}
    assert awaited == {"q1": 0.5, "q2": 0.0, "q3": 0.0, "q4": 0.0, "q5": 0.0}
    result.stdout.fnmatch_lines(["suite async *", "    recall@10 * 0.1000 *"])


def check_snippets(pytester) -> None:
    page = (latest_run(pytester.path) / "report.html").read_text()
    # Title and text of d1 (retrieved for q1), read from the corpus: an xdist controller ran
    # no case, so it reads the dataset itself.
    assert "Espresso grind. Espresso needs a fine grind and 9 bar." in page
    assert "Steam milk to about 60 degrees." in page


def test_a_default_run_runs_the_suite_alone_reports_writes_and_passes_everywhere(pytester,
                                                                                 mini_suite):
    # One run of the plain mini suite checks what every output of a passing run holds; the
    # facts were checked by eight runs of the same suite before.
    mini_suite()
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "--junitxml=out.xml",
                                "--ragbench-html", "out/report.html")
    assert result.ret == 0
    # only the suite when no path is given (test_ragbench_alongside_explicit_test_paths)
    result.assert_outcomes(passed=5)
    # the terminal summary: means, CIs, counts, and the verdict
    result.stdout.fnmatch_lines([
        "*ragbench summary*",
        "suite mini [[]suite.yaml[]] dataset *",
        "  overlap: 5 cases, 0 errors, 0 below per-query thresholds",
        "    metric * mean * 95% CI * n * nan",
        "    ndcg@10 * [[]*, *[]] * 5 * 0",
    ])
    result.stdout.fnmatch_lines(["ragbench: passed"])

    # the run folder: records, summary with its metadata, CSV, summary.md
    run = latest_run(pytester.path)
    assert run.parent.name == "runs"
    lines = (run / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 5
    rec = json.loads(lines[0])
    assert rec["schema"] == 1 and rec["retriever"] == "overlap"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema_version"] == 1
    meta = summary["run"]
    assert meta["id"] == run.name
    for key in ("started", "finished", "command", "versions", "git_commit", "partial"):
        assert key in meta
    assert meta["partial"] is False
    assert summary["suites"][0]["suite_hash"] and summary["suites"][0]["dataset_hash"]
    csv_rows = (run / "cases.csv").read_text().splitlines()
    assert csv_rows[0].startswith("suite,retriever,case_id,run,status")
    assert len(csv_rows) == 6
    assert (run / "summary.md").read_text().startswith("## ragbench: passed")

    # one verdict everywhere: summary.json, summary.md, the report, the history
    summary, md, html = _outputs(pytester)
    assert summary["passed"] is True and summary["verdict"]["reasons"] == []
    assert summary["run"]["n_cases"] == summary["run"]["n_cases_total"] == 5
    assert md.startswith("## ragbench: passed\n")
    assert 'class="rb-verdict">PASSED</span>' in html
    assert _history_rows(pytester)[-1].endswith("passed")

    # the HTML report: in the run folder and at --ragbench-html, with the drill-downs'
    # snippets of the shown documents
    page = (run / "report.html").read_text()
    assert "<svg" in page and "q1" in page
    assert (pytester.path / "out" / "report.html").read_text() == page
    result.stdout.fnmatch_lines(["results: *", "report: *report.html", "report: *out*report.html"])
    check_snippets(pytester)

    # JUnit XML carries each item's metrics
    xml = (pytester.path / "out.xml").read_text()
    assert re.search(r'<property name="ragbench_record.ndcg@10" value="[0-9.]+"', xml)

    # each run gets its own folder, and latest points to the newest of its root
    pytester.runpytest(SUITE, "--ragbench-out", "runs2")
    assert latest_run(pytester.path) == run  # --ragbench-out used another root
    second = (pytester.path / "runs2" / "latest").resolve()
    assert second != run and (second / "summary.json").is_file()

    # a re-rendered report keeps the snippets while the data is unchanged
    snippet = "Espresso grind. Espresso needs a fine grind and 9 bar."
    (run / "report.html").unlink()
    rerender(run)
    assert snippet in (run / "report.html").read_text()
    # Another corpus now: the run's documents cannot be told from the file any more.
    corpus = pytester.path / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("9 bar", "nine bar"))
    rerender(run)
    page = (run / "report.html").read_text()
    assert snippet not in page and "nine bar" not in page


def test_summary_identical_with_and_without_xdist(pytester, mini_suite):
    # The suite lists known failures (q4 misses its threshold, q1 does not), so the one pair
    # of runs also shows that they are recorded and reported alike with and without xdist.
    path = mini_suite(drop="d4")
    path.write_text(path.read_text() + KNOWN)
    serial = pytester.runpytest("--ragbench-summary=full", SUITE, "-p", "no:randomly", "-rx")
    check_known_failures(serial, latest_run(pytester.path), xdist=False)
    # the xfail key marks known failures, with their reason
    serial.stdout.fnmatch_lines(["XFAIL suite.yaml::overlap::q4*known miss*"])
    serial_json = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    parallel = pytester.runpytest("--ragbench-summary=full", SUITE, "-n", "2", "-rx")
    check_known_failures(parallel, latest_run(pytester.path), xdist=True)
    parallel_json = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    assert summary_section(serial.outlines) == summary_section(parallel.outlines)
    assert serial_json["suites"] == parallel_json["suites"]
    assert serial_json["run"]["workers"] in (None, 0) and parallel_json["run"]["workers"] == 2
    # the report's drill-downs of the -n 2 run show the shown documents' snippets
    assert parallel.ret == 0
    check_snippets(pytester)


def test_unjudged_queries_are_nan_even_in_junit_and_queries_without_relevant_documents(
        pytester, mini_suite):
    # two suites in one run, one for each kind of query
    mini_suite("""
        dataset:
          corpus: corpus.jsonl
          items:
            - {_id: a, text: espresso grind, relevant: {d1: 1}}
            - {_id: b, text: cold brew}
        retrievers: {o: {type: "overlap_retriever:Overlap"}}
        metrics: [recall@10]
    """, name="unjudged.yaml")
    mini_suite("""
        dataset:
          corpus: corpus.jsonl
          items:
            - {_id: a, text: espresso grind, relevant: {d1: 1}}
            - {_id: b, text: cold brew, relevant: {d2: 0}}
        retrievers: {o: {type: "overlap_retriever:Overlap"}}
        metrics: [recall@10]
    """, name="norelevant.yaml")
    result = pytester.runpytest("--ragbench-summary=full", "--ragbench=unjudged.yaml",
                                "--ragbench=norelevant.yaml", "--junitxml=out.xml")
    result.assert_outcomes(passed=4)
    # An unjudged query has no recall: junit said value="None" beside the gates' "nan".
    xml = (pytester.path / "out.xml").read_text()
    assert 'value="None"' not in xml
    assert '<property name="ragbench_record.recall@10" value="nan"' in xml
    lines = result.outlines
    unjudged = next(i for i, line in enumerate(lines) if "[unjudged.yaml]" in line)
    norelevant = next(i for i, line in enumerate(lines) if "[norelevant.yaml]" in line)
    sections = {"unjudged": lines[unjudged:norelevant] if unjudged < norelevant
                else lines[unjudged:], "norelevant": lines[norelevant:unjudged]
                if norelevant < unjudged else lines[norelevant:]}
    # unjudged queries are nan and counted
    pytest.LineMatcher(sections["unjudged"]).fnmatch_lines(["    recall@10 * 1.0000 * 1 * 1"])
    # queries without relevant documents are reported
    pytest.LineMatcher(sections["norelevant"]).fnmatch_lines([
        "    1 query has no relevant document in the labels (scored 0, as trec_eval does)",
        "    recall@10 * 0.5000 * 2 * 0",
    ])


def test_ini_option_and_suite_file_pattern_collect_suites(pytester, mini_suite):
    mini_suite(name="mine.ragbench.yaml")
    pytester.makeini(BASE_INI + "testpaths = .\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=5)
    (pytester.path / "mine.ragbench.yaml").rename(pytester.path / "other.yaml")
    pytester.makeini(BASE_INI + "ragbench_suites = other.yaml\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=5)
    # the ini's suites are collected beside its testpaths, not instead of them: a bare
    # pytest ran the benchmark alone and the project's unit tests not at all, without a word
    pytester.makepyfile(**{"tests/test_unit": "def test_unit():\n    assert True\n"})
    pytester.makeini(BASE_INI + "ragbench_suites = other.yaml\ntestpaths = tests\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["ragbench: passed"])
    assert pytester.runpytest("-q", "--ragbench=other.yaml").parseoutcomes() == {"passed": 5}


def test_a_suite_found_by_collection_starts_the_controller_session(pytester, mini_suite,
                                                                   monkeypatch):
    # No --ragbench: the controller learns of the cases from the items (serial) or from the
    # workers' node ids (xdist), and starts its session then, before the first item.
    # Under xdist the controller collects nothing: it takes the spec from the suite file when
    # the workers report their collection, before any case, and aggregates with it at the end.
    # Nor does it read any dataset: the workers send the texts of the documents the report
    # shows (on a 1M-document corpus reading it again took 13 s after the last item).
    import pytest_ragbench.datasets as datasets_module

    loads: list[object] = []
    real_load = datasets_module.load_dataset

    def counting_load(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(datasets_module, "load_dataset", counting_load)
    path = mini_suite(name="mine.ragbench.yaml")
    path.write_text(path.read_text() + "gates:\n  ndcg@10: '>= 0.5'\n")
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    for args in ([], ["-n", "2"]):
        loads.clear()
        result = pytester.runpytest("mine.ragbench.yaml", "test_plain.py", *args)
        result.assert_outcomes(passed=6)
        result.stdout.fnmatch_lines(["*ragbench summary*", "ragbench: passed"])
        summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
        assert summary["suites"][0]["retrievers"][0]["n_cases"] == 5
    assert loads == []  # the -n 2 run's controller (this process) loaded no dataset
    run = latest_run(pytester.path)
    spec = json.loads((run / "run.json").read_text(encoding="utf-8"))["suites"][
        "mine.ragbench.yaml"]
    assert (spec["name"], spec["gates"], spec["retrievers"]) == ("mini", ["ndcg@10 >= 0.5"],
                                                                 ["overlap"])
    assert summary["suites"][0]["gate_texts"] == spec["gates"]
    assert [g["text"] for g in summary["gates"]] == ["ndcg@10 >= 0.5"]
    check_snippets(pytester)  # the workers' texts give the report its snippets
    # a run without cases starts none: no summary, no run folder (one worker is enough to
    # put the controller in distribution mode)
    result = pytester.runpytest("test_plain.py", "-n", "1")
    result.assert_outcomes(passed=1)
    assert "ragbench summary" not in result.stdout.str()


def test_a_gc_freeze_ini_value_that_is_no_boolean_names_the_option(pytester):
    """'ragbench_gc_freeze = flase' stopped the run with pytest's 'invalid truth value
    'flase'', naming neither the option nor the file."""
    pytester.makeini("[pytest]\nragbench_gc_freeze = flase\n")
    with pytest.raises(pytest.UsageError, match=r"ragbench: ini option ragbench_gc_freeze in "
                       r".*tox\.ini: expected true or false.*'flase'"):
        pytester.parseconfigure("-p", "no:xdist")


def test_ragbench_alongside_explicit_test_paths(pytester, mini_suite):
    mini_suite()
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = pytester.runpytest(SUITE, "test_plain.py", "-q")
    result.assert_outcomes(passed=6)
    # only the suite when no path is given: test_a_default_run_runs_the_suite_alone_...


def test_missing_suite_file_is_a_usage_error(pytester):
    result = pytester.runpytest("--ragbench=nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ragbench: suite file not found: *nope.yaml"])


def test_a_workers_cases_reach_the_controller_through_crashes_and_lone_surrogates(pytester,
                                                                                  mini_suite):
    """Three systems whose cases a worker could lose, one run at -n 1 (one worker puts the
    controller in distribution mode; the crashes and errors are per system):

    - ``first`` crashes in q1, the run's first case. The controller's record of a case whose
      worker died named the suite by its file and had no suite hash: summary.json's
      suite_hash was null (against a baseline: 'suite file changed', unchanged) and the
      TREC run files were suite.yaml.first.trec, not mini.first.trec.
    - ``overlap`` crashes in q3: one worker is enough, it finishes q1 and q2 before it dies,
      and its replacement runs q4 and q5; all five must reach the controller's files.
    - ``odd`` raises an error whose message holds a lone surrogate (bytes decoded with
      surrogateescape) in q3: it stopped a worker's report under xdist (at -n 0 the run's
      writer: test_a_system_exit_or_a_lone_surrogate_errors_its_own_case_only)."""
    import hashlib

    pytester.makepyfile(odd=ODD_RETRIEVER)
    path = mini_suite("""
        name: mini
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          first: {type: "overlap_retriever:Overlap", crash_on: espresso}
          overlap: {type: "overlap_retriever:Overlap", crash_on: milk}
          odd: {type: "odd:Odd"}
        metrics: [ndcg@10, recall@10, mrr@10]
    """)
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "-n", "1",
                                "--ragbench-save-run=runs", "-p", "no:randomly")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed"), outcomes.get("errors")) == (
        12, 2, 1), out
    run = latest_run(pytester.path)
    recs = [json.loads(x) for x in (run / "cases.jsonl").read_text().splitlines()]
    assert sorted((r["retriever"], r["case_id"]) for r in recs) == [
        (system, f"q{i}") for system in ("first", "odd", "overlap") for i in range(1, 6)]
    crashed = [r for r in recs if r["status"] == "error" and r["retriever"] != "odd"]
    assert [(r["retriever"], r["case_id"]) for r in crashed] == [("first", "q1"),
                                                                 ("overlap", "q3")]
    result.stdout.fnmatch_lines(["  first: 5 cases, 1 error, 0 below per-query thresholds",
                                 "  overlap: 5 cases, 1 error, 0 below per-query thresholds"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (suite,) = json.loads((run / "summary.json").read_text())["suites"]
    assert suite["suite_hash"] == digest
    assert all((r["suite_name"], r["suite_hash"]) == ("mini", digest) for r in crashed)
    assert sorted(p.name for p in (pytester.path / "runs").iterdir()) == [
        "mini.first.trec", "mini.odd.trec", "mini.overlap.trec"]
    (errored,) = [r for r in recs if r["status"] == "error" and r["retriever"] == "odd"]
    assert errored["case_id"] == "q3"
    assert "bad \ufffd byte" in json.dumps(errored, ensure_ascii=False)


def test_a_run_whose_only_case_crashed_its_worker_is_partial(pytester, mini_suite):
    # How many cases each suite holds reaches the controller with a worker's first case
    # report: a worker that died in its first case sent none, nor did its replacement, left
    # with nothing to run, so a -k run of one case of five read whole ("1 of 1 cases")
    mini_suite(crash_on="milk")
    result = pytester.runpytest(SUITE, "-n", "1", "-k", "q3")
    result.assert_outcomes(failed=1)
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    assert (summary["run"]["partial"], summary["verdict"]["coverage"]) == (True,
                                                                         "1 of 5 cases")


def test_a_run_that_selects_no_case_of_a_suite_writes_no_run_under_xdist(pytester, mini_suite):
    # as at -n 0: the workers, which reported no case as none was selected, send no counts
    # of their own at the end (a crashed first case's do), which made an empty partial run
    mini_suite()
    pytester.makepyfile(test_app="def test_app():\n    pass\n")
    result = pytester.runpytest(SUITE, ".", "-k", "test_app", "-n", "2")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*ragbench summary*")
    assert not (pytester.path / ".ragbench" / "runs").exists()


def test_a_repeated_case_that_died_without_a_record_keeps_its_query_and_run(pytester,
                                                                            mini_suite):
    # The error record of a case with no record of its own (its setup failed in a conftest
    # hook; a crashed worker) took the item name for the query id: q3[run1], run 0, a query
    # of its own, which a baseline comparison counted as "1 query added".
    path = mini_suite()
    path.write_text(path.read_text() + "llm: {type: extractive}\nruns: 2\n")
    assert pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json").ret == 0
    pytester.makeconftest("""
        def pytest_runtest_setup(item):
            if item.name == "q3[run1]":
                raise RuntimeError("no fixture data")
    """)
    result = pytester.runpytest(SUITE, "--ragbench-baseline=base.json")
    result.assert_outcomes(passed=9, errors=1)
    recs = [json.loads(x) for x in (latest_run(pytester.path) / "cases.jsonl").read_text()
            .splitlines()]
    assert [(r["case_id"], r["run"]) for r in recs if r["status"] == "error"] == [("q3", 1)]
    assert sorted({r["case_id"] for r in recs}) == ["q1", "q2", "q3", "q4", "q5"]
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    assert summary["baseline"]["suites"][0]["added"] == 0


ODD_RETRIEVER = """
class Odd:
    def index(self, corpus):
        pass

    def retrieve(self, query, k):
        if "milk" in query:
            raise RuntimeError(b"bad \\xe9 byte".decode("utf-8", "surrogateescape"))
        return [("d1", 1.0)]
"""


def test_a_system_exit_or_a_lone_surrogate_errors_its_own_case_only(pytester, mini_suite):
    """Three suites of one run at -n 0, each erring in one case (errors are per case):

    - A retriever's SystemExit, raised while the case before it retrieved ahead (answer
      metrics make it look ahead), errored every case up to the one that raised it; a
      retriever's suite and a pipeline's, each raising in q4 (retrieving ahead is per
      system).
    - A retriever's error message holding a lone surrogate (bytes decoded with
      surrogateescape), in q3, stopped the run's writer (under xdist a worker's report:
      test_a_workers_cases_reach_the_controller_through_crashes_and_lone_surrogates)."""
    pytester.makepyfile(exiting=EXITING, odd=ODD_RETRIEVER)
    write_jsonl(pytester.path / "queries.jsonl",
                [{**q, "answer": "grind"} for q in QUERIES])
    components = {"retrievers": "retrievers: {ex: {type: 'exiting:Retriever'}}\n"
                                "llm: {type: extractive}\n",
                  "pipelines": "pipelines: {ex: {type: 'exiting:App'}}\n"}
    for system, component in components.items():
        mini_suite(f"name: {system}\ndataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}\n"
                   + component + "metrics: [recall@10, token_f1]\n", name=f"{system}.yaml")
    mini_suite("name: odd\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
               "retrievers: {odd: {type: 'odd:Odd'}}\nmetrics: [recall@10]\n", name="odd.yaml")
    result = pytester.runpytest("--ragbench=retrievers.yaml", "--ragbench=pipelines.yaml",
                                "--ragbench=odd.yaml", "-p", "no:randomly")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    result.assert_outcomes(passed=12, errors=3)
    recs = [json.loads(x) for x in (latest_run(pytester.path) / "cases.jsonl").read_text()
            .splitlines()]
    assert len(recs) == 15
    for system in components:
        (errored,) = [r for r in recs if r["status"] == "error" and r["suite_name"] == system]
        assert errored["case_id"] == "q4" and "SystemExit" in errored["error"]["message"]
    (errored,) = [r for r in recs if r["status"] == "error" and r["suite_name"] == "odd"]
    assert errored["case_id"] == "q3"
    assert "bad \ufffd byte" in json.dumps(errored, ensure_ascii=False)


EXITING = """
import sys


class Retriever:
    def index(self, corpus):
        pass

    def retrieve(self, query, k):
        if "citric" in query:
            sys.exit(5)
        return [("d1", 1.0)]


class App:
    def answer(self, query):
        if "citric" in query.text:
            sys.exit(5)
        return {"answer": "grind", "contexts": [{"id": "d1"}]}
"""


def test_a_crash_while_retrieving_ahead_is_charged_to_its_own_case(pytester, mini_suite):
    """A worker that died retrieving ahead (a batch of the next queries) was charged to the
    item it was reporting: innocent cases errored, each replacement worker crashed again on
    the same query, and a second bad query used up xdist's restarts with cases never run."""
    pytester.makepyfile(batching="""
from overlap_retriever import Overlap


class Batching(Overlap):
    def retrieve_many(self, texts, k):
        return [self.retrieve(t, k) for t in texts]
""")
    path = mini_suite(crash_on="milk")
    path.write_text(path.read_text().replace("overlap_retriever:Overlap", "batching:Batching")
                    .replace('"milk"', '"milk"\n    fail_on: ""'))
    result = pytester.runpytest(SUITE, "-n", "2", "-p", "no:randomly", "--junitxml=out.xml")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (4, 1), result.stdout.str()
    # junit has the five cases (and the gates' entries), no empty one for the rerun
    xml = (pytester.path / "out.xml").read_text()
    assert "<testcase time=" not in xml and xml.count('name="q') == 5
    recs = [json.loads(x) for x in (latest_run(pytester.path) / "cases.jsonl").read_text()
            .splitlines()]
    assert sorted(r["case_id"] for r in recs) == ["q1", "q2", "q3", "q4", "q5"]
    assert [r["case_id"] for r in recs if r["status"] == "error"] == ["q3"]
    # with no worker left to run it again, the crash is the running item's, as xdist says:
    # put back for nobody, the run passed (exit 0) on fewer cases
    result = pytester.runpytest(SUITE, "-n", "2", "-p", "no:randomly",
                                "--max-worker-restart", "0")
    assert result.ret == 1
    assert "ragbench: FAILED" in result.stdout.str()
    # two bad queries and one restart: whatever was put back and never ran again is an
    # error, not a pass on fewer cases (exit 0 before)
    path.write_text(path.read_text().replace('crash_on: "milk"', 'crash_on: "e"'))
    result = pytester.runpytest(SUITE, "-n", "2", "-p", "no:randomly",
                                "--max-worker-restart", "1")
    assert result.ret == 1
    assert "ragbench: FAILED" in result.stdout.str()


def test_a_suite_name_with_a_line_break_keeps_the_summary_one_line_each(pytester, mini_suite,
                                                                         capsys):
    # the name is the suite's own (baselines match it as written); the terminal's lines are
    # made one line each, and a terminal escape in it cannot recolour them
    path = mini_suite()
    path.write_text(path.read_text().replace("name: mini", 'name: "two\\nlines\\u001b[31m"'))
    result = pytester.runpytest(SUITE, "-p", "no:randomly")
    result.stdout.fnmatch_lines(["suite two lines\ufffd[[]31m [[]suite.yaml[]] dataset *"])
    assert "\x1b[31m" not in result.stdout.str()
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    assert summary["suites"][0]["name"] == "two\nlines\x1b[31m"
    # the CLI's history and compare print the name as the terminal summary does
    from pytest_ragbench.cli import main as ragbench_main

    run = str(latest_run(pytester.path))
    history = str(pytester.path / ".ragbench" / "history.sqlite")
    for args in (["history", "--history", history], ["compare", run, run]):
        ragbench_main(args)
        out = capsys.readouterr().out
        assert "two lines\ufffd[31m" in out and "\x1b" not in out, out


def test_an_unusable_pytest_cache_builds_indexes_in_memory(pytester, mini_suite):
    # pytest only warns when it cannot write its cache; the plugin's index cache under it
    # made a collection error (a file where its folder goes, a read-only project: root
    # passes permission checks, so the file stands in for both)
    path = mini_suite()
    path.write_text(path.read_text().replace("type: overlap_retriever:Overlap", "type: bm25"))
    first = pytester.runpytest(SUITE, "-p", "cacheprovider", "-p", "no:randomly")
    first.assert_outcomes(passed=5)
    expected = (latest_run(pytester.path) / "cases.jsonl").read_text()
    shutil.rmtree(pytester.path / ".pytest_cache")
    (pytester.path / ".pytest_cache" / "d").mkdir(parents=True)
    (pytester.path / ".pytest_cache" / "d" / "ragbench").write_text("not a folder")
    again = pytester.runpytest(SUITE, "-p", "cacheprovider", "-p", "no:randomly")
    again.assert_outcomes(passed=5)
    strip = [{k: v for k, v in json.loads(line).items() if k != "latency_ms"}
             for text in (expected, (latest_run(pytester.path) / "cases.jsonl").read_text())
             for line in text.splitlines()]
    assert strip[:5] == strip[5:]


def test_an_interrupted_run_keeps_finished_cases_fails_junit_and_reads_alike_at_n0_and_n1(
        pytester, mini_suite):
    """A Ctrl-C in q3, at -n 0 and at -n 1: one suite for what each run must show.

    - The finished cases are kept and the summary is partial.
    - The cases that ran passed, so junit had no failing testcase while the exit status,
      summary.json, summary.md and the HTML said FAILED: the run was interrupted.
    - xdist reports the case a worker was in when a KeyboardInterrupt stopped it as a
      crash: the controller recorded it as an errored case ('1 item errored', in
      error_rate gates), where -n 0 leaves the interrupted case unfinished, for a resume to
      run; every output of the two runs is alike."""
    path = mini_suite(interrupt_on="milk")
    path.write_text(path.read_text() + 'gates:\n  - "error_rate <= 0"\n')
    outputs = []
    for workers in ([], ["-n", "1"]):
        # In process, but told not to raise the inner run's KeyboardInterrupt again in this
        # one (as pytester does by default: a user's Ctrl-C).
        result = pytester.runpytest(SUITE, "--junitxml=out.xml", *workers, "-p", "no:randomly",
                                    no_reraise_ctrlc=True)
        assert result.ret == pytest.ExitCode.INTERRUPTED
        run = latest_run(pytester.path)
        recs = [json.loads(x) for x in (run / "cases.jsonl").read_text().splitlines()]
        summary = json.loads((run / "summary.json").read_text())
        outputs.append(([r["case_id"] for r in recs], summary["verdict"], summary["gates"],
                        summary["suites"]))
        assert [r["case_id"] for r in recs] == ["q1", "q2"]
        assert summary["run"]["partial"] is True
        assert summary["suites"][0]["retrievers"][0]["n_cases"] == 2
        assert _outputs(pytester)[0]["passed"] is False
        # junit fails the run as every other output does
        root = ET.parse(pytester.path / "out.xml").getroot()
        suite = root.find("testsuite")
        assert suite is not None and int(suite.get("failures") or 0) == 1
        case = _junit_cases(pytester.path / "out.xml")[
            "ragbench-verdict::the run was interrupted"]
        failure = case.find("failure")
        assert failure is not None
        assert ("ragbench: FAILED (partial: 2 of 5 cases): the run was interrupted"
                in failure.get("message", ""))
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["ragbench_verdict"] == ("FAILED (partial: 2 of 5 cases): the run was "
                                             "interrupted")
        assert props["ragbench_coverage"] == "2 of 5 cases"
    assert outputs[0] == outputs[1]
    assert outputs[1][1]["headline"] == "FAILED (partial: 2 of 5 cases)"
    assert [(g["passed"], g["value"]) for g in outputs[1][2]] == [(True, 0.0)]


def test_no_output_flag_writes_nothing(pytester, mini_suite):
    mini_suite()
    result = pytester.runpytest(SUITE, "--ragbench-no-output")
    assert result.ret == 0
    assert not (pytester.path / ".ragbench").exists()


def test_no_output_still_writes_the_html_report_asked_for(pytester, mini_suite, monkeypatch):
    # --ragbench-no-output drops the run folder and history; a report the command line names
    # was dropped with them, without a word, while --ragbench-save-baseline was written. So
    # was the summary a GitHub Actions job shows on its page ($GITHUB_STEP_SUMMARY).
    mini_suite()
    step = pytester.path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = pytester.runpytest(SUITE, "--ragbench-no-output", "--ragbench-html=r/out.html")
    assert result.ret == 0
    report = pytester.path / "r" / "out.html"
    assert "<html" in report.read_text(encoding="utf-8").lower()
    result.stdout.fnmatch_lines([f"report: {report}"])
    assert not (pytester.path / ".ragbench").exists()
    assert step.read_text(encoding="utf-8").startswith("## ragbench: passed")


def test_a_run_without_suites_does_not_import_the_heavy_modules(pytester):
    # Every pytest run in an environment with the plugin installed loads it; the statistics,
    # numpy and the HTML renderer are for runs that collect a suite.
    pytester.makepyfile(test_plain="""
        import sys

        def test_modules():
            heavy = {"numpy", "scipy", "jinja2", "sqlite3", "yaml",
                     "pytest_ragbench.results.aggregate", "pytest_ragbench.suite.loader",
                     "pytest_ragbench.execution.runtime", "pytest_ragbench.results.gates",
                     "pytest_ragbench.datasets"}
            assert not heavy & set(sys.modules)
    """)
    result = pytester.runpytest_subprocess("-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)
