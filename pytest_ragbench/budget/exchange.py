"""The run's request exchange: LLM responses obtained once and handed to the process needing them.

With xdist the controller gives the LLM work a head start while its workers boot (see
:mod:`pytest_ragbench.execution.headstart`): it asks the same requests a worker will ask, in
collection order. The exchange makes sure that each request is sent once, by whichever
process gets to it first, and that the worker whose case needs it gets the response the
controller obtained. It lives in the run budget's :class:`~.core.BudgetCore` (one state,
one event loop thread, messages from *owners*), so workers reach it over the connection
they already have.

A request is named by a key (the response cache's key of the request). Per key:

- the first ``claim`` makes the asker its *holder* (reply ``mine``): it sends the request;
- a *leading* claim (the controller's, ``consume`` false) of a key anyone has claimed is
  answered ``taken``: the controller skips it;
- a *consuming* claim (a worker's) of a key whose response was published gets it (``done``,
  once: a second worker asking the same request later goes its own way, through the response
  cache, as a second identical request at ``-n 0`` does); of a key held by another owner it
  waits until the holder publishes (``done``), gives the key back (``mine``: the waiter
  becomes the holder) or finishes it itself (``taken``);
- ``unclaim`` ends a hold (``done`` true: the holder sent the request itself and keeps the
  response; false: give it back, e.g. after a cancellation) or withdraws a waiting claim.

A consuming claim of a key nobody has claimed yet, in a *scope* (a suite) a leading owner
said it will still claim, is *parked* (given an exchange driven by a loop's ``call_later``):
it waits for the leader's claim rather than becoming the holder, and the leader's claim
then makes the leader the holder (``mine``) with the worker waiting for its response. The
controller's head start reaches every request of its suites in collection order, while
workers that come up behind it claim their prefetched cases ahead of it: they then sent
about 40% of a 200-case suite's requests from processes that were still booting (their
first requests waited on their own imports and connections) while the head start, finding
its next keys taken, had nothing to send (``-n 4`` lost a tenth of a second of the LLM
phase at the hand-over). A parked claim becomes its asker's own (``mine``) when the leader
no longer leads its scope (it finished the suite, stopped or went away) or after
:data:`PARK_TIMEOUT`, so a request the leader never asks costs a wait, not a hang.

An owner that goes away (a worker crashed, the controller's thread stopped) gives back every
key it held and withdraws its waits, so nothing is lost and nobody waits forever.

A finished key (handed out, or sent by its holder) keeps no entry, only its name, so that a
leading claim still skips it. Once every leading owner has gone and every published response
was handed out, the exchange has nothing more to give: a consuming claim of a key nobody
holds is answered ``mine`` with ``lead`` false, and the asker's client stops asking
(:mod:`pytest_ragbench.answers.exchange`); finished keys are then forgotten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

Reply = Callable[[dict[str, Any]], None]
Ident = tuple[Hashable, int]
CallLater = Callable[[float, Callable[[], None]], Any]

#: The longest a parked claim waits for the leader's claim of its key (seconds). The head
#: start claims a key when one of its slots frees, in collection order, so a worker's
#: prefetched case waits about (cases between it and the head start) x requests per case x
#: latency / concurrency: well under this at 200-400 ms and 16 slots; against a slow
#: endpoint (2 s, 4 slots) a third of a 40-case suite's requests went past it and were sent
#: by their workers (a case whose request went its own way waits no more for the leader).
PARK_TIMEOUT = 5.0


@dataclass
class _Entry:
    holder: Ident | None = None
    waiters: deque[tuple[Ident, Reply]] = field(default_factory=deque)
    value: Any = None
    has_value: bool = False
    taken: bool = False
    #: Waiting for a leader's claim (see the module docstring), in this scope.
    parked: bool = False
    scope: str | None = None


@dataclass
class ExchangeStats:
    """What happened to the run's claims (plain counters for ``totals``)."""

    claims: int = 0
    published: int = 0
    delivered: int = 0
    skipped: int = 0
    given_back: int = 0
    parked: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"claims": self.claims, "published": self.published,
                "delivered": self.delivered, "skipped": self.skipped,
                "given_back": self.given_back, "parked": self.parked}


