"""Retriever contract and the built-in retrievers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..datasets import Document

Hit = tuple[str, float]


@runtime_checkable
class Retriever(Protocol):
    """What the plugin needs of a retriever.

    ``index`` is called once per process with the whole corpus; ``retrieve`` returns up to ``k``
    ``(doc_id, score)`` pairs, best first: a list, or any sequence of pairs such as
    :class:`~pytest_ragbench.retrievers.hits.RankedHits`. A retriever may also offer
    ``retrieve_many(queries, k) -> list[list[Hit]]`` for batching, ``retrieve_case(query, k)``
    taking the whole :class:`~pytest_ragbench.datasets.Query` (id and labels; preferred when
    present, e.g. by the ``run`` retriever) and ``close()``; async variants
    (``async def retrieve``) are allowed.
    """

    def index(self, corpus: Sequence[Document]) -> None: ...

    def retrieve(self, query: str, k: int) -> Sequence[Hit]: ...
