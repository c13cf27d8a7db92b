"""A retriever that replays precomputed results from a run file.

Suite syntax::

    retrievers:
      submitted: {type: run, path: runs/bm25.trec}

Formats (``format: auto`` picks JSONL for ``.jsonl``/``.ndjson`` files, TREC otherwise):

``trec``
    one result per line, whitespace separated: ``qid Q0 docid rank score tag``; further
    columns are ignored, as trec_eval ignores them. The rank must be a number but is otherwise
    ignored, as trec_eval ignores it: documents are ordered by score (descending, ties by
    document id descending).
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

The file is parsed at collection (``ragbench_check``), so a malformed one is a single collection
error naming the file, the line and the column: a short or non-numeric line, a non-finite score,
a (query, document) pair listed twice, a file that holds no results or is not UTF-8. A run
deeper than the ``k`` it is asked for gives one :class:`RunDepthWarning` per retriever: only the
top ``k`` are scored.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..datasets import DataFileError, Document, Query, check_file, open_text, trec_number
from ..errors import ParamValueError
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


class RunDepthWarning(UserWarning):
    """A run file holds more results per query than the suite scores (its ``k``)."""


_TREC_COLUMNS = "expected 'qid Q0 docid rank score tag' (6 columns)"


def _score(value: Any, path: Path, line: int) -> float:
    try:
        if isinstance(value, bool) or (isinstance(value, str) and not trec_number(value)):
            raise TypeError
        score = float(value)
    except (TypeError, ValueError, OverflowError):
        raise DataFileError(f"score {value!r} is not a number", file=path, line=line) from None
    if not math.isfinite(score):
        raise DataFileError(f"score {value!r} is not finite (expected a finite number)",
                            file=path, line=line)
    return score


def _check_rank(value: str, path: Path, line: int) -> None:
    # trec_eval ignores the rank, but a non-number there means the columns are shifted.
    try:
        int(value)
    except ValueError:
        try:
            if math.isfinite(float(value)):
                return
        except ValueError:
            pass
        raise DataFileError(f"rank {value!r} is not a number ({_TREC_COLUMNS})",
                            file=path, line=line) from None


def read_trec_run(path: Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from a TREC run file; :class:`DataFileError` names the line.

    Columns after the sixth are ignored, as trec_eval ignores them.
    """
    check_file(path, "run")
    out: dict[str, dict[str, float]] = {}
    last_qid: str | None = None
    docs: dict[str, float] = {}
    # Runs hold hundreds of thousands of lines and are read at collection and again when
    # indexing: the loop does the least per line, and builds messages only on errors.
    with open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.split()
            if len(parts) < 6:
                if not parts:
                    continue
                raise DataFileError(f"{_TREC_COLUMNS}, got {len(parts)}", file=path, line=n)
            qid = parts[0]
            doc = parts[2]
            if qid != last_qid:
                docs = out.setdefault(qid, {})
                last_qid = qid
            if doc in docs:
                raise DataFileError(f"document {doc!r} is listed twice for query {qid!r}",
                                    file=path, line=n)
            try:
                score = float(parts[4])
            except ValueError:
                score = _score(parts[4], path, n)
            # trec_number's test inlined: once per line of a run of millions
            if score - score != 0.0 or not parts[4].isascii() or "_" in parts[4]:
                score = _score(parts[4], path, n)  # inf, nan or not trec_eval's number
            if not parts[3].isdigit():
                _check_rank(parts[3], path, n)
            docs[doc] = score
    if not out:
        raise DataFileError(f"the run file holds no results ({_TREC_COLUMNS} lines)",
                            file=path)
    return out


def _id(value: Any) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        return None
    return str(value)


def _result(item: Any, path: Path, line: int) -> tuple[str, float]:
    if isinstance(item, Mapping):
        doc = item.get("id", item.get("doc_id"))
        score = item.get("score")
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        doc, score = item
    else:
        raise DataFileError(f"a result must be [doc_id, score] or "
                            f"{{\"id\": ..., \"score\": ...}}, got {item!r}", file=path, line=line)
    doc_id = _id(doc)
    if doc_id is None:
        raise DataFileError(f"document id {doc!r} is not a string", file=path, line=line)
    return doc_id, _score(score, path, line)


