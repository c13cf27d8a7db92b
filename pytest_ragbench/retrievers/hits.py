"""A ranked result list kept as two parallel lists instead of one tuple per hit.

A retriever that ranks with numpy ends with an array of ids and an array of scores; turning
those into ``k`` Python tuples costs more, at k=1000, than scoring the query did, and every
tuple is one more object for the garbage collector. :class:`RankedHits` keeps the two lists and
makes a ``(doc_id, score)`` pair only when one is asked for, so it can be returned wherever the
retriever contract expects a sequence of pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload


class RankedHits(Sequence[tuple[str, float]]):
    """``(doc_id, score)`` pairs, best first, stored as ``ids`` and ``scores``.

    Behaves as a read-only sequence of pairs: ``len``, indexing (an ``int`` gives a pair, a
    slice another :class:`RankedHits`), iteration, ``in``, and equality with any sequence of
    pairs (``RankedHits(["a"], [1.0]) == [("a", 1.0)]``). ``list(hits)`` gives the tuples.
    """

    __slots__ = ("ids", "scores")

    def __init__(self, ids: list[str], scores: list[float]) -> None:
        if len(ids) != len(scores):
            raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
        self.ids = ids
        self.scores = scores

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> tuple[str, float]: ...

    @overload
    def __getitem__(self, index: slice) -> RankedHits: ...

    def __getitem__(self, index: int | slice) -> tuple[str, float] | RankedHits:
        if isinstance(index, slice):
            return RankedHits(self.ids[index], self.scores[index])
        return self.ids[index], self.scores[index]

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return zip(self.ids, self.scores, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RankedHits):
            return self.ids == other.ids and self.scores == other.scores
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(
                isinstance(o, Sequence) and tuple(o) == mine
                for o, mine in zip(other, self, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside, like a list

    def __repr__(self) -> str:
        return f"RankedHits({list(self)!r})"
