"""Paired comparison of a run against a baseline, and the gates that need a baseline.

Both sides are baseline documents (see :mod:`pytest_ragbench.results.baseline`): the plugin
turns the current run into one before comparing, and ``ragbench compare A B`` reads two of them from
files, run folders or the run history, so the plugin and the CLI compute the same rows and the
same verdict from the same data.

For each (suite, retriever, metric) the comparison is paired per query on the queries both
sides scored: the delta of means with a 95% bootstrap interval, and a one-sided p-value for a
drop (``less`` for higher-is-better metrics, ``greater`` for lower-is-better ones) from the
suite's test, Holm-corrected across the metrics gated for significance (or across all compared
metrics when none is). Nothing here imports pytest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baseline import DEFAULT_TOLERANCE, BaselineError, check_baseline_doc, load_baseline
from .changes import dataset_change_text
from .gates import (
    ERROR_RATE,
    NO_CASE_RAN,
    BaselineSettings,
    DropGate,
    Gate,
    GateCheck,
    Scope,
    SignificanceGate,
    Tolerance,
    case_filter,
    case_in_scope,
    cases_in_scope,
    check_thresholds,
    is_timing,
    new_checks,
    no_case_of,
    parse_gate_expression,
    scope_retriever,
    scope_text,
    unjudged_gates,
    worse_by,
)
from .runfolder import CASES_JSONL, RUN_JSON, SUMMARY_JSON
from .stats import holm, paired_compare
from .verdict import beyond_tolerance, gate_coverage_text, make_verdict

N_RESAMPLES = 10000


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over what the current side's suites say."""

    tolerance: Tolerance | None = None
    test: str | None = None
    alpha: float | None = None
    require_same_dataset: bool = False
    gates: tuple[str, ...] = field(default=())


def _settings(doc_suite: Mapping[str, Any], ov: Overrides) -> BaselineSettings:
    base = BaselineSettings.from_dict(doc_suite.get("baseline_settings"))
    return BaselineSettings(
        base.tolerances or {},
        base.require_same_dataset or ov.require_same_dataset,
        ov.test or base.test,
        ov.alpha if ov.alpha is not None else base.alpha,
    )


def suite_gates(doc_suite: Mapping[str, Any], extra: Sequence[str] = ()) -> list[GateCheck]:
    """The suite's gates as stored with the run, then those of ``extra`` (from the command
    line) that state a check the suite has not (:func:`~.gates.new_checks`): a gate given
    twice, or on the command line as the suite states it, is one gate in every output.

    Raises BaselineError for a gate on a metric the suite does not compute.
    """
    directions = {
        m: st.get("direction", "higher")
        for r in doc_suite.get("retrievers", {}).values()
        for m, st in r.get("metrics", {}).items()
    }
    for m, direction in _suite_directions(doc_suite).items():
        directions.setdefault(m, direction)
    out = []
    for text in [*doc_suite.get("gates", []), *extra]:
        try:
            gate = parse_gate_expression(text, directions)
        except ValueError as exc:
            raise BaselineError(f"gate {text!r}: {exc}") from None
        if gate.metric != ERROR_RATE and gate.metric not in directions:
            known = ", ".join([*directions, ERROR_RATE])
            raise BaselineError(f"gate {text!r} in suite {doc_suite.get('name')}: metric "
                                f"{gate.metric!r} is not among the suite's metrics ({known})")
        out.append(gate)
    n_stored = len(doc_suite.get("gates", []))
    return out[:n_stored] + new_checks(out[:n_stored], out[n_stored:])


def suite_systems(doc_suite: Mapping[str, Any]) -> list[str]:
    """The systems of a suite of a document: those that ran, and of a partial run's suite
    those that ran no case too (kept as ``systems``; a document stored before it has them
    not)."""
    ran = [str(name) for name in doc_suite.get("retrievers") or {}]
    listed = doc_suite.get("systems")
    if not isinstance(listed, list):
        return ran
    return list(dict.fromkeys([*(str(name) for name in listed), *ran]))


def _not_run(doc_suite: Mapping[str, Any]) -> list[str]:
    """The systems of a suite that ran no case (in a partial run)."""
    ran = doc_suite.get("retrievers") or {}
    return [name for name in suite_systems(doc_suite) if name not in ran]


def _suite_directions(doc_suite: Mapping[str, Any]) -> dict[str, str]:
    """The metrics' directions a suite of a partial run none of whose cases ran keeps
    (``directions``: no system carries them; a document stored before it has none)."""
    stored = doc_suite.get("directions")
    if not isinstance(stored, Mapping):
        return {}
    return {str(m): str(d) for m, d in stored.items()}


def _computed(doc_suite: Mapping[str, Any]) -> set[str]:
    """The metrics a suite of a document computes (one none of whose cases ran: those it
    would have)."""
    return {*(m for r in doc_suite.get("retrievers", {}).values() for m in r.get("metrics", {})),
            *_suite_directions(doc_suite)}


