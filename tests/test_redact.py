"""No fragment of a secret in any message: the redaction helper, each client against a real
server on 127.0.0.1 that echoes the key in its error bodies, and a whole pytest run's outputs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import QUERIES, write_jsonl
from hypothesis import given
from hypothesis import strategies as st
from json_service import JsonService

from pytest_ragbench.embedders import openai_embedder
from pytest_ragbench.llm.base import LLMError
from pytest_ragbench.llm.openai import OpenAIChat
from pytest_ragbench.llm.resilience import CircuitBreaker, RetryPolicy
from pytest_ragbench.llm.testing import FakeOpenAIServer, Fault
from pytest_ragbench.redact import MIN_FRAGMENT, Redactor
from pytest_ragbench.retrievers.http import HTTPRetriever, HTTPRetrieverError

# 40 characters, like a real provider key
SECRET = "sk-live-Zq7Wv3Kp9Xr2Tb6Ny4Hm8Jc1Lf5Gd0Sa"
FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)


def leaks(text: str, secret: str = SECRET) -> list[str]:
    """Every run of MIN_FRAGMENT characters of ``secret`` found in ``text``."""
    return [secret[i:i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)
            if secret[i:i + MIN_FRAGMENT] in text]


def echo_bodies(secret: str = SECRET) -> list[str]:
    """Error bodies that echo the key: whole at an excerpt border, in part, in JSON."""
    return [
        # the key straddles both excerpt lengths (200 for HTTP retrievers, 300 for LLMs)
        "x" * 175 + " key " + secret + " " + "y" * 44 + " key " + secret,
        json.dumps({"error": {"message": "z" * 240 + f" Incorrect API key provided: {secret}"}}),
        # a partial echo the whole-key replacement cannot see
        f"Incorrect API key provided: {secret[:20]}****{secret[-4:]}",
        json.dumps({"error": f"bad key {secret[5:33]}"}),
    ]


# -- the helper --------------------------------------------------------------------------------


def test_whole_secrets_and_fragments_are_replaced() -> None:
    redact = Redactor([SECRET, "abc"])  # too short to hide: it would match ordinary words
    assert redact(f"key={SECRET}!") == "key=***!"
    assert redact(f"head {SECRET[:12]} tail") == "head *** tail"
    assert redact(f"{SECRET[:7]} and {SECRET[-7:]}") == f"{SECRET[:7]} and {SECRET[-7:]}"
    assert redact(f"a{SECRET[3:11]}b{SECRET[20:40]}c") == "a***b***c"
    assert redact("abc is fine") == "abc is fine"
    assert not Redactor([]) and Redactor([]).__call__(SECRET) == SECRET
    assert SECRET not in repr(redact)


def test_longer_secret_wins_over_one_it_contains() -> None:
    redact = Redactor(["token", f"Bearer {SECRET}"])
    assert redact(f"sent Bearer {SECRET} and token") == "sent *** and ***"


def test_excerpt_scrubs_before_cutting() -> None:
    redact = Redactor([SECRET])
    text = "x" * 290 + SECRET
    cut = redact.excerpt(text, 300)
    assert leaks(cut) == []
    assert cut == "x" * 290 + "***"
    long = "x" * 295 + SECRET + "y" * 50
    assert redact.excerpt(long, 300) == "x" * 295 + "***" + "y" * 2 + "..."
    assert redact.excerpt("a \n\t b", 10, collapse=True) == "a b"


@given(st.text(min_size=0, max_size=60), st.integers(0, len(SECRET)),
       st.integers(0, len(SECRET)), st.text(min_size=0, max_size=60),
       st.integers(1, 400))
def test_no_fragment_survives_any_cut(prefix: str, a: int, b: int, suffix: str,
                                      limit: int) -> None:
    redact = Redactor([SECRET])
    text = prefix + SECRET[min(a, b):max(a, b)] + suffix + SECRET
    assert leaks(redact(text)) == []
    assert leaks(redact.excerpt(text, limit, collapse=True)) == []


# -- each client against a server that echoes the key ----------------------------------------


class EchoServer:
    """A service on 127.0.0.1 that answers every POST with ``status`` and the next body, in
    turn; ``seen`` holds the headers of the requests it got."""

    def __init__(self, service: JsonService, status: int, bodies: list[str]) -> None:
        self.service, self.status, self.bodies = service, status, bodies
        self.url = service.url
        self.first = len(service.received)  # the service's requests before this script

    def reply(self, n: int) -> tuple[int, str]:
        return self.status, self.bodies[(n - self.first - 1) % len(self.bodies)]

    @property
    def seen(self) -> list[dict[str, str]]:
        return self.service.lowered_headers()[self.first:]


@pytest.fixture(scope="module")
def echo_service() -> Iterator[tuple[JsonService, list[EchoServer]]]:
    """One service for the module, answering as the latest script says: stopping a service
    waits for its serving loop's next poll, which a service per test paid every time."""
    scripts: list[EchoServer] = []
    with JsonService(lambda body, headers, n: scripts[-1].reply(n)) as service:
        yield service, scripts


