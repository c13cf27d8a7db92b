"""The texts of the documents a report shows, for the snippets in its drill-downs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..datasets import Document

CorpusLookup = Callable[[str], Mapping[str, Document] | None]


def shown_document_texts(records: Iterable[Mapping[str, Any]],
                         corpus_of: CorpusLookup) -> dict[str, str]:
    """``"title. text"`` of every document the records list as retrieved or missed.

    ``corpus_of(suite_id)`` gives a suite's corpus by document id, or None when it cannot be
    read (that suite's documents get no text). An id that two suites' corpora give different
    texts gets none either: the report keys snippets by id, and a wrong snippet is worse than
    a missing one.
    """
    wanted: dict[str, dict[str, None]] = {}
    for rec in records:
        ids = wanted.setdefault(str(rec.get("suite")), {})
        for rows in (rec.get("retrieved") or [], rec.get("missed") or []):
            ids.update((str(row[0]), None) for row in rows)
    out: dict[str, str] = {}
    clashes: set[str] = set()
    for suite_id, ids in wanted.items():
        corpus = corpus_of(suite_id)
        if not corpus:
            continue
        for doc_id in ids:
            doc = corpus.get(doc_id)
            if doc is None:
                continue
            text = f"{doc.title}. {doc.text}" if doc.title else doc.text
            if out.setdefault(doc_id, text) != text:
                clashes.add(doc_id)
    for doc_id in clashes:
        del out[doc_id]
    return out
