"""Baselines: save a run's per-query scores, load them back, compare means with tolerances.

A baseline keeps every per-query score (not only the means) so that later comparisons can be
paired per query. The file is JSON with a schema version::

    {"schema_version": 1, "kind": "ragbench-baseline", "created": ISO time, "run": {...},
     "suites": {SUITE_ID: {"name", "suite_hash", "dataset_hash",
                           "retrievers": {NAME: {"metrics": {METRIC: {
                               "mean", "direction", "scores": {QUERY_ID: value | null}}}}}}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .aggregate import group_records
from .errors import RagbenchError
from .gates import Tolerance
from .records import jsonable

BASELINE_SCHEMA_VERSION = 1
DEFAULT_TOLERANCE = Tolerance(0.0)


class BaselineError(RagbenchError):
    """A baseline file is missing or not a ragbench baseline."""


def make_baseline(
    summary: Mapping[str, Any], records: Iterable[Mapping[str, Any]], run: Mapping[str, Any],
) -> dict[str, Any]:
    """Build the baseline document from a run's summary and records."""
    groups = group_records(records)
    suites: dict[str, Any] = {}
    for s in summary["suites"]:
        retrievers: dict[str, Any] = {}
        for r in s["retrievers"]:
            recs = groups.get((s["id"], r["name"]), [])
            metrics = {}
            for name, st in r["metrics"].items():
                metrics[name] = {
                    "mean": st["mean"],
                    "direction": st["direction"],
                    "scores": {
                        rec["case_id"]: (
                            None if rec.get("status") == "error" else rec["metrics"].get(name)
                        )
                        for rec in recs
                    },
                }
            retrievers[r["name"]] = {"metrics": metrics, "n_cases": r["n_cases"],
                                     "n_errors": r["n_errors"]}
        suites[s["id"]] = {"name": s["name"], "suite_hash": s["suite_hash"],
                           "dataset_hash": s["dataset_hash"], "retrievers": retrievers}
    return jsonable({
        "schema_version": BASELINE_SCHEMA_VERSION,
        "kind": "ragbench-baseline",
        "created": run.get("finished") or run.get("started"),
        "run": dict(run),
        "suites": suites,
    })


def save_baseline(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and check a baseline file; raises BaselineError with a clear message."""
    if not path.is_file():
        raise BaselineError(f"baseline file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ragbench-baseline":
        raise BaselineError(f"{path}: not a ragbench baseline (expected kind "
                            "'ragbench-baseline'; save one with --ragbench-save-baseline)")
    version = doc.get("schema_version")
    if version != BASELINE_SCHEMA_VERSION:
        raise BaselineError(f"{path}: baseline schema version {version!r} is not supported "
                            f"(this version reads {BASELINE_SCHEMA_VERSION})")
    if not isinstance(doc.get("suites"), dict):
        raise BaselineError(f"{path}: baseline has no 'suites' mapping")
    return doc


def compare_to_baseline(
    summary: Mapping[str, Any],
    baseline: Mapping[str, Any],
    tolerances: Mapping[str, Mapping[str, Tolerance]],
    override: Tolerance | None = None,
) -> list[dict[str, Any]]:
    """Compare current means to the baseline's, one row per (suite, retriever, metric).

    ``tolerances`` maps suite ids to ``{metric or "*": Tolerance}``; ``override`` (from the
    command line) wins over them. A row regresses when the metric moved in its worse direction
    by more than the allowed tolerance.
    """
    rows: list[dict[str, Any]] = []
    for s in summary["suites"]:
        base_suite = baseline["suites"].get(s["id"])
        if base_suite is None:
            continue
        suite_tol = tolerances.get(s["id"], {})
        for r in s["retrievers"]:
            base_r = base_suite.get("retrievers", {}).get(r["name"])
            if base_r is None:
                continue
            for name, st in r["metrics"].items():
                base_m = base_r.get("metrics", {}).get(name)
                if base_m is None:
                    continue
                tol = override or suite_tol.get(name) or suite_tol.get("*") or DEFAULT_TOLERANCE
                cur, old = st["mean"], base_m.get("mean")
                if cur is None or old is None or not (math.isfinite(cur) and math.isfinite(old)):
                    regressed, delta = cur is None or not math.isfinite(cur), None
                else:
                    delta = cur - old
                    worse = -delta if st["direction"] == "higher" else delta
                    regressed = worse > tol.allowed(old) + 1e-12
                rows.append({
                    "suite": s["name"], "suite_id": s["id"], "retriever": r["name"],
                    "metric": name, "baseline": old, "current": cur, "delta": delta,
                    "direction": st["direction"], "tolerance": tol.text,
                    "allowed": tol.allowed(old) if old is not None else None,
                    "regressed": regressed,
                    "same_dataset": base_suite.get("dataset_hash") == s.get("dataset_hash"),
                })
    return rows