@pytest.fixture
def echo_server(echo_service: tuple[JsonService, list[EchoServer]]
                ) -> Callable[[int, list[str]], EchoServer]:
    service, scripts = echo_service

    def start(status: int, bodies: list[str]) -> EchoServer:
        scripts.append(EchoServer(service, status, bodies))
        return scripts[-1]

    return start


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("body", range(len(echo_bodies())))
def test_llm_client_errors_carry_no_fragment(echo_server, monkeypatch, status: int,
                                             body: int) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    srv = echo_server(status, [echo_bodies()[body]])

    async def go() -> str:
        async with OpenAIChat(f"{srv.url}/v1", "m", api_key_env="RAGBENCH_TEST_KEY",
                              retry=FAST, breaker=CircuitBreaker(1, reset_timeout=60)) as llm:
            with pytest.raises(LLMError) as first:
                await llm.chat([{"role": "user", "content": "hi"}])
            with pytest.raises(LLMError) as second:  # the open breaker quotes the failure
                await llm.chat([{"role": "user", "content": "hi"}])
            return f"{first.value}\n{second.value}\n{llm.breaker!r}"

    text = asyncio.run(go())
    assert srv.seen[0]["authorization"] == f"Bearer {SECRET}"
    assert f"HTTP {status}" in text
    assert leaks(text) == []


@pytest.mark.parametrize("body", range(len(echo_bodies())))
def test_openai_embedder_errors_carry_no_fragment(echo_server, monkeypatch, body: int) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    srv = echo_server(403, [echo_bodies()[body]])
    embedder = openai_embedder(model="e", base_url=f"{srv.url}/v1",
                               api_key_env="RAGBENCH_TEST_KEY")

    async def go() -> str:
        try:
            with pytest.raises(LLMError) as info:
                await embedder.embed(["a text"])
            return str(info.value)
        finally:
            await embedder.aclose()

    text = asyncio.run(go())
    assert "HTTP 403" in text and srv.seen
    assert leaks(text) == []


@pytest.mark.parametrize("status", [401, 503])
@pytest.mark.parametrize("body", range(len(echo_bodies())))
def test_http_retriever_errors_carry_no_fragment(echo_server, monkeypatch, status: int,
                                                 body: int) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    srv = echo_server(status, [echo_bodies()[body]])
    r = HTTPRetriever(url=f"{srv.url}/search", retries=1, backoff=0.0,
                      headers={"X-Search-Key": "${RAGBENCH_TEST_KEY}"})

    async def go() -> str:
        try:
            with pytest.raises(HTTPRetrieverError) as info:
                await r.retrieve("x", 1)
            return str(info.value)
        finally:
            await r.aclose()

    text = asyncio.run(go())
    assert srv.seen[0]["x-search-key"] == SECRET
    assert f"HTTP {status}" in text
    assert leaks(text) == []


