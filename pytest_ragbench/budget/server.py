"""The coordinator: the run budget served over TCP by the controller process to its workers.

Protocol: one JSON object per line, both ways, over one TCP connection per client. The client
opens with ``{"op": "hello", "token": T, "version": 1, "name": N}``; a wrong token or version
gets ``{"id": 0, "ok": false, ...}`` and the connection is closed. After that every message is
one of :meth:`BudgetCore.handle`'s; replies carry the request's ``id``. When a connection ends
(the worker finished or crashed) its slots are released and its waiters withdrawn.

The token is a random secret made by the controller and handed to its workers (through
xdist's ``workerinput``), so that binding a reachable address for ssh workers does not open
the budget to anyone else on the network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import itertools
import json
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from .core import BudgetCore, TimerHandle
from .local import CoreBudget, LoopThread
from .protocol import PROTOCOL_VERSION, WORKERINPUT_ADDRESS, WORKERINPUT_TOKEN

MAX_LINE = 64 * 1024
HELLO_TIMEOUT = 10.0



class CoreClock(Protocol):
    """The clock a coordinator's core reads its rate windows and pauses on, with its timers."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class Coordinator:
    """Serves one :class:`BudgetCore` on ``host:port`` (default 127.0.0.1, an ephemeral port).

    ``advertise_host`` is the address workers are told to connect to (default: ``host``, or
    this machine's name when ``host`` is a wildcard such as ``0.0.0.0``). ``clock`` makes the
    core's clock from the coordinator's event loop (default: ``time.monotonic`` and the loop's
    timers); tests give one whose rate windows pass without real waiting.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        advertise_host: str | None = None,
        clock: Callable[[asyncio.AbstractEventLoop], CoreClock] | None = None,
    ) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self._clock = clock
        self._host = host
        self._port = port
        self._advertise = advertise_host
        self._runner: LoopThread | None = None
        self._core: BudgetCore | None = None
        self._server: asyncio.base_events.Server | None = None
        self._owners = itertools.count(1)
        self._connections = 0
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        state = self.address if self._server is not None else "stopped"
        return f"Coordinator({state})"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Coordinator:
        """Bind and serve from a daemon thread; returns ``self``."""
        if self._runner is not None:
            raise RuntimeError("Coordinator is already running")
        runner = LoopThread("ragbench-budget-coordinator")
        if self._clock is None:
            self._core = BudgetCore(call_later=runner.loop.call_later, clock=time.monotonic)
        else:
            clock = self._clock(runner.loop)
            self._core = BudgetCore(call_later=clock.call_later, clock=clock.time)

        async def listen() -> asyncio.base_events.Server:
            return await asyncio.start_server(self._serve, self._host, self._port,
                                              limit=MAX_LINE)

        try:
            self._server = asyncio.run_coroutine_threadsafe(listen(), runner.loop).result(10)
        except BaseException:
            runner.stop()
            raise
        self._runner = runner
        return self

    def stop(self) -> None:
        """Close the listener and every connection, stop the thread. Idempotent."""
        runner, server = self._runner, self._server
        if runner is None:
            return

        async def shutdown() -> None:
            if server is not None:
                server.close()
            # each handler sees end-of-file, drops its owner and returns
            for writer in list(self._writers):
                writer.close()
            for _ in range(3):
                await asyncio.sleep(0)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), runner.loop).result(5)
        runner.stop()
        self._runner = self._server = None

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what workers need ------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` workers connect to."""
        if self._server is None:
            raise RuntimeError("Coordinator is not running")
        port = int(self._server.sockets[0].getsockname()[1])
        host = self._advertise or self._host
        if host in ("", "0.0.0.0", "::"):
            host = socket.getfqdn()
        return host, port

    def workerinput(self) -> dict[str, str]:
        """What to put into each xdist node's ``workerinput`` (plain strings)."""
        host, port = self.address
        return {WORKERINPUT_ADDRESS: f"{host}:{port}", WORKERINPUT_TOKEN: self.token}

    def local_budget(self, name: str = "controller") -> CoreBudget:
        """A :class:`~.api.RunBudget` for code in the controller process itself (its head
        start): the same core as the workers', without a socket, as an owner of its own
        (closing it releases what it holds)."""
        runner, core = self._runner, self._core
        if runner is None or core is None:
            raise RuntimeError("Coordinator is not running")
        return CoreBudget(runner.loop, core, owner=f"local:{name}:{next(self._owners)}")

    def totals(self) -> dict[str, Any]:
        """The run's totals, read in the controller (same shape as ``RunBudget.totals``)."""
        runner, core = self._runner, self._core
        if runner is None or core is None:
            raise RuntimeError("Coordinator is not running")

        async def read() -> dict[str, Any]:
            return core.totals()

        return asyncio.run_coroutine_threadsafe(read(), runner.loop).result(10)

    @property
    def connections(self) -> int:
        """Clients currently connected and authenticated."""
        return self._connections

    # -- serving ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # each message is one small write awaited by the peer: Nagle would add ~40 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        owner = next(self._owners)
        self._writers.add(writer)
        core = self._core
        assert core is not None
        authenticated = False

        def send(payload: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(json.dumps(payload, separators=(",", ":")).encode() + b"\n")

        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            problem = self._check_hello(line)
            if problem:
                send({"id": 0, "ok": False, "error": "auth", "message": problem})
                await writer.drain()
                return
            authenticated = True
            self._connections += 1
            send({"id": 0, "ok": True})
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    send({"ok": False, "error": "protocol",
                          "message": "expected one JSON object per line"})
                    return
                core.handle(owner, message, send)
        except (asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError,
                asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            if authenticated:
                self._connections -= 1
                core.drop_owner(owner)
            writer.close()

    def _check_hello(self, line: bytes) -> str:
        try:
            hello = json.loads(line)
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            return "expected a hello message first"
        token = hello.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
            return "wrong token"
        if hello.get("version") != PROTOCOL_VERSION:
            return (f"protocol version {hello.get('version')!r} is not "
                    f"{PROTOCOL_VERSION}; controller and workers run different versions")
        return ""
