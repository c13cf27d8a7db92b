"""The run budget's figures as the terminal, summary.json and the HTML report's run details
show them: spend per cost cap, and per LLM or embedding pool its requests, concurrency and
the adaptive level reached. Plain data in, plain data out (a renderer importing the budget
package would load its client and server). The pools' figures depend on timing, so
summary.md, the same with and without ``-n``, shows only the spend against each cap (which
depends on timing too once a cap is reached: which cases were refused does)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .format import estimate_note, plural

__all__ = ["budget_lines", "budget_report", "llm_pools", "pool_kind"]


def budget_report(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The run's budget figures for the summary: spend per cap and per pool what it saw.

    Pools are named by endpoint and model (their keys hold no credentials); the figures
    depend on timing, so they belong with the run's metadata, not with the results.
    """
    pools = []
    for key, pool in totals.get("pools", {}).items():
        url, model, kind = _pool_name(key)
        entry = {"kind": kind, "endpoint": url, "model": model,
                 **{k: pool.get(k) for k in ("concurrency", "rpm", "tpm", "requests",
                                             "max_in_flight", "throttled", "timeouts",
                                             "errors", "trips")}}
        if pool.get("spent"):
            # a priced pool under a cost cap: the embeddings' share of the run's spend
            # shows here only (a batch of embeddings serves several cases)
            entry["spent"] = float(pool["spent"])
        if pool.get("estimated"):
            # requests counted by an estimate (the reply said no usage): its spend rests on them
            entry["estimated"] = int(pool["estimated"])
            # of the requests whose tokens were counted (not those refused or failed)
            entry["settled"] = int(pool.get("settled", pool.get("requests") or 0))
        if pool.get("adaptive"):
            entry["adaptive"] = dict(pool["adaptive"])
        pools.append(entry)
    costs = {key: {**{k: c.get(k) for k in ("spent", "max_cost", "refused", "exhausted")},
                   # how many of its charges rest on estimated token counts, and of how many
                   **({"estimated": int(c["estimated"]), "charges": int(c.get("charges") or 0)}
                      if c.get("estimated") else {})}
             for key, c in totals.get("costs", {}).items()}
    # what the run's cost caps took (None without a cap: nothing is charged to the budget
    # then, and a 0.0 read as a run that spent nothing; the records hold each case's cost)
    spent = float(totals.get("spent", 0.0)) if costs else None
    return {"spent": spent, "costs": costs, "pools": pools}


def _pool_name(key: str) -> tuple[str, str, str]:
    """(endpoint, model, kind) of a pool's key (``budget.wiring.pool_key``)."""
    try:
        url, model, _, *rest = json.loads(key)
    except (ValueError, TypeError):
        return key, "", "llm"
    return url, model, rest[0] if rest and isinstance(rest[0], str) else "llm"


def pool_kind(key: str) -> str:
    """What a pool's requests are: ``"llm"`` (chat: generation and judge), ``"embedding"``
    or ``"pipeline"`` (an ``http`` pipeline's)."""
    return _pool_name(key)[2]


def llm_pools(pools: Mapping[str, Any]) -> dict[str, Any]:
    """The pools of LLM and embedding endpoints: not an ``http`` pipeline's, whose requests
    are the system's own (it may call no LLM at all)."""
    return {key: pool for key, pool in pools.items() if _pool_name(key)[2] != "pipeline"}


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def budget_lines(report: Mapping[str, Any]) -> list[str]:
    """Terminal lines for :func:`budget_report`'s figures."""
    lines = []
    for key, cost in report.get("costs", {}).items():
        state = ", cap reached" if cost.get("exhausted") else ""
        note = estimate_note(int(cost.get("estimated") or 0), int(cost.get("charges") or 0))
        lines.append(f"run budget {key}: spent ${cost['spent']:.4f} of ${cost['max_cost']:.4f}"
                     f" (all workers{'; ' + note if note else ''}){state}")
    for pool in report.get("pools", []):
        model = f" {pool['model']}" if pool.get("model") else ""
        line = (f"{pool.get('kind') or 'llm'} pool{model} at {pool['endpoint']}: "
                f"{plural(pool['requests'], 'request')}, max {pool['max_in_flight']} in flight, "
                f"{pool['throttled']} throttled (429), {pool['timeouts']} timed out")
        if pool.get("errors"):
            line += f", {pool['errors']} failed (an HTTP error or no answer)"
        # of the requests whose tokens were counted: a refused or failed one has none
        note = estimate_note(int(pool.get("estimated") or 0),
                             int(pool.get("settled", pool["requests"])))
        if pool.get("spent"):
            line += f", spent ${pool['spent']:.4f}" + (f" ({note})" if note else "")
        elif note:
            line += f", tokens {note}"
        if pool.get("trips"):
            line += (f", circuit breaker opened {pool['trips']} time"
                     f"{'' if pool['trips'] == 1 else 's'}")
        adaptive = pool.get("adaptive")
        limits = [] if adaptive or pool.get("concurrency") is None else [
            f"concurrency {pool['concurrency']}"]
        # the rate limits too: a run that took a minute for a dozen requests says why
        limits += [f"{k} {_g(pool[k])}" for k in ("rpm", "tpm") if pool.get(k) is not None]
        if adaptive:
            line += (f"; concurrency auto reached {adaptive['level']} (max "
                     f"{adaptive['max_level']} of bound {adaptive['bound']}, "
                     f"{adaptive['decreases']} back-off"
                     f"{'' if adaptive['decreases'] == 1 else 's'})")
            if limits:
                line += f"; {', '.join(limits)}"
        elif limits:
            line += f" ({', '.join(limits)})"
        lines.append(line)
    return lines
