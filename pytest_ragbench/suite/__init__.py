"""Suite files: one schema (:mod:`.schema`) and the loader that applies it (:mod:`.loader`).

Everything other modules import from ``pytest_ragbench.suite`` is re-exported here.
"""

from __future__ import annotations

from .loader import (
    ComponentSpec,
    MetricResolver,
    Suite,
    finite_or_none,
    load_suite,
)

__all__ = ["ComponentSpec", "MetricResolver", "Suite", "finite_or_none", "load_suite"]
