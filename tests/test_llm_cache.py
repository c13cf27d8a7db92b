"""The SQLite response cache and the caching wrappers."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pytest_ragbench.llm.base import LLM, Completion, Embedder, LLMError, Usage
from pytest_ragbench.llm.cache import (
    CachedEmbedder,
    CachedLLM,
    CacheError,
    ResponseCache,
    chat_key,
    embedding_key,
)
from pytest_ragbench.llm.identity import ProviderId
from pytest_ragbench.llm.openai import OpenAIChat, OpenAIEmbedder
from pytest_ragbench.llm.resilience import RetryPolicy
from pytest_ragbench.llm.testing import CHAT_PATH, EMBEDDINGS_PATH, FakeOpenAIServer, Fault

USER = [{"role": "user", "content": "what is cached?"}]
FAST = RetryPolicy(max_attempts=2, base_delay=0.01)
SECRET = "sk-cache-test-0a1b2c3d4e5f-SECRET"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(hang_seconds=5) as running:
        yield running


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "responses.sqlite"


def cached_chat(server: FakeOpenAIServer, cache: ResponseCache, **kwargs: object) -> CachedLLM:
    inner = OpenAIChat(server.base_url, "m", retry=FAST, timeout=5, **kwargs)
    return CachedLLM(inner, cache, provider_id=inner.provider_id, template_version="t1")


async def close(wrapper: CachedLLM | CachedEmbedder) -> None:
    await wrapper.inner.aclose()  # type: ignore[union-attr]


# -- hits ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_second_identical_call_makes_no_request(server: FakeOpenAIServer, db: Path) -> None:
    with ResponseCache(db) as cache:
        llm = cached_chat(server, cache)
        assert isinstance(llm, LLM)
        first = await llm.chat(USER, temperature=0)
        second = await llm.chat(USER, temperature=0)
        await close(llm)
        assert cache.stats.hits == 1 and cache.stats.writes == 1
    assert server.count(CHAT_PATH) == 1
    assert not first.cached and first.usage.requests == 1
    assert second.cached
    assert second.text == first.text
    assert second.usage == Usage(first.usage.prompt_tokens, first.usage.completion_tokens, 0)
    assert second.model == first.model

    # a new process (new cache object) on the same file hits too
    with ResponseCache(db) as cache:
        llm = cached_chat(server, cache)
        third = await llm.chat(USER, temperature=0)
        await close(llm)
    assert third.cached and server.count(CHAT_PATH) == 1


@pytest.mark.asyncio
async def test_anything_in_the_key_makes_a_miss(server: FakeOpenAIServer, db: Path) -> None:
    with ResponseCache(db) as cache:
        llm = cached_chat(server, cache)
        await llm.chat(USER, temperature=0)
        await llm.chat(USER, temperature=1)
        await llm.chat([{"role": "user", "content": "other"}], temperature=0)
        other_template = CachedLLM(
            llm.inner, cache, provider_id=llm.provider_id, template_version="t2"
        )
        await other_template.chat(USER, temperature=0)
        await close(llm)
    assert server.count(CHAT_PATH) == 4


def test_keys_ignore_credentials_and_follow_content() -> None:
    base = ProviderId("openai-chat", "http://h:1/v1", "m", {"temperature": 0})
    with_credentials = ProviderId("openai-chat", "http://user:pw@h:1/v1/?api-key=x", "m", {})
    assert with_credentials.base_url == "http://h:1/v1"
    key = chat_key(base, USER, {})
    assert key == chat_key(with_credentials, USER, {"temperature": 0})  # defaults merge
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != chat_key(base, USER, {"temperature": 1})
    assert key != chat_key(ProviderId("openai-chat", "http://h:1/v1", "m2"), USER, {})
    assert key != chat_key(base, USER, {}, template_version="v2")
    assert key != chat_key(ProviderId("other", "http://h:1/v1", "m", {"temperature": 0}), USER, {})
    assert hash(base) == hash(ProviderId("openai-chat", "http://h:1/v1/", "m", {"temperature": 0}))
    assert embedding_key(base, "a") != embedding_key(base, "b")
    assert embedding_key(base, "a") != key


@pytest.mark.asyncio
async def test_api_key_is_not_in_the_key_or_the_file(
    server: FakeOpenAIServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGBENCH_CACHE_KEY", SECRET)
    monkeypatch.setenv("RAGBENCH_CACHE_KEY_2", "sk-another-key-entirely")
    with ResponseCache(db) as cache:
        llm = cached_chat(server, cache, api_key_env="RAGBENCH_CACHE_KEY")
        await llm.chat(USER)
        await close(llm)
        rotated = cached_chat(server, cache, api_key_env="RAGBENCH_CACHE_KEY_2")
        assert (await rotated.chat(USER)).cached  # a rotated key still hits
        await close(rotated)
    assert SECRET in str(server.requests[0].headers)
    stored = b"".join(p.read_bytes() for p in db.parent.iterdir())
    assert b"what is cached?" in stored  # the file does hold the conversation
    assert SECRET.encode() not in stored


# -- modes ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_mode_off_neither_reads_nor_writes(server: FakeOpenAIServer, db: Path) -> None:
    with ResponseCache(db, "on") as cache:
        llm = cached_chat(server, cache)
        await llm.chat(USER)
        await close(llm)
    with ResponseCache(db, "off") as cache:
        llm = cached_chat(server, cache)
        results = [await llm.chat(USER), await llm.chat([{"role": "user", "content": "new"}])]
        await close(llm)
        assert cache.stats.writes == 0
    assert not any(r.cached for r in results)
    assert server.count(CHAT_PATH) == 3
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM chat").fetchone()[0] == 1


@pytest.mark.asyncio
async def test_mode_read_only_reads_but_never_writes(server: FakeOpenAIServer, db: Path) -> None:
    with ResponseCache(db, "on") as cache:
        llm = cached_chat(server, cache)
        await llm.chat(USER)
        await close(llm)
    with ResponseCache(db, "read-only") as cache:
        llm = cached_chat(server, cache)
        hit = await llm.chat(USER)
        other = [{"role": "user", "content": "not stored"}]
        misses = [await llm.chat(other), await llm.chat(other)]
        await close(llm)
    assert hit.cached
    assert not any(m.cached for m in misses)
    assert server.count(CHAT_PATH) == 3
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM chat").fetchone()[0] == 1


@pytest.mark.asyncio
async def test_mode_read_only_does_not_create_a_missing_file(
    server: FakeOpenAIServer, db: Path
) -> None:
    with ResponseCache(db, "read-only") as cache:
        llm = cached_chat(server, cache)
        completion = await llm.chat(USER)
        await close(llm)
    assert not completion.cached
    assert not db.parent.exists()


@pytest.mark.asyncio
async def test_mode_refresh_writes_without_reading(server: FakeOpenAIServer, db: Path) -> None:
    with ResponseCache(db, "on") as cache:
        llm = cached_chat(server, cache)
        await llm.chat(USER)
        await close(llm)
    server.set_reply(lambda messages: "fresh answer")
    with ResponseCache(db, "refresh") as cache:
        llm = cached_chat(server, cache)
        refreshed = await llm.chat(USER)
        await close(llm)
    assert not refreshed.cached and refreshed.text == "fresh answer"
    assert server.count(CHAT_PATH) == 2
    with ResponseCache(db, "on") as cache:
        llm = cached_chat(server, cache)
        later = await llm.chat(USER)
        await close(llm)
    assert later.cached and later.text == "fresh answer"
    assert server.count(CHAT_PATH) == 2


def test_unknown_mode_is_rejected(db: Path) -> None:
    with pytest.raises(CacheError, match="'sometimes' is not one of on, off, read-only, refresh"):
        ResponseCache(db, "sometimes")  # type: ignore[arg-type]


# -- in-flight sharing ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_identical_concurrent_calls_share_one_request(db: Path) -> None:
    # the five calls start in one turn of the loop: any latency keeps the first in flight
    with FakeOpenAIServer(latency=0.05) as server, ResponseCache(db) as cache:
        llm = cached_chat(server, cache)
        results = await asyncio.wait_for(asyncio.gather(*(llm.chat(USER) for _ in range(5))), 5)
        await close(llm)
        assert server.count(CHAT_PATH) == 1
    assert len({r.text for r in results}) == 1
    assert sorted(r.usage.requests for r in results) == [0, 0, 0, 0, 1]
    assert sum(r.cached for r in results) == 4


@pytest.mark.asyncio
async def test_shared_call_failure_reaches_every_caller(db: Path) -> None:
    with FakeOpenAIServer(latency=0.05) as server, ResponseCache(db) as cache:
        server.set_default(Fault("status", 400, body='{"error": {"message": "nope"}}'))
        llm = cached_chat(server, cache)
        results = await asyncio.wait_for(
            asyncio.gather(*(llm.chat(USER) for _ in range(3)), return_exceptions=True), 5
        )
        await close(llm)
        assert server.count(CHAT_PATH) == 1
        assert cache.stats.writes == 0
    assert all(isinstance(r, LLMError) and "nope" in str(r) for r in results)


@pytest.mark.asyncio
async def test_joiners_take_over_when_the_leading_call_is_cancelled(db: Path) -> None:
    # the leader's request never comes back while it is in flight; the joiner's own is immediate
    with FakeOpenAIServer(faults=[Fault.hang()]) as server, ResponseCache(db) as cache:
        llm = cached_chat(server, cache)
        leader = asyncio.create_task(llm.chat(USER))
        await asyncio.sleep(0.05)
        joiner = asyncio.create_task(llm.chat(USER))
        await asyncio.sleep(0.05)
        leader.cancel()
        completion = await asyncio.wait_for(joiner, 5)
        await close(llm)
    assert leader.cancelled()
    assert completion.text == "echo: what is cached?"
    assert not completion.cached


# -- embeddings ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cached_embedder_fetches_only_missing_texts(
    server: FakeOpenAIServer, db: Path
) -> None:
    with ResponseCache(db) as cache:
        inner = OpenAIEmbedder(server.base_url, "emb", retry=FAST)
        embedder = CachedEmbedder(inner, cache, provider_id=inner.provider_id)
        assert isinstance(embedder, Embedder)
        first = await embedder.embed(["alpha", "beta", "alpha"])
        second = await embedder.embed(["beta", "gamma", "alpha"])
        third = await embedder.embed(["gamma", "alpha", "beta"])
        await inner.aclose()
    assert first.dtype == second.dtype == np.float32
    assert first.shape == (3, 64)
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[2], first[0])
    np.testing.assert_array_equal(third, second[[1, 2, 0]])
    assert server.count(EMBEDDINGS_PATH) == 2
    inputs = [r.body["input"] for r in server.requests]
    assert inputs == [["alpha", "beta"], ["gamma"]]


@pytest.mark.asyncio
async def test_cached_embedder_shares_concurrent_texts(db: Path) -> None:
    with FakeOpenAIServer(latency=0.05) as server, ResponseCache(db) as cache:
        inner = OpenAIEmbedder(server.base_url, "emb", retry=FAST)
        embedder = CachedEmbedder(inner, cache, provider_id=inner.provider_id)
        a, b = await asyncio.wait_for(
            asyncio.gather(embedder.embed(["x", "y"]), embedder.embed(["y", "z"])), 5
        )
        await inner.aclose()
        # The two requests race on the wire; what matters is that "y" was sent only once.
        assert sorted(r.body["input"] for r in server.requests) == [["x", "y"], ["z"]]
    np.testing.assert_array_equal(a[1], b[0])


# -- several processes on one file ---------------------------------------------------------


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pytest_ragbench.llm.base import Completion, Usage
    from pytest_ragbench.llm.cache import ResponseCache

    path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = ResponseCache(path)
    print("ready", flush=True)
    sys.stdin.readline()  # both writers begin together, when the test says go
    for i in range(first, last):
        cache.put_completion(f"chat-{i}", Completion(f"text {i}", Usage(i, 2, 1), model="m"))
        cache.put_vectors({f"vec-{i}": np.full(8, i, dtype=np.float32)})
    cache.close()
    """
)


