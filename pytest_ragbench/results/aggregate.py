"""Controller-side aggregation: per-case records -> per-suite, per-retriever summaries and gates.

Pure functions over plain data, shared by the pytest plugin and the ``ragbench`` CLI: records and
each suite's :class:`~pytest_ragbench.results.spec.SuiteSpec`, never a suite file. Records are
put in canonical order (suite, retriever, query id, run) before anything is computed, so the same
records give byte-identical summaries however many workers produced them. Means are over
per-query values, never means of worker means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..records import case_outcome, record_key
from .gates import check_thresholds, no_case_of, unjudged_gates
from .spec import SuiteSpec, spec_test, threshold_gates
from .stats import best_system, pairwise_table, summarize
from .verdict import coverage_text, gate_coverage_text

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
    """Per-query values of ``metric`` in record order, over the cases that measured it.

    A case that errored after its retrieval was scored (its generation or judge failed) keeps
    what it measured. None from an errored case means "not measured" and is left out; from
    any other case it means "could not be computed" (NaN, counted).
    """
    return [v for r in recs
            if (v := r["metrics"].get(metric)) is not None or r.get("status") != "error"]


def query_values(recs: Sequence[Mapping[str, Any]], metric: str) -> list[float | None]:
    """Per-query values of ``metric`` in record order: :func:`metric_values` with the
    repetitions of a query (``runs: N``) averaged first, over those that scored it.

    The query is the unit (as comparisons pair them): N identical runs of one query are one
    sample, not N. None when no repetition could compute it (counted as NaN); a query whose
    every repetition errored before it measured anything is left out.
    """
    if len({r["case_id"] for r in recs}) == len(recs):
        return metric_values(recs, metric)  # one record per query: nothing to average
    per_query: dict[str, list[float | None]] = {}
    for r in recs:
        v = r["metrics"].get(metric)
        if v is not None or r.get("status") != "error":
            per_query.setdefault(str(r["case_id"]), []).append(v)
    return [vs[0] if len(vs) == 1 else _mean_of_runs(
        [float(v) for v in vs if v is not None and math.isfinite(v)]) for vs in per_query.values()]


def _mean_of_runs(finite: Sequence[float]) -> float | None:
    """The mean of one query's repetitions that measured a finite value (None: none did)."""
    if not finite:
        return None
    if min(finite) == max(finite):
        return finite[0]  # fsum / len of copies can be one ulp off
    return math.fsum(finite) / len(finite)


