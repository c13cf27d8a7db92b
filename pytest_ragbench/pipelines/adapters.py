"""Adapters for RAG systems built with LangChain or LlamaIndex (``type: langchain`` /
``type: llamaindex``).

Suite syntax::

    pipelines:
      chain:
        type: langchain
        chain: my_app.rag:chain          # a Runnable, or a factory returning one
        input_key: question              # optional: invoke({"question": text}); else invoke(text)
      engine:
        type: llamaindex
        engine: my_app.index:query_engine   # a query engine, or a factory returning one

Neither library is imported here: the adapters read the shapes those libraries return, so they
work with whatever version the application uses and cost nothing when unused.

LangChain: ``ainvoke`` (else ``invoke``) is called; the result may be a string, a message
(``.content``), or a mapping whose answer is under ``answer``, ``result``, ``output`` or
``text`` and whose documents are under ``context``, ``source_documents`` or ``documents``
(each a ``Document``: ``page_content``, ``metadata``; its id is ``doc.id`` or
``metadata["id"]`` / ``["doc_id"]`` / ``["source"]``).

LlamaIndex: ``aquery`` (else ``query``) is called; the response's ``response`` is the answer
and its ``source_nodes`` (``NodeWithScore``: ``.node.node_id``, ``.node.get_content()``,
``.score``) the contexts; a node's ``metadata["id"]`` / ``["doc_id"]`` wins over its
``node_id`` (which LlamaIndex makes up per chunk unless told otherwise).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..datasets import Query
from ..registry import BuildContext
from .contract import Context, OutputError, PipelineOutput

_ANSWER_KEYS = ("answer", "result", "output", "text")
_DOC_KEYS = ("context", "source_documents", "documents")
_ID_KEYS = ("id", "doc_id", "source")


def _target(spec: str, what: str) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{what} must be 'package.module:attr', got {spec!r}")
    return spec


def _load(spec: str) -> Any:
    """The object at ``spec``; a class or function with no required argument is called."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for {spec!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if inspect.isclass(obj) or inspect.isfunction(obj):
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):
            return obj
        if all(p.default is not inspect.Parameter.empty or p.kind in
               (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return obj()
    return obj


async def _call(obj: Any, async_name: str, sync_name: str, arg: Any) -> Any:
    method = getattr(obj, async_name, None)
    if callable(method):
        return await method(arg)
    method = getattr(obj, sync_name, None)
    if not callable(method):
        raise OutputError(f"{type(obj).__name__} has neither {async_name}() nor {sync_name}()")
    result = method(arg)
    return await result if inspect.isawaitable(result) else result


def _doc_id(metadata: Any, fallback: Any = None) -> str | None:
    if isinstance(metadata, Mapping):
        for key in _ID_KEYS:
            value = metadata.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    return str(fallback) if fallback not in (None, "") else None


class LangChainPipeline:
    """A LangChain ``Runnable`` (a chain, an agent, a graph) as a pipeline."""

    def __init__(self, *, chain: str, input_key: str | None = None) -> None:
        self.chain = _load(_target(chain, "chain"))
        self.input_key = input_key

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: the target's form (it is imported when built)."""
        _target(params.get("chain"), "chain")

    async def answer(self, query: Query) -> PipelineOutput:
        arg = query.text if self.input_key is None else {self.input_key: query.text}
        return langchain_output(await _call(self.chain, "ainvoke", "invoke", arg))


def langchain_output(result: Any) -> PipelineOutput:
    """The contract's output of what a LangChain runnable returned."""
    if isinstance(result, str):
        return PipelineOutput(answer=result)
    if hasattr(result, "content") and not isinstance(result, Mapping):
        return PipelineOutput(answer=str(result.content))
    if not isinstance(result, Mapping):
        raise OutputError(f"the chain returned {type(result).__name__}; expected a string, a "
                          "message or a mapping with an answer")
    key = next((k for k in _ANSWER_KEYS if k in result), None)
    if key is None:
        raise OutputError(f"the chain's output has none of {', '.join(_ANSWER_KEYS)} "
                          f"(its keys: {', '.join(map(str, result))})")
    answer = result[key]
    if hasattr(answer, "content"):
        answer = answer.content
    if not isinstance(answer, str):
        raise OutputError(f"the chain's {key!r} is {type(answer).__name__}, expected a string")
    docs = next((result[k] for k in _DOC_KEYS if k in result), None) or []
    if isinstance(docs, str | bytes) or not isinstance(docs, Sequence):
        raise OutputError(f"the chain's documents are {type(docs).__name__}, expected a list")
    contexts = []
    for i, doc in enumerate(docs):
        text = getattr(doc, "page_content", None)
        if not isinstance(text, str):
            raise OutputError(f"document {i} is {type(doc).__name__}, expected a Document "
                              "with page_content")
        doc_id = getattr(doc, "id", None) or _doc_id(getattr(doc, "metadata", None))
        contexts.append(Context(id=str(doc_id) if doc_id else None, text=text))
    return PipelineOutput(answer=answer, contexts=tuple(contexts))


class LlamaIndexPipeline:
    """A LlamaIndex query engine as a pipeline."""

    def __init__(self, *, engine: str) -> None:
        self.engine = _load(_target(engine, "engine"))

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: the target's form (it is imported when built)."""
        _target(params.get("engine"), "engine")

    async def answer(self, query: Query) -> PipelineOutput:
        return llamaindex_output(await _call(self.engine, "aquery", "query", query.text))


def llamaindex_output(response: Any) -> PipelineOutput:
    """The contract's output of a LlamaIndex ``Response``."""
    answer = getattr(response, "response", None)
    if not isinstance(answer, str):
        raise OutputError(f"the query engine returned {type(response).__name__} whose "
                          "'response' is not a string")
    contexts = []
    for i, item in enumerate(getattr(response, "source_nodes", None) or []):
        node = getattr(item, "node", item)
        get_content = getattr(node, "get_content", None)
        text = get_content() if callable(get_content) else getattr(node, "text", None)
        if not isinstance(text, str):
            raise OutputError(f"source node {i} has no text")
        doc_id = _doc_id(getattr(node, "metadata", None), getattr(node, "node_id", None))
        score = getattr(item, "score", None)
        contexts.append(Context(id=doc_id, text=text,
                                score=float(score) if isinstance(score, int | float)
                                and not isinstance(score, bool) and math.isfinite(score)
                                else None))
    return PipelineOutput(answer=answer, contexts=tuple(contexts))
