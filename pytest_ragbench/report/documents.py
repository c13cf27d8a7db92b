"""The texts of the documents a report shows, for the snippets in its drill-downs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..datasets import Document

CorpusLookup = Callable[[str], Mapping[str, Document] | None]

#: The longest snippet a report shows (the HTML report's most detailed level).
SNIPPET_MAX = 300

# Characters of collapsed text kept per document: one more than SNIPPET_MAX tells a snippet
# that must be cut from one that need not, and one more again survives the loss of a trailing
# space when the kept text is collapsed once more.
_KEEP = SNIPPET_MAX + 2


def shown_text(doc: Document) -> str:
    """``"title. text"`` with its whitespace collapsed, cut to what a snippet can show.

    Any snippet of at most :data:`SNIPPET_MAX` characters taken from it is the snippet of the
    whole text; only a prefix is collapsed when it already outlasts the cut, as documents can
    be long and a report shows many.
    """
    text = f"{doc.title}. {doc.text}" if doc.title else doc.text
    head = text[: 2 * _KEEP + 16]
    out = " ".join(head.split())
    if len(out) < _KEEP and len(head) < len(text):
        out = " ".join(text.split())
    return out[:_KEEP]


def shown_ids(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, None]]:
    """Per suite id, the ids of the documents the records list as retrieved or missed."""
    wanted: dict[str, dict[str, None]] = {}
    for rec in records:
        add_shown_ids(wanted, rec)
    return wanted


def add_shown_ids(wanted: dict[str, dict[str, None]], rec: Mapping[str, Any]) -> None:
    """Add the documents one record shows to ``wanted`` (see :func:`shown_ids`)."""
    ids = wanted.setdefault(str(rec.get("suite")), {})
    for rows in (rec.get("retrieved") or [], rec.get("missed") or []):
        ids.update((str(row[0]), None) for row in rows)


def texts_of(ids: Iterable[str], corpus: Mapping[str, Document]) -> dict[str, str | None]:
    """:func:`shown_text` of each of ``ids`` in ``corpus``; None for an id it lacks."""
    out: dict[str, str | None] = {}
    for doc_id in ids:
        doc = corpus.get(doc_id)
        out[doc_id] = None if doc is None else shown_text(doc)
    return out


def shown_document_texts(
    records: Iterable[Mapping[str, Any]],
    corpus_of: CorpusLookup,
    known: Mapping[str, Mapping[str, str | None]] | None = None,
) -> dict[str, str]:
    """:func:`shown_text` of every document the records list as retrieved or missed.

    ``known`` gives, per suite id, texts already looked up (by the xdist workers that ran the
    suite's cases, None for an id their corpus lacks); ``corpus_of(suite_id)`` gives the corpus
    of a suite some of whose documents ``known`` lacks, or None when it cannot be read (that
    suite's documents get no text). An id that two suites' corpora give different texts gets
    none either: the report keys snippets by id, and a wrong snippet is worse than a missing
    one.
    """
    out: dict[str, str] = {}
    clashes: set[str] = set()
    for suite_id, ids in shown_ids(records).items():
        texts = (known or {}).get(suite_id) or {}
        if any(doc_id not in texts for doc_id in ids):
            corpus = corpus_of(suite_id)
            if not corpus:
                continue
            texts = texts_of(ids, corpus)
        for doc_id in ids:
            text = texts.get(doc_id)
            if text is None:
                continue
            if out.setdefault(doc_id, text) != text:
                clashes.add(doc_id)
    for doc_id in clashes:
        del out[doc_id]
    return out