class Exchange:
    """The exchange's state (see the module docstring). Not thread-safe: driven by the budget
    core's loop thread, like the rest of the core, whose ``call_later`` times parked claims
    (without one no claim is parked)."""

    def __init__(self, call_later: CallLater | None = None,
                 park_timeout: float = PARK_TIMEOUT) -> None:
        self._call_later = call_later
        self._park_timeout = park_timeout
        self._scopes: dict[Hashable, frozenset[str]] = {}
        # keys a leader gave back (a budget refusal, a cancellation): it will not ask again
        self._given_up: set[str] = set()
        self._entries: dict[str, _Entry] = {}
        self._held: dict[Ident, str] = {}
        self._waiting: dict[Ident, str] = {}
        self._finished: set[str] = set()
        self._leads: set[Hashable] = set()
        self._led = False
        self._undelivered = 0
        self.stats = ExchangeStats()

    @property
    def open_keys(self) -> int:
        """Keys with an entry: held, waited for, or published and not yet handed out."""
        return len(self._entries)

    @property
    def lead_over(self) -> bool:
        """Whether no leading owner will claim or publish anything any more and nothing
        published waits for its asker."""
        return self._led and not self._leads and not self._undelivered

    def lead(self, owner: Hashable, scopes: Iterable[str] | None = None) -> None:
        """``owner`` leads (claims without consuming) until it goes: until then the
        exchange may still have responses to hand out. ``scopes``: the scopes whose keys it
        will still claim, all of them (replacing what it said before); a consuming claim
        in one of them waits for its claim (is parked) rather than taking the key."""
        self._leads.add(owner)
        self._led = True
        if scopes is not None:
            self._scopes[owner] = frozenset(scopes)
            self._unpark_unled()

    def _leads_scope(self, scope: str | None) -> bool:
        return scope is not None and any(
            scope in scopes for owner, scopes in self._scopes.items() if owner in self._leads)

    def claim(self, owner: Hashable, ident: int, key: str, consume: bool,
              reply: Reply, scope: str | None = None) -> None:
        """Claim ``key`` (of ``scope``) for ``(owner, ident)``; ``reply`` gets ``{"ok",
        "state"[, "value"]}`` now or, for a wait, later."""
        self.stats.claims += 1
        me = (owner, ident)
        if not consume:
            self.lead(owner)
        entry = self._entries.get(key)
        if entry is None and key in self._finished:
            self.stats.skipped += not consume
            reply({"ok": True, "state": "taken"})
            return
        if (entry is None and consume and self._call_later is not None
                and self._leads_scope(scope) and key not in self._given_up):
            self._park(me, key, scope, reply)
            return
        if entry is not None and entry.parked and not consume:
            # the leader reached a key a worker waits for: it sends, the worker gets it
            entry.parked = False
            entry.holder = me
            self._held[me] = key
            reply({"ok": True, "state": "mine"})
            return
        if entry is None:
            self._entries[key] = _Entry(holder=me)
            self._held[me] = key
            if consume and self.lead_over:
                self._finished.clear()  # no leading claim will ask again
                reply({"ok": True, "state": "mine", "lead": False})
            else:
                reply({"ok": True, "state": "mine"})
            return
        if not consume or entry.taken:
            self.stats.skipped += not consume
            reply({"ok": True, "state": "taken"})
            return
        if entry.has_value:
            self._deliver(key, entry, reply)
            return
        entry.waiters.append((me, reply))
        self._waiting[me] = key

    def publish(self, owner: Hashable, ident: int, value: Any) -> None:
        """The holder ``(owner, ident)`` hands over the response; ignored when it no longer
        holds the key (given back meanwhile)."""
        key = self._held.pop((owner, ident), None)
        if key is None:
            return
        entry = self._entries[key]
        entry.holder = None
        entry.value, entry.has_value = value, True
        self._undelivered += 1
        self.stats.published += 1
        if entry.waiters:
            me, reply = entry.waiters.popleft()
            self._waiting.pop(me, None)
            self._deliver(key, entry, reply)

    def unclaim(self, owner: Hashable, ident: int, done: bool) -> None:
        """End the hold or the wait of claim ``(owner, ident)``; unknown claims are ignored
        (idempotent, and a withdrawal may cross its answer)."""
        me = (owner, ident)
        key = self._waiting.pop(me, None)
        if key is not None:
            entry = self._entries[key]
            for n, (who, reply) in enumerate(entry.waiters):
                if who == me:
                    del entry.waiters[n]
                    reply({"ok": True, "state": "withdrawn"})
                    break
            if entry.parked and not entry.waiters:
                del self._entries[key]
            return
        key = self._held.pop(me, None)
        if key is None:
            return
        entry = self._entries[key]
        entry.holder = None
        if done:
            self._finish(key, entry)
        else:
            if owner in self._leads:
                self._given_up.add(key)
            self._give_back(key, entry)

    def drop_owner(self, owner: Hashable) -> None:
        """``owner`` is gone: withdraw its waits, give back every key it held."""
        for me in [m for m in self._waiting if m[0] == owner]:
            self.unclaim(me[0], me[1], False)
        for me in [m for m in self._held if m[0] == owner]:
            self.unclaim(me[0], me[1], False)
        self._leads.discard(owner)
        if self._scopes.pop(owner, None):
            self._unpark_unled()

    def _park(self, me: Ident, key: str, scope: str | None, reply: Reply) -> None:
        assert self._call_later is not None
        entry = self._entries[key] = _Entry(parked=True, scope=scope)
        entry.waiters.append((me, reply))
        self._waiting[me] = key
        self.stats.parked += 1
        self._call_later(self._park_timeout, lambda: self._unpark(key, entry))

    def _unpark(self, key: str, entry: _Entry) -> None:
        """The parked ``entry`` becomes its first waiter's own (the others wait for that
        one); ignored once it is not parked any more (the leader claimed it)."""
        if self._entries.get(key) is not entry or not entry.parked:
            return
        entry.parked = False
        self._to_first_waiter(key, entry, self.lead_over)

    def _unpark_unled(self) -> None:
        for key, entry in list(self._entries.items()):
            if entry.parked and not self._leads_scope(entry.scope):
                self._unpark(key, entry)

    def _deliver(self, key: str, entry: _Entry, reply: Reply) -> None:
        value, entry.value, entry.has_value = entry.value, None, False
        self._undelivered -= 1
        self.stats.delivered += 1
        reply({"ok": True, "state": "done", "value": value})
        self._finish(key, entry)

    def _finish(self, key: str, entry: _Entry) -> None:
        # the response went to one process; any other asker sends (or reads from its cache)
        # the request itself, as a second identical request of one process would
        entry.taken = True
        while entry.waiters:
            me, reply = entry.waiters.popleft()
            self._waiting.pop(me, None)
            reply({"ok": True, "state": "taken"})
        del self._entries[key]
        if not self.lead_over:
            self._finished.add(key)

    def _give_back(self, key: str, entry: _Entry) -> None:
        self.stats.given_back += 1
        self._to_first_waiter(key, entry)

    def _to_first_waiter(self, key: str, entry: _Entry, lead_over: bool = False) -> None:
        """``entry``, held by nobody, becomes its first waiter's to send (told ``lead``
        false when the leaders are done); without a waiter it is dropped."""
        if not entry.waiters:
            del self._entries[key]
            return
        me, reply = entry.waiters.popleft()
        self._waiting.pop(me, None)
        entry.holder = me
        self._held[me] = key
        reply({"ok": True, "state": "mine", "lead": False} if lead_over
              else {"ok": True, "state": "mine"})
