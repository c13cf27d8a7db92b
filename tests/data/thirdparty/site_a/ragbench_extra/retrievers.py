"""Components of the fake third-party distribution ``ragbench-extra``."""

from __future__ import annotations

import numpy as np


class KeywordRetriever:
    """Scores documents by the number of query words they contain (third-party test retriever)."""

    def __init__(self, *, boost: float = 1.0, min_len: int = 1) -> None:
        self.boost = boost
        self.min_len = min_len

    def index(self, corpus):
        self.docs = [(d.id, set(f"{d.title} {d.text}".lower().replace(".", "").split()))
                     for d in corpus]

    def retrieve(self, query, k):
        words = {w for w in query.lower().split() if len(w) >= self.min_len}
        scored = [(i, self.boost * len(words & t)) for i, t in self.docs]
        scored = [s for s in scored if s[1] > 0]
        scored.sort(key=lambda x: (-x[1], x[0]))
        return scored[:k]


class ConstantEmbedder:
    """Every text gets the same vector (third-party test embedder)."""

    def __init__(self, *, dim: int = 4) -> None:
        self.dim = dim

    async def embed(self, texts):
        return np.ones((len(texts), self.dim), dtype=np.float32)
