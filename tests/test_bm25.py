"""BM25 retriever: scores against rank_bm25 and a hand-written Lucene formula, ordering, the
tokenizer, the on-disk index cache and parameter validation."""

from __future__ import annotations

import inspect
import json
import math
import mmap
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi

from pytest_ragbench.datasets import Document
from pytest_ragbench.retrievers import Retriever
from pytest_ragbench.retrievers.bm25 import BM25Retriever
from pytest_ragbench.retrievers.tokenize import LUCENE_STOPWORDS, TEXT_BREAK, Tokenizer

# "food" is in more than half of the documents, so rank_bm25's idf is negative for it and gets
# floored: the comparison below covers the flooring too.
TEXTS = (
    ("Coffee and health", "Drinking coffee may lower the risk of liver disease. Food matters."),
    ("Green tea", "Green tea contains catechins; food with tea is common in Japan."),
    ("Espresso", "Espresso is brewed by forcing hot water through finely ground coffee."),
    ("Breakfast", "A healthy breakfast: oats, berries and food rich in fibre."),
    ("Vitamin D", "Vitamin D is made in the skin from sunlight and found in oily fish food."),
    ("Statins", "Statins lower cholesterol and the risk of heart disease."),
    ("Cholesterol", "Dietary cholesterol from eggs affects blood cholesterol less than thought."),
    ("Salt", "Too much salt in food raises blood pressure in many people."),
    ("Sugar", "Sugar-sweetened drinks are linked to diabetes and weight gain; food too."),
    ("Fibre", "Fibre from whole grains helps digestion and feeds gut bacteria. Food."),
    ("Running", "Running every day improves heart health and mood."),
    ("Sleep", "Sleep deprivation raises the risk of obesity and food cravings."),
    ("Berries", "Berries are rich in antioxidants and make a good food for the brain."),
    ("Fish oil", "Fish oil supplements and omega-3 fats: evidence for heart disease is mixed."),
    ("Nuts", "Eating nuts is associated with lower mortality; nuts are a dense food."),
    ("Red meat", "Processed red meat is a risk factor for colorectal cancer, food studies say."),
    ("Soy", "Soy foods and breast cancer: soy food intake and survival."),
    ("Broccoli", "Broccoli sprouts contain sulforaphane, a food compound studied in cancer."),
    ("Turmeric", "Curcumin from turmeric is poorly absorbed unless eaten with black pepper."),
    ("Garlic", "Garlic may modestly lower blood pressure; garlic food supplements vary."),
    ("Milk", "Milk intake and bone fractures: more milk food did not prevent fractures."),
    ("Eggs", "Eggs, cholesterol and heart disease: the food debate continues."),
    ("Water", "Drinking water before meals helps weight loss in some trials."),
    ("Fasting", "Intermittent fasting and food timing: effects on weight and insulin."),
    ("Chocolate", "Dark chocolate flavanols may improve blood flow; chocolate is a food."),
    ("Apples", "An apple a day: apples, apple peel and food polyphenols."),
    ("Beans", "Beans and lentils are cheap food sources of protein and fibre."),
    ("Spinach", "Spinach nitrates improve muscle efficiency in athletes; spinach food."),
    ("Alcohol", "Alcohol raises the risk of breast cancer even at low doses."),
    ("Coffee and sleep", "Coffee late in the day disturbs sleep; caffeine has a long half-life."),
)
CORPUS = tuple(
    Document(id=f"doc-{i:02d}", title=title, text=text) for i, (title, text) in enumerate(TEXTS)
)
QUERIES = (
    "coffee",
    "heart disease risk",
    "cholesterol cholesterol eggs",
    "food",
    "breast cancer soy food",
    "blood pressure salt garlic",
    "sleep and coffee",
    "Running improves mood",
    "fibre from whole grains and beans",
    "does milk prevent fractures?",
    "chocolate",
)


def tokens_of(tok: Tokenizer, doc: Document) -> list[str]:
    return tok(f"{doc.title} {doc.text}")


def lucene_reference(
    corpus: tuple[Document, ...], query: str, k1: float = 0.9, b: float = 0.4
) -> dict[str, float]:
    """Textbook BM25 with Lucene's idf, written out term by term, no matrices."""
    tok = Tokenizer()
    docs = {d.id: Counter(tokens_of(tok, d)) for d in corpus}
    lengths = {i: sum(c.values()) for i, c in docs.items()}
    n = sum(1 for length in lengths.values() if length > 0)
    avgdl = sum(lengths.values()) / n
    scores: dict[str, float] = {}
    for term in tok(query):
        df = sum(1 for c in docs.values() if term in c)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for doc_id, c in docs.items():
            tf = c.get(term, 0)
            if tf:
                norm = k1 * (1 - b + b * lengths[doc_id] / avgdl)
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (k1 + 1) / (tf + norm)
    return scores


