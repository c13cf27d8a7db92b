"""Corpus, query and relevance-label readers.

Formats: the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` with a
header line), TREC qrels (``qid 0 docid grade``), and generic JSONL / JSON / CSV corpora and
query files. Queries may carry their labels inline (``relevant``, ``reference_answer``, ``type``,
``difficulty``, ``tags``). Grade 0 means "judged non-relevant" and is kept as such.

Nothing here imports pytest: every problem is a :class:`~pytest_ragbench.errors.SuiteError`
(for a data file's content, its subclass :class:`DataFileError`) naming the file, the line,
the field and what was expected, which the plugin shows as one collection error. Files must be
UTF-8 (a BOM is skipped; UTF-16/UTF-32 and other bytes are named as such) regular files;
directories, pipes, devices, symlink loops and unreadable files are refused before reading.

Labels follow trec_eval where it has a rule: grades are integers (``1.0`` reads as 1, ``1.5``,
``inf`` and ``nan`` are errors); a qrels row repeating a (query, document) pair is dropped when
it repeats the grade and an error when it changes it. A qrels row naming a query the queries
file lacks is an error where trec_eval ignores it: it means the wrong split, folder or file, and
evaluating anyway would give scores for a different benchmark than the one named.

A label (a qrels row, or a query's inline ``relevant``) naming a document the corpus lacks is an
error too by default, for the same reason (and it catches a typo). trec_eval never sees the
corpus: it counts such a label as relevant and never retrieved, and BEIR's published numbers
include them, for datasets whose qrels name documents their corpus left out (ArguAna, and
others: beir-cellar/beir issues #101 and #172). The dataset's ``unknown_documents`` runs them:
``keep`` scores them as trec_eval does (in recall's and nDCG's ideal, never retrievable),
``drop`` ignores the label. Each query lists them in ``unknown_labels``, for every output to
say how many were kept or dropped.
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import math
import numbers
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from ..errors import SuiteError


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
    #: The line of its record in the file it was read from (the suite file's for an inline
    #: query), for the errors found once the corpus is known; None where there is none.
    line: int | None = field(default=None, compare=False, hash=False, repr=False)
    #: The documents its labels name that the corpus lacks, kept in ``relevant`` or dropped
    #: from it as the dataset's ``unknown_documents`` says (under "error" loading fails).
    unknown_labels: tuple[str, ...] = field(default=(), compare=False, hash=False, repr=False)

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
    #: Every query id the dataset holds, selected or not (a suite's ``xfail`` may name a
    #: query its selection leaves out, not one the dataset lacks); empty when not known.
    all_query_ids: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: SHA-256 of the selected queries' ids and relevance labels alone: with ``corpus_hash``
    #: and ``content_hash`` it tells which part of two datasets differs (corpus, labels or
    #: query texts); "" where not computed.
    labels_hash: str = field(default="", compare=False, repr=False)
    #: The ``unknown_documents`` setting it was read with; the queries' ``unknown_labels``
    #: say which labels it kept or dropped.
    unknown_documents: str = field(default="error", compare=False, repr=False)

    def unknown_label_count(self) -> int:
        """How many labels of the selected queries name a document the corpus lacks."""
        return sum(len(q.unknown_labels) for q in self.queries)

    def digests(self) -> dict[str, str]:
        """The dataset's digests by part (``corpus``, ``labels``, ``content``), plain strings
        for comparing one host's copy with another's."""
        return {"corpus": self.corpus_hash, "labels": self.labels_hash,
                "content": self.content_hash}

    def doc_ids(self) -> frozenset[str]:
        return frozenset(d.id for d in self.corpus)


@dataclass(frozen=True)
class HfPart:
    """One part (corpus, queries or qrels) of a Hugging Face dataset, resolved by the loader."""

    path: str  # a hub name, or an absolute local path when ``local``
    local: bool
    config: str | None = None
    split: str | None = None
    columns: tuple[tuple[str, str], ...] = ()  # (our field, the dataset's column)
    key: str = "dataset.hf"  # the suite entry, for messages


@dataclass(frozen=True)
class HfSpec:
    """A dataset read with the Hugging Face ``datasets`` library, offline."""

    corpus: HfPart
    queries: HfPart
    qrels: HfPart | None = None
    cache_dir: Path | None = None


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
    #: The suite file's line of each inline query and document, for error messages.
    inline_query_lines: tuple[int | None, ...] = field(default=(), compare=False)
    inline_corpus_lines: tuple[int | None, ...] = field(default=(), compare=False)
    hf: HfSpec | None = None
    ir_datasets: str | None = None  # an ir_datasets id, e.g. "beir/nfcorpus/test"
    #: No corpus is an empty corpus (a suite of pipelines that needs no documents).
    corpus_optional: bool = False
    #: What a label naming a document the corpus lacks does: one of
    #: :data:`UNKNOWN_DOCUMENTS` (see the module docs).
    unknown_documents: str = "error"
    #: The suite file's line of each key below ``key`` (``"dataset.query_ids"``), for the
    #: errors only reading the dataset finds (an unknown query id).
    key_lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def has_qrels(self) -> bool:
        """Whether the relevance labels come from a qrels file or part (not the queries)."""
        if self.hf is not None:
            return self.hf.qrels is not None
        return (self.ir_datasets is not None or self.qrels is not None
                or (self.path is not None and self.split is not None))

    def part_source(self, part: str) -> str:
        """Where the ``corpus``, ``queries`` or ``qrels`` of this dataset are read from, for
        messages: a file's path, the suite file for inline data, a library's dataset name."""
        if self.hf is not None:
            hf_part = {"corpus": self.hf.corpus, "queries": self.hf.queries}.get(
                part, self.hf.qrels or self.hf.queries)
            return f"Hugging Face dataset {hf_part.path} ({hf_part.key})"
        if self.ir_datasets is not None:
            return f"ir_datasets dataset {self.ir_datasets}"
        inline = {"corpus": self.inline_corpus, "queries": self.inline_queries}.get(part)
        if inline is not None:
            return f"the inline {part} of {self.source}"
        given = {"corpus": self.corpus, "queries": self.queries, "qrels": self.qrels}[part]
        if given is None and self.path is not None and (part != "qrels" or self.split):
            given = (self.path / "qrels" / f"{self.split}.tsv" if part == "qrels"
                     else self.path / f"{part}.jsonl")
        return f"{part} file {given}" if given is not None else f"the {part} of {self.source}"

    def line_of(self, key: str) -> int | None:
        """The suite file's line of ``key``, else of the nearest key above it that has one
        (``dataset.path`` of ``dataset: ../nfcorpus`` is on the line of ``dataset``)."""
        while key:
            if key in self.key_lines:
                return self.key_lines[key]
            key = key.rpartition(".")[0]
        return None


#: The values of ``unknown_documents``: a label naming a document the corpus lacks is an
#: error, kept (relevant and never retrievable, as trec_eval and BEIR score it) or dropped.
UNKNOWN_DOCUMENTS = ("error", "keep", "drop")

#: The keys a document's and a query's id are read from, first found first: a query's
#: ``doc_id`` (the document a QA record was written from) is its metadata, not its id.
DOC_ID_KEYS = ("_id", "id", "doc_id", "docid")
QUERY_ID_KEYS = ("_id", "id", "query_id", "qid")
#: The keys either's id may be read from.
ID_KEYS = tuple(dict.fromkeys((*DOC_ID_KEYS, *QUERY_ID_KEYS)))
#: The keys both's id may be read from.
SHARED_ID_KEYS = tuple(k for k in DOC_ID_KEYS if k in QUERY_ID_KEYS)
#: The fields of a query record holding its reference answers (a string, a number or a list).
ANSWER_KEYS = ("reference_answer", "reference_answers", "answers", "answer")
_QUERY_TEXT_KEYS = ("text", "query", "question", "input")
_DOC_TEXT_KEYS = ("text", "contents", "body", "passage")


def _first(record: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    for k in keys:
        if k in record and record[k] is not None:
            return k, record[k]
    return None, None


class DataFileError(SuiteError, ValueError):
    """A data file (corpus, queries, qrels or a run file) that cannot be read or parsed.

    A :class:`SuiteError`, so it reaches the user as one collection error naming the file and
    line; also a ``ValueError``, so a component's ``ragbench_check`` that reads a file reports it
    the same way.
    """


# Bytes read ahead to recognise UTF-16/UTF-32 files, which decode as UTF-8 without error
# when the text is ASCII (every other byte NUL) and would otherwise give baffling messages.
_SNIFF_BYTES = 4096
# trec_eval stores grades in a C long; a bound also keeps gains finite as floats.
_MAX_GRADE = 2**31 - 1

_ID_TYPES = (str, int)
_SCALAR_TYPES = (str, int, float)
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
               bool: "boolean", type(None): "null"}


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    return exc.strerror or str(exc)


def trec_number(text: str) -> bool:
    """Whether ``text`` reads as the same number for Python and for trec_eval's C reader:
    Python also reads digit grouping ("1_0" is 10, trec_eval's 1) and other scripts' digits
    ("\u0663" is 3, trec_eval's 0)."""
    return text.isascii() and "_" not in text


def check_file(
    path: Path, what: str, *, source: Path | None = None, key: str | None = None
) -> None:
    """Raise :class:`DataFileError` unless ``path`` is an existing regular file.

    Anything else (a directory, a FIFO or device that would block or never end, a dangling
    symlink or a symlink loop) is refused before it is opened. The error names ``source`` and
    ``key`` (the suite entry) when given, else the path itself.
    """
    file, where = (source, key) if source is not None else (path, None)
    # The path is in the message only when the error names the suite entry instead.
    subject = f"{what} file {path}" if source is not None else f"{what} file"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataFileError(f"{what} file not found: {path}" if source is not None
                            else f"{what} file not found", file=file, key=where) from None
    except OSError as exc:
        raise DataFileError(f"{subject}: {_os_reason(exc)} (expected a readable file)",
                            file=file, key=where) from None
    if stat.S_ISDIR(mode):
        raise DataFileError(f"{subject} is a directory (expected a file)", file=file, key=where)
    if not stat.S_ISREG(mode):
        raise DataFileError(f"{subject} is not a regular file (expected a file; pipes and "
                            "devices are not read)", file=file, key=where)


def _sniff_encoding(head: bytes, path: Path) -> None:
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        found = "UTF-32"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        found = "UTF-16"
    elif b"\x00" in head:
        line = head[: head.index(b"\x00")].count(b"\n") + 1
        raise DataFileError("NUL byte: the file looks like UTF-16 or binary, expected UTF-8 "
                            "text (re-save it as UTF-8)", file=path, line=line)
    else:
        return
    raise DataFileError(f"the file is {found} (it starts with a {found} byte order mark), "
                        "expected UTF-8 text (re-save it as UTF-8)", file=path, line=1)


def _decode_error(path: Path) -> DataFileError:
    """The error for a file that failed to decode, with the line and byte found by re-reading
    it; only this error path pays for the second read."""
    try:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return DataFileError(
                        f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
                        "(expected UTF-8 text; re-save the file as UTF-8, it may be Latin-1 or "
                        "Windows-1252)", file=path, line=lineno)
    except OSError as exc:
        return DataFileError(f"cannot read the file: {_os_reason(exc)}", file=path)
    return DataFileError("the file is not valid UTF-8 (expected UTF-8 text)", file=path)


@contextmanager
def open_text(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """Open ``path`` as UTF-8 text (a BOM is skipped); every failure, while opening or while
    reading inside the ``with`` block, becomes a :class:`DataFileError` naming the file."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise DataFileError(f"cannot open the file: {_os_reason(exc)} (expected a readable "
                            "file)", file=path) from None
    with raw:
        try:
            _sniff_encoding(raw.read(_SNIFF_BYTES), path)
            raw.seek(0)
            yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline)
        except UnicodeDecodeError:
            raise _decode_error(path) from None
        except OSError as exc:
            raise DataFileError(f"cannot read the file: {_os_reason(exc)}", file=path) from None


def read_records(path: Path, *, id_keys: Sequence[str] = (), unique_keys: bool = False
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` from a JSONL, JSON (list of objects) or CSV file.

    ``id_keys``: a CSV or TSV header naming none of these columns is an error at its line (a
    file without a header row, whose first record would be taken for one). ``unique_keys``:
    a JSON object giving a key twice (``"relevant": {"d1": 2, "d1": 0}``, which JSON readers
    take as its last) is an error at its record's line; it costs time per record.
    """
    check_file(path, "data")
    suffix = path.suffix.lower()
    hook = _unique_pairs if unique_keys else None
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, hook)
    elif suffix == ".json":
        yield from _read_json(path, hook)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",", id_keys=id_keys)
    else:
        raise DataFileError(
            f"unsupported file type {suffix!r} (expected .jsonl, .json, .csv or .tsv)", file=path
        )


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)  # e.g. an integer literal longer than Python's digit limit


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in a JSON object (expected each key once; "
                         "JSON readers keep the last one's value)")
        self.lineno: int | None = None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's ``object_pairs_hook`` refusing a key given twice."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_PairsHook = Callable[[list[tuple[str, Any]]], dict[str, Any]] | None


