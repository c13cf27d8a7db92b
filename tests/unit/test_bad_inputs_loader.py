"""The bad-input battery's suite and dataset cases without a pytest run inside.

Each case of :data:`test_bad_inputs_battery.LOADER_CASES` breaks the suite file, a dataset
file, a run file or a prompt template. What a user sees for those is the collection error of
:class:`pytest_ragbench.collect.SuiteFile`: ``collect`` asks the plugin's state for the suite's
runtime (which loads and checks the suite), reads its dataset and prepares its components, and
``repr_failure`` shows a :class:`~pytest_ragbench.errors.RagbenchError` as its text alone. This
file makes the same calls on a :class:`~pytest_ragbench.state.RagbenchState` of this test
session and checks the same things as the battery: a ``RagbenchError`` (shown without a
traceback), exactly one line of its text matching the case's pattern, within the battery's
timeout. The battery keeps one end-to-end run per category for the exit status and the output
as a whole.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from test_bad_inputs_battery import (
    HTTP_SUITE,
    LOADER_CASES,
    SUITE,
    Case,
    alarm,
    sub,
    write_files,
)

from pytest_ragbench.errors import RagbenchError
from pytest_ragbench.state import RagbenchState

__all__ = ["alarm"]  # the battery's timeout fixture, used by name below


def collection_error(config: pytest.Config, suite: Path) -> RagbenchError:
    """The error collecting ``suite`` raises, by the calls ``SuiteFile.collect`` makes."""
    state = RagbenchState(config)
    with pytest.raises(RagbenchError) as info:
        runtime = state.runtime(suite.name, suite)
        _ = runtime.dataset
        runtime.prepare()
    return info.value


@pytest.mark.parametrize("case", [c.param() for c in LOADER_CASES])
def test_bad_input_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          pytestconfig: pytest.Config, alarm: None, case: Case) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, case, monkeypatch)
    named = [a.removeprefix("--ragbench=") for a in case.args if a.startswith("--ragbench=")]
    assert len(named) == len(case.args), case.args  # only a suite file, no other option
    text = str(collection_error(pytestconfig, tmp_path / (named[0] if named else "suite.yaml")))
    assert "Traceback" not in text and "INTERNALERROR" not in text, text
    matching = [line for line in text.splitlines() if fnmatch.fnmatchcase(line, case.expect)]
    assert len(matching) == 1, f"expected one line matching {case.expect!r}, got " \
                               f"{len(matching)}:\n{text}"


# -- every problem of a suite in its one error ---------------------------------------------------


def all_lines(config: pytest.Config, root: Path, suite: str,
              monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lines of the one collection error of ``suite`` (beside the battery's files)."""
    monkeypatch.chdir(root)
    write_files(root, Case("all", "*", suite=suite), monkeypatch)
    text = str(collection_error(config, root / "suite.yaml"))
    assert "Traceback" not in text, text
    return text.splitlines()


def test_an_http_components_own_check_reports_every_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """The http retriever's and pipeline's own checks stopped at their first problem: a bad
    URL hid a bad header, a reserved request parameter and a bad limit, each met a run
    later."""
    suite = sub(sub(HTTP_SUITE, "http://127.0.0.1:9/search", "localhost/search"),
                "timeout: 5", "timeout: 0\n    headers: {X A: '1', B: ' x'}") + (
        "pipelines:\n"                                             # 17
        "  app:\n"                                                 # 18
        "    type: http\n"                                         # 19
        "    url: ftp://127.0.0.1:9/answer\n"                      # 20
        "    retries: -1\n"                                        # 21
        "    params: {query_id: 1, metadata: {}}\n"                # 22
    )
    suite = sub(suite, "      index: main", "      index: main\n      k: 3")
    lines = all_lines(pytestconfig, tmp_path, suite, monkeypatch)
    assert [line.partition("suite.yaml:")[2] for line in lines] == [
        "9: retrievers.svc.url: must be an http(s) URL with a host, got 'localhost/search'",
        "10: retrievers.svc.timeout: must be a number of seconds > 0, got 0",
        "11: retrievers.svc.headers: 'X A' is not a valid header name (letters, digits and "
        "!#$%&'*+.^_`|~- only)",
        "11: retrievers.svc.headers.B: the value starts or ends with a space or tab (a pasted "
        "key's?)",
        "14: retrievers.svc.params.k: set by ragbench in each request (the suite's k); leave "
        "it out",
        "20: pipelines.app.url: must be an http(s) URL with a host, got "
        "'ftp://127.0.0.1:9/answer'",
        "21: pipelines.app.retries: must be >= 0, got -1",
        "22: pipelines.app.params.query_id: set by ragbench in each request (the question's "
        "id); leave it out",
        "22: pipelines.app.params.metadata: set by ragbench in each request (the question's "
        "metadata); leave it out",
    ], "\n".join(lines)


