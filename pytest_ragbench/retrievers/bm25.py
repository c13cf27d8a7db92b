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

Results are ordered by score, descending, then by document id, descending: the order in which
``trec_eval`` (and ``pytrec_eval``) reads a run, so metrics computed on our top-k are the
metrics of the ranking we return. Documents scoring exactly 0 are not returned; with Lucene idf
(always positive) those are exactly the documents sharing no term with the query, so fewer than
``k`` hits come back when fewer documents match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..datasets import Document, update_hash_with_documents
from .hits import RankedHits
from .tokenize import Tokenizer

ENGINES: tuple[str, ...] = ("sparse", "rank_bm25")
IDF_VARIANTS: tuple[str, ...] = ("lucene", "rank_bm25")
FIELDS: tuple[str, ...] = ("flat", "text")

#: Bumped whenever the on-disk layout or the weight computation changes.
CACHE_FORMAT_VERSION = 1

# rank_bm25.BM25Okapi's default floor for negative idf, as a fraction of the mean idf.
_RANK_BM25_EPSILON = 0.25

# Upper bound on the partial-score entries one batch of queries may produce in retrieve_many,
# so that a batch of queries full of frequent terms does not materialise a huge dense-ish matrix.
_BATCH_ENTRIES = 4_000_000

# Up to this many documents a query's scores are accumulated over every document.
_DENSE_ACCUMULATE = 20_000


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
        ``"sparse"``: a precomputed term x document weight matrix, queries are sparse
        matrix products. ``"rank_bm25"``: ``rank_bm25.BM25Okapi`` on the same tokens, a slow
        reference implementation.
    ``idf``
        ``"lucene"`` or ``"rank_bm25"`` (module docs). Defaults to the engine's own:
        ``"lucene"`` for ``"sparse"``, ``"rank_bm25"`` for ``"rank_bm25"`` (the only one it has).
    ``cache_dir``
        Where the sparse engine keeps built indexes between processes (``bm25-<key>.npz``, key
        covering the corpus content and every parameter); ``None`` disables the cache.

    After :meth:`index`, ``loaded_from_cache`` tells whether the index was read from
    ``cache_path`` rather than built.
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
        self._doc_ids: list[str] = []  # in internal order: descending id
        self._id_array = np.zeros(0, dtype=object)
        self._vocab: dict[str, int] = {}
        self._weights: sp.csr_matrix | None = None  # terms x documents
        self._okapi: Any = None  # rank_bm25.BM25Okapi
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
        self.cache_path = None
        self._weights = None
        self._okapi = None
        self._vocab = {}
        self._indexed = False
        if self.engine == "rank_bm25":
            self._index_rank_bm25(corpus)
        else:
            if self.cache_dir is not None:
                self.cache_path = self.cache_dir / f"bm25-{cache_key}.npz"
                if self._load_cache(self.cache_path):
                    self.loaded_from_cache = True
                    self._indexed = True
                    return
            self._build_sparse(corpus)
            if self.cache_path is not None:
                self._save_cache(self.cache_path)
        self._indexed = True

    def _index_rank_bm25(self, corpus: Sequence[Document]) -> None:
        from rank_bm25 import BM25Okapi

        tokens = [self.tokenizer(self._field_text(d)) for d in corpus]
        # BM25Okapi divides by the vocabulary size; a corpus of stopwords only matches nothing.
        if any(tokens):
            self._okapi = BM25Okapi(tokens, k1=self.k1, b=self.b, epsilon=_RANK_BM25_EPSILON)

    def _build_sparse(self, corpus: Sequence[Document]) -> None:
        vocab: dict[str, int] = {}
        # A typed array holds the term number of every token in 4 bytes, not a list slot.
        term_ids = array("i")
        lengths = np.empty(len(corpus), dtype=np.int64)
        tokenizer = self.tokenizer
        for i, doc in enumerate(corpus):
            tokens = tokenizer(self._field_text(doc))
            lengths[i] = len(tokens)
            term_ids.extend([vocab.setdefault(t, len(vocab)) for t in tokens])
        n_docs, n_terms = len(corpus), len(vocab)
        doc_of_token = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
        tf = sp.csr_matrix(
            (np.ones(len(term_ids)), (np.frombuffer(term_ids, dtype=np.intc), doc_of_token)),
            shape=(n_terms, n_docs),
        )
        tf.sum_duplicates()
        tf.sort_indices()
        df = np.diff(tf.indptr).astype(np.float64)
        if self.idf == "lucene":
            n = int(np.count_nonzero(lengths))
            idf = np.log1p((n - df + 0.5) / (df + 0.5))
        else:
            n = n_docs
            idf = np.log(n - df + 0.5) - np.log(df + 0.5)
            if n_terms:
                # fsum: the same floor whatever the document order.
                floor = _RANK_BM25_EPSILON * math.fsum(idf.tolist()) / n_terms
                idf[idf < 0] = floor
        avgdl = float(lengths.sum()) / n if n else 1.0
        # Same operation order as rank_bm25.BM25Okapi.get_scores, so both engines agree to the
        # last few bits.
        norm = self.k1 * (1 - self.b + self.b * lengths / avgdl)
        term_of_entry = np.repeat(np.arange(n_terms), np.diff(tf.indptr))
        freq = tf.data
        tf.data = idf[term_of_entry] * (freq * (self.k1 + 1) / (freq + norm[tf.indices]))
        tf.eliminate_zeros()  # zero-idf terms (rank_bm25 variant) would only add explicit zeros
        self._weights = tf
        self._vocab = vocab

    # -- on-disk cache ---------------------------------------------------------------------

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

    def _save_cache(self, path: Path) -> None:
        assert self._weights is not None
        w = self._weights
        meta = json.dumps(
            {
                "format": CACHE_FORMAT_VERSION,
                "key": path.stem,
                "doc_ids": self._doc_ids,
                "vocab": sorted(self._vocab, key=self._vocab.__getitem__),
            },
            ensure_ascii=False,
        ).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a unique temporary name and renamed into place, so concurrent workers
        # building the same index never see (or leave) a half-written file: the last rename
        # wins and every candidate is complete.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    data=w.data,
                    indices=w.indices,
                    indptr=w.indptr,
                    shape=np.asarray(w.shape, dtype=np.int64),
                    meta=np.frombuffer(meta, dtype=np.uint8),
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _load_cache(self, path: Path) -> bool:
        """Load a cached index; False (so the caller rebuilds) if missing or unusable."""
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode("utf-8"))
                shape = tuple(int(x) for x in z["shape"])
                vocab_list = meta["vocab"]
                if (
                    meta.get("format") != CACHE_FORMAT_VERSION
                    or meta.get("key") != path.stem
                    or meta.get("doc_ids") != self._doc_ids
                    or shape != (len(vocab_list), len(self._doc_ids))
                ):
                    return False
                weights = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            weights.check_format(full_check=True)
            vocab = {t: i for i, t in enumerate(vocab_list)}
            if len(vocab) != len(vocab_list) or not np.all(np.isfinite(weights.data)):
                return False
        except Exception:
            # Truncated zip, bad JSON, wrong dtypes, inconsistent arrays...: rebuild.
            return False
        self._weights = weights
        self._vocab = vocab
        return True

    # -- retrieval -------------------------------------------------------------------------

    def _check_ready(self, k: int) -> None:
        if not self._indexed:
            raise RuntimeError("BM25Retriever: call index(corpus) before retrieving")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be an integer >= 0, got {k!r}")

    def _query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        vocab = self._vocab
        indptr = [0]
        cols: list[int] = []
        for q in queries:
            cols.extend([vocab[t] for t in self.tokenizer(q) if t in vocab])
            indptr.append(len(cols))
        # Duplicate (row, column) entries are summed: a repeated query term counts twice.
        m = sp.csr_matrix(
            (np.ones(len(cols)), np.asarray(cols, dtype=np.int32), np.asarray(indptr)),
            shape=(len(queries), len(vocab)),
        )
        m.sum_duplicates()
        return m

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
        scores, docs = self._score_one(query)
        return self._top(scores, docs, k)

    def _score_one(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Scores and indexes of the documents scoring non-zero for one query.

        Summation follows the same order as the sparse product in :meth:`retrieve_many` (by
        term number), so both return bit-identical scores.
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
        # Stored weights are non-zero (eliminate_zeros), so only sums can be zero; multiplying
        # by a count of 1 is exact and skipped.
        spans = [(indptr[t], indptr[t + 1], counts[t]) for t in sorted(counts)]
        if len(spans) == 1:
            lo, hi, c = spans[0]
            docs = indices[lo:hi]
            scores = data[lo:hi] if c == 1 else data[lo:hi] * float(c)
            return scores, docs
        docs = np.concatenate([indices[lo:hi] for lo, hi, _ in spans])
        vals = np.concatenate(
            [data[lo:hi] if c == 1 else data[lo:hi] * float(c) for lo, hi, c in spans]
        )
        n_docs = len(self._doc_ids)
        # A pass over every document (bincount) costs about 1 ns a document; sorting the
        # postings (unique) about 15 us plus their sort, so it only pays on large corpora.
        if n_docs <= _DENSE_ACCUMULATE or len(docs) * 16 >= n_docs:
            acc = np.bincount(docs, weights=vals, minlength=n_docs)
            # nonzero() of a boolean mask is several times faster than of the floats.
            docs = (acc != 0).nonzero()[0]
            return acc[docs], docs
        # Few postings: sorting them is cheaper than a pass over every document.
        docs, inverse = np.unique(docs, return_inverse=True)
        scores = np.bincount(inverse, weights=vals, minlength=len(docs))
        nonzero = scores != 0  # negative rank_bm25-floored idf can cancel out
        if not nonzero.all():
            scores, docs = scores[nonzero], docs[nonzero]
        return scores, docs

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[RankedHits]:
        """:meth:`retrieve` for each query, batched into sparse matrix products."""
        self._check_ready(k)
        if isinstance(queries, str):
            raise TypeError("retrieve_many expects a sequence of queries, not one string")
        if self.engine == "rank_bm25":
            return [self._retrieve_rank_bm25(q, k) for q in queries]
        assert self._weights is not None
        weights = self._weights
        qm = self._query_matrix(queries)
        # Entries each query can produce at most: the postings of its terms.
        postings = np.diff(weights.indptr)
        cost = np.asarray(qm @ postings.astype(np.float64)).ravel()
        results: list[RankedHits] = []
        start = 0
        while start < len(queries):
            stop, total = start + 1, cost[start]
            while stop < len(queries) and total + cost[stop] <= _BATCH_ENTRIES:
                total += cost[stop]
                stop += 1
            scores = (qm[start:stop] @ weights).tocsr()
            scores.sort_indices()  # _top relies on ascending document numbers
            for row in range(stop - start):
                lo, hi = scores.indptr[row], scores.indptr[row + 1]
                results.append(self._top(scores.data[lo:hi], scores.indices[lo:hi], k))
            start = stop
        return results

    def _retrieve_rank_bm25(self, query: str, k: int) -> RankedHits:
        if self._okapi is None:
            return RankedHits([], [])
        scores = np.asarray(self._okapi.get_scores(self.tokenizer(query)), dtype=np.float64)
        docs = (scores != 0).nonzero()[0]
        return self._top(scores[docs], docs, k)