def _read_jsonl(path: Path, hook: _PairsHook = None) -> Iterator[tuple[int, dict[str, Any]]]:
    loads = json.loads if hook is None else json.JSONDecoder(object_pairs_hook=hook).decode
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except _DuplicateKey as exc:
                raise DataFileError(str(exc), file=path, line=lineno) from None
            except (ValueError, RecursionError) as exc:
                raise DataFileError(
                    f"malformed JSON line: {_json_error(exc)}", file=path, line=lineno
                ) from None
            if not isinstance(obj, dict):
                raise DataFileError(
                    f"expected a JSON object per line, got {_type_name(obj)}",
                    file=path,
                    line=lineno,
                )
            yield lineno, obj


def _read_json(path: Path, hook: _PairsHook = None) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_text(path) as fh:
        content = fh.read()
    if not content.strip():
        raise DataFileError("the file is empty (expected a JSON list of objects or an object "
                            "keyed by id)", file=path)
    try:
        for line, key, value in json_entries(content, hook):
            if key is not None:  # {"id": {...}} mapping form
                if isinstance(value, dict):
                    _check_keyed_id(key, value, path, line)
                value = {**value, "_id": key} if isinstance(value, dict) else {
                    "_id": key, "text": value}
            if not isinstance(value, dict):
                raise DataFileError(f"expected an object, got {_type_name(value)}", file=path,
                                    line=line)
            yield line, value
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, DataFileError):
            raise
        if isinstance(exc, _DuplicateKey):
            raise DataFileError(str(exc), file=path, line=exc.lineno) from None
        if isinstance(exc, _NotAContainer):
            raise DataFileError("expected a JSON list of objects or an object keyed by id, "
                                f"got {_type_name(exc.value)}", file=path) from None
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise DataFileError(f"malformed JSON: {_json_error(exc)}", file=path, line=line) from None


