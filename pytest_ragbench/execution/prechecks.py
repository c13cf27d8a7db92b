"""Checks made before the first item that a suite file alone cannot answer.

The suite loader checks what the file says; these checks need the environment (API key
variables), the command line (``--ragbench-gate``) or the dataset (reference answers). Each
returns messages naming where the problem is (a suite key path, an option) and never the value
of an environment variable. The plugin turns them into one collection error, so a typo costs
a second and no request. Nothing here imports pytest.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import did_you_mean
from ..http_headers import ENV_REF, unset_env_message

__all__ = [
    "REFERENCE_METRICS",
    "cli_gate_problems",
    "missing_reference_problem",
    "scope_problems",
    "suites_gate_problems",
    "unset_env_problems",
]

def _reference_metrics() -> frozenset[str]:
    from ..metrics.answer import ANSWER_METRICS
    from ..metrics.judge import _NEEDS_REFERENCE

    # The judge keeps its list private; it is the one source of truth for judged metrics.
    lexical = {name for name, spec in ANSWER_METRICS.items() if spec.needs_reference}
    return frozenset(lexical | _NEEDS_REFERENCE)


REFERENCE_METRICS: frozenset[str] = _reference_metrics()
"""Answer metrics that compare against a reference answer (NaN for a query without one)."""


def _unset(name: str) -> bool:
    return not os.environ.get(name)


def _env_refs(key: str, value: Any) -> Iterator[tuple[str, str]]:
    """(key path, variable) for each variable a component spec names, at any depth.

    ``api_key_env: NAME`` names a variable; so does ``${NAME}`` inside a header value.
    """
    if isinstance(value, Mapping):
        for k, v in value.items():
            path = f"{key}.{k}" if key else str(k)
            if k == "api_key_env" and isinstance(v, str) and v:
                yield path, v
            elif k == "headers" and isinstance(v, Mapping):
                for header, raw in v.items():
                    if isinstance(raw, str):
                        for match in ENV_REF.finditer(raw):
                            yield f"{path}.{header}", match.group(1)
            else:
                yield from _env_refs(path, v)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _env_refs(f"{key}[{i}]", v)


def _endpoint_refs(rag: Any) -> Iterator[tuple[str, str]]:
    """(key path, variable) of the generation LLM, the judge's LLM and the embedder.

    Read defensively (``getattr``): whatever is not found here is still caught when the
    pipeline is built, one problem at a time.
    """
    prefix = str(getattr(rag, "key_prefix", "") or "")
    judge = getattr(rag, "judge", None)
    # a suite of pipelines' stand-in llm is its judge's: named at judge.llm alone
    llm = getattr(rag, "llm", None) if getattr(rag, "llm_in_suite", True) else None
    for key, part in (("llm", llm),
                      ("judge.llm", getattr(judge, "llm", None)),
                      ("embedder", getattr(rag, "embedder", None))):
        endpoint = getattr(part, "endpoint", None)
        if endpoint is None:
            continue
        name = getattr(endpoint, "api_key_env", None)
        if isinstance(name, str) and name:
            yield f"{prefix}{key}.api_key_env", name
        headers = getattr(endpoint, "headers", None) or {}
        yield from _env_refs(f"{prefix}{key}", {"headers": dict(headers)})


def unset_env_problems(
    retrievers: Iterable[tuple[str, Mapping[str, Any]]], rag: Any = None,
) -> list[tuple[str, str]]:
    """(key path, message) for every environment variable a suite names that is unset or empty.

    ``retrievers`` are (key path, parameters) of the suite's retrievers; ``rag`` is its
    generation/judging configuration when answers are generated (else None).
    """
    refs: list[tuple[str, str]] = []
    for key, params in retrievers:
        refs += _env_refs(key, params)
    if rag is not None:
        refs += _endpoint_refs(rag)
    return [(key, unset_env_message(name)) for key, name in dict.fromkeys(refs) if _unset(name)]


def missing_reference_problem(
    metrics: Sequence[str], references: Iterable[Sequence[str]], n_queries: int,
    answer_field: str | None, *, also: Collection[str] = (),
) -> str | None:
    """Why ``metrics`` cannot be computed when no query has a reference answer (else None).

    ``references`` are the queries' reference answers, one sequence per query; ``also``
    names metrics beyond the built-in ones that need a reference (components whose
    ``needs`` declares ``references``).
    """
    needs = [m for m in metrics if m in REFERENCE_METRICS or m in also]
    if not needs or any(any(r.strip() for r in refs) for refs in references):
        return None
    where = ("reference_answer, reference_answers, answers or answer"
             + (f" nor under {answer_field!r}" if answer_field else ""))
    fix = ("check that dataset.answer_field names the field that holds them" if answer_field
           else "set dataset.answer_field to the (dotted) query field that holds them")
    return (f"metric(s) {', '.join(needs)} compare against a reference answer, but none of the "
            f"{n_queries} selected queries has one (looked under {where}); {fix}, or drop "
            "those metrics")


def cli_gate_problems(gates: Sequence[str], suite_metrics: Mapping[str, Sequence[str]],
                      suite_systems: Mapping[str, Sequence[str]] | None = None,
                      suite_queries: Mapping[str, Sequence[Any]] | None = None) -> list[str]:
    """Messages for ``--ragbench-gate`` expressions on a metric no collected suite computes,
    scoped to a ``retriever=`` no collected suite has (or none that computes the metric), or
    to a ``type=`` / ``difficulty=`` /
    ``tag=`` no selected query of any collected suite has (each would apply to nothing).

    ``suite_metrics`` maps each collected suite's name to its metric names, ``suite_systems``
    to its system names, ``suite_queries`` to its selected queries (None: the scopes are not
    checked, as when some of the suites a gate judges were not collected). Expressions were
    checked for syntax when the option was parsed.
    """
    from ..results.gates import (
        ERROR_RATE,
        case_filter,
        parse_gate_expression,
        scope_retriever,
        system_metric_problem,
    )

    known = sorted({m for names in suite_metrics.values() for m in names})
    # the queries' metadata only when a gate has a query scope (a suite may hold 100k)
    metas = (None if suite_queries is None or not any(_scoped(text) for text in gates)
             else {name: _query_meta(queries) for name, queries in suite_queries.items()})
    systems = sorted({n for names in (suite_systems or {}).values() for n in names})
    problems = []
    for text in gates:
        try:
            gate = parse_gate_expression(text)
        except ValueError as exc:
            problems.append(f"--ragbench-gate {text!r}: {exc}")
            continue
        metric = gate.metric
        only = scope_retriever(gate.scope)
        if suite_systems is not None and only is not None and only not in systems:
            problems.append(f"--ragbench-gate {text!r}: no collected suite has a system "
                            f"{only!r}{did_you_mean(only, systems)}; the systems: "
                            f"{', '.join(systems) or 'none'}")
            continue
        # the rule `ragbench compare --gate` shares: no suite with its system computes it
        unjudged = (system_metric_problem(gate, suite_metrics, suite_systems,
                                          suites="collected suite")
                    if suite_systems is not None else None)
        if unjudged is not None:
            problems.append(f"--ragbench-gate {text!r}: {unjudged}")
            continue
        if metas is not None and case_filter(gate.scope):
            # the queries of the suites the gate judges: those with its system, if it names
            # one, that compute its metric, if some do (the others it leaves alone, as the
            # comparison does: results.compare.applicable_gates); another suite's queries
            # let a scope only they match run the whole run to fail on "no query matches"
            computing = {name for name, names in suite_metrics.items()
                         if metric == ERROR_RATE or metric in names}
            judged = [m for name, ms in metas.items()
                      if (only is None or only in (suite_systems or {}).get(name, [only]))
                      and (not computing or name in computing)
                      for m in ms]
            reason = _unmatched(gate.scope, judged)
            if reason is not None:
                narrowed = 0 < len(computing) < len(suite_metrics)
                problems.append(f"--ragbench-gate {text!r}: selects none of the {len(judged)} "
                                f"selected queries of the collected suites"
                                f"{f' computing {metric!r}' if narrowed else ''}"
                                f"{f' with system {only!r}' if only else ''}: {reason}")
                continue
        if metric == ERROR_RATE or metric in known:
            continue
        shown = ", ".join(f"{name} ({', '.join(names)})"
                          for name, names in sorted(suite_metrics.items()))
        problems.append(
            f"--ragbench-gate {text!r}: no collected suite computes {metric!r}"
            f"{did_you_mean(metric, [*known, ERROR_RATE])}; the suites compute: {shown}; "
            f"{ERROR_RATE} is always available")
    return problems


def suites_gate_problems(gates: Sequence[str], suites: Mapping[str, Any],
                         suite_queries: Mapping[str, Sequence[Any]] | None = None) -> list[str]:
    """:func:`cli_gate_problems` for loaded suites keyed by how messages name them (by file:
    two suite files may share a name but not their metrics); ``suite_queries`` as there."""
    from ..results.gates import bound_problem, parse_gate_expression

    problems = cli_gate_problems(
        gates, {label: [m.name for m in s.metrics] for label, s in suites.items()},
        {label: [x.name for x in s.systems] for label, s in suites.items()}, suite_queries)
    # a bound outside a metric's [0, 1] (60 for 0.6), refused in a suite file: as a command
    # line gate it ran the whole suite to fail, or pass, whatever the means were
    kinds = {m.name: m.kind for s in suites.values() for m in s.metrics}
    for text in gates:
        if any(p.startswith(f"--ragbench-gate {text!r}:") for p in problems):
            continue
        try:
            gate = parse_gate_expression(text)
        except ValueError:
            continue
        problem = bound_problem(gate, kinds.get(gate.metric))
        if problem:
            problems.append(f"--ragbench-gate {text!r}: {problem}")
    return problems


_SCOPE_FIELDS = {"type": "types", "difficulty": "difficulties", "tag": "tags"}


def _scoped(text: str) -> bool:
    """Whether a gate expression has a query scope (parse errors are reported elsewhere)."""
    from ..results.gates import case_filter, parse_gate_expression

    try:
        return bool(case_filter(parse_gate_expression(text).scope))
    except ValueError:
        return False


def _query_meta(queries: Iterable[Any]) -> list[dict[str, Any]]:
    return [{"type": q.type, "difficulty": q.difficulty, "tags": list(q.tags)} for q in queries]


def _unmatched(scope: Any, metas: Sequence[Mapping[str, Any]]) -> str | None:
    """Why no query of ``metas`` matches the query part of ``scope`` (None: one does, or
    the scope selects no queries)."""
    from ..results.gates import case_filter, case_in_scope

    filt = case_filter(scope)
    if not filt or any(case_in_scope(meta, filt) for meta in metas):
        return None
    why = []
    for key, value in filt:
        present = sorted({t for m in metas for t in m["tags"]} if key == "tag"
                         else {str(m[key]) for m in metas if m[key] is not None})
        if value not in present:
            why.append(f"no query has {key} {value!r}{did_you_mean(value, present)}; the "
                       f"{_SCOPE_FIELDS[key]}: {', '.join(present) or 'none'}")
    return "; ".join(why) or "no query has all of them"


def scope_problems(gates: Iterable[Any], queries: Sequence[Any]) -> list[str]:
    """Messages for a suite's gates whose query scope (``type=``, ``difficulty=``, ``tag=``)
    no selected query matches: a misspelled value would judge nothing in every run, and a
    run narrowed by ``-k`` or ``--lf`` could not tell it from a scope it left out.

    ``gates`` are the suite's parsed gates, ``queries`` its selected queries (objects with
    ``type``, ``difficulty`` and ``tags``).
    """
    from ..results.gates import case_filter, scope_text

    scoped = [g for g in gates if case_filter(getattr(g, "scope", ()))]
    metas = _query_meta(queries) if scoped else []
    problems = []
    for gate in scoped:
        scope = gate.scope
        reason = _unmatched(scope, metas)
        if reason is not None:
            problems.append(f"gate {gate.text!r} selects none of the {len(metas)} selected "
                            f"queries ({scope_text(case_filter(scope))}): {reason}")
    return problems