def applicable_gates(doc_suite: Mapping[str, Any], extra: Sequence[str],
                     computed_elsewhere: set[str]) -> list[str]:
    """The command-line gates among ``extra`` that apply to a suite: not one scoped to a
    system the suite does not have (``retriever=bm25``), nor one on a metric the suite does
    not compute while another suite of the run does (``computed_elsewhere``), which judges
    that suite's systems. A gate on a metric no suite computes stays, and is an error."""
    systems = set(suite_systems(doc_suite))
    computed = _computed(doc_suite)
    out = []
    for text in extra:
        try:
            gate = parse_gate_expression(text)
        except ValueError:  # reported by suite_gates
            out.append(text)
            continue
        only = scope_retriever(gate.scope)
        if only is not None and only not in systems:
            continue
        if gate.metric not in (ERROR_RATE, *computed) and gate.metric in computed_elsewhere:
            continue
        out.append(text)
    return out


def _scores(doc_r: Mapping[str, Any], metric: str) -> dict[str, float | None]:
    return dict(doc_r.get("metrics", {}).get(metric, {}).get("scores", {}))


def _cases_of(doc_r: Mapping[str, Any], metric: str) -> set[str]:
    """The cases a system of a document ran, as the threshold gates on ``metric`` count
    them: those scored on it and those that errored."""
    return {*_scores(doc_r, metric), *(str(c) for c in doc_r.get("errors", []))}


def _runs_of(doc_r: Mapping[str, Any], metric: str) -> dict[str, int]:
    """Query id -> repetitions that ran, of the cases a system of a document ran (as
    :func:`_cases_of` counts them): from its ``error_counts`` when it kept them (repeated
    runs), else one each."""
    counts = doc_r.get("error_counts")
    if isinstance(counts, Mapping):
        return {str(cid): int(c[1]) for cid, c in counts.items()}
    return dict.fromkeys(_cases_of(doc_r, metric), 1)


def _case_ids(doc_suite: Mapping[str, Any]) -> set[str]:
    ids = set(doc_suite.get("cases", {}))
    for r in doc_suite.get("retrievers", {}).values():
        for st in r.get("metrics", {}).values():
            ids.update(st.get("scores", {}))
    return ids


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def compare_docs(
    baseline: Mapping[str, Any] | None, current: Mapping[str, Any],
    overrides: Overrides | None = None, *, suite_thresholds: bool = True,
    stored_verdict: bool = True,
) -> dict[str, Any]:
    """Compare ``current`` with ``baseline`` and check every gate; the verdict is ``passed``.

    Without a baseline only the threshold gates are checked (gates against a baseline are
    reported as skipped). ``suite_thresholds=False`` leaves out the threshold gates stored with
    the suites (the plugin has checked them already) but still checks the command line's.
    ``stored_verdict=False`` ignores what ``current`` recorded about its own run (the plugin
    decides the verdict of the run in progress itself).

    Returns ``{"suites": [...], "rows": [...], "gates": [...], "other_failures": [...],
    "prior_failure": str | None, "passed": bool, "verdict": {...}}``: ``suites`` says per
    suite which baseline suite it was matched with (by name), whether the suite file, the
    dataset or the query set changed, and whether it is partial; ``rows`` are the per-metric
    comparisons (``regressed``: beyond its tolerance, ``beyond_tolerance``, or judged by a
    gate that failed, ``failed_gates``; ``checked``: judged by either, see
    :func:`pytest_ragbench.report.views.row_mark`); ``gates`` the checked gates (thresholds on
    the current side and gates against the baseline); ``other_failures`` the reasons to fail
    that are neither gates nor regressions (a required-but-different dataset, and
    ``prior_failure``, a run that had failed when it ran); ``verdict`` as
    :func:`pytest_ragbench.results.verdict.make_verdict` builds it. The one line per failure
    that the outputs print is worded by :func:`pytest_ragbench.report.views.failure_lines`.
    """
    ov = overrides or Overrides()
    out_suites: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    gate_results: list[dict[str, Any]] = []
    failures: list[str] = []
    names = {sid: str(cs.get("name", sid)) for sid, cs in current.get("suites", {}).items()}
    matched = match_suites(baseline, names) if baseline is not None else {}
    computed = {m for cs in current.get("suites", {}).values() for m in _computed(cs)}
    for sid in sorted(current.get("suites", {})):
        cur_s = current["suites"][sid]
        name = cur_s.get("name", sid)
        settings = _settings(cur_s, ov)
        gates = suite_gates(cur_s, applicable_gates(cur_s, ov.gates, computed))
        n_stored = len(cur_s.get("gates", []))
        partial = _partial_text(current, cur_s)
        gate_results += _covered(cur_s, partial, _threshold_results(
            name, cur_s, gates if suite_thresholds else gates[n_stored:],
            partial=partial is not None, suite_id=sid))
        base_id = matched.get(sid)
        base_s = None if baseline is None or base_id is None else baseline["suites"][base_id]
        if base_s is None:
            out_suites.append({"id": sid, "name": name, "in_baseline": False,
                               **({"partial": partial} if partial else {})})
            gate_results += [
                {"kind": g.kind, "suite": name, "suite_id": sid, "retriever": "*",
                 "metric": g.metric,
                 "scope": scope_text(g.scope), "text": g.text, "passed": True, "skipped": True,
                 "note": "no baseline to compare with"}
                for g in gates if isinstance(g, DropGate | SignificanceGate)]
            continue
        cur_ids, base_ids = _case_ids(cur_s), _case_ids(base_s)
        # a suite of a partial run none of whose cases ran has no hashes (they come with its
        # records) and compares nothing: it read "suite file changed, dataset changed"
        none_ran = partial is not None and not cur_s.get("retrievers")
        info = {
            "id": sid, "name": name, "in_baseline": True, "baseline_id": base_id,
            "baseline_run": base_s.get("run_id") or (baseline or {}).get("run", {}).get("id"),
            "suite_changed": not none_ran
            and base_s.get("suite_hash") != cur_s.get("suite_hash"),
            "dataset_changed": not none_ran
            and base_s.get("dataset_hash") != cur_s.get("dataset_hash"),
            "n_common": len(cur_ids & base_ids),
            "added": len(cur_ids - base_ids),
            "removed": 0 if none_ran else len(base_ids - cur_ids),
            **({"partial": partial} if partial else {}),
            **_systems_not_in(base_s, cur_s),
            # "partial, 0 of 5 cases ran; compared on those" said it compared them
            **({"nothing_compared": True} if none_ran else {}),
        }
        out_suites.append(info)
        # A partial side scored only the cases it ran: of the same dataset (its hash covers
        # the selected queries), the queries it lacks are cases left out (-k, -x), not a
        # changed query set.
        same = base_s.get("dataset_hash") is not None and not info["dataset_changed"]
        added = 0 if same and _partial_text(baseline or {}, base_s) else info["added"]
        removed = 0 if same and partial else info["removed"]
        # as every output words it: "partial, 2 of 5 cases ran" says it, not "3 removed"
        info.update(added=added, removed=removed)
        if settings.require_same_dataset and (info["dataset_changed"] or added or removed):
            change = dataset_change_text(
                info, (base_s.get("dataset_hash"), cur_s.get("dataset_hash")))
            failures.append(f"ragbench: dataset differs from the baseline in suite {name}: "
                            f"{change} (require_same_dataset is set)")
        suite_rows = _suite_rows(sid, name, base_s, cur_s, settings, gates, ov)
        gate_results += _covered(cur_s, partial, _baseline_gate_results(
            name, sid, cur_s, gates, suite_rows, settings.alpha, partial=partial is not None))
        # a scoped row is there for its gates: one whose every gate a partial run skipped
        # (no case of its scope ran) compared nothing, and read "ok" beside the SKIP
        rows += [r for r in suite_rows if not r["scope"] or r["checked"]]
    other = list(failures)
    prior = _prior_failure(current, gate_results, rows) if stored_verdict else None
    if prior is not None:
        other.append(prior)
    verdict = _verdict(current if stored_verdict else {}, gate_results, rows, other)
    return {"suites": out_suites, "rows": rows, "gates": gate_results,
            "other_failures": other, "prior_failure": prior, "passed": verdict["passed"],
            "verdict": verdict}


