"""Lexical answer metrics: hand-computed cases, properties and abstention detection."""

from __future__ import annotations

import math
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ragbench.metrics.answer import (
    ANSWER_METRICS,
    AnswerMetricSpec,
    abstention_accuracy,
    answer_contains,
    exact_match,
    is_abstention,
    normalize_answer,
    rouge_l,
    token_f1,
)

REFERENCE_METRICS = (exact_match, token_f1, rouge_l, answer_contains)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat sat.", "cat sat"),
        ("  An  apple,\ta PEAR!  ", "apple pear"),
        ("the theatre", "theatre"),  # articles go only as whole words
        ("don't", "dont"),
        ("", ""),
        ("¿Qué?", "¿qué"),  # only ASCII punctuation goes, as in the SQuAD script
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_after_normalisation() -> None:
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("a cat", ["dog", "the  cat"]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0


def test_token_f1_hand_computed() -> None:
    # "cat sat on mat" vs "cat on mat": 3 shared, P = 3/4, R = 1 -> F1 = 6/7.
    assert token_f1("the cat sat on the mat", ["a cat on a mat"]) == pytest.approx(6 / 7)
    # Multiplicity counts: "cat cat" vs "cat": 1 shared, P = 1/2, R = 1 -> 2/3.
    assert token_f1("cat cat", ["cat"]) == pytest.approx(2 / 3)
    assert token_f1("dog", ["cat"]) == 0.0


def test_token_f1_takes_best_reference() -> None:
    # Against "cat" alone: P = 1/2, R = 1 -> 2/3; against "black cat": exact -> 1.
    assert token_f1("black cat", ["cat", "dog"]) == pytest.approx(2 / 3)
    assert token_f1("black cat", ["cat", "black cat"]) == 1.0


def test_rouge_l_hand_computed() -> None:
    # LCS of [w1 w2 w3 w4] and [w1 w3 w4 w5 w6] is 3: P = 3/4, R = 3/5 -> F = 2/3.
    assert rouge_l("w1 w2 w3 w4", ["w1 w3 w4 w5 w6"]) == pytest.approx(2 / 3)
    # Same bag of words in reverse order: F1 sees full overlap, ROUGE-L only an LCS of 1.
    assert token_f1("police killed gunman", ["gunman killed police"]) == 1.0
    assert rouge_l("police killed gunman", ["gunman killed police"]) == pytest.approx(1 / 3)
    assert rouge_l("x y", ["q", "y x z", "x z y"]) == pytest.approx(0.8)  # LCS 2: P 1, R 2/3


def test_empty_prediction() -> None:
    for metric in (exact_match, token_f1, rouge_l, answer_contains):
        assert metric("", ["Paris"]) == 0.0
    # SQuAD 2.0 convention: an empty answer matches an empty (normalised) reference.
    assert token_f1("", ["the"]) == 1.0
    assert rouge_l("", [""]) == 1.0
    assert exact_match(".", [""]) == 1.0


@pytest.mark.parametrize("metric", REFERENCE_METRICS)
def test_no_references_is_nan_not_zero(metric) -> None:
    assert math.isnan(metric("Paris", []))
    assert math.isnan(metric("", ()))


@pytest.mark.parametrize("metric", REFERENCE_METRICS)
def test_bare_string_is_one_reference(metric) -> None:
    assert metric("New York", "new york") == 1.0
    # Were the string iterated, its character "n" would be a reference and match exactly.
    assert metric("n", "new york") < 1.0


def test_answer_contains_on_token_boundaries() -> None:
    assert answer_contains("It is in New York City.", ["new york"]) == 1.0
    assert answer_contains("The year was 1945", ["4"]) == 0.0
    assert answer_contains("Paris", ["London", "paris"]) == 1.0
    assert answer_contains("Paris", ["Paris, France"]) == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "I don't know.",
        "I do not know the answer.",
        "This question cannot be answered from the context.",
        "No answer",
        "There is not enough information to say.",
        "Unanswerable",
        "",
        "   ",
        "N/A",
        "Unknown",
        "I'm unable to answer based on the documents.",
        "The provided context does not mention his birthday.",
        "I don't have enough information.",
        "The answer is not in the provided documents.",
        "Insufficient information.",
        # typographic apostrophes, as chat models write them
        "I don\u2019t know.",
        "I can\u2019t answer that.",
        "The context doesn\u2019t mention it.",
        "The documents don't say.",
        "We didn\u02bct know.",
    ],
)
def test_is_abstention_positive(text: str) -> None:
    assert is_abstention(text)