def trec_sorted(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Score descending, then id descending (trec_eval's order), by two stable sorts."""
    by_id = sorted(scores.items(), key=lambda kv: kv[0], reverse=True)
    return sorted(by_id, key=lambda kv: -kv[1])


@pytest.fixture(scope="module")
def lucene() -> BM25Retriever:
    r = BM25Retriever()
    r.index(CORPUS)
    return r


# -- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES)
def test_sparse_matches_hand_written_lucene_formula(lucene: BM25Retriever, query: str) -> None:
    expected = lucene_reference(CORPUS, query)
    hits = lucene.retrieve(query, len(CORPUS))
    assert [d for d, _ in hits] == [d for d, _ in trec_sorted(expected)]
    for doc_id, score in hits:
        assert score == pytest.approx(expected[doc_id], abs=1e-9)


@pytest.mark.parametrize("k1,b", [(0.9, 0.4), (1.5, 0.75), (0.5, 0.0), (2.0, 1.0)])
def test_sparse_with_rank_bm25_idf_reproduces_bm25okapi(k1: float, b: float) -> None:
    tok = Tokenizer()
    okapi = BM25Okapi([tokens_of(tok, d) for d in CORPUS], k1=k1, b=b)
    df_food = sum("food" in tokens_of(tok, d) for d in CORPUS)
    assert df_food > len(CORPUS) / 2  # so rank_bm25 floors its idf
    assert okapi.idf["food"] == pytest.approx(0.25 * okapi.average_idf)
    sparse = BM25Retriever(k1=k1, b=b, idf="rank_bm25")
    sparse.index(CORPUS)
    engine = BM25Retriever(k1=k1, b=b, engine="rank_bm25")
    engine.index(CORPUS)
    for query in QUERIES:
        raw = okapi.get_scores(tok(query))
        expected = trec_sorted({d.id: float(s) for d, s in zip(CORPUS, raw, strict=True) if s})
        for retriever in (sparse, engine):
            hits = retriever.retrieve(query, len(CORPUS))
            assert [d for d, _ in hits] == [d for d, _ in expected], query
            assert np.allclose([s for _, s in hits], [s for _, s in expected], rtol=0, atol=1e-9)


def test_k1_zero_on_the_sparse_engine_sums_idf(lucene: BM25Retriever) -> None:
    r = BM25Retriever(k1=0.0)
    r.index(CORPUS)
    ref = lucene_reference(CORPUS, "heart disease risk", k1=0.0)
    hits = r.retrieve("heart disease risk", 100)
    assert dict(hits) == pytest.approx(ref, abs=1e-12)


def test_frequent_term_idf_differs_between_variants(lucene: BM25Retriever) -> None:
    # "food" is in most documents: Lucene's idf stays positive and small, rank_bm25 floors it.
    rb = BM25Retriever(idf="rank_bm25")
    rb.index(CORPUS)
    food_lucene = dict(lucene.retrieve("food", 100))
    food_rb = dict(rb.retrieve("food", 100))
    assert set(food_lucene) == set(food_rb)
    assert len(food_lucene) > len(CORPUS) / 2
    assert not np.allclose(sorted(food_lucene.values()), sorted(food_rb.values()))


words = st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])


@settings(max_examples=40, deadline=None)
@given(
    docs=st.lists(st.lists(words, min_size=0, max_size=12), min_size=1, max_size=15),
    query=st.lists(words, min_size=1, max_size=5),
)
def test_property_sparse_equals_bm25okapi(docs: list[list[str]], query: list[str]) -> None:
    corpus = [Document(id=f"d{i}", text=" ".join(ws)) for i, ws in enumerate(docs)]
    if not any(docs):
        return  # BM25Okapi divides by the vocabulary size
    okapi = BM25Okapi(docs, k1=1.2, b=0.75)
    sparse = BM25Retriever(k1=1.2, b=0.75, idf="rank_bm25", stemmer=None, stopwords=None,
                           fields="text")
    sparse.index(corpus)
    raw = okapi.get_scores(query)
    hits = sparse.retrieve(" ".join(query), len(corpus))
    # Scores agree to 1e-9. When the mean idf is 0 mathematically, the floor for negative idf
    # is rounding noise (~1e-17) that either implementation may round to exactly 0 and so
    # (not) return: such scores are left out of the comparison. The order is checked against
    # our own scores, because scores that tie mathematically can differ in the last bit
    # between the two summation orders.
    expected = {d.id: float(s) for d, s in zip(corpus, raw, strict=True) if abs(s) > 1e-9}
    assert {d: s for d, s in hits if abs(s) > 1e-9} == pytest.approx(expected, rel=0, abs=1e-9)
    assert hits == trec_sorted(dict(hits))


def test_few_postings_path_on_a_larger_corpus() -> None:
    # Queries whose postings are few next to the corpus size take the sort-based path rather
    # than the dense accumulator; duplicated texts check its tie-break.
    corpus = tuple(
        Document(id=f"n{i:03d}", text=f"topic{i % 7} rare{i % 150} filler {'x ' * (i % 5)}")
        for i in range(300)
    )
    r = BM25Retriever()
    r.index(corpus)
    for query in ("rare5 rare17 rare17", "rare149 topic3 zzz", "rare0"):
        expected = trec_sorted(lucene_reference(corpus, query))
        hits = r.retrieve(query, 1000)
        assert [d for d, _ in hits] == [d for d, _ in expected]
        assert np.allclose([s for _, s in hits], [s for _, s in expected], rtol=0, atol=1e-9)
        assert r.retrieve_many([query], 3) == [hits[:3]]


def test_repeated_query_term_counts_twice(lucene: BM25Retriever) -> None:
    once = dict(lucene.retrieve("garlic", 5))
    twice = dict(lucene.retrieve("garlic garlic", 5))
    assert once and once.keys() == twice.keys()
    for doc_id, score in once.items():
        assert twice[doc_id] == pytest.approx(2 * score, rel=1e-12)


def test_retrieve_many_is_bit_identical_to_retrieve(lucene: BM25Retriever) -> None:
    queries = [*QUERIES, "", "the of and", "unknownword"]
    for k in (1, 3, 10, 1000):
        assert lucene.retrieve_many(queries, k) == [lucene.retrieve(q, k) for q in queries]