def summarize_group(
    spec: SuiteSpec | None, recs: Sequence[Mapping[str, Any]], metric_names: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Counts and per-metric statistics for one (suite, retriever).

    ``n_failed`` counts the cases below a per-query threshold that were not expected to fail;
    the suite's known failures are counted as ``n_xfailed`` (an error among them too) and
    ``n_xpassed``. ``n_errors`` and ``error_rate`` count every error, expected or not; an
    errored case counts in the metric means only with what it measured before it failed.
    """
    n = len(recs)
    n_err = sum(1 for r in recs if r.get("status") == "error")
    outcomes = [case_outcome(r) for r in recs]
    out: dict[str, Any] = {
        "n_cases": n,
        "n_errors": n_err,
        "n_failed": outcomes.count("failed"),
        "n_xfailed": outcomes.count("xfailed"),
        "n_xpassed": outcomes.count("xpassed"),
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
        s = summarize(query_values(recs, name), seed=seed)
        direction = spec["directions"].get(name, "higher") if spec is not None else "higher"
        out["metrics"][name] = {
            "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "std": s.std,
            "n": s.n, "n_nan": s.n_nan, "direction": direction,
        }
    usage = usage_totals(recs)
    if usage is not None:
        out["usage"] = usage
    if any(int(r.get("run", 0)) > 0 for r in recs):
        out["flaky"] = flaky_cases(recs, metric_names)
    return out


def usage_totals(recs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """LLM requests, tokens and cost summed over the cases (None for retrieval-only runs).

    ``n_costed`` counts the cases that carry a cost at all: a cost of 0 from an LLM without
    prices is then told apart from a cost of 0 that was measured. ``n_estimated`` (only when
    not 0) counts the cases whose token counts, and so costs, are partly estimates: an
    endpoint sent no usage.
    """
    with_usage = [r for r in recs if isinstance(r.get("usage"), Mapping)]
    if not with_usage:
        return None
    totals = {k: sum(int(r["usage"].get(k) or 0) for r in with_usage)
              for k in ("requests", "prompt_tokens", "completion_tokens")}
    # exactly rounded: a judge batch's cost is split over the cases that shared it, which
    # depend on timing; the same charges split otherwise must give the same total
    cost = math.fsum(float(r.get("cost") or 0.0) for r in with_usage)
    n = len(with_usage)
    costed = sum(1 for r in with_usage if r.get("cost") is not None)
    estimated = sum(1 for r in with_usage if r["usage"].get("estimated"))
    return {**totals, "cost": cost, "n_items": n, "n_costed": costed,
            **({"n_estimated": estimated} if estimated else {}),
            "per_item": {k: v / n for k, v in {**totals, "cost": cost}.items()}}


def flaky_cases(recs: Sequence[Mapping[str, Any]], metric_names: Sequence[str],
                threshold: float = 0.5) -> list[dict[str, Any]]:
    """Cases whose metric values differ across repeated runs, flips (pass/fail at
    ``threshold`` changing between runs) first; the spread is max - min over the runs."""
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for r in recs:
        by_case.setdefault(str(r["case_id"]), []).append(r)
    out = []
    for case_id, runs in sorted(by_case.items()):
        if len(runs) < 2:
            continue
        for name in metric_names:
            vals = [r["metrics"].get(name) for r in runs]
            vals = [float(v) for v in vals if v is not None]
            if len(vals) < 2:
                continue
            spread = max(vals) - min(vals)
            flips = len({v >= threshold for v in vals}) > 1
            if spread > 0:
                out.append({"case_id": case_id, "metric": name, "spread": spread,
                            "flips": flips, "values": vals})
    out.sort(key=lambda f: (not f["flips"], -f["spread"], f["case_id"], f["metric"]))
    return out


def case_scores(
    recs: Sequence[Mapping[str, Any]], metric: str,
) -> dict[str, tuple[float | None, bool]]:
    """Per query id: (the metric averaged over repetitions, or None; whether every run errored).

    The unit of pairing against a baseline and between retrievers is the query, so repeated
    runs of one query are averaged first.
    """
    values: dict[str, list[float]] = {}
    errored: dict[str, bool] = {}
    for r in recs:
        cid = str(r["case_id"])
        err = r.get("status") == "error"
        errored[cid] = errored.get(cid, True) and err
        v = r.get("metrics", {}).get(metric)
        bucket = values.setdefault(cid, [])
        if v is not None and math.isfinite(float(v)):
            bucket.append(float(v))
    return {cid: (_mean_of_runs(vs), errored[cid]) for cid, vs in sorted(values.items())}


def case_error_counts(recs: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """Query id -> (runs that errored, runs): what a scoped error rate counts."""
    counts: dict[str, tuple[int, int]] = {}
    for r in recs:
        cid = str(r["case_id"])
        errored, runs = counts.get(cid, (0, 0))
        counts[cid] = (errored + (r.get("status") == "error"), runs + 1)
    return dict(sorted(counts.items()))


def case_meta(recs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Query id -> type, difficulty and tags (what scoped gates select on)."""
    out: dict[str, dict[str, Any]] = {}
    for r in recs:
        cid = str(r["case_id"])
        if cid not in out or (r.get("query") is not None and out[cid].get("type") is None):
            out[cid] = {"type": r.get("type"), "difficulty": r.get("difficulty"),
                        "tags": sorted(r.get("tags") or [])}
    return dict(sorted(out.items()))


def evaluate_gates(
    spec: SuiteSpec, retriever: str, group: Mapping[str, Any],
    recs: Sequence[Mapping[str, Any]] = (), *, partial: bool = False,
    suite_id: str | None = None, meta: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Each threshold gate of the suite checked against one retriever's summary.

    Gates scoped to another retriever are skipped; gates against a baseline are checked later,
    when the baseline is known. ``suite_id`` names the suite file in each result. ``meta``:
    the suite's :func:`case_meta` (default: that of ``recs``).
    """
    return check_thresholds(
        threshold_gates(spec), suite=spec["name"], retriever=retriever,
        means={name: st["mean"] for name, st in group["metrics"].items()},
        error_rate=float(group["error_rate"]),
        cases=lambda metric: case_scores(recs, metric),
        meta=case_meta(recs) if meta is None else meta,
        error_counts=case_error_counts(recs), partial=partial, suite_id=suite_id)


def ab_comparisons(
    entries: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], metric_names: Sequence[str],
    directions: Mapping[str, str], *, test: str, alpha: float, seed: int,
) -> list[dict[str, Any]]:
    """Pairwise comparisons of the retrievers of one suite, per metric (Holm-corrected).

    Queries are aligned by id; a pair uses the queries both retrievers scored. ``best`` is the
    retriever with the best mean over the queries every retriever scored, with the bootstrap
    probability that it is the best.
    """
    if len(entries) < 2:
        return []
    out = []
    for metric in metric_names:
        per = {name: case_scores(recs, metric) for name, recs in entries}
        ids = sorted({cid for scores in per.values() for cid in scores})
        scores = {name: [per[name].get(cid, (None, True))[0] for cid in ids] for name in per}
        table = pairwise_table(scores, metric=metric, test=test, alpha=alpha, seed=seed)
        try:
            best, p_best = best_system(scores, higher_is_better=directions[metric] != "lower",
                                       seed=seed)
        except ValueError:
            best, p_best = None, None
        names = list(scores)
        pairs = []
        k = 0
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                c = table[k]
                k += 1
                pairs.append({
                    "a": a, "b": b, "n": c.n, "mean_a": c.mean_a, "mean_b": c.mean_b,
                    "delta": c.delta, "ci_low": c.ci_low, "ci_high": c.ci_high,
                    "p_holm": c.p_value,
                    "significant": bool(not math.isnan(c.p_value) and c.p_value < alpha),
                })
        out.append({"metric": metric, "direction": directions[metric], "test": test,
                    "alpha": alpha, "pairs": pairs, "best": best, "p_best": p_best})
    return out


def unknown_labels(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """How many labels of the queries run name a document the corpus lacks, and what the
    dataset's ``unknown_documents`` did with them: ``{"action": "kept" | "dropped",
    "n_labels", "n_queries"}``, each query counted once (every system and repetition run
    it); None when there were none."""
    by_query: dict[str, Mapping[str, Any]] = {}
    for r in records:
        info = r.get("unknown_labels")
        if isinstance(info, Mapping) and info.get("documents"):
            by_query.setdefault(str(r.get("case_id")), info)
    if not by_query:
        return None
    actions = sorted({str(i.get("action")) for i in by_query.values()})
    return {"action": actions[0] if len(actions) == 1 else "/".join(actions),
            "n_labels": sum(len(i["documents"]) for i in by_query.values()),
            "n_queries": len(by_query)}


def summarize_run(
    records: Iterable[Mapping[str, Any]], specs: Mapping[str, SuiteSpec | None],
    totals: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``suites`` and ``gates`` part of a summary (deterministic for the same records).

    ``specs`` maps suite ids (as in records) to their specs (see
    :func:`pytest_ragbench.results.spec.suite_spec`); a suite without one (cases of
    hand-written tests, a run folder written before specs were kept) gets its metrics from the
    records themselves, every metric higher-is-better, and no gates. ``totals`` maps suite ids
    to the number of cases each suite holds (as collected): a suite that ran fewer is partial,
    says "N of M cases", and its gates are labelled as judged on those cases.
    """
    records = list(records)
    groups = group_records(records)
    by_suite: dict[str, list[tuple[str, list[Mapping[str, Any]]]]] = {}
    for (suite_id, retriever), recs in groups.items():
        by_suite.setdefault(suite_id, []).append((retriever, recs))
    for suite_id, spec in specs.items():
        if spec is not None and int((totals or {}).get(suite_id, 0)) > 0:
            # a suite of a partial run of which no case ran (a `-k` of another suite's
            # system): listed, "0 of 5 cases ran", its gates as not judged (it vanished
            # from every output, and its gates with it)
            by_suite.setdefault(suite_id, [])
    out_suites: list[dict[str, Any]] = []
    gates: list[dict[str, Any]] = []
    for suite_id in sorted(by_suite):
        spec = specs.get(suite_id)
        entries = by_suite[suite_id]
        if spec is not None:
            order = {name: i for i, name in
                     enumerate([*spec["retrievers"], *spec.get("pipelines", ())])}
            entries.sort(key=lambda e: (order.get(e[0], len(order)), e[0]))
            metric_names = list(spec["metrics"])
            seed = int(spec["seed"])
        else:
            metric_names = sorted({m for _, recs in entries for r in recs for m in r["metrics"]})
            seed = 0
        first = entries[0][1][0] if entries else {}
        suite_out: dict[str, Any] = {
            "id": suite_id,
            "name": spec["name"] if spec is not None else first.get("suite_name", suite_id),
            # the first record that has it: a record made for a case that died without one
            # may not (an older version's, or a suite the controller could not read)
            "suite_hash": next(
                (r.get("suite_hash") for _, recs in entries for r in recs
                 if r.get("suite_hash")), None),
            "dataset_hash": next(
                (r.get("dataset_hash") for _, recs in entries for r in recs
                 if r.get("dataset_hash")), None),
            "metrics": metric_names,
            "retrievers": [],
        }
        suite_out["unknown_labels"] = unknown_labels(r for _, recs in entries for r in recs)
        n_run = sum(len(recs) for _, recs in entries)
        n_total = max(n_run, int((totals or {}).get(suite_id, n_run)))
        suite_out.update(n_cases_run=n_run, n_cases_total=n_total, partial=n_run < n_total)
        # every system of a suite has the same cases (queries x runs): a system's share of
        # the suite's count, when the suite's systems are known
        names = ([*spec["retrievers"], *spec.get("pipelines", ())]
                 if spec is not None else [])
        systems = len(names)
        # an older run.json lists the retrievers only: with a pipeline among the systems
        # the suite's count is not theirs to share out
        if any(name not in names for name, _ in entries):
            systems = 0
        per_system = n_total // systems if systems and n_total % systems == 0 else None
        # a query's type, difficulty and tags are the same for every system: a case whose
        # record came from the controller (its worker crashed; the controller holds no
        # dataset) has none, and another system's record of the query gives them to its
        # scoped gates, as a stored run's suite-wide "cases" gives them to a comparison's
        meta = case_meta(r for _, recs in entries for r in recs)
        for retriever, recs in entries:
            group = summarize_group(spec, recs, metric_names, seed)
            group["name"] = retriever
            if spec is not None:
                # partial as the suite is (what a stored run can tell too); labelled with
                # what this system ran of its own cases
                group["gates"] = evaluate_gates(spec, retriever, group, recs,
                                                partial=n_run < n_total, suite_id=suite_id,
                                                meta=meta)
                ran, total = ((len(recs), per_system) if per_system is not None
                              else (n_run, n_total))
                if n_run < n_total:
                    # kept with the system (None: it ran all of its cases): its gates from
                    # the command line and against the baseline (checked later, and by
                    # `ragbench compare` from the stored run) say the same
                    group["coverage"] = coverage_text(ran, total) if ran < total else None
                if group.get("coverage"):
                    for g in group["gates"]:
                        if not g.get("skipped"):  # its note says what it did not judge
                            g["coverage"] = gate_coverage_text(g, group["coverage"])
                gates.extend(group["gates"])
            suite_out["retrievers"].append(group)
        if spec is not None and systems:
            # every system of the suite, those that ran no case too: a partial run lists
            # their gates as not judged (gone from every output, a `-k` of one system read
            # "gates: 2 passed" where the suite has 4), and a comparison of it does too
            suite_out["systems"] = names
            if n_run < n_total:
                ran = {name for name, _ in entries}
                for name in names:
                    if name not in ran:
                        gates.extend(unjudged_gates(
                            threshold_gates(spec), suite=spec["name"], retriever=name,
                            note=no_case_of(name), suite_id=suite_id))
        if spec is not None:
            suite_out["seed"] = seed
            suite_out["gate_texts"] = list(spec["gates"])
            suite_out["baseline_settings"] = dict(spec["baseline_settings"])
            directions = {m: spec["directions"].get(m, "higher") for m in metric_names}
            test, alpha = spec_test(spec)
            if not entries:
                # no system carries them: what its gates are read with, here and when a
                # comparison of the stored run lists them
                suite_out["directions"] = directions
        else:
            directions = {m: "higher" for m in metric_names}
            test, alpha = "permutation", 0.05
        suite_out["ab"] = ab_comparisons(entries, metric_names, directions, test=test,
                                         alpha=alpha, seed=seed)
        out_suites.append(suite_out)
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "suites": out_suites,
        "gates": gates,
        "gates_passed": all(g["passed"] for g in gates),
    }
