"""Baselines: save a run's per-query scores, load them back, compare means with tolerances.

A baseline keeps every per-query score (not only the means) so that later comparisons can be
paired per query. The file is JSON with a schema version::

    {"schema_version": 1, "kind": "ragbench-baseline", "created": ISO time, "run": {...},
     "suites": {SUITE_ID: {"name", "suite_hash", "dataset_hash", "seed",
                           "gates": [gate expression, ...], "baseline_settings": {...},
                           "cases": {QUERY_ID: {"type", "difficulty", "tags"}},
                           "retrievers": {NAME: {"n_cases", "n_errors", "errors": [QUERY_ID],
                               "error_counts": {QUERY_ID: [errored runs, runs]},
                               "metrics": {METRIC: {
                               "mean", "direction", "scores": {QUERY_ID: value | null}}}}}}}}

``gates``, ``baseline_settings``, ``cases``, ``errors`` and ``error_counts`` (only with
repeated runs) were added later and are optional, so older files still load. Scores of
repeated runs of one query are averaged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import RagbenchError
from ..records import jsonable
from .aggregate import case_error_counts, case_meta, case_scores, group_records
from .gates import Tolerance
from .runfolder import ignore_folder

BASELINE_SCHEMA_VERSION = 1
BASELINE_KIND = "ragbench-baseline"
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
        all_recs: list[Mapping[str, Any]] = []
        for r in s["retrievers"]:
            recs = groups.get((s["id"], r["name"]), [])
            all_recs += recs
            metrics = {}
            for name, st in r["metrics"].items():
                scores = case_scores(recs, name)
                metrics[name] = {
                    "mean": st["mean"],
                    "direction": st["direction"],
                    "scores": {cid: value for cid, (value, _) in scores.items()},
                }
            first = next(iter(r["metrics"]), None)
            errors = [cid for cid, (_, err) in case_scores(recs, first or "").items() if err]
            retrievers[r["name"]] = {"metrics": metrics, "n_cases": r["n_cases"],
                                     "n_errors": r["n_errors"], "errors": errors}
            if s.get("partial") and "coverage" in r:
                # what its gates are judged on (None: it ran all of its cases)
                retrievers[r["name"]]["coverage"] = r["coverage"]
            counts = case_error_counts(recs)
            if any(runs > 1 for _, runs in counts.values()):
                # repeated runs: a scoped error rate counts runs, as the run-wide one does
                retrievers[r["name"]]["error_counts"] = {cid: list(c)
                                                         for cid, c in counts.items()}
        suites[s["id"]] = {"name": s["name"], "suite_hash": s["suite_hash"],
                           "dataset_hash": s["dataset_hash"], "seed": s.get("seed", 0),
                           "gates": list(s.get("gate_texts", [])),
                           "baseline_settings": s.get("baseline_settings", {}),
                           "cases": case_meta(all_recs), "retrievers": retrievers}
        if (run.get("partial") or s.get("partial")) and isinstance(s.get("n_cases_total"), int):
            # every suite of a partial run, whole ones too: without its own counts a
            # comparison took the run's ("run 5 of 10 cases ran") for a suite that ran all
            suites[s["id"]].update(n_cases_run=s["n_cases_run"],
                                   n_cases_total=s["n_cases_total"])
        if s.get("partial"):
            if s.get("systems"):
                # those that ran no case too, whose gates a comparison lists as not judged
                suites[s["id"]]["systems"] = list(s["systems"])
            if not s["retrievers"] and isinstance(s.get("directions"), Mapping):
                # none of its cases ran: no system carries its metrics, which its gates
                # (listed as not judged) are read with
                suites[s["id"]]["directions"] = dict(s["directions"])
    return jsonable({
        "schema_version": BASELINE_SCHEMA_VERSION,
        "kind": BASELINE_KIND,
        "created": run.get("finished") or run.get("started"),
        "run": dict(run),
        "suites": suites,
    })


def save_baseline(path: Path, doc: Mapping[str, Any]) -> None:
    """Write a baseline document atomically (a reader never sees half a file); a
    ``.ragbench`` folder it is written into gets its ``.gitignore``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore_folder(path.parent)
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
    except (ValueError, RecursionError) as exc:
        # ValueError: also undecodable bytes and integers past Python's digit limit;
        # RecursionError: arrays nested thousands deep.
        if isinstance(exc, RecursionError):
            exc = ValueError("nested too deeply")
        raise BaselineError(f"{path}: not valid JSON ({exc}); a truncated or hand-edited "
                            "baseline? save it again with --ragbench-save-baseline") from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != BASELINE_KIND:
        raise BaselineError(f"{path}: not a ragbench baseline (expected kind "
                            "'ragbench-baseline'; save one with --ragbench-save-baseline)")
    version = doc.get("schema_version")
    if version != BASELINE_SCHEMA_VERSION:
        raise BaselineError(f"{path}: baseline schema version {version!r} is not supported "
                            f"(this version reads {BASELINE_SCHEMA_VERSION})")
    check_baseline_doc(doc, str(path))
    return doc


def check_baseline_doc(doc: Mapping[str, Any], where: str) -> None:
    """Raise BaselineError unless ``doc`` has the shape comparisons rely on."""
    suites = doc.get("suites")
    if not isinstance(suites, dict):
        raise BaselineError(f"{where}: baseline has no 'suites' mapping")
    for sid, s in suites.items():
        if not isinstance(s, dict) or not isinstance(s.get("retrievers"), dict):
            raise BaselineError(f"{where}: suite {sid!r} has no 'retrievers' mapping")
        for key, kind in (("name", str), ("cases", dict), ("gates", list),
                          ("baseline_settings", dict)):
            if key in s and s[key] is not None and not isinstance(s[key], kind):
                raise BaselineError(f"{where}: suite {sid!r}: '{key}' must be a "
                                    f"{'string' if kind is str else kind.__name__}")
        for rname, r in s["retrievers"].items():
            if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
                raise BaselineError(f"{where}: {sid}/{rname} has no 'metrics' mapping")
            for metric, st in r["metrics"].items():
                at = f"{where}: {sid}/{rname}/{metric}"
                if not isinstance(st, dict) or not isinstance(st.get("scores", {}), dict):
                    raise BaselineError(f"{at}: expected a mapping with a 'scores' mapping")
                values = [st.get("mean"), *st.get("scores", {}).values()]
                if any(v is not None and (isinstance(v, bool) or not isinstance(v, int | float))
                       for v in values):
                    raise BaselineError(f"{at}: means and scores must be numbers or null")


def baseline_run_ids(doc: Mapping[str, Any]) -> list[str]:
    """The ids of the runs a baseline document was taken from: its run, or with ``last`` and
    ``best`` resolved per suite, the run of each suite. These runs are kept by pruning for as
    long as a run compared against them is kept (:mod:`pytest_ragbench.results.retention`)."""
    run = doc.get("run") if isinstance(doc.get("run"), Mapping) else {}
    ids = [run.get("id")]
    runs = run.get("runs")
    if isinstance(runs, Mapping):
        ids += list(runs.values())
    suites = doc.get("suites")
    if isinstance(suites, Mapping):
        ids += [s.get("run_id") for s in suites.values() if isinstance(s, Mapping)]
    return list(dict.fromkeys(str(i) for i in ids if isinstance(i, str) and i))
