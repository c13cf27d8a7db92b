"""Exact dense retrieval: cosine similarity over normalised float32 embeddings, with numpy.

The corpus is embedded once (in batches of ``batch_size`` texts) by the retriever's embedder,
rows are L2-normalised, and the top ``k`` come back by exact float64 score, ties by document id
descending (the metrics reorder them as trec_eval does, comparing scores in single
precision). No approximate index: the point is a faithful baseline.

Scores are bit-identical whether a query is asked alone or in a batch, in any process. A
float32 matrix product is not: BLAS sums a matrix-vector and a matrix-matrix product in
different orders, so the same query got scores differing in the 7th digit and could rank
differently. Hence two steps:

1. screening: one float32 product for a block of queries (fast BLAS) finds the candidates,
   every document whose approximate score is within twice the product's rounding error bound
   of the k-th best (so the exact top k is always among them);
2. scoring: each candidate's score is recomputed in float64 from the same float32 vectors,
   products exact (24-bit mantissas multiply exactly in 53 bits) and summed per row by numpy's
   pairwise summation, whose order depends only on the vector length. Those scores, the ones
   reported and ranked, depend on nothing but the two vectors.

Suite syntax: the embedder is a nested component spec::

    retrievers:
      dense:
        type: dense
        embedder: {type: hashing, dim: 256}        # or just: embedder: hashing
        batch_size: 64

On-disk cache: with a ``cache_dir`` (pytest's cache folder by default), the embedding matrix is
stored as ``dense-<key>/vectors.npy`` plus ``ids.json``, where ``key`` hashes the corpus content
(ids, titles, texts), the fields and prefixes, and the embedder's ``provider_id``; later runs
and other xdist workers memory-map it (``np.load(mmap_mode="r")``) instead of embedding again.
The folder is written under a temporary name and renamed into place, so a reader never sees a
partial index; a lock file
``dense-<key>.lock`` beside it makes processes that miss the cache at once embed the corpus
once between them (the others wait and load it). An embedder without a ``provider_id`` (an
instance, or a registered type: its spec says nothing of its code) disables the cache, with
an :class:`UncachedEmbedderWarning` (a wrong cache hit would be silent).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..datasets import Document, update_hash_with_documents
from ..llm.identity import canonical_json
from ..registry import BuildContext, split_spec
from .cachelock import exclusive_lock_async, remove_stale_builds, use_lease

CACHE_FORMAT_VERSION = 1

FIELDS = ("flat", "text")
# Upper bound on query x document scores materialised at once by retrieve_many.
_SCORE_BLOCK = 16_000_000
# Upper bound on the float64 products materialised at once when scoring candidates.
_EXACT_BLOCK = 4_000_000
# Largest float64 copy of the index kept for scoring (bytes): below it, scoring many candidates
# per query (k near the corpus size) skips gathering and widening the float32 rows each time.
_WIDE_MAX = 64 * 1024 * 1024


class UncachedEmbedderWarning(UserWarning):
    """A dense retriever with a cache folder whose embedder has no ``provider_id``: its
    embeddings are computed again by every process and run, not cached."""


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """float32 copy of ``matrix`` with unit-length rows (all-zero rows stay zero)."""
    out = np.array(matrix, dtype=np.float32, copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the ``k`` best scores, best first, ties by index ascending (exactly)."""
    n = scores.shape[0]
    if k >= n:
        cand = np.arange(n)
    else:
        part = np.argpartition(-scores, k - 1)[:k]
        # Every index scoring at least the k-th best, so ties at the boundary are decided by
        # index and not by argpartition's arbitrary choice.
        cand = np.flatnonzero(scores >= scores[part].min())
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k]


def normalise_each_row(matrix: np.ndarray) -> np.ndarray:
    """:func:`normalise_rows` applied to one row at a time, so a row's result cannot depend
    on which other rows came with it (a query alone or in a batch)."""
    out = np.empty(matrix.shape, dtype=np.float32)
    for i in range(matrix.shape[0]):
        out[i] = normalise_rows(matrix[i:i + 1])[0]
    return out


