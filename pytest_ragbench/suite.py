"""Suite files: schema, loading and validation with precise errors.

A suite file (YAML or JSON) names a dataset, the retrievers to run, the metrics to compute, the
per-query thresholds (an item fails below them) and the suite gates (the run fails when a mean
misses them). Paths resolve relative to the suite file. Every mistake is a
:class:`~pytest_ragbench.errors.SuiteError` naming the file, the key path and, for YAML, the line.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .datasets import DatasetSpec
from .errors import SuiteError, did_you_mean
from .gates import (
    TESTS,
    BaselineSettings,
    Gate,
    GateCheck,
    Tolerance,
    parse_gate,
    parse_gate_list,
    parse_tolerance,
)
from .metrics.spec import MetricSpec, resolve_metric

_TOP_KEYS = {
    "name": "a short name for reports",
    "description": "free text",
    "dataset": "where the corpus, queries and labels are",
    "retrievers": "the retrievers to run, by name",
    "metrics": "metric names such as ndcg@10",
    "k": "how many documents each retriever returns",
    "thresholds": "per-query minimums: an item fails below them",
    "gates": "suite gates on the means",
    "baseline": "baseline comparison settings (tolerance, require_same_dataset, test, alpha)",
    "seed": "seed for bootstrap confidence intervals",
    "record_depth": "how many retrieved documents each record keeps for reports",
    "xfail": "known failures: query id -> reason (the item is reported as xfailed)",
    "llm": "the generation LLM (openai-compatible endpoint or the offline extractive one)",
    "judge": "the LLM judge for faithfulness, context precision/recall, ...",
    "embedder": "the embedder for answer relevancy",
    "generation": "how answers are generated (contexts, prompt template)",
    "cache": "the LLM response cache (path, mode)",
    "prices": "USD per 1M prompt/completion tokens, per model",
    "max_cost": "stop paid LLM calls once this many USD are spent",
    "runs": "repeat generation and judging this many times per case",
}
_RAG_KEYS = ("llm", "judge", "embedder", "generation", "cache", "prices", "max_cost", "runs")
_DATASET_KEYS = {
    "name", "path", "split", "corpus", "queries", "qrels", "query_ids", "max_queries",
    "answer_field", "documents", "items",
}
_BASELINE_KEYS = {"tolerance", "require_same_dataset", "test", "alpha"}


@dataclass(frozen=True)
class ComponentSpec:
    """A component named in a suite: its name in reports, its type and its parameters."""

    name: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    key: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Suite:
    """A validated suite definition (the dataset itself is loaded lazily, per process)."""

    name: str
    path: Path
    dataset: DatasetSpec
    retrievers: tuple[ComponentSpec, ...]
    metrics: tuple[MetricSpec, ...]
    k: int
    thresholds: tuple[Gate, ...]
    gates: tuple[GateCheck, ...]
    tolerances: Mapping[str, Tolerance] = field(compare=False, hash=False, default_factory=dict)
    baseline_settings: BaselineSettings = field(compare=False, hash=False,
                                                default_factory=BaselineSettings)
    seed: int = 0
    record_depth: int = 20
    suite_hash: str = ""
    xfail: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    rag: Any = field(default=None, compare=False, hash=False)  # rag.RagConfig when answers run
    runs: int = 1

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)


class _Lines:
    """Maps key paths of a YAML document to 1-based line numbers, for error messages."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[Any, ...], int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self._lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k_node, v_node in node.value:
                key = k_node.value
                self._lines[(*path, key)] = k_node.start_mark.line + 1
                self._walk(v_node, (*path, key))
                self._lines[(*path, key)] = k_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    def get(self, path: tuple[Any, ...]) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get(())


