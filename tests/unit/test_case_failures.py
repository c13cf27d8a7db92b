"""What a failing or erroring case tells: the rank of every relevant document (records,
failure text, HTML drill-down data) and the component's own exception handed to ``on_error``
with a traceback that :func:`~pytest_ragbench.execution.runtime.user_traceback` cuts to the
component's frames. No pytest run inside (tests/test_failure_reports.py has those)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from pytest_ragbench.execution.runtime import SuiteRuntime, user_traceback
from pytest_ragbench.metrics.spec import MetricSpec, resolve_metric
from pytest_ragbench.records import clean_float, make_record, relevant_ranks
from pytest_ragbench.registry import BuildContext, Registry
from pytest_ragbench.report.failure import format_case_failure
from pytest_ragbench.report.html import render_html
from pytest_ragbench.results.aggregate import summarize_run
from pytest_ragbench.suite.loader import load_suite

HERE = str(Path(__file__).resolve())

# 100 documents, which Ranked (below) returns in id order: q1's relevant documents d000, d056
# and d099 rank 1, 57 and 100 (d003 is judged non-relevant), beyond the 20 a record keeps.
N_DOCS = 100
SUITE = textwrap.dedent("""\
    name: ranks
    dataset:
      corpus: corpus.jsonl
      items:
        - {_id: q1, text: alpha, relevant: {d056: 2, d000: 1, d099: 1, d003: 0}}
        - {_id: q2, text: beta, relevant: {d001: 1}}
    retrievers:
      fake: {}
    metrics: [ndcg@10, recall@100, boom]
    k: 100
    thresholds: {ndcg@10: 0.99}
""")
PIPELINE_SUITE = textwrap.dedent("""\
    name: app
    dataset:
      corpus: corpus.jsonl
      items:
        - {_id: q1, text: alpha, relevant: {d056: 2, d000: 1, d099: 1, d003: 0}}
    pipelines:
      app: {}
    metrics: [recall@10]
