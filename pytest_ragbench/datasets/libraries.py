"""Datasets read through other libraries: Hugging Face ``datasets`` and ``ir_datasets``.

Both are optional extras (``pip install pytest-ragbench[hf]`` / ``[ir_datasets]``), imported
only when a suite names them. Their rows go through the same readers as files
(:func:`~pytest_ragbench.datasets.read_corpus`, :func:`~pytest_ragbench.datasets.read_queries`)
so ids, texts, inline labels and ``answer_field`` follow the same rules and give the same
content hash as the same data in JSONL files.

Nothing is downloaded during a run (the design's offline rule): Hugging Face datasets are read
from local files, ``save_to_disk`` folders or the local datasets cache with the library's offline
mode forced on for the load; ``ir_datasets`` is read with its downloads refused, so a dataset
that is not in its local store (``IR_DATASETS_HOME``) is an error saying so instead of a
download in the middle of a test run.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SuiteError
from .core import (
    DataFileError,
    Dataset,
    DatasetSpec,
    Document,
    HfPart,
    QrelsRow,
    Query,
    _grade,
    check_file,
    join_labels,
    read_corpus,
    read_qrels,
    read_queries,
    read_records,
)

# Our field -> the key the file readers look for first (see datasets.core.ID_KEYS and friends).
_CANONICAL = {"id": "_id", "text": "text", "title": "title"}
# Qrels columns as BEIR on the hub, TREC tools and ir_datasets name them.
_QRELS_COLUMNS = {
    "query_id": ("query-id", "query_id", "qid", "query"),
    "doc_id": ("corpus-id", "corpus_id", "doc_id", "docid", "doc", "pid"),
    "grade": ("score", "relevance", "grade", "label", "rel"),
}
_LOCAL_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json",
                   ".ndjson": "json", ".csv": "csv"}
# Local files our own readers read: the library would infer their columns' types (a CSV's id
# "007" the number 7, a column of years with a gap floats) where a 'corpus:' file keeps text.
# Not .json: the library reads JSON lines in a .json file too, as many datasets name them.
_OWN_READERS = (".jsonl", ".ndjson", ".csv")


@dataclass(frozen=True)
class LibraryDataset:
    """What a library gave: corpus, queries, labels (if any) and how to name their sources."""

    corpus: tuple[Document, ...]
    queries: tuple[Query, ...]
    qrels: list[QrelsRow] | None
    corpus_src: Path
    queries_src: Path
    qrels_src: Path | None


def _require(module: str, extra: str, spec: DatasetSpec, key: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SuiteError(f"needs the {module!r} package ({exc}); install it with "
                         f"pip install 'pytest-ragbench[{extra}]'",
                         file=spec.source, key=f"{spec.key}.{key}") from None


# -- Hugging Face datasets -------------------------------------------------------------------


@contextlib.contextmanager
def _hf_offline(datasets: Any) -> Iterator[None]:
    """The ``datasets`` and ``huggingface_hub`` offline switches on for one load.

    Both libraries read HF_DATASETS_OFFLINE / HF_HUB_OFFLINE once, at import, and look up
    the module attributes at call time; setting the attributes (and restoring them) makes a
    hub name resolve from the local cache only, even when the variables are unset or the
    user's code imported the libraries first.
    """
    import huggingface_hub.constants as hub_constants

    # datasets < 3 reads HF_DATASETS_OFFLINE, later versions HF_HUB_OFFLINE.
    switches = [(module, name) for module in (datasets.config, hub_constants)
                for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(module, name)]
    saved = [getattr(module, name) for module, name in switches]
    for module, name in switches:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(switches, saved, strict=True):
            setattr(module, name, value)


def _hf_label(part: HfPart) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in (("config", part.config), ("split", part.split))
                      if v)
    return f"hf:{part.path}" + (f" ({extra})" if extra else "")


def _is_saved_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in
                                 ("dataset_dict.json", "state.json"))


class _FileRows:
    """The records of a local data file read by :func:`read_records`, standing in for a
    library table: the same rows, with the file's own line numbers, as a 'corpus:' file."""

    def __init__(self, path: Path, *, unique_keys: bool = False) -> None:
        self.path = path
        self.rows = list(read_records(path, unique_keys=unique_keys))
        self.column_names = list(dict.fromkeys(k for _, rec in self.rows for k in rec))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (rec for _, rec in self.rows)


