"""Who pays for a request several cases share: the first of them in the records' order.

Two cases may send the same chat request: two systems whose retrievers agree, two repetitions
that answered alike (their judge requests), two queries with the same text. With the response
cache on, one of them sends it and the others join it in flight or read the stored reply (0
requests, no cost). Which one sends it depends on timing (which answer came back first, which
worker asked first), so the per-case and per-system ``requests`` and ``cost`` of a run would
differ from one run to the next, between ``-n 0`` and ``-n 2``, with the same total.

Each record lists its calls (``llm_calls``: ``[key, requests, cost]``, see
:mod:`pytest_ragbench.answers.metering`). :func:`settle_shared_calls` charges what every call
of a key spent to the first record in :func:`~pytest_ragbench.records.record_key` order that
made one, and nothing to the others (a judge batch's share of an item is keyed by the
request the item would make alone); calls without a key (the response cache off: nothing is
shared) stay with their record. Totals are kept: a request sent twice (two workers asked at once) is
charged twice, to that first record. Tokens are not touched: a cached reply keeps its tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
from typing import Any

from ..records import record_key


def settle_shared_calls(records: Iterable[MutableMapping[str, Any]]) -> None:
    """Recompute ``usage["requests"]`` and ``cost`` of every record with ``llm_calls`` (in
    place) so that each shared request is charged to the first record that made it. The
    result depends only on the records' calls, not on the order given or on earlier
    settling."""
    ordered = sorted((r for r in records if r.get("llm_calls")), key=record_key)
    spent: dict[str, list[Any]] = {}  # key -> [requests, [costs]]
    payer: dict[str, int] = {}
    for index, rec in enumerate(ordered):
        for key, requests, cost in rec["llm_calls"]:
            if key is None:
                continue
            entry = spent.setdefault(key, [0, []])
            entry[0] += int(requests)
            entry[1].append(float(cost))
            payer.setdefault(key, index)
    for index, rec in enumerate(ordered):
        requests = 0
        costs: list[float] = []
        charged: set[str] = set()
        for key, own_requests, own_cost in rec["llm_calls"]:
            if key is None:
                requests += int(own_requests)
                costs.append(float(own_cost))
            elif payer[key] == index and key not in charged:
                charged.add(key)
                requests += spent[key][0]
                costs.extend(spent[key][1])
        system = rec.get("system_usage") or {}
        if system.get("cost") is not None:  # a pipeline's own spend, as it reported it
            costs.append(float(system["cost"]))
        usage = rec.get("usage")
        if isinstance(usage, MutableMapping):
            usage["requests"] = requests
        if rec.get("cost") is not None:
            # exactly rounded: the same whatever order the calls came back in
            rec["cost"] = math.fsum(costs)
