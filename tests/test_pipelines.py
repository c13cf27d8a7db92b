"""The pipeline output contract, recorded files and the HTTP pipeline, without a pytest run."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from json_service import JsonService, Trickle

from pytest_ragbench.budget import LocalBudget
from pytest_ragbench.datasets import DataFileError, Query
from pytest_ragbench.pipelines import (
    Context,
    OutputError,
    PipelineOutput,
    Usage,
    normalise_output,
)
from pytest_ragbench.pipelines.http import HTTPPipeline, HTTPPipelineError
from pytest_ragbench.pipelines.recorded import RecordedOutputError, RecordedPipeline
from pytest_ragbench.registry import BuildContext, Registry

Q1 = Query(id="q1", text="espresso grind size", metadata={"lang": "en"})


# -- the contract ------------------------------------------------------------------------------


def test_the_documented_dict_normalises() -> None:
    out = normalise_output({
        "answer": "fine",
        "contexts": [{"id": "d1", "text": "Espresso needs a fine grind.", "score": 0.9},
                     {"doc_id": 7}, "a bare text"],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "cost": 0.002},
        "latency_ms": 41.5,
        "trace_id": "t-1",
    })
    assert out.answer == "fine"
    assert out.contexts == (Context("d1", "Espresso needs a fine grind.", 0.9),
                            Context("7", None, None), Context(None, "a bare text", None))
    assert out.usage is not None and out.usage.as_dict() == {
        "prompt_tokens": 12, "completion_tokens": 3, "cost": 0.002}
    assert out.latency_ms == 41.5
    assert out.extra == {"trace_id": "t-1"}


def test_a_pydantic_output_keeps_its_documents_as_they_are() -> None:
    """A pydantic model holding the chain's Documents (pydantic models too) was dumped whole:
    each Document became a mapping keyed page_content, read as its made-up id alone (its
    text and its corpus id in the metadata were lost)."""
    from pydantic import BaseModel, ConfigDict

    class Doc(BaseModel):  # langchain_core.documents.Document is a pydantic model
        page_content: str
        metadata: dict[str, Any] = {}
        id: str | None = None

    class Reply(BaseModel):
        model_config = ConfigDict(extra="allow")
        answer: str
        contexts: list[Doc]

    out = normalise_output(Reply(answer="a", trace="t-1", contexts=[
        Doc(page_content="Espresso...", metadata={"doc_id": "d1"}, id="uuid-1")]))
    assert out.contexts == (Context("d1", "Espresso..."),)
    assert out.extra == {"trace": "t-1"}


def test_a_pydantic_outputs_computed_fields_are_read_as_its_fields() -> None:
    """Read a level deep (no longer dumped), a model whose answer is a computed field (or
    whose contexts are) said "the output has no 'answer' (its keys: 'raw', ...)", where the
    dump had included it."""
    from pydantic import BaseModel, computed_field

    class Reply(BaseModel):
        raw: str
        sources: list[str]

        @computed_field  # type: ignore[prop-decorator]
        @property
        def answer(self) -> str:
            return self.raw.strip()

        @computed_field  # type: ignore[prop-decorator]
        @property
        def contexts(self) -> list[dict[str, str]]:
            return [{"id": s} for s in self.sources]

    out = normalise_output(Reply(raw=" a fine grind ", sources=["d1", "d5"]))
    assert (out.answer, out.contexts) == ("a fine grind", (Context("d1"), Context("d5")))
    assert out.extra == {"raw": " a fine grind ", "sources": ["d1", "d5"]}


def test_usage_in_the_shape_other_libraries_report_it_is_counted() -> None:
    """A pipeline that passed on its model's usage as LangChain's usage_metadata or
    Anthropic's usage name it (input_tokens / output_tokens) reported no tokens at all,
    without a word; a usage with none of the known keys now says so."""
    out = normalise_output({"answer": "a", "usage": {"input_tokens": 12, "output_tokens": 3,
                                                     "total_tokens": 15}})
    assert out.usage == Usage(prompt_tokens=12, completion_tokens=3)
    # the contract's own names win where both are given
    out = normalise_output({"answer": "a", "usage": {"prompt_tokens": 5, "input_tokens": 12}})
    assert out.usage == Usage(prompt_tokens=5)
    # the names it takes, all of them (it left out the other libraries' names)
    with pytest.raises(OutputError, match=r"^usage has none of prompt_tokens \(or input_tokens\), "
                                          r"completion_tokens \(or output_tokens\), cost "
                                          r"\(its keys: total_tokens, model\)$"):
        normalise_output({"answer": "a", "usage": {"total_tokens": 15, "model": "m"}})
    assert normalise_output({"answer": "a", "usage": {}}).usage == Usage()
    with pytest.raises(OutputError, match=r"usage\.input_tokens must be >= 0"):
        normalise_output({"answer": "a", "usage": {"input_tokens": -1}})


def test_richer_return_types_are_welcome() -> None:
    @dataclass
    class Answer:
        answer: str
        contexts: list[str]

    assert normalise_output("just text") == PipelineOutput(answer="just text")
    assert normalise_output(Answer("a", ["t1"])).contexts == (Context(text="t1"),)
    given = PipelineOutput("x", (Context(id="d1"),))
    assert normalise_output(given) == given  # checked, and as it was
    # None where a tuple is expected, as a dataclass lets it be built
    assert normalise_output(PipelineOutput("x", None, extra=None)).contexts == ()  # type: ignore[arg-type]


def test_an_empty_contexts_list_is_told_from_no_contexts() -> None:
    # "contexts": [] is a ranking of nothing (scored 0); no contexts at all is an answer alone
    # (retrieval metrics n/a): both normalise to (), so the output keeps which it was
    assert normalise_output({"answer": "a", "contexts": []}).contexts_given
    assert normalise_output({"answer": "a", "contexts": [{"id": "d1"}]}).contexts_given
    for alone in ({"answer": "a"}, {"answer": "a", "contexts": None}, "a",
                  PipelineOutput("a")):
        out = normalise_output(alone)
        assert out.contexts == () and not out.contexts_given, alone
    assert normalise_output(PipelineOutput("a", (), contexts_given=True)).contexts_given


@pytest.mark.parametrize(("output", "message"), [
    # objects are checked as mappings are (a dataclass does not check its fields)
    (PipelineOutput(None), "'answer' must be a string, got null"),  # type: ignore[arg-type]
    (PipelineOutput("a", usage=Usage(prompt_tokens=-1000)),
     "usage.prompt_tokens must be >= 0, got -1000"),
    (PipelineOutput("a", usage=Usage(cost=-0.5)), "usage.cost must be >= 0, got -0.5"),
    (PipelineOutput("a", latency_ms=float("nan")), "latency_ms must be a finite number"),
    # a clock that went backwards (or a sign slip) would lower the run's mean latency
    ({"answer": "a", "latency_ms": -5.0}, "latency_ms must be >= 0, got -5.0"),
    (PipelineOutput("a", (Context(text="t", score=float("nan")),)),
     "contexts[0].score must be a finite number"),
    (PipelineOutput("a", (Context(),)), "contexts[0] has neither an 'id' nor a non-empty"),
    # a float count as large as no count is (an HTTP reply's 1e30)
    ({"answer": "a", "usage": {"prompt_tokens": 1e30}}, "usage.prompt_tokens must be below"),
    # text that cannot be written: it stopped the whole run where its record was written
    ("caf\udce9", "'answer' is not valid text: it holds the lone surrogate '\\udce9' at "
                   "character 3"),
    ({"answer": "caf\udce9 au lait"}, "'answer' is not valid text"),
    ({"answer": "a", "contexts": ["ok", "caf\udce9"]}, "contexts[1] is not valid text"),
    ({"answer": "a", "contexts": [{"id": "d\ud800", "text": "t"}]},
     "contexts[0].id is not valid text"),
    ({"answer": "a", "contexts": [{"id": "d1", "text": "\udce9"}]},
     "contexts[0].text is not valid text"),
])
def test_every_output_is_checked_whatever_its_type(output: Any, message: str) -> None:
    with pytest.raises(OutputError) as raised:
        normalise_output(output)
    assert str(raised.value).startswith(message), str(raised.value)


def test_numpy_numbers_are_numbers() -> None:
    # vector stores (FAISS, numpy-backed ones) hand out numpy scores, ids and counts
    import numpy as np

    out = normalise_output({
        "answer": "a",
        "contexts": [{"id": np.int64(7), "score": np.float32(0.5)},
                     {"id": "d2", "score": np.float64(0.25)}],
        "usage": {"prompt_tokens": np.int64(5), "completion_tokens": np.int32(2),
                  "cost": np.float32(0.5)},
        "latency_ms": np.float64(12.5)})
    assert out.contexts == (Context("7", None, 0.5), Context("d2", None, 0.25))
    assert [type(c.score) for c in out.contexts] == [float, float]
    assert out.usage is not None and out.usage.prompt_tokens == 5
    assert type(out.usage.prompt_tokens) is int and type(out.usage.completion_tokens) is int
    assert out.usage.cost == 0.5 and out.latency_ms == 12.5
    for bad, message in (({"id": "d1", "score": np.float32("nan")}, "must be a finite number"),
                         ({"id": "d1", "score": np.bool_(True)}, "must be a number"),
                         ({"id": np.bool_(True)}, "id must be a string")):
        with pytest.raises(OutputError, match=message):
            normalise_output({"answer": "a", "contexts": [bad]})
    with pytest.raises(OutputError, match=r"must be an integer, got 2\.5"):
        normalise_output({"answer": "a", "usage": {"prompt_tokens": np.float64(2.5)}})
    # past any real count or score, one clear error (a count of 10**400 once crashed, and
    # one of 10**5000 could not be written to the record)
    for huge in (10**400, 10**5000, -(10**5000)):
        with pytest.raises(OutputError, match=r"must be (below 2\*\*63|>= 0), got an integer of"):
            normalise_output({"answer": "a", "usage": {"prompt_tokens": huge}})
        with pytest.raises(OutputError, match="must be a finite number, got an integer of"):
            normalise_output({"answer": "a", "contexts": [{"id": "d1", "score": huge}]})


@pytest.mark.parametrize(("value", "message"), [
    (None, "returned null; expected a mapping"),
    (42, "returned number"),
    ({"contexts": []}, "the output has no 'answer' (its keys: 'contexts')"),
    ({"answer": 3}, "'answer' must be a string, got number"),
    ({"answer": "a", "contexts": "d1"}, "'contexts' must be a list, got str"),
    ({"answer": "a", "contexts": [{"score": 1.0}]},
     "contexts[0] has neither an 'id' nor a non-empty 'text'"),
    ({"answer": "a", "contexts": [{"id": "d1", "score": "high"}]},
     "contexts[0].score must be a number, got str"),
    ({"answer": "a", "contexts": [{"id": "d1", "score": float("nan")}]},
     "contexts[0].score must be a finite number"),
    ({"answer": "a", "contexts": [3.5]}, "contexts[0] is number"),
    ({"answer": "a", "usage": {"prompt_tokens": -1}}, "usage.prompt_tokens must be >= 0"),
    ({"answer": "a", "usage": {"cost": "free"}}, "usage.cost must be a number, got str"),
    ({"answer": "a", "usage": [1, 2]}, "usage must be a mapping"),
])
def test_outputs_outside_the_contract_say_what_is_wrong(value: Any, message: str) -> None:
    with pytest.raises(OutputError) as info:
        normalise_output(value)
    assert message in str(info.value)


# -- recorded files ----------------------------------------------------------------------------


def test_recorded_jsonl_json_and_csv_read_the_same(tmp_path: Path) -> None:
    rows = [{"query_id": "q1", "answer": "fine", "contexts": [{"id": "d1"}, {"id": "d5"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "cost": 0.5}},
            {"query_id": "q2", "answer": "hours", "contexts": ["Cold brew steeps."]}]
    (tmp_path / "out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "out.json").write_text(json.dumps({r["query_id"]: r for r in rows}))
    (tmp_path / "out.csv").write_text(
        "query_id,answer,contexts,prompt_tokens,completion_tokens,cost\n"
        "q1,fine,d1|d5,5,1,0.5\n"
        'q2,hours,"[""Cold brew steeps.""]",,,\n')
    read = {name: RecordedPipeline(path=name, base_dir=tmp_path).outputs
            for name in ("out.jsonl", "out.json", "out.csv")}
    assert read["out.jsonl"] == read["out.json"] == read["out.csv"]
    assert [c.id for c in read["out.csv"]["q1"].contexts] == ["d1", "d5"]


def test_recorded_csv_token_counts_written_as_floats_are_counts(tmp_path: Path) -> None:
    """pandas writes a column of counts with a gap as floats ("812.0"): such a file was
    refused with "column 'prompt_tokens' must be a number, got '812.0'"."""
    (tmp_path / "out.csv").write_text(
        "query_id,answer,prompt_tokens,completion_tokens\n"
        "q1,fine,812.0,9.0\n"
        "q2,hours,,\n")
    outputs = RecordedPipeline(path="out.csv", base_dir=tmp_path).outputs
    assert outputs["q1"].usage == Usage(prompt_tokens=812, completion_tokens=9)
    assert type(outputs["q1"].usage.prompt_tokens) is int
    (tmp_path / "out.csv").write_text("query_id,answer,prompt_tokens\nq1,fine,812.5\n")
    with pytest.raises(DataFileError, match=r"usage\.prompt_tokens must be an integer, "
                                            r"got 812\.5"):
        RecordedPipeline(path="out.csv", base_dir=tmp_path)
    (tmp_path / "out.csv").write_text("query_id,answer,prompt_tokens\nq1,fine,many\n")
    with pytest.raises(DataFileError, match="column 'prompt_tokens' must be a number, got "
                                            "'many'"):
        RecordedPipeline(path="out.csv", base_dir=tmp_path)


def test_recorded_file_problems_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"query_id": "q1", "answer": "a"}\n{"query_id": "q1", "answer": "b"}\n')
    with pytest.raises(DataFileError) as info:
        RecordedPipeline(path=str(path))
    assert info.value.line == 2 and "query id 'q1' has two outputs (first at line 1)" in str(
        info.value)
    path.write_text('{"query_id": "q1", "answer": "a"}\n{"query_id": "q2", "answer": 5}\n')
    with pytest.raises(DataFileError, match="output of query 'q2': 'answer' must be a string"):
        RecordedPipeline(path=str(path))
    path.write_text('{"answer": "a"}\n')
    with pytest.raises(DataFileError, match="expected a 'query_id'"):
        RecordedPipeline(path=str(path))


def test_recorded_unknown_ids_and_missing_outputs_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps({"query_id": q, "answer": "x"}) + "\n"
                            for q in ("q1", "zz1", "zz2")))
    pipeline = RecordedPipeline(path=str(path))
    problems = pipeline.check_queries([Q1, Query(id="q2", text="t")])
    assert len(problems) == 1 and "2 output(s) match no query of the suite: 'zz1', 'zz2'" \
        in problems[0]
    assert RecordedPipeline(path=str(path), ignore_unknown=True).check_queries([Q1]) == []
    with pytest.raises(RecordedOutputError, match="has no output for query 'q2'"):
        pipeline.answer(Query(id="q2", text="t"))


def test_recorded_is_a_registered_pipeline_checked_at_collection(tmp_path: Path) -> None:
    from pytest_ragbench.errors import ComponentError
    from pytest_ragbench.registry import BuildContext

    reg = Registry(use_entry_points=False)
    assert {"http", "recorded"} <= set(reg.names("pipeline"))
    with pytest.raises(ComponentError, match="recorded outputs"):
        reg.check("pipeline", "recorded", {"path": "missing.jsonl"},
                  BuildContext(base_dir=tmp_path, registry=reg))
    with pytest.raises(ComponentError, match="unknown parameter"):
        reg.check("pipeline", "http", {"url": "http://x", "timout": 3})
    # a Python pipeline has no `timeout`: the message points at the suite's own limit
    with pytest.raises(ComponentError, match="the time limit of any retriever or pipeline is "
                                             "case_timeout"):
        reg.check("pipeline", "recorded", {"path": "out.jsonl", "timeout": 3},
                  BuildContext(base_dir=tmp_path, registry=reg))


# -- the HTTP pipeline against a real server ---------------------------------------------------


class _Service(JsonService):
    """A RAG service on 127.0.0.1: answers from ``replies`` (status, body) in order, the last
    one for every request after."""

    def __init__(self, replies: list[tuple[int, Any]]) -> None:
        self.replies = replies
        super().__init__(self._next, path="/answer")

    def _next(self, body: bytes, headers: dict[str, str], n: int) -> tuple[int, Any]:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.received]

    @property
    def headers(self) -> list[dict[str, str]]:
        return [headers for _, headers in self.received]


@pytest.fixture
def service() -> Iterator[type[_Service]]:
    yield _Service


def _ask(pipeline: HTTPPipeline, query: Query = Q1) -> PipelineOutput:
    async def go() -> PipelineOutput:
        try:
            return await pipeline.answer(query)
        finally:
            await pipeline.aclose()

    return asyncio.run(go())


GOOD = {"answer": "a fine grind", "contexts": [{"id": "d1", "text": "Espresso..."}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2}}


def test_http_pipeline_sends_the_query_and_retries_transient_failures(service, monkeypatch):
    monkeypatch.setenv("RAG_TOKEN", "tok-0123456789abcdef")
    with service([(503, "busy"), (429, "slow down"), (200, GOOD)]) as svc:
        pipeline = HTTPPipeline(url=svc.url, headers={"Authorization": "Bearer ${RAG_TOKEN}"},
                                backoff=0.0, params={"mode": "eval"})
        out = _ask(pipeline)
    assert out.answer == "a fine grind" and out.contexts[0].id == "d1"
    assert pipeline.requests == 3
    assert svc.bodies[-1] == {"mode": "eval", "query": "espresso grind size",
                              "query_id": "q1", "metadata": {"lang": "en"}}
    assert svc.headers[-1]["Authorization"] == "Bearer tok-0123456789abcdef"


def test_http_pipelines_concurrency_holds_for_the_whole_run() -> None:
    """Two processes' pipelines of one suite (xdist workers) share the run's budget: with
    ``concurrency: 1`` each held its own slot, and the service saw two requests at once."""
    lock = threading.Lock()
    seen = {"now": 0, "max": 0}

    def reply(body: bytes, headers: dict[str, str], n: int) -> tuple[int, Any]:
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        time.sleep(0.02)  # far longer than sending a request: two let through at once overlap
        with lock:
            seen["now"] -= 1
        return 200, GOOD

    with JsonService(reply, path="/answer") as svc, LocalBudget() as budget:
        context = BuildContext(run_budget=lambda: budget)
        workers = [HTTPPipeline(url=svc.url, concurrency=1, context=context) for _ in range(2)]

        async def go() -> list[PipelineOutput]:
            try:
                return await asyncio.gather(*(p.answer(Query(f"q{i}", f"question {i}"))
                                              for i in range(3) for p in workers))
            finally:
                for p in workers:
                    await p.aclose()

        outs = asyncio.run(go())
        totals = budget.totals()
    assert [o.answer for o in outs] == ["a fine grind"] * 6
    assert seen["max"] == 1
    (pool,) = totals["pools"].values()
    assert (pool["concurrency"], pool["requests"], pool["max_in_flight"]) == (1, 6, 1)


def test_http_pipeline_throttled_for_a_while_is_waited_out_not_taken_for_down(service):
    """A service answering 429 to a burst (a rate limit, an answer from a live service) opened
    the pipeline's circuit breaker after 5 of them: the case failed with 'circuit open' with
    retries left, and so did every later case until the breaker closed, where the LLM clients
    back off and retry (a 429 does not count against their breaker)."""
    with service([*[(429, "slow down")] * 7, (200, GOOD)]) as svc:
        pipeline = HTTPPipeline(url=svc.url, retries=9, backoff=0.0)
        out = _ask(pipeline)
    assert out.answer == "a fine grind"
    assert pipeline.requests == 8


def test_http_pipeline_timeout_bounds_each_whole_attempt(service):
    # the reply trickles in a byte every 20 ms: no single read waits 0.1 s, the attempt does
    with service([(200, Trickle(GOOD, 0.02))]) as svc:
        pipeline = HTTPPipeline(url=svc.url, timeout=0.1, retries=1, backoff=0.0)
        with pytest.raises(HTTPPipelineError, match=(
                r"failed after 2 attempt\(s\): timed out after 0\.1 s "
                r"\(the per-attempt timeout\)")):
            _ask(pipeline)
    assert pipeline.requests == 2


def test_http_pipeline_errors_are_clear_and_never_leak_the_secret(service, monkeypatch):
    secret = "tok-0123456789abcdef"
    monkeypatch.setenv("RAG_TOKEN", secret)
    headers = {"Authorization": "Bearer ${RAG_TOKEN}"}
    with service([(401, f"bad token {secret}")]) as svc:
        with pytest.raises(HTTPPipelineError) as info:
            _ask(HTTPPipeline(url=svc.url, headers=headers))
        assert "answered HTTP 401" in str(info.value) and secret not in str(info.value)
    with service([(200, {"answer": None})]) as svc, pytest.raises(
            HTTPPipelineError,
            match="does not follow the pipeline contract: 'answer' must be a string, got null"):
        _ask(HTTPPipeline(url=svc.url))
    # a body that is not UTF-8 said "answered non-JSON", a JSON one with a lone surrogate
    # escape stopped the whole run where its record was written
    with service([(200, b'{"answer": "caf\xe9"}')]) as svc, pytest.raises(
            HTTPPipelineError,
            match=r"answered a body that is not valid UTF-8 \(invalid continuation byte: byte "
                  r"0xe9\): "):
        _ask(HTTPPipeline(url=svc.url))
    with service([(200, b'{"answer": "caf\\udce9"}')]) as svc, pytest.raises(
            HTTPPipelineError, match="'answer' is not valid text: it holds the lone surrogate"):
        _ask(HTTPPipeline(url=svc.url))
    with service([(500, "down")]) as svc:
        pipeline = HTTPPipeline(url=svc.url, retries=1, backoff=0.0, breaker_threshold=2)
        with pytest.raises(HTTPPipelineError, match="failed after 2 attempt"):
            _ask(pipeline)
        # the breaker is open now: the next query fails without a request
        before = pipeline.requests
        with pytest.raises(HTTPPipelineError, match="circuit open"):
            _ask(pipeline)
        assert pipeline.requests == before
    monkeypatch.delenv("RAG_TOKEN")
    with pytest.raises(ValueError, match="environment variable RAG_TOKEN is not set"):
        HTTPPipeline(url="http://127.0.0.1:1/a", headers=headers)


# -- LangChain / LlamaIndex shapes (duck-typed: neither library is needed) -------------------


@dataclass
class _Document:  # langchain_core.documents.Document's shape
    page_content: str
    metadata: dict[str, Any]
    id: str | None = None


@dataclass
class _Message:  # an AIMessage's shape
    content: str


@dataclass
class _Node:  # llama_index TextNode's shape
    text: str
    node_id: str
    metadata: dict[str, Any]

    def get_content(self) -> str:
        return self.text


@dataclass
class _Scored:  # NodeWithScore
    node: _Node
    score: float | None


@dataclass
class _Response:  # llama_index Response
    response: str | None
    source_nodes: list[_Scored]


def test_langchain_outputs_map_onto_the_contract() -> None:
    from pytest_ragbench.pipelines.adapters import langchain_output

    out = langchain_output({"input": "q", "answer": _Message("fine"),
                            "context": [_Document("Espresso...", {"doc_id": "d1"}),
                                        _Document("Brew...", {}, id="d2"),
                                        _Document("Loose text", {})]})
    assert out.answer == "fine"
    assert out.contexts == (Context("d1", "Espresso..."), Context("d2", "Brew..."),
                            Context(None, "Loose text"))
    assert langchain_output("plain").answer == "plain"
    assert langchain_output(_Message("msg")).answer == "msg"
    assert [c.id for c in langchain_output(
        {"result": "r", "source_documents": [_Document("t", {"source": "s.pdf"})]}).contexts] \
        == ["s.pdf"]
    with pytest.raises(OutputError, match="has none of answer, result, output, text"):
        langchain_output({"input": "q"})
    with pytest.raises(OutputError, match="document 0 is dict, expected a Document"):
        langchain_output({"answer": "a", "context": [{"page": 1}]})
    # documents returned, even none, are a ranking (an empty one scores 0); none returned
    # (an answer alone) leaves retrieval metrics n/a
    assert langchain_output({"answer": "a", "context": []}).contexts_given
    assert langchain_output([]).contexts_given
    assert not langchain_output({"answer": "a"}).contexts_given
    assert not langchain_output("plain").contexts_given


def test_a_chains_output_it_cannot_read_says_which_key_and_how_to_name_another() -> None:
    """'the chain's output has none of answer, result, output, text (its keys: output_text,
    context)' did not say that answer_key names another, and 'document 0 is str' not under
    which key of the output the documents were."""
    from pytest_ragbench.pipelines.adapters import langchain_output

    with pytest.raises(OutputError) as info:
        langchain_output({"output_text": "a", "context": []})
    assert str(info.value) == ("the chain's output has none of answer, result, output, text "
                               "(its keys: output_text, context; name another with "
                               "answer_key: NAME)")
    with pytest.raises(OutputError) as info:
        langchain_output({"answer": "a", "source_documents": ["a text"]})
    assert str(info.value) == ("the chain's 'source_documents' document 0 is str, expected a "
                               "Document with page_content")


def test_llamaindex_responses_map_onto_the_contract() -> None:
    from pytest_ragbench.pipelines.adapters import llamaindex_output

    out = llamaindex_output(_Response("fine", [
        _Scored(_Node("Espresso...", "uuid-1", {"doc_id": "d1"}), 0.8),
        _Scored(_Node("Chunk", "uuid-2", {}), float("nan"))]))
    assert out.answer == "fine"
    assert out.contexts == (Context("d1", "Espresso...", 0.8), Context("uuid-2", "Chunk", None))
    import numpy as np

    scored = llamaindex_output(_Response("x", [_Scored(_Node("T", "u", {}), np.float32(0.5))]))
    assert scored.contexts == (Context("u", "T", 0.5),)
    with pytest.raises(OutputError, match="whose 'response' is not a string"):
        llamaindex_output(_Response(None, []))
    assert llamaindex_output(_Response("nothing found", [])).contexts_given
    assert not llamaindex_output(_Response("x", None)).contexts_given  # type: ignore[arg-type]


def test_a_python_pipelines_own_documents_and_nodes_are_contexts() -> None:
    """A Python pipeline that returned its chain's Documents or its index's nodes as contexts
    (as the langchain and llamaindex pipelines read them) lost each Document's text when it
    had an id, and one without an id was 'has neither an id nor a non-empty text'."""
    out = normalise_output({"answer": "a", "contexts": [
        _Document("Espresso...", {"doc_id": "d1", "score": 0.5}, id="uuid-1"),
        _Document("Brew...", {}, id="d2"),
        _Document("Loose text", {"source": "s.pdf"}),
        _Scored(_Node("Chunk", "uuid-2", {"id": "d4"}), 0.25),
        _Node("Bare node", "n5", {})]})
    assert out.contexts == (Context("d1", "Espresso...", 0.5), Context("d2", "Brew..."),
                            Context("s.pdf", "Loose text"), Context("d4", "Chunk", 0.25),
                            Context("n5", "Bare node"))
    # what the contract checks still holds for them
    with pytest.raises(OutputError, match=r"contexts\[0\] has neither an 'id' nor a non-empty"):
        normalise_output({"answer": "a", "contexts": [_Document(" ", {})]})
    with pytest.raises(OutputError, match=r"contexts\[0\]\.text is not valid text"):
        normalise_output({"answer": "a", "contexts": [_Document("caf\udce9", {"id": "d1"})]})


class _ServiceClock:
    """What the http pipeline times its answers on: seconds that pass only while the
    service answers (one second an answer), however loaded the machine is."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def perf_counter(self) -> float:
        with self.lock:
            return self.now

    def served(self) -> None:
        with self.lock:
            self.now += 1.0


