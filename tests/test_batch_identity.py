"""Every built-in retriever gives bit-identical ids and scores for a query asked alone, in a
batch, in another batch or in another order (non-negotiable 1)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DOCS, QUERIES

from pytest_ragbench.datasets import Document, Query
from pytest_ragbench.embedders import HashingEmbedder
from pytest_ragbench.metrics.retrieval import trec_order
from pytest_ragbench.retrievers.bm25 import BM25Retriever
from pytest_ragbench.retrievers.dense import DenseRetriever, exact_scores, normalise_each_row
from pytest_ragbench.retrievers.http import HTTPRetriever
from pytest_ragbench.retrievers.hybrid import HybridRetriever, fuse
from pytest_ragbench.retrievers.runfile import RunFileRetriever

WORDS = [f"w{i}" for i in range(300)]


def corpus(n: int = 600, seed: int = 7) -> list[Document]:
    rng = random.Random(seed)
    return [Document(id=f"d{i:04d}", title=" ".join(rng.choices(WORDS, k=3)),
                     text=" ".join(rng.choices(WORDS, k=rng.randint(5, 40))))
            for i in range(n)]


def queries(n: int = 120, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out = [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(n)]
    return [*out, "w1 w1 w2", "no-such-word", ""]


def bits(hits: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
    """Ids and exact float bit patterns (``==`` alone would equate 0.0 and -0.0)."""
    return [(str(d), float(s).hex()) for d, s in hits]


def run(coro: Any) -> Any:
    return asyncio.run(coro) if asyncio.iscoroutine(coro) else coro


def assert_batched_equals_alone(retriever: Any, texts: list[str], k: int) -> None:
    alone = [bits(run(retriever.retrieve(q, k))) for q in texts]
    assert any(alone), "the retriever found nothing: the comparison would be empty"
    batched = [bits(h) for h in run(retriever.retrieve_many(texts, k))]
    assert batched == alone
    # other batch compositions and orders
    shuffled = list(range(len(texts)))
    random.Random(3).shuffle(shuffled)
    again = run(retriever.retrieve_many([texts[i] for i in shuffled], k))
    assert [bits(h) for h in again] == [alone[i] for i in shuffled]
    for size in (2, 7):
        parts = [run(retriever.retrieve_many(texts[i:i + size], k))
                 for i in range(0, len(texts), size)]
        assert [bits(h) for part in parts for h in part] == alone


@pytest.fixture(scope="module")
def dense_index() -> DenseRetriever:
    """One index for every k: indexing does not depend on k, and what retrieving keeps (a
    float64 copy of the index) holds the same values (tests/unit/test_dense_exact.py)."""
    dense = DenseRetriever(embedder=HashingEmbedder(dim=384), batch_size=16)
    asyncio.run(dense.index(corpus()))
    return dense


@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_dense_batched_equals_unbatched(k: int, dense_index: DenseRetriever) -> None:
    assert_batched_equals_alone(dense_index, queries(), k)


def test_dense_finds_the_exact_top_k() -> None:
    """The float32 screening never loses a document of the exact float64 top k."""
    docs = corpus(400)
    dense = DenseRetriever(embedder=HashingEmbedder(dim=64, char_ngrams=0), batch_size=50)
    asyncio.run(dense.index(docs))
    matrix = dense._matrix
    assert matrix is not None
    ids = dense._ids
    for text in queries(60):
        q = normalise_each_row(HashingEmbedder(dim=64, char_ngrams=0).embed_sync([text]))[0]
        every = exact_scores(matrix, np.arange(len(ids)), q)
        # the exact top k: float64 scores, equal ones by id descending (trec_order compares
        # in single precision, as trec_eval stores scores; the retriever's cut is exact)
        best = sorted(range(len(ids)), key=lambda i: (float(every[i]), ids[i]), reverse=True)
        expected = [ids[i] for i in best[:10]]
        got = asyncio.run(dense.retrieve(text, 10))
        assert [d for d, _ in got] == expected
        assert [s for _, s in got] == [float(every[ids.index(d)]) for d in expected]


def test_dense_from_a_memory_mapped_cache_scores_the_same(tmp_path: Path) -> None:
    spec = {"type": "hashing", "dim": 128}
    fresh = DenseRetriever(embedder=spec)
    asyncio.run(fresh.index(corpus()))
    first = DenseRetriever(embedder=spec, cache_dir=tmp_path)
    asyncio.run(first.index(corpus()))
    cached = DenseRetriever(embedder=spec, cache_dir=tmp_path)
    asyncio.run(cached.index(corpus()))
    assert cached.loaded_from_cache
    texts = queries(40)
    want = [bits(h) for h in asyncio.run(fresh.retrieve_many(texts, 10))]
    assert [bits(h) for h in asyncio.run(cached.retrieve_many(texts, 10))] == want
    assert [bits(asyncio.run(cached.retrieve(q, 10))) for q in texts] == want


@pytest.mark.parametrize("engine", ["sparse", "rank_bm25"])
@pytest.mark.parametrize("k", [3, 100])
def test_bm25_batched_equals_unbatched(engine: str, k: int) -> None:
    bm25 = BM25Retriever(engine=engine, stemmer=None, stopwords=None)
    bm25.index(corpus())
    assert_batched_equals_alone(bm25, queries(), k)


@pytest.mark.parametrize("method", ["rrf", "weighted"])
def test_hybrid_over_batched_rankings_equals_unbatched(method: str) -> None:
    docs = corpus()
    dense = DenseRetriever(embedder=HashingEmbedder(dim=256), batch_size=8)
    bm25 = BM25Retriever(stemmer=None, stopwords=None)
    hybrid = HybridRetriever(retrievers=[bm25, dense], method=method, weights=[0.3, 0.7],
                             depth=50)
    asyncio.run(hybrid.index(docs))
    texts = queries(80)
    alone = [bits(asyncio.run(hybrid.retrieve(q, 10))) for q in texts]
    cases = [bits(asyncio.run(hybrid.retrieve_case(Query(id=f"q{i}", text=q), 10)))
             for i, q in enumerate(texts)]
    assert cases == alone and any(alone)
    # the same fusion over the sub-retrievers' batched rankings
    sparse = bm25.retrieve_many(texts, 50)
    cosine = asyncio.run(dense.retrieve_many(texts, 50))
    fused = [bits(fuse([list(a), list(b)], [0.3, 0.7], method, 60.0, 10))
             for a, b in zip(sparse, cosine, strict=True)]
    assert fused == alone


@pytest.mark.filterwarnings("ignore::pytest_ragbench.retrievers.runfile.RunDepthWarning")
def test_run_file_answers_do_not_depend_on_order(tmp_path: Path) -> None:
    # the run file is deeper than k on purpose: the warning saying so is tested elsewhere
    rng = random.Random(5)
    lines = [f"q{q} Q0 d{d:04d} 0 {rng.random() * 10:.17g} sys"
             for q in range(30) for d in rng.sample(range(600), 40)]
    path = tmp_path / "run.trec"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    asked = [Query(id=f"q{q}", text="") for q in range(30)]

    def answers(order: list[int]) -> dict[str, list[tuple[str, str]]]:
        r = RunFileRetriever(path=str(path))
        r.index(corpus())
        return {asked[i].id: bits(r.retrieve_case(asked[i], 10)) for i in order}

    forward = answers(list(range(30)))
    assert all(len(v) == 10 for v in forward.values())
    assert answers(list(reversed(range(30)))) == forward


@pytest.fixture
def search_service() -> Iterator[str]:
    """A retrieval service on 127.0.0.1 scoring by float64 word overlap / length."""
    yield from serve_search(corpus())


def serve_search(docs: Sequence[Document]) -> Iterator[str]:
    """Serve ``docs`` on 127.0.0.1 until the generator is closed; yields the search URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            words = set(body["query"].split())
            scored = [(d.id, len(words & set(d.text.split())) / (1 + len(d.text)))
                      for d in docs]
            ranked = trec_order([s for s in scored if s[1] > 0])[: body["k"]]
            score = dict(scored)
            data = json.dumps({"results": [{"id": d, "score": score[d]} for d in ranked]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # all the concurrent requests at once

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)  # shutdown() waits up to one poll
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/search"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_concurrent_answers_equal_sequential(search_service: str) -> None:
    texts = queries(40)
    asked = [Query(id=f"q{i}", text=t) for i, t in enumerate(texts)]

    async def sequential() -> list[list[tuple[str, str]]]:
        r = HTTPRetriever(url=search_service, retries=0)
        try:
            return [bits(await r.retrieve_case(q, 10)) for q in asked]
        finally:
            await r.aclose()

    async def concurrent() -> list[list[tuple[str, str]]]:
        r = HTTPRetriever(url=search_service, retries=0)
        try:
            got = await asyncio.gather(*(r.retrieve_case(q, 10) for q in reversed(asked)))
            return [bits(h) for h in reversed(got)]
        finally:
            await r.aclose()

    one = asyncio.run(sequential())
    assert any(one)
    assert asyncio.run(concurrent()) == one


# -- through the plugin: -n 0 and -n 2 batch differently, and must not score differently ---


def _comparable(root: Path, skip: tuple[str, ...] = ()) -> tuple[Any, list[dict[str, Any]]]:
    """The latest run's summary of each suite and its records, but those of the suites named
    in ``skip``."""
    run_dir = (root / ".ragbench" / "runs" / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    records = [json.loads(line) for line in
               (run_dir / "cases.jsonl").read_text(encoding="utf-8").splitlines()]
    records = [r for r in records if r["suite_name"] not in skip]
    for record in records:
        record.pop("latency_ms", None)  # wall time, the one thing allowed to differ
    suites = [s for s in summary["suites"] if s["name"] not in skip]
    return suites, sorted(records, key=lambda r: (r["retriever"], r["case_id"]))


def test_batching_retrievers_serial_equals_xdist(pytester, mini_suite, monkeypatch) -> None:
    # Every built-in retriever in one suite: one serial and one xdist run check them all. The
    # runs also collect the suite of tests/test_interop_runfile.py and save run files
    # (--ragbench-save-run), which must be byte-identical with -n 0 and -n 2; the xdist run
    # also collects the suite of tests/test_components_plugin.py whose checks need workers
    # (worker start-up is most of an xdist run's time).
    # So does the fixed suite of tests/test_prechecks.py (with a CLI gate spelled right).
    from test_components_plugin import check_xdist_run, prepare_xdist_suite
    from test_interop_runfile import SUITE as RUNFILE_SUITE
    from test_interop_runfile import TIED
    from test_prechecks import fixed_suite_under_xdist

    pytester.makepyfile(tied_retriever=TIED)
    (pytester.path / "runfile.yaml").write_text(RUNFILE_SUITE, encoding="utf-8")
    components = prepare_xdist_suite(pytester, monkeypatch)
    with fixed_suite_under_xdist(pytester, monkeypatch) as (fixed_args, check_fixed):
        _serial_equals_xdist(pytester, mini_suite, components, fixed_args)
        check_fixed()
    check_xdist_run(pytester)


def _serial_equals_xdist(pytester: pytest.Pytester, mini_suite: Any, components: str,
                         fixed_args: list[str]) -> None:
    docs = [Document(id=d["_id"], text=d["text"]) for d in DOCS]
    run_lines = []
    for q in QUERIES:
        words = set(q["text"].split())
        # whole-number scores: ties that only trec_eval's order breaks
        for d in docs:
            run_lines.append(f"{q['_id']} Q0 {d.id} 0 {len(words & set(d.text.split()))} r")
    (pytester.path / "run.trec").write_text("\n".join(run_lines) + "\n", encoding="utf-8")
    service = serve_search(docs)
    url = next(service)
    try:
        mini_suite(f"""
            name: batching
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
            retrievers:
              bm25: {{}}
              dense: {{type: dense, embedder: {{type: hashing, dim: 384}}, batch_size: 2}}
              fused_rrf: {{type: hybrid, retrievers: [bm25, dense], method: rrf,
                          weights: [0.4, 0.6]}}
              fused_weighted: {{type: hybrid, retrievers: [bm25, dense], method: weighted,
                               weights: [0.4, 0.6]}}
              replayed: {{type: run, path: run.trec}}
              service: {{type: http, url: "{url}", retries: 0}}
            metrics: [ndcg@10, recall@10, mrr@10]
        """)
        suites = ("--ragbench=suite.yaml", "--ragbench=runfile.yaml")
        serial = pytester.runpytest(*suites, "--ragbench-save-run=runs", "-p", "no:randomly")
        serial.assert_outcomes(passed=30 + 15)
        serial_suites, serial_records = _comparable(pytester.path)
        parallel = pytester.runpytest(*suites, f"--ragbench={components}", *fixed_args,
                                      "--ragbench-save-run=runs2", "-n", "2")
        parallel.assert_outcomes(passed=30 + 15 + 15 + 15)
        parallel_suites, parallel_records = _comparable(pytester.path,
                                                        skip=("components", "pre"))
    finally:
        service.close()
    for name in ("dense", "fused_rrf", "fused_weighted", "replayed", "service"):
        assert any(r["retrieved"] for r in serial_records if r["retriever"] == name), name
    assert parallel_records == serial_records
    assert parallel_suites == serial_suites
    runs = {p.name: p.read_bytes() for p in (pytester.path / "runs").iterdir()}
    assert {"mini.overlap.trec", "mini.pruned.trec", "mini.tied.trec"} <= set(runs)
    assert {p.name: p.read_bytes() for p in (pytester.path / "runs2").iterdir()
            if not p.name.startswith(("components.", "pre."))} == runs