@pytest.mark.parametrize("dense_up_to", [0, 10**9])
def test_both_accumulation_paths_give_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, dense_up_to: int
) -> None:
    # Small corpora accumulate over every document, large ones with few postings per query
    # sort the postings; forcing each path (filler documents keep the postings few), both
    # must equal the batched sparse product bit for bit.
    import pytest_ragbench.retrievers.bm25 as bm25_module

    filler = tuple(Document(id=f"fill-{i:03d}", text=f"filler{i} words{i % 7}")
                   for i in range(500))
    r = BM25Retriever()
    r.index(CORPUS + filler)
    queries = [*QUERIES, "garlic garlic coffee", "kiwi salad kiwi"]
    expected = r.retrieve_many(queries, 1000)
    assert any(expected)
    calls: list[int] = []
    union = bm25_module._union  # merges the postings' documents on the few-postings path
    monkeypatch.setattr(bm25_module, "_DENSE_ACCUMULATE", dense_up_to)
    # The max-score shortcut would bypass both paths (it is tried up to k=300 only, for now).
    monkeypatch.setattr(bm25_module, "_score_pruned", lambda *a: None)
    monkeypatch.setattr(bm25_module, "_union",
                        lambda *a, **kw: (calls.append(1), union(*a, **kw))[1])
    assert [r.retrieve(q, 1000) for q in queries] == expected
    assert bool(calls) == (dense_up_to == 0)


@pytest.fixture(scope="module")
def zipf_corpus() -> list[Document]:
    """12,000 documents of 12 Zipf-distributed words (of 400), many tied; building the texts
    costs more than indexing them, so the tests below share them (each indexes its own)."""
    rng = np.random.default_rng(7)
    return [
        Document(id=f"p{i:05d}", text=" ".join(f"w{x}" for x in rng.zipf(1.3, size=12) % 400))
        for i in range(12_000)
    ]


@pytest.mark.parametrize("k", [1, 7, 100, 1000])
def test_top_k_pruning_returns_exactly_the_unpruned_ranking(
    monkeypatch: pytest.MonkeyPatch, k: int, zipf_corpus: list[Document]
) -> None:
    # Thousands of matching documents, many of them tied: the ranking first keeps only the
    # documents above a sampled lower bound of the k-th score. Every path (one term, many
    # postings, few postings next to the corpus size) must give what ranking every matching
    # document gives, and the batched sparse product, bit for bit.
    import pytest_ragbench.retrievers.bm25 as bm25_module

    r = BM25Retriever()
    r.index(zipf_corpus)
    queries = ["w1", "w1 w2", "w3 w4 w5 w1", "w9 w9 w40", "w200 w300 w301 w1", "w150"]
    with monkeypatch.context() as m:
        m.setattr(bm25_module, "_SMALL_CANDIDATES", 10**9)  # no pruning
        expected = [r.retrieve(q, k) for q in queries]
    assert any(len(h) == k for h in expected)
    assert [r.retrieve(q, k) for q in queries] == expected
    assert r.retrieve_many(queries, k) == expected
    monkeypatch.setattr(bm25_module, "_DENSE_ACCUMULATE", 0)  # few-postings path too
    monkeypatch.setattr(bm25_module, "_MIN_BLOCKS", 64)  # many postings: from block maxima
    blocks: list[bool] = []
    block_candidates = bm25_module._block_candidates

    def spy(scores: np.ndarray, k: int) -> np.ndarray | None:
        out = block_candidates(scores, k)
        blocks.append(out is not None)
        return out

    monkeypatch.setattr(bm25_module, "_block_candidates", spy)
    assert [r.retrieve(q, k) for q in queries] == expected
    assert any(blocks) == (k <= 100)
    assert r.retrieve_many(queries, k) == expected


@pytest.fixture(scope="module")
def mixed_corpus() -> list[Document]:
    """8,000 documents of 15 Zipf-distributed words (of 3,000) and 30 tied ones with a rare
    term; shared by the tests below (each indexes its own)."""
    rng = np.random.default_rng(11)
    corpus = [
        Document(id=f"m{i:05d}", text=" ".join(f"w{x}" for x in rng.zipf(1.2, size=15) % 3000))
        for i in range(8_000)
    ]
    return corpus + [Document(id=f"t{i}", text="w1 w2 rare7 rare7") for i in range(30)]  # ties


@pytest.mark.parametrize("k,applies", [(1, 3), (10, 3), (50, 0)])
def test_max_score_shortcut_gives_the_full_ranking_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, k: int, applies: int, mixed_corpus: list[Document]
) -> None:
    # Queries mixing rare and frequent terms may skip adding up the frequent ones; what they
    # return must be what the full sum gives, scores to the last bit and tie order included.
    import pytest_ragbench.retrievers.bm25 as bm25_module

    r = BM25Retriever()
    r.index(mixed_corpus)
    queries = ["w1 w700", "w1 w2 rare7", "w2 w3 w1500 w1501", "w1 w1 w80 w81 w82",
               "w1 w2999", "w4 w5 w6 w7 w1200", "rare7 w1"]
    monkeypatch.setattr(bm25_module, "_DENSE_ACCUMULATE", 0)
    with monkeypatch.context() as m:
        m.setattr(bm25_module, "_score_pruned", lambda *a: None)
        expected = [r.retrieve(q, k) for q in queries]
    used: list[bool] = []
    real = bm25_module._score_pruned

    def spy(*args: object) -> object:
        out = real(*args)  # type: ignore[arg-type]
        used.append(out is not None)
        return out

    monkeypatch.setattr(bm25_module, "_score_pruned", spy)
    assert [r.retrieve(q, k) for q in queries] == expected
    assert len(used) == len(queries) and sum(used) >= applies  # the shortcut did apply
    assert r.retrieve_many(queries, k) == expected
    # Accumulators go back all zero, or (after a query that wrote a dense row over one rather
    # than adding to it) to a pool of their own, cleared before any other use.
    assert r._accumulators or r._dirty_accumulators
    assert not any(a.any() for a in r._accumulators)