def read_jsonl_run(path: Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from a JSONL run file; :class:`DataFileError` names the line."""
    check_file(path, "run")
    out: dict[str, dict[str, float]] = {}
    with open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as exc:
                detail = exc.msg if isinstance(exc, json.JSONDecodeError) else (
                    "nested too deeply" if isinstance(exc, RecursionError) else str(exc))
                raise DataFileError(f"malformed JSON line: {detail}", file=path,
                                    line=n) from None
            if not isinstance(rec, Mapping):
                raise DataFileError("expected an object with query_id and results", file=path,
                                    line=n)
            qid = _id(rec.get("query_id", rec.get("qid")))
            results = rec.get("results")
            if qid is None:
                raise DataFileError("missing query_id (expected a string or an integer)",
                                    file=path, line=n)
            if not isinstance(results, list):
                raise DataFileError("'results' must be a list", file=path, line=n)
            if qid in out:
                raise DataFileError(f"query {qid!r} appears twice", file=path, line=n)
            docs: dict[str, float] = {}
            for item in results:
                doc, score = _result(item, path, n)
                if doc in docs:
                    raise DataFileError(f"document {doc!r} is listed twice", file=path, line=n)
                docs[doc] = score
            out[qid] = docs
    if not out:
        raise DataFileError('the run file holds no results (expected lines such as '
                            '{"query_id": "q1", "results": [["d3", 12.5]]})', file=path)
    return out


def read_run(path: Path, format: str) -> dict[str, dict[str, float]]:
    """The run at ``path`` in ``format`` (``auto`` picks by the file's suffix)."""
    if format == "auto":
        format = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "trec"
    return read_jsonl_run(path) if format == "jsonl" else read_trec_run(path)


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
        self._depth = 0
        self._warned = False

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: valid options and a well-formed run file.

        The file is parsed here and again when indexing: a malformed line is then one
        collection error instead of the same error repeated for every case.
        """
        path = params.get("path")
        fmt = params.get("format", "auto")
        _validate(path, fmt, params.get("missing", "error"), params.get("unknown_docs", "keep"))
        assert isinstance(path, str)
        resolved = _resolve(path, context.base_dir)
        if not resolved.exists() and not resolved.is_symlink():
            raise ValueError(f"run file not found: {resolved}")
        read_run(resolved, fmt)

    def describe(self) -> dict[str, Any]:
        return {"retriever": "run", "path": str(self.path), "format": self.format,
                "queries": None if self._run is None else len(self._run)}

    def index(self, corpus: Sequence[Document]) -> None:
        """Read the run file (results for unknown documents dropped if asked)."""
        run = read_run(self.path, self.format)
        if self.unknown_docs == "drop":
            known = {d.id for d in corpus}
            run = {q: {d: s for d, s in docs.items() if d in known} for q, docs in run.items()}
        self._run = run
        self._depth = max((len(docs) for docs in run.values()), default=0)

    def retrieve_case(self, query: Query, k: int) -> list[tuple[str, float]]:
        """The top ``k`` results the file holds for ``query.id``."""
        if self._run is None:
            raise RuntimeError("index() must be called before retrieve_case()")
        if self._depth > k and not self._warned:
            self._warned = True
            warnings.warn(RunDepthWarning(
                f"run file {self.path} holds up to {self._depth} results per query, deeper "
                f"than k={k}: only the top {k} of each query are scored"), stacklevel=2)
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
    """ParamValueError naming every parameter at fault (a missing path hid a bad format)."""
    problems = []
    if not isinstance(path, str) or not path:
        problems.append(ParamValueError.at("path", f"must be the run file's path, got {path!r}"))
    for name, value, allowed in (("format", fmt, FORMATS), ("missing", missing, MISSING),
                                 ("unknown_docs", unknown_docs, UNKNOWN_DOCS)):
        if value not in allowed:
            problems.append(ParamValueError.at(
                name, f"must be one of {', '.join(allowed)}, got {value!r}"))
    if problems:
        raise ParamValueError.combine(problems)