def exact_scores(matrix: np.ndarray, rows: np.ndarray | None, query: np.ndarray) -> np.ndarray:
    """float64 dot products of ``query`` with ``matrix[rows]`` (every row when ``rows`` is
    None): exact float32 x float32 products summed per row in a fixed order (numpy's pairwise
    sum along a contiguous row). ``matrix`` may be the float32 index or its exact float64 copy:
    the scores are the same bits."""
    q = np.asarray(query, dtype=np.float64)
    n = matrix.shape[0] if rows is None else rows.shape[0]
    out = np.empty(n, dtype=np.float64)
    step = max(1, _EXACT_BLOCK // max(1, q.shape[0]))
    for start in range(0, n, step):
        part = matrix[start:start + step] if rows is None else matrix[rows[start:start + step]]
        chunk = np.asarray(part, dtype=np.float64)
        out[start:start + step] = np.add.reduce(chunk * q, axis=1)
    return out


def screening_margin(dim: int) -> float:
    """Twice a bound on |float32 dot - exact dot| for vectors of norm <= 1 in ``dim``
    dimensions (gamma_dim = dim * u / (1 - dim * u), u = 2**-24, any summation order),
    doubled again for the norms' own rounding."""
    u = 2.0 ** -24
    gamma = (dim + 2) * u / (1.0 - (dim + 2) * u)
    return 4.0 * gamma


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class DenseRetriever:
    """Exact cosine top-k over an embedder's vectors (module docs); a ``Retriever``.

    Parameters: ``embedder`` (a nested spec ``{type: ..., ...}``, a name, or an embedder
    object), ``batch_size`` (texts per embed call), ``fields`` (``"flat"``: title and text;
    ``"text"``: text only), ``query_prefix`` / ``doc_prefix`` (prepended before embedding, e.g.
    ``"query: "`` for E5 models). ``index`` and ``retrieve`` are coroutines.
    """

    def __init__(self, *, embedder: Any, batch_size: int = 64, fields: str = "flat",
                 query_prefix: str = "", doc_prefix: str = "",
                 cache_dir: str | Path | None = None,
                 context: BuildContext | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if fields not in FIELDS:
            raise ValueError(f"fields must be one of {', '.join(FIELDS)}, got {fields!r}")
        self._spec: Any = None
        self._name = context.name if context is not None else ""
        if isinstance(embedder, str | Mapping):
            self._spec = split_spec("embedder", embedder)
            ctx = context if context is not None else BuildContext()
            self.embedder = ctx.build("embedder", embedder)
        else:
            if not callable(getattr(embedder, "embed", None)):
                raise ValueError("embedder must be a spec or an object with embed(texts)")
            self.embedder = embedder
        self.batch_size = batch_size
        self.fields = fields
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_path: Path | None = None
        self.loaded_from_cache = False
        self._ids: list[str] = []
        self._id_array = np.zeros(0, dtype=object)
        self._matrix: np.ndarray | None = None
        # (the index, its float64 copy) for exact scoring: see _wide_matrix
        self._wide: tuple[np.ndarray, np.ndarray] | None = None
        # the shared lock on the cache entry's use file while this retriever maps it
        self._lease: IO[bytes] | None = None

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """Collection-time check of the nested embedder spec (nothing is built)."""
        spec = params.get("embedder")
        if isinstance(spec, str | Mapping):
            context.check("embedder", spec, key="embedder")

    def describe(self) -> dict[str, Any]:
        """Parameters for reports."""
        return {"retriever": "dense", "embedder": self._identity(), "fields": self.fields,
                "num_docs": len(self._ids),
                "dim": None if self._matrix is None else int(self._matrix.shape[1])}

    # -- identity and cache ----------------------------------------------------------------

    def _identity(self) -> str | None:
        """The embedder's ``provider_id``, or None: then nothing is cached, with a warning.

        A spec's type and parameters are no identity: a registered embedder's code (a
        conftest's, a plugin's in development, a model it loads) changes while they stay the
        same, and the cache served the old vectors without a word. Every built-in embedder
        has a ``provider_id``.
        """
        pid = getattr(self.embedder, "provider_id", None)
        if pid is not None and callable(getattr(pid, "as_dict", None)):
            return canonical_json(pid.as_dict())
        if isinstance(pid, str) and pid:
            return pid
        named = (f"embedder {self._spec[0]!r}" if self._spec is not None
                 else f"embedder {type(self.embedder).__name__}")
        warnings.warn(UncachedEmbedderWarning(
            f"dense retriever{f' {self._name!r}' if self._name else ''}: {named} has no "
            "provider_id, so its embeddings are not cached (a change to its code would not "
            "change the cache key); give it a provider_id attribute, a string to change "
            "whenever its vectors would, to cache them"), stacklevel=2)
        return None

    def _cache_key(self, corpus: Sequence[Document], identity: str) -> str:
        h = hashlib.sha256()
        h.update(canonical_json({
            "format": CACHE_FORMAT_VERSION, "embedder": identity, "fields": self.fields,
            "doc_prefix": self.doc_prefix,
        }).encode("utf-8"))
        update_hash_with_documents(h, corpus)
        return h.hexdigest()[:32]

    def _load_cache(self, path: Path) -> bool:
        try:
            ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
            matrix = np.load(path / "vectors.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            # EOFError: an empty vectors.npy (a crash before its data reached the disk), which
            # failed every case of the retriever instead of being embedded again
            return False
        if (ids != self._ids or matrix.dtype != np.float32 or matrix.ndim != 2
                or matrix.shape[0] != len(self._ids)):
            return False
        # a damaged file of the right size: a NaN row was ranked last and cut one hit short
        if not np.isfinite(matrix).all():
            return False
        self._matrix = matrix
        return True

    def _save_cache(self, path: Path, matrix: np.ndarray) -> None:
        """Write the entry next to ``path`` and rename it into place (the caller holds the
        cache's lock and could not load ``path``: an entry there is unusable)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            entry = tmp / "entry"
            entry.mkdir()
            np.save(entry / "vectors.npy", matrix, allow_pickle=False)
            (entry / "ids.json").write_text(json.dumps(self._ids, ensure_ascii=False),
                                            encoding="utf-8")
            # on disk before the rename makes the entry visible: after a crash, a renamed
            # file whose data never arrived would be an empty entry
            for f in entry.iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            if path.exists():
                # moved aside first, as a rename cannot replace a non-empty folder: kept,
                # every later run (and each xdist worker) embedded the corpus again
                os.rename(path, tmp / "unusable")
            # another process may have renamed an identical entry into place first: theirs
            with contextlib.suppress(OSError):
                os.rename(entry, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- embedding -------------------------------------------------------------------------

    async def _embed(self, texts: Sequence[str], each_row: bool = False) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i:i + self.batch_size])
            arr = np.asarray(await _maybe_await(self.embedder.embed(batch)))
            if arr.ndim != 2 or arr.shape[0] != len(batch):
                raise ValueError(f"the embedder returned shape {arr.shape} for {len(batch)} "
                                 "texts, expected (n, d)")
            if not np.all(np.isfinite(arr)):
                raise ValueError("the embedder returned non-finite values")
            parts.append(arr)
        dims = {p.shape[1] for p in parts}
        if len(dims) > 1:
            raise ValueError(f"the embedder returned mixed dimensions {sorted(dims)}")
        matrix = np.concatenate(parts, axis=0)
        return normalise_each_row(matrix) if each_row else normalise_rows(matrix)

    def _doc_text(self, doc: Document) -> str:
        text = f"{doc.title} {doc.text}".strip() if self.fields == "flat" else doc.text
        return self.doc_prefix + text

    # -- the Retriever contract ------------------------------------------------------------

    async def index(self, corpus: Sequence[Document]) -> None:
        """Embed ``corpus`` (or memory-map a cached embedding of the same corpus)."""
        if not corpus:
            raise ValueError("cannot index an empty corpus")
        # Descending id order: equal scores then rank by row number, which is trec order.
        docs = sorted(corpus, key=lambda d: d.id, reverse=True)
        self._ids = [d.id for d in docs]
        if len(set(self._ids)) != len(self._ids):
            raise ValueError("document ids must be unique")
        self._id_array = np.asarray(self._ids, dtype=object)
        self.loaded_from_cache = False
        self.cache_path = None
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        identity = self._identity() if self.cache_dir is not None else None
        if self.cache_dir is None or identity is None:
            self._matrix = await self._embed([self._doc_text(d) for d in docs])
            return
        key = self._cache_key(docs, identity)
        self.cache_path = self.cache_dir / f"dense-{key}"
        # held while this process maps the entry: `ragbench cache prune` leaves it be
        self._lease = use_lease(self.cache_dir / f"dense-{key}.use")
        if self._load_cache(self.cache_path):
            self.loaded_from_cache = True
            return
        matrix: np.ndarray | None = None
        embedding = False
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # One embedder per corpus: xdist workers on a cold cache would each pay for
            # embedding the whole corpus (requests, cost, rate limit); all but the first find
            # it cached.
            async with exclusive_lock_async(self.cache_dir / f"dense-{key}.lock"):
                if self._load_cache(self.cache_path):
                    self.loaded_from_cache = True
                    return
                remove_stale_builds(self.cache_dir, self.cache_path.name)
                embedding = True
                matrix = await self._embed([self._doc_text(d) for d in docs])
                self._save_cache(self.cache_path, matrix)
        except OSError:
            if embedding and matrix is None:
                raise  # the embedder's own failure
            # the cache folder cannot be written (a read-only project or cache, a lock that
            # cannot be opened): the matrix is this process's own, as without a cache,
            # rather than every case failing
            self.cache_path = None
            if self._lease is not None:
                self._lease.close()
                self._lease = None
            if matrix is None:
                matrix = await self._embed([self._doc_text(d) for d in docs])
            self._matrix = matrix
            return
        assert matrix is not None
        with contextlib.suppress(OSError, ValueError):
            # Serve from the mapped file, so the memory is shared with other workers.
            if self._load_cache(self.cache_path):
                return
        self._matrix = matrix

    def _hits(self, matrix: np.ndarray, approx: np.ndarray, query: np.ndarray,
              k: int) -> list[tuple[str, float]]:
        """The top ``k`` by exact score, among the candidates the float32 ``approx`` allows."""
        n = approx.shape[0]
        if k >= n:
            cand = np.arange(n)
            scores = exact_scores(self._wide_matrix(matrix), None, query)
        else:
            kth = float(np.partition(approx, n - k)[n - k])
            cand = np.flatnonzero(approx >= kth - screening_margin(matrix.shape[1]))
            # few candidates: gathering and widening just those rows is cheaper
            source = self._wide_matrix(matrix) if 4 * cand.shape[0] >= n else matrix
            scores = exact_scores(source, cand, query)
        # cand ascends, so top_k's ties by position are ties by row: trec order
        best = top_k(scores, k)
        ids = self._ids
        # tolist() gives the same Python floats as float() of each numpy scalar, at once
        return [(ids[c], s) for c, s in zip(cand[best].tolist(), scores[best].tolist(),
                                            strict=True)]

    def _wide_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """``matrix`` as float64 (exact), kept while the index is small enough; else itself."""
        if matrix.nbytes * 2 > _WIDE_MAX:
            return matrix
        if self._wide is None or self._wide[0] is not matrix:
            self._wide = (matrix, np.asarray(matrix, dtype=np.float64))
        return self._wide[1]

    def _ready(self, k: int) -> np.ndarray:
        if self._matrix is None:
            raise RuntimeError("index() must be called before retrieve()")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return self._matrix

    async def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` documents most similar to ``query`` with their cosine similarity."""
        return (await self.retrieve_many([query], k))[0]

    async def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        """:meth:`retrieve` for many queries: one embedding pass, blocked matrix products."""
        matrix = self._ready(k)
        if not queries:
            return []
        q = await self._embed([self.query_prefix + text for text in queries], each_row=True)
        if q.shape[1] != matrix.shape[1]:
            raise ValueError(f"query vectors have dimension {q.shape[1]}, the index "
                             f"{matrix.shape[1]}")
        out: list[list[tuple[str, float]]] = []
        block = max(1, _SCORE_BLOCK // max(1, matrix.shape[0]))
        for start in range(0, len(queries), block):
            approx = np.asarray(matrix @ q[start:start + block].T)  # (n_docs, block)
            out.extend(self._hits(matrix, approx[:, j], q[start + j], k)
                       for j in range(approx.shape[1]))
        return out

    async def aclose(self) -> None:
        """Close the embedder if it holds resources (an HTTP client); let go of the cache
        entry's lease."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        for name in ("aclose", "close"):
            fn = getattr(self.embedder, name, None)
            if callable(fn):
                await _maybe_await(fn())
                return