def test_block_candidates_hold_the_top_k_and_its_ties() -> None:
    from pytest_ragbench.retrievers.bm25 import _block_candidates

    rng = np.random.default_rng(5)
    for n, k in [(100_003, 1000), (50_000, 10), (64_001, 1), (1_000_003, 3)]:
        scores = np.round(rng.exponential(size=n), 1)  # many ties
        scores[rng.random(n) < 0.5] = 0.0
        kth = np.sort(scores)[-k]
        docs = _block_candidates(scores, k)
        assert docs is not None
        assert np.all(np.diff(docs) > 0)  # ascending, distinct
        assert set(np.flatnonzero(scores >= kth).tolist()) <= set(docs.tolist())
        assert scores[docs].min() >= np.sort(scores)[-2 * k]  # a tight bound
    assert _block_candidates(np.ones(1000), 100) is None  # too few blocks
    sparse = np.zeros(100_000)
    sparse[:5] = 1.0
    assert _block_candidates(sparse, 10) is None  # fewer than k positive blocks


def test_lower_bound_is_at_most_the_kth_score() -> None:
    from pytest_ragbench.retrievers.bm25 import _lower_bound

    rng = np.random.default_rng(3)
    for n, k in [(5000, 1), (20_000, 10), (20_000, 1000), (100_000, 3)]:
        scores = np.round(rng.exponential(size=n), 1)  # many ties
        bound = _lower_bound(scores, k)
        assert bound is not None and 0 < bound <= np.sort(scores)[-k]
        assert np.count_nonzero(scores >= bound) < n / 2  # it does prune
    assert _lower_bound(np.zeros(10_000), 5) is None  # no positive bound
    assert _lower_bound(np.ones(100), 5) is None  # too few to bother


# -- ordering and result sets ------------------------------------------------------------------


def test_ties_break_by_doc_id_descending_also_at_the_cut() -> None:
    same = "kiwi fruit salad"
    corpus = [Document(id=i, text=same) for i in ("b", "a", "d", "c")]
    corpus.append(Document(id="z", text="kiwi kiwi kiwi"))
    corpus.append(Document(id="e", text="nothing in common"))
    r = BM25Retriever()
    r.index(corpus)
    hits = r.retrieve("kiwi salad", 10)
    assert [d for d, _ in hits] == ["d", "c", "b", "a", "z"]
    assert hits[0][1] == hits[3][1] > hits[4][1]
    # Cutting inside the tie group keeps the largest ids, as trec_eval's order would.
    assert [d for d, _ in r.retrieve("kiwi salad", 2)] == ["d", "c"]
    assert r.retrieve_many(["kiwi salad"], 2) == [r.retrieve("kiwi salad", 2)]


def test_documents_without_matching_terms_are_not_returned(lucene: BM25Retriever) -> None:
    hits = lucene.retrieve("turmeric", 10)
    assert [d for d, _ in hits] == ["doc-18"]
    assert lucene.retrieve("the and of", 10) == []  # only stopwords
    assert lucene.retrieve("zzzunknown", 10) == []
    assert lucene.retrieve("", 10) == []
    assert all(s > 0 for q in QUERIES for _, s in lucene.retrieve(q, 100))


def test_k_limits_and_zero(lucene: BM25Retriever) -> None:
    full = lucene.retrieve("food", 100)
    assert lucene.retrieve("food", 3) == full[:3]
    assert lucene.retrieve("food", 0) == []
    assert lucene.retrieve_many(["food", "coffee"], 0) == [[], []]


def test_fields_text_ignores_titles() -> None:
    corpus = [Document(id="1", title="zebra", text="horse"), Document(id="2", text="zebra")]
    flat, text_only = BM25Retriever(), BM25Retriever(fields="text")
    flat.index(corpus)
    text_only.index(corpus)
    assert {d for d, _ in flat.retrieve("zebra", 5)} == {"1", "2"}
    assert [d for d, _ in text_only.retrieve("zebra", 5)] == ["2"]


def test_stemming_and_stopwords_reach_the_index() -> None:
    corpus = [Document(id="1", text="The runners were running"), Document(id="2", text="walk")]
    stemmed, plain = BM25Retriever(), BM25Retriever(stemmer=None)
    stemmed.index(corpus)
    plain.index(corpus)
    assert [d for d, _ in stemmed.retrieve("run", 5)] == ["1"]
    assert plain.retrieve("run", 5) == []
    assert stemmed.retrieve("the", 5) == []  # a stopword, not indexed
    keep = BM25Retriever(stopwords=None)
    keep.index(corpus)
    assert [d for d, _ in keep.retrieve("the", 5)] == ["1"]


def test_rank_bm25_engine_and_describe() -> None:
    r = BM25Retriever(engine="rank_bm25", k1=1.2, b=0.75)
    r.index(CORPUS)
    assert r.describe()["idf"] == "rank_bm25"
    assert r.retrieve("coffee", 2)[0][0] in {"doc-00", "doc-02", "doc-29"}
    d = BM25Retriever().describe()
    assert d["engine"] == "sparse" and d["idf"] == "lucene"
    assert (d["k1"], d["b"], d["stemmer"], d["stopwords"], d["fields"]) == (
        0.9, 0.4, "porter", "lucene", "flat")


@pytest.mark.parametrize("k", [1, 3, 100])
def test_keeps_the_retriever_contract(lucene: BM25Retriever, k: int) -> None:
    # What the plugin needs of any Retriever: at most k (doc_id, score) pairs of indexed
    # documents, each once, best first, with finite float scores; batches answer the same.
    retriever: Retriever = lucene
    ids = {d.id for d in CORPUS}
    batched = lucene.retrieve_many(QUERIES, k)
    assert len(batched) == len(QUERIES)
    for query, many in zip(QUERIES, batched, strict=True):
        hits = [(doc_id, score) for doc_id, score in retriever.retrieve(query, k)]
        assert 0 < len(hits) <= k, query
        assert all(type(d) is str and type(s) is float and math.isfinite(s) for d, s in hits)
        assert {d for d, _ in hits} <= ids and len({d for d, _ in hits}) == len(hits)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True), query
        assert [(d, s) for d, s in many] == hits, query