def _check_keyed_id(key: str, value: Mapping[str, Any], path: Path, line: int) -> None:
    """An entry of an object keyed by id giving another id of its own: the inner one
    silently replaced the key. Only the keys a document and a query share: a query's
    ``doc_id`` is its metadata (the document a QA record was written from)."""
    for field_name in SHARED_ID_KEYS:
        inner = value.get(field_name)
        if inner is not None and str(inner) != key:
            raise DataFileError(
                f"entry {key!r} gives another id, {field_name}: {inner!r} (in an object keyed "
                "by id the key is the id: leave the field out or make it the key)",
                file=path, line=line)


class _NotAContainer(ValueError):
    def __init__(self, value: Any) -> None:
        super().__init__("not a JSON array or object")
        self.value = value


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def json_entries(content: str, hook: _PairsHook = None
                 ) -> Iterator[tuple[int, str | None, Any]]:
    """``(line, key, value)`` of each top-level entry of a JSON array (``key`` None) or object,
    in document order, with the 1-based line the entry starts on.

    Each entry is decoded on its own (by the same decoder as :func:`json.loads`), so that an
    error names the line of the record at fault rather than its index; an object's repeated
    key yields each of its entries. Raises :class:`json.JSONDecodeError` where ``json.loads``
    would, and ``_NotAContainer`` for a document that is a single scalar. ``hook``: the
    decoder's ``object_pairs_hook``; a :class:`_DuplicateKey` it raises gets the entry's line.
    """
    decode = json.JSONDecoder(object_pairs_hook=hook).raw_decode

    def space(at: int) -> int:
        return _JSON_SPACE.match(content, at).end()  # type: ignore[union-attr]

    pos = space(0)
    opener = content[pos:pos + 1]
    if opener not in ("[", "{"):
        value, end = decode(content, pos)
        if space(end) != len(content):
            raise json.JSONDecodeError("Extra data", content, space(end))
        raise _NotAContainer(value)
    closer = "]" if opener == "[" else "}"
    line, counted = 1, 0
    pos = space(pos + 1)
    if content.startswith(closer, pos):
        pos += 1
    else:
        while True:
            line += content.count("\n", counted, pos)
            counted = pos
            key = None
            if opener == "{":
                if not content.startswith('"', pos):
                    raise json.JSONDecodeError(
                        "Expecting property name enclosed in double quotes", content, pos)
                key, pos = decode(content, pos)
                pos = space(pos)
                if not content.startswith(":", pos):
                    raise json.JSONDecodeError("Expecting ':' delimiter", content, pos)
                pos = space(pos + 1)
            try:
                value, pos = decode(content, pos)
            except _DuplicateKey as exc:
                exc.lineno = line
                raise
            yield line, key, value
            pos = space(pos)
            if content.startswith(",", pos):
                pos = space(pos + 1)
            elif content.startswith(closer, pos):
                pos += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", content, pos)
    if space(pos) != len(content):
        raise json.JSONDecodeError("Extra data", content, space(pos))


