"""Corpus, query and relevance-label readers.

Formats: the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` with a
header line), TREC qrels (``qid 0 docid grade``), and generic JSONL / JSON / CSV corpora and
query files. Queries may carry their labels inline (``relevant``, ``reference_answer``, ``type``,
``difficulty``, ``tags``). Grade 0 means "judged non-relevant" and is kept as such.

Nothing here imports pytest: every problem is a :class:`~pytest_ragbench.errors.SuiteError`
naming the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SuiteError


@dataclass(frozen=True)
class Document:
    """One corpus entry."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Query:
    """One benchmark query with whatever labels the dataset has for it.

    ``relevant`` maps document ids to graded relevance; grade 0 (or below) is "judged
    non-relevant". An empty mapping with ``judged`` False means the query has no relevance labels.
    """

    id: str
    text: str
    relevant: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)
    judged: bool = False
    reference_answers: tuple[str, ...] = ()
    type: str | None = None
    difficulty: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_relevant(self) -> int:
        return sum(1 for g in self.relevant.values() if g > 0)


@dataclass(frozen=True)
class Dataset:
    """A loaded, validated dataset: the corpus in file order and the selected queries."""

    name: str
    corpus: tuple[Document, ...]
    queries: tuple[Query, ...]
    corpus_hash: str
    content_hash: str

    def doc_ids(self) -> frozenset[str]:
        return frozenset(d.id for d in self.corpus)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how to read it (already resolved against the suite file)."""

    name: str
    source: Path  # the suite file, for error messages
    key: str = "dataset"
    path: Path | None = None  # a BEIR-layout folder
    corpus: Path | None = None
    queries: Path | None = None
    qrels: Path | None = None
    split: str | None = None
    query_ids: tuple[str, ...] | None = None
    max_queries: int | None = None
    answer_field: str | None = None  # dotted path into a query record holding a reference answer
    inline_queries: tuple[Mapping[str, Any], ...] | None = None
    inline_corpus: tuple[Mapping[str, Any], ...] | None = None


_ID_KEYS = ("_id", "id", "doc_id", "docid", "query_id", "qid")
_QUERY_TEXT_KEYS = ("text", "query", "question", "input")
_DOC_TEXT_KEYS = ("text", "contents", "body", "passage")


def _first(record: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    for k in keys:
        if k in record and record[k] is not None:
            return k, record[k]
    return None, None


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` from a JSONL, JSON (list of objects) or CSV file."""
    if not path.is_file():
        raise SuiteError(f"file not found: {path}", file=path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise SuiteError(
            f"unsupported file type {suffix!r} (expected .jsonl, .json, .csv or .tsv)", file=path
        )


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SuiteError(
                    f"malformed JSON line: {exc.msg} at column {exc.colno}", file=path, line=lineno
                ) from None
            if not isinstance(obj, dict):
                raise SuiteError(
                    f"expected a JSON object per line, got {type(obj).__name__}",
                    file=path,
                    line=lineno,
                )
            yield lineno, obj


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SuiteError(f"malformed JSON: {exc.msg}", file=path, line=exc.lineno) from None
    if isinstance(data, dict):
        # {"id": {...}} mapping form
        items: list[Any] = [
            {"_id": k, **v} if isinstance(v, dict) else {"_id": k, "text": v}
            for k, v in data.items()
        ]
    elif isinstance(data, list):
        items = data
    else:
        raise SuiteError("expected a JSON list of objects or an object keyed by id", file=path)
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise SuiteError(
                f"entry {i}: expected an object, got {type(obj).__name__}", file=path
            )
        yield i + 1, obj


def _read_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for row in reader:
            yield reader.line_num, dict(row)


def _require_id(record: Mapping[str, Any], path: Path, line: int, what: str) -> str:
    _, value = _first(record, _ID_KEYS)
    if value is None or str(value).strip() == "":
        raise SuiteError(
            f"{what} has no id (expected one of the keys {', '.join(_ID_KEYS)})",
            file=path,
            line=line,
        )
    return str(value)


def read_corpus(
    records: Iterator[tuple[int, Mapping[str, Any]]] | Sequence[tuple[int, Mapping[str, Any]]],
    path: Path,
) -> tuple[Document, ...]:
    """Build documents from records; duplicate ids and missing text are errors."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, rec in records:
        doc_id = _require_id(rec, path, lineno, "document")
        if doc_id in seen:
            raise SuiteError(
                f"duplicate document id {doc_id!r} (first seen at line {seen[doc_id]})",
                file=path,
                line=lineno,
            )
        seen[doc_id] = lineno
        text_key, text = _first(rec, _DOC_TEXT_KEYS)
        title = rec.get("title") or ""
        if text is None and not title:
            raise SuiteError(
                f"document {doc_id!r} has no text (expected a 'text' or 'title' field)",
                file=path,
                line=lineno,
            )
        meta = {
            k: v for k, v in rec.items() if k not in (*_ID_KEYS, text_key, "title", "metadata")
        }
        if isinstance(rec.get("metadata"), dict):
            meta.update(rec["metadata"])
        docs.append(Document(id=doc_id, text=str(text or ""), title=str(title), metadata=meta))
    if not docs:
        raise SuiteError("the corpus is empty (expected at least one document)", file=path)
    return tuple(docs)


def _parse_relevant(value: Any, path: Path, line: int, qid: str) -> dict[str, int]:
    if isinstance(value, Mapping):
        out: dict[str, int] = {}
        for doc_id, grade in value.items():
            if isinstance(grade, bool) or not isinstance(grade, int | float) or grade != int(grade):
                raise SuiteError(
                    f"query {qid!r}: relevance grade for {doc_id!r} must be an integer, "
                    f"got {grade!r}",
                    file=path,
                    line=line,
                )
            out[str(doc_id)] = int(grade)
        return out
    if isinstance(value, list | tuple):
        return {str(d): 1 for d in value}
    if isinstance(value, str):
        return {d.strip(): 1 for d in value.split(",") if d.strip()}
    raise SuiteError(
        f"query {qid!r}: 'relevant' must be a mapping doc_id -> grade or a list of doc ids, "
        f"got {type(value).__name__}",
        file=path,
        line=line,
    )


def _dotted(record: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = record
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def read_queries(
    records: Iterator[tuple[int, Mapping[str, Any]]] | Sequence[tuple[int, Mapping[str, Any]]],
    path: Path,
    answer_field: str | None = None,
) -> tuple[Query, ...]:
    """Build queries from records, parsing inline labels; duplicate ids are errors."""
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for lineno, rec in records:
        qid = _require_id(rec, path, lineno, "query")
        if qid in seen:
            raise SuiteError(
                f"duplicate query id {qid!r} (first seen at line {seen[qid]})",
                file=path,
                line=lineno,
            )
        seen[qid] = lineno
        text_key, text = _first(rec, _QUERY_TEXT_KEYS)
        if text is None or not str(text).strip():
            raise SuiteError(
                f"query {qid!r} has no text (expected one of {', '.join(_QUERY_TEXT_KEYS)})",
                file=path,
                line=lineno,
            )
        judged = "relevant" in rec
        relevant = _parse_relevant(rec["relevant"], path, lineno, qid) if judged else {}
        answers: list[str] = []
        for key in ("reference_answer", "reference_answers", "answers", "answer"):
            val = rec.get(key)
            if isinstance(val, str) and val.strip():
                answers.append(val)
            elif isinstance(val, int | float) and not isinstance(val, bool):
                answers.append(str(val))
            elif isinstance(val, list):
                answers.extend(str(a) for a in val if str(a).strip())
        if answer_field:
            val = _dotted(rec, answer_field)
            # Real datasets store short answers as numbers too (NQ-UTD: 2023, 0.687).
            vals = val if isinstance(val, list) else [val]
            answers.extend(str(a) for a in vals
                           if isinstance(a, str | int | float) and not isinstance(a, bool)
                           and str(a).strip())
        tags = rec.get("tags") or ()
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        known = {
            *_ID_KEYS, text_key, "relevant", "reference_answer", "reference_answers", "answers",
            "answer", "type", "difficulty", "tags", "metadata",
        }
        meta = {k: v for k, v in rec.items() if k not in known}
        if isinstance(rec.get("metadata"), dict):
            meta.update(rec["metadata"])
        queries.append(
            Query(
                id=qid,
                text=str(text),
                relevant=relevant,
                judged=judged,
                reference_answers=tuple(dict.fromkeys(answers)),
                type=str(rec["type"]) if rec.get("type") not in (None, "") else None,
                difficulty=(
                    str(rec["difficulty"]) if rec.get("difficulty") not in (None, "") else None
                ),
                tags=tuple(str(t) for t in tags),
                metadata=meta,
            )
        )
    return tuple(queries)


@dataclass(frozen=True)
class QrelsRow:
    query_id: str
    doc_id: str
    grade: int
    line: int


def read_qrels(path: Path) -> list[QrelsRow]:
    """Read TREC qrels (``qid iter docid grade``) or BEIR tsv (``qid docid grade`` + header).

    CRLF line endings and a header line are tolerated; anything else malformed is an error
    naming the line.
    """
    if not path.is_file():
        raise SuiteError(f"file not found: {path}", file=path)
    rows: list[QrelsRow] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if len(parts) == 4:
                qid, _, doc_id, grade_s = parts
            elif len(parts) == 3:
                qid, doc_id, grade_s = parts
            else:
                raise SuiteError(
                    f"expected 3 (BEIR: query-id corpus-id score) or 4 (TREC: qid iter docid "
                    f"grade) columns, got {len(parts)}",
                    file=path,
                    line=lineno,
                )
            try:
                grade = int(float(grade_s))
            except ValueError:
                if not rows and lineno == 1:
                    continue  # header line
                raise SuiteError(
                    f"relevance grade must be an integer, got {grade_s!r}", file=path, line=lineno
                ) from None
            rows.append(QrelsRow(qid, doc_id, grade, lineno))
    return rows


def update_hash_with_documents(h: Any, docs: Sequence[Document]) -> None:
    """Feed ids, titles and texts into a hashlib object, length-prefixed so that no two
    corpora collide by concatenation; shared by the dataset hash and the index caches."""
    for d in docs:
        for part in (d.id, d.title, d.text):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)


def _hash_docs(docs: Sequence[Document]) -> str:
    h = hashlib.sha256()
    update_hash_with_documents(h, docs)
    return h.hexdigest()


def _hash_queries(queries: Sequence[Query]) -> str:
    h = hashlib.sha256()
    for q in queries:
        payload = [q.id, q.text, sorted(q.relevant.items()), list(q.reference_answers)]
        h.update(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Read, join and validate a dataset described by ``spec``."""
    corpus_path = spec.corpus
    queries_path = spec.queries
    qrels_path = spec.qrels
    if spec.path is not None:
        if not spec.path.is_dir():
            raise SuiteError(
                f"dataset folder not found: {spec.path}", file=spec.source, key=f"{spec.key}.path"
            )
        corpus_path = corpus_path or spec.path / "corpus.jsonl"
        queries_path = queries_path or spec.path / "queries.jsonl"
        if qrels_path is None and spec.split:
            qrels_path = spec.path / "qrels" / f"{spec.split}.tsv"
            if not qrels_path.is_file():
                available = sorted(p.stem for p in (spec.path / "qrels").glob("*.tsv"))
                raise SuiteError(
                    f"no qrels for split {spec.split!r} at {qrels_path} "
                    f"(available splits: {', '.join(available) or 'none'})",
                    file=spec.source,
                    key=f"{spec.key}.split",
                )
    for what, p in (("corpus", corpus_path), ("queries", queries_path), ("qrels", qrels_path)):
        if p is not None and not p.is_file():
            raise SuiteError(
                f"{what} file not found: {p}", file=spec.source, key=f"{spec.key}.{what}"
            )

    if spec.inline_corpus is not None:
        corpus = read_corpus(list(enumerate(spec.inline_corpus, 1)), spec.source)
    elif corpus_path is not None:
        corpus = read_corpus(read_records(corpus_path), corpus_path)
    else:
        raise SuiteError(
            "no corpus given (expected 'path' to a BEIR folder or 'corpus' to a file)",
            file=spec.source,
            key=spec.key,
        )
    if spec.inline_queries is not None:
        queries = read_queries(list(enumerate(spec.inline_queries, 1)), spec.source,
                               spec.answer_field)
    elif queries_path is not None:
        queries = read_queries(read_records(queries_path), queries_path, spec.answer_field)
    else:
        raise SuiteError(
            "no queries given (expected 'path' to a BEIR folder or 'queries' to a file)",
            file=spec.source,
            key=spec.key,
        )

    doc_ids = {d.id for d in corpus}
    by_id = {q.id: q for q in queries}
    queries_src = queries_path or spec.source
    for q in queries:
        for doc_id in q.relevant:
            if doc_id not in doc_ids:
                raise SuiteError(
                    f"query {q.id!r} labels unknown document {doc_id!r} as relevant",
                    file=queries_src,
                    key="relevant",
                )

    if qrels_path is not None:
        labels: dict[str, dict[str, int]] = {}
        for row in read_qrels(qrels_path):
            if row.query_id not in by_id:
                raise SuiteError(
                    f"qrels row names unknown query {row.query_id!r}", file=qrels_path,
                    line=row.line,
                )
            if row.doc_id not in doc_ids:
                raise SuiteError(
                    f"qrels row names unknown document {row.doc_id!r}", file=qrels_path,
                    line=row.line,
                )
            labels.setdefault(row.query_id, {})[row.doc_id] = row.grade
        # As trec_eval does, only queries present in the qrels are evaluated.
        selected = [
            Query(
                id=q.id, text=q.text, relevant={**q.relevant, **labels[q.id]}, judged=True,
                reference_answers=q.reference_answers, type=q.type, difficulty=q.difficulty,
                tags=q.tags, metadata=q.metadata,
            )
            for q in queries
            if q.id in labels
        ]
    else:
        selected = list(queries)

    if spec.query_ids is not None:
        wanted = set(spec.query_ids)
        unknown = sorted(wanted - {q.id for q in selected})
        if unknown:
            raise SuiteError(
                f"unknown query ids: {', '.join(unknown[:5])}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""),
                file=spec.source,
                key=f"{spec.key}.query_ids",
            )
        selected = [q for q in selected if q.id in wanted]
    if spec.max_queries is not None:
        selected = selected[: spec.max_queries]
    if not selected:
        raise SuiteError(
            "no queries selected (check the split, query_ids and the qrels)",
            file=spec.source,
            key=spec.key,
        )
    corpus_hash = _hash_docs(corpus)
    content_hash = hashlib.sha256(
        (corpus_hash + _hash_queries(selected)).encode("ascii")
    ).hexdigest()
    return Dataset(
        name=spec.name,
        corpus=corpus,
        queries=tuple(selected),
        corpus_hash=corpus_hash,
        content_hash=content_hash,
    )