""")


def _ranking(k: int) -> list[tuple[str, float]]:
    """d000 first, d099 last: every document, by descending score."""
    return [(f"d{i:03d}", float(N_DOCS - i)) for i in range(N_DOCS)][:k]


def _raise_deep(text: str) -> None:
    raise ValueError(f"no index for {text!r}")


class Ranked:
    """All documents, in id order; ``fail`` names the query texts it raises for."""

    def __init__(self, fail: str = "", mode: str = "sync") -> None:
        self.fail, self.mode = fail, mode

    def index(self, corpus: Any) -> None:
        pass

    def retrieve(self, text: str, k: int) -> Any:
        if self.mode == "async":
            return self._retrieve_async(text, k)
        if text == self.fail:
            _raise_deep(text)
        return _ranking(k)

    async def _retrieve_async(self, text: str, k: int) -> list[tuple[str, float]]:
        await asyncio.sleep(0)
        if text == self.fail:
            _raise_deep(text)
        return _ranking(k)


class Unindexable(Ranked):
    def index(self, corpus: Any) -> None:
        raise OSError("index folder is read-only")


class _Boom:
    name, direction, family = "boom", "higher", "custom"

    def compute(self, case: Any, result: Any) -> float:
        if case.id == "q2":
            raise ZeroDivisionError("nothing to divide")
        return 1.0


def _resolver(name: str, params: Any) -> MetricSpec:
    if name == "boom":
        return MetricSpec(name, "custom", component=_Boom())
    return resolve_metric(name, params)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rows = [{"_id": f"d{i:03d}", "text": f"document {i}"} for i in range(N_DOCS)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.fixture
def runtime_of(folder: Path) -> Iterator[Callable[..., SuiteRuntime]]:
    made: list[SuiteRuntime] = []

    def make(factory: Callable[[], Any], text: str = SUITE, kind: str = "retriever",
             name: str = "fake") -> SuiteRuntime:
        path = folder / "suite.yaml"
        path.write_text(text, encoding="utf-8")
        registry = Registry(use_entry_points=False)
        registry.add(kind, name, factory, origin="the test")
        runtime = SuiteRuntime(load_suite(path, None, _resolver), "suite.yaml", registry,
                               BuildContext())
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


def _frames(tb: TracebackType | None) -> list[tuple[str, str]]:
    out = []
    while tb is not None:
        out.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    return out


class Errors:
    """An ``on_error`` callback that keeps what it was given."""

    def __init__(self) -> None:
        self.raised: list[tuple[BaseException, TracebackType | None]] = []

    def __call__(self, exc: BaseException, tb: TracebackType | None) -> None:
        self.raised.append((exc, tb))


# -- the ranks of the relevant documents ---------------------------------------------------


def test_relevant_ranks_cover_the_whole_ranking_and_the_documents_not_retrieved() -> None:
    ranked = [f"x{i}" for i in range(1, 101)]
    ranked[0], ranked[56] = "a", "b"  # ranks 1 and 57
    grades = {"b": 2, "a": 1, "gone": 1, "lost": 3, "judged_no": 0, "x5": 0}
    # ranked ones by rank, then the rest by grade (highest first) and id, as in "missed"
    assert list(relevant_ranks(ranked, grades).items()) == [
        ("a", 1), ("b", 57), ("lost", None), ("gone", None)]
    assert relevant_ranks(ranked, {}) == {}
    assert relevant_ranks([], {"a": 1}) == {"a": None}


def test_the_record_has_the_rank_of_a_relevant_document_below_the_kept_top(
    runtime_of,
) -> None:
    rec = runtime_of(Ranked).run_case("fake", "q1")
    assert len(rec["retrieved"]) == 20  # the default record_depth
    assert rec["relevant_ranks"] == {"d000": 1, "d056": 57, "d099": 100}
    assert rec["missed"] == [] and rec["metrics"]["recall@100"] == 1.0
    assert list(rec) == list(make_record(suite="s", retriever="r", case_id="c"))
    json.dumps(rec, allow_nan=False)


def test_a_pipelines_record_ranks_its_contexts_in_its_order(runtime_of) -> None:
    class App:
        def answer(self, query: Any) -> dict[str, Any]:
            return {"answer": "x", "contexts": [{"id": "d056"}, {"id": "d001"},
                                                {"text": "no id"}, {"id": "d099"}]}

    rec = runtime_of(App, PIPELINE_SUITE, "pipeline", "app").run_pipeline_case("app", "q1")
    assert rec["relevant_ranks"] == {"d056": 1, "d099": 3, "d000": None}


class _Text(str):
    """A str subclass, as LangChain's StrOutputParser returns (``TextAccessor``)."""


def _plain_types(value: Any) -> set[type]:
    if isinstance(value, dict):
        return {dict}.union(*(_plain_types(k) | _plain_types(v) for k, v in value.items()))
    if isinstance(value, list):
        return {list}.union(*map(_plain_types, value))
    return {type(value)}


def test_a_pipelines_str_subclasses_reach_the_record_as_plain_str(runtime_of) -> None:
    """A LangChain chain ending in StrOutputParser answers with a str subclass: in the record
    it stopped every xdist worker that ran such a case ("can't serialize TextAccessor", an
    INTERNALERROR and no test run)."""
    from execnet.gateway_base import dumps

    class App:
        def answer(self, query: Any) -> dict[str, Any]:
            return {"answer": _Text("fine"), "contexts": [
                {"id": _Text("d056"), "text": _Text("some text")}, _Text("a bare text")]}

    rec = runtime_of(App, PIPELINE_SUITE, "pipeline", "app").run_pipeline_case("app", "q1")
    assert rec["status"] == "ok" and rec["answer"] == "fine"
    assert rec["contexts"] == ["d056", "a bare text"]
    assert _plain_types(rec) <= {dict, list, str, int, float, bool, type(None)}
    dumps(rec)  # what xdist sends a record with


