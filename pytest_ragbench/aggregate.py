"""Controller-side aggregation: per-case records -> per-suite, per-retriever summaries and gates.

Pure functions over plain data, shared by the pytest plugin and the ``ragbench`` CLI. Records are
put in canonical order (suite, retriever, query id, run) before anything is computed, so the same
records give byte-identical summaries however many workers produced them. Means are over
per-query values, never means of worker means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .gates import ERROR_RATE
from .records import record_key
from .stats import summarize
from .suite import Suite

SUMMARY_SCHEMA_VERSION = 1


def group_records(
    records: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Records by (suite, retriever), each list in canonical order."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for rec in sorted(records, key=record_key):
        groups.setdefault((str(rec["suite"]), str(rec["retriever"])), []).append(rec)
    return groups


def metric_values(recs: Sequence[Mapping[str, Any]], metric: str) -> list[float | None]:
    """Per-query values of ``metric`` over the cases that did not error, in record order."""
    return [r["metrics"].get(metric) for r in recs if r.get("status") != "error"]


def summarize_group(
    suite: Suite | None, recs: Sequence[Mapping[str, Any]], metric_names: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Counts and per-metric statistics for one (suite, retriever)."""
    n = len(recs)
    n_err = sum(1 for r in recs if r.get("status") == "error")
    out: dict[str, Any] = {
        "n_cases": n,
        "n_errors": n_err,
        "n_failed": sum(1 for r in recs if r.get("status") == "failed"),
        "n_no_relevant": sum(1 for r in recs if r.get("no_relevant")),
        "error_rate": (n_err / n) if n else 0.0,
        "errors": [
            {"case_id": r["case_id"], "stage": r["error"]["stage"],
             "message": r["error"]["message"]}
            for r in recs if r.get("status") == "error" and r.get("error")
        ][:20],
        "metrics": {},
    }
    for name in metric_names:
        s = summarize(metric_values(recs, name), seed=seed)
        direction = suite.metric(name).direction if suite is not None else "higher"
        out["metrics"][name] = {
            "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "std": s.std,
            "n": s.n, "n_nan": s.n_nan, "direction": direction,
        }
    return out


def evaluate_gates(suite: Suite, retriever: str, group: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each suite gate checked against one retriever's summary."""
    results = []
    for gate in suite.gates:
        if gate.metric == ERROR_RATE:
            value = float(group["error_rate"])
        else:
            value = float(group["metrics"][gate.metric]["mean"])
        passed = gate.passes(value)
        results.append({
            "suite": suite.name, "retriever": retriever, "metric": gate.metric,
            "op": gate.op, "threshold": gate.threshold, "value": value, "passed": passed,
            "margin": gate.margin(value), "text": gate.text,
        })
    return results


def summarize_run(
    records: Iterable[Mapping[str, Any]], suites: Mapping[str, Suite | None],
) -> dict[str, Any]:
    """The ``suites`` and ``gates`` part of a summary (deterministic for the same records).

    ``suites`` maps suite ids (as in records) to their definitions, or None when the suite file
    could not be read again (then metrics come from the records themselves).
    """
    groups = group_records(records)
    by_suite: dict[str, list[tuple[str, list[Mapping[str, Any]]]]] = {}
    for (suite_id, retriever), recs in groups.items():
        by_suite.setdefault(suite_id, []).append((retriever, recs))
    out_suites: list[dict[str, Any]] = []
    gates: list[dict[str, Any]] = []
    for suite_id in sorted(by_suite):
        suite = suites.get(suite_id)
        entries = by_suite[suite_id]
        if suite is not None:
            order = {r.name: i for i, r in enumerate(suite.retrievers)}
            entries.sort(key=lambda e: (order.get(e[0], len(order)), e[0]))
            metric_names = [m.name for m in suite.metrics]
            seed = suite.seed
        else:
            metric_names = sorted({m for _, recs in entries for r in recs for m in r["metrics"]})
            seed = 0
        first = entries[0][1][0]
        suite_out: dict[str, Any] = {
            "id": suite_id,
            "name": suite.name if suite is not None else first.get("suite_name", suite_id),
            "suite_hash": first.get("suite_hash"),
            "dataset_hash": next(
                (r.get("dataset_hash") for _, recs in entries for r in recs
                 if r.get("dataset_hash")), None),
            "metrics": metric_names,
            "retrievers": [],
        }
        for retriever, recs in entries:
            group = summarize_group(suite, recs, metric_names, seed)
            group["name"] = retriever
            if suite is not None:
                group["gates"] = evaluate_gates(suite, retriever, group)
                gates.extend(group["gates"])
            suite_out["retrievers"].append(group)
        out_suites.append(suite_out)
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "suites": out_suites,
        "gates": gates,
        "gates_passed": all(g["passed"] for g in gates),
    }
