"""The dense retriever's on-disk cache: processes that miss it at once embed the corpus once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from pytest_ragbench.datasets import Document
from pytest_ragbench.retrievers.cachelock import exclusive_lock, exclusive_lock_async
from pytest_ragbench.retrievers.dense import DenseRetriever

pytestmark = pytest.mark.unit

CORPUS = [Document(id=f"d{i}", text=f"document {i} about topic {i % 3}") for i in range(10)]


class SlowCountingEmbedder:
    """Counts texts embedded; slow enough (``delay``) that two indexers overlap."""

    provider_id = "slow-counting-v1"

    def __init__(self, counts: list[int], started: threading.Event) -> None:
        self.counts = counts
        self.started = started
        self.delay = 0.2

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.counts.append(len(texts))
        self.started.set()
        await asyncio.sleep(self.delay)
        return np.array([[1.0 + len(t), float(i + 1), 0.5] for i, t in enumerate(texts)],
                        dtype=np.float32)


def test_two_indexers_on_a_cold_cache_embed_the_corpus_once(tmp_path: Path) -> None:
    counts: list[int] = []
    started = threading.Event()
    embedders = [SlowCountingEmbedder(counts, started) for _ in range(2)]
    retrievers = [DenseRetriever(embedder=e, cache_dir=tmp_path) for e in embedders]
    errors: list[BaseException] = []

    def index(r: DenseRetriever) -> None:
        try:
            asyncio.run(r.index(CORPUS))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=index, args=(retrievers[0],))
    first.start()
    assert started.wait(5)  # the first is embedding (and holds the lock) when the second asks
    second = threading.Thread(target=index, args=(retrievers[1],))
    second.start()
    first.join(10)
    second.join(10)
    assert errors == []
    assert counts == [len(CORPUS)]  # one pass over the corpus between the two
    assert sorted(r.loaded_from_cache for r in retrievers) == [False, True]
    assert all(isinstance(r._matrix, np.memmap) for r in retrievers)
    # the overlap is over: embedding the query need not be slow (it was 0.4 s of the test)
    for embedder in embedders:
        embedder.delay = 0
    hits = [asyncio.run(r.retrieve("document 3 about topic 0", 4)) for r in retrievers]
    assert hits[0] == hits[1]


def test_a_cancelled_wait_for_the_lock_leaves_it_free(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"

    async def main() -> None:
        with exclusive_lock(lock):  # held by "another process"
            waiter = asyncio.create_task(_hold(lock))
            await asyncio.sleep(0.15)
            assert not waiter.done()  # waits, without blocking this loop
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        # released by the holder and not taken by the cancelled waiter
        await asyncio.wait_for(_hold(lock), 1)

    asyncio.run(main())


async def _hold(lock: Path) -> None:
    async with exclusive_lock_async(lock):
        pass
