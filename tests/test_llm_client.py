"""OpenAI-compatible clients against a real local HTTP server, and the extractive provider."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from json_service import connection_resetter
from virtual_clock import ManualClockLoop

from pytest_ragbench.errors import ComponentError
from pytest_ragbench.llm.base import LLM, Embedder, LLMError, Usage
from pytest_ragbench.llm.extractive import (
    ABSTAIN,
    ExtractiveLLM,
    format_prompt,
    parse_prompt,
)
from pytest_ragbench.llm.openai import OpenAIChat, OpenAIEmbedder
from pytest_ragbench.llm.resilience import CircuitBreaker, RetryPolicy
from pytest_ragbench.llm.testing import (
    CHAT_PATH,
    EMBEDDINGS_PATH,
    FakeOpenAIServer,
    Fault,
    echo_reply,
    hash_embedding,
)

USER = [{"role": "user", "content": "hello there"}]
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
SECRET = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(hang_seconds=5) as running:
        yield running


def chat_client(server: FakeOpenAIServer, **kwargs: object) -> OpenAIChat:
    settings: dict = {"timeout": 0.5, "retry": FAST, "breaker": CircuitBreaker(100)}
    settings.update(kwargs)
    return OpenAIChat(server.base_url, "test-model", **settings)


# -- happy path ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_chat_returns_text_usage_and_sends_params(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    monkeypatch.setenv("RAGBENCH_TEST_ORG", "org-42")
    async with chat_client(
        server,
        api_key_env="RAGBENCH_TEST_KEY",
        headers={"OpenAI-Organization": "${RAGBENCH_TEST_ORG}", "X-Plain": "v"},
        params={"temperature": 0, "seed": 7},
    ) as llm:
        assert isinstance(llm, LLM)
        completion = await llm.chat(USER, temperature=0.5, max_tokens=20)
    assert completion.text == "echo: hello there"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)
    assert completion.usage.requests == 1
    assert completion.model == "test-model"
    assert not completion.cached
    (request,) = server.requests
    assert request.path == CHAT_PATH
    assert request.body == {
        "model": "test-model",
        "messages": USER,
        "temperature": 0.5,
        "seed": 7,
        "max_tokens": 20,
    }
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["openai-organization"] == "org-42"
    assert headers["x-plain"] == "v"


class _LookupRecorder:
    """A meta-path finder that records every module lookup and finds nothing."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.names.append(name)
        return None


@pytest.mark.asyncio
async def test_requests_after_the_first_look_up_no_module(server: FakeOpenAIServer) -> None:
    # httpcore asks for sniffio on every lock it sets up; without the package each request
    # searched sys.path for it again, a fifth of the event loop's CPU in a run
    recorder = _LookupRecorder()
    async with chat_client(server, concurrency=4, timeout=5) as llm:
        await asyncio.gather(*(llm.chat(USER) for _ in range(4)))
        sys.meta_path.insert(0, recorder)
        try:
            await asyncio.gather(*(llm.chat(USER) for _ in range(12)))
        finally:
            sys.meta_path.remove(recorder)
    assert server.count(CHAT_PATH) == 16
    assert recorder.names == []


