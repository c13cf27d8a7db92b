"""The run budget's state machine: slots, rate windows, adaptive concurrency and spend.

One :class:`BudgetCore` holds the whole run's state. It is driven by plain-dict messages
(the same ones the coordinator receives over TCP) from *owners* (a worker connection, or the
process itself) and answers through a reply callback, possibly later: an ``acquire`` is
answered when its slot and rate permits are granted, never by polling. It is not thread-safe:
exactly one event loop thread calls it (see :mod:`.local` and :mod:`.server`), and it uses
that loop only through the injected ``clock`` and ``call_later``.

An acquire passes two stages, in this order so that a request is sent right after its grant:

1. a concurrency slot of its pool (fixed, adaptive or unbounded), first come first served;
2. while holding the slot: the pool's Retry-After pause, its request and token windows, and
   the cost check of its cost key.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .exchange import Exchange
from .limits import PoolLimits

Reply = Callable[[dict[str, Any]], None]
OUTCOMES = ("ok", "throttled", "timeout", "error", "aborted")


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], TimerHandle]


def _counted(message: dict[str, Any]) -> bool:
    """Whether a refusal of this request counts in its cap's ``refused`` (``"count": false``:
    the xdist controller's head start, whose refused requests a worker makes again)."""
    return message.get("count") is not False


def budget_message(spent: float, max_cost: float, key: str, estimated: int = 0,
                   charges: int = 0) -> str:
    """The text of a :class:`~pytest_ragbench.llm.usage.BudgetExceeded` raised for the run
    (``estimated`` of its ``charges`` made from estimated token counts)."""
    where = f" for {key!r}" if key else ""
    # worded as report.format.estimate_note (which this package does not import)
    note = (f"estimated for {estimated} of {charges} requests: the endpoint sent no usage"
            if estimated else "")
    return (f"cost budget exhausted{where}: this run spent ${spent:.4f} of "
            f"${max_cost:.4f} (all workers together{'; ' + note if note else ''})")


@dataclass
class _Waiter:
    owner: Hashable
    ident: int
    pool: _Pool
    tokens: float
    cost_key: str | None
    reply: Reply
    holds_slot: bool = False
    granted: bool = False
    epoch: int = 0
    saturated: bool = False
    load: int = 0  # requests in flight when it was granted, itself included
    token_entry: list[float] | None = None  # [time, amount] in the pool's token window
    counted: bool = True  # a refusal of it counts in the cap's "refused"
    hold: float | None = None  # how long the request may run (its attempt timeout), if known
    granted_at: float = 0.0


# a level refused again and again is probed after at most 2**MAX_STRIKES windows of successes
MAX_STRIKES = 7


@dataclass
class _Aimd:
    """Additive increase, multiplicative decrease, with a memory of the level refused.

    Below the last level refused (the ``ceiling``) the level grows by one per window of
    ``limit`` successes; the step onto the ceiling waits ``2**strikes`` windows, where
    ``strikes`` counts the refusals at that level in a row. So an endpoint that takes 2 at
    once is probed at 3 after 2, 4, 8, ... windows instead of after every one (a third of
    all requests refused), while a level the endpoint once refused but now takes is held for
    a window and forgotten, and growth past it is as fast as before."""

    level: float
    bound: int
    decrease: float
    max_level: float = 0.0
    successes: int = 0
    epoch: int = 0
    decreases: int = 0
    ceiling: int | None = None
    strikes: int = 0
    held: int = 0  # successes of requests sent with at least ``ceiling`` in flight

    def __post_init__(self) -> None:
        self.max_level = self.level

    @property
    def limit(self) -> int:
        return max(1, int(self.level))

    def success(self, saturated: bool, load: int, epoch: int) -> None:
        """A request sent with ``load`` in flight (itself included) in generation ``epoch``
        succeeded; ``saturated``: every slot was in use when it was sent."""
        if self.ceiling is not None and load >= self.ceiling and epoch == self.epoch:
            # the endpoint served the refused level: a window of it and the memory goes
            self.held += 1
            if self.held >= self.ceiling:
                self.ceiling = None
                self.strikes = 0
                self.held = 0
        # growing only on evidence: successes while every slot was in use
        if not saturated:
            return
        self.successes += 1
        needed = self.limit
        if self.ceiling is not None and self.limit + 1 >= self.ceiling:
            needed *= 2 ** min(self.strikes, MAX_STRIKES)
        if self.successes >= needed and self.level < self.bound:
            self.level = min(float(self.bound), math.floor(self.level) + 1.0)
            self.max_level = max(self.max_level, self.level)
            self.successes = 0

    def back_off(self, epoch: int) -> None:
        # requests sent before the last decrease report the old overload; one cut per generation
        if epoch != self.epoch:
            return
        refused = self.limit
        if self.ceiling is None or refused < self.ceiling:
            self.ceiling = refused
            self.strikes = 1
        else:
            self.strikes += 1
        self.held = 0
        self.level = max(1.0, self.level * self.decrease)
        self.epoch += 1
        self.successes = 0
        self.decreases += 1


