"""The per-suite spec: what aggregation needs to know about a suite besides its records.

A :class:`SuiteSpec` is plain JSON data built from the validated suite when it is collected
(:func:`suite_spec`), so the controller aggregates from records and specs alone and never reads
a suite file at the end of a run, and ``ragbench report`` can aggregate a run that never
finished from what the run folder holds (the session writes the specs to ``run.json`` when the
run starts, see :mod:`pytest_ragbench.session`).

Nothing here imports pytest or the suite parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from .gates import DEFAULT_ALPHA, DEFAULT_TEST, Gate, GateCheck, parse_gate_expression

if TYPE_CHECKING:
    from ..suite.model import Suite

class _SpecSince(TypedDict, total=False):
    """Keys a spec holds since a later version (absent from an older ``run.json``)."""

    pipelines: list[str]  # the systems under test


class SuiteSpec(_SpecSince):
    """A suite as aggregation sees it.

    ``metrics`` in the suite's order, ``directions`` per metric ("higher" or "lower"),
    ``retrievers`` in the suite's order, ``gates`` every gate expression of the suite (threshold
    and baseline gates, as :attr:`GateCheck.text` writes them), ``baseline_settings`` as
    :meth:`BaselineSettings.as_dict` writes them.
    """

    name: str
    metrics: list[str]
    directions: dict[str, str]
    retrievers: list[str]
    seed: int
    gates: list[str]
    baseline_settings: dict[str, Any]


def suite_spec(suite: Suite) -> SuiteSpec:
    """The spec of a validated suite."""
    return {
        "name": suite.name,
        "metrics": [m.name for m in suite.metrics],
        "directions": {m.name: m.direction for m in suite.metrics},
        "retrievers": [r.name for r in suite.retrievers],
        "seed": int(suite.seed),
        "gates": [g.text for g in suite.gates],
        "baseline_settings": suite.baseline_settings.as_dict(),
        "pipelines": [p.name for p in suite.pipelines],
    }


def read_spec(data: Any) -> SuiteSpec | None:
    """A spec read back from JSON (``run.json``), or None when it is not one this version
    reads (an unreadable spec only costs the gates, never the report)."""
    if not isinstance(data, Mapping):
        return None
    try:
        metrics = [str(m) for m in data["metrics"]]
        directions = {str(k): str(v) for k, v in data["directions"].items()}
        settings = data.get("baseline_settings") or {}
        spec: SuiteSpec = {
            "name": str(data["name"]),
            "metrics": metrics,
            "directions": {m: directions.get(m, "higher") for m in metrics},
            "retrievers": [str(r) for r in data.get("retrievers") or []],
            "seed": int(data.get("seed") or 0),
            "gates": [str(g) for g in data.get("gates") or []],
            "baseline_settings": dict(settings) if isinstance(settings, Mapping) else {},
        }
        if isinstance(data.get("pipelines"), list):
            spec["pipelines"] = [str(p) for p in data["pipelines"]]
        spec_gates(spec)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return spec


def spec_gates(spec: SuiteSpec) -> list[GateCheck]:
    """The suite's gates parsed back from their texts (they read back exactly)."""
    return [parse_gate_expression(text, spec["directions"]) for text in spec["gates"]]


def threshold_gates(spec: SuiteSpec) -> list[Gate]:
    """The gates of a spec checked on the run alone (no baseline needed)."""
    return [g for g in spec_gates(spec) if isinstance(g, Gate)]


def spec_test(spec: SuiteSpec) -> tuple[str, float]:
    """The paired test and alpha of the suite's ``baseline`` settings."""
    settings = spec["baseline_settings"]
    return (str(settings.get("test", DEFAULT_TEST)),
            float(settings.get("alpha", DEFAULT_ALPHA)))