@pytest.mark.parametrize(
    "text",
    [
        "Paris",
        "The capital is Paris, not Lyon.",
        "The cause of the fire is unknown to historians.",
        "Known for his novels",
        "None of the above were elected; Smith won.",
        "It was answered in 1999 by the committee.",
    ],
)
def test_is_abstention_negative(text: str) -> None:
    assert not is_abstention(text)


@pytest.mark.parametrize(
    ("prediction", "answerable", "expected"),
    [
        ("I don't know", False, 1.0),
        ("Paris", False, 0.0),
        ("Paris", True, 1.0),
        ("I don't know", True, 0.0),
    ],
)
def test_abstention_accuracy(prediction: str, answerable: bool, expected: float) -> None:
    assert abstention_accuracy(prediction, answerable) == expected


def test_registry_names_and_uniform_call() -> None:
    assert tuple(ANSWER_METRICS) == (
        "exact_match",
        "token_f1",
        "rouge_l",
        "answer_contains",
        "abstention_accuracy",
    )
    for name, spec in ANSWER_METRICS.items():
        assert isinstance(spec, AnswerMetricSpec)
        assert spec.name == name
        assert spec.direction == "higher"
        assert spec.needs_reference == (name != "abstention_accuracy")
    assert ANSWER_METRICS["token_f1"].fn("the cat sat on the mat", ["a cat on a mat"], None) == (
        pytest.approx(6 / 7)
    )
    assert math.isnan(ANSWER_METRICS["rouge_l"].fn("x", [], None))
    with pytest.raises(TypeError):
        ANSWER_METRICS["exact_match"]["name"] = "x"  # type: ignore[index]


def test_registry_abstention_infers_answerability_from_references() -> None:
    fn = ANSWER_METRICS["abstention_accuracy"].fn
    assert fn("I don't know", [], None) == 1.0  # no reference: unanswerable, abstaining is right
    assert fn("I don't know", ["Paris"], None) == 0.0
    assert fn("Paris", ["Paris"], None) == 1.0
    assert fn("Paris", ["Paris"], False) == 0.0  # an explicit flag wins


words = st.lists(
    st.sampled_from(["cat", "Dog", "the", "a", "sat", "on", "mat!", "1945", "4", "an", ","]),
    max_size=8,
).map(" ".join)
texts = st.one_of(words, st.text(max_size=30))


@settings(max_examples=150, deadline=None)
@given(prediction=texts, references=st.lists(texts, min_size=1, max_size=3))
def test_scores_are_probabilities(prediction: str, references: list[str]) -> None:
    for metric in REFERENCE_METRICS:
        assert 0.0 <= metric(prediction, references) <= 1.0


@settings(max_examples=150, deadline=None)
@given(prediction=words, references=st.lists(words, min_size=1, max_size=3))
def test_exact_match_implies_perfect_overlap(prediction: str, references: list[str]) -> None:
    if exact_match(prediction, references) == 1.0:
        assert token_f1(prediction, references) == 1.0
        assert rouge_l(prediction, references) == 1.0
        assert answer_contains(prediction, references) == 1.0


@settings(max_examples=150, deadline=None)
@given(a=words, b=words)
def test_single_reference_symmetry_and_order(a: str, b: str) -> None:
    assert token_f1(a, [b]) == pytest.approx(token_f1(b, [a]))
    assert rouge_l(a, [b]) == pytest.approx(rouge_l(b, [a]))
    assert exact_match(a, [b]) == exact_match(b, [a])
    # An LCS never exceeds the bag-of-words overlap, so ROUGE-L <= token F1.
    assert rouge_l(a, [b]) <= token_f1(a, [b]) + 1e-12
    assert token_f1(a, [a]) == 1.0


@settings(max_examples=100, deadline=None)
@given(prediction=words, references=st.lists(words, min_size=1, max_size=4))
def test_multi_reference_is_max_of_singles(prediction: str, references: list[str]) -> None:
    for metric in REFERENCE_METRICS:
        assert metric(prediction, references) == max(metric(prediction, [r]) for r in references)


def _naive_lcs(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    @cache
    def lcs(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return 0
        if a[i] == b[j]:
            return 1 + lcs(i + 1, j + 1)
        return max(lcs(i + 1, j), lcs(i, j + 1))

    return lcs(0, 0)


@settings(max_examples=150, deadline=None)
@given(
    a=st.lists(st.sampled_from("xyzw"), min_size=1, max_size=9),
    b=st.lists(st.sampled_from("xyzw"), min_size=1, max_size=9),
)
def test_rouge_l_matches_recursive_lcs(a: list[str], b: list[str]) -> None:
    lcs = _naive_lcs(tuple(a), tuple(b))
    expected = 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))  # F = 2L / (|a| + |b|)
    assert rouge_l(" ".join(a), [" ".join(b)]) == pytest.approx(expected)
