"""Adapters for RAG systems built with LangChain or LlamaIndex (``type: langchain`` /
``type: llamaindex``).

Suite syntax::

    pipelines:
      chain:
        type: langchain
        object: my_app.rag:chain        # a Runnable or a BaseRetriever, or a factory of one
        input_key: input                # optional: invoke({"input": text}); else invoke(text)
        id_key: doc_id                  # optional: the Document metadata key of the corpus id
      engine:
        type: llamaindex
        object: my_app.index:query_engine   # a query engine or a retriever, or a factory

``object`` is ``package.module:attr``; an attribute that is a class or a function with no
required argument is called once, when the pipeline is built. ``chain:`` (langchain) and
``engine:`` (llamaindex) are older spellings of ``object:``.

The objects are read through the libraries' public types (the optional extras
``pytest-ragbench[langchain]`` and ``pytest-ragbench[llamaindex]``); an object with the same
methods is accepted too, and then the library is not needed. The object's path and kind are
checked with the suite, before the first item; an application that cannot be imported because
the library is missing gets the install command.

LangChain. A ``Runnable`` is called with ``ainvoke`` (``invoke`` for a stand-in without it).
Its result may be a string (``StrOutputParser``), a message (``AIMessage.content``), a mapping
whose answer is under ``answer_key`` (default: the first of ``answer``, ``result``,
``output``, ``text``) and whose documents are under ``context_key`` (default: ``context``,
``source_documents`` or ``documents``) -- the shape of ``create_retrieval_chain`` --, a
LangGraph state (the answer is the last of its ``messages``), or a list of ``Document`` (a
chain ending in a retriever). A ``BaseRetriever`` is called with the question and its
documents are the contexts. A document's text is ``page_content``; its id is
``metadata[id_key]`` when ``id_key`` is set (a document without it is an error), else
``metadata["id"]`` / ``["doc_id"]``, else ``Document.id``, else ``metadata["source"]`` (vector
stores make ``Document.id`` up unless given one); its score is ``metadata[score_key]``
(default ``score``) when that is a finite number. Token usage is the sum of the
``usage_metadata`` of every chat model call in the run (read by a callback).

LlamaIndex. A query engine is called with ``aquery`` (else ``query``): ``Response.response``
is the answer, ``Response.source_nodes`` the contexts. A retriever is called with
``aretrieve`` (else ``retrieve``) and its nodes are the contexts. A ``NodeWithScore``'s text is
``node.get_content()``, its score ``.score``; its id is ``metadata[id_key]`` when set, else
``metadata["id"]`` / ``["doc_id"]``, else the id of the document the chunk came from
(``node.source_node.node_id``, the ``id_`` given to ``Document``), else ``node.node_id``.

A retriever has no answer: its answer is the empty string, so score it with retrieval and
context metrics; answer metrics would score the empty answer.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..datasets import Query
from ..errors import ComponentError, ParamError, exception_text
from ..registry import BuildContext
from .contract import (
    Context,
    OutputError,
    PipelineOutput,
    Usage,
    langchain_context,
    llamaindex_context,
)

_ANSWER_KEYS = ("answer", "result", "output", "text")
_DOC_KEYS = ("context", "source_documents", "documents")


@dataclass(frozen=True)
class _Library:
    """The optional library an adapter reads its objects through."""

    type: str  # the suite's type name
    module: str  # importable name
    dist: str  # the distribution to install

    def loaded(self) -> bool:
        """Whether the library is imported: an object of its types implies it is (and an
        application that does not use it does not pay for importing it)."""
        return sys.modules.get(self.module) is not None

    def is_missing(self, exc: ImportError) -> bool:
        """Whether ``exc`` says this library (or a module of it) cannot be imported."""
        missing = getattr(exc, "name", None) or ""
        return bool(missing) and (missing == self.module or missing.startswith(f"{self.module}.")
                                  or self.module.startswith(f"{missing}."))

    def missing(self, where: str, detail: str) -> ComponentError:
        return ComponentError(
            f"{where} needs the optional package {self.dist} "
            f"(pip install 'pytest-ragbench[{self.type}]'): {detail}")


_LANGCHAIN = _Library("langchain", "langchain_core", "langchain-core")
_LLAMAINDEX = _Library("llamaindex", "llama_index.core", "llama-index-core")


def _where(context: BuildContext | None, lib: _Library) -> str:
    name = context.name if context is not None and context.name else None
    return f"pipeline {name!r} (type {lib.type})" if name else f"pipeline type {lib.type}"


@dataclass(frozen=True)
class _Target:
    """The object a pipeline tests: its ``package.module:attr`` path, the key that gave it
    (``object`` or an older spelling) and how messages name the pipeline."""

    spec: str
    key: str
    where: str

    def error(self, detail: str) -> ComponentError:
        """What is wrong with the object, at its key: the suite points at that key's line."""
        return ComponentError(f"{self.where}: {detail}", param=self.key, path=(self.key,),
                              detail=detail)