def test_a_run_files_and_a_hybrids_own_checks_report_every_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """The run-file and hybrid retrievers' own checks stopped at their first problem (a
    missing path hid a bad format, a bad method a bad depth and a name not in the suite),
    each met a run later."""
    suite = sub(SUITE, "  bm25: {k1: 0.9, b: 0.4}", (
        "  bm25: {k1: 0.9, b: 0.4}\n"                                       # 7
        "  sub:\n"                                                          # 8
        "    type: run\n"                                                   # 9
        "    format: bogus\n"                                               # 10
        "    missing: skip\n"                                               # 11
        "  fused:\n"                                                        # 12
        "    type: hybrid\n"                                                # 13
        "    retrievers: [bm25, bm52]\n"                                    # 14
        "    method: mean\n"                                                # 15
        "    depth: 0"))                                                    # 16
    lines = all_lines(pytestconfig, tmp_path, suite, monkeypatch)
    assert [line.partition("suite.yaml:")[2] for line in lines] == [
        "8: retrievers.sub: retriever 'run' is missing required parameter(s) path; it accepts: "
        "path, format, missing, unknown_docs",
        "10: retrievers.sub.format: must be one of auto, trec, jsonl, got 'bogus'",
        "11: retrievers.sub.missing: must be one of error, empty, got 'skip'",
        "14: retrievers.fused.retrievers[1]: retriever 'bm52' is not in this suite (it has: "
        "bm25, fused, sub) (did you mean 'bm25'?)",
        "15: retrievers.fused.method: must be one of rrf, weighted, got 'mean'",
        "16: retrievers.fused.depth: must be a positive integer, got 0",
    ], "\n".join(lines)


OWN_CHECK = '''\
from collections.abc import Mapping
from typing import Any

from pytest_ragbench.errors import ParamValueError


class Svc:
    def __init__(self, *, endpoint: str, mode: str = "fast") -> None:
        self.endpoint = endpoint

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: Any) -> None:
        if params.get("mode", "fast") not in ("fast", "slow"):
            raise ParamValueError("mode must be fast or slow", path=("mode",),
                                  detail="must be fast or slow")
        # written for a complete spec: its required parameter is there
        if not params["endpoint"].startswith("svc://"):
            raise ValueError("endpoint must start with svc://")
'''