def _systems_not_in(base_s: Mapping[str, Any], cur_s: Mapping[str, Any]) -> dict[str, Any]:
    """The systems that ran that the baseline suite lacks, which nothing is compared for
    (``not_in_baseline``, with the baseline's ``baseline_systems``), and whether that is
    every system that ran (``nothing_compared``: a ``-k`` or a shard of only new systems,
    which passes having compared nothing); the metrics of the others the baseline lacks
    (``metrics_not_in_baseline``, with its ``baseline_metrics``); empty when the baseline
    has them all."""
    theirs = base_s.get("retrievers") or {}
    ours = cur_s.get("retrievers") or {}
    ran = list(ours)
    missing = [name for name in ran if name not in theirs]
    # the metrics of a system both sides have that the baseline's lacks (a k changed:
    # ndcg@10 became ndcg@5): each compared nothing, without a word of why
    new_metrics = list(dict.fromkeys(
        m for name in ran if name in theirs for m in (ours[name].get("metrics") or {})
        if m not in (theirs[name].get("metrics") or {})))
    out: dict[str, Any] = {}
    if new_metrics:
        out.update(metrics_not_in_baseline=new_metrics, baseline_metrics=sorted(
            {m for name in ran if name in theirs for m in theirs[name].get("metrics") or {}}))
    if missing:
        out.update(not_in_baseline=missing, baseline_systems=sorted(theirs),
                   nothing_compared=len(missing) == len(ran))
    return out


def _partial_text(current: Mapping[str, Any], cur_s: Mapping[str, Any]) -> str | None:
    """"N of M cases" when the current side's suite (or, lacking per-suite counts, its
    run) is partial."""
    from .verdict import coverage_text

    if isinstance(cur_s.get("n_cases_total"), int):
        n, total = int(cur_s.get("n_cases_run") or 0), int(cur_s["n_cases_total"])
        return coverage_text(n, total) if n < total else None
    run = current.get("run") or {}
    if run.get("partial"):
        n, total = run.get("n_cases"), run.get("n_cases_total")
        if isinstance(n, int) and isinstance(total, int):
            return f"run {coverage_text(n, total)}"
        return "run partial"
    return None


