"""Result files of a run: per-case JSONL (appended live), per-case CSV, summary JSON, Markdown."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from ..records import case_outcome, dumps_json, record_key, xfail_reason
from ..results.runfolder import CASES_JSONL, RUN_JSON, SUMMARY_JSON, read_jsonl, run_start_doc
from .markdown import summary_markdown

CASES_CSV = "cases.csv"
SUMMARY_MD = "summary.md"

__all__ = ["CASES_CSV", "CASES_JSONL", "RUN_JSON", "SUMMARY_JSON", "SUMMARY_MD",
           "JsonlAppender", "read_jsonl", "run_start_doc", "summary_markdown",
           "write_cases_csv", "write_json"]


class JsonlAppender:
    """Appends one JSON line per record and flushes it, so a crashed or killed run loses no
    finished case."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[str] | None = path.open("a", encoding="utf-8")

    def append(self, record: Mapping[str, Any]) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path} is closed")
        self._fh.write(dumps_json(record, ensure_ascii=False) + "\n")
        # flush hands the line to the OS, which keeps it when this process crashes or is
        # killed; an fsync per case (only power loss needs it) would cost milliseconds each.
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps_json(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


#: What a spreadsheet reads as the start of a formula (or a DDE call) in a cell.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> str:
    """A text cell that a spreadsheet shows as text: one starting like a formula gets a
    leading ``'`` (ids, names, tags and messages come from datasets and components, which may
    be anyone's; ``=cmd|' /C calc'!A0`` in a tag ran as a formula)."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_cases_csv(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """One row per case: identity, status, every metric (blank = NaN), latency, error, and
    how pytest reported the case.

    ``status`` is the case's own verdict ("failed" below a threshold); ``outcome`` is what to
    count ("xfailed" for a known failure of the suite, see :func:`records.case_outcome`) and
    ``xfail_reason`` the suite's reason. Both come last so positional readers keep working.
    """
    recs = sorted(records, key=record_key)
    metric_names: list[str] = []
    for r in recs:
        for m in r.get("metrics", {}):
            if m not in metric_names:
                metric_names.append(m)
    # latency_ms listed as a suite metric is already a metric column, with the same value:
    # a second column of that name would make the header ambiguous for readers keyed by name.
    latency = [] if "latency_ms" in metric_names else ["latency_ms"]
    cols = ["suite", "retriever", "case_id", "run", "status", "type", "difficulty", "tags",
            *metric_names, *latency, "n_relevant", "error", "outcome", "xfail_reason"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([csv_text(c) for c in cols])
        for r in recs:
            m = r.get("metrics", {})
            w.writerow([
                csv_text(r["suite"]), csv_text(r["retriever"]), csv_text(r["case_id"]),
                r.get("run", 0), r.get("status"),
                csv_text(r.get("type") or ""), csv_text(r.get("difficulty") or ""),
                csv_text(";".join(r.get("tags") or [])),
                *["" if m.get(n) is None else repr(float(m[n])) for n in metric_names],
                *(["" if r.get("latency_ms") is None else r["latency_ms"]] if latency else []),
                "" if r.get("n_relevant") is None else r["n_relevant"],
                csv_text((r.get("error") or {}).get("message", "")),
                case_outcome(r),
                csv_text(xfail_reason(r) or ""),
            ])
    tmp.replace(path)