def test_reindex_replaces_previous_corpus() -> None:
    r = BM25Retriever()
    r.index(CORPUS)
    assert r.retrieve("turmeric", 5)
    r.index([Document(id="x", text="something else")])
    assert r.retrieve("turmeric", 5) == []
    assert r.retrieve("something", 5)[0][0] == "x"


def test_all_stopword_corpus_retrieves_nothing() -> None:
    corpus = [Document(id="1", text="the and"), Document(id="2", text="of")]
    for engine in ("sparse", "rank_bm25"):
        r = BM25Retriever(engine=engine)
        r.index(corpus)
        assert r.retrieve("the", 5) == []


# -- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_lowercases_splits_and_strips_possessives() -> None:
    tok = Tokenizer(stemmer=None, stopwords=None)
    assert tok.words("The WOMEN's shoes don't fit; 'quoted' o'Neil's 60.2% e-mail foo_bar") == [
        "the", "women", "shoes", "don't", "fit", "quoted", "o'neil", "60", "2", "e", "mail",
        "foo_bar",
    ]
    # The right single quotation mark is an apostrophe.
    assert tok.words("It\u2019s James\u2019 car") == ["it", "james", "car"]


def test_tokenizer_unicode() -> None:
    tok = Tokenizer(stemmer=None, stopwords=None)
    # Precomposed and decomposed accents give the same term; en dash and nbsp separate.
    assert tok("Caf\u00e9 cafe\u0301 CAF\u00c9 1995\u20132003 a\u00a0b") == [
        "caf\u00e9", "caf\u00e9", "caf\u00e9", "1995", "2003", "a", "b",
    ]
    # Combining marks (Devanagari vowel signs, Thai) stay inside words; CJK runs are kept.
    assert tok("\u0939\u093f\u0928\u094d\u0926\u0940 \u0e1b\u0e23\u0e30\u0e40\u0e17\u0e28") == [
        "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e1b\u0e23\u0e30\u0e40\u0e17\u0e28",
    ]
    cjk = "\u5317\u4eac\u5927\u5b66"
    assert tok(f"{cjk}\u3002\u00dcber!") == [cjk, "\u00fcber"]
    assert tok("\U0001f600 \u2014 ... ''") == []


def test_tokenizer_lucene_stopwords() -> None:
    assert len(LUCENE_STOPWORDS) == 33
    assert {"the", "a", "with", "such", "into", "will"} <= LUCENE_STOPWORDS
    assert "he" not in LUCENE_STOPWORDS
    tok = Tokenizer(stemmer=None)
    assert tok("The cat is on the mat with a hat") == ["cat", "mat", "hat"]
    assert Tokenizer(stemmer=None, stopwords=None)("the cat") == ["the", "cat"]
    custom = Tokenizer(stemmer=None, stopwords=["Cat", "MAT"])
    assert custom("The cat is on the mat") == ["the", "is", "on", "the"]


def test_tokenizer_stemmers() -> None:
    words = "generously dying skies running cats"
    assert Tokenizer(stemmer="porter", stopwords=None)(words) == [
        "gener", "dy", "ski", "run", "cat"]
    assert Tokenizer(stemmer="english", stopwords=None)(words) == [
        "generous", "die", "sky", "run", "cat"]
    assert Tokenizer(stemmer=None, stopwords=None)(words) == words.split()
    # Stopwords are matched before stemming: "this" is removed, "thi" would not be.
    assert Tokenizer()("this running") == ["run"]


def test_tokenizer_caches_stems_per_instance() -> None:
    tok = Tokenizer()
    assert tok("running runs") == ["run", "run"]
    assert tok._stem_cache == {"running": "run", "runs": "run"}
    assert Tokenizer()._stem_cache == {}
    tok._stem_cache["running"] = "CACHED"  # proves the cache is consulted
    assert tok("running") == ["CACHED"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"stemmer": "lancaster"}, "unknown stemmer 'lancaster'"),
        ({"stopwords": "english"}, "unknown stopword set 'english'"),
        ({"stopwords": ["ok", 3]}, "stopwords must be strings"),
    ],
)
def test_tokenizer_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tokenizer(**kwargs)  # type: ignore[arg-type]


def _terms_by_stream(tok: Tokenizer, texts: list[str]) -> list[list[str]]:
    stream = tok.token_stream(texts)
    assert stream.count(TEXT_BREAK) == len(texts)
    out: list[list[str]] = [[]]
    for token, term in zip(stream, tok.index_terms(stream), strict=True):
        if token == TEXT_BREAK:
            out.append([])
        elif term is not None:
            out[-1].append(term)
    assert out.pop() == []
    return out


_TRICKY_TEXT = st.text(
    alphabet=st.sampled_from(
        list("ab's _.-\x00\t\n3é\u2019\u03a3\u03c3\u03c2\u0130\u0301\u00a0\u2028😀Ⅻ")
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TRICKY_TEXT, max_size=6), st.sampled_from(["porter", None]))
def test_token_stream_equals_tokenising_each_text(texts: list[str], stemmer: str | None) -> None:
    # The index is built from one token stream per chunk of documents; it must give every
    # document exactly the terms the tokenizer gives it alone (queries use the latter).
    tok = Tokenizer(stemmer=stemmer)
    assert _terms_by_stream(tok, texts) == [tok(t) for t in texts]


