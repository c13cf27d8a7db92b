"""The output contract of a RAG pipeline, and its normalisation.

The same shape for a Python return value, an HTTP response body and a line of a recorded file
(which adds ``query_id``)::

    {"answer": "...",
     "contexts": [{"id": "d1", "text": "...", "score": 0.8}, ...],   # or ["text", ...]
     "usage": {"prompt_tokens": 120, "completion_tokens": 30, "cost": 0.0004},  # optional
     "latency_ms": 812.5}                                               # optional

``usage`` may name its counts ``input_tokens`` / ``output_tokens`` (LangChain's
``usage_metadata``, Anthropic's ``usage``). Each context needs an ``id`` or a ``text`` (or
both); ``score`` is optional. A LangChain ``Document`` or a LlamaIndex node
(``NodeWithScore``) is a context too, read as the ``langchain`` and ``llamaindex`` pipelines
read them (:func:`langchain_context`, :func:`llamaindex_context`). ``contexts`` may be omitted
(an answer only: answer metrics still run, retrieval metrics are n/a); an empty list says the
system found nothing, a ranking of nothing that scores 0 on retrieval metrics. A Python
pipeline may also return a :class:`PipelineOutput` (with ``contexts_given=True`` when its empty
``contexts`` mean that nothing was found), or any object with ``answer`` / ``contexts`` /
``usage`` attributes (a dataclass, a pydantic model), or a bare string (the answer, no
contexts).

:func:`normalise_output` turns any of those into a :class:`PipelineOutput` or raises
:class:`OutputError` naming the first thing that is wrong. Nothing here imports pytest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import type_name


class OutputError(ValueError):
    """A pipeline's output does not follow the contract; the message says where and why."""


@dataclass(frozen=True)
class Context:
    """One context a pipeline used: its corpus id and/or its text, and an optional score."""

    id: str | None = None
    text: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class Usage:
    """What the pipeline reports having spent on one query (every field optional)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": self.cost}


@dataclass(frozen=True)
class PipelineOutput:
    """A normalised pipeline answer (also a welcome return type of Python pipelines)."""

    answer: str
    contexts: tuple[Context, ...] = ()
    usage: Usage | None = None
    latency_ms: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: The pipeline said which contexts it used, even none (``"contexts": []``): an empty
    #: ``contexts`` is then an empty ranking, scored 0 on retrieval metrics as a retriever
    #: that found nothing is; without it (an answer alone) they are n/a. Both normalise to
    #: ``()``, so only this tells a system that found nothing from one that does not say.
    contexts_given: bool = False


_TOP_KEYS = ("answer", "contexts", "usage", "latency_ms", "query_id", "metadata")
_CONTEXT_KEYS = ("id", "doc_id", "text", "score", "title", "metadata")


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """A mapping view of a dict, a pydantic model or an object with contract attributes."""
    if isinstance(value, Mapping):
        return value
    fields = getattr(type(value), "model_fields", None)
    if isinstance(fields, Mapping):
        # a pydantic model, read a level deep: its nested models (a chain's Documents) stay
        # objects, read as such; model_dump() made each Document a mapping keyed
        # page_content, read as its made-up id alone
        # its computed fields too (an answer made from its parts), which the dump held
        computed = getattr(type(value), "model_computed_fields", None)
        names = [*fields, *(computed if isinstance(computed, Mapping) else ())]
        data = {name: getattr(value, name) for name in names if hasattr(value, name)}
        extra = getattr(value, "model_extra", None)
        return {**(extra if isinstance(extra, Mapping) else {}), **data}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump()
        except Exception:
            dumped = None
        if isinstance(dumped, Mapping):
            return dumped
    if hasattr(value, "answer"):
        return {k: getattr(value, k) for k in ("answer", "contexts", "usage", "latency_ms")
                if hasattr(value, k)}
    return None


#: Token counts beyond this are no counts (and a record holding one could not be written).
_MAX_COUNT = 2**63


def _shown(value: Any) -> str:
    # repr of an integer past 4300 digits raises (Python's limit on int-to-text conversion)
    if isinstance(value, numbers.Integral) and abs(int(value)) >= 10**100:
        return f"an integer of {int(value).bit_length()} bits"
    return repr(value)


def is_number(value: Any) -> bool:
    """A real number, but not a bool: Python's, and numpy's scalars (vector stores hand out
    ``float32`` scores and ``int64`` ids), which register as :class:`numbers.Real`."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value: Any, where: str, *, integer: bool = False) -> float | int | None:
    if value is None:
        return None
    if not is_number(value):
        kind = "an integer" if integer else "a number"
        raise OutputError(f"{where} must be {kind}, got {type_name(value)}")
    if integer and isinstance(value, numbers.Integral):
        if value < 0:
            raise OutputError(f"{where} must be >= 0, got {_shown(value)}")
        if value >= _MAX_COUNT:
            raise OutputError(f"{where} must be below 2**63, got {_shown(value)}")
        return int(value)
    try:
        number = float(value)
    except OverflowError:
        raise OutputError(f"{where} must be a finite number, got {_shown(value)}") from None
    if integer:
        if not number.is_integer():
            raise OutputError(f"{where} must be an integer, got {number!r}")
        if number < 0:
            raise OutputError(f"{where} must be >= 0, got {value!r}")
        if number >= _MAX_COUNT:
            raise OutputError(f"{where} must be below 2**63, got {number!r}")
        return int(number)
    if not math.isfinite(number):
        raise OutputError(f"{where} must be a finite number, got {value!r}")
    return number


