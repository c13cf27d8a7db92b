"""The text a failing or erroring case shows in pytest's report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHOWN_HITS = 10


def _num(value: Any) -> str:
    return "nan" if value is None else f"{value:.4f}"


def format_case_failure(rec: Mapping[str, Any]) -> str:
    """Query text, the top retrieved ids with grades, missed relevant ids, and what failed."""
    lines = [f"query {rec['case_id']} ({rec['retriever']}): {rec.get('query')!r}"]
    err = rec.get("error")
    if err:
        lines.append(f"error [{err['stage']}]: {err['message']}")
        return "\n".join(lines)
    for t in rec.get("thresholds", []):
        if t["passed"] is False:
            lines.append(
                f"threshold failed: {t['metric']} = {_num(t['value'])}, expected "
                f"{t['op']} {t['threshold']:g} (missed by {abs(t['margin']):.4f})"
            )
    metrics = ", ".join(f"{k}={_num(v)}" for k, v in rec.get("metrics", {}).items())
    lines.append(f"metrics: {metrics}")
    retrieved = rec.get("retrieved", [])
    lines.append(f"top {min(SHOWN_HITS, len(retrieved))} retrieved (rank, doc id, score, grade):")
    for rank, (doc_id, score, grade) in enumerate(retrieved[:SHOWN_HITS], 1):
        g = "unjudged" if grade is None else f"grade {grade}"
        lines.append(f"  {rank:>3}. {doc_id}  {_num(score)}  {g}")
    if not retrieved:
        lines.append("  (nothing retrieved)")
    missed = rec.get("missed", [])
    if missed:
        shown = ", ".join(f"{d} (grade {g})" for d, g in missed[:SHOWN_HITS])
        more = f" and {len(missed) - SHOWN_HITS} more" if len(missed) > SHOWN_HITS else ""
        lines.append(f"relevant but not retrieved: {shown}{more}")
    return "\n".join(lines)