def test_token_stream_edge_cases() -> None:
    tok = Tokenizer()
    texts = ["Don't stop 'quoted' women's o'neil''x a'", "'s x's ''a' b_c 3.25", "",
             "café ΟΔΟΣ x\u2019s\u00a0y", "nul\x00inside", "tab\there\x1cx"]
    assert _terms_by_stream(tok, texts) == [tok(t) for t in texts]
    assert _terms_by_stream(tok, texts)[0] == ["don't", "stop", "quot", "women", "o'neil", "x"]
    assert tok.token_stream([]) == []


# -- on-disk cache -----------------------------------------------------------------------------


def _is_mapped(array: object) -> bool:
    """True if ``array`` (or the array it is a view of) is memory-mapped from a file."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_cache_second_instance_loads(tmp_path: Path) -> None:
    first = BM25Retriever(cache_dir=tmp_path)
    first.index(CORPUS)
    assert not first.loaded_from_cache
    assert first.cache_path is not None and first.cache_path.is_dir()
    assert first.cache_path.parent == tmp_path and first.cache_path.name.startswith("bm25-")
    assert sorted(p.name for p in first.cache_path.iterdir()) == [
        "data.npy", "indices.npy", "indptr.npy", "meta.json", "vocab.json"
    ]
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.cache_path.iterdir()}

    second = BM25Retriever(cache_dir=tmp_path)
    second.index(CORPUS)
    assert second.loaded_from_cache
    assert second.cache_path == first.cache_path
    assert {p.name: p.stat().st_mtime_ns for p in second.cache_path.iterdir()} == mtimes
    assert second.retrieve_many(list(QUERIES), 10) == first.retrieve_many(list(QUERIES), 10)
    assert [second.retrieve(q, 1000) for q in QUERIES] == [first.retrieve(q, 1000) for q in QUERIES]
    # The entry, its lock and use files, no temporary files.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        first.cache_path.name, f"{first.cache_path.name}.lock", f"{first.cache_path.name}.use"
    ]


def test_a_cache_folder_that_cannot_be_written_builds_in_memory(tmp_path: Path) -> None:
    # a read-only project, a cache folder that is a file, a lock that cannot be opened: the
    # index is this process's own, as without a cache (root passes permission checks, so
    # paths that no one can write stand in for them)
    plain = BM25Retriever()
    plain.index(CORPUS)
    expected = plain.retrieve_many(list(QUERIES), 10)
    (tmp_path / "file").write_text("not a folder")
    probe = BM25Retriever(cache_dir=tmp_path / "probe")
    probe.index(CORPUS)
    assert probe.cache_path is not None
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / f"{probe.cache_path.name}.lock").mkdir()  # open() fails
    for folder in (tmp_path / "file" / "ragbench", tmp_path / "locked"):
        r = BM25Retriever(cache_dir=folder)
        r.index(CORPUS)
        assert not r.loaded_from_cache and r.cache_path is None
        assert r.retrieve_many(list(QUERIES), 10) == expected
    # (and the use file of the entry it looked for: a lease taken before it found out)
    assert sorted(p.name for p in (tmp_path / "locked").iterdir()) == [
        f"{probe.cache_path.name}.lock", f"{probe.cache_path.name}.use"]


def test_a_build_killed_midway_leaves_nothing_behind_the_next_build(tmp_path: Path) -> None:
    # a builder killed (SIGKILL, a cancelled CI job) leaves its temporary folder, the size of
    # the index: the next builder, holding the lock, removes it
    probe = BM25Retriever(cache_dir=tmp_path / "probe")
    probe.index(CORPUS)
    assert probe.cache_path is not None
    name = probe.cache_path.name
    cache = tmp_path / "cache"
    stale = cache / f".{name}.k1ll3d.tmp"
    (stale / "index").mkdir(parents=True)
    (stale / "index" / "data.npy").write_bytes(b"\0" * 1000)
    other = cache / ".bm25-0123456789abcdef0123456789abcdef.x.tmp"  # another index's
    other.mkdir()
    r = BM25Retriever(cache_dir=cache)
    r.index(CORPUS)
    assert sorted(p.name for p in cache.iterdir()) == sorted([name, f"{name}.lock",
                                                              f"{name}.use", other.name])


def test_cached_index_is_memory_mapped_not_copied(tmp_path: Path) -> None:
    BM25Retriever(cache_dir=tmp_path).index(CORPUS)
    loaded = BM25Retriever(cache_dir=tmp_path)
    loaded.index(CORPUS)
    assert loaded.loaded_from_cache and loaded.memory_mapped
    weights = loaded._weights
    assert weights is not None
    for array in (weights.data, weights.indices):
        assert _is_mapped(array)
        assert not array.flags.writeable
    assert weights.data.dtype == np.float64 and weights.indices.dtype == np.int32
    # Without a cache the index lives in memory: nothing is left to map.
    plain = BM25Retriever()
    plain.index(CORPUS)
    assert plain._weights is not None and not plain.memory_mapped
    assert not _is_mapped(plain._weights.data)
    assert plain.retrieve_many(list(QUERIES), 10) == loaded.retrieve_many(list(QUERIES), 10)


_COLD_CACHE_WORKER = """
import json, sys
from pathlib import Path
from pytest_ragbench.datasets import Document
from pytest_ragbench.retrievers.bm25 import BM25Retriever
corpus = [Document(id=i, title=t, text=x) for i, t, x in json.loads(sys.argv[2])]
r = BM25Retriever(cache_dir=sys.argv[1])
print("ready", flush=True)
r.index(corpus)
print(json.dumps([r.loaded_from_cache, r.memory_mapped, list(r.retrieve("coffee heart", 5))]))
"""


def _wait_for_lock_waiters(path: Path, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` processes wait for the ``flock`` on ``path`` (Linux lists them in
    /proc/locks as ``->`` lines of the file's inode); elsewhere half a second, which is
    enough for a process that printed "ready" to reach the lock."""
    locks = Path("/proc/locks")
    if not locks.exists():
        time.sleep(0.5)
        return
    inode = f":{path.stat().st_ino} "
    deadline = time.monotonic() + timeout
    while True:
        waiting = [line for line in locks.read_text().splitlines()
                   if "->" in line and "FLOCK" in line and inode in line]
        if len(waiting) >= count:
            return
        assert time.monotonic() < deadline, f"{len(waiting)} of {count} processes queued"
        time.sleep(0.01)


