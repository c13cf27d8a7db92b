"""Token prices, the cost of a call, and a spending cap for a run.

Prices are USD per one million tokens, prompt and completion separately, as providers list
them. Cached completions (``Completion.cached``) cost nothing: they keep their token counts
for reporting but made no request (see :mod:`pytest_ragbench.llm.cache`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import SuiteError, did_you_mean
from .base import LLM, Completion, LLMError, Message, Usage

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # e.g. gpt-4o-2024-08-06
_PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per one million prompt and completion tokens."""

    prompt: float
    completion: float


def _rate(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SuiteError(
            f"expected a number of USD per 1M tokens, got {type(value).__name__}", key=key
        )
    if not math.isfinite(value) or value < 0:
        raise SuiteError(f"expected a finite number >= 0, got {value}", key=key)
    return float(value)


@dataclass(frozen=True)
class PriceTable:
    """Prices per model; see :meth:`from_mapping` for the accepted input."""

    prices: Mapping[str, Price] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, key: str = "prices") -> PriceTable:
        """Parse ``{model: {"prompt": usd_per_1m, "completion": usd_per_1m}}``.

        ``key`` names the mapping's place in the suite file for error messages.
        """
        if not isinstance(data, Mapping):
            raise SuiteError(
                f"expected a mapping of model names, got {type(data).__name__}", key=key
            )
        prices: dict[str, Price] = {}
        for model, entry in data.items():
            where = f"{key}.{model}"
            if not isinstance(entry, Mapping):
                raise SuiteError(
                    f"expected {{prompt: ..., completion: ...}}, got {type(entry).__name__}",
                    key=where,
                )
            unknown = set(entry) - {"prompt", "completion"}
            if unknown:
                name = sorted(map(str, unknown))[0]
                hint = did_you_mean(name, ["prompt", "completion"])
                raise SuiteError(f"unknown field {name!r}{hint}", key=where)
            missing = [f for f in ("prompt", "completion") if f not in entry]
            if missing:
                raise SuiteError(f"missing field {missing[0]!r}", key=where)
            prices[str(model)] = Price(
                _rate(entry["prompt"], f"{where}.prompt"),
                _rate(entry["completion"], f"{where}.completion"),
            )
        return cls(prices)

    def price(self, model: str) -> Price:
        """The price of ``model``; a dated snapshot (``name-YYYY-MM-DD``) falls back to ``name``."""
        if model in self.prices:
            return self.prices[model]
        base = _SNAPSHOT_SUFFIX.sub("", model)
        if base in self.prices:
            return self.prices[base]
        raise LLMError(f"no price for model {model!r}{did_you_mean(model, self.prices)}")

    def cost(self, model: str, usage: Usage) -> float:
        """USD cost of ``usage`` on ``model``."""
        price = self.price(model)
        return (
            usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion
        ) / _PER_TOKENS


class BudgetExceeded(LLMError):
    """The run's spending cap is used up; no further paid call is started."""


@dataclass(frozen=True)
class PaidBefore:
    """What a spending cap paid for before this run: the cases a resumed run reuses.

    ``usd`` counts toward the cap; ``charges`` (the paid requests) and ``estimated`` (of them,
    those priced from estimated token counts: the reply said no usage) keep the spend saying
    what it rests on, as the run that made those requests said it.
    """

    usd: float = 0.0
    charges: int = 0
    estimated: int = 0


class CostBudget:
    """A spending cap: :meth:`check` before each call, :meth:`add` its cost after.

    Once ``spent >= max_cost`` every :meth:`check` raises :class:`BudgetExceeded` (so
    ``max_cost=0`` allows no paid call at all). Calls already in flight when the cap is reached
    still complete and are added, so the final spend can overshoot by at most the cost of the
    calls running concurrently.
    """

    def __init__(self, max_cost: float) -> None:
        if not math.isfinite(max_cost) or max_cost < 0:
            raise ValueError(f"max_cost must be a finite number >= 0, got {max_cost}")
        self.max_cost = float(max_cost)
        self._spent = 0.0

    def __repr__(self) -> str:
        return f"CostBudget(max_cost={self.max_cost}, spent={self._spent:.6f})"

    @property
    def spent(self) -> float:
        return self._spent

    @property
    def remaining(self) -> float:
        return max(0.0, self.max_cost - self._spent)

    def check(self) -> None:
        """Raise :class:`BudgetExceeded` if the budget is used up."""
        if self._spent >= self.max_cost:
            raise BudgetExceeded(
                f"cost budget exhausted: spent ${self._spent:.4f} of ${self.max_cost:.4f}"
            )

    def add(self, cost: float) -> None:
        """Record ``cost`` USD spent."""
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"cost must be a finite number >= 0, got {cost}")
        self._spent += cost

    def charge(self, prices: PriceTable, model: str, completion: Completion) -> float:
        """Add the cost of ``completion`` (zero when it came from the cache); return it."""
        cost = 0.0 if completion.cached else prices.cost(model, completion.usage)
        self.add(cost)
        return cost


class BudgetedLLM:
    """An :class:`~pytest_ragbench.llm.base.LLM` that stops calling ``inner`` when over budget.

    ``model`` is the name looked up in ``prices`` (checked now, so a missing price fails at
    setup, not mid-run). Put it *inside* the cache wrapper, ``CachedLLM(BudgetedLLM(...))``, so
    cache hits are served even when the budget is exhausted.
    """

    def __init__(self, inner: LLM, budget: CostBudget, prices: PriceTable, *, model: str) -> None:
        prices.price(model)
        self.inner = inner
        self.budget = budget
        self.prices = prices
        self.model = model

    def __repr__(self) -> str:
        return f"BudgetedLLM({self.inner!r}, {self.budget!r})"

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Check the budget, call ``inner``, charge the reply's cost."""
        self.budget.check()
        completion = await self.inner.chat(messages, **params)
        self.budget.charge(self.prices, self.model, completion)
        return completion
