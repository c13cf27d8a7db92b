"""The gate language: checks on a run's means, and on its change against a baseline.

A gate is written as one expression string, or as ``metric: body`` in a suite's ``gates``
mapping::

    ndcg@10 >= 0.60                         absolute floor on the mean
    error_rate <= 0.01                      ceiling on the share of cases that errored
    latency_ms: 250                         a bare number: "at least" for higher-is-better
                                            metrics, "at most" for lower-is-better ones
    ndcg@10: drop <= 0.02                   allowed drop against the baseline, absolute
    ndcg@10: drop <= 5%                     ... or relative to the baseline mean
    ndcg@10: no significant drop            paired test per query against the baseline
    ndcg@10: no significant drop at 0.01 using wilcoxon
    difficulty=hard: recall@10 >= 0.5       scoped to the queries of one difficulty,
    tag=numeric, retriever=bm25: ...        tag or type, and/or to one retriever

"Drop" always means a move in the metric's worse direction (down for quality metrics, up for
``latency_ms``, ``cost`` and ``error_rate``). A tolerance is the older, suite-wide form of an
allowed drop (``baseline: {tolerance: 0.02}``).

Nothing here imports pytest: the ``ragbench`` CLI parses and evaluates the same gates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ERROR_RATE = "error_rate"
TESTS = ("paired-t", "wilcoxon", "permutation", "bootstrap")
DEFAULT_TEST = "permutation"
DEFAULT_ALPHA = 0.05
SCOPE_KEYS = ("retriever", "tag", "type", "difficulty")
_LOWER_IS_BETTER = {ERROR_RATE, "latency_ms", "cost"}

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OPS = (">=", "<=", ">", "<")
_EXPR = re.compile(rf"^\s*(>=|<=|>|<)?\s*({_NUM})\s*(%)?\s*$")
_DROP = re.compile(rf"^\s*drop\s*(<=|<)\s*({_NUM})\s*(%)?\s*$", re.IGNORECASE)
_SIG = re.compile(
    rf"^\s*no\s+significant\s+drop(?:\s+at\s+({_NUM}))?(?:\s+using\s+([\w-]+))?\s*$",
    re.IGNORECASE,
)
_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_@.\-]*")
_SCOPE_ITEM = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*([^\s=:,]+)\s*$")
_BODY_HELP = ("'>= 0.5' (operators >=, >, <=, <), a bare number, 'drop <= 0.02', "
              "'drop <= 5%' or 'no significant drop [at 0.05] [using permutation]'")

Scope = tuple[tuple[str, str], ...]


class _HasDirection(Protocol):
    direction: str


def default_direction(metric: str) -> str:
    """``"lower"`` for error rate, latency and cost; ``"higher"`` for everything else."""
    return ("lower" if metric.split("@")[0] in _LOWER_IS_BETTER or is_timing(metric)
            else "higher")


def is_timing(metric: str) -> bool:
    """Whether ``metric`` is a wall time (``latency_ms``, any ``*_ms``): measured, not scored.

    The same system on the same queries gives another value at each run, so against a
    baseline only a tolerance or a gate that names it judges it: a suite-wide tolerance is in
    the scores' units, and the default one (any drop) failed a run whose only change was the
    machine's load."""
    return metric.split("@")[0].endswith("_ms")


