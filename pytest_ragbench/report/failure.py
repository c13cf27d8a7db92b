"""The text a failing or erroring case shows in pytest's report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..results.gates import bound_text
from .format import num as _num

SHOWN_HITS = 10


def format_case_failure(rec: Mapping[str, Any]) -> str:
    """Query text, what failed, the top retrieved ids with grades, the rank of every relevant
    document retrieved (below the top shown too) and the relevant ids not retrieved."""
    lines = [f"query {rec['case_id']} ({rec['retriever']}): {rec.get('query')!r}"]
    err = rec.get("error")
    if err:
        lines.append(f"error [{err['stage']}]: {err['message']}")
        return "\n".join(lines)
    for t in rec.get("thresholds", []):
        if t["passed"] is False:
            scope = f"[{t['scope']}] " if t.get("scope") else ""
            lines.append(
                f"threshold failed: {scope}{t['metric']} = {_num(t['value'])}, expected "
                f"{t['op']} {bound_text(t['threshold'])} (missed by {_num(abs(t['margin']))})"
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
    if rec.get("answer") is not None:
        answer = " ".join(str(rec["answer"]).split())
        lines.append(f"answer: {answer[:300]}{'...' if len(answer) > 300 else ''}")
    for metric, verdict in (rec.get("judge") or {}).items():
        lines.extend(_judge_lines(metric, verdict))
    ranks = rec.get("relevant_ranks") or {}
    ranked = [(d, r) for d, r in ranks.items() if r is not None]
    if ranked:
        # The whole ranking, not only the top shown above: a relevant document at rank 57 of a
        # top 100 explains a recall@100 of 1 next to an nDCG@10 of 0.
        shown = ", ".join(f"{d} at {r}" for d, r in ranked[:SHOWN_HITS])
        more = f" and {len(ranked) - SHOWN_HITS} more" if len(ranked) > SHOWN_HITS else ""
        lines.append(f"relevant documents by rank: {shown}{more}")
    missed = rec.get("missed", [])
    if missed:
        shown = ", ".join(f"{d} (grade {g})" for d, g in missed[:SHOWN_HITS])
        # missed is cut at the record depth; the ranks, when recorded, count them all
        n_missed = (len(ranks) - len(ranked)) if ranks else len(missed)
        more = f" and {n_missed - SHOWN_HITS} more" if n_missed > SHOWN_HITS else ""
        lines.append(f"relevant but not retrieved: {shown}{more}")
    return "\n".join(lines)


def _judge_lines(metric: str, verdict: Any) -> list[str]:
    """The judge's negative verdicts (and their reasons) for one metric, briefly."""
    if not isinstance(verdict, Mapping):
        return []
    if verdict.get("skipped") or verdict.get("error"):
        return [f"judge {metric}: {verdict.get('skipped') or verdict.get('error')}"]
    out = []
    for claim in verdict.get("claims") or []:
        if not isinstance(claim, Mapping):
            continue
        flags = [k for k in ("supported", "attributed", "in_reference", "in_answer")
                 if claim.get(k) in (0, False)]
        if flags:
            why = f" ({claim['why']})" if claim.get("why") else ""
            out.append(f"judge {metric}: not {'/'.join(flags)}: {claim.get('claim')!r}{why}")
    return out[:SHOWN_HITS]
