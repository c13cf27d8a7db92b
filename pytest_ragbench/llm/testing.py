"""A real, local OpenAI-compatible HTTP server for tests and benchmarks, with scripted faults.

Public test utility: plugin users can point a suite's LLM at it to test their configuration
offline. It serves ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` on 127.0.0.1 (an
ephemeral port) from a background thread::

    from pytest_ragbench.llm.testing import Fault, FakeOpenAIServer

    with FakeOpenAIServer(latency=0.05, reply=lambda messages: '{"score": 1}') as server:
        server.add_faults(Fault.rate_limited(retry_after="0.2"), Fault.server_error())
        llm = OpenAIChat(server.base_url, "any-model")
        ...
        assert server.count("/v1/chat/completions") == 3
        assert server.faults_served == 2  # the test's faults really went out

Each request takes the next queued :class:`Fault` (in arrival order) or, when the queue is
empty, the default one (``Fault.ok()`` unless :meth:`FakeOpenAIServer.set_default` changed it,
which is how a lasting outage and its recovery are simulated). Requests, with their headers,
are recorded; the recorded headers include whatever credentials the client sent, so do not
point real keys at it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from .base import Message

FaultKind = Literal["ok", "status", "hang", "malformed", "truncated", "drop"]
Reply = Callable[[Sequence[Message]], str]

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Fault:
    """What the server does with one request.

    ``kind``: ``"ok"`` (a normal reply), ``"status"`` (HTTP ``status`` with ``body`` or an
    OpenAI-style error, plus ``Retry-After`` if given), ``"hang"`` (say nothing for the
    server's ``hang_seconds``, then close), ``"malformed"`` (200 with a non-JSON body),
    ``"truncated"`` (200 with the first half of a valid JSON reply), ``"drop"`` (close the
    connection without a response). ``delay`` is added to the server's latency.
    """

    kind: FaultKind = "ok"
    status: int = 500
    retry_after: str | None = None
    body: str | None = None
    delay: float = 0.0

    @classmethod
    def ok(cls, delay: float = 0.0) -> Fault:
        return cls("ok", delay=delay)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1") -> Fault:
        return cls("status", 429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500, retry_after: str | None = None) -> Fault:
        return cls("status", status, retry_after=retry_after)

    @classmethod
    def hang(cls) -> Fault:
        return cls("hang")

    @classmethod
    def malformed(cls) -> Fault:
        return cls("malformed")

    @classmethod
    def truncated(cls) -> Fault:
        return cls("truncated")

    @classmethod
    def drop(cls) -> Fault:
        return cls("drop")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received (``body`` is ``None`` when it was not JSON)."""

    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def whitespace_tokens(text: str) -> int:
    """The fake server's (and the extractive provider's) token count: whitespace words."""
    return len(text.split())


def hash_embedding(text: str, dim: int = 64) -> list[float]:
    """A deterministic unit vector for ``text``: signed feature hashing of lowercase words.

    Texts sharing words get similar vectors, so dense retrieval over it behaves sensibly;
    a text without words hashes as a whole so it never becomes the zero vector.
    """
    vector = [0.0] * dim
    words = _WORD.findall(text.lower()) or [text]
    for word in words:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        vector[number % dim] += 1.0 if (number >> 63) & 1 else -1.0
    norm = sum(v * v for v in vector) ** 0.5
    if norm == 0.0:  # opposite signs cancelled out exactly
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def echo_reply(messages: Sequence[Message]) -> str:
    """Default reply: ``"echo: "`` and the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return f"echo: {message.get('content', '')}"
    return "echo:"


_BATCH_ITEM = re.compile(r'^ITEM "(item-\d+)"$', flags=re.MULTILINE)
_BATCH_KEYS_HEAD = "For each item, produce these keys"
_BATCH_REPLY_HEAD = "Reply with only one JSON object"


def per_item_judge(reply: Reply) -> Reply:
    """A reply function for the judge's batched prompts (``items_per_call`` > 1) made from
    ``reply``, one that answers single-item judge prompts: each item of a batched prompt is
    answered by ``reply`` as if it were alone (its section, then the shared instructions), and
    the answers are returned as one object keyed by item id. So an item's verdicts cannot
    depend on how items were batched. Any other prompt goes to ``reply`` unchanged.

    It follows the layout of :mod:`pytest_ragbench.metrics.judge`'s batched prompt; an entry
    ``reply`` gives that is not a JSON object is passed on as its text, for the judge to
    reject."""

    def answer(messages: Sequence[Message]) -> str:
        user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
        found = list(_BATCH_ITEM.finditer(user))
        keys_at = user.find(_BATCH_KEYS_HEAD)
        reply_at = user.find(_BATCH_REPLY_HEAD)
        if not found or keys_at < 0 or reply_at < 0:
            return reply(messages)
        instructions = user[user.index("\n", keys_at) + 1:reply_at].rstrip("\n")
        keys = list(dict.fromkeys(re.findall(r'"(\w+)": \.\.\.', user[reply_at:])))
        footer = "Reply with only the JSON object {" + ", ".join(f'"{k}": ...' for k in keys) + "}."
        entries: dict[str, Any] = {}
        for i, match in enumerate(found):
            end = found[i + 1].start() if i + 1 < len(found) else keys_at
            section = user[match.end():end].strip("\n")
            n_contexts = len(re.findall(r"^\[\d+\] ", section, flags=re.MULTILINE))
            asked = instructions.replace("one number per context of that item, in order",
                                         f"{n_contexts} numbers, one per context in order")
            single = [{"role": "system", "content": str(messages[0].get("content", ""))},
                      {"role": "user",
                       "content": f"{section}\n\nProduce these keys:\n{asked}\n\n{footer}"}]
            text = reply(single)
            try:
                entries[match.group(1)] = json.loads(text)
            except ValueError:
                entries[match.group(1)] = text
        return json.dumps(entries)

    return answer


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default of 5 resets connections under a concurrent burst

    def __init__(self, owner: FakeOpenAIServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def serve_until(self, stop: threading.Event, wake: socket.socket) -> None:
        """Accept requests until ``stop`` is set; a byte on ``wake`` makes the loop look.

        ``serve_forever`` would notice a shutdown only at its next poll, which made every
        stop (every test's teardown) wait most of a poll interval."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self and not stop.is_set():
                        self._handle_request_noblock()  # socketserver's accept-and-dispatch


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real endpoints
    timeout = 10  # idle keep-alive connections end on their own
    # headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms), which would dwarf the latency a test asks for
    disable_nagle_algorithm = True

    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read counts, not access logs

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"no route GET {self.path}"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        refuse = owner._enter()
        self._pending_leave: bool | None = not refuse
        try:
            if refuse:
                self._refuse()
            else:
                self._post()
        finally:
            self._leave()

    def _leave(self) -> None:
        # once per request, before the body goes out: a client that has the reply may send
        # its next request at once, and must not find this one still counted
        accepted, self._pending_leave = getattr(self, "_pending_leave", None), None
        if accepted is not None:
            self.server.owner._leave(accepted=accepted)

    def _refuse(self) -> None:
        # an overloaded endpoint answers at once: the request never reaches a model
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        owner = self.server.owner
        error = json.dumps({"error": {"message": "too many concurrent requests",
                                      "type": "rate_limit"}})
        retry_after = owner.refuse_retry_after
        headers = {"Retry-After": retry_after} if retry_after else {}
        self._send(429, error.encode(), headers)

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        owner = self.server.owner
        fault = owner._take(RecordedRequest(path, body, dict(self.headers.items())))
        if owner._pause(owner.latency + fault.delay):
            self.close_connection = True
            return
        if fault.kind == "hang":
            owner._pause(owner.hang_seconds)
            self.close_connection = True
            return
        if fault.kind == "drop":
            self.close_connection = True
            return
        if fault.kind == "status":
            error = fault.body or json.dumps(
                {"error": {"message": f"injected HTTP {fault.status}", "type": "injected"}}
            )
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._send(fault.status, error.encode(), headers)
            return
        if fault.kind == "malformed":
            self._send(200, b"<html>this is not JSON</html>")
            return
        status, reply = owner._answer(path, body)
        data = json.dumps(reply).encode()
        if fault.kind == "truncated" and status == 200:
            data = data[: len(data) // 2]
        self._send(status, data)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._leave()
        # a client that gave up (its timeout) has nothing more to be told
        with contextlib.suppress(OSError):
            self.wfile.write(data)


class FakeOpenAIServer:
    """An OpenAI-compatible server on ``127.0.0.1`` in a background thread.

    Args:
        latency: seconds every request waits before it is answered.
        reply: ``messages -> text`` for chat completions (default :func:`echo_reply`); an
            exception in it becomes an HTTP 500.
        faults: initial fault queue, one per request in arrival order.
        hang_seconds: how long a ``"hang"`` fault keeps the connection silent (stopping the
            server ends it early).
        embedding_dim: dimension of :func:`hash_embedding` vectors.
        refuse_above: a hidden concurrency limit: a request arriving while this many are
            being served is answered 429 at once (with ``refuse_retry_after`` if given),
            like an endpoint that sheds load. ``None`` (default) never refuses.

    :attr:`in_flight`, :attr:`max_in_flight` and :meth:`arrival_times` show what clients
    really did to it (e.g. that a shared concurrency limit held across processes).

    Usable as a context manager, or with :meth:`start` / :meth:`stop`. Thread-safe.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        reply: Reply | None = None,
        faults: Iterable[Fault] = (),
        hang_seconds: float = 30.0,
        embedding_dim: int = 64,
        refuse_above: int | None = None,
        refuse_retry_after: str | None = None,
    ) -> None:
        self.latency = latency
        self.refuse_above = refuse_above
        self.refuse_retry_after = refuse_retry_after
        self._in_flight = 0
        self._accepted = 0
        self._max_in_flight = 0
        self._refused = 0
        self._arrivals: list[float] = []
        self.hang_seconds = hang_seconds
        self.embedding_dim = embedding_dim
        self._reply: Reply = reply or echo_reply
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque(faults)
        self._default = Fault.ok()
        self._counts: Counter[str] = Counter()
        self._faults_served: Counter[str] = Counter()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Bind an ephemeral port and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("FakeOpenAIServer is already running")
        self._stop.clear()
        self._server = _HTTPServer(self)
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._server.serve_until,
            args=(self._stop, self._wake[0]),
            name=f"FakeOpenAIServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end hanging and idle connections, and join the thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stop.set()
        if self._wake is not None:
            self._wake[1].send(b"x")
        if thread is not None:
            thread.join(timeout=5)
        server.server_close()
        if self._wake is not None:
            for end in self._wake:
                end.close()
            self._wake = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # the peer may have closed it already
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAIServer is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the ``base_url`` to give a client."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- programming it ----------------------------------------------------------------------

    def add_faults(self, *faults: Fault) -> None:
        """Queue faults for the next requests, in order."""
        with self._lock:
            self._faults.extend(faults)

    def set_default(self, fault: Fault | None) -> None:
        """What requests get when the queue is empty (``None`` restores normal replies)."""
        with self._lock:
            self._default = fault or Fault.ok()

    def set_reply(self, reply: Reply) -> None:
        with self._lock:
            self._reply = reply

    # -- observing it ------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """Requests received so far, on any path."""
        with self._lock:
            return sum(self._counts.values())

    def count(self, path: str) -> int:
        """Requests received on ``path`` (e.g. ``"/v1/chat/completions"``)."""
        with self._lock:
            return self._counts[path]

    @property
    def faults_served(self) -> int:
        """Requests answered with a fault (any kind but ``"ok"``), queued or default."""
        with self._lock:
            return sum(self._faults_served.values())

    def faults_served_by_kind(self) -> dict[str, int]:
        """How many requests got each kind of fault (``"status"``, ``"drop"``, ...)."""
        with self._lock:
            return dict(self._faults_served)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._faults_served.clear()
            self._requests.clear()
            self._max_in_flight = self._in_flight
            self._refused = 0
            self._arrivals.clear()

    @property
    def in_flight(self) -> int:
        """Requests being served right now (refused ones included while they are answered)."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests ever served at once (since start or :meth:`reset_counts`)."""
        with self._lock:
            return self._max_in_flight

    @property
    def refused(self) -> int:
        """Requests answered 429 because of ``refuse_above``."""
        with self._lock:
            return self._refused

    def arrival_times(self) -> list[float]:
        """``time.monotonic()`` of every POST's arrival, in order (system-wide clock)."""
        with self._lock:
            return list(self._arrivals)

    # -- used by the handler threads ---------------------------------------------------------

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _enter(self) -> bool:
        """Count an arriving request; True when the hidden concurrency limit refuses it."""
        with self._lock:
            self._arrivals.append(time.monotonic())
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self.refuse_above is not None and self._accepted >= self.refuse_above:
                self._refused += 1
                return True
            self._accepted += 1
            return False

    def _leave(self, *, accepted: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            if accepted:
                self._accepted -= 1

    def _take(self, request: RecordedRequest) -> Fault:
        with self._lock:
            self._counts[request.path] += 1
            self._requests.append(request)
            fault = self._faults.popleft() if self._faults else self._default
            if fault.kind != "ok":
                self._faults_served[fault.kind] += 1
            return fault

    def _pause(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True means it is stopping."""
        if seconds > 0:
            return self._stop.wait(seconds)
        return self._stop.is_set()

    def _answer(self, path: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"error": {"message": "request body is not a JSON object"}}
        model = str(body.get("model", ""))
        if path == CHAT_PATH:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return 400, {"error": {"message": "'messages' must be a list"}}
            with self._lock:
                reply = self._reply
            try:
                text = reply(messages)
            except Exception as exc:  # the script is test code; surface its bug as a 500
                return 500, {"error": {"message": f"reply function failed: {exc!r}"}}
            prompt = sum(whitespace_tokens(str(m.get("content", ""))) for m in messages)
            completion = whitespace_tokens(text)
            return 200, {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        if path == EMBEDDINGS_PATH:
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
                return 400, {"error": {"message": "'input' must be a string or list of strings"}}
            tokens = sum(whitespace_tokens(t) for t in inputs)
            return 200, {
                "object": "list",
                "model": model,
                "data": [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": hash_embedding(t, self.embedding_dim),
                    }
                    for i, t in enumerate(inputs)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        return 404, {"error": {"message": f"no route POST {path}"}}
