"""Exact dense scores do not depend on the route taken to them: the float32 index or its kept
float64 copy, gathered candidate rows or every row."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pytest_ragbench.datasets import Document
from pytest_ragbench.embedders import HashingEmbedder
from pytest_ragbench.retrievers import dense as dense_module
from pytest_ragbench.retrievers.dense import DenseRetriever, exact_scores, normalise_rows

pytestmark = pytest.mark.unit


def _bits(values: np.ndarray) -> list[str]:
    return [float(v).hex() for v in values]


def test_exact_scores_are_the_same_bits_from_float32_or_float64_and_any_rows() -> None:
    rng = np.random.default_rng(5)
    matrix = normalise_rows(rng.standard_normal((300, 97)).astype(np.float32))
    wide = np.asarray(matrix, dtype=np.float64)
    query = normalise_rows(rng.standard_normal((1, 97)).astype(np.float32))[0]
    every = np.arange(300)
    want = _bits(exact_scores(matrix, every, query))
    assert _bits(exact_scores(wide, every, query)) == want
    assert _bits(exact_scores(matrix, None, query)) == want
    assert _bits(exact_scores(wide, None, query)) == want
    rows = np.array([3, 17, 18, 250, 299])
    assert _bits(exact_scores(wide, rows, query)) == [want[i] for i in rows]


def test_retrieval_scores_with_or_without_the_float64_copy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The same hits, bit for bit, whether the retriever keeps a float64 copy or not, for k
    # above the corpus size (every row), near it (many candidates) and small (few).
    docs = [Document(id=f"d{i:03d}", text=f"w{i % 7} w{i % 11} w{i % 13} x{i}")
            for i in range(120)]
    texts = ["w1 w2", "w3 x5", "nothing here", "w6 w10 w12"]

    def hits(limit: int) -> list[list[list[tuple[str, str]]]]:
        monkeypatch.setattr(dense_module, "_WIDE_MAX", limit)
        retriever = DenseRetriever(embedder=HashingEmbedder(dim=48), batch_size=32)
        asyncio.run(retriever.index(docs))
        out = []
        for k in (500, 100, 5):
            got = asyncio.run(retriever.retrieve_many(texts, k))
            out.append([[(d, float(s).hex()) for d, s in h] for h in got])
        assert (retriever._wide is not None) == (limit > 0)
        return out

    assert hits(64 * 1024 * 1024) == hits(0)
