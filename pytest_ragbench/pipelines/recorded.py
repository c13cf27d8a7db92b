"""A pipeline that replays outputs produced elsewhere (offline evaluation).

Suite syntax::

    pipelines:
      last-night:
        type: recorded
        path: outputs/answers.jsonl     # relative to the suite file

The file holds one output per query, in the contract of
:mod:`pytest_ragbench.pipelines.contract` plus the query's id:

* JSONL (one object per line) or JSON (a list of objects, or an object keyed by query id)::

      {"query_id": "q1", "answer": "Paris", "contexts": [{"id": "d3", "text": "..."}],
       "usage": {"prompt_tokens": 812, "completion_tokens": 9, "cost": 0.0002}}

* CSV/TSV with columns ``query_id`` and ``answer``, and optionally ``contexts`` (a JSON list as
  in the JSON form, or context ids separated by ``|``), ``prompt_tokens``,
  ``completion_tokens``, ``cost`` and ``latency_ms``.

``id``/``qid``/``_id`` are accepted for ``query_id``. The file is read and checked when the
suite is collected: a line outside the contract or a query id given twice is an error naming
the file and line; ids that match no query of the suite are an error listing them (set
``ignore_unknown: true`` when the file covers more queries than the suite selects); a query
the file has no output for is an error record of that case, saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..datasets import DataFileError, Query, check_file, read_records
from ..registry import BuildContext
from .contract import OutputError, PipelineOutput, normalise_output

_ID_KEYS = ("query_id", "qid", "id", "_id")
_SHOWN = 5


class RecordedOutputError(LookupError):
    """The recorded file has no output for a query."""


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _count(text: str) -> float | int:
    """A token count as written: ``812``, or ``812.0`` as pandas writes a column of counts
    with a gap (the contract then checks it is a whole number)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _csv_row(row: Mapping[str, Any], file: Path, line: int) -> dict[str, Any]:
    """A CSV row (all text) in the JSON shape of the contract."""
    out: dict[str, Any] = {"answer": row.get("answer")}
    raw = (row.get("contexts") or "").strip()
    if raw.startswith("["):
        try:
            out["contexts"] = json.loads(raw)
        except ValueError as exc:
            raise DataFileError(f"column 'contexts' is not a JSON list: {exc}", file=file,
                                line=line) from None
    elif raw:
        out["contexts"] = [{"id": part.strip()} for part in raw.split("|") if part.strip()]
    usage: dict[str, Any] = {}
    for key in ("prompt_tokens", "completion_tokens", "cost", "latency_ms"):
        text = (row.get(key) or "").strip()
        if not text:
            continue
        try:
            value: float | int = _count(text) if key.endswith("tokens") else float(text)
        except ValueError:
            raise DataFileError(f"column {key!r} must be a number, got {text!r}", file=file,
                                line=line) from None
        if key == "latency_ms":
            out[key] = value
        else:
            usage[key] = value
    if usage:
        out["usage"] = usage
    return out


def read_outputs(path: Path) -> dict[str, PipelineOutput]:
    """Query id -> output of a recorded file; :class:`DataFileError` naming file and line."""
    outputs: dict[str, PipelineOutput] = {}
    lines: dict[str, int] = {}
    tabular = path.suffix.lower() in (".csv", ".tsv")
    for line, rec in read_records(path):
        qid = next((rec[k] for k in _ID_KEYS if rec.get(k) not in (None, "")), None)
        if qid is None or isinstance(qid, bool) or not isinstance(qid, str | int):
            raise DataFileError("expected a 'query_id' (a string) in every output",
                                file=path, line=line)
        qid = str(qid)
        if qid in outputs:
            raise DataFileError(f"query id {qid!r} has two outputs (first at line "
                                f"{lines[qid]})", file=path, line=line)
        data = _csv_row(rec, path, line) if tabular else rec
        try:
            outputs[qid] = normalise_output(data)
        except OutputError as exc:
            raise DataFileError(f"output of query {qid!r}: {exc}", file=path,
                                line=line) from None
        lines[qid] = line
    if not outputs:
        raise DataFileError("no outputs (expected one per query)", file=path)
    return outputs


class RecordedPipeline:
    """Answers each query with the output recorded for it in a file (see the module docs)."""

    def __init__(self, *, path: str, ignore_unknown: bool = False,
                 base_dir: Path | None = None) -> None:
        self.path = _resolve(path, base_dir)
        self.ignore_unknown = ignore_unknown
        self.outputs = read_outputs(self.path)

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: the file exists and is readable (its content is read at build)."""
        path = params.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"path must name the recorded outputs file, got {path!r}")
        check_file(_resolve(path, context.base_dir), "recorded outputs")

    def __repr__(self) -> str:
        return f"RecordedPipeline(path={str(self.path)!r}, outputs={len(self.outputs)})"

    def check_queries(self, queries: Sequence[Query]) -> list[str]:
        """Problems of the file against the suite's queries (unknown ids), for collection."""
        if self.ignore_unknown:
            return []
        known = {q.id for q in queries}
        unknown = [qid for qid in self.outputs if qid not in known]
        if not unknown:
            return []
        shown = ", ".join(repr(u) for u in unknown[:_SHOWN])
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        return [f"{self.path}: {len(unknown)} output(s) match no query of the suite: "
                f"{shown}{more} (set ignore_unknown: true if the file covers more queries "
                "than the suite selects)"]

    def answer(self, query: Query) -> PipelineOutput:
        """The recorded output of ``query``."""
        try:
            return self.outputs[query.id]
        except KeyError:
            raise RecordedOutputError(
                f"{self.path} has no output for query {query.id!r} "
                f"({len(self.outputs)} output(s) recorded)") from None