def _text(value: str, where: str) -> str:
    """``value`` as a plain ``str`` if it can be written as UTF-8: a lone surrogate (text
    decoded with ``errors="surrogateescape"``, or a JSON reply's ``"\\udce9"``) stopped the
    whole run where its record was written. A str subclass (LangChain's StrOutputParser
    answers with one) could not cross the xdist wire: it stopped every worker that had one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OutputError(f"{where} is not valid text: it holds the lone surrogate "
                          f"{value[exc.start]!r} at character {exc.start} (bytes decoded "
                          "with errors='surrogateescape', or a JSON \\udcXX escape?)") from None
    return value if type(value) is str else str.__str__(value)


_ID_KEYS = ("id", "doc_id")


def _finite(value: Any) -> float | None:
    if not is_number(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text_id(value: Any) -> str | None:
    if not (isinstance(value, str) or (is_number(value) and isinstance(value, numbers.Integral))):
        return None
    return str(value) or None


def _metadata_id(metadata: Any, id_key: str | None, what: str) -> str | None:
    """The corpus id in ``metadata``: under ``id_key`` (required there) or a default key."""
    metadata = metadata if isinstance(metadata, Mapping) else {}
    if id_key is not None:
        doc_id = _text_id(metadata.get(id_key))
        if doc_id is None:
            raise OutputError(f"{what} has no id under metadata[{id_key!r}] (its metadata "
                              f"keys: {', '.join(map(str, metadata)) or 'none'})")
        return doc_id
    return next((d for d in map(_text_id, (metadata.get(k) for k in _ID_KEYS)) if d), None)


def langchain_context(doc: Any, what: str, *, id_key: str | None = None,
                      score_key: str | None = "score") -> Context:
    """A LangChain ``Document`` as a context: its text is ``page_content``; its id is
    ``metadata[id_key]`` when ``id_key`` is set, else ``metadata["id"]`` / ``["doc_id"]``,
    else ``Document.id`` (vector stores make it up unless given one), else
    ``metadata["source"]``; its score is ``metadata[score_key]`` when a finite number."""
    text = getattr(doc, "page_content", None)
    if not isinstance(text, str):
        raise OutputError(f"{what} is {type(doc).__name__}, expected a Document "
                          "with page_content")
    metadata = getattr(doc, "metadata", None)
    doc_id = _metadata_id(metadata, id_key, what)
    if doc_id is None:
        doc_id = _text_id(getattr(doc, "id", None)) or (
            _text_id(metadata.get("source")) if isinstance(metadata, Mapping) else None)
    score = (_finite(metadata.get(score_key))
             if score_key and isinstance(metadata, Mapping) else None)
    return Context(id=doc_id, text=text, score=score)


def llamaindex_context(item: Any, what: str, *, id_key: str | None = None) -> Context:
    """A LlamaIndex ``NodeWithScore`` (or node) as a context: its text is
    ``node.get_content()``, its score ``.score``; its id is ``metadata[id_key]`` when set, else
    ``metadata["id"]`` / ``["doc_id"]``, else the id of the document the chunk came from
    (``node.source_node.node_id``), else ``node.node_id``."""
    node = getattr(item, "node", item)
    get_content = getattr(node, "get_content", None)
    text = get_content() if callable(get_content) else getattr(node, "text", None)
    if not isinstance(text, str):
        raise OutputError(f"{what} has no text")
    doc_id = _metadata_id(getattr(node, "metadata", None), id_key, what)
    if doc_id is None:
        source = getattr(node, "source_node", None)
        doc_id = (_text_id(getattr(source, "node_id", None))
                  or _text_id(getattr(node, "node_id", None)))
    return Context(id=doc_id, text=text, score=_finite(getattr(item, "score", None)))


def _is_llamaindex_node(value: Any) -> bool:
    """A LlamaIndex ``NodeWithScore`` or node (read by duck type: the library is optional)."""
    node = getattr(value, "node", value)
    return callable(getattr(node, "get_content", None)) and hasattr(node, "node_id")


def _context(value: Any, i: int) -> Context:
    where = f"contexts[{i}]"
    if isinstance(value, str):
        return Context(text=_text(value, where))
    # the documents of the user's own chain or index, as the langchain and llamaindex
    # pipelines read them: as pydantic models they dumped to mappings with neither an 'id'
    # nor a 'text' (an error), or, given a Document.id, to the id alone (the text was lost)
    if not isinstance(value, Mapping | Context):
        if isinstance(getattr(value, "page_content", None), str):
            value = langchain_context(value, where)
        elif _is_llamaindex_node(value):
            value = llamaindex_context(value, where)
    if isinstance(value, Context):
        # checked as a mapping is: a dataclass does not check its fields
        value = {"id": value.id, "text": value.text, "score": value.score}
    item = _as_mapping(value) if not isinstance(value, Mapping) else value
    if item is None and (hasattr(value, "id") or hasattr(value, "text")):
        item = {k: getattr(value, k) for k in ("id", "text", "score") if hasattr(value, k)}
    if item is None:
        raise OutputError(f"{where} is {type_name(value)}; expected a string (the text) or a "
                          "mapping with 'id' and/or 'text'")
    doc_id = item.get("id", item.get("doc_id"))
    text = item.get("text")
    if doc_id is not None and not isinstance(doc_id, str) and not (
            is_number(doc_id) and isinstance(doc_id, numbers.Integral)):
        raise OutputError(f"{where}.id must be a string, got {type_name(doc_id)}")
    if text is not None and not isinstance(text, str):
        raise OutputError(f"{where}.text must be a string, got {type_name(text)}")
    doc_id = None if doc_id is None or str(doc_id) == "" else _text(str(doc_id), f"{where}.id")
    if text is not None:
        text = _text(text, f"{where}.text")
    if doc_id is None and not (text and text.strip()):
        raise OutputError(f"{where} has neither an 'id' nor a non-empty 'text'")
    score = _number(item.get("score"), f"{where}.score")
    return Context(id=doc_id, text=text, score=score)


#: The contract's token counts, and the names other libraries give them.
_USAGE_KEYS = (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"))


def _usage(value: Any) -> Usage | None:
    if value is None:
        return None
    if isinstance(value, Usage):
        value = value.as_dict()  # checked as a mapping is
    data = _as_mapping(value) if not isinstance(value, Mapping) else value
    if data is None:
        raise OutputError(f"usage must be a mapping (prompt_tokens, completion_tokens, cost), "
                          f"got {type_name(value)}")
    cost = _number(data.get("cost"), "usage.cost")
    if cost is not None and cost < 0:
        raise OutputError(f"usage.cost must be >= 0, got {cost!r}")
    counts: dict[str, int | None] = {}
    for key, alias in _USAGE_KEYS:
        # LangChain's usage_metadata and Anthropic's usage name the counts otherwise: passed
        # on as they are, they counted no token at all
        name = key if data.get(key) is not None or data.get(alias) is None else alias
        counts[key] = _number(data.get(name), f"usage.{name}",
                              integer=True)  # type: ignore[assignment]
    if data and not {"cost", *(k for pair in _USAGE_KEYS for k in pair)} & set(data):
        keys = ", ".join(map(str, list(data)[:8]))
        raise OutputError(f"usage has none of prompt_tokens (or input_tokens), "
                          f"completion_tokens (or output_tokens), cost (its keys: {keys})")
    return Usage(prompt_tokens=counts["prompt_tokens"],
                 completion_tokens=counts["completion_tokens"], cost=cost)


def _library_hint(value: Any) -> str:
    """For what a LangChain chain or LlamaIndex query engine returned, passed on as it is:
    the pipeline type that reads it, or what to return instead ("" for anything else).
    Read by the module of its class: the libraries need not be imported to tell."""
    module = type(value).__module__ or ""
    if module.startswith("llama_index."):
        if hasattr(value, "source_nodes"):
            return (" (a LlamaIndex query engine's Response: name the engine with type: "
                    "llamaindex, or return {'answer': response.response, "
                    "'contexts': response.source_nodes})")
        return " (a LlamaIndex object: name the query engine with type: llamaindex)"
    if module.startswith(("langchain_core.", "langchain.", "langgraph.")):
        if module.startswith("langchain_core.messages"):
            return (" (a LangChain message: name the chain with type: langchain, or return "
                    "its .content)")
        return " (a LangChain object: name the chain with type: langchain)"
    return ""


def normalise_output(value: Any) -> PipelineOutput:
    """``value`` (see the module docs) as a :class:`PipelineOutput`; :class:`OutputError` if
    it does not follow the contract."""
    # whether the output said which contexts it used (see PipelineOutput.contexts_given); for
    # a mapping, whether it holds a list of them, found below
    given: bool | None = None
    if isinstance(value, PipelineOutput):
        given = value.contexts_given
        # checked as a mapping is: a dataclass does not check its fields (a None answer, a
        # negative token count, a NaN latency went through)
        value = {**(value.extra or {}), "answer": value.answer,
                 "contexts": list(value.contexts or ()), "usage": value.usage,
                 "latency_ms": value.latency_ms}
    if isinstance(value, str):
        return PipelineOutput(answer=_text(value, "'answer'"))
    data = _as_mapping(value)
    if data is None:
        raise OutputError(f"returned {type_name(value)}; expected a mapping "
                          "{'answer': str, 'contexts': [...], 'usage': {...}}, a "
                          f"PipelineOutput or a string{_library_hint(value)}")
    if "answer" not in data:
        keys = ", ".join(repr(k) for k in list(data)[:8]) or "none"
        raise OutputError(f"the output has no 'answer' (its keys: {keys})"
                          f"{_library_hint(value)}")
    answer = data["answer"]
    if not isinstance(answer, str):
        raise OutputError(f"'answer' must be a string, got {type_name(answer)}")
    answer = _text(answer, "'answer'")
    raw_contexts = data.get("contexts")
    if given is None:
        given = raw_contexts is not None
    if raw_contexts is None:
        raw_contexts = []
    if isinstance(raw_contexts, str | bytes) or not isinstance(raw_contexts, Sequence):
        raise OutputError(f"'contexts' must be a list, got {type_name(raw_contexts)}")
    contexts = tuple(_context(c, i) for i, c in enumerate(raw_contexts))
    latency = _number(data.get("latency_ms"), "latency_ms")
    if latency is not None and latency < 0:
        raise OutputError(f"latency_ms must be >= 0, got {latency!r}")
    extra = {k: v for k, v in data.items() if k not in _TOP_KEYS}
    return PipelineOutput(answer=answer, contexts=contexts, usage=_usage(data.get("usage")),
                          latency_ms=latency, extra=extra, contexts_given=given)