def _numbered(table: Any) -> Iterator[tuple[int, Any]]:
    """The rows of ``table`` with their line in its file (a local file read by our readers),
    else their row number."""
    return iter(table.rows) if isinstance(table, _FileRows) else enumerate(table, 1)


def _source(table: Any, part: HfPart) -> Path:
    """What messages about ``table``'s rows name: the file our readers read, else the part."""
    return table.path if isinstance(table, _FileRows) else Path(_hf_label(part))


def _hf_open(datasets: Any, part: HfPart, cache_dir: Path | None, spec: DatasetSpec) -> Any:
    """The part's ``Dataset`` (one split), or a :class:`SuiteError` naming the suite entry."""
    cache = None if cache_dir is None else str(cache_dir)
    path = Path(part.path)
    if part.local and path.suffix.lower() in _OWN_READERS and path.is_file():
        # one split, "train", as the library gives a file
        rows = _FileRows(path, unique_keys=part.key.endswith(".queries"))  # as load_files
        return _hf_split({"train": rows}, part, spec)
    try:
        with _hf_offline(datasets):
            if part.local and _is_saved_folder(path):
                if part.config is not None:
                    raise SuiteError(f"config {part.config!r}: a save_to_disk folder has no "
                                     "configurations", file=spec.source, key=part.key)
                loaded = datasets.load_from_disk(str(path))
            elif part.local and path.is_file():
                builder = _LOCAL_BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise SuiteError(f"unsupported file type {path.suffix!r} (expected "
                                     f"{', '.join(sorted(_LOCAL_BUILDERS))})",
                                     file=spec.source, key=part.key)
                loaded = datasets.load_dataset(builder, data_files=str(path), cache_dir=cache)
            else:
                loaded = datasets.load_dataset(part.path, part.config, cache_dir=cache)
    except SuiteError:
        raise
    except Exception as exc:
        raise SuiteError(_hf_failure(part, exc, cache_dir), file=spec.source,
                         key=part.key) from None
    return _hf_split(loaded, part, spec)


def _hf_failure(part: HfPart, exc: Exception, cache_dir: Path | None) -> str:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if not part.local and isinstance(exc, ConnectionError | FileNotFoundError):
        where = cache_dir if cache_dir is not None else "HF_DATASETS_CACHE"
        return (f"Hugging Face dataset {part.path!r} is not in the local cache ({where}) and "
                "nothing is downloaded during a run: load it once beforehand (python -c "
                f"\"import datasets; datasets.load_dataset('{part.path}'"
                + (f", '{part.config}'" if part.config else "")
                + ")\"), or point 'hf' at a local folder")
    return f"cannot read Hugging Face dataset {_hf_label(part)}: {type(exc).__name__}: {detail}"


def _hf_split(loaded: Any, part: HfPart, spec: DatasetSpec) -> Any:
    if not isinstance(loaded, Mapping):  # a folder saved from one Dataset: its one split
        return loaded
    splits = sorted(loaded)
    if part.split is not None:
        if part.split in loaded:
            return loaded[part.split]
        raise SuiteError(f"no split {part.split!r} in {_hf_label(part)} (available splits: "
                         f"{', '.join(splits)})", file=spec.source, key=part.key)
    if len(splits) == 1:
        return loaded[splits[0]]
    named = part.key.rsplit(".", 1)[-1]  # the part: corpus, queries or qrels
    if named in loaded:
        return loaded[named]
    raise SuiteError(f"{_hf_label(part)} has several splits ({', '.join(splits)}): name one "
                     "with 'split'", file=spec.source, key=part.key)


def _check_columns(table: Any, part: HfPart, spec: DatasetSpec) -> None:
    names = list(getattr(table, "column_names", []) or [])
    for field, column in part.columns:
        if column not in names:
            raise SuiteError(f"columns.{field}: no column {column!r} in {_hf_label(part)} "
                             f"(columns: {', '.join(names)})", file=spec.source, key=part.key)


def _renamed_rows(table: Any, part: HfPart) -> Iterator[tuple[int, dict[str, Any]]]:
    mapping = [(_CANONICAL[field], column) for field, column in part.columns]
    columnar = not isinstance(table, _FileRows)
    for i, row in _numbered(table):
        if mapping:
            row = dict(row)
            for ours, column in mapping:
                row[ours] = row[column]
        relevant = row.get("relevant")
        if columnar and isinstance(relevant, Mapping) and None in relevant.values():
            # Arrow stores {doc: grade} as one struct of every row's documents, null where
            # a row has none: those are no labels of this query
            row = {**row, "relevant": {d: g for d, g in relevant.items() if g is not None}}
        yield i, row


