"""Small helpers for the plugin and the LLM clients to plug the run budget in (no pytest here).

The plugin, in the controller (``not hasattr(config, "workerinput")``): start a
:class:`~.server.Coordinator` when xdist will start workers, put
:meth:`~.server.Coordinator.workerinput` into every node's ``workerinput``, and read
:meth:`~.server.Coordinator.totals` for the summary. In every process that runs cases:
:func:`process_budget` gives the :class:`~.api.RunBudget` to hand to the pipelines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .api import RunBudget
from .client import CoordinatorClient
from .limits import Adaptive, PoolLimits
from .local import LocalBudget


def process_budget(workerinput: Mapping[str, Any] | None, *, name: str = "") -> RunBudget:
    """The run budget of this process: the coordinator's client in an xdist worker that was
    given one, otherwise a :class:`LocalBudget` (``-n 0``, or a controller without one)."""
    if workerinput is not None:
        client = CoordinatorClient.from_workerinput(workerinput, name=name)
        if client is not None:
            return client
    return LocalBudget()


def endpoint_limits(
    concurrency: int | None = None,
    *,
    adaptive: Adaptive | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
) -> PoolLimits:
    """An endpoint's limits as a suite gives them (see :func:`.limits.parse_concurrency`)."""
    return PoolLimits(concurrency=None if adaptive is not None else concurrency,
                      adaptive=adaptive, rpm=rpm, tpm=tpm)


def pool_key(base_url: str, model: str, limits: PoolLimits, *, kind: str = "llm") -> str:
    """The pool of an endpoint: one per URL (without credentials), model and limits.

    The limits are part of the key so that two suites configuring the same endpoint
    differently get two run-wide pools (each held across workers) instead of a conflict;
    suites that agree share one pool. ``kind`` (``"llm"`` or ``"embedding"``) names the
    pool in the summary; an LLM's key is the same as before kinds were kept.
    """
    parts: list[object] = [base_url, model, limits.to_dict()]
    if kind != "llm":
        parts.append(kind)
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def outcome_of(status: int | None, *, timed_out: bool = False) -> str:
    """The lease outcome for an HTTP attempt: ``status`` ``None`` means no response."""
    if timed_out:
        return "timeout"
    if status is None:
        return "error"
    if status == 429:
        return "throttled"
    if status == 408:
        return "timeout"
    return "ok" if 200 <= status <= 299 else "error"
