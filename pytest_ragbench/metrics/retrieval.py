"""Retrieval metrics that reproduce trec_eval's per-query values.

Every metric here equals the per-query value trec_eval (9.x, as exposed by ``pytrec_eval``)
computes with its default settings (relevance level 1, no ``-J``, no ``-M``); the test suite
checks this to 1e-9 on random data and on NFCorpus.

Evaluation order
----------------
trec_eval ignores the ranks written in a run: it sorts each query's documents by score,
highest first, and breaks ties by document id in *descending* ``strcmp`` order (byte order
of the UTF-8 ids, so ``"d9"`` ranks before ``"d10"``, ``"a"`` before ``"B"`` and ``"é"`` before
``"z"``). :func:`trec_order` applies that order. Scores are compared in single precision, as
trec_eval stores them (a C ``float``), so ``1`` and ``1.0`` tie, so do ``0.0`` and ``-0.0``, and
so do ``1.0`` and ``1.00000001`` or ``16777217`` and ``16777216``. A document id
listed twice keeps its first score (trec_eval rejects such runs; pytrec_eval's dicts cannot
hold them).

Definitions
-----------
For one query: a document is *relevant* when its qrels grade is > 0; grades of 0 or below,
and documents missing from the qrels, are non-relevant and have gain 0 (trec_eval reads a
negative grade as "pooled but unjudged", which every metric below treats as non-relevant).
``R`` is the number of relevant documents in the qrels, retrieved or not. ``rel(i)`` is 1 when
the document at rank ``i`` (1-based) is relevant, ``g(i)`` its grade when > 0 else 0, and
``top(k)`` is the first ``k`` ranked documents (all of them when ``k`` is None or exceeds the
ranking).

* ``ndcg@k`` (trec_eval ``ndcg_cut.k``) = DCG@k / IDCG@k, with DCG@k = sum over ``i <= k`` of
  ``g(i) / log2(i + 1)`` (linear gain) and IDCG@k the same sum over the qrels' positive grades
  sorted in descending order. ``ndcg`` (trec_eval ``ndcg``) is the same without a cutoff.
* ``recall@k`` (``recall.k``) = relevant in ``top(k)`` / ``R``.
* ``precision@k`` (``P.k``) = relevant in ``top(k)`` / ``k``; always divided by ``k``, even when
  fewer than ``k`` documents were retrieved.
* ``mrr`` (``recip_rank``) = ``1 / rank`` of the first relevant document, 0 if none is
  retrieved. ``mrr@k`` is ``recip_rank`` on ``top(k)``: 0 when the first relevant document is
  below rank ``k``.
* ``map`` (``map``) = sum over relevant retrieved ranks ``i`` of precision at ``i``, divided by
  ``R``. ``map@k`` (``map_cut.k``) only sums ranks ``i <= k`` and still divides by ``R``.
* ``hit@k`` (``success.k``) = 1 if ``top(k)`` holds a relevant document, else 0.
* ``r_precision`` (``Rprec``) = relevant in ``top(R)`` / ``R``.

Queries without relevant documents
----------------------------------
When the qrels hold no relevant document (every grade <= 0) every metric is 0.0: that is what
trec_eval reports for such a query. With *empty* qrels trec_eval skips the query altogether
(and pytrec_eval leaves it out of its result); here it scores 0.0 as well. Averaging such
queries in would drag a mean down without saying anything about the system, so callers should
count and report them separately rather than trust these zeros.

An empty ranking scores 0.0 on every metric, as pytrec_eval reports for a query that has qrels
but no retrieved documents (and as ``trec_eval -c`` counts a query missing from the run).

Depth
-----
trec_eval evaluates *every* retrieved document: its ``-M`` option (maximum documents per topic)
defaults to MAXLONG in trec_eval 7.3 and 9.x alike, and pytrec_eval hard-wires MAXLONG. The
familiar 1000 is TREC's submission depth, which runs usually respect but the evaluator does
not enforce; uncut metrics (``map``, ``ndcg``, ``mrr``, ``r_precision``) do count a relevant
document at rank 1500. Pass ``max_retrieved`` to :func:`trec_order` or :func:`evaluate` to
mirror ``trec_eval -M N``, which keeps the first ``N`` documents *after* sorting.
"""

