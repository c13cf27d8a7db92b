"""A retriever that replays precomputed results from a run file.

Suite syntax::

    retrievers:
      submitted: {type: run, path: runs/bm25.trec}

Formats (``format: auto`` picks JSONL for ``.jsonl``/``.ndjson`` files, TREC otherwise):

``trec``
    one result per line, whitespace separated: ``qid Q0 docid rank score tag``. The rank
    column is ignored, as trec_eval ignores it: documents are ordered by score (descending,
    ties by document id descending).
``jsonl``
    one query per line: ``{"query_id": "q1", "results": [["d3", 12.5], ["d1", 9.0]]}``;
    ``qid`` is accepted for ``query_id``, and a result may be an object
    ``{"id": "d3", "score": 12.5}`` (``doc_id`` for ``id``).

A run file answers by query *id*, so this retriever implements ``retrieve_case(query, k)``,
which the plugin calls in preference to ``retrieve(text, k)`` when a retriever has it.
``missing`` says what a query absent from the file gets: ``"error"`` (default: the item errors,
naming the query) or ``"empty"`` (no results: every metric 0, as ``trec_eval -c``).
``unknown_docs: drop`` removes results naming documents that are not in the corpus (a run made
on a larger collection); by default they are kept, and the plugin reports them as errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..datasets import Document, Query
from ..metrics.retrieval import trec_order
from ..registry import BuildContext

FORMATS = ("auto", "trec", "jsonl")
MISSING = ("error", "empty")
UNKNOWN_DOCS = ("keep", "drop")


def _resolve(path: str | Path, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def _score(value: Any, where: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise ValueError(f"{where}: score {value!r} is not finite")
    return score


def read_trec_run(path: Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from a TREC run file; ValueError names the line."""
    out: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.split()
            where = f"{path}:{n}"
            if len(parts) != 6:
                raise ValueError(f"{where}: expected 'qid Q0 docid rank score tag' (6 columns), "
                                 f"got {len(parts)}")
            qid, _, doc, _, score, _ = parts
            docs = out.setdefault(qid, {})
            if doc in docs:
                raise ValueError(f"{where}: document {doc!r} is listed twice for query {qid!r}")
            docs[doc] = _score(score, where)
    return out


def _result(item: Any, where: str) -> tuple[str, float]:
    if isinstance(item, Mapping):
        doc = item.get("id", item.get("doc_id"))
        score = item.get("score")
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        doc, score = item
    else:
        raise ValueError(f"{where}: a result must be [doc_id, score] or "
                         f"{{\"id\": ..., \"score\": ...}}, got {item!r}")
    if not isinstance(doc, str | int) or isinstance(doc, bool):
        raise ValueError(f"{where}: document id {doc!r} is not a string")
    return str(doc), _score(score, where)


def read_jsonl_run(path: Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from a JSONL run file; ValueError names the line."""
    out: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: malformed JSON line: {exc.msg}") from None
            if not isinstance(rec, Mapping):
                raise ValueError(f"{where}: expected an object with query_id and results")
            qid = rec.get("query_id", rec.get("qid"))
            results = rec.get("results")
            if not isinstance(qid, str | int) or isinstance(qid, bool):
                raise ValueError(f"{where}: missing query_id")
            if not isinstance(results, list):
                raise ValueError(f"{where}: 'results' must be a list")
            qid = str(qid)
            if qid in out:
                raise ValueError(f"{where}: query {qid!r} appears twice")
            docs: dict[str, float] = {}
            for item in results:
                doc, score = _result(item, where)
                if doc in docs:
                    raise ValueError(f"{where}: document {doc!r} is listed twice")
                docs[doc] = score
            out[qid] = docs
    return out


class RunFileRetriever:
    """Replays a TREC or JSONL run file (module docs); a ``Retriever`` with ``retrieve_case``."""

    def __init__(self, *, path: str, format: str = "auto", missing: str = "error",
                 unknown_docs: str = "keep", base_dir: Path | None = None) -> None:
        _validate(path, format, missing, unknown_docs)
        self.path = _resolve(path, base_dir)
        self.format = format if format != "auto" else (
            "jsonl" if self.path.suffix.lower() in (".jsonl", ".ndjson") else "trec")
        self.missing = missing
        self.unknown_docs = unknown_docs
        self._run: dict[str, dict[str, float]] | None = None

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: valid options and an existing file (parsed only when indexing)."""
        path = params.get("path")
        _validate(path, params.get("format", "auto"), params.get("missing", "error"),
                  params.get("unknown_docs", "keep"))
        assert isinstance(path, str)
        resolved = _resolve(path, context.base_dir)
        if not resolved.is_file():
            raise ValueError(f"run file not found: {resolved}")

    def describe(self) -> dict[str, Any]:
        return {"retriever": "run", "path": str(self.path), "format": self.format,
                "queries": None if self._run is None else len(self._run)}

    def index(self, corpus: Sequence[Document]) -> None:
        """Read the run file (results for unknown documents dropped if asked)."""
        run = read_jsonl_run(self.path) if self.format == "jsonl" else read_trec_run(self.path)
        if self.unknown_docs == "drop":
            known = {d.id for d in corpus}
            run = {q: {d: s for d, s in docs.items() if d in known} for q, docs in run.items()}
        self._run = run

    def retrieve_case(self, query: Query, k: int) -> list[tuple[str, float]]:
        """The top ``k`` results the file holds for ``query.id``."""
        if self._run is None:
            raise RuntimeError("index() must be called before retrieve_case()")
        docs = self._run.get(query.id)
        if docs is None:
            if self.missing == "empty":
                return []
            raise LookupError(f"query {query.id!r} is not in run file {self.path} "
                              "(missing: empty scores it 0)")
        ranked = trec_order(list(docs.items()))[:k]
        return [(d, docs[d]) for d in ranked]

    def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        """Not possible from a text alone: a run file is keyed by query id."""
        raise TypeError("the run retriever answers by query id; call retrieve_case(query, k)")


def _validate(path: Any, fmt: Any, missing: Any, unknown_docs: Any) -> None:
    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be the run file's path, got {path!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {', '.join(MISSING)}, got {missing!r}")
    if unknown_docs not in UNKNOWN_DOCS:
        raise ValueError(f"unknown_docs must be one of {', '.join(UNKNOWN_DOCS)}, "
                         f"got {unknown_docs!r}")
