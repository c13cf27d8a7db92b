"""Gates and tolerances: small value objects parsed from suite files and the command line.

A gate bounds a suite-level value (the mean of a metric, or the error rate) with ``>=``, ``>``,
``<=`` or ``<``; a bare number means "at least" for higher-is-better metrics and "at most" for
lower-is-better ones. A tolerance is how far a metric may move in its worse direction against a
baseline: absolute (``0.02``) or relative (``5%``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ERROR_RATE = "error_rate"
_OPS = (">=", "<=", ">", "<")
_EXPR = re.compile(r"^\s*(>=|<=|>|<)?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%)?\s*$")


class _HasDirection(Protocol):
    direction: str


@dataclass(frozen=True)
class Gate:
    """``metric op threshold``, e.g. ``ndcg@10 >= 0.3``."""

    metric: str
    op: str
    threshold: float

    @property
    def text(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"

    def passes(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return {
            ">=": value >= self.threshold,
            ">": value > self.threshold,
            "<=": value <= self.threshold,
            "<": value < self.threshold,
        }[self.op]

    def margin(self, value: float) -> float:
        """Signed distance to the threshold; positive means on the passing side."""
        return value - self.threshold if self.op in (">=", ">") else self.threshold - value


def parse_gate(metric: str, expr: Any, metrics: Mapping[str, _HasDirection]) -> Gate:
    """Parse one ``metric: expression`` entry; ``metrics`` are the suite's metrics by name."""
    name = metric.strip()
    if name != ERROR_RATE and name not in metrics:
        known = ", ".join([*metrics, ERROR_RATE])
        raise ValueError(f"gate on {name!r}, which is not among the suite's metrics ({known})")
    lower_better = name == ERROR_RATE or metrics[name].direction == "lower"
    if isinstance(expr, bool) or not isinstance(expr, int | float | str):
        raise ValueError(f"expected a number or an expression like '>= 0.5', got {expr!r}")
    if isinstance(expr, int | float):
        return Gate(name, "<=" if lower_better else ">=", float(expr))
    m = _EXPR.match(expr)
    if not m:
        raise ValueError(f"cannot parse {expr!r}: expected a number or an expression like "
                         "'>= 0.5' (operators: >=, >, <=, <)")
    op = m.group(1) or ("<=" if lower_better else ">=")
    value = float(m.group(2)) / (100.0 if m.group(3) else 1.0)
    return Gate(name, op, value)


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may get worse against a baseline before the run fails."""

    value: float
    relative: bool = False

    @property
    def text(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"

    def allowed(self, baseline: float) -> float:
        return self.value * abs(baseline) if self.relative else self.value


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
