"""Datasets: the model (documents, queries, labels), the file readers and the library readers.

:mod:`.core` holds the model and the readers of files (BEIR folders, TREC qrels, JSONL / JSON /
CSV / TSV corpora and queries, inline data); :mod:`.libraries` reads Hugging Face ``datasets``
and ``ir_datasets`` (optional extras). :func:`load_dataset` picks one by the spec; everything
else is re-exported from :mod:`.core`, where its documentation is.
"""

from __future__ import annotations

from ..errors import SuiteError
from .core import (
    DataFileError,
    Dataset,
    DatasetSpec,
    Document,
    HfPart,
    HfSpec,
    QrelsRow,
    Query,
    check_file,
    load_file_queries,
    load_files,
    open_text,
    read_corpus,
    read_qrels,
    read_queries,
    read_records,
    scope_meta,
    trec_number,
    update_hash_with_documents,
)

__all__ = [
    "DataFileError", "Dataset", "DatasetSpec", "Document", "HfPart", "HfSpec", "QrelsRow",
    "Query", "check_file", "load_dataset", "load_queries", "open_text", "read_corpus",
    "read_qrels", "read_queries", "read_records", "scope_meta", "trec_number",
    "update_hash_with_documents",
]


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Read, join and validate the dataset described by ``spec``.

    Files and inline data are read by :func:`.core.load_files`; ``hf`` and ``ir_datasets``
    datasets by :func:`.libraries.load_library_dataset`, imported only then.
    """
    try:
        if spec.hf is not None or spec.ir_datasets is not None:
            from .libraries import load_library_dataset

            return load_library_dataset(spec)
        return load_files(spec)
    except SuiteError as exc:
        # The readers name the suite's key; the line is the loader's knowledge, added here.
        if exc.line is None and exc.key and exc.file == str(spec.source):
            exc.place(spec.line_of(exc.key))
        raise


def load_queries(spec: DatasetSpec) -> tuple[Query, ...]:
    """The queries of the dataset described by ``spec``: a dataset of files or inline data is
    read without its corpus; a library's is loaded whole."""
    if spec.hf is not None or spec.ir_datasets is not None:
        return load_dataset(spec).queries
    return load_file_queries(spec)