def _spec(params: Mapping[str, Any], alias: str, where: str) -> _Target:
    """The ``object`` (or older ``alias``) parameter, checked for form."""
    given = [k for k in ("object", alias) if params.get(k) is not None]
    if not given:
        raise ComponentError(f"{where} needs 'object': the 'package.module:attr' path of the "
                             "object to test")
    if len(given) == 2:
        raise ComponentError(f"{where}: give 'object' or '{alias}', not both")
    key, spec = given[0], params[given[0]]
    module, _, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not module.strip() or not attr.strip():
        detail = f"must be 'package.module:attr', got {spec!r}"
        raise ComponentError(f"{where}: {key} {detail}", param=key, path=(key,), detail=detail)
    return _Target(spec, key, where)


def _attribute(target: _Target, lib: _Library) -> Any:
    """The attribute at ``target``'s path, imported but not called."""
    module_name, _, attr = target.spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if lib.is_missing(exc):
            raise lib.missing(target.where,
                              f"importing {module_name!r} failed: {exc}") from None
        raise target.error(f"cannot import {module_name!r} for {target.spec!r}: "
                           f"{exc}") from None
    except Exception as exc:
        raise target.error(f"importing {module_name!r} raised "
                           f"{exception_text(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise target.error(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _check_object(params: Mapping[str, Any], context: BuildContext, library: _Library, key: str,
                  kind: Callable[[Any, _Target], Any]) -> None:
    """The library, the path, and the object's kind unless a factory builds it (then it is
    checked when built, still before the first item).

    What is wrong with the object is a :class:`ParamError` naming its key: the suite's error
    points at that key's line, as for any other parameter.
    """
    try:
        target = _spec(params, key, _where(context, library))
        obj = _attribute(target, library)
        if not _is_factory(obj):
            kind(obj, target)
    except ComponentError as exc:
        if exc.path:
            raise ParamError.of(exc) from None
        raise


def _is_factory(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj)


def _instantiate(obj: Any, target: _Target) -> Any:
    """``obj``, or what it returns when it is a factory with no required argument."""
    if not _is_factory(obj):
        return obj
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        params = []
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise target.error(f"{target.spec!r} is a factory with required argument(s) "
                           f"{', '.join(required)}; name an object, or a factory that needs "
                           "no arguments")
    try:
        made = obj()
    except Exception as exc:
        raise target.error(f"calling {target.spec!r} raised {exception_text(exc)}") from None
    if inspect.isawaitable(made):
        close = getattr(made, "close", None)
        if callable(close):
            close()
        raise target.error(f"{target.spec!r} is an async factory; make it synchronous or "
                           "name the object it builds")
    return made


def _has(obj: Any, *names: str) -> bool:
    return any(callable(getattr(obj, n, None)) for n in names)


# -- LangChain -------------------------------------------------------------------------------


