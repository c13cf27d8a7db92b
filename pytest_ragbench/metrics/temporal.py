"""Temporal nDCG: nDCG whose gains decay with the age of the document (a built-in metric
component, and an example of a parametrised metric).

It follows the metric's original definition. For a query with graded labels ``rel(d)`` and
documents carrying a timestamp ``ts(d)`` in their metadata (field ``timestamp`` by default; ISO
8601 text, a datetime, or epoch seconds)::

    dt(d)   = max(0, now - ts(d)) / T                   in units of T; future documents are new
    gain(d) = (2^rel(d) - 1) * exp(-lambda * dt(d))     for rel(d) > 0, else 0
    DCG^time@k = sum over ranks i = 1..k of gain(d_i) / log2(i + 1)
    IDCG@k  = the same sum over the labelled documents sorted by gain(d), highest first
    temporal_ndcg@k = DCG^time@k / IDCG@k               0 when IDCG@k is 0

The ideal ordering is by *decayed* gain, so an old, highly graded document may rank below a
fresh, less relevant one in the ideal list. Parameters (suite mapping entry
``{name: temporal_ndcg@10, lambda: 0.5, T: 3d, now: "2026-01-01T00:00:00Z"}``):

``lambda``
    decay rate per ``T`` (default 0.3).
``T``
    time unit of the decay: seconds as a number, or ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``,
    ``"2w"`` (default ``"7d"``).
``gain``
    ``"exponential"`` (default): ``2^rel - 1`` as above; ``"linear"``: ``rel`` itself, so that
    ``lambda: 0`` with linear gain is trec_eval's nDCG@k.
``now``
    reference time (ISO 8601 or epoch seconds); default: the run's start time, the same on
    every xdist worker.
``field``
    metadata key holding the timestamp (default ``"timestamp"``).
``missing``
    what a labelled document without a (readable) timestamp gets: ``"zero"`` gain (default),
    ``"no_decay"`` (its undecayed gain) or ``"error"`` (the case errors).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from ..datasets import Query
from ..errors import did_you_mean
from .spec import CaseResult

MISSING_POLICIES = ("zero", "no_decay", "error")
GAINS = ("exponential", "linear")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a number or ``"<number><s|m|h|d|w>"``; must be > 0."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 7d or 3600, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    else:
        raise ValueError(f"expected a duration such as 7d, 12h or 3600 (seconds), got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be > 0, got {value!r}")
    return seconds


def parse_time(value: Any) -> float:
    """Epoch seconds from epoch seconds (number or numeric text), ISO 8601 text or a datetime.

    A time without a zone is read as UTC, so results do not depend on the machine's zone.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a time, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite time, got {value!r}")
        return float(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        if text.endswith(("Z", "z")):
            # fromisoformat before Python 3.11 does not read the Z suffix
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 time or epoch seconds, got {value!r}") \
                from None
    else:
        raise ValueError(f"expected an ISO 8601 time or epoch seconds, got {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


class TemporalNDCG:
    """``temporal_ndcg@k``: nDCG with gains decayed by document age (module docs)."""

    family = "temporal"
    direction = "higher"
    needs_qrels = True

    def __init__(self, k: int = 10, *, lambda_: float = 0.3, T: Any = "7d",
                 now: Any = None, field: str = "timestamp", missing: str = "zero",
                 gain: str = "exponential") -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if (isinstance(lambda_, bool) or not isinstance(lambda_, int | float)
                or not math.isfinite(lambda_) or lambda_ < 0):
            raise ValueError(f"lambda must be a number >= 0, got {lambda_!r}")
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, "
                             f"got {missing!r}")
        if gain not in GAINS:
            raise ValueError(f"gain must be one of {', '.join(GAINS)}, got {gain!r}")
        if not isinstance(field, str) or not field:
            raise ValueError(f"field must be a metadata key, got {field!r}")
        self.k = k
        self.lambda_ = float(lambda_)
        self.T = parse_duration(T)
        self.now = None if now is None else parse_time(now)
        self.field = field
        self.missing = missing
        self.gain_kind = gain
        self.name = f"temporal_ndcg@{k}"

    def __repr__(self) -> str:
        return (f"TemporalNDCG(k={self.k}, lambda={self.lambda_}, T={self.T}s, now={self.now}, "
                f"field={self.field!r}, missing={self.missing!r}, gain={self.gain_kind!r})")

    def check_corpus(self, corpus: Sequence[Any]) -> str | None:
        """Why this metric cannot mean anything on ``corpus`` (None: it can): no document
        holds ``field``. Every gain was then the ``missing`` one, a temporal nDCG of 0 (or
        plain nDCG) for every query, from a misspelt field or an undated corpus."""
        if not corpus or any(self.field in d.metadata for d in corpus):
            return None
        keys = sorted({str(k) for d in corpus[:1000] for k in d.metadata})
        shown = (f"their other fields: {', '.join(keys[:10])}{', ...' if len(keys) > 10 else ''}"
                 if keys else "they have no field but id, title and text")
        return (f"{self.name}: no document of the corpus has a {self.field!r} field to date "
                f"it{did_you_mean(self.field, keys)} ({shown}); set the metric's field")

    def _now(self, result: CaseResult) -> float:
        if self.now is not None:
            return self.now
        if result.run_start is not None:
            return result.run_start
        return time.time()

    def gain(self, doc_id: str, grade: int, now: float,
             documents: Mapping[str, Any]) -> float:
        """The decayed gain of one labelled document."""
        if grade <= 0:
            return 0.0
        full = float(grade) if self.gain_kind == "linear" else 2.0 ** grade - 1.0
        doc = documents.get(doc_id)
        raw = None if doc is None else doc.metadata.get(self.field)
        try:
            ts = None if raw is None else parse_time(raw)
        except ValueError:
            ts = None
        if ts is None:
            if self.missing == "error":
                where = "is not in the corpus" if doc is None else (
                    f"has no readable {self.field!r} ({raw!r})")
                raise ValueError(f"{self.name}: document {doc_id!r} {where}")
            return 0.0 if self.missing == "zero" else full
        age = max(0.0, now - ts)
        return full * math.exp(-self.lambda_ * age / self.T)

    def compute(self, case: Query, result: CaseResult) -> float:
        now = self._now(result)
        gains = {d: self.gain(d, g, now, result.documents)
                 for d, g in case.relevant.items() if g > 0}
        dcg = sum(gains.get(d, 0.0) / math.log2(i + 2)
                  for i, d in enumerate(result.ranked[: self.k]))
        ideal = sorted(gains.values(), reverse=True)[: self.k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        return dcg / idcg if idcg > 0 else 0.0
