"""BM25 retrieval over an in-memory corpus.

Scoring. A document ``d`` scores ``sum over query terms t of idf(t) * tf(t, d) * (k1 + 1) /
(tf(t, d) + k1 * (1 - b + b * |d| / avgdl))``, where ``|d|`` is the number of index terms of ``d``
after stopword removal. Two idf variants exist:

``"lucene"`` (default)
    ``log(1 + (N - df + 0.5) / (df + 0.5))``, Lucene's ``BM25Similarity`` and hence Anserini's;
    always positive. ``N`` is the number of documents with at least one index term and ``avgdl``
    the mean length over those documents, as Lucene counts them.
``"rank_bm25"``
    ``log(N - df + 0.5) - log(df + 0.5)`` with every negative value (terms in more than half the
    documents) replaced by ``0.25 * mean idf``, as ``rank_bm25.BM25Okapi`` does; ``N`` and
    ``avgdl`` count every document.

Lucene 8 and later drop the constant ``(k1 + 1)`` factor, so with ``idf="lucene"`` our scores are
``(k1 + 1)`` times Lucene's; rankings are identical. Lucene also stores document lengths in one
lossy byte; we use exact lengths (on NFCorpus the difference in nDCG@10 is below 0.001).

Query terms are not deduplicated: as in a Lucene ``BooleanQuery`` of one clause per query token
(and in ``rank_bm25``), a term occurring twice in the query contributes twice.

Indexing works in bounded memory (about the size of the finished index besides the corpus):
documents are tokenised a chunk at a time, their (term, document, tf) counts spilled to a
temporary file, and the term x document matrix assembled from them a block of terms at a time.
Queries add up the postings of their terms into a reused per-document accumulator and rank only
the documents above a lower bound of the ``k``-th score: sampled from the documents of the longest
list, or, when the lists cover a large part of a large corpus, the ``k``-th largest of the
accumulator's block maxima (one sequential pass; barely below the ``k``-th score, so about ``k``
documents are ranked). On large corpora, terms listing a quarter or more of the documents also get
a dense row of weights (added in one sequential pass, looked up in one read; a query starting
with such a term writes its row over the accumulator instead of clearing it), and queries mixing
rare and frequent terms take a max-score shortcut up to ``k`` = 300: the frequent terms whose
highest weights cannot lift a document into the top ``k`` are only looked up for the few
candidates left. Every returned score is still the same additions in the
same order, so results are bit-identical whichever path a query takes.

Results are ordered by score, descending, then by document id, descending: the order in which
``trec_eval`` (and ``pytrec_eval``) reads a run, so metrics computed on our top-k are the
metrics of the ranking we return. Documents scoring exactly 0 are not returned; with Lucene idf
(always positive) those are exactly the documents sharing no term with the query, so fewer than
``k`` hits come back when fewer documents match.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..datasets import Document, update_hash_with_documents
from .cachelock import exclusive_lock, remove_stale_builds, use_lease
from .hits import RankedHits
from .tokenize import TEXT_BREAK, Tokenizer

ENGINES: tuple[str, ...] = ("sparse", "rank_bm25")
IDF_VARIANTS: tuple[str, ...] = ("lucene", "rank_bm25")
FIELDS: tuple[str, ...] = ("flat", "text")

#: Bumped whenever the on-disk layout or the weight computation changes.
CACHE_FORMAT_VERSION = 2

# rank_bm25.BM25Okapi's default floor for negative idf, as a fraction of the mean idf.
_RANK_BM25_EPSILON = 0.25

# Characters of text tokenised at once while indexing: bounds the memory of the token lists.
_CHUNK_CHARS = 8_000_000

# Postings assembled at once while indexing.
_BUILD_BLOCK = 4_000_000

# Term frequencies are spilled as uint16.
_TF_CAP = 0xFFFF

# Codes of raw tokens that are not terms, while indexing.
_BREAK, _STOP, _UNSEEN = -1, -2, -3

# Up to this many documents a query's scores are read back from every document (beyond, only
# from those its postings list, unless they are many).
_DENSE_ACCUMULATE = 20_000


@dataclass(frozen=True)
class _Postings:
    """The index: a terms x documents matrix in compressed sparse row form. Term ``t``'s
    documents (ascending numbers) are ``indices[indptr[t]:indptr[t + 1]]``, their weights the
    same slice of ``data``. Plain (possibly memory-mapped) arrays: scoring only ever slices
    them, and a sparse-matrix library would cost every process its import (about 0.2 s with
    scipy's) for nothing."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray


class BM25Retriever:
    """BM25 over the corpus passed to :meth:`index`; implements the ``Retriever`` protocol.

    Parameters (all keyword-only):

    ``k1``, ``b``
        BM25 parameters; the defaults 0.9 / 0.4 are Anserini's BEIR settings.
    ``stemmer``, ``stopwords``
        Text analysis, see :mod:`pytest_ragbench.retrievers.tokenize`. The defaults (Porter,
        Lucene's English stop set) approximate Anserini's ``EnglishAnalyzer``.
    ``fields``
        ``"flat"`` indexes ``title + " " + text`` as one field (BEIR/Anserini "flat");
        ``"text"`` indexes the text only.
    ``engine``
        ``"sparse"``: a precomputed term x document weight matrix (sparse), a query adds
        up the rows of its terms. ``"rank_bm25"``: ``rank_bm25.BM25Okapi`` on the same
        tokens, a slow reference implementation.
    ``idf``
        ``"lucene"`` or ``"rank_bm25"`` (module docs). Defaults to the engine's own:
        ``"lucene"`` for ``"sparse"``, ``"rank_bm25"`` for ``"rank_bm25"`` (the only one it has).
    ``cache_dir``
        Where the sparse engine keeps built indexes between processes: a folder
        ``bm25-<key>`` of ``.npy`` arrays (key covering the corpus content and every
        parameter), written under a temporary name and renamed into place, and a lock file
        ``bm25-<key>.lock`` next to it, so that of several processes (xdist workers) wanting
        the same index one builds it and the others wait and load it. Loaded indexes are
        memory-mapped read-only: every process on a host shares the same pages, and loading
        copies nothing. ``None`` disables the cache (the index is then held in memory).

    After :meth:`index`, ``loaded_from_cache`` tells whether the index was read from
    ``cache_path`` rather than built, and ``memory_mapped`` whether its arrays are mapped
    from ``cache_path``.
    """

    def __init__(
        self,
        *,
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "porter",
        stopwords: str | list[str] | None = "lucene",
        fields: str = "flat",
        engine: str = "sparse",
        idf: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if isinstance(k1, bool) or not isinstance(k1, int | float) or not k1 >= 0:
            raise ValueError(f"k1 must be a number >= 0, got {k1!r}")
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 1:
            raise ValueError(f"b must be a number between 0 and 1, got {b!r}")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
        if fields not in FIELDS:
            raise ValueError(f"unknown fields {fields!r} (expected one of {', '.join(FIELDS)})")
        if idf is None:
            idf = "lucene" if engine == "sparse" else "rank_bm25"
        elif idf not in IDF_VARIANTS:
            raise ValueError(f"unknown idf {idf!r} (expected one of {', '.join(IDF_VARIANTS)})")
        elif engine == "rank_bm25" and idf != "rank_bm25":
            raise ValueError(
                f"engine 'rank_bm25' only has rank_bm25's idf, got idf={idf!r} "
                "(use engine='sparse' for Lucene's idf)"
            )
        if engine == "rank_bm25" and k1 == 0:
            # BM25Okapi computes 0/0 (NaN) for every document lacking a query term.
            raise ValueError("rank_bm25 divides by zero when k1 = 0; use engine='sparse'")
        if cache_dir is not None and engine != "sparse":
            raise ValueError("cache_dir is only supported by engine='sparse'")
        self.k1 = float(k1)
        self.b = float(b)
        self.fields = fields
        self.engine = engine
        self.idf = idf
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.tokenizer = Tokenizer(stemmer=stemmer, stopwords=stopwords)
        self.cache_path: Path | None = None
        self.loaded_from_cache = False
        self.memory_mapped = False
        self._doc_ids: list[str] = []  # in internal order: descending id
        self._id_array = np.zeros(0, dtype=object)
        self._vocab: dict[str, int] = {}
        self._weights: _Postings | None = None
        self._okapi: Any = None  # rank_bm25.BM25Okapi
        self._accumulators: list[np.ndarray] = []  # free per-document score buffers, all zero
        self._dirty_accumulators: list[np.ndarray] = []  # free ones holding a query's sums
        self._highest: dict[int, float] = {}  # term -> its largest weight, filled by queries
        self._rows: dict[int, np.ndarray | None] = {}  # term -> its weights of every document
        self._row_bytes = 0
        # retrieve() may be called from several threads: one builds a row, within the cap
        self._rows_lock = threading.Lock()
        self._lease: IO[bytes] | None = None
        self._indexed = False

    # -- reporting -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Parameters for reports: everything that changes the ranking."""
        fp = self.tokenizer.fingerprint()
        return {
            "retriever": "bm25",
            "engine": self.engine,
            "k1": self.k1,
            "b": self.b,
            "idf": self.idf,
            "fields": self.fields,
            "stemmer": fp["stemmer"],
            "stopwords": fp["stopwords"],
            "num_docs": len(self._doc_ids),
            "vocabulary": len(self._vocab) if self.engine == "sparse" else None,
        }

    # -- indexing --------------------------------------------------------------------------

    def _field_text(self, doc: Document) -> str:
        if self.fields == "flat":
            return f"{doc.title} {doc.text}"
        return doc.text

    def index(self, corpus: Sequence[Document]) -> None:
        """Index ``corpus`` (replacing any previous index); ids must be unique.

        With ``cache_dir`` set, a matching index on disk is loaded instead of built, and a
        built index is written there.
        """
        doc_ids = [d.id for d in corpus]
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("document ids must be unique")
        # Documents are numbered internally in descending id order, so that ties in score
        # are broken by comparing document numbers, not strings. (str order is code point
        # order, which is trec_eval's strcmp order on UTF-8.)
        cache_key = self._cache_key(corpus) if self.cache_dir is not None else None
        corpus = sorted(corpus, key=lambda d: d.id, reverse=True)
        self._doc_ids = [d.id for d in corpus]
        self._id_array = np.asarray(self._doc_ids, dtype=object)
        self.loaded_from_cache = False
        self.memory_mapped = False
        self.cache_path = None
        self._set_lease(None)
        self._weights = None
        self._okapi = None
        self._accumulators = []
        self._dirty_accumulators = []
        self._highest = {}
        self._rows = {}
        self._row_bytes = 0
        self._vocab = {}
        self._indexed = False
        if self.engine == "rank_bm25":
            self._index_rank_bm25(corpus)
        elif self.cache_dir is None:
            self._build_in_memory(corpus)
        else:
            self.cache_path = path = self.cache_dir / f"bm25-{cache_key}"
            # held while this process maps the entry: `ragbench cache prune` leaves it be
            lease = use_lease(self.cache_dir / f"{path.name}.use")
            try:
                if self._load_index(path):
                    self.loaded_from_cache = True
                else:
                    try:
                        self._build_shared(corpus, path)
                    except OSError:
                        # the cache folder cannot be written (a read-only project or cache,
                        # a lock that cannot be opened): the index is this process's own, as
                        # without a cache, rather than every case failing
                        self.cache_path = None
                        self._build_in_memory(corpus)
            except BaseException:
                if lease is not None:
                    lease.close()
                raise
            if self.cache_path is not None:
                self._set_lease(lease)
            elif lease is not None:
                lease.close()
        self._indexed = True

    def _set_lease(self, lease: IO[bytes] | None) -> None:
        """Keep ``lease`` (see :func:`.cachelock.use_lease`) and let go of the one held for
        an index this retriever no longer serves."""
        previous, self._lease = self._lease, lease
        if previous is not None:
            previous.close()

    def _build_in_memory(self, corpus: Sequence[Document]) -> None:
        with tempfile.TemporaryDirectory(prefix="ragbench-bm25-") as tmp:
            folder = Path(tmp) / "index"
            self._build_sparse(corpus, folder)
            # Read into memory: nothing refers to the temporary files afterwards.
            if not self._load_index(folder, mmap=False):  # pragma: no cover - just written
                raise RuntimeError(f"BM25 index written to {folder} does not read back")

    def _build_shared(self, corpus: Sequence[Document], path: Path) -> None:
        """Build the index into the cache entry ``path`` once per host: processes (xdist
        workers) and threads that want the same index queue on its lock, and all but the
        first find it built."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(path.parent / f"{path.name}.lock"):
            if self._load_index(path):
                self.loaded_from_cache = True
                return
            remove_stale_builds(path.parent, path.name)
            self._build_cached(corpus, path)

    def _index_rank_bm25(self, corpus: Sequence[Document]) -> None:
        from rank_bm25 import BM25Okapi

        tokens = [self.tokenizer(self._field_text(d)) for d in corpus]
        # BM25Okapi divides by the vocabulary size; a corpus of stopwords only matches nothing.
        if any(tokens):
            self._okapi = BM25Okapi(tokens, k1=self.k1, b=self.b, epsilon=_RANK_BM25_EPSILON)

    def _build_sparse(self, corpus: Sequence[Document], folder: Path) -> None:
        """Build the term x document weight matrix into ``folder`` (see :meth:`_load_index`).

        In bounded memory, about the size of the index itself: documents are tokenised in
        chunks of text; each chunk becomes (term, document, tf) triples counted with numpy and
        sorted by term, spilled to a file. Once the vocabulary and the document lengths are
        complete, the index is assembled a block of terms at a time from every chunk's slice
        for those terms and appended to ``folder``'s files. Term numbers follow first
        occurrence in document order, as a dictionary filled token by token would assign them;
        the weights are the same float64 operations as in ``rank_bm25.BM25Okapi.get_scores``.
        """
        folder.mkdir(parents=True)
        vocab: dict[str, int] = {}
        n_docs = len(corpus)
        lengths = np.zeros(n_docs, dtype=np.int64)
        # Per chunk: its first pair in the spill files, its distinct terms (ascending) and the
        # cumulative number of pairs up to each of them.
        chunks: list[tuple[int, np.ndarray, np.ndarray]] = []
        # Raw token -> term number, or _STOP / _BREAK: one dictionary look-up per token.
        codes = {TEXT_BREAK: _BREAK}
        n_pairs = 0
        docs_path, tf_path = folder / "spill-docs.bin", folder / "spill-tf.bin"
        with docs_path.open("wb") as docs_fh, tf_path.open("wb") as tf_fh:
            for lo, hi in self._chunks(corpus):
                docs, tf, terms, counts = self._count_chunk(
                    [self._field_text(d) for d in corpus[lo:hi]], vocab, codes, lengths[lo:hi]
                )
                if tf.max(initial=0) > _TF_CAP:
                    raise ValueError(  # pragma: no cover - 65535 repetitions in one document
                        f"a term occurs more than {_TF_CAP} times in one document"
                    )
                (docs + np.int32(lo)).tofile(docs_fh)
                tf.astype(np.uint16).tofile(tf_fh)
                ends = np.cumsum(counts, dtype=np.int64)
                chunks.append((n_pairs, terms.astype(np.int32), ends))
                n_pairs += len(docs)
        del codes
        n_terms = len(vocab)
        df = np.zeros(n_terms, dtype=np.int64)
        for _, terms, ends in chunks:
            df[terms] += np.diff(ends, prepend=0)  # terms are distinct within a chunk
        dff = df.astype(np.float64)
        if self.idf == "lucene":
            n = int(np.count_nonzero(lengths))
            idf = np.log1p((n - dff + 0.5) / (dff + 0.5))
        else:
            n = n_docs
            idf = np.log(n - dff + 0.5) - np.log(dff + 0.5)
            if n_terms:
                # fsum: the same floor whatever the document order.
                floor = _RANK_BM25_EPSILON * math.fsum(idf.tolist()) / n_terms
                idf[idf < 0] = floor
        del dff
        avgdl = float(lengths.sum()) / n if n else 1.0
        # Same operation order as rank_bm25.BM25Okapi.get_scores, so both engines agree to the
        # last few bits.
        norm = self.k1 * (1 - self.b + self.b * lengths / avgdl)
        k1p1 = self.k1 + 1
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        kept = np.zeros(n_terms + 1, dtype=np.int64)  # postings kept per term, shifted by one
        with (
            _NpyWriter(folder / "indices.npy", np.int32) as out_indices,
            _NpyWriter(folder / "data.npy", np.float64) as out_data,
            docs_path.open("rb") as docs_fh,
            tf_path.open("rb") as tf_fh,
        ):
            for t0, t1 in _row_blocks(indptr, _BUILD_BLOCK):
                base = int(indptr[t0])
                size = int(indptr[t1]) - base
                block_docs = np.empty(size, dtype=np.int32)
                block_tf = np.empty(size, dtype=np.float64)
                fill = indptr[t0:t1] - base  # next free slot of each term of the block
                # Chunks hold ascending document ranges, so appending them in order keeps
                # every term's postings sorted by document number.
                for start, terms, ends in chunks:
                    a, z = np.searchsorted(terms, (t0, t1))
                    if a == z:
                        continue
                    lo = int(ends[a - 1]) if a else 0
                    hi = int(ends[z - 1])
                    c_docs = _read_array(docs_fh, np.int32, start + lo, hi - lo)
                    c_tf = _read_array(tf_fh, np.uint16, start + lo, hi - lo)
                    rel = terms[a:z] - t0
                    counts = np.diff(ends[a:z], prepend=lo)
                    dest = np.repeat(fill[rel] - (ends[a:z] - counts - lo), counts)
                    dest += np.arange(hi - lo, dtype=np.int64)
                    block_docs[dest] = c_docs
                    block_tf[dest] = c_tf
                    fill[rel] += counts
                weights = block_tf * k1p1
                block_tf += norm[block_docs]
                weights /= block_tf
                weights *= np.repeat(idf[t0:t1], df[t0:t1])
                del block_tf
                nonzero = weights != 0
                if not nonzero.all():
                    # Zero-idf terms (rank_bm25 variant) would only add explicit zeros.
                    row = np.repeat(np.arange(t1 - t0), df[t0:t1])
                    kept[t0 + 1:t1 + 1] = np.bincount(row[nonzero], minlength=t1 - t0)
                    weights, block_docs = weights[nonzero], block_docs[nonzero]
                else:
                    kept[t0 + 1:t1 + 1] = df[t0:t1]
                out_indices.write(block_docs)
                out_data.write(weights)
        docs_path.unlink()
        tf_path.unlink()
        np.cumsum(kept, out=kept)
        np.save(folder / "indptr.npy", kept)
        meta = {"format": CACHE_FORMAT_VERSION, "n_docs": n_docs, "n_terms": n_terms}
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        vocab_list = sorted(vocab, key=vocab.__getitem__)
        (folder / "vocab.json").write_text(
            json.dumps(vocab_list, ensure_ascii=False), encoding="utf-8"
        )

    @staticmethod
    def _chunks(corpus: Sequence[Document]) -> list[tuple[int, int]]:
        """Document ranges of about ``_CHUNK_CHARS`` characters of text each."""
        bounds: list[tuple[int, int]] = []
        lo, size = 0, 0
        for i, d in enumerate(corpus):
            size += len(d.text) + len(d.title) + 1
            if size >= _CHUNK_CHARS:
                bounds.append((lo, i + 1))
                lo, size = i + 1, 0
        if lo < len(corpus):
            bounds.append((lo, len(corpus)))
        return bounds

    def _count_chunk(
        self, texts: list[str], vocab: dict[str, int], codes: dict[str, int], lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Count the (term, document) pairs of ``texts``, numbering new terms in ``vocab``.

        Writes each text's number of index terms into ``lengths``. Returns the chunk-local
        document number and tf of every pair (sorted by term, then document), and the distinct
        terms with their number of pairs.
        """
        tokenizer = self.tokenizer
        stream = tokenizer.token_stream(texts)
        ids = np.fromiter(
            map(codes.get, stream, itertools.repeat(_UNSEEN)), dtype=np.int64, count=len(stream)
        )
        unseen = (ids == _UNSEEN).nonzero()[0]
        if len(unseen):
            words = [stream[i] for i in unseen.tolist()]
            # New terms are numbered in order of first occurrence, as token by token would.
            new = list(dict.fromkeys(words))
            for w, term in zip(new, tokenizer.index_terms(new), strict=True):
                codes[w] = _STOP if term is None else vocab.setdefault(term, len(vocab))
            ids[unseen] = [codes[w] for w in words]
        del stream
        is_break = ids == _BREAK
        doc_of_token = np.cumsum(is_break)
        keep = ids >= 0
        terms = ids[keep]
        doc_of_token = doc_of_token[keep]
        # The k-th break closes text k, so a token's text is the number of breaks before it.
        n = len(texts)
        lengths[:] = np.bincount(doc_of_token, minlength=n)
        pair = terms * n
        pair += doc_of_token
        del terms, doc_of_token, keep, is_break, ids
        pair.sort()
        starts = np.flatnonzero(np.diff(pair)) + 1
        starts = np.concatenate(([0], starts)) if len(pair) else starts
        tf = np.diff(np.append(starts, len(pair)))
        pair = pair[starts]
        term_of_pair = pair // n
        docs = (pair - term_of_pair * n).astype(np.int32)
        tf = tf.astype(np.uint16 if len(tf) == 0 or tf.max() <= 0xFFFF else np.int64)
        if len(term_of_pair):
            first = np.flatnonzero(np.diff(term_of_pair)) + 1
            first = np.concatenate(([0], first))
            counts = np.diff(np.append(first, len(term_of_pair)))
            terms_present = term_of_pair[first]
        else:
            counts = terms_present = np.zeros(0, dtype=np.int64)
        return docs, tf, terms_present, counts

    def _set_index(
        self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, vocab: dict[str, int]
    ) -> None:
        self._weights = _Postings(data, indices, indptr)
        self._vocab = vocab

    # -- on-disk index ---------------------------------------------------------------------

    def _cache_key(self, corpus: Sequence[Document]) -> str:
        h = hashlib.sha256()
        params = {
            "format": CACHE_FORMAT_VERSION,
            "k1": self.k1,
            "b": self.b,
            "idf": self.idf,
            "fields": self.fields,
            "tokenizer": self.tokenizer.fingerprint(),
        }
        h.update(json.dumps(params, sort_keys=True).encode("utf-8"))
        update_hash_with_documents(h, corpus)
        return h.hexdigest()[:32]

    def _build_cached(self, corpus: Sequence[Document], path: Path) -> None:
        """Build into a temporary folder next to ``path``, rename it into place, map it."""
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            self._build_sparse(corpus, tmp / "index")
            for f in (tmp / "index").iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            if path.exists():
                # An unusable entry (we hold the lock and could not load it): moved aside
                # first, as a rename cannot replace a non-empty folder.
                os.rename(path, tmp / "unusable")
            # A folder appears complete or not at all.
            os.rename(tmp / "index", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not self._load_index(path):  # pragma: no cover - just written
            raise RuntimeError(f"BM25 index written to {path} does not read back")

    def _load_index(self, folder: Path, *, mmap: bool = True) -> bool:
        """Load an index folder; False (so the caller rebuilds) if missing or unusable.

        The folder holds ``indptr.npy`` (int64, one entry per term plus one), ``indices.npy``
        (int32 document numbers) and ``data.npy`` (float64 weights): a CSR matrix of terms x
        documents; ``vocab.json``, the terms in number order; ``meta.json``. With ``mmap`` the
        arrays are memory-mapped read-only, not read: processes loading the same index share
        its pages, and loading costs no copy.
        """
        if not folder.is_dir():
            return False
        mode = "r" if mmap else None
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            vocab_list = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            indptr = np.load(folder / "indptr.npy", mmap_mode=mode, allow_pickle=False)
            indices = np.load(folder / "indices.npy", mmap_mode=mode, allow_pickle=False)
            data = np.load(folder / "data.npy", mmap_mode=mode, allow_pickle=False)
            n_docs, n_terms = len(self._doc_ids), len(vocab_list)
            if (
                meta.get("format") != CACHE_FORMAT_VERSION
                or meta.get("n_docs") != n_docs
                or meta.get("n_terms") != n_terms
                or indptr.dtype != np.int64
                or indices.dtype != np.int32
                or data.dtype != np.float64
                or indptr.shape != (n_terms + 1,)
                or indices.shape != data.shape
                or indices.ndim != 1
                or indptr[0] != 0
                or indptr[-1] != len(indices)
                or np.any(np.diff(indptr) < 0)
            ):
                return False
            # Reductions only: they read the mapped pages without copying them.
            if len(indices) and (
                indices.min() < 0
                or indices.max() >= n_docs
                or not np.isfinite(np.add.reduce(data, dtype=np.float64))
            ):
                return False
            vocab = {t: i for i, t in enumerate(vocab_list)}
            if len(vocab) != n_terms or not all(isinstance(t, str) for t in vocab):
                return False
        except Exception:
            # Missing files, truncated arrays, bad JSON...: rebuild.
            return False
        self._set_index(data, indices, indptr, vocab)
        self.memory_mapped = mmap
        return True

    # -- retrieval -------------------------------------------------------------------------

    def _check_ready(self, k: int) -> None:
        if not self._indexed:
            raise RuntimeError("BM25Retriever: call index(corpus) before retrieving")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be an integer >= 0, got {k!r}")

    def _top(self, scores: np.ndarray, docs: np.ndarray, k: int) -> RankedHits:
        """The best ``k`` of ``scores``/``docs`` as hits; ``docs`` must be ascending."""
        if k == 0 or len(scores) == 0:
            return RankedHits([], [])
        if len(scores) > k:
            # Keep everything tied with the k-th best so the id tie-break below decides.
            kth = scores[np.argpartition(scores, len(scores) - k)[len(scores) - k]]
            keep = scores >= kth
            scores, docs = scores[keep], docs[keep]
        # A plain (unstable) sort is several times faster than a stable one or lexsort; the
        # order within equal scores is fixed below anyway.
        order = np.argsort(scores)[::-1]
        ranked = scores[order]
        ties = ranked[1:] == ranked[:-1]
        if ties.any():
            # Equal scores are now adjacent. One integer key (tie group, position) orders each
            # group by position, and positions ascend with document number, i.e. descend with
            # id. Keys are unique, so sorting the keys themselves is exact and cheaper than an
            # argsort plus a gather. ``ranked`` stays right: reordering within a tie group
            # does not change the score at any rank.
            n = len(scores)
            key = np.empty(n, dtype=np.int64)
            key[0] = 0
            np.cumsum(~ties, out=key[1:])
            key *= n
            key += order
            key.sort()
            order = key % n
        # Whole arrays through tolist(), and no tuple per hit (RankedHits): at k=1000 that
        # packaging would cost more than the scoring.
        return RankedHits(self._id_array[docs[order[:k]]].tolist(), ranked[:k].tolist())

    def retrieve(self, query: str, k: int) -> RankedHits:
        """The ``k`` best ``(doc_id, score)`` pairs for ``query``, best first (module docs)."""
        self._check_ready(k)
        if self.engine == "rank_bm25":
            return self._retrieve_rank_bm25(query, k)
        scores, docs = self._score_one(query, k)
        return self._top(scores, docs, k)

    def _highest_weight(self, term: int) -> float:
        """The largest weight of ``term``'s postings, computed once per term: frequent terms
        recur in most queries, and their lists are long."""
        value = self._highest.get(term)
        if value is None:
            assert self._weights is not None
            indptr = self._weights.indptr
            value = float(self._weights.data[indptr[term]:indptr[term + 1]].max())
            self._highest[term] = value
        return value

    def _dense_row(self, term: int) -> np.ndarray | None:
        """The weights of a very frequent term for every document (0.0 where it is absent),
        made on first use while they fit :data:`_DENSE_ROWS_BYTES`; None for other terms.

        Adding such a row to the accumulator is one sequential pass, where adding the postings
        is a scattered write per posting; looking a document up is one read, where the
        postings need a binary search. Adding 0.0 changes no sum, so the bits stay those of
        the postings.
        """
        if term in self._rows:
            return self._rows[term]
        with self._rows_lock:
            if term in self._rows:  # another thread made it meanwhile
                return self._rows[term]
            assert self._weights is not None
            indptr, n_docs = self._weights.indptr, len(self._doc_ids)
            lo, hi = int(indptr[term]), int(indptr[term + 1])
            row = None
            if (n_docs > _DENSE_ACCUMULATE and (hi - lo) * _DENSE_ROW >= n_docs
                    and self._row_bytes + 8 * n_docs <= _DENSE_ROWS_BYTES):
                row = np.zeros(n_docs)
                row[self._weights.indices[lo:hi]] = self._weights.data[lo:hi]
                self._row_bytes += row.nbytes
            self._rows[term] = row
            return row

    def _score_one(self, query: str, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and indexes (ascending) of the documents scoring non-zero for one query.

        With ``k``, only a subset that surely holds the best ``k`` and every document tied
        with the ``k``-th (see :func:`_lower_bound`) is returned, so that ranking does not
        have to sort every matching document.

        Each document's score is summed by term number, from 0.0 (a sparse matrix product's
        order), whichever path below a query takes, so all return bit-identical scores.
        """
        assert self._weights is not None
        weights = self._weights
        vocab = self._vocab
        terms = [vocab[t] for t in self.tokenizer(query) if t in vocab]
        if not terms:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        counts = dict.fromkeys(terms, 1)
        if len(counts) < len(terms):
            for term in set(terms):
                counts[term] = terms.count(term)
        indptr, indices, data = weights.indptr, weights.indices, weights.data
        # Stored weights are non-zero, so only sums can be zero; multiplying by a count of 1
        # is exact and skipped.
        spans = [
            (indices[indptr[t]:indptr[t + 1]], data[indptr[t]:indptr[t + 1]], counts[t])
            for t in sorted(counts)
        ]
        if len(spans) == 1:
            docs, scores, c = spans[0]
            if c != 1:
                scores = scores * float(c)
            if k is not None:
                keep = _at_least_kth(scores, k)
                if keep is not None:
                    return scores[keep], docs[keep]
            return scores, docs
        n_docs = len(self._doc_ids)
        postings = sum(len(d) for d, _, _ in spans)
        # One float64 accumulator per document, reused across queries (and taken from a pool,
        # so that threads never share one): allocating and faulting in a fresh one costs more
        # than the scoring on large corpora.
        rows = [self._dense_row(t) for t in sorted(counts)]
        pool = self._accumulators
        shortcut = (
            k is not None
            and k <= _SHORTCUT_MAX_K
            and self.idf == "lucene"
            and n_docs > _DENSE_ACCUMULATE
        )
        # When the first term has a dense row, the full sum starts by writing that row over
        # the accumulator, which then needs no clearing before nor after: a pass saved.
        overwrite = rows[0] is not None
        acc = self._take_accumulator(n_docs, clean=shortcut or not overwrite)
        if shortcut:
            highest = [self._highest_weight(t) * counts[t] for t in sorted(counts)]
            try:
                pruned = _score_pruned(spans, k, acc, highest, rows)
            except BaseException:
                pool.append(np.zeros(n_docs))
                raise
            if pruned is not None:
                pool.append(acc)
                return pruned
        try:
            # add.at adds in order, unbuffered: per document 0.0 + w1 + w2 + ... in term order.
            start = 0
            if overwrite:
                # 0.0 + w is w (the weights are never -0.0): the first row is written, not
                # added, and when the second term has a row too both go in one pass.
                first = rows[0] if spans[0][2] == 1 else rows[0] * float(spans[0][2])
                if len(rows) > 1 and rows[1] is not None:
                    second = rows[1] if spans[1][2] == 1 else rows[1] * float(spans[1][2])
                    np.add(first, second, out=acc)
                    start = 2
                else:
                    np.copyto(acc, first)
                    start = 1
            for (docs, vals, c), row in zip(spans[start:], rows[start:], strict=True):
                if row is not None:
                    acc += row if c == 1 else row * float(c)
                else:
                    np.add.at(acc, docs, vals if c == 1 else vals * float(c))
            dense = n_docs <= _DENSE_ACCUMULATE or postings * 8 >= n_docs
            if dense and k is not None and n_docs > _DENSE_ACCUMULATE:
                docs = _block_candidates(acc, k)
                if docs is not None:
                    return acc[docs], docs
            bound = None
            if k is not None:
                # The best k of any set of distinct documents bound the best k overall from
                # below; the documents of the longest list are distinct and likely to score.
                longest = max(spans, key=lambda s: len(s[0]))[0]
                bound = _lower_bound(acc, k, longest)
            if dense:
                # Small corpus or many postings: one pass over every document.
                docs = (acc != 0 if bound is None else acc >= bound).nonzero()[0]
                return acc[docs], docs
            # Few postings: only the documents they list are read.
            parts = [d[acc[d] >= bound] if bound is not None else d for d, _, _ in spans]
            docs = _union(parts)
            scores = acc[docs]
            if bound is None:
                nonzero = scores != 0  # negative rank_bm25-floored idf can cancel out
                if not nonzero.all():
                    scores, docs = scores[nonzero], docs[nonzero]
            return scores, docs
        finally:
            if overwrite:
                self._dirty_accumulators.append(acc)
            else:
                if postings * 10 >= n_docs:
                    acc.fill(0.0)
                else:
                    for docs, _, _ in spans:
                        acc[docs] = 0.0
                pool.append(acc)

    def _take_accumulator(self, n_docs: int, *, clean: bool) -> np.ndarray:
        """A free per-document accumulator, all zero if ``clean`` (cleared if need be)."""
        # pop() on an empty list raises: another thread may empty a pool after the check.
        with contextlib.suppress(IndexError):
            if not clean and self._dirty_accumulators:
                return self._dirty_accumulators.pop()
        with contextlib.suppress(IndexError):
            if self._accumulators:
                return self._accumulators.pop()
        with contextlib.suppress(IndexError):
            if self._dirty_accumulators:
                acc = self._dirty_accumulators.pop()
                acc.fill(0.0)
                return acc
        return np.zeros(n_docs)

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[RankedHits]:
        """:meth:`retrieve` for each query.

        Query by query: a batch scored as one sparse matrix product (queries x terms times
        terms x documents) was at best 10% faster per query on corpora of about a thousand
        documents and 3-5x slower from ten thousand on, where the bound of the ``k``-th score
        spares most of the ranking.
        """
        self._check_ready(k)
        if isinstance(queries, str):
            raise TypeError("retrieve_many expects a sequence of queries, not one string")
        if self.engine == "rank_bm25":
            return [self._retrieve_rank_bm25(q, k) for q in queries]
        return [self._top(*self._score_one(q, k), k) for q in queries]

    def _retrieve_rank_bm25(self, query: str, k: int) -> RankedHits:
        if self._okapi is None:
            return RankedHits([], [])
        scores = np.asarray(self._okapi.get_scores(self.tokenizer(query)), dtype=np.float64)
        docs = (scores != 0).nonzero()[0]
        return self._top(scores[docs], docs, k)


def bm25_retriever(
    *,
    k1: float = 0.9,
    b: float = 0.4,
    stemmer: str | None = "porter",
    stopwords: str | list[str] | None = "lucene",
    fields: str = "flat",
    engine: str = "sparse",
    idf: str | None = None,
    cache_dir: str | Path | None = None,
) -> BM25Retriever:
    """BM25 over the corpus passed to index(); implements the Retriever protocol.

    The ``bm25`` type of suite files: a :class:`BM25Retriever` with the same parameters, the
    index cache folder (``cache_dir``) going to the sparse engine only.
    """
    # every build gets pytest's cache folder, and BM25Retriever refuses one for the reference
    # engine (it has no disk index): a suite's `engine: rank_bm25` failed on a key it never
    # wrote, "cache_dir is only supported by engine='sparse'"
    return BM25Retriever(k1=k1, b=b, stemmer=stemmer, stopwords=stopwords, fields=fields,
                         engine=engine, idf=idf,
                         cache_dir=cache_dir if engine == "sparse" else None)


def _drain(items: list[Any]) -> Iterator[Any]:
    """Yield and drop the items of ``items`` front to back, so each is freed once used."""
    items.reverse()
    while items:
        yield items.pop()


def _row_blocks(indptr: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive row ranges of a CSR ``indptr`` holding about ``size`` entries each."""
    n_rows = len(indptr) - 1
    t0 = 0
    while t0 < n_rows:
        t1 = int(np.searchsorted(indptr, indptr[t0] + size, side="right")) - 1
        t1 = min(max(t1, t0 + 1), n_rows)
        yield t0, t1
        t0 = t1


def _read_array(fh: Any, dtype: type[np.generic], start: int, count: int) -> np.ndarray:
    """``count`` items of ``dtype`` from item ``start`` of the raw file ``fh``."""
    itemsize = np.dtype(dtype).itemsize
    fh.seek(start * itemsize)
    out = np.fromfile(fh, dtype=dtype, count=count)
    if len(out) != count:  # pragma: no cover - our own file, just written
        raise OSError(f"short read from {fh.name}")
    return out


class _NpyWriter:
    """Append 1-d arrays of one dtype to a ``.npy`` file whose length is known at the end.

    The header (numpy's format 1.0: magic, version, header length, a dict literal padded with
    spaces to a fixed size) is written last, into room reserved up front.
    """

    _HEADER = 128

    def __init__(self, path: Path, dtype: type[np.generic]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._fh: Any = None

    def __enter__(self) -> _NpyWriter:
        self._fh = self.path.open("wb")
        self._fh.write(b"\0" * self._HEADER)
        return self

    def write(self, array: np.ndarray) -> None:
        array.astype(self.dtype, copy=False).tofile(self._fh)
        self.count += len(array)

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                header = repr(
                    {"descr": self.dtype.str, "fortran_order": False, "shape": (self.count,)}
                ).encode("latin1")
                room = self._HEADER - 10
                self._fh.seek(0)
                self._fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", room))
                self._fh.write(header.ljust(room - 1) + b"\n")
        finally:
            self._fh.close()




# Candidate sets at most this large are ranked as they are.
_SMALL_CANDIDATES = 4096


def _lower_bound(scores: np.ndarray, k: int, docs: np.ndarray | None = None) -> float | None:
    """A positive score at most the ``k``-th largest of ``scores`` (``scores[docs]`` if
    ``docs`` is given: distinct document numbers), or None if none is found cheaply.

    The ``k``-th largest of a strided sample of about ``sqrt(k * n)`` entries: a lower bound
    of the ``k``-th largest overall, so every document of the best ``k`` (ties included)
    scores at least as much, while only about ``sqrt(k * n)`` documents do.
    """
    n = len(scores) if docs is None else len(docs)
    if n <= _SMALL_CANDIDATES or k == 0:
        return None
    step = max(1, int(n / max(2 * math.sqrt(k * n), 4 * k)))
    sample = scores[::step] if docs is None else scores[docs[::step]]
    if len(sample) < k:
        return None
    bound = float(np.partition(sample, len(sample) - k)[len(sample) - k])
    return bound if bound > 0 else None


def _at_least_kth(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Mask of ``scores`` at least :func:`_lower_bound` (all of them non-zero), or None."""
    bound = _lower_bound(scores, k)
    return None if bound is None else scores >= bound


# The block maxima of _block_candidates: this many per document of the top k, and at least
# _MIN_BLOCKS (at small k, more and smaller blocks leave fewer documents to read again).
_BLOCKS_PER_K = 32
_MIN_BLOCKS = 16_384


def _block_candidates(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Indexes (ascending) of a few documents of ``scores`` (one per document) that hold the
    best ``k`` and every document tied with the ``k``-th; None if ``scores`` is too short or
    has fewer than ``k`` positive blocks.

    The documents are split into ``m`` blocks, about ``_BLOCKS_PER_K * k`` and at least
    ``_MIN_BLOCKS`` (block ``j`` holds documents ``j``, ``j + m``, ``j + 2m``...: the columns
    of ``scores`` seen as a matrix of ``m`` columns), and each block's maximum taken in one
    sequential pass. The maxima are scores of distinct documents, so the ``k``-th largest of
    them is at most the ``k``-th largest score; and as the best ``k`` documents rarely share
    a block, barely less. Only the blocks reaching it are read again.
    """
    n = len(scores)
    height = n // max(_BLOCKS_PER_K * k, _MIN_BLOCKS) if k else 0
    if height < 2:
        return None
    m = n // height
    table = scores[: height * m].reshape(height, m)
    highest = table.max(axis=0)
    bound = float(np.partition(highest, m - k)[m - k])
    if not bound > 0:
        return None
    cols = (highest >= bound).nonzero()[0]
    rows, at = (table[:, cols] >= bound).nonzero()
    # Row-major order: ascending document numbers.
    docs = rows * m + cols[at]
    tail = (scores[height * m:] >= bound).nonzero()[0]
    if len(tail):
        docs = np.concatenate((docs, tail + height * m))
    return docs


# Posting lists longer than 1/_FREQUENT of the corpus are "frequent" for _score_pruned.
_FREQUENT = 16

# Beyond this k the max-score shortcut rarely applies and its failed attempts cost more than
# it saves (measured on 1M documents: it wins at k=300, loses at k=500 against the full sum
# ranked from block maxima).
_SHORTCUT_MAX_K = 300

# Beyond 1/_SCAN_RATIO of the corpus in postings, a sequential pass over every document is
# cheaper than gathering or scattering at each posting.
_SCAN_RATIO = 4

# What a binary search costs next to adding one posting, roughly.
_SEARCH_COST = 32

# What reading a document's weight from a dense row costs, likewise.
_ROW_COST = 4

# Terms listing at least 1/_DENSE_ROW of a large corpus get a dense row of weights (see
# BM25Retriever._dense_row), up to this many bytes of rows per retriever.
_DENSE_ROW = 4
_DENSE_ROWS_BYTES = 128 * 2**20

# Relative slack on upper bounds of sums, far above the rounding of a float64 sum of even
# a million terms (about 1e-10), so that a bound computed in floating point stays a bound.
_SLACK = 1e-9


def _score_pruned(
    spans: list[tuple[np.ndarray, np.ndarray, int]], k: int, acc: np.ndarray,
    highest: list[float] | None = None, rows: list[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores and indexes (ascending) of a set of documents that holds the best ``k`` of the
    query and every document tied with the ``k``-th; None if the shortcut does not apply.

    A "max-score" shortcut (weights must be non-negative, as with Lucene's idf). The rare
    terms' weights are added up first; the exact scores of the documents best on those partial
    sums bound the ``k``-th best score from below (``theta``). The frequent terms are then
    split by their highest weight (``highest``, one per span, the term's maximum times its
    count; computed here when not given): the largest set of them whose highest weights add
    up to ``u < theta`` is skipped, the others are added up too. No document listed by none of
    the added terms can make the top ``k``, nor can one whose partial sum plus ``u`` is below
    ``theta``. The few remaining documents are then scored exactly, looking their weights up
    term by term in term order from 0.0: the same additions, hence the same bits, as the full
    sum. ``acc`` (all zero) is used for the partial sums and left all zero.
    """
    if highest is None:
        highest = [float(vals.max()) * c for _, vals, c in spans]
    if rows is None:
        rows = [None] * len(spans)
    # What looking one document up in every list costs, in postings added.
    search = sum(_ROW_COST if row is not None else _SEARCH_COST for row in rows)
    cut = len(acc) // _FREQUENT
    rare = [i for i, s in enumerate(spans) if len(s[0]) <= cut]
    if not rare:
        # The list of the highest weight stands in: it is the one a top document needs most.
        rare = [max(range(len(spans)), key=highest.__getitem__)]
    frequent = [i for i in range(len(spans)) if i not in rare]
    if not frequent:
        return None
    frequent_postings = sum(len(spans[i][0]) for i in frequent)
    longest = max((spans[i][0] for i in rare), key=len)
    # At least k documents get a binary search per term, and each must save enough adds;
    # the bound below needs k documents in one list.
    if k * search > frequent_postings or len(longest) < k or k == 0:
        return None
    added = list(rare)
    try:
        for i in rare:
            docs, vals, c = spans[i]
            np.add.at(acc, docs, vals if c == 1 else vals * float(c))
        # Partial sums never exceed full ones by more than rounding, which the slack covers:
        # the k-th best partial sum of distinct documents bounds the k-th best score.
        # Exactly the k-th (not a sampled bound): rare lists are short, and a loose bound
        # lets so many documents through that the shortcut gives up.
        partial = acc[longest]
        theta = float(np.partition(partial, len(partial) - k)[len(partial) - k])
        # The exact scores of the (at least k) documents whose partial sum reaches theta
        # bound the k-th best score too, usually much more tightly.
        seed = _union([spans[i][0][acc[spans[i][0]] >= theta] for i in rare])
        # Giving up from here on costs what the full sum costs: every posting added up, and
        # a few passes over the accumulator. Go on while what is left to do costs less.
        fallback = sum(len(s[0]) for s in spans) + len(acc) // 4
        if len(seed) * search > fallback:
            return None
        seed_scores = _exact_scores(spans, seed, rows)
        theta = max(theta, float(np.partition(seed_scores, len(seed) - k)[len(seed) - k]))
        # Skip the frequent terms of lowest highest weight while they add up to below theta.
        skipped: list[int] = []
        upper = 0.0
        for i in sorted(frequent, key=highest.__getitem__):
            # Strictly below theta even after the slack: documents in none of the added
            # lists (partial sum 0) must stay below the cut.
            if not (upper + highest[i]) * (1 + _SLACK) < theta / (1 + _SLACK):
                break
            skipped.append(i)
            upper += highest[i]
        upper *= 1 + _SLACK
        if not skipped:
            return None
        for i in frequent:
            if i not in skipped:
                docs, vals, c = spans[i]
                row = rows[i]
                if row is not None:
                    acc += row if c == 1 else row * float(c)
                else:
                    np.add.at(acc, docs, vals if c == 1 else vals * float(c))
                added.append(i)
        need = theta / (1 + _SLACK) - upper
        if sum(len(spans[i][0]) for i in added) * _SCAN_RATIO > len(acc):
            # Long lists: one pass over every document reads less than a gather per list.
            candidates = (acc >= need).nonzero()[0]
        else:
            candidates = _union([spans[i][0][acc[spans[i][0]] >= need] for i in added])
        # The skipped terms, highest weight first, are looked up for the candidates left: each
        # known weight replaces its term's highest weight in a candidate's bound, and the
        # candidates whose bound falls below theta go (max-score's per-document pruning).
        partial = acc[candidates]
        for looked_up, i in enumerate(reversed(skipped), 1):
            left = search + sum(_ROW_COST if rows[j] is not None else _SEARCH_COST
                                for j in skipped[: len(skipped) - looked_up + 1])
            if len(candidates) * left > fallback:
                return None
            partial += _weights_of(spans[i], candidates, rows[i])
            rest = sum(highest[j] for j in skipped[: len(skipped) - looked_up]) * (1 + _SLACK)
            keep = partial >= theta / (1 + _SLACK) - rest
            if not keep.all():
                candidates, partial = candidates[keep], partial[keep]
        return _exact_scores(spans, candidates, rows), candidates
    finally:
        if sum(len(spans[i][0]) for i in added) * _SCAN_RATIO > len(acc):
            acc.fill(0.0)
        else:
            for i in added:
                acc[spans[i][0]] = 0.0


def _union(parts: list[np.ndarray]) -> np.ndarray:
    """The sorted union of ascending arrays of distinct document numbers."""
    if len(parts) == 1:
        return parts[0]
    docs = np.concatenate(parts)
    # A stable sort (timsort) merges the sorted runs; np.unique would hash them first.
    docs.sort(kind="stable")
    if len(docs) > 1:
        keep = np.empty(len(docs), dtype=bool)
        keep[0] = True
        np.not_equal(docs[1:], docs[:-1], out=keep[1:])
        docs = docs[keep]
    return docs


def _exact_scores(spans: list[tuple[np.ndarray, np.ndarray, int]], docs: np.ndarray,
                  rows: list[np.ndarray | None] | None = None) -> np.ndarray:
    """The scores of ``docs`` (ascending), added up as the accumulator does: term by term in
    term order from 0.0, adding 0.0 (which changes nothing) where a document lacks a term."""
    scores = np.zeros(len(docs))
    for i, span in enumerate(spans):
        scores += _weights_of(span, docs, rows[i] if rows is not None else None)
    return scores


def _weights_of(span: tuple[np.ndarray, np.ndarray, int], docs: np.ndarray,
                row: np.ndarray | None = None) -> np.ndarray:
    """The weights (times the term's count) of one term for ``docs`` (ascending), 0.0 for
    the documents its list lacks; read from ``row`` (the term's dense row) if given."""
    postings, vals, c = span
    if row is not None:
        return row[docs] if c == 1 else row[docs] * float(c)
    at = np.searchsorted(postings, docs)
    at[at == len(postings)] = 0
    found = postings[at] == docs
    w = vals[at] if c == 1 else vals[at] * float(c)
    return np.where(found, w, 0.0)