#: The longest field a CSV or TSV row may hold (a whole document): 100 MB of text.
_CSV_FIELD_LIMIT = 100 * 1024 * 1024


def _read_csv(path: Path, delimiter: str, id_keys: Sequence[str] = ()
              ) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of a CSV or TSV file as records, each with the line it starts on.

    A TSV has no quoting (MS MARCO's collection and most IR corpora hold raw quotes: read as
    CSV, '"To be' opened a field that swallowed the rows after it), but for the fields pandas
    and the csv module quote (:func:`_tsv_rows`). A document is one field, often longer than
    the csv module's default limit of 131,072 characters: that process-wide limit is raised
    (never lowered again: two files read at once would otherwise put it back under each
    other).
    """
    tsv = delimiter == "\t"
    header: list[str] | None = None
    with open_text(path, newline="") as fh:
        for start, row in _tsv_rows(fh, path) if tsv else _csv_rows(fh, path):
            if header is None:
                if id_keys and not set(id_keys) & set(row):
                    raise _headerless(row, id_keys, tsv, path, start)
                header = row
                continue
            if len(row) > len(header):
                raise DataFileError(
                    f"row has {len(row)} fields, the header {len(header)} (expected one "
                    "value per header column)", file=path, line=start)
            record: dict[str, Any] = dict.fromkeys(header)
            record.update(zip(header, row, strict=False))  # a short row: None for the rest
            yield start, record


def _csv_rows(fh: TextIO, path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line it starts on, fields)`` of each row of a CSV file, blank lines skipped."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(fh)
    start = 1
    try:
        while True:
            # where the next row starts (blank lines and a row's quoted line breaks
            # counted): a malformed row fails before the reader counts it
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            if row:
                yield start, row
    except csv.Error as exc:
        raise DataFileError(f"malformed CSV: {exc}", file=path, line=start) from None


def _tsv_rows(fh: TextIO, path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line it starts on, fields)`` of each row of a TSV file, blank lines skipped.

    Fields are split at tabs, quotes being text; but a field pandas or the csv module quoted
    is unwrapped: on one line, wrapped whole in quotes with its inner quotes doubled
    (:func:`_unquoted`); over several lines (a line break in a text, ClapNQ's answers), a
    row's last field opening a quote its inner quotes doubled, closed on a later line before
    a tab or the line's end, each line in between too short to be a row of its own (so that
    MS MARCO's '"To be' cannot swallow the rows after it). Any other row is read as it
    stands.
    """
    lines = enumerate(fh, 1)
    pushed: list[tuple[int, str]] = []  # lines read ahead in vain, next first (a stack)

    def pull() -> tuple[int, str] | None:
        return pushed.pop() if pushed else next(lines, None)

    width = 0  # the header's fields
    while (item := pull()) is not None:
        lineno, raw = item
        body = raw.rstrip("\r\n")
        if "\x00" in body:
            raise DataFileError("malformed TSV: line contains NUL", file=path, line=lineno)
        if not body:
            continue  # a blank line
        row = body.split("\t")
        if '"' in body:  # most lines hold none: nothing to unwrap
            if width and _opens_quote(row[-1]):
                taken: list[tuple[int, str]] = []
                spanned = _spanning_row(row, raw[len(body):], pull, taken, width)
                if spanned is not None:
                    yield lineno, spanned
                    continue
                pushed.extend(reversed(taken))
            row = [_unquoted(f) for f in row]
        width = width or len(row)
        yield lineno, row


def _lone_quote(text: str) -> int:
    """The index of the first quote in ``text`` that is not one of a doubled pair, or -1."""
    at = text.find('"')
    while at >= 0 and text.startswith('""', at):
        at = text.find('"', at + 2)
    return at


def _opens_quote(field: str) -> bool:
    """Whether ``field`` opens a quoted field that its line does not close."""
    return field.startswith('"') and _lone_quote(field[1:]) < 0


def _spanning_row(row: list[str], ending: str, pull: Any, taken: list[tuple[int, str]],
                  width: int) -> list[str] | None:
    """The fields of a row whose last field ``row[-1]`` opens a quote closed on a later line
    (the lines read appended to ``taken``), or None when the lines that follow do not close
    it as a csv writer would have (see :func:`_tsv_rows`)."""
    fields = [_unquoted(f) for f in row[:-1]]
    text = row[-1][1:] + ending
    while (item := pull()) is not None:
        taken.append(item)
        raw = item[1]
        body = raw.rstrip("\r\n")
        if "\x00" in body or body.count("\t") + 1 >= width:
            return None  # a row of its own
        close = _lone_quote(body)
        if close < 0:
            text += raw
            continue
        if close + 1 < len(body) and body[close + 1] != "\t":
            return None
        fields.append((text + body[:close]).replace('""', '"'))
        if close + 1 == len(body):
            break
        rest = body[close + 2:].split("\t")
        if not _opens_quote(rest[-1]):
            fields.extend(_unquoted(f) for f in rest)
            break
        fields.extend(_unquoted(f) for f in rest[:-1])
        text = rest[-1][1:] + raw[len(body):]
    else:
        return None
    return fields if len(fields) == width else None


def _headerless(row: Sequence[str], id_keys: Sequence[str], tsv: bool, path: Path,
                line: int) -> DataFileError:
    """The error for a first row naming no id column: most likely a record, in a file
    without a header row (MS MARCO's TSVs have none)."""
    got = ", ".join(map(repr, row[:5])) + (", ..." if len(row) > 5 else "")
    example = "_id<TAB>text" if tsv else "_id,text"
    return DataFileError(f"the header row names no id column (got {got}; expected one of "
                         f"{', '.join(id_keys)}): a {'TSV' if tsv else 'CSV'} file starts with "
                         f"a row naming its fields, e.g. {example}; add one", file=path,
                         line=line)