def test_a_client_that_sends_nothing_imports_no_http_library(tmp_path: Path) -> None:
    """An xdist worker whose responses all come from the controller's head start builds its
    clients and never sends: httpx (about 70 ms of CPU per process, while its siblings boot
    and the controller sends) is imported with the first request, not with the client."""
    import subprocess

    script = (
        "import asyncio, sys\n"
        "from pytest_ragbench.llm.openai import OpenAIChat, OpenAIEmbedder\n"
        "clients = [OpenAIChat('https://llm.example.invalid/v1', 'm'),\n"
        "           OpenAIEmbedder('http://127.0.0.1:9/v1', 'e')]\n"
        "print('httpx' in sys.modules)\n"
        "async def close():\n"
        "    for c in clients:\n"
        "        await c.aclose()\n"
        "asyncio.run(close())\n"
        "print('httpx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.asyncio
async def test_a_closed_client_sends_nothing_more(server: FakeOpenAIServer) -> None:
    used, unused = chat_client(server), chat_client(server)
    await used.chat(USER)
    for llm in (used, unused):
        await llm.aclose()
        with pytest.raises((LLMError, RuntimeError)):
            await llm.chat(USER)
    assert server.count(CHAT_PATH) == 1


@pytest.mark.asyncio
async def test_scripted_reply_can_return_judge_json(server: FakeOpenAIServer) -> None:
    server.set_reply(lambda messages: json.dumps({"verdict": len(messages)}))
    async with chat_client(server) as llm:
        completion = await llm.chat([{"role": "system", "content": "judge"}, *USER])
    assert json.loads(completion.text) == {"verdict": 2}


@pytest.mark.asyncio
async def test_concurrency_limit_bounds_requests_in_flight() -> None:
    # the server answers requests two by two, once both have arrived: 6 calls, 2 at a time,
    # are all in flight at the server (all at once: 6)
    pairs = threading.Barrier(2)

    def in_pairs(messages: Any) -> str:
        pairs.wait(timeout=5)
        return "paired"

    with FakeOpenAIServer(reply=in_pairs) as server:
        async with chat_client(server, concurrency=2, timeout=10) as llm:
            results = await asyncio.gather(*(llm.chat(USER) for _ in range(6)))
    assert [r.text for r in results] == ["paired"] * 6
    assert server.max_in_flight == 2
    assert llm.usage.requests == 6


# -- every fault ends in a completion or an LLMError ----------------------------------------


# a hang has tests of its own below, on a clock the server moves past the timeout
FAULTS = {
    "429": (Fault.rate_limited("0"), "HTTP 429"),
    "500": (Fault.server_error(500), "HTTP 500: injected HTTP 500"),
    "malformed": (Fault.malformed(), "malformed JSON in reply body"),
    "truncated": (Fault.truncated(), "truncated JSON in reply body"),
    "drop": (Fault.drop(), "connection error"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(FAULTS))
async def test_single_fault_is_retried_to_a_completion(server: FakeOpenAIServer, name: str) -> None:
    fault, _ = FAULTS[name]
    server.add_faults(fault)
    async with chat_client(server, timeout=0.3) as llm:
        completion = await asyncio.wait_for(llm.chat(USER), 5)
    assert completion.text == "echo: hello there"
    assert completion.usage.requests == 2
    assert server.count(CHAT_PATH) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(FAULTS))
async def test_lasting_fault_ends_in_llm_error_with_reason(
    server: FakeOpenAIServer, name: str
) -> None:
    fault, reason = FAULTS[name]
    server.set_default(fault)
    async with chat_client(server, timeout=0.3) as llm:
        with pytest.raises(LLMError) as info:
            await asyncio.wait_for(llm.chat(USER), 5)
    message = str(info.value)
    assert reason in message
    assert message.startswith(f"POST {server.base_url}/chat/completions failed after 3 attempts")
    assert server.count(CHAT_PATH) == 3


class Hangs:
    """A server's reply for a client on a :class:`ManualClockLoop`: each of the first
    ``hanging`` requests (None: every one) moves the loop's clock a second on, past the
    client's timeout, wakes the loop, and says nothing more until the test ends, as a
    ``Fault.hang`` does; the others are answered at once."""

    def __init__(self, loop: ManualClockLoop, hanging: int | None) -> None:
        self.loop, self.hanging = loop, hanging
        self.over = threading.Event()
        self._lock = threading.Lock()
        self._seen = 0

    def __call__(self, messages: Any) -> str:
        with self._lock:
            self._seen += 1
            hangs = self.hanging is None or self._seen <= self.hanging
        if not hangs:
            return echo_reply(messages)
        self.loop.advance(1.0)
        self.loop.call_soon_threadsafe(lambda: None)
        self.over.wait(10)
        return "too late"


def _on_hanging_server(hanging: int | None, call: Any) -> tuple[Any, FakeOpenAIServer, str]:
    """``call(llm)`` with a client (timeout 0.3 s, waits between attempts recorded) of a
    server whose replies are ``Hangs(loop, hanging)``, on a :class:`ManualClockLoop`: what it
    returned or raised, the server (stopped) and its base URL."""
    loop = ManualClockLoop()
    hangs = Hangs(loop, hanging)

    async def main(server: FakeOpenAIServer) -> Any:
        async with chat_client(server, timeout=0.3, sleep=Sleeps()) as llm:
            try:
                return await call(llm)
            except LLMError as exc:
                return exc

    with FakeOpenAIServer(reply=hangs) as server:
        base_url = server.base_url
        try:
            outcome = loop.run_until_complete(main(server))
        finally:
            hangs.over.set()
            loop.close()
    return outcome, server, base_url


def test_a_single_hang_is_retried_to_a_completion() -> None:
    completion, server, _ = _on_hanging_server(1, lambda llm: llm.chat(USER))
    assert completion.text == "echo: hello there"
    assert completion.usage.requests == 2
    assert server.count(CHAT_PATH) == 2


def test_a_lasting_hang_ends_in_llm_error_with_reason() -> None:
    error, server, base_url = _on_hanging_server(None, lambda llm: llm.chat(USER))
    assert isinstance(error, LLMError)
    message = str(error)
    assert "timed out after 0.3 s" in message
    assert message.startswith(f"POST {base_url}/chat/completions failed after 3 attempts")
    assert server.count(CHAT_PATH) == 3


class Sleeps:
    """A client's waits between attempts, recorded instead of waited for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_retry_after_is_honoured(server: FakeOpenAIServer) -> None:
    server.add_faults(Fault.rate_limited("0.05"), Fault.rate_limited("0.05"))
    retry = RetryPolicy(max_attempts=3, base_delay=0.0)  # without the header: no wait at all
    sleeps = Sleeps()
    async with chat_client(server, retry=retry, timeout=2, sleep=sleeps) as llm:
        completion = await asyncio.wait_for(llm.chat(USER), 5)
    assert completion.usage.requests == 3
    assert sleeps.delays == [0.05, 0.05]  # the two waits the header asked for


@pytest.mark.asyncio
async def test_retry_after_is_capped_by_max_delay(server: FakeOpenAIServer) -> None:
    server.add_faults(Fault.server_error(503, retry_after="100"))
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.1)
    sleeps = Sleeps()
    async with chat_client(server, retry=retry, timeout=2, sleep=sleeps) as llm:
        await asyncio.wait_for(llm.chat(USER), 5)
    assert sleeps.delays == [0.1]


@pytest.mark.asyncio
async def test_client_errors_are_not_retried(server: FakeOpenAIServer) -> None:
    server.set_default(Fault("status", 400, body='{"error": {"message": "bad max_tokens"}}'))
    async with chat_client(server) as llm:
        with pytest.raises(LLMError, match=r"failed: HTTP 400: bad max_tokens$"):
            await llm.chat(USER)
    assert server.count(CHAT_PATH) == 1


@pytest.mark.asyncio
async def test_connection_refused_ends_in_llm_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OpenAIChat(
        f"http://127.0.0.1:{port}/v1", "m", retry=FAST, timeout=1, breaker=CircuitBreaker(10)
    ) as llm:
        with pytest.raises(LLMError, match="failed after 3 attempts: connection error"):
            await asyncio.wait_for(llm.chat(USER), 5)
    # without retries: one attempt, said so ("after 1 attempts" read as a slip)
    async with OpenAIChat(
        f"http://127.0.0.1:{port}/v1", "m", retry=RetryPolicy(max_attempts=1), timeout=1,
        breaker=CircuitBreaker(10)
    ) as llm:
        with pytest.raises(LLMError, match="failed after 1 attempt: connection error"):
            await asyncio.wait_for(llm.chat(USER), 5)


@pytest.mark.asyncio
async def test_a_connection_reset_without_a_message_reads_as_its_type() -> None:
    """A server that resets the connection (httpx's ReadError says nothing) made the LLM's
    error read "connection error (ReadError: )", a colon followed by nothing, as the http
    retriever's did."""
    with connection_resetter(2) as url:
        async with OpenAIChat(
            f"{url}/v1", "m", retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            timeout=5, breaker=CircuitBreaker(10)
        ) as llm:
            with pytest.raises(LLMError) as info:
                await asyncio.wait_for(llm.chat(USER), 10)
    assert str(info.value).endswith("failed after 2 attempts: connection error (ReadError)"), \
        str(info.value)


def _transport_returning(payload: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json=payload))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "expected a JSON object, got list"),
        ({"choices": []}, "'choices' is missing or empty"),
        ({"choices": [{"text": "hi"}]}, "'choices[0].message' is missing"),
        (
            {"choices": [{"message": {"content": None}}], "usage": {}},
            "'choices[0].message.content' is NoneType",
        ),
        (
            {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "3"}},
            "are not counts",
        ),
    ],
)
async def test_replies_of_the_wrong_shape_are_rejected_strictly(
    payload: object, reason: str
) -> None:
    llm = OpenAIChat("http://example.invalid/v1", "m", transport=_transport_returning(payload))
    async with llm:
        with pytest.raises(LLMError, match="unexpected reply") as info:
            await llm.chat(USER)
    assert reason in str(info.value)


