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


class FixedEmbedder:
    provider_id = "fixed-v1"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return np.array([[1.0 + len(t), float(i + 1), 0.5] for i, t in enumerate(texts)],
                        dtype=np.float32)


def test_prune_keeps_what_a_run_uses_or_builds_and_removes_the_rest(tmp_path: Path) -> None:
    """The cache never shrank: every corpus or parameter change left a folder for ever. A
    prune must not pull an entry from under a run that has it mapped or is building it."""
    from pytest_ragbench.retrievers.bm25 import BM25Retriever
    from pytest_ragbench.retrievers.indexcache import prune_entry, scan

    cache = tmp_path / "ragbench"
    used = BM25Retriever(cache_dir=cache)
    used.index(CORPUS)  # mapped by this "run" until it lets go
    dense = DenseRetriever(embedder=FixedEmbedder(), cache_dir=cache)
    asyncio.run(dense.index(CORPUS))
    asyncio.run(dense.aclose())  # that run ended
    killed = cache / ".bm25-0123456789abcdef.x1y2.tmp"  # a build killed midway
    (killed / "index").mkdir(parents=True)
    (killed / "index" / "data.npy").write_bytes(b"0" * 100)
    building = cache / ".bm25-fedcba9876543210.a.tmp"  # a build under way
    building.mkdir()
    entries = {e.path.name: e for e in scan(cache)}
    assert set(entries) == {used.cache_path.name, dense.cache_path.name, killed.name,
                            building.name}
    assert entries[used.cache_path.name].in_use
    assert not entries[dense.cache_path.name].in_use
    assert entries[killed.name].unfinished and entries[killed.name].size == 100
    assert entries[used.cache_path.name].size > 0

    with exclusive_lock(cache / "bm25-fedcba9876543210.lock"):
        outcomes = {name: prune_entry(e) for name, e in entries.items()}
    assert outcomes == {used.cache_path.name: "in use", dense.cache_path.name: "removed",
                        killed.name: "removed", building.name: "being built"}
    assert used.cache_path.is_dir() and building.is_dir()
    assert not dense.cache_path.exists() and not killed.exists()
    assert not (cache / f"{dense.cache_path.name}.lock").exists()
    assert not (cache / f"{dense.cache_path.name}.use").exists()
    assert used.retrieve("topic 1", 3)  # the run goes on

    # once the run has let go, the entry goes; the next run builds it again, and it holds
    used_path = used.cache_path
    used._set_lease(None)
    (entry,) = [e for e in scan(cache) if e.path == used_path]
    assert prune_entry(entry) == "removed" and not used_path.exists()
    again = BM25Retriever(cache_dir=cache)
    again.index(CORPUS)
    assert again.cache_path == used_path and not again.loaded_from_cache
    assert again.retrieve("topic 1", 3) == used.retrieve("topic 1", 3)
    assert [e.in_use for e in scan(cache) if e.path == used_path] == [True]
