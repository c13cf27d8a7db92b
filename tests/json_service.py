"""One JSON-over-HTTP service on 127.0.0.1 for the tests of the HTTP clients (pipelines,
retrievers, secret redaction), so each test module scripts its replies instead of keeping its
own server."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Trickle:
    """A payload sent a byte every ``every`` seconds, after the headers (a server that keeps
    a connection alive without ever finishing its reply in time)."""

    payload: Any
    every: float


@dataclass(frozen=True)
class WithHeaders:
    """A payload sent with extra response headers (``Retry-After``, say)."""

    payload: Any
    headers: dict[str, str]


#: (status, payload): bytes and str are sent as they are, a :class:`Trickle` slowly, a
#: :class:`WithHeaders` with its headers, anything else as JSON.
Reply = tuple[int, Any]
#: (raw body, headers as sent, 1-based request number) -> the reply.
Replier = Callable[[bytes, dict[str, str], int], Reply]


class JsonService:
    """Answers every POST with ``reply(...)``; keeps each request's raw body and headers in
    ``received``. Use as a context manager (the server runs in a thread while inside)."""

    def __init__(self, reply: Replier, path: str = "") -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                with lock:
                    owner.received.append((body, headers))
                    n = len(owner.received)
                status, payload = reply(body, headers, n)
                extra = payload.headers if isinstance(payload, WithHeaders) else {}
                payload = payload.payload if isinstance(payload, WithHeaders) else payload
                every = payload.every if isinstance(payload, Trickle) else 0.0
                payload = payload.payload if isinstance(payload, Trickle) else payload
                data = (payload if isinstance(payload, bytes) else payload.encode()
                        if isinstance(payload, str) else json.dumps(payload).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if not every:
                    self.wfile.write(data)
                    return
                for i in range(len(data)):
                    try:
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(every)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        # shutdown() waits for the serving loop's next poll: the default 0.5 s poll made every
        # test that starts one of these half a second slower, and 0.05 s still cost each test
        # about that much at teardown. An idle wake-up every 5 ms costs microseconds.
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.005}, daemon=True)

    def lowered_headers(self) -> list[dict[str, str]]:
        """Each request's headers with lower-cased names."""
        return [{k.lower(): v for k, v in h.items()} for _, h in self.received]

    def __enter__(self) -> JsonService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def connection_resetter(connections: int) -> Iterator[str]:
    """A server on 127.0.0.1 (its ``http://host:port``) that reads a request on each of its
    first ``connections`` connections and resets it (httpx's ReadError, whose message is
    empty): a service that drops every request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def reset_each() -> None:
        for _ in range(connections):
            conn, _ = listener.accept()
            conn.recv(65536)
            # linger 0: close sends a reset, not an orderly end
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=reset_each, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(5)
        listener.close()
