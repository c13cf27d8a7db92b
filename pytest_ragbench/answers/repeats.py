"""Repeated runs (``runs: N``): how much one case's metric moved between runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..records import clean_float

# -- repeated runs ---------------------------------------------------------------------------


def flaky_summary(values_by_run: Sequence[float | None], *, threshold: float = 0.5
                  ) -> dict[str, Any]:
    """How much one case's metric moved across repeated runs (``runs: N``).

    Returns ``{"runs", "values", "missing", "mean", "min", "max", "spread", "pass_rate",
    "flips"}``: ``spread`` is max - min over the computed values, ``pass_rate`` the share
    of them ``>= threshold``, and ``flips`` whether that pass/fail verdict differs between
    runs. Missing (None/NaN) values are counted, not used; all-missing gives None statistics.
    """
    values = [clean_float(v) for v in values_by_run]
    present = [v for v in values if v is not None]
    summary: dict[str, Any] = {
        "runs": len(values),
        "values": values,
        "missing": len(values) - len(present),
        "mean": None,
        "min": None,
        "max": None,
        "spread": None,
        "pass_rate": None,
        "flips": False,
    }
    if present:
        passes = [v >= threshold for v in present]
        summary.update(
            mean=sum(present) / len(present),
            min=min(present),
            max=max(present),
            spread=max(present) - min(present),
            pass_rate=sum(passes) / len(passes),
            flips=len(set(passes)) > 1,
        )
    return summary
