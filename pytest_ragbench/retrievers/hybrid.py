"""Hybrid retrieval: fuse the rankings of other retrievers of the same suite.

Suite syntax (the named retrievers are the suite's own, built once per process and shared with
their own test items)::

    retrievers:
      bm25: {}
      dense: {type: dense, embedder: {type: hashing}}
      fused: {type: hybrid, retrievers: [bm25, dense], method: rrf}

Each fused retriever is asked for its top ``depth`` (default 100, at least ``k``) documents;
rankings are read in trec_eval order (score descending, ties by id descending).

``method: rrf`` (reciprocal rank fusion, Cormack et al. 2009)
    ``score(d) = sum_r w_r / (rrf_k + rank_r(d))`` over the retrievers ``r`` that returned
    ``d``, ``rank`` 1-based, ``rrf_k`` 60 by default.
``method: weighted``
    each retriever's scores are min-max normalised *per query* over the documents it returned
    (all 1.0 when they are equal), then ``score(d) = sum_r w_r * norm_r(d)``; a document a
    retriever did not return contributes 0 for it.

``weights`` is a list aligned with ``retrievers`` or a mapping name -> weight (missing names
weigh 1.0); default 1.0 each; numbers >= 0, not all 0 (every document would score 0).
``rrf_k`` is given only with ``method: rrf`` (the other method would ignore it). The fused
list is cut to ``k`` in trec_eval order. When a fused retriever offers ``retrieve_case`` (the
run-file retriever does), it gets the whole query.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from ..datasets import Document, Query
from ..errors import ParamValueError, did_you_mean
from ..metrics.retrieval import trec_order
from ..registry import BuildContext

METHODS = ("rrf", "weighted")
DEFAULT_RRF_K = 60


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _await_all(pending: Sequence[Awaitable[Any]]) -> None:
    for item in pending:
        await item


def _validate(retrievers: Any, method: Any, rrf_k: Any, weights: Any, depth: Any) -> None:
    """Check a hybrid's parameters (``rrf_k`` None: not given), as a suite's author wrote
    them: a parameter its method ignores, or weights that leave nothing to rank by, are
    errors rather than a fused ranking no one asked for. A ParamValueError names every
    parameter at fault (a bad method hid a bad depth)."""
    problems = _problems(retrievers, method, rrf_k, weights, depth)
    if problems:
        raise ParamValueError.combine(problems)


def _problems(retrievers: Any, method: Any, rrf_k: Any, weights: Any, depth: Any,
              ) -> list[ParamValueError]:
    bad = ParamValueError.at
    problems = []
    names: list[str] = []
    if isinstance(retrievers, str) or not isinstance(retrievers, Sequence) or not retrievers:
        problems.append(bad("retrievers", f"must be a non-empty list of retriever names, "
                                          f"got {retrievers!r}"))
    else:
        names = [r for r in retrievers if isinstance(r, str)]
        if len(set(names)) != len(names):
            problems.append(bad("retrievers", f"lists a name twice: {list(retrievers)!r}"))
    if method not in METHODS:
        problems.append(bad("method", f"must be one of {', '.join(METHODS)}, got {method!r}"))
    if rrf_k is not None:
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int | float) or not (
                math.isfinite(rrf_k) and rrf_k >= 0):
            problems.append(bad("rrf_k", f"must be a number >= 0, got {rrf_k!r}"))
        elif method in METHODS and method != "rrf":
            problems.append(bad("rrf_k", f"is a parameter of method: rrf; method: {method} "
                                         "does not use it"))
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        problems.append(bad("depth", f"must be a positive integer, got {depth!r}"))
    weights_problem = _weights_problem(weights, names, retrievers)
    if weights_problem:
        problems.append(bad("weights", weights_problem))
    return problems


def _weights_problem(weights: Any, names: Sequence[str], retrievers: Any) -> str | None:
    """What is wrong with ``weights`` (its first problem: they are one key), or None."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        unknown = [w for w in weights if w not in names]
        if unknown:
            return f"names {', '.join(map(str, unknown))}, not among retrievers {names}"
        # a name left out weighs 1.0
        values = [weights.get(n, 1.0) for n in names]
    elif isinstance(weights, Sequence) and not isinstance(weights, str):
        if isinstance(retrievers, Sequence) and len(weights) != len(retrievers):
            return f"has {len(weights)} values for {len(retrievers)} retrievers"
        values = list(weights)
    else:
        return f"must be a list or a mapping, got {weights!r}"
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return f"must be numbers, got {weights!r}"
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return f"must be finite numbers >= 0, got {weights!r}"
    if not any(values):
        return f"are all 0, got {weights!r}: every document would score 0"
    return None