def test_http_retriever_hides_echoes_in_replies_outside_the_contract(echo_server,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    bodies = [json.dumps({"hits": "q" * 150 + SECRET}),
              json.dumps({"results": [{"id": "d1", "note": "w" * 170 + SECRET}]}),
              "<html>" + "v" * 180 + SECRET]
    srv = echo_server(200, bodies)
    r = HTTPRetriever(url=f"{srv.url}/search", retries=0,
                      headers={"Authorization": "Bearer ${RAGBENCH_TEST_KEY}"})
    texts = []
    for _ in bodies:
        with pytest.raises(HTTPRetrieverError) as info:
            asyncio.run(r.retrieve("x", 1))
        texts.append(str(info.value))
        r._client = None  # a new event loop per call needs a new client
    assert len(srv.seen) == 3
    assert leaks("\n".join(texts)) == []


# -- a whole run -----------------------------------------------------------------------------


def test_a_run_against_echoing_servers_leaks_no_fragment(pytester, mini_suite, echo_server,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    search = echo_server(401, echo_bodies())
    with FakeOpenAIServer() as llm:
        llm.set_default(Fault("status", 401, body=echo_bodies()[1]))
        mini_suite(f"""
            name: leaky
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
            retrievers:
              overlap: {{type: "overlap_retriever:Overlap"}}
              svc:
                type: http
                url: {search.url}/search
                headers: {{Authorization: "Bearer ${{RAGBENCH_TEST_KEY}}"}}
                retries: 0
              dense:
                type: dense
                embedder: {{type: openai, model: e, base_url: "{llm.base_url}",
                            api_key_env: RAGBENCH_TEST_KEY}}
            metrics: [recall@10, token_f1]
            llm:
              type: openai
              base_url: {llm.base_url}
              model: m
              api_key_env: RAGBENCH_TEST_KEY
              retries: 1
              backoff: 0.01
              timeout: 5
        """)
        # token_f1 needs reference answers to be asked for at all.
        write_jsonl(pytester.path / "queries.jsonl",
                    [{**q, "answer": f"answer {q['_id']}"} for q in QUERIES])
        result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-cache=off", "-rA")
        assert any(SECRET in str(r.headers) for r in llm.requests)
    assert search.seen and search.seen[0]["authorization"] == f"Bearer {SECRET}"
    result.assert_outcomes(errors=15)
    terminal = result.stdout.str() + result.stderr.str()
    assert "HTTP 401" in terminal
    assert leaks(terminal) == []
    run = (pytester.path / ".ragbench" / "runs" / "latest").resolve()
    outputs = ["cases.jsonl", "cases.csv", "summary.json", "report.html"]
    for name in outputs:
        text = (run / name).read_text(encoding="utf-8")
        assert leaks(text) == [], name
    assert "HTTP 401" in (run / "cases.jsonl").read_text(encoding="utf-8")
    for path in Path(pytester.path).rglob("*"):
        if path.is_file():
            assert leaks(path.read_bytes().decode("utf-8", "replace")) == [], path


def test_header_secrets_keep_the_auth_scheme_word_out() -> None:
    from pytest_ragbench.redact import header_secrets

    assert header_secrets("Authorization", f"Bearer {SECRET}", [SECRET]) == [SECRET]
    assert header_secrets("Authorization", "Bearer literal-token-123") == ["literal-token-123"]
    assert header_secrets("X-Api-Key", "abc def ghi") == ["abc def ghi"]
    assert header_secrets("Accept", "application/json") == []
    redact = Redactor(header_secrets("Authorization", "Bearer literal-token-123"))
    assert redact("missing Bearer scheme; got literal-token-123") == (
        "missing Bearer scheme; got ***")