def _usage_collector() -> Any:
    """A callback handler summing the token usage every chat model call reports."""
    from langchain_core.callbacks import BaseCallbackHandler

    class UsageCollector(BaseCallbackHandler):
        # inline: the sums are read right after the run, so no handler may lag behind it
        run_inline = True

        def __init__(self) -> None:
            super().__init__()
            self.prompt_tokens = 0
            self.completion_tokens = 0
            self.seen = False

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            for generations in getattr(response, "generations", None) or []:
                for generation in generations:
                    usage = getattr(getattr(generation, "message", None), "usage_metadata",
                                    None)
                    if isinstance(usage, Mapping):
                        self.seen = True
                        self.prompt_tokens += int(usage.get("input_tokens") or 0)
                        self.completion_tokens += int(usage.get("output_tokens") or 0)

        def usage(self) -> Usage | None:
            if not self.seen:
                return None
            return Usage(prompt_tokens=self.prompt_tokens,
                         completion_tokens=self.completion_tokens)

    return UsageCollector()


def _message_usage(message: Any) -> Usage | None:
    usage = getattr(message, "usage_metadata", None)
    if not isinstance(usage, Mapping):
        return None
    return Usage(prompt_tokens=int(usage.get("input_tokens") or 0),
                 completion_tokens=int(usage.get("output_tokens") or 0))


def _langchain_kind(obj: Any, target: _Target) -> str:
    """``"retriever"`` or ``"runnable"``; ComponentError naming what ``obj`` is otherwise."""
    if _LANGCHAIN.loaded():
        from langchain_core.retrievers import BaseRetriever

        if isinstance(obj, BaseRetriever):
            return "retriever"
    if _has(obj, "ainvoke", "invoke"):
        return "runnable"
    hint = ""
    if _has(obj, "as_retriever"):
        hint = " (a vector store: name its .as_retriever(), or a chain using it)"
    elif _has(obj, "aquery", "query", "aretrieve", "retrieve"):
        hint = " (it looks like a LlamaIndex object: use type: llamaindex)"
    raise target.error(f"{target.spec!r} is {type(obj).__name__}, not a LangChain Runnable "
                       f"(chain) or BaseRetriever{hint}")


def _is_runnable(obj: Any) -> bool:
    from langchain_core.runnables import Runnable

    return isinstance(obj, Runnable)


def langchain_contexts(docs: Any, *, id_key: str | None = None,
                       score_key: str | None = "score", key: str | None = None,
                       ) -> tuple[Context, ...]:
    """Contexts of LangChain ``Document`` objects (see the module docs for ids and scores);
    ``key`` is the chain output's key that held them, for messages."""
    if isinstance(docs, str | bytes) or not isinstance(docs, Sequence):
        raise OutputError(f"the chain's documents are {type(docs).__name__}, expected a list")
    where = f"the chain's {key!r} document" if key else "document"
    return tuple(langchain_context(doc, f"{where} {i}", id_key=id_key, score_key=score_key)
                 for i, doc in enumerate(docs))