@pytest.mark.skipif(os.name != "posix", reason="the test holds the lock with fcntl")
def test_two_processes_on_a_cold_cache_build_once(tmp_path: Path) -> None:
    import fcntl

    probe = BM25Retriever(cache_dir=tmp_path / "probe")
    probe.index(CORPUS)
    assert probe.cache_path is not None
    cache = tmp_path / "cache"
    cache.mkdir()
    entry = cache / probe.cache_path.name  # the key does not depend on the folder
    corpus = json.dumps([[d.id, d.title, d.text] for d in CORPUS])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Hold the entry's lock so that both processes find the cache cold and queue on it.
    with (cache / f"{entry.name}.lock").open("a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _COLD_CACHE_WORKER, str(cache), corpus],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
            for _ in range(2)
        ]
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        # both are now past their lock-free look at the cache, queued on the lock
        _wait_for_lock_waiters(cache / f"{entry.name}.lock", 2)
        assert not entry.exists()
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append(json.loads(out))
    assert sorted((o[0], o[1]) for o in outputs) == [(False, True), (True, True)]
    assert outputs[0][2] == outputs[1][2] == [list(h) for h in probe.retrieve("coffee heart", 5)]
    assert sorted(p.name for p in cache.iterdir()) == [entry.name, f"{entry.name}.lock",
                                                       f"{entry.name}.use"]


@pytest.mark.parametrize(
    "kwargs",
    [{"k1": 1.2}, {"b": 0.75}, {"stemmer": "english"}, {"stopwords": None},
     {"stopwords": ["coffee"]}, {"fields": "text"}, {"idf": "rank_bm25"}],
)
def test_cache_key_covers_every_parameter(tmp_path: Path, kwargs: dict[str, object]) -> None:
    base = BM25Retriever(cache_dir=tmp_path)
    base.index(CORPUS)
    other = BM25Retriever(cache_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    other.index(CORPUS)
    assert not other.loaded_from_cache
    assert other.cache_path != base.cache_path


def test_cache_key_covers_corpus_content(tmp_path: Path) -> None:
    base = BM25Retriever(cache_dir=tmp_path)
    base.index(CORPUS)
    edited = (*CORPUS[:-1], Document(id=CORPUS[-1].id, title=CORPUS[-1].title, text="changed"))
    other = BM25Retriever(cache_dir=tmp_path)
    other.index(edited)
    assert not other.loaded_from_cache and other.cache_path != base.cache_path
    assert other.retrieve("changed", 5)[0][0] == CORPUS[-1].id


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


@pytest.mark.parametrize(
    "name,damage",
    [
        ("data.npy", lambda p: p.write_bytes(b"not an array")),
        ("data.npy", _truncate),
        ("indices.npy", lambda p: p.write_bytes(b"")),
        ("indptr.npy", _truncate),
        ("indptr.npy", lambda p: p.unlink()),
        ("vocab.json", lambda p: p.write_text("[1, 2")),
        ("vocab.json", lambda p: p.write_text('["a", "a"]')),
        ("meta.json", lambda p: p.write_text("{}")),
    ],
    ids=["garbage", "truncated", "empty", "truncated-indptr", "missing", "bad-json",
         "duplicate-terms", "bad-meta"],
)
def test_corrupt_cache_is_rebuilt(tmp_path: Path, name: str, damage: object) -> None:
    first = BM25Retriever(cache_dir=tmp_path)
    first.index(CORPUS)
    assert first.cache_path is not None
    expected = first.retrieve_many(list(QUERIES), 10)
    damage(first.cache_path / name)  # type: ignore[operator]

    second = BM25Retriever(cache_dir=tmp_path)
    second.index(CORPUS)
    assert not second.loaded_from_cache
    assert second.retrieve_many(list(QUERIES), 10) == expected
    third = BM25Retriever(cache_dir=tmp_path)  # the rebuild rewrote a good folder
    third.index(CORPUS)
    assert third.loaded_from_cache
    assert third.retrieve_many(list(QUERIES), 10) == expected


@pytest.mark.parametrize(
    "name,edit",
    [
        ("indices.npy", lambda a: a + 10_000),  # out of range document numbers
        ("indices.npy", lambda a: a.astype(np.int64)),
        ("data.npy", lambda a: np.where(a == a.max(), np.nan, a)),
        ("indptr.npy", lambda a: a[::-1].copy()),
    ],
    ids=["out-of-range", "wrong-dtype", "nan-weight", "decreasing-indptr"],
)
def test_cache_with_wrong_arrays_is_rebuilt(tmp_path: Path, name: str, edit: object) -> None:
    first = BM25Retriever(cache_dir=tmp_path)
    first.index(CORPUS)
    assert first.cache_path is not None
    path = first.cache_path / name
    np.save(path, edit(np.load(path)))  # type: ignore[operator]
    second = BM25Retriever(cache_dir=tmp_path)
    second.index(CORPUS)
    assert not second.loaded_from_cache
    assert second.retrieve("turmeric", 3)[0][0] == "doc-18"


def test_concurrent_builders_leave_one_valid_file(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    results: list[list[list[tuple[str, float]]]] = []

    def build() -> None:
        try:
            r = BM25Retriever(cache_dir=tmp_path)
            r.index(CORPUS)
            results.append(r.retrieve_many(list(QUERIES), 5))
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4 and all(r == results[0] for r in results)
    later = BM25Retriever(cache_dir=tmp_path)
    later.index(CORPUS)
    assert later.loaded_from_cache
    assert later.cache_path is not None
    # One entry and its lock (and use) files; the lock made the other three wait and load
    # instead of build.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        later.cache_path.name, f"{later.cache_path.name}.lock", f"{later.cache_path.name}.use"
    ]


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"k1": -0.1}, "k1 must be a number >= 0"),
        ({"k1": float("nan")}, "k1 must be a number >= 0"),
        ({"k1": "1.2"}, "k1 must be a number >= 0"),
        ({"b": 1.5}, "b must be a number between 0 and 1"),
        ({"b": -0.01}, "b must be a number between 0 and 1"),
        ({"engine": "lucene"}, "unknown engine 'lucene'"),
        ({"fields": "title"}, "unknown fields 'title'"),
        ({"idf": "bm25+"}, "unknown idf 'bm25\\+'"),
        ({"engine": "rank_bm25", "idf": "lucene"}, "engine 'rank_bm25' only has"),
        ({"engine": "rank_bm25", "cache_dir": "x"}, "cache_dir is only supported"),
        ({"engine": "rank_bm25", "k1": 0}, "rank_bm25 divides by zero"),
        ({"stemmer": "snowball"}, "unknown stemmer 'snowball'"),
        ({"stopwords": "none"}, "unknown stopword set 'none'"),
    ],
)
def test_parameter_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BM25Retriever(**kwargs)  # type: ignore[arg-type]