def test_two_processes_writing_one_file_lose_nothing(db: Path) -> None:
    ranges = [(0, 800), (400, 1200)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(first), str(last)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first, last in ranges
    ]
    for writer in writers:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.communicate()[1]
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        _, err = writer.communicate(timeout=20)
        assert writer.returncode == 0, err
    with ResponseCache(db, "read-only") as cache:
        for i in range(1200):
            reply = cache.get_completion(f"chat-{i}")
            assert reply is not None, f"chat-{i} was lost"
            assert (reply.text, reply.prompt_tokens) == (f"text {i}", i)
        vectors = cache.get_vectors(f"vec-{i}" for i in range(1200))
    assert len(vectors) == 1200
    assert all(float(vectors[f"vec-{i}"][0]) == i for i in range(1200))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_round_trips_completions_and_vectors(db: Path) -> None:
    with ResponseCache(db) as cache:
        cache.put_completion("k", Completion("hi", Usage(3, 4, 1), model="gpt"))
        cache.put_vectors({"v": np.array([0.5, -1.25, 3.0], dtype=np.float64)})
        reply = cache.get_completion("k")
        assert reply is not None
        assert (reply.text, reply.model, reply.prompt_tokens, reply.completion_tokens) == (
            "hi",
            "gpt",
            3,
            4,
        )
        vector = cache.get_vectors(["v", "missing"])
        assert list(vector) == ["v"]
        assert vector["v"].dtype == np.float32
        np.testing.assert_array_equal(vector["v"], [0.5, -1.25, 3.0])
        assert cache.get_completion("absent") is None
        assert cache.stats.misses == 2


