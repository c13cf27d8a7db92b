"""An offline embedder for the answer path (deterministic feature hashing).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..llm.identity import ProviderId

_WORD = re.compile(r"\w+")


# -- offline embedder ------------------------------------------------------------------------


class HashingEmbedder:
    """An offline :class:`~pytest_ragbench.llm.base.Embedder`: signed feature hashing.

    Each lowercase word adds +-1 to one of ``dim`` buckets (chosen and signed by a BLAKE2b
    hash, so vectors are the same in every process); rows are L2-normalised float32. Texts
    sharing words get similar vectors. A text without words hashes as a whole, so no row is
    the zero vector (the judge rejects those).
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"

    @property
    def provider_id(self) -> ProviderId:
        return ProviderId("hashing", model="hashing", params={"dim": self.dim})

    def vector(self, text: str) -> np.ndarray:
        """The embedding of one text."""
        row = np.zeros(self.dim, dtype=np.float64)
        for word in _WORD.findall(text.lower()) or [text]:
            number = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(),
                                    "big")
            row[number % self.dim] += 1.0 if (number >> 63) & 1 else -1.0
        norm = float(np.linalg.norm(row))
        if norm == 0.0:  # opposite signs cancelled out exactly
            row[0], norm = 1.0, 1.0
        return (row / norm).astype(np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 array of shape ``(len(texts), dim)``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.vector(t) for t in texts])