def test_a_components_own_check_runs_beside_a_missing_or_mistyped_required_parameter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """A component's own check was skipped while a required parameter was missing or
    mistyped: the http retriever's reserved params.query or the pipeline's bad retries showed
    only once url was given, a run later. It runs on the parameters that are valid; what it
    says of the held-back one (or of the whole component) is left out, and a check that
    trips over its absence is no traceback."""
    (tmp_path / "own_check_mod.py").write_text(OWN_CHECK)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = sub(SUITE, "  bm25: {k1: 0.9, b: 0.4}",
                "  svc:\n"                                         # 7
                "    type: http\n"                                 # 8
                "    params: {query: x}\n"                         # 9
                "  typed:\n"                                       # 10
                "    type: http\n"                                 # 11
                "    url: 3\n"                                     # 12
                "    params: {k: 3}\n"                             # 13
                "  own:\n"                                         # 14
                "    type: own_check_mod:Svc\n"                    # 15
                "    mode: medium") + (                            # 16
        "pipelines:\n"                                             # 19
        "  app:\n"                                                 # 20
        "    type: http\n"                                         # 21
        "    retries: -1\n"                                        # 22
    )
    lines = all_lines(pytestconfig, tmp_path, suite, monkeypatch)
    assert [line.partition("suite.yaml:")[2] for line in lines] == [
        "7: retrievers.svc: retriever 'http' is missing required parameter(s) url; it accepts: "
        "url, headers, timeout, retries, backoff, max_backoff, params",
        "9: retrievers.svc.params.query: set by ragbench in each request (the query's text); "
        "leave it out",
        "12: retrievers.typed.url: expected a string, got 3",
        "13: retrievers.typed.params.k: set by ragbench in each request (the suite's k); leave "
        "it out",
        "14: retrievers.own: retriever 'own_check_mod:Svc' is missing required parameter(s) "
        "endpoint; it accepts: endpoint, mode",
        "16: retrievers.own.mode: must be fast or slow",
        "20: pipelines.app: pipeline 'http' is missing required parameter(s) url; it accepts: "
        "url, headers, timeout, retries, backoff, max_backoff, concurrency, breaker_threshold, "
        "breaker_reset, params",
        "22: pipelines.app.retries: must be >= 0, got -1",
    ], "\n".join(lines)


def test_schema_errors_and_component_checks_are_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """A schema error (an unknown top-level key, a bad case_timeout) ended the suite's check
    before its components were looked at: a bad bm25 parameter, an http pipeline's bad URL
    and a metric's bad parameter showed a run later; and an unknown key hid every other
    schema problem (the next unknown key, a case_timeout). The components the schema accepts
    are checked beside it; one whose type it refuses is not."""
    suite = sub(SUITE, "  bm25: {k1: 0.9, b: 0.4}",
                "  bm25: {k1: fast, b: 0.4}\n"                     # 7
                "  slow: {type: bm25, k1: slow, case_timeout: soon}\n"  # 8
                "  typed: {type: 3, k1: fast}")                      # 9
    suite = sub(suite, "metrics: [ndcg@10, recall@10]",
                "metrics: [ndcg@10, {name: temporal_ndcg@10, lambda: high}]")  # 10
    suite += (
        "pipelines:\n"                                             # 12
        "  app: {type: http, url: 'localhost/answer'}\n"           # 13
        "seeed: 3\n"                                               # 14
        "kk: 4\n"                                                  # 15
    )
    lines = all_lines(pytestconfig, tmp_path, suite, monkeypatch)
    expected = [
        "7: retrievers.bm25.k1: expected a number, got 'fast'",
        "8: retrievers.slow.case_timeout: expected a number, got 'soon'",
        "8: retrievers.slow.k1: expected a number, got 'slow'",
        # not checked: which retriever is it?
        "9: retrievers.typed.type: expected a non-empty string, got 3",
        "10: metrics[[]1[]].lambda: expected a number, got 'high'",
        "13: pipelines.app.url: must be an http(s) URL with a host, got 'localhost/answer'",
        "14: seeed: unknown key 'seeed' (did you mean 'seed'?) (expected one of: *)",
        "15: kk: unknown key 'kk' (did you mean 'k'?) (expected one of: *)",
    ]
    found = [line.partition("suite.yaml:")[2] for line in lines]
    assert len(found) == len(expected) and all(
        fnmatch.fnmatchcase(f, e) for f, e in zip(found, expected, strict=True)), \
        "\n".join(lines)


@pytest.mark.parametrize(("change", "problem"), [
    (("k: 10", "k: 10\ngates: {ndcg@10: '>= banana'}"),
     "10: gates.ndcg@10: cannot parse '>= banana': *"),
    (("queries: queries.jsonl", "queries: missing.jsonl"),
     "4: dataset.queries: * not found*missing.jsonl"),
])
def test_the_rest_of_a_suites_problems_and_component_checks_are_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config,
        change: tuple[str, str], problem: str) -> None:
    """A bad gate or a missing dataset file ended the suite's check before its components'
    problems were reported: a bad bm25 parameter showed a run later."""
    suite = sub(sub(SUITE, "  bm25: {k1: 0.9, b: 0.4}", "  bm25: {k1: fast, b: 0.4}"), *change)
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    expected = sorted(["7: retrievers.bm25.k1: expected a number, got 'fast'", problem],
                      key=lambda e: int(e.partition(":")[0]))
    assert len(found) == 2 and all(
        fnmatch.fnmatchcase(f, e) for f, e in zip(found, expected, strict=True)), found