def test_an_estimated_count_stays_estimated_through_the_cache(db: Path) -> None:
    """A reply without usage is counted by an estimate; stored, it came back as a reply whose
    counts the endpoint had measured."""
    with ResponseCache(db) as cache:
        cache.put_completion("guessed", Completion("a", Usage(3, 1, 1, estimated=True)))
        cache.put_completion("counted", Completion("b", Usage(3, 1, 1)))
        guessed, counted = cache.get_completion("guessed"), cache.get_completion("counted")
    assert guessed is not None and guessed.usage == Usage(3, 1, 0) and guessed.usage.estimated
    assert counted is not None and not counted.usage.estimated


@pytest.mark.parametrize("mode", ["on", "read-only"])
def test_a_cache_written_before_estimates_were_marked_still_serves_its_replies(
        db: Path, mode: str) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:  # the first schema: no chat.estimated
        conn.execute("CREATE TABLE chat (key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT "
                     "NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT "
                     "NULL, created REAL NOT NULL)")
        conn.execute("INSERT INTO chat VALUES ('old', 'x', 'm', 5, 2, 0)")
    with ResponseCache(db, mode=mode) as cache:
        old = cache.get_completion("old")
        assert old is not None and old.usage == Usage(5, 2, 0) and not old.usage.estimated
        if mode == "on":  # upgraded in place: it stores the mark from now on
            cache.put_completion("new", Completion("y", Usage(1, 1, 1, estimated=True)))
            new = cache.get_completion("new")
            assert new is not None and new.usage.estimated
