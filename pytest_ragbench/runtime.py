"""Per-process execution of a suite's cases: load once, build once, run one case at a time.

Each process (the pytest controller without xdist, or each xdist worker) owns one
:class:`SuiteRuntime` per suite. The dataset is read once, each retriever is built and indexed
once (lazily, on the first case that needs it), and :meth:`SuiteRuntime.run_case` turns one
(retriever, query) into a JSON-safe record (see :mod:`pytest_ragbench.records`).
Nothing here imports pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import Sequence
from typing import Any

from .datasets import Dataset, Query, load_dataset
from .errors import RagbenchError
from .metrics.retrieval import parse_metric, trec_order
from .records import SCHEMA_VERSION, clean_float
from .registry import BuildContext, Registry
from .suite import Suite


class CaseError(RagbenchError):
    """A case could not be evaluated; the message is the reason shown to the user."""

    def __init__(self, stage: str, message: str, etype: str = "Error") -> None:
        super().__init__(message)
        self.stage = stage
        self.etype = etype


class SuiteRuntime:
    """Runs the cases of one suite inside one process."""

    def __init__(self, suite: Suite, suite_id: str, registry: Registry,
                 ctx: BuildContext) -> None:
        self.suite = suite
        self.suite_id = suite_id
        self.registry = registry
        self.ctx = ctx
        self._dataset: Dataset | None = None
        self._queries: dict[str, Query] = {}
        self._doc_ids: frozenset[str] = frozenset()
        self._retrievers: dict[str, Any] = {}
        self._failed: dict[str, CaseError] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metric_objs = {
            m.name: parse_metric(m.name) for m in suite.metrics if m.family == "retrieval"
        }

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.suite.dataset)
            self._queries = {q.id: q for q in self._dataset.queries}
            self._doc_ids = self._dataset.doc_ids()
        return self._dataset

    def query(self, case_id: str) -> Query:
        _ = self.dataset
        return self._queries[case_id]

    def _run(self, value: Any) -> Any:
        """Await ``value`` on this runtime's event loop when a component is async."""
        if not inspect.isawaitable(value):
            return value
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(value)

    def retriever(self, name: str) -> Any:
        """The built and indexed retriever ``name``; a failure is remembered, not retried."""
        if name in self._retrievers:
            return self._retrievers[name]
        if name in self._failed:
            raise self._failed[name]
        spec = next(r for r in self.suite.retrievers if r.name == name)
        try:
            instance = self.registry.build("retriever", spec.type, spec.params, self.ctx)
            self._run(instance.index(self.dataset.corpus))
        except Exception as exc:
            err = CaseError("index", f"retriever {name!r} ({spec.type}) could not be built or "
                                     f"indexed: {type(exc).__name__}: {exc}", type(exc).__name__)
            self._failed[name] = err
            raise err from exc
        self._retrievers[name] = instance
        return instance

    def _check_hits(self, name: str, hits: Any, k: int) -> list[tuple[str, float]]:
        if not isinstance(hits, Sequence) or isinstance(hits, str | bytes):
            raise CaseError("retrieve", f"retriever {name!r} returned {type(hits).__name__}, "
                                        "expected a list of (doc_id, score) pairs")
        if len(hits) > k:
            raise CaseError("retrieve", f"retriever {name!r} returned {len(hits)} results, "
                                        f"more than k={k}")
        out: list[tuple[str, float]] = []
        seen: set[str] = set()
        for i, hit in enumerate(hits):
            try:
                doc_id, score = hit
                doc_id, score = str(doc_id), float(score)
            except (TypeError, ValueError):
                raise CaseError("retrieve", f"retriever {name!r} result {i} is {hit!r}, "
                                            "expected a (doc_id, score) pair") from None
            if doc_id not in self._doc_ids:
                raise CaseError("retrieve", f"retriever {name!r} returned unknown document id "
                                            f"{doc_id!r} at rank {i + 1}")
            if doc_id in seen:
                raise CaseError("retrieve", f"retriever {name!r} returned document {doc_id!r} "
                                            "twice")
            if not math.isfinite(score):
                raise CaseError("retrieve", f"retriever {name!r} returned a non-finite score "
                                            f"({score}) for {doc_id!r}")
            seen.add(doc_id)
            out.append((doc_id, score))
        return out

    def run_case(self, retriever_name: str, case_id: str, run: int = 0) -> dict[str, Any]:
        """Evaluate one case and return its record (status "error" carries the reason)."""
        suite = self.suite
        query = self.query(case_id)
        rec: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "suite": self.suite_id,
            "suite_name": suite.name,
            "suite_hash": suite.suite_hash,
            "dataset_hash": self.dataset.content_hash,
            "retriever": retriever_name,
            "case_id": case_id,
            "run": run,
            "query": query.text,
            "type": query.type,
            "difficulty": query.difficulty,
            "tags": list(query.tags),
            "status": "ok",
            "error": None,
            "metrics": {m.name: None for m in suite.metrics},
            "latency_ms": None,
            "n_relevant": query.num_relevant if query.judged else None,
            "no_relevant": query.judged and query.num_relevant == 0,
            "retrieved": [],
            "missed": [],
            "thresholds": [],
        }
        try:
            retriever = self.retriever(retriever_name)
            t0 = time.perf_counter()
            try:
                raw = self._run(retriever.retrieve(query.text, suite.k))
            except Exception as exc:
                raise CaseError("retrieve", f"retriever {retriever_name!r} raised "
                                            f"{type(exc).__name__}: {exc}",
                                type(exc).__name__) from exc
            latency = (time.perf_counter() - t0) * 1000.0
            hits = self._check_hits(retriever_name, raw, suite.k)
        except CaseError as exc:
            rec["status"] = "error"
            rec["error"] = {"stage": exc.stage, "type": exc.etype, "message": str(exc)}
            return rec

        rec["latency_ms"] = round(latency, 3)
        ranked = trec_order(hits)
        scores = dict(hits)
        grades = query.relevant
        rec["retrieved"] = [
            [d, clean_float(scores[d]), grades.get(d)] for d in ranked[: suite.record_depth]
        ]
        got = set(ranked)
        rec["missed"] = sorted(
            ([d, g] for d, g in grades.items() if g > 0 and d not in got),
            key=lambda x: (-x[1], x[0]),
        )[: suite.record_depth]
        for m in suite.metrics:
            if m.family == "retrieval":
                rec["metrics"][m.name] = (
                    clean_float(self._metric_objs[m.name].compute(ranked, grades))
                    if query.judged else None
                )
            elif m.name == "latency_ms":
                rec["metrics"][m.name] = rec["latency_ms"]
        for gate in suite.thresholds:
            value = rec["metrics"].get(gate.metric)
            # A value that could not be computed (an unjudged query) is counted as NaN in the
            # summary; it neither passes nor fails a per-query threshold.
            passed = None if value is None else gate.passes(value)
            rec["thresholds"].append({
                "metric": gate.metric, "op": gate.op, "threshold": gate.threshold,
                "value": value, "passed": passed,
                "margin": None if value is None else clean_float(gate.margin(value)),
            })
            if passed is False:
                rec["status"] = "failed"
        return rec

    def close(self) -> None:
        """Close retrievers that have a ``close``/``aclose`` and the event loop."""
        for r in self._retrievers.values():
            for meth in ("aclose", "close"):
                fn = getattr(r, meth, None)
                if callable(fn):
                    # Teardown must not mask results.
                    with contextlib.suppress(Exception):
                        self._run(fn())
                    break
        self._retrievers.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