def test_every_bad_gate_threshold_tolerance_and_the_dataset_are_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """Of the gates, thresholds, tolerances and the dataset only the first problem was
    reported (a bad gate hid a second bad gate, a bad tolerance and a missing qrels file):
    a user fixed one, ran again and met the next. A per-query threshold on the error rate
    (a figure of the run) checked nothing."""
    suite = sub(SUITE, "qrels.txt", "missing.txt").replace("k: 10\n", (
        "k: 5\n"                                                         # 9
        "gates: {ndcg@10: '>= banana', recall@10: '>= 2 cats'}\n"       # 10
        "thresholds:\n"                                                  # 11
        "  ndcg@10: '>= x'\n"                                            # 12
        "  recall@10: '>= 0.1'\n"                                        # 13
        "  mrr: '>= 0.1'\n"                                              # 14
        "  error_rate: '<= 0'\n"                                         # 15
        "baseline:\n"                                                    # 16
        "  tolerance: {ndcg@10: lots, recal@10: 0.01}\n"))              # 17
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    expected = ["5: dataset.qrels: *missing.txt*",
                "8: metrics[[]0]: ndcg@10 looks at the top 10 documents but each retriever "
                "returns only k: 5*",
                "8: metrics[[]1]: recall@10 looks at the top 10*",
                "10: gates.ndcg@10: cannot parse '>= banana'*",
                "10: gates.recall@10: cannot parse '>= 2 cats'*",
                "12: thresholds.ndcg@10: cannot parse '>= x'*",
                "14: thresholds.mrr: *",
                "15: thresholds.error_rate: error_rate is the share of a system's cases that "
                "errored, a figure of the run, not of one query: write 'error_rate <= 0' under "
                "gates, not thresholds",
                "17: baseline.tolerance.ndcg@10: cannot parse tolerance 'lots'*",
                "17: baseline.tolerance.recal@10: a tolerance for 'recal@10', which is not "
                "among the suite's metrics * (did you mean 'recall@10'?)"]
    assert len(found) == len(expected) and all(
        fnmatch.fnmatchcase(f, e) for f, e in zip(found, expected, strict=True)), \
        "\n".join(found)


def test_a_drop_limit_or_tolerance_no_score_in_0_1_can_exceed_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """A suite's 'ndcg@10: drop <= 5' and 'tolerance: 5' (meant 5%) were accepted and let any
    regression pass, where --ragbench-tolerance 5 is refused; a latency's are its own."""
    suite = SUITE.replace("[ndcg@10, recall@10]", "[ndcg@10, recall@10, latency_ms]") + (
        "gates: ['ndcg@10: drop <= 5', 'recall@10: drop <= 5%', 'latency_ms: drop <= 50']\n"
        "baseline:\n"                                                   # 11
        "  tolerance: {ndcg@10: 3, recall@10: 0.02, latency_ms: 20}\n")  # 12
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    assert found == [
        "10: gates[0]: ndcg@10 lies between 0 and 1, so it never drops by more than 1 and "
        "'ndcg@10: drop <= 5' always passes (for a relative limit write 'drop <= 5%', for an "
        "absolute one a value up to 1)",
        "12: baseline.tolerance.ndcg@10: an absolute tolerance of 3 lets ndcg@10, which lies "
        "in [0, 1], drop to 0; for a relative one write '3%', for an absolute one a value up "
        "to 1 (e.g. 0.02)"], "\n".join(found)
    everywhere = sub(SUITE, "k: 10", "k: 10\nbaseline: {tolerance: 5}")
    assert [line.partition("suite.yaml:")[2] for line in all_lines(
        pytestconfig, tmp_path, everywhere, monkeypatch)] == [
        "10: baseline.tolerance: an absolute tolerance of 5 lets any score in [0, 1] drop to "
        "0; for a relative one write '5%', for an absolute one a value up to 1 (e.g. 0.02)"]
    # the same written as a map's '*' key is at that key
    starred = sub(SUITE, "k: 10", "k: 10\nbaseline:\n  tolerance:\n    '*': 5")
    assert [line.partition("suite.yaml:")[2] for line in all_lines(
        pytestconfig, tmp_path, starred, monkeypatch)] == [
        "12: baseline.tolerance.*: an absolute tolerance of 5 lets any score in [0, 1] drop "
        "to 0; for a relative one write '5%', for an absolute one a value up to 1 (e.g. 0.02)"]


