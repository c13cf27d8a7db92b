"""The ``langchain`` and ``llamaindex`` pipeline adapters against the real libraries.

Each library's own in-memory components and fake models (no network, no keys): LangChain's
``InMemoryVectorStore`` over ``DeterministicFakeEmbedding``, LCEL chains around
``GenericFakeChatModel`` / ``FakeListChatModel``; LlamaIndex's ``VectorStoreIndex`` over
``Document`` objects with ``MockEmbedding`` and ``MockLLM``. Mostly direct adapter calls, plus
one in-process pytest run per library. Skipped only when the library is not installed: the
``test`` extra leaves both out (langsmith's pytest plugin, which langchain-core brings, slows
every pytest process), and .ci/run installs them after the main suite to run this file.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_INI, DOCS, write_jsonl

from pytest_ragbench.datasets import Query
from pytest_ragbench.errors import ComponentError
from pytest_ragbench.pipelines import Context, OutputError, Usage
from pytest_ragbench.registry import BuildContext, Registry

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or name lookup beyond this machine fails the test (a library fetching
    a tokenizer or data file would show up here)."""

    def refuse(host: Any) -> None:
        if str(host) not in _LOOPBACK:
            raise AssertionError(f"network access to {host!r} during an offline test")

    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address[0])
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_network_guard_refuses_lookups() -> None:
    with pytest.raises(AssertionError, match=r"network access to 'example\.org'"):
        socket.getaddrinfo("example.org", 443)


def ask(pipeline: Any, text: str) -> Any:
    return asyncio.run(pipeline.answer(Query(id="q", text=text)))


def load_app(monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> types.ModuleType:
    """``source`` as module ``name`` (what a suite's ``object: name:attr`` imports)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def check(type_name: str, params: dict[str, Any]) -> None:
    """What collection does with a pipeline's parameters (registry checks, then the
    adapter's ragbench_check)."""
    registry = Registry(use_entry_points=False)
    registry.check("pipeline", type_name, params, BuildContext(registry=registry, name="x"))


def build(type_name: str, params: dict[str, Any]) -> Any:
    registry = Registry(use_entry_points=False)
    return registry.build("pipeline", type_name, params,
                          BuildContext(registry=registry, name="x"))


def assert_needs_library(monkeypatch: pytest.MonkeyPatch, folder: Path, app: str, source: str,
                         module: str, type_name: str) -> None:
    """The app, imported from a file while its library cannot be imported."""
    (folder / f"{app}.py").write_text(source)
    monkeypatch.syspath_prepend(folder)
    monkeypatch.delitem(sys.modules, app)
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ComponentError) as info:
        check(type_name, {"object": f"{app}:anything"})
    dist = {"langchain": "langchain-core", "llamaindex": "llama-index-core"}[type_name]
    assert str(info.value).startswith(
        f"pipeline 'x' (type {type_name}) needs the optional package {dist} (pip install "
        f"'pytest-ragbench[{type_name}]'): importing {app!r} failed: ")


DOCS_JSON = json.dumps(DOCS)

DUCKS = """
class Document:
    def __init__(self, text, **metadata):
        self.page_content, self.metadata, self.id = text, metadata, None


class Chain:
    async def ainvoke(self, question):
        return {"answer": "citric acid", "context": [Document("Descale...", doc_id="d4")]}


class Engine:
    def query(self, question):
        return type("Response", (), {"response": "airtight", "source_nodes": []})()
"""


def test_stand_ins_need_no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects with the libraries' methods work where neither library is installed."""
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    load_app(monkeypatch, "ducks", DUCKS)
    check("langchain", {"object": "ducks:Chain"})
    out = ask(build("langchain", {"object": "ducks:Chain"}), "descaling")
    assert (out.answer, out.contexts) == ("citric acid", (Context("d4", "Descale..."),))
    assert ask(build("llamaindex", {"object": "ducks:Engine"}), "beans").answer == "airtight"
    with pytest.raises(ComponentError, match=r"'ducks:Document' is a factory with required "
                                             r"argument\(s\) text"):
        build("llamaindex", {"object": "ducks:Document"})