def test_the_failure_text_gives_every_relevant_rank_and_counts_all_missed() -> None:
    rec = make_record(suite="s.yaml", retriever="bm25", case_id="q012", query="why",
                      metrics={"ndcg@10": 0.0, "recall@100": 1.0})
    rec["status"] = "failed"
    rec["retrieved"] = [[f"x{i}", clean_float(100 - i), None] for i in range(20)]
    ranks: dict[str, int | None] = {"d7": 57, **{f"m{i:02d}": None for i in range(13)}}
    rec["relevant_ranks"] = ranks
    rec["missed"] = [[f"m{i:02d}", 1] for i in range(12)]  # cut at a record depth of 12
    lines = format_case_failure(rec).splitlines()
    assert "relevant documents by rank: d7 at 57" in lines
    assert ("relevant but not retrieved: " + ", ".join(f"m{i:02d} (grade 1)" for i in range(10))
            + " and 3 more") in lines
    # records written before relevant_ranks existed read as they did
    del rec["relevant_ranks"]
    text = format_case_failure(rec)
    assert "by rank" not in text and text.endswith(" and 2 more")


def test_the_drill_down_data_lists_the_ranks() -> None:
    rec = make_record(suite="s.yaml", retriever="bm25", case_id="q1", query="why",
                      metrics={"ndcg@10": 0.0})
    rec["relevant_ranks"] = {"d7": 57, "<d9>": None}
    html = render_html(summarize_run([rec], {}), [rec])
    assert ('<p class="rb-ranks"><span class="k">relevant documents by rank</span> '
            "d7 at 57, &lt;d9&gt; not retrieved</p>") in html


# -- the component's exception reaches on_error, cut to its frames -------------------------


@pytest.mark.parametrize("mode", ["sync", "async", "thread"])
def test_a_raising_retriever_hands_its_exception_and_own_frames_to_on_error(
    runtime_of, folder: Path, mode: str,
) -> None:
    text = SUITE.replace("  fake: {}", "  fake: {case_timeout: 30}") if mode == "thread" \
        else SUITE
    runtime = runtime_of(lambda: Ranked(fail="beta", mode="async" if mode == "async"
                                        else "sync"), text)
    errors = Errors()
    ok = runtime.run_case("fake", "q1", on_error=errors)
    assert ok["status"] == "failed" and errors.raised == []
    rec = runtime.run_case("fake", "q2", on_error=errors)
    assert rec["error"]["message"] == "retriever 'fake' raised ValueError: no index for 'beta'"
    [(exc, tb)] = errors.raised
    assert isinstance(exc, ValueError)
    frames = _frames(user_traceback(tb))
    # from the retriever's method down to the frame that raised: no plugin, loop or thread
    assert frames[0] == (HERE, "_retrieve_async" if mode == "async" else "retrieve")
    assert frames[-1] == (HERE, "_raise_deep")
    assert all(f == HERE for f, _ in frames)
    # the uncut traceback starts in the plugin
    assert "pytest_ragbench" in _frames(tb)[0][0]


def test_an_index_failure_hands_the_same_exception_and_traceback_to_every_case(
    runtime_of,
) -> None:
    runtime = runtime_of(Unindexable)
    errors = Errors()
    runtime.run_case("fake", "q1", on_error=errors)
    try:  # the way a collected item re-raises it, which replaces its __traceback__
        raise errors.raised[0][0].with_traceback(user_traceback(errors.raised[0][1]))
    except OSError:
        pass
    runtime.run_case("fake", "q2", on_error=errors)
    (one, _), (two, tb) = errors.raised
    assert one is two and isinstance(one, OSError)
    assert _frames(user_traceback(tb)) == [(HERE, "index")]


def test_a_raising_metric_and_a_raising_pipeline_reach_on_error(runtime_of) -> None:
    errors = Errors()
    rec = runtime_of(Ranked).run_case("fake", "q2", on_error=errors)
    assert rec["error"]["stage"] == "metric"
    assert _frames(user_traceback(errors.raised[-1][1]))[-1] == (HERE, "compute")

    class App:
        def answer(self, query: Any) -> Any:
            _raise_deep(query.text)

    rec = runtime_of(App, PIPELINE_SUITE, "pipeline", "app").run_pipeline_case(
        "app", "q1", on_error=errors)
    assert rec["error"]["stage"] == "answer"
    frames = _frames(user_traceback(errors.raised[-1][1]))
    assert frames == [(HERE, "answer"), (HERE, "_raise_deep")]