@pytest.mark.asyncio
async def test_a_reply_without_usage_is_counted_by_the_estimate() -> None:
    """Some OpenAI-compatible servers send no ``usage``: every case errored ("'usage' is
    missing") though the answer was there. Its tokens are estimated (4 characters a token),
    as the rate limiter estimates a request before it is sent."""
    payload = {"choices": [{"message": {"content": "an answer of 27 characters."}}]}
    llm = OpenAIChat("http://example.invalid/v1", "m", transport=_transport_returning(payload))
    async with llm:
        completion = await llm.chat(USER)
    assert completion.text == "an answer of 27 characters."
    # "hello there": 11 characters, 11 // 4 + 1; the answer's 27 // 4 + 1
    assert completion.usage == Usage(3, 7, 1)
    assert completion.usage.estimated  # and said to be an estimate, in every output


# -- secrets -------------------------------------------------------------------------------


def test_named_but_unset_key_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGBENCH_MISSING_KEY", raising=False)
    with pytest.raises(
        ComponentError, match="api_key_env: environment variable RAGBENCH_MISSING_KEY"
    ):
        OpenAIChat("http://127.0.0.1:1/v1", "m", api_key_env="RAGBENCH_MISSING_KEY")
    with pytest.raises(
        ComponentError, match=r"headers\.X-Key: environment variable RAGBENCH_MISSING_KEY"
    ):
        OpenAIChat("http://127.0.0.1:1/v1", "m", headers={"X-Key": "${RAGBENCH_MISSING_KEY}"})