@pytest.mark.parametrize("in_a_run", [False, True])
def test_an_http_answers_latency_leaves_out_its_wait_for_a_slot(monkeypatch, in_a_run) -> None:
    """With ``concurrency: 1`` (in a run: the run's, every worker's together) a question
    asked while another was in flight waited for it, and that wait was in its latency_ms:
    the same service measured twice as slow at -n 2 as at -n 0."""
    import types

    from pytest_ragbench.pipelines import http

    clock = _ServiceClock()
    monkeypatch.setattr(http, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def reply(body: bytes, headers: dict[str, str], n: int) -> tuple[int, Any]:
        clock.served()
        return 200, {"answer": "ok", "contexts": [{"id": "d1"}]}

    budget = LocalBudget() if in_a_run else None
    context = BuildContext(run_budget=lambda: budget) if in_a_run else None
    with JsonService(reply, path="/answer") as svc:
        pipeline = HTTPPipeline(url=svc.url, concurrency=1, context=context)

        async def both() -> list[PipelineOutput]:
            try:
                return list(await asyncio.gather(*(pipeline.answer(Query(id=f"q{i}",
                                                                         text="grind"))
                                                   for i in range(2))))
            finally:
                await pipeline.aclose()

        try:
            outputs = asyncio.run(both())
        finally:
            if budget is not None:
                budget.close()
    assert clock.now == 2.0  # one after the other
    assert [o.latency_ms for o in outputs] == [1000.0, 1000.0]