def test_an_exception_without_a_message_is_named_by_its_type_alone(runtime_of) -> None:
    """A bare ``assert`` or ``raise ValueError()`` in the user's code read "pipeline 'app'
    raised AssertionError: ", the colon followed by nothing."""

    class App:
        def answer(self, query: Any) -> Any:
            raise AssertionError

    class Mute(Ranked):
        def retrieve(self, text: str, k: int) -> Any:
            raise ValueError()

    rec = runtime_of(App, PIPELINE_SUITE, "pipeline", "app").run_pipeline_case("app", "q1")
    assert rec["error"]["message"] == "pipeline 'app' raised AssertionError"
    rec = runtime_of(Mute).run_case("fake", "q1")
    assert rec["error"]["message"] == "retriever 'fake' raised ValueError"
    rec = runtime_of(lambda: Ranked(fail="beta")).run_case("fake", "q2")
    assert rec["error"]["message"] == "retriever 'fake' raised ValueError: no index for 'beta'"


class _Unprintable(Exception):
    """An exception whose message cannot be had: its ``__str__`` (and ``__repr__``) raise."""

    def __str__(self) -> str:
        raise ValueError("str blew up")

    def __repr__(self) -> str:
        raise ValueError("repr blew up")


def test_an_exception_whose_message_cannot_be_read_is_still_an_error_of_its_case(
    runtime_of,
) -> None:
    """An exception whose ``__str__`` raises escaped the case: the record had stage 'setup'
    and the message 'conftest.py:35: ValueError' (the ``__str__``'s own error), neither the
    pipeline nor the answer stage."""

    class App:
        def answer(self, query: Any) -> Any:
            raise _Unprintable

    class Mute(Ranked):
        def retrieve(self, text: str, k: int) -> Any:
            raise _Unprintable

    errors = Errors()
    rec = runtime_of(App, PIPELINE_SUITE, "pipeline", "app").run_pipeline_case(
        "app", "q1", on_error=errors)
    assert rec["error"]["stage"] == "answer"
    assert rec["error"]["message"] == ("pipeline 'app' raised _Unprintable (its message "
                                       "could not be read: ValueError: str blew up)")
    assert isinstance(errors.raised[-1][0], _Unprintable)
    rec = runtime_of(Mute).run_case("fake", "q1")
    assert rec["error"]["stage"] == "retrieve"
    assert rec["error"]["message"].startswith("retriever 'fake' raised _Unprintable (")


def test_a_traceback_with_no_frame_of_a_component_is_kept_whole() -> None:
    try:
        clean_float("not a number")
    except ValueError as exc:
        inner = exc.__traceback__.tb_next if exc.__traceback__ else None
    assert inner is not None and "pytest_ragbench" in inner.tb_frame.f_code.co_filename
    assert user_traceback(inner) is inner
    assert user_traceback(None) is None


def test_problems_the_runtime_finds_itself_have_no_exception_to_hand(runtime_of) -> None:
    """A wrong result or a time limit: the message is all there is."""

    class Slow(Ranked):
        def retrieve(self, text: str, k: int) -> Any:
            if text == "beta":
                return [("nowhere", 1.0)]
            time.sleep(0.2)
            return _ranking(k)

    errors = Errors()
    runtime = runtime_of(Slow, SUITE.replace("  fake: {}", "  fake: {case_timeout: 0.02}"))
    assert runtime.run_case("fake", "q1", on_error=errors)["error"]["type"] == "TimeoutError"
    assert runtime.run_case("fake", "q2", on_error=errors)["error"]["stage"] == "retrieve"
    assert errors.raised == []


def test_metrics_that_failed_alike_share_one_mention() -> None:
    """A generation timeout repeated itself once per judged metric (five times)."""
    from pytest_ragbench.execution.runtime import errors_text

    late = "judge timed out: the case's judging took longer than generation.timeout 2 s"
    assert errors_text({"faithfulness": late, "answer_relevancy": late,
                        "context_recall": "judge reply unreadable", "helpful": late}) == (
        f"faithfulness, answer_relevancy, helpful: {late}; "
        "context_recall: judge reply unreadable")
    assert errors_text({"generation": "HTTP 500"}) == "generation: HTTP 500"