def test_a_gate_or_threshold_the_suite_states_twice_is_refused_at_the_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """'ndcg@10 >= 0.3' and 'ndcg@10: 0.3' (a copy whose metric or bound was not changed)
    were judged and listed twice in every output; the second is an error at its line naming
    the first, as the same bound twice in a key's list is (a scope to a system is another
    check)."""
    suite = SUITE + (
        "gates:\n"                                                       # 10
        "  - 'ndcg@10 >= 0.3'\n"                                         # 11
        "  - 'recall@10 >= 0.3'\n"                                       # 12
        "  - 'ndcg@10: 0.3'\n"                                           # 13
        "  - 'retriever=bm25: ndcg@10 >= 0.3'\n"                         # 14
        "  - 'ndcg@10>=0.30'\n")                                         # 15
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    assert found == [
        "13: gates[2]: 'ndcg@10: 0.3' states the same check as gates[0] "
        "('ndcg@10 >= 0.3'): one of them is enough",
        "15: gates[4]: 'ndcg@10>=0.30' states the same check as gates[0] ('ndcg@10 >= 0.3'): "
        "one of them is enough",
    ], "\n".join(found)
    # the mapping form's list of a key's gates
    listed = SUITE + "gates:\n  recall@10: [0.5, '>= 0.5', 'drop <= 0.1']\n"    # 10, 11
    assert [line.partition("suite.yaml:")[2] for line in all_lines(
        pytestconfig, tmp_path, listed, monkeypatch)] == [
        "11: gates.recall@10: 'recall@10 >= 0.5' states the same check as gates.recall@10 "
        "('recall@10 >= 0.5'): one of them is enough"]


OWN_LLM = '''\
class MyLLM:
    def __init__(self, model: str, temperature: float = 0.0) -> None:
        self.model = model

    def complete(self, messages, **kwargs):
        return "x"
'''


@pytest.mark.parametrize(("line", "problem"), [
    ("seeed: 3\n",
     "16: seeed: unknown key 'seeed' (did you mean 'seed'?) (expected one of: *)"),
    ("gates: {ndcg@10: '>= banana'}\n", "16: gates.ndcg@10: cannot parse '>= banana': *"),
])
def test_a_suites_problem_and_a_registered_llms_problems_are_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config,
        line: str, problem: str) -> None:
    """A registered LLM's (or judge LLM's) bad parameters are checked when the suite is run,
    so a problem of the suite file (an unknown key, a bad gate) hid them: they showed a run
    later."""
    (tmp_path / "own_llm_mod.py").write_text(OWN_LLM)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = sub(SUITE, "[ndcg@10, recall@10]", "[ndcg@10, token_f1, faithfulness]") + (
        "llm:\n"                                                   # 10
        "  type: own_llm_mod:MyLLM\n"                              # 11
        "  temperature: hot\n"                                     # 12
        "  concurrency: 2\n"                                       # 13
        "judge:\n"                                                 # 14
        "  llm: {type: 'own_llm_mod:MyLLM', model: j, temprature: 0}\n"  # 15
    ) + line                                                       # 16
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    expected = [
        "10: llm: llm 'own_llm_mod:MyLLM' is missing required parameter(s) model; it accepts: "
        "model, temperature",
        "12: llm.temperature: expected a number, got 'hot'",
        "15: judge.llm.temprature: llm 'own_llm_mod:MyLLM' got unknown parameter(s) "
        "temprature (did you mean 'temperature'?); it accepts: model, temperature",
        problem,
    ]
    assert len(found) == len(expected) and all(
        fnmatch.fnmatchcase(f, e) for f, e in zip(found, expected, strict=True)), found