def min_max(hits: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores rescaled to [0, 1] over one ranking; all 1.0 when they are all equal."""
    if not hits:
        return {}
    scores = [s for _, s in hits]
    lo, hi = min(scores), max(scores)
    out: dict[str, float] = {}
    for doc, s in hits:
        out.setdefault(doc, 1.0 if hi == lo else (s - lo) / (hi - lo))
    return out


def fuse(rankings: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float],
         method: str, rrf_k: float, k: int) -> list[tuple[str, float]]:
    """Fuse ``rankings`` (one list of (doc, score) per retriever) into the top ``k``."""
    fused: dict[str, float] = {}
    for hits, w in zip(rankings, weights, strict=True):
        if method == "rrf":
            for rank, doc in enumerate(trec_order(hits), start=1):
                fused[doc] = fused.get(doc, 0.0) + w / (rrf_k + rank)
        else:
            for doc, s in min_max(hits).items():
                fused[doc] = fused.get(doc, 0.0) + w * s
    ranked = trec_order(list(fused.items()))[:k]
    return [(d, fused[d]) for d in ranked]


class HybridRetriever:
    """Rank fusion over other retrievers (module docs); a ``Retriever``.

    ``retrievers`` holds names of the suite's retrievers (resolved through the plugin's build
    context) or, from Python, retriever objects (indexed by :meth:`index`).
    """

    def __init__(self, *, retrievers: Sequence[Any], method: str = "rrf",
                 rrf_k: float | None = None,
                 weights: Sequence[float] | Mapping[str, float] | None = None,
                 depth: int = 100, context: BuildContext | None = None) -> None:
        _validate(retrievers, method, rrf_k, weights, depth)
        self.names = [r if isinstance(r, str) else type(r).__name__ for r in retrievers]
        self._refs = list(retrievers)
        self.method = method
        self.rrf_k = float(DEFAULT_RRF_K if rrf_k is None else rrf_k)
        self.depth = depth
        if weights is None:
            self.weights = [1.0] * len(self._refs)
        elif isinstance(weights, Mapping):
            self.weights = [float(weights.get(n, 1.0)) for n in self.names]
        else:
            self.weights = [float(w) for w in weights]
        self._context = context
        self._subs: list[Any] = []

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: the names exist in the suite, are not this one, form no cycle."""
        refs = params.get("retrievers")
        problems = _problems(refs, params.get("method", "rrf"), params.get("rrf_k"),
                             params.get("weights"), params.get("depth", 100))
        siblings = context.siblings
        listed = (isinstance(refs, Sequence) and not isinstance(refs, str)
                  and not any(p.path == ("retrievers",) for p in problems))
        for i, name in enumerate(refs if listed else ()):
            if not isinstance(name, str):
                detail = f"retrievers must be names of this suite's retrievers, got {name!r}"
            elif name == context.name:
                detail = f"retriever {name!r} cannot fuse itself"
            elif siblings and name not in siblings:
                detail = (f"retriever {name!r} is not in this suite (it has: "
                          f"{', '.join(sorted(siblings))}){did_you_mean(name, siblings)}")
            else:
                continue
            problems.append(ParamValueError(detail, path=("retrievers", i), detail=detail))
        if problems:
            raise ParamValueError.combine(problems)
        if siblings and context.name:
            _check_cycles(context.name, siblings)

    def describe(self) -> dict[str, Any]:
        return {"retriever": "hybrid", "method": self.method, "retrievers": self.names,
                "weights": self.weights, "rrf_k": self.rrf_k, "depth": self.depth}

    def index(self, corpus: Sequence[Document]) -> Awaitable[None] | None:
        """Find (names) or index (objects) the fused retrievers.

        Not a coroutine: looking a name up may build and index that retriever, which the
        plugin does on its own event loop, so it must not happen inside a running one. The
        indexing of retriever *objects* that have an async ``index`` is returned as an
        awaitable.
        """
        subs = []
        pending = []
        for ref in self._refs:
            if isinstance(ref, str):
                lookup = self._context.retriever if self._context is not None else None
                if lookup is None:
                    raise ValueError(f"cannot find retriever {ref!r}: a hybrid retriever built "
                                     "outside a suite needs retriever objects, not names")
                subs.append(lookup(ref))
            else:
                done = ref.index(corpus)
                if inspect.isawaitable(done):
                    pending.append(done)
                subs.append(ref)
        self._subs = subs
        return _await_all(pending) if pending else None

    async def _ranking(self, sub: Any, query: Query | str, depth: int) -> Any:
        if isinstance(query, Query):
            if callable(getattr(sub, "retrieve_case", None)):
                return await _maybe_await(sub.retrieve_case(query, depth))
            query = query.text
        return await _maybe_await(sub.retrieve(query, depth))

    async def retrieve_case(self, query: Query, k: int) -> list[tuple[str, float]]:
        """Fuse the rankings of every retriever for ``query``."""
        if len(self._subs) != len(self._refs):
            raise RuntimeError("index() must be called before retrieve()")
        depth = max(k, self.depth)
        rankings = [list(await self._ranking(sub, query, depth)) for sub in self._subs]
        return fuse(rankings, self.weights, self.method, self.rrf_k, k)

    async def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        """:meth:`retrieve_case` for a bare query text (run-file retrievers cannot take it)."""
        if len(self._subs) != len(self._refs):
            raise RuntimeError("index() must be called before retrieve()")
        depth = max(k, self.depth)
        rankings = [list(await self._ranking(sub, query, depth)) for sub in self._subs]
        return fuse(rankings, self.weights, self.method, self.rrf_k, k)


def _check_cycles(start: str, siblings: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
    """Raise when following hybrid references from ``start`` comes back to a retriever."""

    def refs(name: str) -> list[str]:
        rtype, params = siblings.get(name, ("", {}))
        if rtype != "hybrid":
            return []
        value = params.get("retrievers")
        return [r for r in value if isinstance(r, str)] if isinstance(value, list) else []

    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = [*path[path.index(name):], name]
            raise ValueError(f"hybrid retrievers form a cycle: {' -> '.join(cycle)}")
        path.append(name)
        for r in refs(name):
            visit(r)
        path.pop()

    visit(start)