@dataclass
class _Pool:
    key: str
    limits: PoolLimits
    aimd: _Aimd | None
    waiting: deque[_Waiter] = field(default_factory=deque)
    rate_waiting: deque[_Waiter] = field(default_factory=deque)
    slots: int = 0  # held by stage 2 and granted waiters
    active: int = 0  # granted and not released: requests in flight
    max_active: int = 0
    granted: int = 0
    tokens_used: float = 0.0  # settled token counts of released leases (progress reports)
    throttled: int = 0
    timeouts: int = 0
    errors: int = 0  # HTTP errors but 429 and 408, no answer, unreadable replies
    requests: deque[float] = field(default_factory=deque)
    token_log: deque[list[float]] = field(default_factory=deque)
    paused_until: float = 0.0
    timer: TimerHandle | None = None
    timer_at: float = math.inf
    longest: float = 0.0  # the longest a granted request has run until its release
    faults: int = 0  # consecutive attempts that failed on the endpoint's account, run-wide
    trips: int = 0  # times the run's circuit breaker opened on it
    spent: float = 0.0  # USD its priced replies cost (charged to a cost cap with them)
    estimated: int = 0  # requests settled by an estimate (the reply said no usage)
    settled: int = 0  # requests whose token count came back (the estimates' "of M")
    held: list[_Waiter] = field(default_factory=list)  # slots of departed owners still taken

    def limit(self) -> float:
        if self.aimd is not None:
            return self.aimd.limit
        return self.limits.concurrency if self.limits.concurrency is not None else math.inf

    def request_window(self) -> tuple[int, float]:
        """(count, seconds): at most ``count`` grants in any window of ``seconds``."""
        rpm = self.limits.rpm
        assert rpm is not None
        count = max(1, math.floor(rpm))
        # below one request per period the window stretches instead of the count shrinking
        return count, self.limits.period * (1.0 + self.limits.margin) * count / rpm

    def rate_wait(self, now: float, tokens: float) -> float:
        """Seconds until one more request with ``tokens`` fits both windows (0: now)."""
        wait = max(0.0, self.paused_until - now)
        if self.limits.rpm is not None:
            count, span = self.request_window()
            while self.requests and self.requests[0] <= now - span:
                self.requests.popleft()
            if len(self.requests) >= count:
                wait = max(wait, self.requests[-count] + span - now)
        if self.limits.tpm is not None:
            period = self.limits.period * (1.0 + self.limits.margin)
            while self.token_log and self.token_log[0][0] <= now - period:
                self.token_log.popleft()
            want = min(tokens, self.limits.tpm)
            total = sum(entry[1] for entry in self.token_log)
            if total + want > self.limits.tpm:
                # wait until enough of the oldest entries have left the window
                excess = total + want - self.limits.tpm
                for stamp, amount in self.token_log:
                    excess -= amount
                    if excess <= 0:
                        wait = max(wait, stamp + period - now)
                        break
        return wait

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "concurrency": self.limits.concurrency,
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "period": self.limits.period,
            "requests": self.granted,
            "in_flight": self.active,
            "max_in_flight": self.max_active,
            "tokens": int(self.tokens_used),
            "waiting": len(self.waiting) + len(self.rate_waiting),
            "throttled": self.throttled,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "trips": self.trips,
            "spent": usd_total(self.spent),
            "estimated": self.estimated,
            "settled": self.settled,
        }
        if self.aimd is not None:
            data["adaptive"] = {
                "level": self.aimd.limit,
                "max_level": int(self.aimd.max_level),
                "bound": self.aimd.bound,
                "decreases": self.aimd.decreases,
            }
        return data