def test_the_problems_found_once_a_suite_loads_are_in_the_order_of_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """What the run finds once the suite loads (a registered LLM's parameters, a metric
    without reference answers) was listed in the order it was found, the llm's line before
    the metrics' above it, where the loader's own problems are in the order of the file."""
    (tmp_path / "own_llm_mod.py").write_text(OWN_LLM)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = sub(SUITE, "[ndcg@10, recall@10]", "[ndcg@10, token_f1]") + (
        "llm: {type: 'own_llm_mod:MyLLM', model: m, temperature: hot}\n"  # 10
    )
    files = {"queries.jsonl": '{"_id": "q1", "text": "espresso grind"}\n'
                              '{"_id": "q2", "text": "cold brew steep"}\n'}
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, Case("order", "*", suite=suite, files=files), monkeypatch)
    text = str(collection_error(pytestconfig, tmp_path / "suite.yaml"))
    found = [line.partition("suite.yaml:")[2].partition(":")[0] for line in text.splitlines()]
    assert found == ["8", "10"], text


def test_a_components_own_check_that_raises_is_one_line_at_the_component(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """A component's own check that raised something else than a ValueError (a KeyError on
    a parameter it took for given) was a traceback through the plugin's collection; it is
    the component's problem, with where it was raised, as a module's import error is."""
    (tmp_path / "raising_check_mod.py").write_text(
        "class Svc:\n"
        "    def __init__(self, *, endpoint: str = 'x') -> None:\n"
        "        pass\n"
        "\n"
        "    @staticmethod\n"
        "    def ragbench_check(params, context):\n"
        "        return params['endpoint']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = sub(SUITE, "  bm25: {k1: 0.9, b: 0.4}",
                "  bm25: {k1: fast}\n  own: {type: 'raising_check_mod:Svc'}")
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    assert found == [
        "7: retrievers.bm25.k1: expected a number, got 'fast'",
        "8: retrievers.own: retriever 'raising_check_mod:Svc': its ragbench_check raised "
        f"KeyError: 'endpoint' (at {tmp_path / 'raising_check_mod.py'}:7)",
    ], found


def test_an_error_at_a_top_level_key_the_file_lacks_has_no_line_and_does_not_hang(
        alarm: None) -> None:
    """The line of a key path an error names was looked up by taking keys off its end: a
    top-level key the file does not hold (``llm`` in a suite of pipelines whose judge stands
    in for it) never got shorter, and collection hung."""
    from pytest_ragbench.suite.model import Lines

    lines = Lines({("judge",): 3, ("judge", "llm"): 4})
    assert lines.at_key("llm.temperature") is None
    assert lines.at_key("llm") is None
    assert lines.at_key("judge.llm.temperature") == 4


def test_a_schema_error_hides_no_bad_gate_tolerance_or_dataset_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """An unknown key (a schema error) ended the check before the gates, thresholds,
    tolerances and the dataset were read: a bad gate showed a run later."""
    suite = sub(SUITE, "qrels.txt", "missing.txt") + (
        "seeed: 1\n"                                                   # 10
        "gates: {ndcg@10: '>= lots'}\n"                                # 11
        "thresholds: {recall@10: '>= x'}\n"                            # 12
        "baseline: {tolerance: {ndcg@10: 7}}\n")                      # 13
    found = [line.partition("suite.yaml:")[2]
             for line in all_lines(pytestconfig, tmp_path, suite, monkeypatch)]
    expected = ["5: dataset.qrels: qrels file not found: *missing.txt",
                "10: seeed: unknown key 'seeed' (did you mean 'seed'?)*",
                "11: gates.ndcg@10: cannot parse '>= lots'*",
                "12: thresholds.recall@10: cannot parse '>= x'*",
                "13: baseline.tolerance.ndcg@10: an absolute tolerance of 7 *"]
    assert len(found) == len(expected) and all(
        fnmatch.fnmatchcase(f, e) for f, e in zip(found, expected, strict=True)), \
        "\n".join(found)
