"""How a run's suite differs from its baseline suite, in words every output shares.

Kept apart from :mod:`pytest_ragbench.results.compare` (statistics, numpy) so the renderers
can word a comparison without loading what computes one. Nothing here imports pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dataset_change_text(info: Mapping[str, Any],
                        hashes: tuple[Any, Any] | None = None) -> str | None:
    """How a suite's dataset differs from its baseline suite's, e.g. "dataset changed, 0
    queries added, 10 removed" (with ``hashes``, the baseline's and the current dataset hash:
    "dataset 5f3e3ec9e7dc -> c8181af370ce, ..."); None when it does not differ. Every output
    words it so (the failure of ``require_same_dataset``, the terminal, Markdown and HTML)."""
    if not (info.get("dataset_changed") or info.get("added") or info.get("removed")):
        return None
    if hashes is not None:
        dataset = f"dataset {str(hashes[0])[:12]} -> {str(hashes[1])[:12]}"
    else:
        dataset = f"dataset {'changed' if info.get('dataset_changed') else 'unchanged'}"
    return f"{dataset}, {info.get('added', 0)} queries added, {info.get('removed', 0)} removed"