def bound_text(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` (``:g`` when that is exact): a
    bound or limit as written, in a gate's text and every line that quotes it."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def scope_text(scope: Scope) -> str:
    """``difficulty=hard, tag=numeric`` (empty for the whole run)."""
    return ", ".join(f"{k}={v}" for k, v in scope)


def _prefix(scope: Scope) -> str:
    return f"{scope_text(scope)}: " if scope else ""


@dataclass(frozen=True)
class Gate:
    """``metric op threshold`` on a mean (or the error rate), e.g. ``ndcg@10 >= 0.3``."""

    metric: str
    op: str
    threshold: float
    scope: Scope = ()

    kind = "threshold"

    @property
    def text(self) -> str:
        return f"{_prefix(self.scope)}{self.metric} {self.op} {bound_text(self.threshold)}"

    def passes(self, value: float) -> bool:
        if math.isnan(value):
            return False
        slack = self._slack()
        return {
            ">=": value >= self.threshold - slack,
            ">": value > self.threshold + slack,
            "<=": value <= self.threshold + slack,
            "<": value < self.threshold - slack,
        }[self.op]

    def margin(self, value: float) -> float:
        """Signed distance to the threshold; positive means on the passing side (0 within
        roundoff of it)."""
        margin = value - self.threshold if self.op in (">=", ">") else self.threshold - value
        return 0.0 if abs(margin) <= self._slack() else margin

    def _slack(self) -> float:
        # A mean summed in another order (the queries' ids set it) differs by roundoff: a
        # mean equal to the bound meets it, and a strict bound is not met by it.
        return 1e-12 * max(1.0, abs(self.threshold))


@dataclass(frozen=True)
class DropGate:
    """How far a metric may move in its worse direction against the baseline.

    ``limit`` is the number as written: an absolute amount, or percent of the baseline mean
    when ``relative`` (kept as written so the expression reads back exactly).
    """

    metric: str
    limit: float
    relative: bool = False
    op: str = "<="
    scope: Scope = ()

    kind = "drop"

    @property
    def limit_text(self) -> str:
        return f"{bound_text(self.limit)}%" if self.relative else bound_text(self.limit)

    @property
    def text(self) -> str:
        return f"{_prefix(self.scope)}{self.metric}: drop {self.op} {self.limit_text}"

    def allowed(self, baseline_mean: float) -> float:
        return self.limit / 100.0 * abs(baseline_mean) if self.relative else self.limit

    def passes(self, worse_by: float, baseline_mean: float) -> bool:
        """``worse_by`` is the change in the worse direction (positive = got worse)."""
        if math.isnan(worse_by):
            return False
        allowed = self.allowed(baseline_mean)
        # Means of the same scores summed in another order differ by roundoff.
        return worse_by <= allowed + 1e-12 if self.op == "<=" else worse_by < allowed - 1e-12


@dataclass(frozen=True)
class SignificanceGate:
    """Fails when the metric got worse and a paired test says so at level ``alpha``.

    ``alpha`` None means the suite's ``baseline.alpha`` (0.05 unless set), ``test`` None the
    suite's ``baseline.test`` (permutation unless set).
    """

    metric: str
    alpha: float | None = None
    test: str | None = None
    scope: Scope = ()

    kind = "significance"

    @property
    def text(self) -> str:
        out = f"{_prefix(self.scope)}{self.metric}: no significant drop"
        out += f" at {bound_text(self.alpha)}" if self.alpha is not None else ""
        return out + (f" using {self.test}" if self.test else "")


GateCheck = Gate | DropGate | SignificanceGate

#: Metric kinds whose every value lies in [0, 1] (trec_eval's measures, the lexical answer
#: scores); a bound outside it is a typo (1.5 for 0.15, 60 for 0.6, 5 for 5%).
UNIT_INTERVAL = frozenset({
    "ndcg", "recall", "precision", "mrr", "map", "hit", "r_precision", "exact_match",
    "token_f1", "rouge_l", "answer_contains", "abstention_accuracy"})


def bound_problem(check: GateCheck, kind: str | None) -> str | None:
    """Why a gate on a metric of ``kind`` (its registry name; None: not known) can never
    pass or always passes: a threshold outside the metric's [0, 1] (the error rate lies
    there too), or an absolute drop limit above 1, which no such metric can drop by (``drop
    <= 5`` meant 5%); None when it can tell apart good and bad means."""
    unit = check.metric == ERROR_RATE or kind in UNIT_INTERVAL
    if isinstance(check, DropGate):
        if not unit or check.relative or check.limit <= 1.0:
            return None
        return (f"{check.metric} lies between 0 and 1, so it never drops by more than 1 and "
                f"'{check.text}' always passes (for a relative limit write 'drop {check.op} "
                f"{check.limit_text}%', for an absolute one a value up to 1)")
    if not isinstance(check, Gate) or 0.0 <= check.threshold <= 1.0 or not unit:
        return None
    never = (check.threshold > 1.0) == (check.op in (">=", ">"))
    return (f"{check.metric} lies between 0 and 1, so '{check.text}' "
            f"{'can never pass' if never else 'always passes'} (expected a bound "
            "between 0 and 1)")


def tolerance_problem(metric: str, tolerance: Tolerance, kind: str | None) -> str | None:
    """Why an absolute tolerance lets any drop of a metric of ``kind`` pass (as
    :func:`bound_problem` for a drop gate); ``metric`` ``*`` is every metric, most of which
    lie in [0, 1] (as for ``--ragbench-tolerance``)."""
    unit = metric in ("*", ERROR_RATE) or kind in UNIT_INTERVAL
    if not unit or tolerance.relative or tolerance.value <= 1.0:
        return None
    which = "any score in [0, 1]" if metric == "*" else f"{metric}, which lies in [0, 1],"
    return (f"an absolute tolerance of {tolerance.text} lets {which} drop to 0; for a "
            f"relative one write '{tolerance.text}%', for an absolute one a value up to 1 "
            "(e.g. 0.02)")


def _parse_number(text: str, what: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {text!r}")
    return value


def parse_scope(text: str) -> Scope:
    """``difficulty=hard, retriever=bm25`` -> ``(("difficulty", "hard"), ("retriever", ...))``."""
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        if not part.strip():
            # A stray comma: quoting the empty piece would name nothing the user wrote.
            raise ValueError(f"empty item in scope {text.strip()!r}: expected key=value items "
                             f"separated by commas, with key one of {', '.join(SCOPE_KEYS)} "
                             "(e.g. 'difficulty=hard, tag=numeric')")
        m = _SCOPE_ITEM.match(part)
        if not m:
            raise ValueError(f"cannot parse scope {part.strip()!r}: expected key=value with key "
                             f"one of {', '.join(SCOPE_KEYS)} (e.g. 'difficulty=hard')")
        key, value = m.group(1).lower(), m.group(2)
        if key not in SCOPE_KEYS:
            raise ValueError(f"unknown scope key {key!r} in {part.strip()!r}: expected one of "
                             f"{', '.join(SCOPE_KEYS)}")
        if key == "retriever" and any(k == "retriever" for k, _ in out):
            raise ValueError(f"scope {text.strip()!r} names more than one retriever")
        out.append((key, value))
    return tuple(out)


def parse_gate_body(
    metric: str, body: Any, direction: str | None = None, scope: Scope = (),
    *, allow_baseline: bool = True,
) -> GateCheck:
    """Parse the part after ``metric:`` (a number or a string); see the module docstring."""
    if direction is None:
        direction = default_direction(metric)
    lower_better = metric == ERROR_RATE or direction == "lower"
    if isinstance(body, bool) or not isinstance(body, int | float | str):
        raise ValueError(f"expected a number or an expression like '>= 0.5', got {body!r}")
    if isinstance(body, int | float):
        try:
            value = float(body)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ValueError(f"threshold must be a finite number, got {body!r}")
        return Gate(metric, "<=" if lower_better else ">=", value, scope)
    m = _EXPR.match(body)
    if m:
        op = m.group(1) or ("<=" if lower_better else ">=")
        value = _parse_number(m.group(2), "threshold") / (100.0 if m.group(3) else 1.0)
        return Gate(metric, op, value, scope)
    if metric == ERROR_RATE and allow_baseline and (_DROP.match(body) or _SIG.match(body)):
        # no per-query scores: such a gate found no row and was skipped at every run
        raise ValueError("the error rate is not compared against the baseline (it has no "
                         "per-query scores); gate it with a ceiling such as "
                         "'error_rate <= 0.01'")
    m = _DROP.match(body)
    if m and allow_baseline:
        limit = _parse_number(m.group(2), "allowed drop")
        if limit < 0:
            raise ValueError(f"allowed drop must be non-negative, got {m.group(2)!r}")
        relative = bool(m.group(3))
        return DropGate(metric, limit, relative, m.group(1), scope)
    m = _SIG.match(body)
    if m and allow_baseline:
        alpha = _parse_number(m.group(1), "alpha") if m.group(1) else None
        if alpha is not None and not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be strictly between 0 and 1, got {m.group(1)!r}")
        test = m.group(2).lower() if m.group(2) else None
        if test is not None and test not in TESTS:
            raise ValueError(f"unknown test {m.group(2)!r} in {body!r}: expected one of "
                             f"{', '.join(TESTS)}")
        return SignificanceGate(metric, alpha, test, scope)
    if not allow_baseline:
        raise ValueError(f"cannot parse {body!r}: expected a number or an expression like "
                         "'>= 0.5' (operators: >=, >, <=, <)")
    stripped = body.strip().lower()
    if stripped.startswith("drop"):
        hint = "expected 'drop <= NUMBER' or 'drop <= NUMBER%'"
    elif stripped.startswith("no "):
        hint = ("expected 'no significant drop', optionally followed by 'at ALPHA' and "
                f"'using TEST' (TEST one of {', '.join(TESTS)})")
    else:
        hint = f"expected {_BODY_HELP}"
    raise ValueError(f"cannot parse {body!r}: {hint}")


def _split_expression(text: str) -> tuple[Scope, str, str]:
    """``[scope:] metric [:] body`` -> (scope, metric, body)."""
    rest = text.strip()
    scope: Scope = ()
    head, sep, tail = rest.partition(":")
    if sep and "=" in head and not any(op in head for op in _OPS):
        scope = parse_scope(head)
        rest = tail.strip()
    m = _METRIC.match(rest)
    if not m:
        raise ValueError(f"cannot parse gate {text!r}: expected a metric name at "
                         f"{rest[:20]!r} (e.g. 'ndcg@10 >= 0.5')")
    metric, body = m.group(0), rest[m.end():].strip()
    if body.startswith(":"):
        body = body[1:].strip()
        inner = _METRIC.match(body)
        if inner and not body.lower().startswith(("drop", "no ")):
            raise ValueError(f"cannot parse gate {text!r}: {metric!r} before ':' is neither a "
                             f"metric with a bound nor a scope; scopes are written key=value "
                             f"with key one of {', '.join(SCOPE_KEYS)} (e.g. 'difficulty=hard')")
    if not body:
        raise ValueError(f"cannot parse gate {text!r}: nothing after {metric!r}; expected "
                         f"{_BODY_HELP}")
    return scope, metric, body


def parse_gate_expression(text: Any, directions: Mapping[str, str] | None = None) -> GateCheck:
    """Parse a whole gate expression such as ``tag=numeric: ndcg@10: drop <= 2%``.

    ``directions`` maps metric names to ``"higher"``/``"lower"``; metrics not in it get
    :func:`default_direction`. Raises ValueError saying which part was not understood.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a gate expression string, got {type(text).__name__}")
    scope, metric, body = _split_expression(text)
    direction = (directions or {}).get(metric) or default_direction(metric)
    try:
        return parse_gate_body(metric, body, direction, scope)
    except ValueError as exc:
        raise ValueError(f"in gate {text.strip()!r}: {exc}") from None


def _check_metric(metric: str, metrics: Mapping[str, _HasDirection]) -> str:
    if metric != ERROR_RATE and metric not in metrics:
        known = ", ".join([*metrics, ERROR_RATE])
        raise ValueError(f"gate on {metric!r}, which is not among the suite's metrics ({known})")
    return "lower" if metric == ERROR_RATE else metrics[metric].direction


def parse_gate(metric: str, expr: Any, metrics: Mapping[str, _HasDirection],
               *, allow_baseline: bool = False) -> GateCheck:
    """Parse one ``metric: expression`` mapping entry; ``metrics`` are the suite's metrics.

    The key may carry a scope (``"difficulty=hard: recall@10"``). Without ``allow_baseline``
    only thresholds are accepted (per-query thresholds have no baseline).
    """
    key = metric.strip()
    scope: Scope = ()
    head, sep, tail = key.partition(":")
    if sep and "=" in head:
        scope = parse_scope(head)
        key = tail.strip()
    direction = _check_metric(key, metrics)
    return parse_gate_body(key, expr, direction, scope, allow_baseline=allow_baseline)


def parse_gate_list(items: Iterable[Any], metrics: Mapping[str, _HasDirection]) -> list[GateCheck]:
    """Parse whole expressions (the list form of ``gates:``), checking metric names."""
    out = []
    directions = {name: m.direction for name, m in metrics.items()}
    for item in items:
        check = parse_gate_expression(item, directions)
        _check_metric(check.metric, metrics)
        out.append(check)
    return out


def check_key(check: GateCheck) -> tuple[Any, ...]:
    """What two gates stating the same check share, however each is written: kind, metric,
    bound and scope, its items in any order (``ndcg@10: 0.3`` is ``ndcg@10 >= 0.3``, and
    ``tag=a, difficulty=hard`` is ``difficulty=hard, tag=a``)."""
    if isinstance(check, Gate):
        bound: tuple[Any, ...] = (check.op, check.threshold)
    elif isinstance(check, DropGate):
        bound = (check.op, check.limit, check.relative)
    else:
        bound = (check.alpha, check.test)
    return (check.kind, check.metric, *bound, tuple(sorted(check.scope)))


def new_checks(given: Iterable[GateCheck], extra: Iterable[GateCheck]) -> list[GateCheck]:
    """The checks among ``extra`` (the command line's) that none of ``given`` (a suite's)
    nor an earlier one of ``extra`` states: the same check stated twice is one, judged and
    listed once, as ``given`` words it."""
    seen = {check_key(g) for g in given}
    out = []
    for check in extra:
        key = check_key(check)
        if key not in seen:
            seen.add(key)
            out.append(check)
    return out


def is_baseline_gate(check: GateCheck) -> bool:
    """Whether the check needs a baseline (drops and significance) rather than one run."""
    return isinstance(check, DropGate | SignificanceGate)


def scope_retriever(scope: Scope) -> str | None:
    return next((v for k, v in scope if k == "retriever"), None)


def system_metric_problem(
    gate: GateCheck, suite_metrics: Mapping[str, Iterable[str]],
    suite_systems: Mapping[str, Iterable[str]], *, suites: str = "suite",
) -> str | None:
    """Why a gate scoped to ``retriever=NAME`` judges nothing where some suite has ``NAME``
    and some computes its metric, but none both (None: one does, or it names no system,
    or the metric is the error rate, which every suite has, or no suite has either, which
    is another problem). Each suite leaves alone a gate on another suite's metric or system
    (:func:`pytest_ragbench.results.compare.applicable_gates`), so the run passed without a
    word of it. ``suite_metrics`` and ``suite_systems`` map each suite, as the message names
    it, to its metrics and systems; ``suites`` says which suites these are ("collected
    suite")."""
    only = scope_retriever(gate.scope)
    if only is None or gate.metric == ERROR_RATE:
        return None
    if not any(gate.metric in names for names in map(set, suite_metrics.values())):
        return None
    having = sorted(name for name, names in suite_systems.items() if only in set(names))
    if not having or any(gate.metric in set(suite_metrics.get(name, ())) for name in having):
        return None
    shown = ", ".join(f"{name} ({', '.join(suite_metrics.get(name, ()))})" for name in having)
    return (f"no {suites} with system {only!r} computes {gate.metric!r}; the suites with "
            f"{only!r} compute: {shown}")


def case_filter(scope: Scope) -> Scope:
    """The part of a scope that selects queries (everything but the retriever)."""
    return tuple((k, v) for k, v in scope if k != "retriever")


def case_in_scope(meta: Mapping[str, Any], scope: Scope) -> bool:
    """Whether a query's metadata (``type``, ``difficulty``, ``tags``) matches every filter."""
    for key, value in case_filter(scope):
        if key == "tag":
            if value not in (meta.get("tags") or []):
                return False
        elif str(meta.get(key)) != value:
            return False
    return True


def cases_in_scope(scope: Scope, meta: Mapping[str, Mapping[str, Any]],
                   runs: Mapping[str, int]) -> int:
    """How many of a system's cases that ran a gate's query scope holds (``runs``: query id
    -> repetitions of it that ran): what a scoped gate judged, which a partial run labels it
    with, not the system's count of cases."""
    filt = case_filter(scope)
    return sum(n for cid, n in runs.items() if case_in_scope(meta.get(cid, {}), filt))


def worse_by(delta: float, direction: str) -> float:
    """How much worse ``current - baseline = delta`` is (positive = worse)."""
    return -delta if direction == "higher" else delta


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may get worse against a baseline before the run fails."""

    value: float
    relative: bool = False

    @property
    def text(self) -> str:
        return f"{_percent_text(self.value)}%" if self.relative else bound_text(self.value)

    def allowed(self, baseline: float) -> float:
        return self.value * abs(baseline) if self.relative else self.value


def _percent_text(fraction: float) -> str:
    """The shortest percentage that reads back as exactly ``fraction`` (``7`` for 0.07, not
    ``fraction * 100``'s ``7.000000000000001``), as :func:`parse_tolerance` reads it."""
    for digits in range(1, 18):
        percent = float(f"{fraction * 100:.{digits}g}")
        if percent / 100.0 == fraction:
            return bound_text(percent)
    return repr(fraction * 100)


def parse_tolerance(spec: Any) -> Tolerance:
    """``0.02`` / ``"0.02"`` (absolute) or ``"5%"`` (relative to the baseline mean)."""
    if isinstance(spec, bool) or not isinstance(spec, int | float | str):
        raise ValueError(f"expected a tolerance like 0.02 or '5%', got {spec!r}")
    if isinstance(spec, int | float):
        value, relative = float(spec), False
    else:
        m = _EXPR.match(spec)
        if not m or m.group(1):
            raise ValueError(f"cannot parse tolerance {spec!r}: expected 0.02 or '5%'")
        relative = bool(m.group(3))
        value = float(m.group(2)) / (100.0 if relative else 1.0)
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"tolerance must be a non-negative number, got {spec!r}")
    return Tolerance(value, relative)


@dataclass(frozen=True)
class BaselineSettings:
    """A suite's ``baseline:`` section: how comparisons against a baseline are made."""

    tolerances: Mapping[str, Tolerance] | None = None
    require_same_dataset: bool = False
    test: str = DEFAULT_TEST
    alpha: float = DEFAULT_ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {
            "tolerance": {k: v.text for k, v in (self.tolerances or {}).items()},
            "require_same_dataset": self.require_same_dataset,
            "test": self.test, "alpha": self.alpha,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BaselineSettings:
        data = data or {}
        tol = {str(k): parse_tolerance(v) for k, v in (data.get("tolerance") or {}).items()}
        return cls(tol, bool(data.get("require_same_dataset", False)),
                   str(data.get("test", DEFAULT_TEST)), float(data.get("alpha", DEFAULT_ALPHA)))


#: Why a gate with a query scope is skipped in a partial run that ran none of its cases (a
#: ``-k`` may have left the scope out): a threshold and a gate against the baseline alike.
NO_CASE_RAN = "no case of its scope ran in this partial run"


def no_case_of(system: str) -> str:
    """Why a gate on ``system`` is not judged in a partial run that ran none of its cases
    (a ``-k`` may have selected another system's alone)."""
    return f"no case of {system} ran in this partial run"


def unjudged_gates(
    gates: Iterable[GateCheck], *, suite: str, retriever: str, note: str,
    suite_id: str | None = None,
) -> list[dict[str, Any]]:
    """Each gate among ``gates`` that applies to ``retriever`` (none scoped to another), as
    a result that judged nothing and says why (``note``): skipped, so it neither passes nor
    fails the run, yet listed in every output as a scope no case of which ran is."""
    out = []
    for gate in gates:
        only = scope_retriever(gate.scope)
        if only is not None and only != retriever:
            continue
        res: dict[str, Any] = {
            "kind": gate.kind, "suite": suite,
            **({"suite_id": suite_id} if suite_id is not None else {}),
            "retriever": retriever, "metric": gate.metric, "scope": scope_text(gate.scope),
            "text": gate.text}
        if isinstance(gate, Gate):
            res.update(op=gate.op, threshold=gate.threshold, n=0)
        res.update(passed=True, skipped=True, note=note)
        out.append(res)
    return out


def evaluate_threshold(
    gate: Gate, *, suite: str, retriever: str, mean: float | None, error_rate: float,
    cases: Mapping[str, tuple[float | None, bool]], meta: Mapping[str, Mapping[str, Any]],
    error_counts: Mapping[str, tuple[int, int]] | None = None, partial: bool = False,
    suite_id: str | None = None,
) -> dict[str, Any]:
    """Check one threshold gate for one retriever.

    ``mean`` and ``error_rate`` are the run-wide figures (used when the gate has no query
    scope); ``cases`` maps query ids to (score averaged over repetitions or None, errored) and
    ``meta`` query ids to their type/difficulty/tags, for scoped gates. ``error_counts``
    (query id -> errored runs, runs) makes a scoped error rate count runs, as the run-wide
    one does; without it (one run per query) a query counts as errored when ``cases`` says.
    A query scope that holds no case is skipped in a ``partial`` run (which passes or fails
    on what it ran: a ``-k`` may have left the scope out), and fails otherwise, saying so
    (a misspelled scope value would pass nothing). ``suite_id`` (the suite file) goes into
    the result beside the suite's name, which two suite files of one run may share.
    """
    filt = case_filter(gate.scope)
    n = len(cases)
    if not filt:
        value = error_rate if gate.metric == ERROR_RATE else mean
    else:
        chosen = [v for cid, v in cases.items() if case_in_scope(meta.get(cid, {}), filt)]
        n = len(chosen)
        if gate.metric == ERROR_RATE and error_counts is not None:
            counts = [error_counts.get(cid, (0, 0)) for cid in cases
                      if case_in_scope(meta.get(cid, {}), filt)]
            runs = sum(t for _, t in counts)
            value = sum(e for e, _ in counts) / runs if runs else math.nan
        elif gate.metric == ERROR_RATE:
            value = sum(1 for _, err in chosen if err) / n if n else math.nan
        else:
            # As in the unscoped means: a case that errored after it was scored (its
            # generation or judge failed) counts with what it measured.
            finite = [s for s, _ in chosen if s is not None and math.isfinite(s)]
            value = math.fsum(finite) / len(finite) if finite else math.nan
    v = math.nan if value is None else float(value)
    out = {
        "kind": "threshold", "suite": suite,
        **({"suite_id": suite_id} if suite_id is not None else {}),
        "retriever": retriever, "metric": gate.metric, "scope": scope_text(gate.scope),
        "op": gate.op, "threshold": gate.threshold, "value": v, "passed": gate.passes(v),
        "margin": gate.margin(v), "text": gate.text, "n": n,
    }
    if filt:
        runs = ({cid: t for cid, (_, t) in error_counts.items()} if error_counts is not None
                else dict.fromkeys(cases, 1))
        out["scope_cases"] = cases_in_scope(filt, meta, runs)
    if filt and not any(case_in_scope(meta.get(cid, {}), filt) for cid in cases):
        if partial:
            out.update(passed=True, skipped=True, note=NO_CASE_RAN)
        else:
            out["note"] = f"no query matches {scope_text(filt)}"
    return out


def check_thresholds(
    gates: Iterable[GateCheck], *, suite: str, retriever: str,
    means: Mapping[str, float | None], error_rate: float,
    cases: Callable[[str], Mapping[str, tuple[float | None, bool]]],
    meta: Mapping[str, Mapping[str, Any]],
    error_counts: Mapping[str, tuple[int, int]] | None = None, partial: bool = False,
    suite_id: str | None = None,
) -> list[dict[str, Any]]:
    """Every threshold gate among ``gates`` that applies to ``retriever``, checked.

    The one path for threshold gates: the plugin checks a run's summary with it and
    ``ragbench compare`` a stored run. ``means`` maps metric names to the retriever's means,
    ``cases(metric)`` gives per query id (score averaged over repetitions, every run errored)
    and ``meta`` the queries' type/difficulty/tags. Gates against a baseline and gates scoped
    to another retriever are left out.
    """
    out = []
    for gate in gates:
        if not isinstance(gate, Gate):
            continue
        only = scope_retriever(gate.scope)
        if only is not None and only != retriever:
            continue
        out.append(evaluate_threshold(
            gate, suite=suite, retriever=retriever, mean=means.get(gate.metric),
            error_rate=error_rate, cases=cases(gate.metric), meta=meta,
            error_counts=error_counts, partial=partial, suite_id=suite_id))
    return out
