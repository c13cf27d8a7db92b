"""Drop-in shapes of the run budget for code written against the per-process classes."""

from __future__ import annotations

from ..llm.base import Completion
from ..llm.usage import PaidBefore, PriceTable
from .api import RunBudget


class RunCostBudget:
    """A run-wide spending cap with :class:`~pytest_ragbench.llm.usage.CostBudget`'s methods.

    Pass it where a ``CostBudget`` goes (e.g. ``BudgetedLLM``): :meth:`check` asks the run
    budget (one local round trip) and raises ``BudgetExceeded`` with the *run's* spend;
    :meth:`add` / :meth:`charge` record spend without blocking.
    """

    def __init__(self, budget: RunBudget, key: str, max_cost: float,
                 spent: float | PaidBefore = 0.0) -> None:
        self.run_budget = budget
        self.key = key
        self.max_cost = float(max_cost)
        self.spent_before(spent)

    def __repr__(self) -> str:
        return f"RunCostBudget(key={self.key!r}, max_cost={self.max_cost})"

    def spent_before(self, paid: float | PaidBefore) -> None:
        """Count ``paid`` (USD, or with the requests it paid for) as paid before the run (a
        resumed run's reused cases), once for the run however many processes say it."""
        if not isinstance(paid, PaidBefore):
            paid = PaidBefore(float(paid))
        self.run_budget.declare_cost(self.key, self.max_cost, paid.usd,
                                     charges=paid.charges, estimated=paid.estimated)

    @property
    def spent(self) -> float:
        """The whole run's spend under this cap (all workers)."""
        costs = self.run_budget.totals()["costs"]
        return float(costs[self.key]["spent"]) if self.key in costs else 0.0

    @property
    def remaining(self) -> float:
        return max(0.0, self.max_cost - self.spent)

    def check(self) -> None:
        """Raise ``BudgetExceeded`` if the run has used this cap up."""
        self.run_budget.check_cost_sync(self.key)

    def add(self, cost: float, *, estimated: bool = False) -> None:
        """Record ``cost`` USD spent (``estimated``: made from estimated token counts)."""
        self.run_budget.charge(self.key, cost, estimated=estimated)

    def charge(self, prices: PriceTable, model: str, completion: Completion) -> float:
        """Add the cost of ``completion`` (zero when it came from the cache); return it.

        A request priced at $0 is one of the cap's charges too, as the built-in clients
        count it with their lease: the same requests say the same 'estimated for N of M'
        whichever path charged them. A cached reply made no request and is none."""
        if completion.cached:
            return 0.0
        cost = prices.cost(model, completion.usage)
        self.add(cost, estimated=completion.usage.estimated)
        return cost
