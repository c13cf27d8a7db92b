"""The run budget's interface: what callers (LLM clients, pipelines) use, whatever the transport.

A :class:`RunBudget` is either a :class:`~.local.LocalBudget` (one process, ``-n 0``) or a
:class:`~.client.CoordinatorClient` (an xdist worker talking to the controller's
:class:`~.server.Coordinator`). Both send the same messages to one
:class:`~.core.BudgetCore`, so they behave the same. All methods are thread-safe and may be
awaited from any event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from ..llm.base import LLMError
from ..llm.resilience import CircuitOpenError
from ..llm.usage import BudgetExceeded
from .limits import PoolLimits

#: How long a worker waits at most for a response another process is obtaining (its
#: retries included) before sending the request itself.
CLAIM_WAIT = 300.0

__all__ = ["BudgetError", "BudgetExceeded", "Claim", "CoordinatorError", "Lease", "RunBudget"]


class BudgetError(LLMError):
    """The budget refused a message (an undeclared pool, conflicting limits, bad input)."""


class CoordinatorError(LLMError):
    """The coordinator cannot be reached or was lost; no request can be admitted."""


def _raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply
    message = str(reply.get("message", "refused"))
    if reply.get("error") == "budget":
        raise BudgetExceeded(message)
    if reply.get("error") == "lost":
        raise CoordinatorError(message)
    if reply.get("error") == "circuit":
        retry_in = reply.get("retry_in")
        raise CircuitOpenError(message, float(retry_in) if isinstance(retry_in, int | float)
                               else None)
    raise BudgetError(message)


# False inside refusals_not_counted(); a context variable: it belongs to the calls the code
# inside makes, in whatever thread or task
_COUNT_REFUSALS: ContextVar[bool] = ContextVar("ragbench_count_refusals", default=True)


@contextlib.contextmanager
def refusals_not_counted() -> Iterator[None]:
    """The spending caps' refusals of the requests made inside do not count in their
    ``refused`` figure: the xdist controller's head start asks for cases that a worker, when
    the head start is refused, asks for again (one refusal of the case, not two)."""
    token = _COUNT_REFUSALS.set(False)
    try:
        yield
    finally:
        _COUNT_REFUSALS.reset(token)


class Lease:
    """A granted request: one concurrency slot and its rate permits, until :meth:`release`.

    Release it exactly once, right after the response (or failure) with what happened, so the
    adaptive controller learns from it. As an async context manager it releases itself:
    ``"ok"`` on a normal exit, ``"aborted"`` on cancellation and ``"error"`` otherwise, unless
    :meth:`release` was called inside.
    """

    def __init__(self, budget: RunBudget, ident: int, key: str) -> None:
        self._budget = budget
        self.ident = ident
        self.key = key
        self.released = False

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r}, id={self.ident}, released={self.released})"

    def release(
        self,
        outcome: str = "ok",
        *,
        retry_after: float | None = None,
        tokens_used: int | None = None,
        usd: float | None = None,
        fault: tuple[int, float, str] | None = None,
        estimated: bool = False,
    ) -> None:
        """Give the slot back. Never blocks; safe to call during cancellation; idempotent.

        ``outcome``: ``"ok"``, ``"throttled"`` (HTTP 429), ``"timeout"``, ``"error"`` (any
        other failure) or ``"aborted"`` (says nothing about the endpoint). ``retry_after``:
        the server's Retry-After in seconds, which pauses the whole pool. ``tokens_used``: the
        real token count, settling the estimate given to :meth:`RunBudget.acquire`. ``usd``:
        the call's cost, charged to the acquire's ``cost_key`` in the same step as the slot
        is freed; prefer it to a later :meth:`RunBudget.charge`, which lets requests be
        admitted while a finished call's cost is still unknown. ``fault``: the attempt failed
        on the endpoint's account (a 5xx, no answer): ``(threshold, seconds, why)`` of the
        caller's circuit breaker, which the run's pool keeps for every process together (a
        release of an answered attempt without it counts as the endpoint alive).
        ``estimated``: ``tokens_used`` (and the ``usd`` made from it) is an estimate, the
        reply having said no usage; the pool's and the cap's figures say how many were.
        """
        if self.released:
            return
        self.released = True
        message: dict[str, Any] = {"op": "release", "lease": self.ident, "outcome": outcome}
        if retry_after is not None:
            message["retry_after"] = float(retry_after)
        if tokens_used is not None:
            message["tokens_used"] = int(tokens_used)
        if usd is not None:
            message["usd"] = float(usd)
        if estimated:
            message["estimated"] = True
        if fault is not None:
            message["fault"] = [int(fault[0]), float(fault[1]), str(fault[2])[:300]]
        self._budget._post(message)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.release("ok")
        elif issubclass(exc_type, asyncio.CancelledError):
            self.release("aborted")
        else:
            self.release("error")


class Claim:
    """The answer to :meth:`RunBudget.claim` of one request key (see :mod:`.exchange`).

    ``state``: ``"mine"`` (send the request, then :meth:`publish` the response or
    :meth:`release` the key), ``"done"`` (``value`` is the response another process
    published), ``"taken"`` (another process has it: a leader skips it, a follower sends it
    itself) or ``"withdrawn"``. ``lead_over``: the exchange has nothing more to hand out
    (no need to ask it again).
    """

    def __init__(self, budget: RunBudget, ident: int, key: str, state: str,
                 value: Any = None) -> None:
        self._budget = budget
        self.ident = ident
        self.key = key
        self.state = state
        self.value = value
        self.lead_over = False
        self._open = state == "mine"

    def __repr__(self) -> str:
        return f"Claim(key={self.key!r}, state={self.state!r})"

    def publish(self, value: Any) -> None:
        """Hand the response (plain data) to whoever needs the key. Never blocks."""
        if self._open:
            self._open = False
            self._budget._post({"op": "publish", "claim": self.ident, "value": value})

    def release(self, *, done: bool) -> None:
        """End the hold without publishing: ``done`` when the request was sent by this
        process (others asking for it send their own), else the key is given back (e.g.
        after a cancellation) to a waiting claim or to whoever asks next. Idempotent; safe
        during cancellation."""
        if self._open:
            self._open = False
            self._budget._post({"op": "unclaim", "claim": self.ident, "done": bool(done)})


class RunBudget(ABC):
    """Concurrency, rate limits and spending caps shared by a whole run.

    Declare pools and cost keys once (every worker may declare the same ones; conflicting
    limits are an error), then per request: ``lease = await acquire(pool, tokens=..,
    cost_key=..)``, send, ``lease.release(outcome, ...)``, and ``charge(cost_key, usd)``.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    # -- transport (implemented by LocalBudget and CoordinatorClient) --------------------------

    @abstractmethod
    def _deliver(self, message: dict[str, Any], future: concurrent.futures.Future[Any] | None
                 ) -> None:
        """Hand ``message`` to the core; resolve ``future`` with its reply dict if given."""

    @abstractmethod
    def close(self) -> None:
        """Release what this object holds (threads, sockets). Idempotent."""

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    def _call(self, message: dict[str, Any]) -> tuple[int, concurrent.futures.Future[Any]]:
        ident = self._next_id()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._deliver({**message, "id": ident}, future)
        return ident, future

    def _post(self, message: dict[str, Any]) -> None:
        """Send without waiting for (or getting) a reply."""
        self._deliver(message, None)

    def _call_sync(self, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        _, future = self._call(message)
        try:
            reply = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise CoordinatorError(f"the run budget did not answer {message['op']!r} within "
                                   f"{timeout:g} s") from None
        return _raise_for(reply)

    async def _call_async(self, message: dict[str, Any]) -> dict[str, Any]:
        _, future = self._call(message)
        return _raise_for(await asyncio.wrap_future(future))

    # -- declarations ------------------------------------------------------------

    def declare(self, key: str, limits: PoolLimits) -> None:
        """Declare pool ``key`` (e.g. one endpoint and model) with its run-wide limits."""
        self._call_sync({"op": "declare", "key": key, "limits": limits.to_dict()})

    def declare_cost(self, key: str, max_cost: float, spent: float = 0.0, *,
                     charges: int = 0, estimated: int = 0) -> None:
        """Declare spending cap ``key`` (e.g. a suite's ``max_cost``) in USD for the run;
        ``spent``: what it paid for before (the cases a resumed run reuses), in ``charges``
        requests of which ``estimated`` were priced from estimated token counts."""
        message: dict[str, Any] = {"op": "declare_cost", "key": key,
                                   "max_cost": float(max_cost), "spent": float(spent)}
        if charges:
            message["charges"] = int(charges)
        if estimated:
            message["estimated"] = int(estimated)
        self._call_sync(message)

    # -- per request ------------------------------------------------------------

    @staticmethod
    def _counting(message: dict[str, Any]) -> dict[str, Any]:
        if not _COUNT_REFUSALS.get():
            message["count"] = False
        return message

    async def acquire(self, key: str, *, tokens: int = 0, cost_key: str | None = None,
                      hold: float | None = None) -> Lease:
        """Wait for a slot of pool ``key``, then for its rate windows to take the request.

        ``tokens`` is the request's estimated token count (for ``tpm``). With ``cost_key``,
        raises :class:`BudgetExceeded` (with the run's spend) instead once that cap is used
        up, also when it is reached while waiting. Cancelling the wait withdraws it.
        ``hold``: how long the request may run (its attempt timeout); should this process
        die, its slot stays taken that long, as the endpoint may still be answering it.
        """
        message: dict[str, Any] = {"op": "acquire", "key": key, "tokens": int(tokens)}
        if cost_key is not None:
            message["cost_key"] = cost_key
        if hold is not None:
            message["hold"] = float(hold)
        ident, future = self._call(self._counting(message))
        try:
            reply = await asyncio.wrap_future(future)
        except BaseException:
            # a withdrawal crossing its grant ends the lease instead: no slot leaks
            self._post({"op": "release", "lease": ident, "outcome": "aborted"})
            raise
        _raise_for(reply)
        return Lease(self, ident, key)

    async def check_cost(self, key: str) -> None:
        """Raise :class:`BudgetExceeded` if spending cap ``key`` is used up by the run."""
        await self._call_async(self._counting({"op": "check_cost", "key": key}))

    def check_cost_sync(self, key: str) -> None:
        """:meth:`check_cost` for synchronous callers (one local round trip)."""
        self._call_sync(self._counting({"op": "check_cost", "key": key}))

    def trip(self, key: str, seconds: float, message: str) -> None:
        """Say that this process's circuit breaker opened on pool ``key``'s endpoint: every
        process's requests to it fail fast for ``seconds``. Never blocks."""
        self._post({"op": "trip", "key": key, "seconds": float(seconds), "message": message})

    def charge(self, key: str, usd: float, *, estimated: bool = False) -> None:
        """Add ``usd`` spent to cap ``key`` (``estimated``: made from estimated token
        counts). Never blocks."""
        message: dict[str, Any] = {"op": "charge", "key": key, "usd": float(usd)}
        if estimated:
            message["estimated"] = True
        self._post(message)

    # -- the request exchange ------------------------------------------------------------

    async def claim(self, key: str, *, consume: bool = True,
                    wait: float = CLAIM_WAIT, scope: str | None = None) -> Claim:
        """Claim request ``key`` in the run's exchange (:mod:`.exchange`); may wait while
        another process holds it, at most ``wait`` seconds: then the wait is withdrawn and
        the answer is ``taken`` (send the request yourself; a holder that never answers
        costs a request twice, not a hang). ``consume`` false (the controller's head start):
        never wait for or take another's response, only claim a key nobody has. ``scope``
        (a suite's id): a key nobody has claimed yet, in a scope a leader will still claim,
        waits for the leader's claim (the exchange parks it). Cancelling the wait withdraws
        it (and gives back a claim granted meanwhile)."""
        message: dict[str, Any] = {"op": "claim", "key": key, "consume": bool(consume)}
        if scope is not None:
            message["scope"] = scope
        ident, future = self._call(message)
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(future), wait)
        except asyncio.TimeoutError:
            self._post({"op": "unclaim", "claim": ident, "done": False})
            return Claim(self, ident, key, "taken")
        except BaseException:
            self._post({"op": "unclaim", "claim": ident, "done": False})
            raise
        _raise_for(reply)
        claim = Claim(self, ident, key, str(reply.get("state")), reply.get("value"))
        claim.lead_over = reply.get("lead") is False
        return claim

    def lead(self, scopes: Sequence[str] | None = None) -> None:
        """Say that this client leads the run's exchange until :meth:`close` (the
        controller's head start): until then workers keep asking it. ``scopes``: the
        scopes whose keys it will still claim (all of them, replacing what it said before);
        a worker's claim of one of their keys then waits for this client's. Never blocks."""
        message: dict[str, Any] = {"op": "lead"}
        if scopes is not None:
            message["scopes"] = list(scopes)
        self._post(message)

    # -- reading ------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        """The run's totals (plain data): ``{"pools": {key: {...}}, "costs": {...}, "spent"}``.

        Each pool reports ``requests``, ``in_flight``, ``max_in_flight``, ``throttled``,
        ``timeouts`` and, when adaptive, ``adaptive: {level, max_level, bound, decreases}``.
        Messages sent earlier from this object are counted (one connection keeps order).
        """
        return dict(self._call_sync({"op": "totals"})["totals"])

    async def atotals(self) -> dict[str, Any]:
        """:meth:`totals` without blocking the event loop."""
        return dict((await self._call_async({"op": "totals"}))["totals"])

    def __enter__(self) -> RunBudget:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
