"""Suite files: one schema (:mod:`.schema`) and the loader that applies it (:mod:`.loader`).

Everything other modules import from ``pytest_ragbench.suite`` is re-exported here, lazily, so
that importing :mod:`.schema` alone (``ragbench schema``) reads neither YAML nor the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loader import ComponentSpec, MetricResolver, Suite, finite_or_none, load_suite

__all__ = ["ComponentSpec", "MetricResolver", "Suite", "finite_or_none", "load_suite"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
