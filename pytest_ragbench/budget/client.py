"""A worker's connection to the controller's :class:`~.server.Coordinator`.

One TCP connection per process, with ``TCP_NODELAY``; a reader thread resolves replies by
request id, so callers on any thread or event loop share it and an acquire costs one local
round trip. Losing the connection fails every pending and later call with
:class:`~.api.CoordinatorError` (the run cannot keep its budget without the coordinator).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import threading
from collections.abc import Mapping
from typing import Any

from .api import CoordinatorError, RunBudget
from .protocol import PROTOCOL_VERSION, WORKERINPUT_ADDRESS, WORKERINPUT_TOKEN


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` for IPv6) as ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


class CoordinatorClient(RunBudget):
    """A :class:`RunBudget` backed by the coordinator at ``address`` (``host:port``)."""

    def __init__(self, address: str | tuple[str, int], token: str, *, name: str = "",
                 connect_timeout: float = 10.0) -> None:
        super().__init__()
        host, port = parse_address(address) if isinstance(address, str) else address
        self._where = f"{host}:{port}"
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._lost = ""
        self._closed = False
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise CoordinatorError(
                f"cannot reach the run budget coordinator at {self._where}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._file = sock.makefile("rb")
        try:
            self._write({"op": "hello", "token": token, "version": PROTOCOL_VERSION,
                         "name": name})
            hello = json.loads(self._file.readline() or b"null")
        except (OSError, ValueError) as exc:
            self._close_socket()
            raise CoordinatorError(
                f"no answer from the run budget coordinator at {self._where}: {exc}") from None
        if not isinstance(hello, dict) or not hello.get("ok"):
            self._close_socket()
            why = hello.get("message") if isinstance(hello, dict) else "connection closed"
            raise CoordinatorError(f"the run budget coordinator at {self._where} refused "
                                   f"this worker: {why}")
        sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="ragbench-budget-client",
                                        daemon=True)
        self._reader.start()

    @classmethod
    def from_workerinput(cls, workerinput: Mapping[str, Any], *, name: str = ""
                         ) -> CoordinatorClient | None:
        """Connect with what :meth:`Coordinator.workerinput` put there (``None`` if absent)."""

        address = workerinput.get(WORKERINPUT_ADDRESS)
        token = workerinput.get(WORKERINPUT_TOKEN)
        if not address or not token:
            return None
        return cls(str(address), str(token), name=name)

    def __repr__(self) -> str:
        return f"CoordinatorClient({self._where!r})"

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:  # one sendall at a time keeps lines whole
            self._sock.sendall(data)

    def _deliver(self, message: dict[str, Any], future: concurrent.futures.Future[Any] | None
                 ) -> None:
        ident = message.get("id")
        with self._lock:
            lost = self._lost
            if not lost and future is not None and ident is not None:
                self._pending[int(ident)] = future
        if lost:
            if future is not None:
                future.set_result({"ok": False, "error": "lost", "message": lost})
            return
        try:
            self._write(message)
        except OSError as exc:
            self._fail_all(f"lost the run budget coordinator at {self._where}: {exc}")

    def _read(self) -> None:
        reason = "the connection was closed"
        try:
            for line in self._file:
                try:
                    reply = json.loads(line)
                    ident = int(reply["id"])
                except (ValueError, KeyError, TypeError):
                    continue  # an unsolicited error line; the pending call keeps waiting
                with self._lock:
                    future = self._pending.pop(ident, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, ValueError) as exc:
            reason = str(exc)
        self._fail_all(f"lost the run budget coordinator at {self._where}: {reason}")

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            if not self._lost:
                self._lost = reason
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result({"ok": False, "error": "lost", "message": self._lost})

    def _close_socket(self) -> None:
        for closer in (self._file.close, self._sock.close):
            with contextlib.suppress(OSError):
                closer()

    def close(self) -> None:
        """Disconnect; the coordinator releases whatever this process still held."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lost = self._lost or "the connection was closed by this worker"
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._close_socket()