def _unquoted(field: str) -> str:
    """A TSV field as written: unwrapped when quotes wrap it whole and every quote inside is
    doubled (how pandas writes a field holding a quote). A field merely starting or ending
    with a quote, or quoted with no doubled quote inside (a quotation in a corpus), is text
    as it stands."""
    if len(field) < 4 or field[0] != '"' or field[-1] != '"':
        return field
    inner = field[1:-1]
    if '""' not in inner or '"' in inner.replace('""', ""):
        return field
    return inner.replace('""', '"')


def _require_id(record: Mapping[str, Any], path: Path, line: int, what: str,
                id_keys: Sequence[str]) -> str:
    key, value = _first(record, id_keys)
    if type(value) is str and value and not value.isspace():
        return value  # the common case, first
    if key is not None and (not isinstance(value, _ID_TYPES) or isinstance(value, bool)):
        raise DataFileError(
            f"{what} id: field {key!r} must be a string or an integer, got {_type_name(value)}",
            file=path, line=line)
    if value is None or str(value).strip() == "":
        raise DataFileError(
            f"{what} has no id (expected one of the keys {', '.join(id_keys)})",
            file=path,
            line=line,
        )
    return str(value)


def _require_str(value: Any, key: str | None, path: Path, line: int, what: str) -> None:
    if not isinstance(value, str):
        raise DataFileError(f"{what}: field {key!r} must be a string, got {_type_name(value)}",
                            file=path, line=line)