from __future__ import annotations

import array
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import did_you_mean

__all__ = [
    "KNOWN_METRIC_FORMS",
    "METRIC_KINDS",
    "RetrievalMetric",
    "evaluate",
    "parse_metric",
    "trec_order",
]

METRIC_KINDS: tuple[str, ...] = (
    "ndcg",
    "recall",
    "precision",
    "mrr",
    "map",
    "hit",
    "r_precision",
)
"""Every value :attr:`RetrievalMetric.kind` may take."""

KNOWN_METRIC_FORMS: tuple[str, ...] = (
    "ndcg@K (also nDCG@K, ndcg_cut_K, ndcg_cut.K)",
    "ndcg (no cutoff)",
    "recall@K (also R@K, recall_K, recall.K)",
    "precision@K (also P@K, P_K, P.K)",
    "mrr@K (also MRR@K, RR@K, recip_rank@K)",
    "mrr (also RR, recip_rank; no cutoff)",
    "map@K (also AP@K, map_cut_K, map_cut.K)",
    "map (also AP; no cutoff)",
    "hit@K (also hits@K, success@K, success_K, success.K)",
    "r_precision (also Rprec, R-precision; takes no cutoff)",
)
"""Human-readable list of the metric names :func:`parse_metric` accepts (K a positive integer)."""

# Lower-cased alias -> kind.
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "ndcg": "ndcg",
        "ndcg_cut": "ndcg",
        "recall": "recall",
        "r": "recall",
        "precision": "precision",
        "p": "precision",
        "mrr": "mrr",
        "rr": "mrr",
        "recip_rank": "mrr",
        "map": "map",
        "ap": "map",
        "map_cut": "map",
        "hit": "hit",
        "hits": "hit",
        "success": "hit",
        "r_precision": "r_precision",
        "r-precision": "r_precision",
        "rprec": "r_precision",
    }
)

# trec_eval's "*_cut" measure names only make sense with a cutoff.
_ALIASES_NEEDING_CUTOFF = frozenset({"ndcg_cut", "map_cut"})
# Set-based at a depth: without a cutoff they would be a different trec_eval measure (set_P ...).
_KINDS_NEEDING_CUTOFF = frozenset({"recall", "precision", "hit"})
# R-precision's cutoff is R itself.
_KINDS_WITHOUT_CUTOFF = frozenset({"r_precision"})

_TREC_STYLE_CUTOFF = re.compile(r"(.+?)[._]([+-]?\d+)")
_INTEGER = re.compile(r"[+-]?\d+")


def _accepted_forms() -> str:
    return "accepted forms: " + "; ".join(KNOWN_METRIC_FORMS)


def _canonical_name(kind: str, k: int | None) -> str:
    return kind if k is None else f"{kind}@{k}"