def langchain_output(result: Any, *, id_key: str | None = None, score_key: str | None = "score",
                     answer_key: str | None = None, context_key: str | None = None,
                     usage: Usage | None = None) -> PipelineOutput:
    """The contract's output of what a LangChain runnable returned.

    ``usage`` is what the run's chat model calls reported; without it, a message's own
    ``usage_metadata`` counts.
    """
    def docs_of(value: Any, key: str | None = None) -> tuple[Context, ...]:
        return langchain_contexts(value, id_key=id_key, score_key=score_key, key=key)

    if isinstance(result, str):
        return PipelineOutput(answer=result, usage=usage)
    if isinstance(result, Sequence) and all(hasattr(d, "page_content") for d in result):
        return PipelineOutput(answer="", contexts=docs_of(result), usage=usage,
                              contexts_given=True)
    if hasattr(result, "content") and not isinstance(result, Mapping):
        return PipelineOutput(answer=_content_text(result.content, "the chain's message"),
                              usage=usage or _message_usage(result))
    if not isinstance(result, Mapping):
        raise OutputError(f"the chain returned {type(result).__name__}; expected a string, a "
                          "message, a list of Documents or a mapping with an answer")
    keys = (answer_key,) if answer_key else _ANSWER_KEYS
    key = next((k for k in keys if k in result), None)
    messages = result.get("messages")
    if key is None and not answer_key and isinstance(messages, Sequence) and messages \
            and hasattr(messages[-1], "content"):
        # a LangGraph agent's state: its answer is the last message
        last = messages[-1]
        return PipelineOutput(answer=_content_text(last.content, "the last message"),
                              usage=usage or _message_usage(last))
    if key is None:
        hint = "" if answer_key else "; name another with answer_key: NAME"
        raise OutputError(f"the chain's output has none of {', '.join(keys)} "
                          f"(its keys: {', '.join(map(str, result))}{hint})")
    answer = result[key]
    if hasattr(answer, "content"):
        usage = usage or _message_usage(answer)
        answer = _content_text(answer.content, f"the chain's {key!r}")
    if not isinstance(answer, str):
        raise OutputError(f"the chain's {key!r} is {type(answer).__name__}, expected a string")
    doc_keys = (context_key,) if context_key else _DOC_KEYS
    doc_key = next((k for k in doc_keys if k in result), None)
    docs = result[doc_key] if doc_key is not None else None
    if docs is None and context_key:
        raise OutputError(f"the chain's output has no {context_key!r} "
                          f"(its keys: {', '.join(map(str, result))})")
    # documents the chain returned, even none, are its ranking; none returned leaves it n/a
    return PipelineOutput(answer=answer, contexts=docs_of(docs or [], doc_key), usage=usage,
                          contexts_given=docs is not None)


def _content_text(content: Any, what: str) -> str:
    """A message's text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b if isinstance(b, str) else b.get("text") for b in content
                 if isinstance(b, str) or (isinstance(b, Mapping) and b.get("type") == "text")]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise OutputError(f"{what} has content of type {type(content).__name__}, expected text")


class LangChainPipeline:
    """A LangChain ``Runnable`` (a chain, an agent, a graph) or ``BaseRetriever`` as a
    pipeline."""

    def __init__(self, *, object: str | None = None, chain: str | None = None,
                 input_key: str | None = None, id_key: str | None = None,
                 score_key: str | None = "score", answer_key: str | None = None,
                 context_key: str | None = None, concurrency: int = 1,
                 context: BuildContext | None = None) -> None:
        where = _where(context, _LANGCHAIN)
        target = _spec({"object": object, "chain": chain}, "chain", where)
        spec = target.spec
        self.target = _instantiate(_attribute(target, _LANGCHAIN), target)
        self.kind = _langchain_kind(self.target, target)
        # a real Runnable takes a config: the callback that reads the token usage
        self.runnable = _LANGCHAIN.loaded() and _is_runnable(self.target)
        given = [k for k, v in (("input_key", input_key), ("answer_key", answer_key),
                                ("context_key", context_key)) if v]
        if self.kind == "retriever" and given:
            detail = (f"{spec!r} is a retriever, which takes the question text and returns "
                      "documents: input_key, answer_key and context_key do not apply")
            # at the first of them: its line in the suite
            raise ComponentError(f"{where}: {detail}", param=given[0], path=(given[0],),
                                 detail=detail)
        self.input_key = input_key
        self.id_key = id_key
        self.score_key = score_key
        self.answer_key = answer_key
        self.context_key = context_key
        #: cases asked at once (see pytest_ragbench.execution.asking)
        self.ragbench_concurrency = concurrency

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: see :func:`_check_object`."""
        _check_object(params, context, _LANGCHAIN, "chain", _langchain_kind)

    async def answer(self, query: Query) -> PipelineOutput:
        """Run the chain (or retriever) on the question; its output in the contract."""
        arg: Any = query.text
        if self.input_key is not None:
            arg = {self.input_key: query.text}
        collector = None
        if self.runnable:
            collector = _usage_collector()
            result = await self.target.ainvoke(arg, config={"callbacks": [collector]})
        elif _has(self.target, "ainvoke"):
            result = await self.target.ainvoke(arg)
        else:
            result = self.target.invoke(arg)
            if inspect.isawaitable(result):
                result = await result
        usage = collector.usage() if collector is not None else None
        if self.kind == "retriever":
            return PipelineOutput(answer="", usage=usage, contexts=langchain_contexts(
                result, id_key=self.id_key, score_key=self.score_key), contexts_given=True)
        return langchain_output(result, id_key=self.id_key, score_key=self.score_key,
                                answer_key=self.answer_key, context_key=self.context_key,
                                usage=usage)