def read_corpus(
    records: Iterator[tuple[int, Mapping[str, Any]]] | Sequence[tuple[int, Mapping[str, Any]]],
    path: Path,
) -> tuple[Document, ...]:
    """Build documents from records; duplicate ids, missing text and wrong types are errors."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, rec in records:
        doc_id = _require_id(rec, path, lineno, "document", DOC_ID_KEYS)
        if doc_id in seen:
            raise DataFileError(
                f"duplicate document id {doc_id!r} (first seen at line {seen[doc_id]})",
                file=path,
                line=lineno,
            )
        seen[doc_id] = lineno
        text_key, text = _first(rec, _DOC_TEXT_KEYS)
        title = rec.get("title")
        if type(text) is not str and text is not None:
            _require_str(text, text_key, path, lineno, f"document {doc_id!r}")
        if type(title) is not str and title is not None:
            _require_str(title, "title", path, lineno, f"document {doc_id!r}")
        if text is None and not title:
            raise DataFileError(
                f"document {doc_id!r} has no text (expected a 'text' or 'title' field)",
                file=path,
                line=lineno,
            )
        meta = {
            k: v for k, v in rec.items()
            if k not in (*DOC_ID_KEYS, text_key, "title", "metadata")
        }
        if isinstance(rec.get("metadata"), dict):
            meta.update(rec["metadata"])
        docs.append(Document(id=doc_id, text=text or "", title=title or "", metadata=meta))
    if not docs:
        raise DataFileError("the corpus is empty (expected at least one document)", file=path)
    return tuple(docs)


def _grade(value: Any) -> int | None:
    """``value`` as an integer relevance grade, or None when it is not one (1.5, inf, nan,
    a string, a boolean or beyond a C long as trec_eval stores it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    if not isinstance(value, int) or not -_MAX_GRADE <= value <= _MAX_GRADE:
        return None
    return value


def _label_id(value: Any, path: Path, line: int, qid: str) -> str:
    if not isinstance(value, _ID_TYPES) or isinstance(value, bool) or str(value).strip() == "":
        raise DataFileError(
            f"query {qid!r}: 'relevant' document ids must be non-empty strings, got {value!r}",
            file=path, line=line)
    return str(value)


def _parse_relevant(value: Any, path: Path, line: int, qid: str) -> dict[str, int]:
    if isinstance(value, Mapping):
        out: dict[str, int] = {}
        for doc_id, grade in value.items():
            g = _grade(grade)
            if g is None:
                raise DataFileError(
                    f"query {qid!r}: relevance grade for {doc_id!r} must be an integer, "
                    f"got {grade!r}",
                    file=path,
                    line=line,
                )
            out[_label_id(doc_id, path, line, qid)] = g
        return out
    if isinstance(value, list | tuple):
        return {_label_id(d, path, line, qid): 1 for d in value}
    if isinstance(value, str):
        return {d.strip(): 1 for d in value.split(",") if d.strip()}
    raise DataFileError(
        f"query {qid!r}: 'relevant' must be a mapping doc_id -> grade or a list of doc ids, "
        f"got {_type_name(value)}",
        file=path,
        line=line,
    )


def _answer_texts(value: Any) -> list[str]:
    """The reference answers ``value`` holds: a non-blank string, a finite number (real
    datasets store short answers as numbers too, NQ-UTD: 2023, 0.687), or a list of them.
    Anything else is no answer: a null or NaN (a table's gap), a boolean, an object (SQuAD's
    ``{"text": [...]}``); in a list each became its ``str`` ("None", "False"), which a model
    answering "None" matched exactly."""
    answers = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            if item.strip():
                answers.append(item)
        # numpy's scalars too; an integer of any size, which isfinite could not convert
        elif isinstance(item, numbers.Real) and not isinstance(item, bool) and (
                isinstance(item, numbers.Integral) or math.isfinite(item)):
            answers.append(str(item))
    return answers


def _dotted(record: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` (``metadata.answer``) in ``record``, None where there is none.

    A list on the way is looked into element by element, their values gathered in one list:
    ClapNQ keeps its answers as ``output: [{"answer": ...}, ...]``, which ``output.answer``
    found nothing in."""
    values: list[Any] = [record]
    for part in dotted.split("."):
        values = [item[part] for cur in values
                  for item in (cur if isinstance(cur, list) else [cur])
                  if isinstance(item, Mapping) and part in item]
        if not values:
            return None
    if len(values) == 1:
        return values[0]
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def read_queries(
    records: Iterator[tuple[int, Mapping[str, Any]]] | Sequence[tuple[int, Mapping[str, Any]]],
    path: Path,
    answer_field: str | None = None,
) -> tuple[Query, ...]:
    """Build queries from records, parsing inline labels; duplicate ids are errors."""
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for lineno, rec in records:
        qid = _require_id(rec, path, lineno, "query", QUERY_ID_KEYS)
        if qid in seen:
            raise DataFileError(
                f"duplicate query id {qid!r} (first seen at line {seen[qid]})",
                file=path,
                line=lineno,
            )
        seen[qid] = lineno
        text_key, text = _first(rec, _QUERY_TEXT_KEYS)
        if text is not None and not isinstance(text, str):
            _require_str(text, text_key, path, lineno, f"query {qid!r}")
        if text is None or not text.strip():
            raise DataFileError(
                f"query {qid!r} has no text (expected one of {', '.join(_QUERY_TEXT_KEYS)})",
                file=path,
                line=lineno,
            )
        # an empty CSV cell, or a column every row carries (Hugging Face, parquet) holding
        # null, is no labels, as a record without the key
        raw_relevant = rec.get("relevant")
        judged = raw_relevant is not None and not (isinstance(raw_relevant, str)
                                                   and not raw_relevant.strip())
        relevant = _parse_relevant(raw_relevant, path, lineno, qid) if judged else {}
        answers: list[str] = []
        for key in ANSWER_KEYS:
            answers.extend(_answer_texts(rec.get(key)))
        if answer_field:
            answers.extend(_answer_texts(_dotted(rec, answer_field)))
        tags = rec.get("tags") or ()
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        elif tags and (not isinstance(tags, list) or not all(_is_scalar(t) for t in tags)):
            raise DataFileError(f"query {qid!r}: field 'tags' must be a list of strings or a "
                                f"comma-separated string, got {tags!r}", file=path, line=lineno)
        qtype, difficulty = rec.get("type"), rec.get("difficulty")
        for key, value in (("type", qtype), ("difficulty", difficulty)):
            if value is not None and not _is_scalar(value):
                raise DataFileError(f"query {qid!r}: field {key!r} must be a string, got "
                                    f"{_type_name(value)}", file=path, line=lineno)
        known = {
            *QUERY_ID_KEYS, text_key, "relevant", *ANSWER_KEYS, "type", "difficulty", "tags",
            "metadata",
        }
        meta = {k: v for k, v in rec.items() if k not in known}
        if isinstance(rec.get("metadata"), dict):
            meta.update(rec["metadata"])
        queries.append(
            Query(
                id=qid,
                text=text,
                relevant=relevant,
                judged=judged,
                reference_answers=tuple(dict.fromkeys(answers)),
                type=str(qtype) if qtype not in (None, "") else None,
                difficulty=str(difficulty) if difficulty not in (None, "") else None,
                tags=tuple(str(t) for t in tags),
                metadata=meta,
                line=lineno,
            )
        )
    if not queries:
        raise DataFileError("no queries (expected at least one)", file=path)
    return tuple(queries)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALAR_TYPES) and not isinstance(value, bool)


class QrelsRow(NamedTuple):
    """One judgement of a qrels file and its line (a tuple: qrels have many rows, and a
    frozen dataclass costs twice as much to build)."""

    query_id: str
    doc_id: str
    grade: int
    line: int


def read_qrels(path: Path) -> list[QrelsRow]:
    """Read TREC qrels (``qid iter docid grade``) or BEIR tsv (``qid docid grade`` + header).

    CRLF line endings, ``#`` comment lines and a header line (a first row whose grade is not
    a number) are tolerated. A row repeating an earlier (query, document) pair with the same
    grade is dropped; with a different grade it is an error, as trec_eval refuses it. Grades
    are integers (``1.0`` is read as 1; ``1.5``, ``inf`` and ``nan`` are errors). Anything else
    malformed is an error naming the line.
    """
    check_file(path, "qrels")
    rows: list[QrelsRow] = []
    # Per query, so the check allocates one dict per query rather than a tuple per row.
    seen: dict[str, dict[str, QrelsRow]] = {}
    first = True
    with open_text(path, newline="") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            may_be_header, first = first, False
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) not in (3, 4) and "\t" in line:
                # tabs and spaces mixed ('q1 0 d1<TAB>1', hand-edited), which trec_eval reads
                # as white space: split so where the tabs alone do not give the columns
                parts = line.split()
            if len(parts) == 4:
                qid, _, doc_id, grade_s = parts
            elif len(parts) == 3:
                qid, doc_id, grade_s = parts
            else:
                raise DataFileError(
                    f"expected 3 (BEIR: query-id corpus-id score) or 4 (TREC: qid iter docid "
                    f"grade) columns, got {len(parts)}",
                    file=path,
                    line=lineno,
                )
            qid, doc_id, grade_s = qid.strip(), doc_id.strip(), grade_s.strip()
            try:
                if not trec_number(grade_s):  # "1_0", other scripts' digits: no grade
                    raise ValueError(grade_s)
                grade: int | None = int(grade_s)
            except ValueError:
                try:
                    number = float(grade_s) if trec_number(grade_s) else None
                except ValueError:
                    if may_be_header:
                        continue
                    number = None
                grade = _grade(number)
            if grade is None or not -_MAX_GRADE <= grade <= _MAX_GRADE:
                raise DataFileError(
                    f"relevance grade must be an integer, got {grade_s!r}", file=path, line=lineno
                )
            if not qid or not doc_id:
                raise DataFileError(f"empty {'query' if not qid else 'document'} id "
                                    "(expected non-empty ids)", file=path, line=lineno)
            judged = seen.get(qid)
            if judged is None:
                judged = seen[qid] = {}
            prev = judged.get(doc_id)
            if prev is not None:
                if prev.grade != grade:
                    raise DataFileError(
                        f"query {qid!r}, document {doc_id!r}: grade {grade} conflicts with grade "
                        f"{prev.grade} at line {prev.line} (expected one grade per pair)",
                        file=path, line=lineno)
                continue
            row = QrelsRow(qid, doc_id, grade, lineno)
            judged[doc_id] = row
            rows.append(row)
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


def _check_folder(spec: DatasetSpec) -> None:
    assert spec.path is not None
    key = f"{spec.key}.path"
    try:
        mode = spec.path.stat().st_mode
    except FileNotFoundError:
        raise SuiteError(f"dataset folder not found: {spec.path}", file=spec.source,
                         key=key) from None
    except OSError as exc:
        raise SuiteError(f"dataset folder {spec.path}: {_os_reason(exc)}", file=spec.source,
                         key=key) from None
    if not stat.S_ISDIR(mode):
        raise SuiteError(f"{spec.path} is a file, expected a BEIR folder (corpus.jsonl, "
                         "queries.jsonl, qrels/<split>.tsv); name single files with 'corpus', "
                         "'queries' and 'qrels'", file=spec.source, key=key)


def _surrogate_error(corpus: Sequence[Document], queries: Sequence[Query], corpus_src: Path,
                     queries_src: Path) -> SuiteError:
    """Which text holds an unpaired surrogate (a JSON ``"\\ud800"`` escape), which no UTF-8
    output can hold; found only after hashing failed."""
    def bad(text: str) -> bool:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False

    for d in corpus:
        for name, text in (("_id", d.id), ("title", d.title), ("text", d.text)):
            if bad(text):
                return DataFileError(f"document {d.id!r}: field {name!r} holds an unpaired "
                                     "surrogate escape (expected valid Unicode text)",
                                     file=corpus_src)
    for q in queries:
        texts = [("_id", q.id), ("text", q.text), *(("relevant", d) for d in q.relevant),
                 *(("reference_answer", a) for a in q.reference_answers)]
        for name, text in texts:
            if bad(text):
                return DataFileError(f"query {q.id!r}: field {name!r} holds an unpaired "
                                     "surrogate escape (expected valid Unicode text)",
                                     file=queries_src)
    return DataFileError("a text holds an unpaired surrogate escape (expected valid Unicode)",
                         file=corpus_src)


def _inline(records: Sequence[Mapping[str, Any]],
            lines: Sequence[int | None]) -> list[tuple[int, Any]]:
    """Inline records with the suite file's line of each (their index where not known), as a
    data file's records come with theirs."""
    return [(lines[i] if i < len(lines) and lines[i] is not None else i + 1, rec)
            for i, rec in enumerate(records)]


def load_files(spec: DatasetSpec) -> Dataset:
    """Read, join and validate a dataset of files or inline data described by ``spec``."""
    corpus_path = spec.corpus
    queries_path = spec.queries
    qrels_path = spec.qrels
    keys = {what: f"{spec.key}.{what}" for what in ("corpus", "queries", "qrels")}
    if spec.path is not None:
        _check_folder(spec)
        if corpus_path is None:
            corpus_path, keys["corpus"] = spec.path / "corpus.jsonl", f"{spec.key}.path"
        if queries_path is None:
            queries_path, keys["queries"] = spec.path / "queries.jsonl", f"{spec.key}.path"
        if qrels_path is None and spec.split:
            qrels_path = spec.path / "qrels" / f"{spec.split}.tsv"
            keys["qrels"] = f"{spec.key}.split"
            if not qrels_path.exists() and not qrels_path.is_symlink():
                try:
                    available = sorted(p.stem for p in (spec.path / "qrels").glob("*.tsv"))
                except OSError:
                    available = []
                raise SuiteError(
                    f"no qrels for split {spec.split!r} at {qrels_path} "
                    f"(available splits: {', '.join(available) or 'none'})",
                    file=spec.source,
                    key=f"{spec.key}.split",
                )
    for what, p in (("corpus", corpus_path), ("queries", queries_path), ("qrels", qrels_path)):
        if p is not None:
            check_file(p, what, source=spec.source, key=keys[what])

    if spec.inline_corpus is not None:
        corpus = read_corpus(_inline(spec.inline_corpus, spec.inline_corpus_lines),
                             spec.source)
    elif corpus_path is not None:
        corpus = read_corpus(read_records(corpus_path, id_keys=DOC_ID_KEYS), corpus_path)
    elif spec.corpus_optional:
        corpus = ()
    else:
        raise SuiteError(
            "no corpus given (expected 'path' to a BEIR folder or 'corpus' to a file)",
            file=spec.source,
            key=spec.key,
        )
    queries = _read_spec_queries(spec, queries_path)
    queries_src = queries_path or spec.source
    qrels = read_qrels(qrels_path) if qrels_path is not None else None
    return join_labels(spec, corpus, queries, qrels, corpus_src=corpus_path or spec.source,
                 queries_src=queries_src, qrels_src=qrels_path)


def load_file_queries(spec: DatasetSpec) -> tuple[Query, ...]:
    """The queries of a dataset of files or inline data, without reading its corpus or labels
    (for their type, difficulty and tags, where the dataset itself is not loaded)."""
    path = spec.queries or (spec.path / "queries.jsonl" if spec.path is not None else None)
    if spec.inline_queries is None and path is not None:
        check_file(path, "queries", source=spec.source,
                   key=f"{spec.key}.queries" if spec.queries else f"{spec.key}.path")
    return _read_spec_queries(spec, path)


def _read_spec_queries(spec: DatasetSpec, path: Path | None) -> tuple[Query, ...]:
    """The queries ``spec`` holds inline, else those of the file ``path`` (checked by the
    caller)."""
    if spec.inline_queries is not None:
        return read_queries(_inline(spec.inline_queries, spec.inline_query_lines),
                            spec.source, spec.answer_field)
    if path is None:
        raise SuiteError(
            "no queries given (expected 'path' to a BEIR folder or 'queries' to a file)",
            file=spec.source,
            key=spec.key,
        )
    # queries files are small: a label given twice is worth a slower parse
    return read_queries(read_records(path, id_keys=QUERY_ID_KEYS, unique_keys=True), path,
                        spec.answer_field)


def scope_meta(queries: Iterable[Query]) -> dict[str, dict[str, Any]]:
    """Per query id, the type, difficulty and tags that scoped gates select on, of the queries
    that have any."""
    return {q.id: {"type": q.type, "difficulty": q.difficulty, "tags": list(q.tags)}
            for q in queries if q.type or q.difficulty or q.tags}


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character or a line or paragraph separator (none
    may appear in test ids or in the one-line labels of reports)."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def _breaks_test_ids(qid: str) -> bool:
    return "::" in qid or has_control_characters(qid)


def _some(ids: Sequence[str]) -> str:
    """The first five of ``ids`` and how many more there are."""
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _unknown_document_hint(key: str) -> str:
    """What to set to run a dataset whose labels name documents its corpus lacks."""
    return (f"a document the corpus lacks; set '{key}.unknown_documents: keep' to score it as "
            "trec_eval and BEIR do (relevant, never retrieved) or 'drop' to ignore the label")


def join_labels(spec: DatasetSpec, corpus: tuple[Document, ...], queries: tuple[Query, ...],
                qrels: list[QrelsRow] | None, *, corpus_src: Path, queries_src: Path,
                qrels_src: Path | None) -> Dataset:
    """Labels joined to the queries, checked against the corpus; the selected queries.

    A label naming a document the corpus lacks is an error, kept or dropped as
    ``spec.unknown_documents`` says; each query lists those it had in ``unknown_labels``.
    """
    doc_ids = {d.id for d in corpus}
    policy = spec.unknown_documents
    # without a corpus, labels name documents of the pipeline's own store
    checked = bool(doc_ids)
    by_id = {q.id: q for q in queries}
    unknown: dict[str, list[str]] = {}
    for q in queries:
        for doc_id in q.relevant:
            if checked and doc_id not in doc_ids:
                if policy == "error":
                    raise DataFileError(
                        f"query {q.id!r} labels unknown document {doc_id!r} as relevant: "
                        + _unknown_document_hint(spec.key),
                        file=queries_src,
                        key="relevant",
                        line=q.line,
                    )
                unknown.setdefault(q.id, []).append(doc_id)

    if qrels is not None:
        labels: dict[str, dict[str, int]] = {}
        if not qrels:
            raise DataFileError("no relevance judgements in the qrels file (expected "
                                "'query-id corpus-id score' or 'qid iter docid grade' rows)",
                                file=qrels_src)
        for row in qrels:
            # An error where trec_eval ignores it: see the module docs.
            if row.query_id not in by_id:
                raise DataFileError(
                    f"qrels row names unknown query {row.query_id!r}", file=qrels_src,
                    line=row.line,
                )
            if checked and row.doc_id not in doc_ids:
                if policy == "error":
                    raise DataFileError(
                        f"qrels row names unknown document {row.doc_id!r}: "
                        + _unknown_document_hint(spec.key), file=qrels_src, line=row.line,
                    )
                known = unknown.setdefault(row.query_id, [])
                if row.doc_id not in known:
                    known.append(row.doc_id)
            labels.setdefault(row.query_id, {})[row.doc_id] = row.grade
        # As trec_eval does, only queries present in the qrels are evaluated.
        selected = [
            Query(
                id=q.id, text=q.text, relevant={**q.relevant, **labels[q.id]}, judged=True,
                reference_answers=q.reference_answers, type=q.type, difficulty=q.difficulty,
                tags=q.tags, metadata=q.metadata, line=q.line,
            )
            for q in queries
            if q.id in labels
        ]
    else:
        selected = list(queries)
    if unknown:
        selected = [_with_unknown(q, unknown.get(q.id, ()), drop=policy == "drop")
                    for q in selected]

    if spec.query_ids is not None:
        wanted = set(spec.query_ids)
        missing = wanted - {q.id for q in selected}
        if missing:
            # a query of the file the qrels leave out (another split's) is no unknown id
            unknown, left_out = sorted(missing - by_id.keys()), sorted(missing & by_id.keys())
            problems = [f"unknown query ids: {_some(unknown)}"] if unknown else []
            if left_out:
                problems.append(f"not in the qrels ({qrels_src}), which select the queries "
                                f"run: {_some(left_out)}")
            raise SuiteError("; ".join(problems), file=spec.source,
                             key=f"{spec.key}.query_ids")
        selected = [q for q in selected if q.id in wanted]
    if spec.max_queries is not None:
        selected = selected[: spec.max_queries]
    # Node ids are file::system::query: such a case could not be named on the command line,
    # and junit and the terminal would split or wrap its name. Only the queries a suite
    # selects: a library dataset's other ids cannot be renamed.
    bad = next((q.id for q in selected if _breaks_test_ids(q.id)), None)
    if bad is not None:
        raise SuiteError(f"query id {bad!r} contains '::' or a control character (it is part "
                         "of test ids: suite.yaml::system::query); leave the query out with "
                         f"{spec.key}.query_ids or change its id", file=queries_src)
    if not selected:
        raise SuiteError(
            "no queries selected (check the split, query_ids and the qrels)",
            file=spec.source,
            key=spec.key,
        )
    try:
        corpus_hash = _hash_docs(corpus)
        content_hash = hashlib.sha256(
            (corpus_hash + _hash_queries(selected)).encode("ascii")
        ).hexdigest()
        labels_hash = hashlib.sha256(json.dumps(
            [[q.id, sorted(q.relevant.items())] for q in selected], ensure_ascii=False,
        ).encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        raise _surrogate_error(corpus, selected, corpus_src, queries_src) from None
    return Dataset(
        name=spec.name,
        corpus=corpus,
        queries=tuple(selected),
        corpus_hash=corpus_hash,
        content_hash=content_hash,
        all_query_ids=frozenset(by_id),
        labels_hash=labels_hash,
        unknown_documents=policy,
    )


def _with_unknown(q: Query, doc_ids: Sequence[str], *, drop: bool) -> Query:
    """``q`` listing ``doc_ids`` (labels naming documents the corpus lacks) as unknown, and
    without their labels when they are dropped."""
    if not doc_ids:
        return q
    relevant = ({d: g for d, g in q.relevant.items() if d not in doc_ids} if drop
                else q.relevant)
    return replace(q, relevant=relevant, unknown_labels=tuple(doc_ids))
