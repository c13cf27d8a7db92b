"""One budget per run: concurrency, rate limits and spending caps shared by every worker.

Use :class:`LocalBudget` in a single process, or start a :class:`Coordinator` in the xdist
controller and connect a :class:`CoordinatorClient` in each worker; both are a
:class:`RunBudget`. No pytest imports here: the plugin does the wiring.
"""

from __future__ import annotations

from .adapters import RunCostBudget
from .api import BudgetError, BudgetExceeded, Claim, CoordinatorError, Lease, RunBudget
from .client import CoordinatorClient, parse_address
from .limits import Adaptive, PoolLimits, parse_concurrency
from .local import LocalBudget
from .protocol import WORKERINPUT_ADDRESS, WORKERINPUT_TOKEN
from .server import Coordinator

__all__ = [
    "WORKERINPUT_ADDRESS",
    "WORKERINPUT_TOKEN",
    "Adaptive",
    "BudgetError",
    "BudgetExceeded",
    "Claim",
    "Coordinator",
    "CoordinatorClient",
    "CoordinatorError",
    "Lease",
    "LocalBudget",
    "PoolLimits",
    "RunBudget",
    "RunCostBudget",
    "parse_address",
    "parse_concurrency",
]