def _check_cutoff(kind: str, k: int | None, shown: str) -> None:
    """Raise ValueError if ``k`` is not a valid cutoff for ``kind``; ``shown`` names the metric."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise ValueError(f"{shown}: k must be a positive integer, got {k!r}")
    if k is None and kind in _KINDS_NEEDING_CUTOFF:
        raise ValueError(f"{shown}: {kind} needs a cutoff, e.g. '{kind}@10'; {_accepted_forms()}")
    if k is not None and kind in _KINDS_WITHOUT_CUTOFF:
        raise ValueError(
            f"{shown}: {kind} takes no cutoff (it is cut at the number of relevant documents); "
            f"{_accepted_forms()}"
        )


def _num_relevant(qrels: Mapping[str, int]) -> int:
    return sum(1 for grade in qrels.values() if grade > 0)


@dataclass(frozen=True)
class RetrievalMetric:
    """A hashable retrieval metric, like ir_measures' ``nDCG@10``.

    Build one with :func:`parse_metric`; constructing it directly is allowed but ``name`` must be
    the canonical ``"<kind>@<k>"`` (or ``"<kind>"`` when ``k`` is None), so that equal metrics
    compare and hash equal however they were spelled.

    Attributes:
        name: canonical name, e.g. ``"ndcg@10"``, ``"mrr"``, ``"r_precision"``.
        kind: one of :data:`METRIC_KINDS`.
        k: rank cutoff, or None for the whole ranking.
        direction: ``"higher"``: a larger value is better for every retrieval metric.
    """

    name: str
    kind: str
    k: int | None
    direction: str = "higher"

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(
                f"unknown metric kind {self.kind!r}{did_you_mean(self.kind, METRIC_KINDS)}; "
                f"expected one of {', '.join(METRIC_KINDS)}"
            )
        _check_cutoff(self.kind, self.k, repr(self.name))
        expected = _canonical_name(self.kind, self.k)
        if self.name != expected:
            raise ValueError(
                f"metric name {self.name!r} does not match kind={self.kind!r}, k={self.k!r} "
                f"(expected {expected!r}); use parse_metric() to build metrics from any spelling"
            )
        if self.direction != "higher":
            raise ValueError(
                f"{self.name}: direction must be 'higher' for retrieval metrics, "
                f"got {self.direction!r}"
            )

    def __str__(self) -> str:
        return self.name

    def compute(self, ranked: Sequence[str], qrels: Mapping[str, int]) -> float:
        """Score one query.

        Args:
            ranked: document ids in evaluation order, best first (see :func:`trec_order`),
                without duplicates.
            qrels: document id -> integer grade; a grade <= 0 means judged non-relevant.

        Returns:
            The metric value in [0, 1]; 0.0 when ``qrels`` has no relevant document.

        Raises:
            ValueError: if ``ranked`` lists a document twice (trec_eval refuses such runs, and
                counting a relevant document twice would silently inflate every metric).
        """
        seen: set[str] = set()
        for doc in ranked:
            if doc in seen:
                raise ValueError(f"{self.name}: document {doc!r} is ranked twice")
            seen.add(doc)
        return self._compute(ranked, qrels, _num_relevant(qrels))

    def _compute(self, ranked: Sequence[str], qrels: Mapping[str, int], num_rel: int) -> float:
        # trec_eval reports 0 for every measure when nothing is relevant; this also keeps the
        # divisions below safe.
        if num_rel == 0:
            return 0.0
        kind = self.kind
        depth = num_rel if kind == "r_precision" else self.k
        top = ranked if depth is None else ranked[:depth]

        if kind == "ndcg":
            dcg = 0.0
            for index, doc in enumerate(top):
                grade = qrels.get(doc, 0)
                if grade > 0:
                    dcg += grade / math.log2(index + 2)
            ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)
            if self.k is not None:
                ideal = ideal[: self.k]
            idcg = 0.0
            for index, grade in enumerate(ideal):
                idcg += grade / math.log2(index + 2)
            return dcg / idcg
        if kind == "mrr":
            for index, doc in enumerate(top):
                if qrels.get(doc, 0) > 0:
                    return 1.0 / (index + 1)
            return 0.0
        if kind == "map":
            found = 0
            total = 0.0
            for index, doc in enumerate(top):
                if qrels.get(doc, 0) > 0:
                    found += 1
                    total += found / (index + 1)
            return total / num_rel

        found = sum(1 for doc in top if qrels.get(doc, 0) > 0)
        if kind == "hit":
            return 1.0 if found else 0.0
        if kind == "precision":
            # _check_cutoff guarantees a cutoff for precision.
            assert self.k is not None
            return found / self.k
        # recall@k and r_precision both divide by R.
        return found / num_rel


def parse_metric(name: str) -> RetrievalMetric:
    """Parse a metric name in any accepted spelling into a :class:`RetrievalMetric`.

    Matching is case-insensitive and accepts ir_measures and trec_eval spellings, e.g.
    ``"nDCG@10"``, ``"ndcg_cut_10"``, ``"R@100"``, ``"P@5"``, ``"recip_rank@10"``, ``"AP@100"``,
    ``"success@10"``, ``"Rprec"``. See :data:`KNOWN_METRIC_FORMS` for the full list. The result's
    ``name`` is canonical: ``"<kind>@<k>"`` or ``"<kind>"``.

    Raises:
        ValueError: for an unknown name, a cutoff that is not a positive integer, a missing
            cutoff where one is required (``recall``, ``precision``, ``hit``) or a cutoff on
            ``r_precision``. The message lists the accepted forms.
    """
    if not isinstance(name, str):
        raise ValueError(f"metric name must be a string, got {name!r}; {_accepted_forms()}")
    lowered = name.strip().lower()
    k_text: str | None
    if "@" in lowered:
        base, _, k_text = lowered.partition("@")
        base, k_text = base.strip(), k_text.strip()
    else:
        trec_style = _TREC_STYLE_CUTOFF.fullmatch(lowered)
        if trec_style is not None and trec_style.group(1) in _ALIASES:
            base, k_text = trec_style.group(1), trec_style.group(2)
        else:
            base, k_text = lowered, None

    kind = _ALIASES.get(base)
    if kind is None:
        raise ValueError(
            f"unknown metric {name!r}{did_you_mean(base, _ALIASES)}; {_accepted_forms()}"
        )
    k: int | None = None
    if k_text is not None:
        if not _INTEGER.fullmatch(k_text):
            raise ValueError(
                f"{name!r}: k must be a positive integer, got {k_text!r}; {_accepted_forms()}"
            )
        k = int(k_text)
        if k <= 0:
            raise ValueError(
                f"{name!r}: k must be a positive integer, got {k}; {_accepted_forms()}"
            )
    elif base in _ALIASES_NEEDING_CUTOFF:
        raise ValueError(f"{name!r}: {base} needs a cutoff, e.g. '{base}_10'; {_accepted_forms()}")
    _check_cutoff(kind, k, repr(name))
    return RetrievalMetric(name=_canonical_name(kind, k), kind=kind, k=k)


def trec_order(hits: Sequence[tuple[str, float]], max_retrieved: int | None = None) -> list[str]:
    """Return the document ids of ``hits`` in trec_eval's evaluation order.

    Score descending; equal scores by document id descending in ``strcmp`` order (Python's
    ``str`` order equals the byte order of UTF-8). The first occurrence of a repeated id wins.

    Args:
        hits: ``(doc_id, score)`` pairs in any order; scores are compared in single precision.
        max_retrieved: keep only this many documents after sorting, like ``trec_eval -M``;
            None (trec_eval's default) keeps them all.

    Raises:
        ValueError: for a NaN score (it has no place in a ranking) or a ``max_retrieved``
            that is not a positive integer.
    """
    if max_retrieved is not None and (
        isinstance(max_retrieved, bool) or not isinstance(max_retrieved, int) or max_retrieved <= 0
    ):
        raise ValueError(f"max_retrieved must be a positive integer or None, got {max_retrieved!r}")
    first: dict[str, float] = {}
    for doc_id, score in hits:
        if doc_id in first:
            continue
        value = float(score)
        if math.isnan(value):
            raise ValueError(f"document {doc_id!r} has a NaN score; trec_eval cannot rank it")
        first[doc_id] = value
    # trec_eval keeps each score as a C float: scores equal in single precision tie (and
    # 1e39 is as large as 1e40), so they are compared rounded to it, as trec_eval compares
    ids = list(first)
    scores = dict(zip(ids, array.array("f", first.values()), strict=True))
    ordered = sorted(ids, key=lambda doc: (scores[doc], doc), reverse=True)
    return ordered if max_retrieved is None else ordered[:max_retrieved]


def evaluate(
    metrics: Sequence[RetrievalMetric],
    hits: Sequence[tuple[str, float]],
    qrels: Mapping[str, int],
    *,
    max_retrieved: int | None = None,
) -> dict[str, float]:
    """Score one query's ``hits`` on every metric.

    Orders ``hits`` once with :func:`trec_order` (passing ``max_retrieved`` on), then computes
    each metric.

    Returns:
        ``{metric.name: value}``, in the order of ``metrics``.
    """
    ranked = trec_order(hits, max_retrieved)
    num_rel = _num_relevant(qrels)
    # trec_order already removed duplicates, so skip compute()'s check.
    return {metric.name: metric._compute(ranked, qrels, num_rel) for metric in metrics}