@pytest.mark.parametrize("secret", ["sk-abc\n", "sk-\u00e9t\u00e9", "sk-abc "])
def test_a_key_variable_a_header_cannot_hold_is_an_error_that_does_not_show_it(
        monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    """A key pasted with its line break or a trailing space, or with a letter outside ASCII,
    failed every case's request at run time."""
    monkeypatch.setenv("RAGBENCH_ODD_KEY", secret)
    for make in (lambda: OpenAIChat("http://127.0.0.1:1/v1", "m", api_key_env="RAGBENCH_ODD_KEY"),
                 lambda: OpenAIChat("http://127.0.0.1:1/v1", "m",
                                    headers={"X-Key": "k ${RAGBENCH_ODD_KEY}"})):
        with pytest.raises(ComponentError, match=r"environment variable RAGBENCH_ODD_KEY "
                                                 r"(holds|starts) .*, which an HTTP header "
                                                 r"cannot send") as info:
            make()
        assert "sk-" not in str(info.value)


@pytest.mark.asyncio
async def test_api_key_never_leaks(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    monkeypatch.setenv("RAGBENCH_TEST_TOKEN", "tok-SECOND-SECRET-value")
    caplog.set_level(logging.DEBUG)
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    texts: list[str] = []

    def collect(error: BaseException) -> None:
        texts.extend([str(error), repr(error), "".join(traceback.format_exception(error))])

    llm = chat_client(
        server,
        api_key_env="RAGBENCH_TEST_KEY",
        headers={"X-Api-Token": "${RAGBENCH_TEST_TOKEN}"},
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=60),
    )
    async with llm:
        texts.append(repr(llm))
        server.add_faults(Fault("status", 401, body=echo))
        with pytest.raises(LLMError) as info:
            await llm.chat(USER)
        collect(info.value)
        server.set_default(
            Fault("status", 500, body=f"internal error for key {SECRET} / tok-SECOND-SECRET-value")
        )
        with pytest.raises(LLMError) as info:
            await llm.chat(USER)
        collect(info.value)
        with pytest.raises(LLMError) as info:  # breaker now open: its message quotes the error
            await llm.chat(USER)
        collect(info.value)
        texts.append(repr(llm.breaker))
    texts.append(caplog.text)
    texts.extend([str(llm.provider_id), repr(llm.usage), repr(llm.breaker)])
    # the server did see the key, so a leak would have been possible
    assert any(SECRET in str(r.headers) for r in server.requests)
    joined = "\n".join(texts)
    assert "Incorrect API key provided: ***" in joined
    assert "internal error for key *** / ***" in joined
    assert SECRET not in joined
    assert "tok-SECOND-SECRET-value" not in joined


@pytest.mark.asyncio
async def test_credentials_in_base_url_become_basic_auth_and_are_hidden(
    server: FakeOpenAIServer,
) -> None:
    url = server.base_url.replace("http://", "http://alice:pa55word-xyz@")
    async with OpenAIChat(url, "m", retry=FAST) as llm:
        assert "pa55word-xyz" not in repr(llm)
        assert llm.base_url == server.base_url
        assert "pa55word-xyz" not in str(llm.provider_id)
        await llm.chat(USER)
    headers = {k.lower(): v for k, v in server.requests[0].headers.items()}
    assert headers["authorization"].startswith("Basic ")


# -- embeddings ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_embedder_batches_keeps_order_and_counts_tokens(server: FakeOpenAIServer) -> None:
    texts = [f"text number {i}" for i in range(7)]
    async with OpenAIEmbedder(server.base_url, "emb", batch_size=3, retry=FAST) as embedder:
        assert isinstance(embedder, Embedder)
        vectors = await embedder.embed(texts)
        empty = await embedder.embed([])
    assert vectors.dtype == np.float32
    assert vectors.shape == (7, 64)
    expected = np.asarray([hash_embedding(t) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    assert empty.shape == (0, 0)
    assert server.count(EMBEDDINGS_PATH) == 3
    assert embedder.usage.prompt_tokens == 21
    assert embedder.usage.requests == 3


@pytest.mark.asyncio
async def test_embedder_retries_faults(server: FakeOpenAIServer) -> None:
    server.add_faults(Fault.truncated(), Fault.server_error())
    async with OpenAIEmbedder(server.base_url, "emb", retry=FAST, timeout=1) as embedder:
        vectors = await asyncio.wait_for(embedder.embed(["a", "b"]), 5)
    assert vectors.shape == (2, 64)
    assert server.count(EMBEDDINGS_PATH) == 3


@pytest.mark.asyncio
async def test_embedder_rejects_a_wrong_number_of_vectors() -> None:
    payload = {"data": [{"index": 0, "embedding": [0.1, 0.2]}]}
    embedder = OpenAIEmbedder("http://x.invalid/v1", "e", transport=_transport_returning(payload))
    async with embedder:
        with pytest.raises(LLMError, match="1 embeddings for 2 inputs"):
            await embedder.embed(["a", "b"])


def test_hash_embedding_is_deterministic_and_similarity_follows_words() -> None:
    a, b, c = (np.asarray(hash_embedding(t)) for t in ("red apple pie", "red apple", "blue sky"))
    assert hash_embedding("red apple pie") == hash_embedding("red apple pie")
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert a @ b > a @ c
    assert np.linalg.norm(hash_embedding("")) == pytest.approx(1.0)


# -- extractive provider -------------------------------------------------------------------


PASSAGES = [
    "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair.",
    "Mount Everest is the highest mountain above sea level.",
]


def test_prompt_round_trip() -> None:
    prompt = format_prompt("When was the Eiffel Tower completed?", [*PASSAGES, "two\n\nlines"])
    parsed = parse_prompt(prompt)
    assert parsed.question == "When was the Eiffel Tower completed?"
    assert parsed.passages == (*PASSAGES, "two lines")


def test_parse_prompt_without_question_label_uses_loose_lines() -> None:
    parsed = parse_prompt("[1] alpha beta\ngamma\n\nwhich letter follows alpha?")
    assert parsed.passages == ("alpha beta gamma",)
    assert parsed.question == "which letter follows alpha?"


@pytest.mark.asyncio
async def test_extractive_answers_with_the_best_sentence() -> None:
    llm = ExtractiveLLM()
    assert isinstance(llm, LLM)
    prompt = format_prompt("In which year was it completed for the fair?", PASSAGES)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    completion = await llm.chat(messages, temperature=0.7)
    assert completion.text == "It was completed in 1889 for the World's Fair."
    assert completion.usage.prompt_tokens == 2 + len(prompt.split())
    assert completion.usage.completion_tokens == 9
    assert completion.usage.requests == 1
    assert (await llm.chat(messages)).text == completion.text


@pytest.mark.asyncio
async def test_extractive_abstains_below_the_threshold() -> None:
    llm = ExtractiveLLM(threshold=0.5)
    prompt = format_prompt("What is the boiling point of mercury?", PASSAGES)
    completion = await llm.chat([{"role": "user", "content": prompt}])
    assert completion.text == ABSTAIN == "I don't know."
    assert (await llm.chat([{"role": "user", "content": "[1] no question here"}])).text == ABSTAIN


def test_extractive_returns_several_sentences_ranked() -> None:
    llm = ExtractiveLLM(threshold=0.3, max_sentences=2)
    passages = ["Everest is tall.", "Everest is the highest mountain on Earth."]
    answer = llm.answer(format_prompt("Which mountain is the highest on Earth?", passages))
    assert answer == "Everest is the highest mountain on Earth."
    answer = llm.answer(format_prompt("Is Everest the highest mountain?", passages))
    assert answer == "Everest is the highest mountain on Earth. Everest is tall."


def test_the_fake_server_says_nothing_of_a_client_that_gave_up(
        capfd: pytest.CaptureFixture[str]) -> None:
    # a client past its timeout closes the connection: writing the late answer failed with a
    # BrokenPipeError traceback on stderr for every such request. Here each client closes its
    # connection once its request has reached the server, which answers only then.
    gave_up = threading.Event()

    def late(messages: Any) -> str:
        gave_up.wait(5)
        return "too late"

    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    with FakeOpenAIServer(reply=late) as server:
        for sent in range(1, 4):
            gave_up.clear()
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
                client.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                               f"Content-Type: application/json\r\n"
                               f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
                deadline = time.monotonic() + 5
                while server.count(CHAT_PATH) < sent and time.monotonic() < deadline:
                    time.sleep(0.001)
            gave_up.set()
            # until the handler has written its late answer (and ended)
            while server.in_flight and time.monotonic() < deadline:
                time.sleep(0.001)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                "process_request_thread" in t.name for t in threading.enumerate()):
            time.sleep(0.001)
    assert server.count(CHAT_PATH) == 3
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.asyncio
async def test_an_embedding_reply_without_usage_is_counted_by_the_estimate() -> None:
    """An embeddings endpoint that sends no ``usage`` was counted as 0 tokens: ``tpm`` settled
    each batch to nothing (letting any number through) and a priced embedder cost $0 under
    ``max_cost``; it is counted as the request was estimated, as a chat reply is."""
    from pytest_ragbench.budget import LocalBudget, PoolLimits

    payload = {"data": [{"index": i, "embedding": [0.1, 0.2]} for i in range(2)]}
    with LocalBudget() as budget:
        budget.declare("p", PoolLimits(tpm=1000))
        budget.declare_cost("c", 10.0)
        embedder = OpenAIEmbedder("http://x.invalid/v1", "e", run_budget=budget, pool="p",
                                  cost_key="c", cost_of=lambda usage: usage.prompt_tokens / 100,
                                  transport=_transport_returning(payload))
        texts = ["forty characters of text, give or take..", "and more"]
        async with embedder:
            await embedder.embed(texts)
        totals = await budget.atotals()
    estimate = sum(len(t) for t in texts) // 4 + 1  # 13
    assert embedder.usage.prompt_tokens == estimate
    assert totals["pools"]["p"]["tokens"] == estimate
    assert totals["costs"]["c"]["spent"] == pytest.approx(estimate / 100)


@pytest.mark.asyncio
async def test_estimated_embedding_and_chat_tokens_are_counted_as_estimates_by_the_budget(
) -> None:
    """The run budget's pools and cost cap counted a reply without ``usage`` by its estimate
    but not that it was one, so the pool lines and 'spent $X' said an estimate as measured;
    a reply that sends usage is not counted as estimated."""
    from pytest_ragbench.budget import LocalBudget, PoolLimits

    vectors = {"data": [{"index": 0, "embedding": [0.1, 0.2]}]}
    chat = {"choices": [{"message": {"content": "hi"}}]}
    with LocalBudget() as budget:
        for pool in ("e", "m"):
            budget.declare(pool, PoolLimits())
        budget.declare_cost("c", 10.0)
        common = {"run_budget": budget, "cost_key": "c",
                  "cost_of": lambda usage: usage.prompt_tokens / 100}
        unsent = OpenAIEmbedder("http://x.invalid/v1", "e", pool="e",
                                transport=_transport_returning(vectors), **common)
        sent = OpenAIEmbedder("http://x.invalid/v1", "e", pool="e", transport=(
            _transport_returning({**vectors, "usage": {"prompt_tokens": 3}})), **common)
        llm = OpenAIChat("http://x.invalid/v1", "m", pool="m",
                         transport=_transport_returning(chat), **common)
        async with unsent, sent, llm:
            await unsent.embed(["some text"])
            await sent.embed(["some text"])
            await llm.chat(USER)
        totals = await budget.atotals()
    assert totals["pools"]["e"]["estimated"] == 1 and totals["pools"]["e"]["requests"] == 2
    assert totals["pools"]["m"]["estimated"] == 1
    assert totals["costs"]["c"]["estimated"] == 2 and totals["costs"]["c"]["charges"] == 3
