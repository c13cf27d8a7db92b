"""RankedHits: two parallel lists that behave as a sequence of (doc_id, score) pairs."""

from __future__ import annotations

import operator
import pickle

import pytest

from pytest_ragbench.retrievers.hits import RankedHits

HITS = RankedHits(["d3", "d1", "d2"], [3.0, 2.5, 2.5])
PAIRS = [("d3", 3.0), ("d1", 2.5), ("d2", 2.5)]


def test_reads_as_the_pairs() -> None:
    assert len(HITS) == 3
    assert list(HITS) == PAIRS
    assert HITS[0] == ("d3", 3.0) and HITS[-1] == ("d2", 2.5)
    assert ("d1", 2.5) in HITS and ("d1", 3.0) not in HITS
    assert dict(HITS) == dict(PAIRS)
    assert [d for d, _ in HITS] == ["d3", "d1", "d2"]
    with pytest.raises(IndexError):
        HITS[3]


def test_slices_stay_ranked_hits() -> None:
    top = HITS[:2]
    assert isinstance(top, RankedHits)
    assert top.ids == ["d3", "d1"] and top.scores == [3.0, 2.5]
    assert HITS[::-1] == PAIRS[::-1]


@pytest.mark.parametrize(
    ("other", "equal"),
    [
        (PAIRS, True),
        (tuple(PAIRS), True),
        ([list(p) for p in PAIRS], True),
        (RankedHits(["d3", "d1", "d2"], [3.0, 2.5, 2.5]), True),
        (PAIRS[:2], False),
        ([("d3", 3.0), ("d2", 2.5), ("d1", 2.5)], False),
        ([("d3", 3.0), ("d1", 2.5), ("d2", 2.0)], False),
        ("d3d1d2", False),
        (None, False),
    ],
)
def test_equality_with_any_sequence_of_pairs(other: object, equal: bool) -> None:
    # Both operand orders: a list on the left hands the comparison over to RankedHits.
    assert operator.eq(HITS, other) is equal
    assert operator.eq(other, HITS) is equal
    assert operator.ne(HITS, other) is not equal


def test_empty_equals_an_empty_list_and_is_falsy() -> None:
    empty = RankedHits([], [])
    assert empty == [] and not empty


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="2 ids but 1 scores"):
        RankedHits(["a", "b"], [1.0])


def test_unhashable_and_picklable_like_a_list() -> None:
    with pytest.raises(TypeError):
        hash(HITS)
    assert pickle.loads(pickle.dumps(HITS)) == HITS
    assert repr(RankedHits(["a"], [1.0])) == "RankedHits([('a', 1.0)])"