# -- LlamaIndex ------------------------------------------------------------------------------


def _llamaindex_kind(obj: Any, target: _Target) -> str:
    """``"engine"`` or ``"retriever"``; ComponentError naming what ``obj`` is otherwise."""
    if _LLAMAINDEX.loaded():
        from llama_index.core.base.base_query_engine import BaseQueryEngine
        from llama_index.core.base.base_retriever import BaseRetriever

        if isinstance(obj, BaseQueryEngine):
            return "engine"
        if isinstance(obj, BaseRetriever):
            return "retriever"
    if _has(obj, "aquery", "query"):
        return "engine"
    if _has(obj, "aretrieve", "retrieve"):
        return "retriever"
    hint = ""
    if _has(obj, "as_query_engine"):
        hint = " (an index: name its .as_query_engine() or .as_retriever())"
    elif _has(obj, "ainvoke", "invoke"):
        hint = " (it looks like a LangChain Runnable: use type: langchain)"
    raise target.error(f"{target.spec!r} is {type(obj).__name__}, not a LlamaIndex query "
                       f"engine or retriever{hint}")


def llamaindex_contexts(nodes: Any, *, id_key: str | None = None) -> tuple[Context, ...]:
    """Contexts of LlamaIndex ``NodeWithScore`` objects (see the module docs for ids)."""
    if isinstance(nodes, str | bytes) or not isinstance(nodes, Sequence):
        raise OutputError(f"the source nodes are {type(nodes).__name__}, expected a list")
    return tuple(llamaindex_context(item, f"source node {i}", id_key=id_key)
                 for i, item in enumerate(nodes))


def llamaindex_output(response: Any, *, id_key: str | None = None) -> PipelineOutput:
    """The contract's output of a LlamaIndex ``Response``."""
    answer = getattr(response, "response", None)
    if not isinstance(answer, str):
        streaming = _has(response, "get_response", "async_response_gen", "response_gen")
        raise OutputError(
            f"the query engine returned {type(response).__name__} whose 'response' is not a "
            "string" + ("; build the engine without streaming" if streaming else ""))
    nodes = getattr(response, "source_nodes", None)
    return PipelineOutput(answer=answer, contexts=llamaindex_contexts(nodes or [], id_key=id_key),
                          contexts_given=nodes is not None)


class LlamaIndexPipeline:
    """A LlamaIndex query engine or retriever as a pipeline."""

    def __init__(self, *, object: str | None = None, engine: str | None = None,
                 id_key: str | None = None, concurrency: int = 1,
                 context: BuildContext | None = None) -> None:
        where = _where(context, _LLAMAINDEX)
        target = _spec({"object": object, "engine": engine}, "engine", where)
        self.target = _instantiate(_attribute(target, _LLAMAINDEX), target)
        self.kind = _llamaindex_kind(self.target, target)
        self.id_key = id_key
        #: cases asked at once (see pytest_ragbench.execution.asking)
        self.ragbench_concurrency = concurrency

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: see :func:`_check_object`."""
        _check_object(params, context, _LLAMAINDEX, "engine", _llamaindex_kind)

    async def answer(self, query: Query) -> PipelineOutput:
        """Ask the engine (or retriever) the question; its output in the contract."""
        names = ("aquery", "query") if self.kind == "engine" else ("aretrieve", "retrieve")
        method = getattr(self.target, names[0], None)
        result = await method(query.text) if callable(method) \
            else getattr(self.target, names[1])(query.text)
        if inspect.isawaitable(result):
            result = await result
        if self.kind == "retriever":
            return PipelineOutput(answer="",
                                  contexts=llamaindex_contexts(result, id_key=self.id_key),
                                  contexts_given=True)
        return llamaindex_output(result, id_key=self.id_key)
