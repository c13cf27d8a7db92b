"""A third-party metric: the share of retrieved documents not labelled for the query."""

from __future__ import annotations


class Novelty:
    """Share of the top ``k`` retrieved documents that carry no label for the query."""

    direction = "higher"
    needs_qrels = True

    def __init__(self, k: int = 10, *, weight: float = 1.0) -> None:
        self.k = k
        self.weight = weight
        self.name = f"novelty@{k}"

    def compute(self, case, result):
        top = result.ranked[: self.k]
        if not top:
            return 0.0
        return self.weight * sum(1 for d in top if d not in case.relevant) / len(top)
