"""Per-case metering: what one case's chat calls cost, seen through a context variable.

Besides the case's totals, the meter lists each call as ``[key, requests, cost]``. Through a
response cache (any mode but ``off``) cases may share a request: one sends it, the others join
it in flight or read the stored reply. Such a call's ``key`` is the request's cache key, so
that it can be charged to one of the cases by their order rather than by timing
(:mod:`pytest_ragbench.results.settle`). A call that cannot be shared (no cache: every case
sends its own) and a judge batch's share of an item have no key.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Any

from ..llm.base import LLM, Completion, Message
from ..llm.usage import PriceTable

#: Hex digits of a call's key in a record: enough to tell a run's requests apart.
KEY_DIGITS = 16

# -- per-case metering ---------------------------------------------------------------------


class _Meter:
    """What one case's chat calls cost (mutated by :class:`_MeteredLLM` within the case)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.requests = 0
        self.cost = 0.0
        self.estimated = 0  # calls whose token counts are estimates (the reply said none)
        #: ``[key, requests, cost]`` per call, as they came back
        self.calls: list[list[Any]] = []

    def add(self, completion: Completion, cost: float, key: str | None = None) -> None:
        self.prompt_tokens += completion.usage.prompt_tokens
        self.completion_tokens += completion.usage.completion_tokens
        self.requests += completion.usage.requests
        self.cost += cost
        self.estimated += completion.usage.estimated
        self.calls.append([key, completion.usage.requests, cost])

    def usage(self) -> dict[str, int]:
        out = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }
        if self.estimated:
            out["estimated"] = self.estimated
        return out


class _MeteredLLM:
    """Adds every completion's usage and cost to the meter of the case being run.

    The meter travels in a context variable because many cases run concurrently on one loop
    through the same client; asyncio copies the context into the judge's subtasks, and the
    meter object itself is shared, so their calls are counted too.
    """

    def __init__(self, inner: LLM, meter: contextvars.ContextVar[_Meter | None],
                 prices: PriceTable | None, model: str | None,
                 key: Callable[[Sequence[Message], dict[str, Any]], str] | None = None) -> None:
        self.inner = inner
        self._meter = meter
        self._prices = prices
        self._model = model  # None: a free provider
        #: the cache key of a request, when cases can share it (see the module docstring)
        self._key = key

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        completion = await self.inner.chat(messages, **params)
        key = self._key(messages, params)[:KEY_DIGITS] if self._key is not None else None
        self.charge(completion, key)
        return completion

    def charge(self, completion: Completion, key: str | None = None) -> None:
        """Add ``completion``'s usage and cost to the meter of the case being run: what
        :meth:`chat` does with each reply (``key`` names its request), and what a batched
        judge call's share of one item is charged with (the call itself runs outside any
        case)."""
        meter = self._meter.get()
        if meter is not None:
            cost = 0.0
            if self._prices is not None and self._model is not None and not completion.cached:
                cost = self._prices.cost(self._model, completion.usage)
            meter.add(completion, cost, key)