def test_an_application_raising_without_a_message_is_named_by_its_type_alone(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A chain factory (or the module holding it) raising an exception that says nothing
    (``raise ValueError()``, a bare ``assert``) read "calling 'app:make' raised ValueError: ",
    a colon followed by nothing, as the other components' errors no longer do."""
    load_app(monkeypatch, "silent_app", "def make():\n    raise ValueError()\n")
    for type_name in ("langchain", "llamaindex"):
        with pytest.raises(ComponentError) as info:
            build(type_name, {"object": "silent_app:make"})
        assert str(info.value).endswith("calling 'silent_app:make' raised ValueError")
    (tmp_path / "asserting_app.py").write_text("assert False\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(ComponentError) as info:
        check("langchain", {"object": "asserting_app:chain"})
    assert str(info.value).endswith("importing 'asserting_app' raised AssertionError")


# -- LangChain ---------------------------------------------------------------------------------

LC_ANSWER = "Use a fine grind."
LC_USAGE = {"input_tokens": 42, "output_tokens": 7, "total_tokens": 49}

# The user's application: a vector store, a retriever and retrieval chains written in LCEL.
LC_APP = f'''
import itertools
import json
from operator import itemgetter

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel, GenericFakeChatModel)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

DOCS = json.loads({DOCS_JSON!r})

store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
# the store makes Document.id up; the corpus id travels in the metadata
store.add_documents([Document(page_content=d["text"], metadata={{"doc_id": d["_id"]}})
                     for d in DOCS])
retriever = store.as_retriever(search_kwargs={{"k": 2}})

model = GenericFakeChatModel(messages=itertools.cycle(
    [AIMessage(content={LC_ANSWER!r}, usage_metadata={LC_USAGE!r})]))
prompt = ChatPromptTemplate.from_messages(
    [("system", "Answer from these documents: {{context}}"), ("human", "{{input}}")])

# create_retrieval_chain's shape: {{"input", "context": [Document], "answer"}}
chain = (RunnablePassthrough.assign(context=itemgetter("input") | retriever)
         .assign(answer=prompt | model | StrOutputParser()))

# a chain whose output is the chat model's message itself (no parser, no documents)
message_chain = prompt.partial(context="") | FakeListChatModel(responses=["from the list"])

# an agent's state, as a LangGraph graph returns it: the answer is the last message
agent = RunnableLambda(lambda question: {{"messages": [HumanMessage(question),
                                                      model.invoke(question)]}})


class ScoredRetriever(BaseRetriever):
    """A retriever that puts the store's similarity into each document's metadata."""

    k: int = 3

    def _get_relevant_documents(self, query, *, run_manager):
        return [Document(page_content=d.page_content, id=d.id,
                         metadata={{**d.metadata, "score": score}})
                for d, score in store.similarity_search_with_score(query, k=self.k)]


def make_scored():
    return ScoredRetriever()
'''


@pytest.fixture
def lc(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    pytest.importorskip("langchain_core", reason="langchain-core is not installed "
                                                  "(pip install 'pytest-ragbench[langchain]')")
    return load_app(monkeypatch, "lc_app", LC_APP)


def store_ids(lc: types.ModuleType, text: str, k: int) -> list[str]:
    """The corpus ids the store itself ranks first for ``text``."""
    return [d.metadata["doc_id"] for d in lc.store.similarity_search(text, k=k)]


def test_langchain_retrieval_chain(lc: types.ModuleType) -> None:
    pipeline = build("langchain", {"object": "lc_app:chain", "input_key": "input"})
    question = DOCS[3]["text"]  # the fake embedding ranks an identical text first
    out = ask(pipeline, question)
    assert out.answer == LC_ANSWER
    expected = store_ids(lc, question, 2)
    assert expected[0] == DOCS[3]["_id"]
    assert [c.id for c in out.contexts] == expected
    texts = {d["_id"]: d["text"] for d in DOCS}
    assert [c.text for c in out.contexts] == [texts[i] for i in expected]
    # the answer went through StrOutputParser: the usage comes from the model's callback
    assert out.usage == Usage(prompt_tokens=42, completion_tokens=7)


def test_langchain_message_output_and_retrievers(lc: types.ModuleType) -> None:
    out = ask(build("langchain", {"object": "lc_app:message_chain"}), "anything")
    assert out.answer == "from the list"
    assert out.contexts == () and out.usage is None  # FakeListChatModel reports no usage
    # an AIMessage's own usage_metadata is counted once, not once more via the callback
    chain = lc.prompt.partial(context="") | lc.model
    lc.chain_with_message = chain
    out = ask(build("langchain", {"object": "lc_app:chain_with_message"}), "anything")
    assert (out.answer, out.usage) == (LC_ANSWER, Usage(prompt_tokens=42, completion_tokens=7))
    out = ask(build("langchain", {"object": "lc_app:agent"}), "anything")
    assert (out.answer, out.usage) == (LC_ANSWER, Usage(prompt_tokens=42, completion_tokens=7))

    # a BaseRetriever: contexts only, ids from the metadata (not the made-up Document.id)
    question = DOCS[1]["text"]
    out = ask(build("langchain", {"object": "lc_app:retriever"}), question)
    assert out.answer == ""
    assert [c.id for c in out.contexts] == store_ids(lc, question, 2)
    assert all(c.score is None for c in out.contexts)
    # the same documents returned by the user's own Python pipeline are read alike (their
    # text was lost: a pydantic Document dumped to its made-up id alone)
    from pytest_ragbench.pipelines import normalise_output

    docs = lc.store.similarity_search(question, k=2)
    assert all(d.id for d in docs)
    assert normalise_output({"answer": "", "contexts": docs}).contexts == tuple(
        Context(d.metadata["doc_id"], d.page_content) for d in docs)
    # Document.id when told to read nothing else
    made_up = [d.id for d in lc.store.similarity_search(question, k=2)]
    out = ask(build("langchain", {"object": "lc_app:retriever", "id_key": "doc_id"}), question)
    assert [c.id for c in out.contexts] == store_ids(lc, question, 2) != made_up

    # scores from the metadata; a factory with no arguments is called once
    pipeline = build("langchain", {"object": "lc_app:make_scored", "id_key": "doc_id"})
    out = ask(pipeline, question)
    hits = lc.store.similarity_search_with_score(question, k=3)
    assert [(c.id, c.score) for c in out.contexts] == [
        (d.metadata["doc_id"], pytest.approx(s)) for d, s in hits]
    assert out.contexts[0].score == pytest.approx(1.0)
    with pytest.raises(OutputError, match=r"document 0 has no id under metadata\['corpus'\] "
                                          r"\(its metadata keys: doc_id, score\)"):
        ask(build("langchain", {"object": "lc_app:make_scored", "id_key": "corpus"}), "x")


def test_langchain_bad_objects_are_named_at_collection(
        lc: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check("langchain", {"object": "lc_app:chain"})
    check("langchain", {"chain": "lc_app:chain"})  # the older spelling
    cases = {
        "lc_app:store": "'lc_app:store' is InMemoryVectorStore, not a LangChain Runnable "
                        "(chain) or BaseRetriever (a vector store: name its .as_retriever()",
        "lc_app:DOCS": "'lc_app:DOCS' is list, not a LangChain Runnable",
        "lc_app:nothing": "'lc_app' has no attribute 'nothing'",
        "no_such_app:chain": "cannot import 'no_such_app' for 'no_such_app:chain'",
        "lc_app": "object must be 'package.module:attr', got 'lc_app'",
    }
    for spec, message in cases.items():
        with pytest.raises(ComponentError) as info:
            check("langchain", {"object": spec})
        assert str(info.value).startswith("pipeline 'x' (type langchain): ")
        assert message in str(info.value)
    with pytest.raises(ComponentError, match="give 'object' or 'chain', not both"):
        check("langchain", {"object": "lc_app:chain", "chain": "lc_app:chain"})
    with pytest.raises(ComponentError, match="is a retriever, which takes the question text"):
        build("langchain", {"object": "lc_app:retriever", "input_key": "input"})
    # a factory's object is checked when built (before the first item)
    lc.make_store = lambda: lc.store
    check("langchain", {"object": "lc_app:make_store"})
    with pytest.raises(ComponentError, match="is InMemoryVectorStore, not a LangChain"):
        build("langchain", {"object": "lc_app:make_store"})
    lc.needs_args = lambda store, k: store

    async def make_later() -> Any:
        return lc.chain

    lc.make_later = make_later
    with pytest.raises(ComponentError, match=r"'lc_app:needs_args' is a factory with required "
                                             r"argument\(s\) store, k"):
        build("langchain", {"object": "lc_app:needs_args"})
    with pytest.raises(ComponentError, match="'lc_app:make_later' is an async factory"):
        build("langchain", {"object": "lc_app:make_later"})
    # an application that cannot be imported without the library: the install command
    assert_needs_library(monkeypatch, tmp_path, "lc_app", LC_APP, "langchain_core", "langchain")


# -- LlamaIndex --------------------------------------------------------------------------------

LI_APP = f'''
import json

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter

DOCS = json.loads({DOCS_JSON!r})

# MockEmbedding gives every text the same vector, so ties are broken by node id: chunk ids
# derived from the document ids keep the ranking the same in every process
splitter = SentenceSplitter(chunk_size=64, chunk_overlap=0,
                            id_func=lambda i, doc: f"{{doc.doc_id}}#{{i}}")
index = VectorStoreIndex.from_documents(
    [Document(text=d["text"], id_=d["_id"], metadata={{"title": d["title"]}}) for d in DOCS],
    embed_model=MockEmbedding(embed_dim=8), transformations=[splitter])
llm = MockLLM(max_tokens=4)
engine = index.as_query_engine(llm=llm, similarity_top_k=2)


def make_retriever():
    return index.as_retriever(similarity_top_k=3)
'''


@pytest.fixture
def li(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed "
                                                    "(pip install 'pytest-ragbench[llamaindex]')")
    return load_app(monkeypatch, "li_app", LI_APP)


def test_llamaindex_query_engine_and_retriever(li: types.ModuleType) -> None:
    question = "keeping beans fresh"
    out = ask(build("llamaindex", {"object": "li_app:engine"}), question)
    assert out.answer == li.llm.complete("any prompt").text == "text text text text"
    nodes = li.index.as_retriever(similarity_top_k=2).retrieve(question)
    # the corpus ids are the ids of the documents the chunks came from, not the chunk ids
    assert [n.node.node_id for n in nodes] != [n.node.source_node.node_id for n in nodes]
    assert [c.id for c in out.contexts] == [n.node.source_node.node_id for n in nodes]
    assert [c.text for c in out.contexts] == [n.node.get_content() for n in nodes]
    assert [c.score for c in out.contexts] == [pytest.approx(n.score) for n in nodes]
    assert out.usage is None

    out = ask(build("llamaindex", {"object": "li_app:make_retriever"}), question)
    nodes = li.index.as_retriever(similarity_top_k=3).retrieve(question)
    assert out.answer == ""
    assert out.contexts == tuple(Context(n.node.source_node.node_id, n.node.get_content(),
                                         pytest.approx(n.score)) for n in nodes)
    # id_key: the corpus id is a metadata field
    out = ask(build("llamaindex", {"object": "li_app:make_retriever", "id_key": "title"}),
              question)
    assert [c.id for c in out.contexts] == [n.node.metadata["title"] for n in nodes]
    # the same nodes returned by the user's own Python pipeline are read alike
    from pytest_ragbench.pipelines import normalise_output

    mine = normalise_output({"answer": "", "contexts": nodes}).contexts
    assert mine == tuple(Context(n.node.source_node.node_id, n.node.get_content(),
                                 pytest.approx(n.score)) for n in nodes)


def test_llamaindex_bad_objects_are_named_at_collection(
        li: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check("llamaindex", {"object": "li_app:engine"})
    check("llamaindex", {"engine": "li_app:engine"})  # the older spelling
    with pytest.raises(ComponentError, match=r"^pipeline 'x' \(type llamaindex\): 'li_app:index' "
                       r"is VectorStoreIndex, not a LlamaIndex query engine or retriever \(an "
                       r"index: name its .as_query_engine\(\) or .as_retriever\(\)\)$"):
        check("llamaindex", {"object": "li_app:index"})
    with pytest.raises(ComponentError, match="'li_app:splitter' is SentenceSplitter, not a "
                                             "LlamaIndex query engine or retriever"):
        check("llamaindex", {"object": "li_app:splitter"})
    with pytest.raises(ComponentError, match=r"needs 'object': the 'package\.module:attr' path"):
        check("llamaindex", {})
    assert_needs_library(monkeypatch, tmp_path, "li_app", LI_APP, "llama_index.core", "llamaindex")


def test_wrong_library_gets_a_hint(lc: types.ModuleType, li: types.ModuleType) -> None:
    with pytest.raises(ComponentError, match=r"'li_app:engine' is RetrieverQueryEngine, not a "
                                             r"LangChain .* use type: llamaindex"):
        check("langchain", {"object": "li_app:engine"})
    with pytest.raises(ComponentError, match=r"'lc_app:chain' is RunnableSequence, not a "
                                             r"LlamaIndex .* use type: langchain"):
        check("llamaindex", {"object": "lc_app:chain"})


def test_keys_a_langchain_retriever_does_not_take_are_named_at_their_own_line(
        lc: types.ModuleType) -> None:
    """input_key (answer_key, context_key) given for a BaseRetriever was reported at the
    pipeline's name, not at the key's own line."""
    from pytest_ragbench.suite.model import ComponentSpec, Lines

    with pytest.raises(ComponentError) as info:
        build("langchain", {"object": "lc_app:retriever", "answer_key": "a",
                            "context_key": "c"})
    assert info.value.path == ("answer_key",)
    lines = Lines({("pipelines", "x"): 4, ("pipelines", "x", "answer_key"): 6})
    spec = ComponentSpec("x", "langchain", key="pipelines.x", line=4, path=("pipelines", "x"),
                         lines=lines)
    assert str(spec.error(Path("s.yaml"), info.value)) == (
        "s.yaml:6: pipelines.x.answer_key: 'lc_app:retriever' is a retriever, which takes the "
        "question text and returns documents: input_key, answer_key and context_key do not "
        "apply")


def test_a_python_pipeline_returning_a_library_object_gets_a_hint(
        lc: types.ModuleType, li: types.ModuleType) -> None:
    """A Python pipeline returning what its query engine (or chain) returned, as it is, was
    told "returned Response; expected a mapping ..." (or, for a LangChain message, "the
    output has no 'answer' (its keys: 'content', ...)"), not that the adapter reads it."""
    from langchain_core.messages import AIMessage
    from llama_index.core.base.response.schema import Response

    from pytest_ragbench.pipelines import normalise_output

    with pytest.raises(OutputError, match=(
            r"^returned Response; expected a mapping .* or a string \(a LlamaIndex query "
            r"engine's Response: name the engine with type: llamaindex, or return "
            r"\{'answer': response\.response, 'contexts': response\.source_nodes\}\)$")):
        normalise_output(Response(response="a fine grind", source_nodes=[]))
    with pytest.raises(OutputError, match=(
            r"^the output has no 'answer' \(its keys: 'content', .*\) \(a LangChain message: "
            r"name the chain with type: langchain, or return its \.content\)$")):
        normalise_output(AIMessage(content="a fine grind"))
    # what the engine's Response holds, passed on, is read as the llamaindex pipeline reads it
    engine_response = li.engine.query("espresso grind")
    out = normalise_output({"answer": engine_response.response,
                            "contexts": engine_response.source_nodes})
    assert out.answer == engine_response.response and out.contexts


# -- whole runs: one per library ---------------------------------------------------------------


def records(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    path = root / ".ragbench" / "runs" / "latest" / "cases.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["retriever"], r["case_id"]): r for r in recs}


def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, app: str, source: str,
          queries: list[dict[str, Any]], body: str) -> None:
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl", queries)
    pytester.makepyfile(**{app: source})
    # the run imports the file: the expectations come from another instance of the app
    monkeypatch.delitem(sys.modules, app)
    pytester.makeini(BASE_INI)
    (pytester.path / "suite.yaml").write_text(textwrap.dedent(body).lstrip("\n"))


def recall(ranked: list[str], relevant: set[str]) -> float:
    return len(relevant & set(ranked)) / len(relevant)


def test_langchain_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                        lc: types.ModuleType) -> None:
    queries = [{"_id": "q1", "text": DOCS[0]["text"], "relevant": {"d1": 1, "d5": 1},
                "answer": LC_ANSWER},
               {"_id": "q2", "text": "how long to steep cold brew", "relevant": {"d2": 1},
                "answer": "for hours"}]
    suite(pytester, monkeypatch, "lc_app", LC_APP, queries, """
        name: lc
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          # asked for both questions at once: each call's token usage is its own
          chain: {type: langchain, object: "lc_app:chain", input_key: input, concurrency: 2}
          scored: {type: langchain, object: "lc_app:make_scored", id_key: doc_id}
        metrics: [recall@2, exact_match]
    """)
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    recs = records(pytester.path)
    for q in queries:
        relevant = set(q["relevant"])
        rec = recs["chain", q["_id"]]
        ranked = store_ids(lc, q["text"], 2)
        assert rec["contexts"] == ranked
        assert rec["answer"] == LC_ANSWER
        assert rec["metrics"]["recall@2"] == recall(ranked, relevant)
        assert rec["metrics"]["exact_match"] == (1.0 if q["answer"] == LC_ANSWER else 0.0)
        assert rec["system_usage"] == {"prompt_tokens": 42, "completion_tokens": 7,
                                       "cost": None}
        rec = recs["scored", q["_id"]]
        hits = lc.store.similarity_search_with_score(q["text"], k=3)
        assert [r[0] for r in rec["retrieved"]] == [d.metadata["doc_id"] for d, _ in hits]
        assert [r[1] for r in rec["retrieved"]] == [pytest.approx(s) for _, s in hits]
        assert rec["metrics"]["recall@2"] == recall(
            [d.metadata["doc_id"] for d, _ in hits[:2]], relevant)
    # q1's text is d1's: the fake embedding ranks d1 first, whatever comes second
    assert recs["chain", "q1"]["contexts"][0] == "d1"
    assert recs["chain", "q1"]["metrics"]["recall@2"] >= 0.5


def test_llamaindex_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                          li: types.ModuleType) -> None:
    queries = [{"_id": "q1", "text": "keeping beans fresh", "relevant": {"d6": 1}},
               {"_id": "q2", "text": "espresso grind size", "relevant": {"d1": 1, "d5": 1}}]
    suite(pytester, monkeypatch, "li_app", LI_APP, queries, """
        name: li
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          engine: {type: llamaindex, object: "li_app:engine", concurrency: 2}
          retriever: {type: llamaindex, object: "li_app:make_retriever"}
        metrics: [recall@3]
    """)
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    recs = records(pytester.path)
    for q in queries:
        for name, k in (("engine", 2), ("retriever", 3)):
            rec = recs[name, q["_id"]]
            nodes = li.index.as_retriever(similarity_top_k=k).retrieve(q["text"])
            ranked = [n.node.source_node.node_id for n in nodes]
            assert [r[0] for r in rec["retrieved"]] == ranked
            assert [r[1] for r in rec["retrieved"]] == [pytest.approx(n.score) for n in nodes]
            assert rec["metrics"]["recall@3"] == recall(ranked, set(q["relevant"]))
        assert recs["engine", q["_id"]]["answer"] == "text text text text"
        assert recs["retriever", q["_id"]]["answer"] == ""
