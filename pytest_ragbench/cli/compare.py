"""``ragbench compare A B``: gate run B against baseline A offline, as the plugin would.

The comparison is :func:`pytest_ragbench.results.compare.compare_docs` on the same documents the
plugin uses, so the verdict and the exit status (0 passed, 1 failed) match ``pytest
--ragbench-baseline``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..options import add_gate_options, add_history_option
from ..report.format import one_line
from ..results.gates import TESTS
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_command


def _alpha(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 < alpha < 1.0:
        raise argparse.ArgumentTypeError(f"alpha must be strictly between 0 and 1, got {value}")
    return alpha


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare`` to the command's subparsers."""
    p = add_command(commands, "compare",
                    summary="compare run B against baseline A and gate it (exit 1 on failure)",
                    description="Compare run B against baseline A, paired per query, and gate "
                                "it exactly as pytest --ragbench-baseline does.")
    p.add_argument("baseline", metavar="A",
                   help="baseline: a baseline JSON file, a run folder, or from the run "
                        "history a run number (the # of 'ragbench history'), 'last', 'best' "
                        "or a run id")
    p.add_argument("current", metavar="B", help="the run to check, in any of the same forms")
    add_history_option(p.add_argument, prefix="", aliases=("--db",))
    add_gate_options(p.add_argument, prefix="")
    p.add_argument("--test", choices=TESTS, default=None, help="paired test (default: the "
                   "suite's baseline.test, else permutation)")
    p.add_argument("--alpha", type=_alpha, default=None, help="significance level")
    p.add_argument("--require-same-dataset", action="store_true",
                   help="fail when the dataset or the query set differ")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ragbench compare`` on parsed arguments; returns the exit status."""
    from ..records import jsonable
    from ..report.terminal import baseline_lines, dataset_lines, gate_lines
    from ..report.views import NOTHING_COMPARED, tell_suites_apart, with_failure_lines
    from ..results.baseline import BaselineError
    from ..results.compare import (
        Overrides,
        compare_docs,
        load_side,
        suite_systems,
        suites_problem,
        systems_problem,
    )
    from ..results.history import DEFAULT_HISTORY, HistoryError
    from ..results.verdict import reason_line

    cwd = Path.cwd()
    db = Path(args.history) if args.history else cwd / DEFAULT_HISTORY
    try:
        base, base_label = load_side(args.baseline, cwd=cwd, history=db)
        cur, cur_label = load_side(args.current, cwd=cwd, history=db, role="run to check")
        names = {sid: str(cs.get("name", sid)) for sid, cs in (cur.get("suites") or {}).items()}
        problem = suites_problem(base, names)
        if problem is not None:
            # as the plugin refuses it: nothing would be compared, and the run would pass
            raise BaselineError(f"baseline {base_label} {problem}")
        # every system of a suite, as the live run checks the systems it collected: a
        # partial run (a shard) of systems the baseline lacks alone passed, comparing nothing
        systems = {sid: suite_systems(cs) for sid, cs in (cur.get("suites") or {}).items()}
        problem = systems_problem(base, names, systems)
        if problem is not None:
            raise BaselineError(f"baseline {base_label} {problem}; nothing would be compared")
        _check_gates(args.gate, cur.get("suites") or {})
        result = jsonable(with_failure_lines(compare_docs(base, cur, Overrides(
            tolerance=args.tolerance, test=args.test, alpha=args.alpha,
            require_same_dataset=args.require_same_dataset, gates=tuple(args.gate)))))
    except (BaselineError, HistoryError) as exc:
        print(f"ragbench compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(f"ragbench compare: {cur_label} against baseline {base_label}")
        # names from the suites (a suite name may hold a line break): one line each
        for line in dataset_lines(result["suites"]):
            print(one_line(line))
        # named as the suites are, where two suite files share a name
        for line in baseline_lines(tell_suites_apart(result["rows"], result["suites"])):
            print(one_line(line))
        if not result["rows"]:
            print(f"  {NOTHING_COMPARED}")
        if result["gates"]:
            print("gates:")
            for line in gate_lines(tell_suites_apart(result["gates"], result["suites"])):
                print(one_line(line))
        for line in result["failures"]:
            print(one_line(line))
        # with its reasons: a run folder's failed items come from its stored verdict, which
        # no gate or regression line above says
        verdict = result.get("verdict")
        print("ragbench compare: " + (one_line(reason_line(verdict)) if isinstance(
            verdict, dict) else "passed" if result["passed"] else "FAILED"))
    return EXIT_OK if result["passed"] else EXIT_FAILED


def _check_gates(gates: list[str], suites: Mapping[str, Mapping[str, Any]]) -> None:
    """What the plugin refuses in ``--ragbench-gate`` before a run: a gate scoped to
    ``retriever=NAME`` that no suite of the run (``suites``: the run's document's) has, or
    none that computes its metric (it would apply to nothing and pass unseen), and a bound
    outside a [0, 1] metric's range ('error_rate <= 5' for 5%, which always passes;
    'ndcg@10 >= 60' for 0.6, which never does)."""
    from ..errors import did_you_mean
    from ..results.baseline import BaselineError
    from ..results.compare import suite_systems
    from ..results.gates import (
        bound_problem,
        parse_gate_expression,
        scope_retriever,
        system_metric_problem,
    )

    # named as the plugin names them (two suite files may share a name); a partial run's
    # systems that ran no case too, whose gates are listed as not judged
    labels = {sid: f"{cs.get('name', sid)} [{sid}]" for sid, cs in sorted(suites.items())}
    per_suite = {labels[sid]: suite_systems(cs) for sid, cs in suites.items()}
    metrics = {labels[sid]: list(dict.fromkeys(
        m for r in (cs.get("retrievers") or {}).values() for m in r.get("metrics") or {}))
        for sid, cs in suites.items()}
    systems = sorted({n for names in per_suite.values() for n in names})
    for text in gates:
        try:
            check = parse_gate_expression(text)
        except ValueError:
            continue  # compare_docs says what is wrong with it
        only = scope_retriever(check.scope)
        if only is not None and only not in systems:
            raise BaselineError(f"--gate {text!r}: the run has no system {only!r}"
                                f"{did_you_mean(only, systems)} (its systems: "
                                f"{', '.join(systems) or 'none'})")
        problem = (system_metric_problem(check, metrics, per_suite, suites="suite of the run")
                   or bound_problem(check, _metric_kind(check.metric)))
        if problem:
            raise BaselineError(f"--gate {text!r}: {problem}")


def _metric_kind(name: str) -> str | None:
    """The registry kind of a metric named as a built-in names it (``ndcg@10``: ``ndcg``,
    ``exact_match``), which is all a stored run says of its metrics; None otherwise."""
    from ..metrics.retrieval import parse_metric
    from ..results.gates import UNIT_INTERVAL

    if name in UNIT_INTERVAL:
        return name
    try:
        parsed = parse_metric(name)
    except ValueError:
        return None
    # only the canonical spelling: a suite's own label that parses differently is its own
    return parsed.kind if parsed.name == name else None