def usd_total(value: float) -> float:
    """A spend as shown: a sum of many charges in the order they came (another at each
    ``-n``), rounded to a billionth of a cent so that the same charges show the same total
    (0.009878, not 0.009877999999999996 at ``-n 2``)."""
    return round(value, 11)


@dataclass
class _Cost:
    max_cost: float
    spent: float = 0.0
    before: float = 0.0  # of spent: what the cap paid for before the run (declared)
    charges: int = 0
    estimated: int = 0  # of charges: made from estimated token counts (no usage sent)
    charges_before: int = 0  # of charges and estimated: those paid for before the run
    estimated_before: int = 0
    refused: int = 0

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.max_cost


class BudgetCore:
    """All budgets of one run. See the module docstring; messages are documented on
    :meth:`handle`."""

    def __init__(self, *, call_later: CallLater, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._call_later = call_later
        self._pools: dict[str, _Pool] = {}
        self._costs: dict[str, _Cost] = {}
        self._leases: dict[tuple[Hashable, int], _Waiter] = {}
        # owners are never reused: a message from a dropped one (posted before its drop was
        # known) would hold a slot or a key nobody gives back
        self._dropped: set[Hashable] = set()
        # pool -> (until, why, seconds): the run's circuit breaker of the pool is open; once
        # ``until`` passes one request probes the endpoint (the lease in _probes)
        self._tripped: dict[str, tuple[float, str, float]] = {}
        self._probes: dict[str, tuple[Hashable, int]] = {}
        self.exchange = Exchange(call_later)

    # -- entry point ------------------------------------------------------------

    def handle(self, owner: Hashable, message: dict[str, Any], reply: Reply) -> None:
        """Process one message from ``owner``; answer through ``reply`` (now or later).

        Messages (``id`` is the caller's request number; messages without one get no reply):

        - ``declare {key, limits}`` and ``declare_cost {key, max_cost[, spent, charges,
          estimated]}``: idempotent; a conflicting redeclaration is an error (every worker
          reads the same suites). ``spent`` is what the cap paid for before this run (the
          cases a resumed run reuses), in ``charges`` requests of which ``estimated`` were
          priced from estimated token counts: the largest declared counts, once.
        - ``acquire {id, key, tokens, cost_key[, hold]}``: answered ``{id, ok}`` once
          granted; the lease is named by ``id``. ``hold``: how long the request may run (its
          attempt timeout): if its owner leaves the run (a crashed worker), its slot stays
          taken that long after the grant (at most twice the longest any request of the pool
          ran, at least 1 s), as the endpoint may still be answering it.
        - ``release {lease, outcome, retry_after, tokens_used, usd, fault, estimated}``: ends
          a lease, or withdraws a pending acquire; ``outcome`` is one of ``ok``,
          ``throttled`` (429), ``timeout``, ``error``, ``aborted``; ``usd`` charges the
          lease's cost key; ``estimated``: ``tokens_used`` and ``usd`` rest on an estimate
          (the reply said no usage), counted in the pool's and the cap's ``estimated``.
        - ``check_cost {id, key}``, ``charge {key, usd[, estimated]}``, ``totals {id}``.
        - ``trip {key, seconds, message}``: a process's circuit breaker opened on the pool's
          endpoint: for ``seconds`` every acquire of the pool is answered ``{ok: false,
          error: "circuit", message, retry_in}`` (one breaker for the run: each worker's own
          let through its own failures first, N times as many on a dead endpoint).
        - ``claim {id, key, consume[, scope]}``, ``publish {claim, value}``, ``unclaim
          {claim, done}``: the request exchange (:mod:`.exchange`); a claim is answered
          ``{id, ok, state}`` (``mine``, ``taken``, ``withdrawn``, or ``done`` with
          ``value``), maybe later; ``lead [scopes]``: the owner leads the exchange until it
          goes (and will still claim the keys of ``scopes``, a list of strings).
        """
        ident = message.get("id")

        def answer(payload: dict[str, Any]) -> None:
            if ident is not None:
                reply({"id": ident, **payload})

        op = message.get("op")
        if owner in self._dropped:
            answer({"ok": False, "error": "lost", "message": "this owner left the run budget"})
            return
        try:
            if op == "acquire":
                self._acquire(owner, message, answer)
                return
            if op == "claim":
                scope = message.get("scope")
                self.exchange.claim(owner, int(message["id"]), str(message["key"]),
                                    bool(message.get("consume", True)), answer,
                                    None if scope is None else str(scope))
                return
            if op == "publish":
                self.exchange.publish(owner, int(message["claim"]), message.get("value"))
                answer({"ok": True})
                return
            if op == "lead":
                scopes = message.get("scopes")
                if scopes is not None and (not isinstance(scopes, list) or not all(
                        isinstance(s, str) for s in scopes)):
                    raise ValueError("scopes must be a list of strings")
                self.exchange.lead(owner, scopes)
                answer({"ok": True})
                return
            if op == "unclaim":
                self.exchange.unclaim(owner, int(message["claim"]), bool(message.get("done")))
                answer({"ok": True})
                return
            if op == "release":
                self._release(owner, message)
                answer({"ok": True})
            elif op == "declare":
                self._declare(str(message["key"]), PoolLimits.from_dict(message["limits"]))
                answer({"ok": True})
            elif op == "trip":
                self._trip(str(message["key"]), float(message["seconds"]),
                           str(message.get("message") or "the endpoint keeps failing"))
                answer({"ok": True})
            elif op == "declare_cost":
                self._declare_cost(str(message["key"]), float(message["max_cost"]),
                                   float(message.get("spent", 0.0)),
                                   int(message.get("charges", 0)),
                                   int(message.get("estimated", 0)))
                answer({"ok": True})
            elif op == "check_cost":
                error = self._cost_error(message.get("key"), _counted(message))
                answer(error or {"ok": True})
            elif op == "charge":
                self._charge(message.get("key"), float(message["usd"]),
                             message.get("estimated") is True)
                answer({"ok": True})
            elif op == "totals":
                answer({"ok": True, "totals": self.totals()})
            else:
                answer({"ok": False, "error": "protocol", "message": f"unknown op {op!r}"})
        except Exception as exc:
            # whatever a peer sends, it gets an answer: an unanswered acquire would hang it
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            answer({"ok": False, "error": "invalid", "message": f"{op}: {detail}"})

    def drop_owner(self, owner: Hashable) -> None:
        """Forget a departed owner: withdraw its waiters and release its slots (those of
        requests the endpoint may still be answering once they could have ended, see
        :meth:`_free_held`); its later messages are refused."""
        self._dropped.add(owner)
        # every pending or granted acquire is in _leases, so this covers the queues too
        for (who, _ident), waiter in list(self._leases.items()):
            if who != owner:
                continue
            if waiter.holds_slot and waiter.granted and waiter.hold is not None:
                # its request may still be answered by the endpoint: the slot stays taken
                # until its attempt could have ended (with no timeout known, not at all)
                waiter.pool.held.append(waiter)
            else:
                self._end(waiter, "aborted", None, None)
        self.exchange.drop_owner(owner)
        for pool in self._pools.values():
            self._free_held(pool)
            self._pump(pool)

    def _free_held(self, pool: _Pool) -> None:
        """Free the held slots whose requests cannot run any more, and time the next one.

        A held request may run until its attempt timeout, or, once the pool's requests are
        known to take some time, twice the longest of them (at least 1 s): a minute's timeout
        would otherwise stall the run's other workers that long after a crash."""
        now = self._clock()
        due = math.inf
        for waiter in list(pool.held):
            hold = waiter.hold if waiter.hold is not None else 0.0
            if pool.longest > 0:
                hold = min(hold, max(1.0, 2 * pool.longest))
            if now >= waiter.granted_at + hold:
                pool.held.remove(waiter)
                self._end(waiter, "aborted", None, None)
            else:
                due = min(due, waiter.granted_at + hold)
        if due < math.inf:
            self._call_later(due - now, lambda: self._retry_held(pool))

    def _retry_held(self, pool: _Pool) -> None:
        self._free_held(pool)
        self._pump(pool)

    def totals(self) -> dict[str, Any]:
        """Plain-data view: per pool counters and adaptive level, per cost key spend."""
        return {
            "pools": {key: pool.snapshot() for key, pool in sorted(self._pools.items())},
            "costs": {
                key: {"spent": usd_total(c.spent), "max_cost": c.max_cost,
                      "charges": c.charges,
                      "estimated": c.estimated, "refused": c.refused,
                      "exhausted": c.exhausted}
                for key, c in sorted(self._costs.items())
            },
            "spent": usd_total(math.fsum(c.spent for c in self._costs.values())),
            "exchange": self.exchange.stats.to_dict(),
        }

    # -- declarations ------------------------------------------------------------

    def _declare(self, key: str, limits: PoolLimits) -> None:
        pool = self._pools.get(key)
        if pool is not None:
            if pool.limits != limits:
                raise ValueError(f"pool {key!r} was declared with {pool.limits} and now with "
                                 f"{limits}; every worker must use the same limits")
            return
        aimd = None
        if limits.adaptive is not None:
            aimd = _Aimd(float(limits.adaptive.start), limits.adaptive.max,
                         limits.adaptive.decrease)
        self._pools[key] = _Pool(key, limits, aimd)

    def _declare_cost(self, key: str, max_cost: float, spent: float = 0.0,
                      charges: int = 0, estimated: int = 0) -> None:
        if not math.isfinite(max_cost) or max_cost < 0:
            raise ValueError(f"max_cost must be a finite number >= 0, got {max_cost}")
        if not math.isfinite(spent) or spent < 0:
            raise ValueError(f"spent must be a finite number >= 0, got {spent}")
        if not 0 <= estimated <= charges:
            raise ValueError(f"estimated must be between 0 and charges ({charges}), "
                             f"got {estimated}")
        cost = self._costs.get(key)
        if cost is None:
            cost = self._costs[key] = _Cost(max_cost)
        elif cost.max_cost != max_cost:
            raise ValueError(f"cost key {key!r} was declared with max_cost "
                             f"{cost.max_cost} and now with {max_cost}")
        # Every process declares the same figures once it knows them, counted once; one
        # that does not yet (its pipeline built before it read the reused cases) declares
        # none, which must not take another's back out of the run's spend meanwhile.
        if spent > cost.before:
            cost.spent += spent - cost.before
            cost.before = spent
        if charges > cost.charges_before:
            cost.charges += charges - cost.charges_before
            cost.charges_before = charges
        if estimated > cost.estimated_before:
            cost.estimated += estimated - cost.estimated_before
            cost.estimated_before = estimated

    # -- cost ------------------------------------------------------------

    def _cost(self, key: Any) -> _Cost:
        cost = self._costs.get(str(key))
        if cost is None:
            raise ValueError(f"cost key {key!r} was never declared")
        return cost

    def _cost_error(self, key: Any, counted: bool = True) -> dict[str, Any] | None:
        cost = self._cost(key)
        if not cost.exhausted:
            return None
        cost.refused += counted
        return {"ok": False, "error": "budget",
                "message": budget_message(cost.spent, cost.max_cost, str(key),
                                          cost.estimated, cost.charges),
                "spent": cost.spent, "max_cost": cost.max_cost}

    def _charge(self, key: Any, usd: float, estimated: bool = False) -> None:
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"cost must be a finite number >= 0, got {usd}")
        cost = self._cost(key)
        cost.spent += usd
        cost.charges += 1
        cost.estimated += estimated

    # -- slots and rates ------------------------------------------------------------

    def _trip(self, key: str, seconds: float, why: str) -> None:
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"seconds must be a finite number > 0, got {seconds}")
        until = self._clock() + seconds
        if until > self._tripped.get(key, (0.0, "", 0.0))[0]:
            if key not in self._tripped and key in self._pools:
                self._pools[key].trips += 1
            self._tripped[key] = (until, why, seconds)

    def _acquire(self, owner: Hashable, message: dict[str, Any], answer: Reply) -> None:
        key = str(message["key"])
        pool = self._pools.get(key)
        if pool is None:
            answer({"ok": False, "error": "invalid", "message": f"pool {key!r} was never declared"})
            return
        tripped = self._tripped.get(key)
        probe = False
        if tripped is not None:
            now = self._clock()
            if now < tripped[0] or key in self._probes:
                # open, or half open with its one probe in flight
                answer({"ok": False, "error": "circuit",
                        "retry_in": max(tripped[0] - now, 0.0),
                        "message": f"circuit open (for every process of the run): "
                                   f"{tripped[1]}"})
                return
            probe = True  # half open: this request tries the endpoint for the run
        cost_key = message.get("cost_key")
        if cost_key is not None:
            error = self._cost_error(cost_key, _counted(message))  # fail fast, before queueing
            if error is not None:
                answer(error)
                return
        tokens = float(message.get("tokens") or 0)
        hold = message.get("hold")
        waiter = _Waiter(owner, int(message["id"]), pool, max(0.0, tokens),
                         None if cost_key is None else str(cost_key), answer,
                         counted=_counted(message),
                         hold=float(hold) if isinstance(hold, int | float) and math.isfinite(
                             hold) and hold > 0 else None)
        self._leases[(owner, waiter.ident)] = waiter
        if probe:
            self._probes[key] = (owner, waiter.ident)
        pool.waiting.append(waiter)
        self._pump(pool)

    def _release(self, owner: Hashable, message: dict[str, Any]) -> None:
        waiter = self._leases.get((owner, int(message["lease"])))
        if waiter is None:
            return  # already released, or a withdrawal that crossed its grant: idempotent
        outcome = str(message.get("outcome") or "ok")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        retry_after = message.get("retry_after")
        tokens_used = message.get("tokens_used")
        usd = message.get("usd")
        estimated = message.get("estimated") is True
        problem: ValueError | None = None
        if usd is not None:
            # charged in the same step as the slot is freed, so no request can be admitted
            # between the end of a paid call and its cost being known
            try:
                if waiter.cost_key is None:
                    raise ValueError("usd given for a lease acquired without a cost_key")
                self._charge(waiter.cost_key, float(usd), estimated)
                waiter.pool.spent += float(usd)
            except (TypeError, ValueError) as exc:
                # the lease still ends: a slot nobody gives back stalls every later request
                problem = ValueError(str(exc))
        self._count_fault(waiter, outcome, message.get("fault"))
        self._end(waiter, outcome,
                  None if retry_after is None else float(retry_after),
                  None if tokens_used is None else float(tokens_used), estimated)
        self._pump(waiter.pool)
        if problem is not None:
            raise problem

    def _count_fault(self, waiter: _Waiter, outcome: str, fault: Any) -> None:
        """The run's circuit breaker of the pool: consecutive failures on the endpoint's
        account, whichever process sent them, open it at the callers' threshold (each
        worker's own breaker counted only its own: N times as many requests at -n N); the
        probe after it opened closes it, or opens it again."""
        pool = waiter.pool
        if self._probes.get(pool.key) == (waiter.owner, waiter.ident):
            if outcome in ("aborted", "timeout") and not isinstance(fault, list):
                return  # says nothing: _end frees the probe for another request
            del self._probes[pool.key]
            tripped = self._tripped.pop(pool.key, None)
            if isinstance(fault, list) and tripped is not None:
                self._trip(pool.key, tripped[2], tripped[1])  # still failing: open again
            pool.faults = 0
            return
        if isinstance(fault, list) and len(fault) == 3:
            pool.faults += 1
            threshold, seconds, why = int(fault[0]), float(fault[1]), str(fault[2])
            if pool.faults >= threshold > 0:
                pool.faults = 0
                self._trip(pool.key, seconds, f"{why}, {threshold} consecutive failures")
        elif outcome not in ("aborted", "timeout"):
            # the endpoint answered (a call cancelled at its time limit says nothing of it)
            pool.faults = 0

    def _end(self, waiter: _Waiter, outcome: str, retry_after: float | None,
             tokens_used: float | None, estimated: bool = False) -> None:
        pool = waiter.pool
        self._leases.pop((waiter.owner, waiter.ident), None)
        if self._probes.get(pool.key) == (waiter.owner, waiter.ident):
            del self._probes[pool.key]  # withdrawn or abandoned: another request may probe
        if not waiter.holds_slot:
            if waiter in pool.waiting:
                pool.waiting.remove(waiter)
            return
        waiter.holds_slot = False
        pool.slots -= 1
        if not waiter.granted:
            if waiter in pool.rate_waiting:
                pool.rate_waiting.remove(waiter)
            return
        pool.active -= 1
        if outcome != "aborted" and self._clock() - waiter.granted_at > pool.longest:
            pool.longest = self._clock() - waiter.granted_at
            if pool.held:
                self._free_held(pool)
        if tokens_used is not None:
            pool.tokens_used += max(0.0, tokens_used)
            pool.estimated += estimated
            pool.settled += 1
        if tokens_used is not None and waiter.token_entry is not None:
            # settles the estimate in place; an entry already out of the window stays out
            waiter.token_entry[1] = max(0.0, tokens_used)
        if outcome == "throttled":
            pool.throttled += 1
        elif outcome == "timeout":
            pool.timeouts += 1
        elif outcome == "error":
            pool.errors += 1
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            pause = min(retry_after, pool.limits.max_pause)
            pool.paused_until = max(pool.paused_until, self._clock() + pause)
        if pool.aimd is not None:
            if outcome in ("throttled", "timeout") or retry_after is not None:
                pool.aimd.back_off(waiter.epoch)
            elif outcome == "ok":
                pool.aimd.success(waiter.saturated, waiter.load, waiter.epoch)

    def _pump(self, pool: _Pool) -> None:
        """Grant whatever can be granted now; arm a timer for what must wait."""
        while True:
            while pool.waiting and pool.slots < pool.limit():
                waiter = pool.waiting.popleft()
                waiter.holds_slot = True
                pool.slots += 1
                pool.rate_waiting.append(waiter)
            if not pool.rate_waiting:
                return
            waiter = pool.rate_waiting[0]
            if waiter.cost_key is not None:
                error = self._cost_error(waiter.cost_key, waiter.counted)
                if error is not None:  # the cap was reached while it waited
                    pool.rate_waiting.popleft()
                    self._leases.pop((waiter.owner, waiter.ident), None)
                    waiter.holds_slot = False
                    pool.slots -= 1
                    waiter.reply(error)
                    continue
            now = self._clock()
            wait = pool.rate_wait(now, waiter.tokens)
            if wait > 1e-9:
                self._arm(pool, now + wait)
                return
            pool.rate_waiting.popleft()
            self._grant(pool, waiter, now)

    def _grant(self, pool: _Pool, waiter: _Waiter, now: float) -> None:
        waiter.granted = True
        waiter.granted_at = now
        pool.active += 1
        pool.max_active = max(pool.max_active, pool.active)
        pool.granted += 1
        if pool.limits.rpm is not None:
            pool.requests.append(now)
        if pool.limits.tpm is not None:
            waiter.token_entry = [now, min(waiter.tokens, pool.limits.tpm)]
            pool.token_log.append(waiter.token_entry)
        if pool.aimd is not None:
            waiter.epoch = pool.aimd.epoch
            waiter.saturated = pool.active >= pool.aimd.limit or bool(pool.waiting)
            waiter.load = pool.active
        waiter.reply({"ok": True})

    def _arm(self, pool: _Pool, when: float) -> None:
        if pool.timer is not None and pool.timer_at <= when:
            return
        if pool.timer is not None:
            pool.timer.cancel()

        def fire() -> None:
            pool.timer = None
            pool.timer_at = math.inf
            self._pump(pool)

        pool.timer_at = when
        pool.timer = self._call_later(max(0.0, when - self._clock()), fire)