def _covered(cur_s: Mapping[str, Any], partial: str | None,
             gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``gates`` of a partial suite, each labelled with the cases its system ran of its own
    (``coverage``), as the run labelled its suite's gates: "2 of 5 cases", not the suite's
    "2 of 10" (a system that ran all of its cases gets none). A document stored before
    the systems kept it falls back to the suite's; a suite that ran whole in a partial run
    gets none."""
    if partial is None or not isinstance(cur_s.get("n_cases_total"), int):
        return gates
    systems = cur_s.get("retrievers", {})
    for g in gates:
        if g.get("skipped"):  # its note says what it did not judge
            continue
        system = systems.get(g.get("retriever"), {})
        coverage = system.get("coverage", partial)
        if coverage:
            g["coverage"] = gate_coverage_text(g, coverage)
    return gates


#: Reasons of a stored verdict that the comparison's own verdict carries over itself.
_CARRIED = frozenset({"items_failed", "items_errored", "interrupted", "partial"})


def _prior_failure(current: Mapping[str, Any], gates: Sequence[Mapping[str, Any]] = (),
                   rows: Sequence[Mapping[str, Any]] = ()) -> str | None:
    """A history run or saved baseline keeps its exit status, not its reasons: one that
    failed when it ran fails the comparison too, so the two verdicts agree. A run folder
    keeps its verdict: the reasons the comparison does not judge again (a gate given on the
    command line, a regression against another baseline) fail it as they failed the run
    (named as a folder it read "passed", named from the history "FAILED"). The gates and
    regressions this comparison finds again are not said twice."""
    run = current.get("run") or {}
    stored = current.get("verdict")
    if isinstance(stored, Mapping):
        found_again = {
            "gates_failed": sum(1 for g in gates if not g.get("passed", True)
                                and not g.get("skipped")),
            "regression": sum(1 for r in rows if beyond_tolerance(r))}
        other = [str(r.get("text")) for r in stored.get("reasons", [])
                 if isinstance(r, Mapping) and r.get("fails") and r.get("kind") not in _CARRIED
                 and int(r.get("count") or 0) > found_again.get(str(r.get("kind")), 0)]
        if stored.get("passed") is False and other:
            return (f"ragbench: run {run.get('id')} failed when it ran: "
                    f"{'; '.join(other)}")
        return None
    status = run.get("exitstatus")
    if not isinstance(status, int) or not status:
        return None
    # `last`/`best` per suite: every picked run that failed
    failed = [f for f in run.get("failed_runs") or () if isinstance(f, Mapping)] or [
        {"id": run.get("failed_run") or run.get("id"), "exitstatus": status,
         "verdict": run.get("verdict")}]
    return "ragbench: " + "; ".join(
        f"run {f.get('id')} ended with exit status {f.get('exitstatus')} when it ran"
        + (f" ({f['verdict']})" if isinstance(f.get("verdict"), str) else "")
        for f in failed)


def _verdict(current: Mapping[str, Any], gates: Sequence[Mapping[str, Any]],
             rows: Sequence[Mapping[str, Any]], other: Sequence[str]) -> dict[str, Any]:
    """The comparison's verdict; a run folder or history run that failed or was partial
    when it ran stays so (its failed items and coverage come from what it stored)."""
    stored = current.get("verdict") if isinstance(current.get("verdict"), Mapping) else {}
    run = current.get("run") or {}
    counts = {r.get("kind"): int(r.get("count") or 0) for r in stored.get("reasons", [])
              if isinstance(r, Mapping)}
    n = run.get("n_cases", run.get("n_records"))
    total = run.get("n_cases_total", n)
    n = int(n) if isinstance(n, int) else 0
    total = int(total) if isinstance(total, int) else n
    return make_verdict(
        items_failed=counts.get("items_failed", 0), items_errored=counts.get("items_errored", 0),
        gates=gates, rows=rows, other_failures=other, cases_run=n, cases_total=total,
        partial=bool(run.get("partial")), interrupted=counts.get("interrupted", 0) > 0)


def _threshold_results(
    name: str, cur_s: Mapping[str, Any], gates: Sequence[GateCheck], *, partial: bool = False,
    suite_id: str | None = None,
) -> list[dict[str, Any]]:
    meta = cur_s.get("cases", {})
    out = []
    for rname, r in cur_s.get("retrievers", {}).items():
        n = r.get("n_cases") or 0
        error_rate = (r.get("n_errors") or 0) / n if n else 0.0
        errors = set(r.get("errors", []))
        metrics = r.get("metrics", {})

        def cases(metric: str, metrics: Mapping[str, Any] = metrics,
                  errors: set[str] = errors) -> dict[str, tuple[float | None, bool]]:
            st = metrics.get(metric)
            if not st:
                return {cid: (None, cid in errors) for cid in meta}
            return {cid: (v, cid in errors) for cid, v in st.get("scores", {}).items()}

        stored = r.get("error_counts")
        counts = ({str(cid): (int(c[0]), int(c[1])) for cid, c in stored.items()}
                  if isinstance(stored, Mapping) else None)
        out += check_thresholds(
            gates, suite=name, retriever=rname, error_rate=error_rate, cases=cases, meta=meta,
            means={m: st.get("mean") for m, st in metrics.items()}, error_counts=counts,
            partial=partial, suite_id=suite_id)
    if partial:
        for rname in _not_run(cur_s):
            out += unjudged_gates([g for g in gates if isinstance(g, Gate)], suite=name,
                                  retriever=rname, note=no_case_of(rname), suite_id=suite_id)
    return out


def _suite_rows(
    sid: str, name: str, base_s: Mapping[str, Any], cur_s: Mapping[str, Any],
    settings: BaselineSettings, gates: Sequence[GateCheck], ov: Overrides,
) -> list[dict[str, Any]]:
    seed = int(cur_s.get("seed", 0) or 0)
    significance = [g for g in gates if isinstance(g, SignificanceGate)]
    # Rows for the whole query set, plus one per query scope a baseline gate asks for (as
    # the first gate of that scope writes it)
    row_scopes = _row_scopes(gates)
    scopes = [(), *(s for s in row_scopes.values() if s)]
    meta = cur_s.get("cases", {})
    same_dataset = base_s.get("dataset_hash") == cur_s.get("dataset_hash")
    rows: list[dict[str, Any]] = []
    for rname, cur_r in cur_s.get("retrievers", {}).items():
        # a gate scoped to another system names neither this one's test nor its family
        sig = [g for g in significance if scope_retriever(g.scope) in (None, rname)]
        base_r = base_s.get("retrievers", {}).get(rname)
        if base_r is None:
            continue
        for scope in scopes:
            group: list[dict[str, Any]] = []
            for metric, st in cur_r.get("metrics", {}).items():
                if metric not in base_r.get("metrics", {}):
                    continue
                # a scoped row of a system a gate of that scope judges (one scoped to
                # another system asked a row no check judged, which read "ok")
                if scope and not any(_row_scope(g, row_scopes) == scope and g.metric == metric
                                     and scope_retriever(g.scope) in (None, rname)
                                     for g in gates if isinstance(g, DropGate | SignificanceGate)):
                    continue
                direction = st.get("direction", "higher")
                cur_scores, base_scores = _scores(cur_r, metric), _scores(base_r, metric)
                ids = sorted(set(cur_scores) & set(base_scores))
                if scope:
                    ids = [c for c in ids if case_in_scope(meta.get(c, {}), scope)]
                test = next((g.test for g in sig if g.metric == metric and g.test
                             and _row_scope(g, row_scopes) == scope), None) or settings.test
                c = paired_compare(
                    [_nan(base_scores[c]) for c in ids], [_nan(cur_scores[c]) for c in ids],
                    metric=metric, test=test,
                    alternative="less" if direction == "higher" else "greater",
                    n_resamples=N_RESAMPLES, seed=seed)
                # a scoped row is judged by the scoped gates that ask for it, not by a
                # tolerance (a row claiming one read as a check that passed, in junit)
                tol = None if scope else _tolerance(metric, settings, ov,
                                                    _gated_for(gates, rname, metric))
                regressed = False
                if tol is not None:
                    regressed = math.isnan(c.delta) or (
                        worse_by(c.delta, direction) > tol.allowed(c.mean_a) + 1e-12)
                group.append({
                    "suite": name, "suite_id": sid, "retriever": rname, "metric": metric,
                    "scope": scope_text(scope), "direction": direction, "n": c.n,
                    "baseline": c.mean_a, "current": c.mean_b, "delta": c.delta,
                    # the queries in common, some of which n leaves out (NaN on one side)
                    "n_common": len(ids),
                    "ci_low": c.ci_low, "ci_high": c.ci_high, "p_value": c.p_value,
                    "p_holm": c.p_value, "test": c.test, "alternative": c.alternative,
                    "tolerance": tol.text if tol is not None else None,
                    "allowed": tol.allowed(c.mean_a) if tol is not None else None,
                    # the row's mark; a failed gate judged on it sets it too
                    # (_baseline_gate_results), as the tolerance alone left a row "ok"
                    # beside its gate FAILING
                    "regressed": regressed, "beyond_tolerance": regressed,
                    "failed_gates": [],
                    # judged by a tolerance or (_baseline_gate_results) a gate: a row no
                    # check judges (a wall time, a metric gated on some queries) read "ok"
                    "checked": tol is not None, "same_dataset": same_dataset,
                    "gated": any(g.metric == metric and _row_scope(g, row_scopes) == scope
                                 for g in sig),
                })
            _apply_holm(group)
            rows += group
    return rows


def _gated_for(gates: Sequence[GateCheck], system: str, metric: str) -> bool:
    """Whether a drop or significance gate judges ``metric`` of ``system``, standing for
    the default any-drop check: one scoped to another system leaves ``system``'s to it (a
    gate on bm25 let the other system's scores fall unseen). A gate on some queries stands
    for it, as it always has: it may allow those queries a drop the whole set's mean would
    show."""
    return any(isinstance(g, DropGate | SignificanceGate) and g.metric == metric
               and scope_retriever(g.scope) in (None, system) for g in gates)


def _row_scopes(gates: Sequence[GateCheck]) -> dict[tuple[tuple[str, str], ...], Scope]:
    """The query scopes the baseline gates ask rows for: one per set of filters (sorted
    items -> the filters as the first gate of it writes them), so that 'difficulty=hard,
    tag=x' and 'tag=x, difficulty=hard' are one row, not two compared apart."""
    out: dict[tuple[tuple[str, str], ...], Scope] = {}
    for g in gates:
        if isinstance(g, DropGate | SignificanceGate):
            out.setdefault(tuple(sorted(case_filter(g.scope))), case_filter(g.scope))
    return out


def _row_scope(gate: GateCheck, row_scopes: Mapping[tuple[tuple[str, str], ...], Scope]
               ) -> Scope:
    """The scope of the row a baseline gate is judged on (see :func:`_row_scopes`)."""
    filt = case_filter(gate.scope)
    return row_scopes.get(tuple(sorted(filt)), filt)


def _tolerance(
    metric: str, settings: BaselineSettings, ov: Overrides, has_baseline_gate: bool,
) -> Tolerance | None:
    """The tolerance check applies when one is configured, or by default (0) to metrics that
    no drop or significance gate covers: a plain ``--ragbench-baseline`` still catches any drop.
    A wall time (:func:`~.gates.is_timing`) is checked only by a tolerance that names it.
    """
    tols = settings.tolerances or {}
    if is_timing(metric):
        return tols.get(metric)
    tol = ov.tolerance or tols.get(metric) or tols.get("*")
    if tol is None and not has_baseline_gate:
        tol = DEFAULT_TOLERANCE
    return tol


def _apply_holm(group: list[dict[str, Any]]) -> None:
    """Holm across the metrics gated for significance; the others form their own family."""
    for gated in (True, False):
        family = [r for r in group if r["gated"] is gated]
        for row, p in zip(family, holm([r["p_value"] for r in family]), strict=True):
            row["p_holm"] = p


def _baseline_gate_results(
    name: str, sid: str, cur_s: Mapping[str, Any], gates: Sequence[GateCheck],
    rows: Sequence[dict[str, Any]], default_alpha: float, *, partial: bool = False,
) -> list[dict[str, Any]]:
    """The results of the drop and significance gates on the comparison ``rows``: a row a
    gate judged (not skipped) is ``checked``, and ``regressed`` when the gate failed (its
    text in ``failed_gates``)."""
    by_key = {(r["retriever"], r["metric"], r["scope"]): r for r in rows}
    row_scopes = _row_scopes(gates)
    meta = cur_s.get("cases", {})
    out = []
    for rname, cur_r in cur_s.get("retrievers", {}).items():
        for gate in gates:
            if not isinstance(gate, DropGate | SignificanceGate):
                continue
            only = scope_retriever(gate.scope)
            if only is not None and only != rname:
                continue
            row = by_key.get((rname, gate.metric, scope_text(_row_scope(gate, row_scopes))))
            res: dict[str, Any] = {
                "kind": gate.kind, "suite": name, "suite_id": sid, "retriever": rname,
                "metric": gate.metric, "scope": scope_text(gate.scope), "text": gate.text,
            }
            filt = case_filter(gate.scope)
            if row is None:
                res.update(passed=True, skipped=True,
                           note="not in the baseline; nothing to compare")
            elif partial and filt and not any(case_in_scope(meta.get(cid, {}), filt)
                                              for cid in _cases_of(cur_r, gate.metric)):
                # as a threshold gate: a -k may have left the scope out (nothing compared
                # fails a whole run, below); the scope of this system's cases, as there (a
                # hard case another system ran compares nothing of this one)
                res.update(passed=True, skipped=True, note=NO_CASE_RAN)
            elif isinstance(gate, DropGate):
                worse = worse_by(_nan(row["delta"]), row["direction"])
                allowed = gate.allowed(_nan(row["baseline"]))
                res.update(passed=gate.passes(worse, _nan(row["baseline"])),
                           value=row["delta"], allowed=allowed, margin=allowed - worse,
                           row=_row_ref(row))
            else:
                p = _nan(row["p_holm"])
                alpha = gate.alpha if gate.alpha is not None else default_alpha
                worse = worse_by(_nan(row["delta"]), row["direction"])
                # A drop within roundoff is none: per-query means of identical repetitions
                # summed another way differ by an ulp, and a paired test calls a consistent
                # 1e-17 significant (as a drop gate and a tolerance allow it).
                baseline = _nan(row["baseline"])
                dropped = worse > 1e-12 * max(1.0, 0.0 if math.isnan(baseline)
                                              else abs(baseline))
                # no change measured (no query in common): no evidence of "no drop" either,
                # as a drop gate and a threshold fail on it
                res.update(passed=not math.isnan(worse) and not (dropped and p < alpha),
                           value=row["delta"],
                           p_holm=row["p_holm"], alpha=alpha, row=_row_ref(row),
                           margin=(p - alpha) if dropped else None)
                if worse > 0 and not dropped and p < alpha:
                    res["note"] = "the drop is within roundoff"
            if row is not None and not res.get("skipped") and not row["n"]:
                # said in every gate list as the failure line says it, not "delta nan"
                res["note"] = _nothing_compared_text(row)
            if row is not None and not res.get("skipped"):
                row["checked"] = True
                if not res["passed"]:
                    row["failed_gates"].append(gate.text)
                    row["regressed"] = True
            if filt and not res.get("skipped"):
                res["scope_cases"] = cases_in_scope(filt, meta, _runs_of(cur_r, gate.metric))
            out.append(res)
    if partial:
        for rname in _not_run(cur_s):
            out += unjudged_gates([g for g in gates if isinstance(g, DropGate | SignificanceGate)],
                                  suite=name, retriever=rname, note=no_case_of(rname),
                                  suite_id=sid)
    return out


def _nothing_compared_text(row: Mapping[str, Any]) -> str:
    """Why a comparison row of no pair (n = 0) compared nothing: no query in common with
    the baseline (renamed ids, a scope no query matches), or those in common are NaN on one
    side (no relevant document, a judge that failed)."""
    common = int(row.get("n_common") or 0)
    if not common:
        return "no query in common with the baseline, n = 0: nothing was compared"
    queries = f"{common} {'query' if common == 1 else 'queries'}"
    return (f"no query scored on both sides, the {queries} in common with the baseline NaN on "
            "one side, n = 0: nothing was compared")


def _row_ref(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("baseline", "current", "delta", "ci_low", "ci_high", "p_value", "p_holm", "test",
            "n", "n_common", "direction")
    return {k: row[k] for k in keys}


# -- loading either side -------------------------------------------------------------------


def doc_from_run_dir(folder: Path) -> dict[str, Any]:
    """A baseline document from a run folder (``summary.json`` and ``cases.jsonl``); it
    carries the run's stored ``verdict`` so that ``ragbench compare`` repeats it."""
    from .baseline import make_baseline
    from .runfolder import RecordsFileError, read_jsonl, records_cut_short, still_going

    summary_path, cases_path = folder / SUMMARY_JSON, folder / CASES_JSONL
    going = still_going(folder)
    if going is not None:
        raise BaselineError(f"{folder}: {going}, so it has no summary to compare yet")
    started = next((name for name in (CASES_JSONL, RUN_JSON) if (folder / name).is_file()),
                   None)
    if started is not None and not summary_path.exists():
        # a run killed before its end (SIGKILL, a lost machine) writes its cases as they come,
        # and run.json alone before its first case ends
        raise BaselineError(f"{folder}: the run did not finish (it has {started} but no "
                            f"{SUMMARY_JSON}), so it has no summary to compare: "
                            f"--ragbench-resume={folder} makes a whole run of its cases and "
                            "the missing ones ('ragbench report' shows what it has)")
    if not summary_path.is_file() or not cases_path.is_file():
        raise BaselineError(f"{folder}: not a run folder (expected {SUMMARY_JSON} and "
                            f"{CASES_JSONL})")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{summary_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise BaselineError(f"{summary_path}: cannot be read ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("suites"), list):
        raise BaselineError(f"{summary_path}: not a ragbench summary (expected a 'suites' "
                            "list)")
    try:
        records = read_jsonl(cases_path)
    except RecordsFileError as exc:
        raise BaselineError(str(exc)) from None
    problem = records_cut_short(cases_path, summary, records)
    if problem is not None:
        raise BaselineError(f"{problem}: its missing queries cannot be compared (restore "
                            f"{CASES_JSONL})")
    try:
        doc = make_baseline(summary, records, summary.get("run") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineError(f"{summary_path}: not a ragbench summary this version reads "
                            f"({type(exc).__name__}: {exc})") from None
    if isinstance(summary.get("verdict"), Mapping):
        doc["verdict"] = summary["verdict"]
    return doc


HISTORY_SPECS = ("last", "best")


def _run_ref(history: Any, run_id: Any) -> str:
    """``run #3 (20250102T...)``: the number ``ragbench history`` lists (what users type) and
    the id (what run folders are named by); just the id when the history has no number."""
    number = history.number_of(str(run_id)) if run_id is not None else None
    return f"run #{number} ({run_id})" if number is not None else f"run {run_id}"


def load_side(spec: str, *, cwd: Path, history: Path | None,
              suites: Sequence[str] | None = None,
              role: str = "baseline") -> tuple[dict[str, Any], str]:
    """Resolve ``spec`` to a baseline document and a label for the output.

    ``spec`` is a baseline JSON file, a run folder, or (with a history database) ``last``,
    ``best`` or a run id. ``last`` and ``best`` resolve per suite (for the suite names in
    ``suites``, else every suite in the history): each suite comes from the newest complete
    run, or the complete run where it scored best, that holds it. Raises BaselineError with
    what was tried, naming ``spec`` by its ``role`` (``ragbench compare``'s B is the run to
    check, not a baseline).
    """
    path = Path(spec) if Path(spec).is_absolute() else cwd / spec
    if path.is_dir():
        return doc_from_run_dir(path), str(spec)
    if path.is_file():
        try:
            return load_baseline(path), str(spec)
        except BaselineError:
            if path.name not in (SUMMARY_JSON, CASES_JSONL, RUN_JSON):
                raise
        # a file of a run folder: 'not a ragbench baseline ... save one with
        # --ragbench-save-baseline' sent the user to run again, where the folder names the run
        raise BaselineError(f"{role} {spec!r} is a file of the run folder {path.parent}: "
                            "name the folder itself")
    if _names_a_path(spec):
        raise _no_such_path(spec, path, role)
    if history is not None and history.exists():
        from .history import HistoryError, RunHistory

        try:
            with RunHistory(history, readonly=True) as h:
                if spec in HISTORY_SPECS:
                    doc = h.per_suite_doc(spec, suites)
                    if not doc["suites"]:
                        which = f" holding suite {', '.join(map(repr, suites))}" if suites \
                            else ""
                        raise BaselineError(f"{role} {spec!r}: {history} has no complete "
                                            f"run{which}")
                    runs = doc["run"]["runs"]
                    label = (f"history {_run_ref(h, doc['run']['id'])}" if doc["run"]["id"]
                             else f"history {spec} per suite (" + ", ".join(
                                 f"{name}: {_run_ref(h, rid)}" for name, rid in runs.items())
                             + ")")
                else:
                    doc = h.baseline_doc(spec)
                    label = f"history {_run_ref(h, doc['run'].get('id'))}"
        except HistoryError as exc:
            raise BaselineError(str(exc)) from None
        check_baseline_doc(doc, f"history run {spec}")
        return doc, label
    # only without a history file here; said, as --ragbench-baseline says it
    where = f" nor a run in {history} (no run history there)" if history is not None else ""
    raise BaselineError(f"{role} {spec!r} is not a file, a run folder{where}")


def _no_such_path(spec: str, path: Path, role: str = "baseline") -> BaselineError:
    dangling = " (a symbolic link to nothing: a loop or a missing target)" \
        if path.is_symlink() else ""
    return BaselineError(f"{role} {spec!r}: no such file or run folder: {path}{dangling}")


def _names_a_path(spec: str) -> bool:
    """Whether a run reference can only be a file or folder: a run id, a run number,
    ``last`` or ``best`` has no ``.json`` ending and no path separator."""
    return spec.endswith(".json") or "/" in spec or os.sep in spec


def check_reference(spec: str, *, cwd: Path, history: Path | None) -> dict[str, Any] | None:
    """Check that a baseline reference can exist before a run starts: a file or run folder
    is read (and returned), a history reference needs a readable history with such a run.
    Raises BaselineError; returns None for history references (resolved per suite later)."""
    path = Path(spec) if Path(spec).is_absolute() else cwd / spec
    if path.exists():
        return load_side(spec, cwd=cwd, history=history)[0]
    if _names_a_path(spec):
        raise _no_such_path(spec, path)
    if history is None or not history.exists():
        where = f" nor a run in {history} (no run history there)" if history else ""
        raise BaselineError(f"baseline {spec!r} is not a file, a run folder{where}")
    from .history import HistoryError, RunHistory

    try:
        with RunHistory(history, readonly=True) as h:
            if spec in HISTORY_SPECS:
                if not h.has_complete_run():
                    raise BaselineError(f"baseline {spec!r}: {history} has no complete run "
                                        "yet")
            else:
                h.resolve(spec)
    except HistoryError as exc:
        raise BaselineError(f"baseline {spec!r}: {exc}") from None
    return None


def suites_problem(baseline: Mapping[str, Any], current: Mapping[str, str]) -> str | None:
    """What is wrong when the baseline matches no suite of the run (``current``: suite id ->
    name): nothing would be compared. None when one matches."""
    if match_suites(baseline, current):
        return None
    # a suite none of whose cases ran is held, yet matches nothing: said so
    held = sorted({str(s.get("name", sid)) + (" (no case of it ran)" if "retrievers" in s
                                              and not s["retrievers"] else "")
                   for sid, s in (baseline.get("suites") or {}).items()})
    return (f"matches no suite of this run (suites are matched by name; this run: "
            f"{', '.join(sorted(set(current.values()))) or 'none'}; the baseline: "
            f"{', '.join(held) or 'none'})")


def systems_problem(baseline: Mapping[str, Any], current: Mapping[str, str],
                    systems: Mapping[str, Sequence[str]]) -> str | None:
    """What is wrong when the baseline's matching suites hold none of the run's systems
    (``systems``: current suite id -> its system names; a suite not in it is not checked):
    a renamed or misspelled system, with which every comparison is skipped and the run
    passes. None when some matching suite shares a system (a new system simply has no
    baseline) or nothing could be checked."""
    checked = []
    for sid, bid in match_suites(baseline, current).items():
        ours = list(systems.get(sid) or [])
        if not ours:
            continue
        theirs = sorted((baseline.get("suites") or {}).get(bid, {}).get("retrievers") or {})
        if set(ours) & set(theirs):
            return None
        checked.append(f"{current[sid]} (this run: {', '.join(ours)}; the baseline: "
                       f"{', '.join(theirs) or 'none'})")
    if not checked:
        return None
    return "holds none of the systems of suite " + "; suite ".join(checked)


def match_suites(
    baseline: Mapping[str, Any], current: Mapping[str, str],
) -> dict[str, str]:
    """Current suite id -> the baseline suite id it is compared with.

    Suites are matched by name (their stable identity: moving or renaming the suite file
    keeps it); when the baseline holds several suites of that name, the one at the same path
    wins, else the first by id. ``current`` maps suite ids to names. A suite of a partial
    run none of whose cases ran (no system) is no baseline: it has nothing to compare with.
    """
    by_name: dict[str, list[str]] = {}
    for bid, bs in sorted((baseline.get("suites") or {}).items()):
        if isinstance(bs, Mapping) and "retrievers" in bs and not bs["retrievers"]:
            continue
        name = bs.get("name") if isinstance(bs, Mapping) else None
        by_name.setdefault(str(name if name is not None else bid), []).append(bid)
    out: dict[str, str] = {}
    for sid, name in current.items():
        candidates = by_name.get(name, [])
        if candidates:
            out[sid] = sid if sid in candidates else candidates[0]
    return out