def test_the_suite_type_builds_the_reference_engine_beside_a_cache_folder(
        tmp_path: Path) -> None:
    """The registry hands every bm25 pytest's cache folder: a suite's `engine: rank_bm25`
    failed to build ("cache_dir is only supported by engine='sparse'") unless pytest ran with
    -p no:cacheprovider."""
    from pytest_ragbench.registry import BuildContext, Registry

    reg = Registry(use_entry_points=False)
    ctx = BuildContext(cache_dir=tmp_path, registry=reg)
    okapi = reg.build("retriever", "bm25", {"engine": "rank_bm25"}, ctx)
    assert isinstance(okapi, BM25Retriever) and okapi.cache_dir is None
    okapi.index(CORPUS)
    direct = BM25Retriever(engine="rank_bm25")
    direct.index(CORPUS)
    assert list(okapi.retrieve(QUERIES[0], 5)) == list(direct.retrieve(QUERIES[0], 5))
    assert list(tmp_path.iterdir()) == []  # nothing on disk for the reference engine
    sparse = reg.build("retriever", "bm25", {"k1": 1.2}, ctx)
    assert sparse.cache_dir == tmp_path and sparse.k1 == 1.2
    # the suite type takes exactly the class's parameters
    from pytest_ragbench.retrievers.bm25 import bm25_retriever

    assert inspect.signature(bm25_retriever).parameters == {
        name: p for name, p in inspect.signature(BM25Retriever).parameters.items()}


def test_usage_errors(lucene: BM25Retriever) -> None:
    with pytest.raises(RuntimeError, match="call index"):
        BM25Retriever().retrieve("x", 3)
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        lucene.retrieve("coffee", -1)
    with pytest.raises(TypeError, match="sequence of queries"):
        lucene.retrieve_many("coffee", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever().index([])
    with pytest.raises(ValueError, match="unique"):
        BM25Retriever().index([Document(id="a", text="x"), Document(id="a", text="y")])


def test_max_score_shortcut_keeps_every_document_of_the_top_k_exactly() -> None:
    # _score_pruned on random postings: frequent lists of low and of high weight (the latter
    # must be added up, the former may be skipped), rare lists, repeated query terms. What it
    # returns must hold the best k and every document tied with the k-th, with the scores of
    # the full sum to the last bit.
    from pytest_ragbench.retrievers.bm25 import _score_pruned

    rng = np.random.default_rng(5)
    n = 8000
    applied = promoted = 0
    for trial in range(200):
        spans = []
        for _ in range(rng.integers(2, 6)):
            size = int(rng.choice([20, 150, 400, 1500, 3000, 7900]))
            docs = np.sort(rng.choice(n, size, replace=False)).astype(np.int32)
            scale = float(rng.choice([0.05, 1.0, 6.0]))
            vals = np.round(rng.random(size) * scale + 0.01, 2)  # rounded: ties
            spans.append((docs, vals, int(rng.choice([1, 1, 2]))))
        full = np.zeros(n)
        for docs, vals, c in spans:
            np.add.at(full, docs, vals if c == 1 else vals * float(c))
        k = int(rng.choice([1, 5, 10, 30]))
        acc = np.zeros(n)
        out = _score_pruned(spans, k, acc)
        assert not acc.any()  # left all zero
        if out is None:
            continue
        applied += 1
        scores, docs = out
        assert np.all(np.diff(docs) > 0)
        assert scores.tobytes() == full[docs].tobytes()  # bit for bit
        kth = np.sort(full)[-k]
        assert set(np.flatnonzero(full >= kth)) <= set(docs.tolist()), trial
        rare = {d for docs_, _, _ in spans if len(docs_) <= n // 16 for d in docs_.tolist()}
        promoted += not set(docs.tolist()) <= rare  # a frequent list of high weight was added
    assert applied >= 30 and promoted >= 3
