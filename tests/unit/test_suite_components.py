"""One check of component parameters for every kind: names, then values against type hints."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_ragbench.errors import ComponentError
from pytest_ragbench.registry import Registry

if TYPE_CHECKING:
    from collections import OrderedDict


def rejected(registry: Registry, kind: str, name: str, params: dict[str, Any]) -> ComponentError:
    with pytest.raises(ComponentError) as info:
        registry.check(kind, name, params)
    return info.value


@pytest.mark.parametrize(("kind", "name", "params", "message", "param"), [
    ("retriever", "bm25", {"k1": float("inf")},
     "retriever 'bm25' parameter k1: expected a finite number, got inf", "k1"),
    ("retriever", "bm25", {"k1": "0.9"},
     "retriever 'bm25' parameter k1: expected a number, got '0.9'", "k1"),
    ("retriever", "bm25", {"stopwords": ["a", 1]},
     "retriever 'bm25' parameter stopwords[1]: expected a string, got 1", "stopwords[1]"),
    ("retriever", "bm25", {"stopword": "lucene"},
     "retriever 'bm25' got unknown parameter(s) stopword (did you mean 'stopwords'?); "
     "it accepts: *", "stopword"),
    ("metric", "temporal_ndcg", {"lambda": "high"},
     "metric 'temporal_ndcg' parameter lambda: expected a number, got 'high'", "lambda"),
    ("metric", "ndcg", {"k": 2.5}, "metric 'ndcg' parameter k: expected an integer, got 2.5",
     "k"),
    ("embedder", "hashing", {"dim": True},
     "embedder 'hashing' parameter dim: expected an integer, got True", "dim"),
    ("llm", "extractive", {"threshold": float("nan")},
     "llm 'extractive' parameter threshold: expected a finite number, got nan", "threshold"),
])
def test_every_kind_is_checked_the_same_way(kind, name, params, message, param):
    error = rejected(Registry(use_entry_points=False), kind, name, params)
    if message.endswith("*"):
        assert str(error).startswith(message[:-1])
    else:
        assert str(error) == message
    assert error.param == param


def test_good_parameters_pass():
    registry = Registry(use_entry_points=False)
    registry.check("retriever", "bm25", {"k1": 1, "b": 0.5, "stopwords": None, "stemmer": None})
    registry.check("metric", "temporal_ndcg", {"k": 10, "lambda": 0, "T": "3d"})
    registry.check("embedder", "hashing", {"dim": 64})


class Colour(enum.Enum):
    RED = "red"


def typed_factory(*, path: Path, fields: tuple[str, ...] = ("a",), colour: Colour = Colour.RED,
                  mode: Literal["x", "y"] = "x", weights: dict[str, float] | None = None
                  ) -> object:
    return object()


def test_hints_are_checked_as_document_values():
    # a YAML document has no Path, tuple or Enum: their text / list forms are what it can hold
    registry = Registry(use_entry_points=False)
    registry.add("retriever", "typed", typed_factory, origin="test")
    registry.check("retriever", "typed", {"path": "runs/a.trec", "fields": ["a", "b"],
                                          "colour": "red", "mode": "y", "weights": {"a": 1}})
    assert str(rejected(registry, "retriever", "typed", {"path": "p", "mode": "z"})) == (
        "retriever 'typed' parameter mode: expected 'x' or 'y', got 'z'")
    assert str(rejected(registry, "retriever", "typed", {"path": "p", "weights": {"a": "1"}})
               ) == "retriever 'typed' parameter weights.a: expected a number, got '1'"
    assert "is missing required parameter(s) path" in str(
        rejected(registry, "retriever", "typed", {}))


def hinted_by_name_only(*, table: OrderedDict[str, int], size: int = 1) -> object:
    return object()


def open_factory(**params: Any) -> object:
    return object()


def test_hints_that_cannot_be_resolved_or_kwargs_are_left_to_the_factory():
    registry = Registry(use_entry_points=False)
    registry.add("retriever", "by_name", hinted_by_name_only, origin="test")
    registry.add("retriever", "open", open_factory, origin="test")
    registry.check("retriever", "by_name", {"table": "anything"})  # OrderedDict is unresolvable
    assert "parameter size: expected an integer" in str(
        rejected(registry, "retriever", "by_name", {"table": 1, "size": "2"}))
    registry.check("retriever", "open", {"anything": float("inf")})