def _qrels_rows(table: Any, part: HfPart, label: Path, spec: DatasetSpec) -> list[QrelsRow]:
    names = list(table.column_names)
    given = dict(part.columns)
    chosen: dict[str, str] = {}
    for field, candidates in _QRELS_COLUMNS.items():
        column = given.get(field) or next((c for c in candidates if c in names), None)
        if column is None:
            raise SuiteError(f"{_hf_label(part)}: no {field} column (looked for "
                             f"{', '.join(candidates)}; columns: {', '.join(names)}); name it "
                             f"with columns: {{{field}: ...}}", file=spec.source, key=part.key)
        chosen[field] = column
    return qrels_from_rows(
        ((i, row[chosen["query_id"]], row[chosen["doc_id"]], row[chosen["grade"]])
         for i, row in _numbered(table)), label)


def read_hf(spec: DatasetSpec) -> LibraryDataset:
    """Corpus, queries and labels of ``spec.hf`` with the ``datasets`` library, offline."""
    hf = spec.hf
    assert hf is not None
    datasets = _require("datasets", "hf", spec, "hf")
    tables = {}
    for name, part in (("corpus", hf.corpus), ("queries", hf.queries), ("qrels", hf.qrels)):
        if part is None:
            continue
        table = _hf_open(datasets, part, hf.cache_dir, spec)
        _check_columns(table, part, spec)
        tables[name] = (table, part, _source(table, part))
    try:
        table, part, corpus_src = tables["corpus"]
        corpus = read_corpus(_renamed_rows(table, part), corpus_src)
        table, part, queries_src = tables["queries"]
        queries = read_queries(_renamed_rows(table, part), queries_src, spec.answer_field)
        qrels, qrels_src = None, None
        if "qrels" in tables:
            table, part, qrels_src = tables["qrels"]
            qrels = _qrels_rows(table, part, qrels_src, spec)
    except SuiteError:
        raise
    except Exception as exc:  # the library failing while rows are read (a damaged file)
        raise SuiteError(f"cannot read Hugging Face dataset {_hf_label(part)}: "
                         f"{type(exc).__name__}: {exc}", file=spec.source, key=part.key) from None
    return LibraryDataset(corpus, queries, qrels, corpus_src, queries_src, qrels_src)


def qrels_from_rows(rows: Any, source: Path) -> list[QrelsRow]:
    """Judgements from ``(row number, query id, doc id, grade)`` by the rules of
    :func:`~pytest_ragbench.datasets.read_qrels`: integer grades, a repeated pair dropped
    when it repeats the grade and an error when it changes it."""
    out: list[QrelsRow] = []
    seen: dict[tuple[str, str], QrelsRow] = {}
    for line, qid, doc_id, grade in rows:
        g = _grade(grade)
        if g is None and isinstance(grade, str):
            with contextlib.suppress(ValueError):
                g = _grade(float(grade)) if "." in grade or "e" in grade.lower() \
                    else int(grade)
        if g is None:
            raise DataFileError(f"relevance grade must be an integer, got {grade!r}",
                                file=source, line=line)
        q, d = _text_id(qid), _text_id(doc_id)
        if not q or not d:
            raise DataFileError(f"empty or non-text {'query' if not q else 'document'} id "
                                f"(got {qid!r}, {doc_id!r})", file=source, line=line)
        prev = seen.get((q, d))
        if prev is not None:
            if prev.grade != g:
                raise DataFileError(
                    f"query {q!r}, document {d!r}: grade {g} conflicts with grade "
                    f"{prev.grade} at row {prev.line} (expected one grade per pair)",
                    file=source, line=line)
            continue
        row = QrelsRow(q, d, g, line)
        seen[(q, d)] = row
        out.append(row)
    return out


def _text_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


# -- ir_datasets -----------------------------------------------------------------------------


class _DownloadRefused(RuntimeError):
    """ir_datasets tried to fetch a file during a run."""