def _key_str(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _Ctx:
    def __init__(self, file: Path, lines: _Lines) -> None:
        self.file = file
        self.lines = lines

    def error(self, path: tuple[Any, ...], message: str) -> SuiteError:
        return SuiteError(message, file=self.file, key=_key_str(path) or None,
                          line=self.lines.get(path))

    def check_keys(self, obj: Mapping[str, Any], allowed: Sequence[str] | set[str],
                   path: tuple[Any, ...]) -> None:
        for key in obj:
            if key not in allowed:
                raise self.error(
                    (*path, key),
                    f"unknown key {key!r}{did_you_mean(str(key), allowed)} "
                    f"(expected one of: {', '.join(sorted(allowed))})",
                )

    def mapping(self, value: Any, path: tuple[Any, ...]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {_type_name(value)}")
        return value

    def positive_int(self, value: Any, path: tuple[Any, ...]) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected a positive integer, got {value!r}")
        if value <= 0:
            raise self.error(path, f"must be a positive integer, got {value}")
        return value


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


MetricResolver = Callable[[str, Mapping[str, Any]], MetricSpec]


def load_suite(path: Path, known_retrievers: Sequence[str] | None,
               metric_resolver: MetricResolver | None = None) -> Suite:
    """Load and validate the suite file at ``path``.

    ``known_retrievers`` lists the retriever type names the registry can build, for checking
    names and suggesting the closest one (None: the caller checks them). ``metric_resolver``
    turns a metric entry (name, parameters) into a MetricSpec (default: built-ins and installed
    entry points, see :func:`~pytest_ragbench.metrics.spec.resolve_metric`).
    """
    path = Path(path)
    if not path.is_file():
        raise SuiteError("suite file not found", file=path)
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(
            f"not valid YAML/JSON: {problem}", file=path,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    ctx = _Ctx(path, _Lines(text))
    if not isinstance(data, Mapping):
        raise ctx.error((), f"expected a mapping at the top level, got {_type_name(data)}")
    ctx.check_keys(data, _TOP_KEYS, ())
    for required in ("dataset", "retrievers", "metrics"):
        if required not in data:
            raise ctx.error((), f"missing required key {required!r} ({_TOP_KEYS[required]})")

    name = data.get("name") or path.name.split(".")[0]
    if not isinstance(name, str):
        raise ctx.error(("name",), f"expected a string, got {_type_name(name)}")

    metrics = _parse_metrics(ctx, data["metrics"], metric_resolver or _resolve_metric)
    baseline = _parse_baseline(ctx, data.get("baseline") or {})
    by_name = {m.name: m for m in metrics}
    default_k = max([m.k for m in metrics if m.k] + [10])
    if any(m.kind in ("map", "ndcg", "r_precision", "mrr") and m.k is None for m in metrics):
        default_k = max(default_k, 1000)  # uncut measures look at trec_eval's full depth
    k = ctx.positive_int(data["k"], ("k",)) if "k" in data else default_k

    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ctx.error(("seed",), f"expected an integer, got {seed!r}")
    depth = (
        ctx.positive_int(data["record_depth"], ("record_depth",)) if "record_depth" in data
        else 20
    )

    rag = _parse_rag(ctx, data, metrics, seed)
    return Suite(
        name=name,
        path=path,
        dataset=_parse_dataset(ctx, data["dataset"], path.parent, name),
        retrievers=_parse_retrievers(ctx, data["retrievers"], known_retrievers),
        metrics=metrics,
        k=k,
        thresholds=tuple(
            g for g in _parse_gates(ctx, data.get("thresholds") or {}, ("thresholds",), by_name)
            if isinstance(g, Gate)
        ),
        gates=_parse_gates(ctx, data.get("gates") or {}, ("gates",), by_name),
        tolerances=baseline.tolerances or {},
        baseline_settings=baseline,
        seed=seed,
        record_depth=depth,
        suite_hash=hashlib.sha256(raw).hexdigest(),
        xfail=_parse_xfail(ctx, data.get("xfail") or {}),
        rag=rag,
        runs=rag.runs if rag is not None else 1,
    )


def _parse_rag(ctx: _Ctx, data: Mapping[str, Any], metrics: Sequence[MetricSpec],
               seed: int) -> Any:
    """The generation/judging part of a suite, or None for a retrieval-only suite."""
    rag_data = {k: data[k] for k in _RAG_KEYS if k in data}
    needs = [m.name for m in metrics if m.family == "rag"]
    if not rag_data and not needs:
        return None
    from .rag import parse_rag_config

    if "llm" not in rag_data:
        raise ctx.error(("metrics",), f"metric(s) {', '.join(needs)} need an 'llm' section "
                                      "(e.g. llm: {type: extractive} for an offline run)")
    try:
        return parse_rag_config({**rag_data, "seed": seed})
    except ValueError as exc:
        key, sep, message = str(exc).partition(": ")
        if not sep or " " in key:
            raise ctx.error((), str(exc)) from None
        raise ctx.error(tuple(key.split(".")), message) from None


def _parse_xfail(ctx: _Ctx, value: Any) -> Mapping[str, str]:
    if isinstance(value, list):
        value = {str(q): "known failure" for q in value}
    data = ctx.mapping(value, ("xfail",))
    out: dict[str, str] = {}
    for qid, reason in data.items():
        if not isinstance(reason, str):
            raise ctx.error(("xfail", qid), f"expected a reason string, got {_type_name(reason)}")
        out[str(qid)] = reason
    return out


def _resolve_metric(name: str, params: Mapping[str, Any]) -> MetricSpec:
    return resolve_metric(name, params)


def _parse_metrics(ctx: _Ctx, value: Any, resolve: MetricResolver) -> tuple[MetricSpec, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ctx.error(("metrics",), "expected a non-empty list of metric names, e.g. [ndcg@10]")
    out: list[MetricSpec] = []
    for i, item in enumerate(value):
        # A mapping entry carries parameters: {name: temporal_ndcg@10, lambda: 0.5}.
        params: Mapping[str, Any] = {}
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            params = {str(k): v for k, v in item.items() if k != "name"}
            item = item["name"]
        if not isinstance(item, str):
            raise ctx.error(("metrics", i), f"expected a metric name or a mapping with a "
                                            f"'name' key, got {_type_name(item)}")
        try:
            spec = resolve(item, params)
        except ValueError as exc:
            raise ctx.error(("metrics", i), str(exc)) from None
        if spec.name in {m.name for m in out}:
            raise ctx.error(("metrics", i), f"metric {spec.name!r} is listed twice")
        out.append(spec)
    return tuple(out)


def _parse_retrievers(
    ctx: _Ctx, value: Any, known: Sequence[str] | None
) -> tuple[ComponentSpec, ...]:
    entries: list[tuple[str, Any, tuple[Any, ...]]] = []
    if isinstance(value, str):
        entries = [(value, {}, ("retrievers",))]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                entries.append((item, {}, ("retrievers", i)))
            elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
                params = {k: v for k, v in item.items() if k != "name"}
                entries.append((item["name"], params, ("retrievers", i)))
            else:
                raise ctx.error(
                    ("retrievers", i),
                    "expected a retriever name or a mapping with a 'name' key",
                )
    elif isinstance(value, Mapping):
        for rname, params in value.items():
            entries.append((str(rname), params if params is not None else {},
                            ("retrievers", rname)))
    else:
        raise ctx.error(("retrievers",), "expected a mapping of name -> parameters or a list")
    if not entries:
        raise ctx.error(("retrievers",), "expected at least one retriever")

    out: list[ComponentSpec] = []
    seen: set[str] = set()
    for rname, params, path in entries:
        if not isinstance(params, Mapping):
            raise ctx.error(path, f"expected a mapping of parameters, got {_type_name(params)}")
        if not rname or any(c in rname for c in ":/[] ") :
            raise ctx.error(path, f"retriever name {rname!r} must be non-empty and contain no "
                                  "':', '/', '[', ']' or spaces (it is part of test ids)")
        if rname in seen:
            raise ctx.error(path, f"retriever name {rname!r} is used twice")
        seen.add(rname)
        rtype = params.get("type", rname)
        if not isinstance(rtype, str):
            raise ctx.error((*path, "type"), f"expected a string, got {_type_name(rtype)}")
        if known is not None and ":" not in rtype and rtype not in known:
            raise ctx.error(
                (*path, "type") if "type" in params else path,
                f"unknown retriever {rtype!r}{did_you_mean(rtype, known)} "
                f"(known: {', '.join(sorted(known))}; or 'package.module:Factory')",
            )
        out.append(
            ComponentSpec(
                name=rname,
                type=rtype,
                params={k: v for k, v in params.items() if k != "type"},
                key=_key_str(path),
                line=ctx.lines.get(path),
            )
        )
    return tuple(out)


def _parse_dataset(ctx: _Ctx, value: Any, base: Path, suite_name: str) -> DatasetSpec:
    path_key: tuple[Any, ...] = ("dataset",)
    if isinstance(value, str):
        value = {"path": value}
    data = ctx.mapping(value, path_key)
    ctx.check_keys(data, _DATASET_KEYS, path_key)

    def as_path(key: str) -> Path | None:
        v = data.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise ctx.error((*path_key, key), f"expected a path string, got {_type_name(v)}")
        p = (base / v).resolve() if not Path(v).is_absolute() else Path(v)
        if key == "path":
            if not p.is_dir():
                raise ctx.error((*path_key, key), f"dataset folder not found: {p}")
        elif not p.is_file():
            raise ctx.error((*path_key, key), f"{key} file not found: {p}")
        return p

    if "path" not in data and "corpus" not in data and "documents" not in data:
        raise ctx.error(path_key, "expected 'path' (a BEIR-layout folder), 'corpus' (a file) "
                                  "or 'documents' (inline)")
    if "queries" not in data and "path" not in data and "items" not in data:
        raise ctx.error(path_key, "expected 'queries' (a file) or 'items' (inline queries)")
    split = data.get("split")
    if split is not None and not isinstance(split, str):
        raise ctx.error((*path_key, "split"), f"expected a string, got {_type_name(split)}")
    qids = data.get("query_ids")
    if qids is not None:
        if not isinstance(qids, list) or not all(isinstance(q, str | int) for q in qids):
            raise ctx.error((*path_key, "query_ids"), "expected a list of query ids")
        qids = tuple(str(q) for q in qids)
    max_q = data.get("max_queries")
    if max_q is not None:
        max_q = ctx.positive_int(max_q, (*path_key, "max_queries"))
    answer_field = data.get("answer_field")
    if answer_field is not None and not isinstance(answer_field, str):
        raise ctx.error((*path_key, "answer_field"), "expected a dotted key such as "
                                                     "'metadata.answer'")
    inline_docs = data.get("documents")
    if inline_docs is not None and not (
        isinstance(inline_docs, list) and all(isinstance(d, Mapping) for d in inline_docs)
    ):
        raise ctx.error((*path_key, "documents"), "expected a list of document mappings")
    inline_items = data.get("items")
    if inline_items is not None and not (
        isinstance(inline_items, list) and all(isinstance(d, Mapping) for d in inline_items)
    ):
        raise ctx.error((*path_key, "items"), "expected a list of query mappings")
    ds_path = as_path("path")
    name = data.get("name") or (ds_path.name if ds_path else suite_name)
    return DatasetSpec(
        name=str(name),
        source=ctx.file,
        key="dataset",
        path=ds_path,
        corpus=as_path("corpus"),
        queries=as_path("queries"),
        qrels=as_path("qrels"),
        split=split,
        query_ids=qids,
        max_queries=max_q,
        answer_field=answer_field,
        inline_corpus=tuple(inline_docs) if inline_docs is not None else None,
        inline_queries=tuple(inline_items) if inline_items is not None else None,
    )


def _parse_gates(
    ctx: _Ctx, value: Any, path: tuple[Any, ...], metrics: Mapping[str, MetricSpec]
) -> tuple[GateCheck, ...]:
    """``{metric: expr | [expr, ...]}`` or, for gates, a list of whole expressions.

    Per-query thresholds (``path == ("thresholds",)``) accept only ``>=``-style bounds: a query
    has no baseline of its own to drop from.
    """
    allow_baseline = path == ("gates",)
    out: list[GateCheck] = []
    if isinstance(value, list) and allow_baseline:
        for i, item in enumerate(value):
            try:
                out += parse_gate_list([item], metrics)
            except ValueError as exc:
                raise ctx.error((*path, i), str(exc)) from None
        return tuple(out)
    data = ctx.mapping(value, path)
    for key, expr in data.items():
        exprs = expr if isinstance(expr, list) and allow_baseline else [expr]
        for e in exprs:
            try:
                gate = parse_gate(str(key), e, metrics, allow_baseline=allow_baseline)
            except ValueError as exc:
                raise ctx.error((*path, key), str(exc)) from None
            out.append(gate)
    return tuple(out)


def _parse_baseline(ctx: _Ctx, value: Any) -> BaselineSettings:
    data = ctx.mapping(value, ("baseline",))
    ctx.check_keys(data, _BASELINE_KEYS, ("baseline",))
    out: dict[str, Tolerance] = {}
    tol = data.get("tolerance")
    items = [] if tol is None else tol.items() if isinstance(tol, Mapping) else [("*", tol)]
    for metric, spec in items:
        try:
            out[str(metric)] = parse_tolerance(spec)
        except ValueError as exc:
            key = ("baseline", "tolerance") if metric == "*" else ("baseline", "tolerance", metric)
            raise ctx.error(key, str(exc)) from None
    same = data.get("require_same_dataset", False)
    if not isinstance(same, bool):
        raise ctx.error(("baseline", "require_same_dataset"),
                        f"expected true or false, got {same!r}")
    test = data.get("test", "permutation")
    if test not in TESTS:
        raise ctx.error(("baseline", "test"),
                        f"unknown test {test!r}: expected one of {', '.join(TESTS)}")
    alpha = data.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ctx.error(("baseline", "alpha"),
                        f"expected a number strictly between 0 and 1, got {alpha!r}")
    return BaselineSettings(out, same, str(test), float(alpha))


def finite_or_none(value: float) -> float | None:
    """NaN and infinities become None so records stay strict JSON."""
    return value if math.isfinite(value) else None
