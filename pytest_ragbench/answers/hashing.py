"""The offline embedder of the answer path: :class:`pytest_ragbench.embedders.HashingEmbedder`.

Kept as an import location; there is one hashing embedder (``embedder: {type: hashing}`` in a
suite's answer section and the dense retriever's ``hashing`` embedder are the same class).
"""

from __future__ import annotations

from ..embedders import HashingEmbedder

__all__ = ["HashingEmbedder"]