@contextlib.contextmanager
def _ir_datasets_offline(ir_datasets: Any) -> Iterator[None]:
    """Refuse every download ir_datasets would start, for the duration of one read.

    ir_datasets has no offline switch: a dataset missing from its local store is fetched on
    first access. Its HTTP downloads all get ``requests`` through ``lazy_libs.requests()`` and
    its cloud-bucket ones spawn ``gsutil`` from one ``stream`` method; both are replaced while
    the dataset is read and restored after.
    """
    from ir_datasets.util import download

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise _DownloadRefused

    saved = (ir_datasets.lazy_libs.requests, download.GoogleCloudBucketStream.stream)
    ir_datasets.lazy_libs.requests = refuse
    download.GoogleCloudBucketStream.stream = refuse
    try:
        yield
    finally:
        ir_datasets.lazy_libs.requests, download.GoogleCloudBucketStream.stream = saved


def _record(obj: Any, id_field: str) -> dict[str, Any]:
    """A namedtuple of ir_datasets as a record of our readers: id, text, title, the rest."""
    fields = getattr(obj, "_fields", ())
    rec: dict[str, Any] = {"_id": getattr(obj, id_field)}
    text = getattr(obj, "text", None)
    if not isinstance(text, str):
        default_text = getattr(obj, "default_text", None)
        text = default_text() if callable(default_text) else None
    rec["text"] = text
    title = getattr(obj, "title", None)
    if isinstance(title, str):
        rec["title"] = title
    for name in fields:
        if name not in (id_field, "text", "title") and isinstance(
                getattr(obj, name), str | int | float):
            rec.setdefault(name, getattr(obj, name))
    return rec


def read_ir_datasets(spec: DatasetSpec) -> LibraryDataset:
    """Docs, queries and qrels of ``spec.ir_datasets`` from the local ir_datasets store."""
    name = spec.ir_datasets
    assert name is not None
    key = f"{spec.key}.ir_datasets"
    ir_datasets = _require("ir_datasets", "ir_datasets", spec, "ir_datasets")
    try:
        dataset = ir_datasets.load(name)
    except KeyError:
        raise SuiteError(f"unknown ir_datasets id {name!r} (expected one of the catalogue, "
                         "e.g. beir/nfcorpus/test, or one registered by a conftest or plugin "
                         "with ir_datasets.registry.register)", file=spec.source,
                         key=key) from None
    for what in ("docs", "queries"):
        if not getattr(dataset, f"has_{what}")():
            raise SuiteError(f"ir_datasets {name!r} has no {what}", file=spec.source, key=key)
    src = {what: Path(f"ir_datasets:{name} {what}") for what in ("docs", "queries", "qrels")}
    try:
        with _ir_datasets_offline(ir_datasets):
            corpus = read_corpus(
                ((i, _record(d, "doc_id")) for i, d in enumerate(dataset.docs_iter(), 1)),
                src["docs"])
            queries = read_queries(
                ((i, _record(q, "query_id")) for i, q in enumerate(dataset.queries_iter(), 1)),
                src["queries"], spec.answer_field)
            qrels = None
            if dataset.has_qrels():
                qrels = qrels_from_rows(
                    ((i, r.query_id, r.doc_id, r.relevance)
                     for i, r in enumerate(dataset.qrels_iter(), 1)), src["qrels"])
    except _DownloadRefused:
        raise SuiteError(f"ir_datasets {name!r} is not in the local ir_datasets store "
                         "(IR_DATASETS_HOME, default ~/.ir_datasets) and nothing is downloaded "
                         "during a run: fetch it once beforehand (e.g. ir_datasets export "
                         f"{name} docs > /dev/null; and queries, qrels)", file=spec.source,
                         key=key) from None
    except SuiteError:
        raise
    except Exception as exc:
        raise SuiteError(f"cannot read ir_datasets {name!r}: {type(exc).__name__}: {exc}",
                         file=spec.source, key=key) from None
    return LibraryDataset(corpus, queries, qrels, src["docs"], src["queries"],
                          src["qrels"] if qrels is not None else None)


def load_library_dataset(spec: DatasetSpec) -> Dataset:
    """A dataset read with Hugging Face ``datasets`` or ``ir_datasets``, joined and checked as
    files are; a ``qrels`` file in the suite replaces the library's labels."""
    part = read_hf(spec) if spec.hf is not None else read_ir_datasets(spec)
    qrels, qrels_src = part.qrels, part.qrels_src
    if spec.qrels is not None:
        check_file(spec.qrels, "qrels", source=spec.source, key=f"{spec.key}.qrels")
        qrels, qrels_src = read_qrels(spec.qrels), spec.qrels
    return join_labels(spec, part.corpus, part.queries, qrels, corpus_src=part.corpus_src,
                       queries_src=part.queries_src, qrels_src=qrels_src)
