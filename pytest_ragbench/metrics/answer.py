"""Lexical answer metrics: exact match, token F1, ROUGE-L, containment and abstention.

No model is involved; every metric compares strings after **SQuAD normalisation**
(:func:`normalize_answer`), applied identically to predictions and references:

1. lowercase;
2. remove ASCII punctuation (``string.punctuation``; other Unicode punctuation is kept, as in
   the official SQuAD evaluation script, so scores stay comparable with published numbers);
3. remove the articles ``a``, ``an`` and ``the`` as whole words;
4. collapse runs of whitespace to one space and strip the ends.

Tokens are the whitespace-separated words of the normalised text.

Reference-based metrics take the best score over all references and return NaN (never 0)
when there is no reference, so an unlabelled item cannot pull an average down.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ABSTENTION_EXACT",
    "ABSTENTION_PATTERNS",
    "ANSWER_METRICS",
    "AnswerMetricSpec",
    "abstention_accuracy",
    "answer_contains",
    "exact_match",
    "is_abstention",
    "normalize_answer",
    "rouge_l",
    "token_f1",
]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

References = str | Sequence[str]


def normalize_answer(text: str) -> str:
    """Return ``text`` after SQuAD normalisation (see the module docstring)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_references(references: References) -> list[str]:
    # A bare string is one reference; iterating it would silently compare characters.
    if isinstance(references, str):
        return [references]
    return list(references)


def _best(references: References, score: Callable[[str], float]) -> float:
    refs = _as_references(references)
    if not refs:
        return math.nan
    return max(score(normalize_answer(ref)) for ref in refs)


def exact_match(prediction: str, references: References) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0.

    NaN when there is no reference.
    """
    pred = normalize_answer(prediction)
    return _best(references, lambda ref: float(pred == ref))


def _f1_tokens(pred: list[str], ref: list[str]) -> float:
    # SQuAD 2.0 convention: if either side is empty, F1 is 1 only when both are.
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: References) -> float:
    """SQuAD token F1 (bag-of-tokens overlap), the best over the references.

    Precision and recall count shared tokens with multiplicity. An empty normalised prediction
    scores 1.0 only against an empty normalised reference. NaN when there is no reference.
    """
    pred = normalize_answer(prediction).split()
    return _best(references, lambda ref: _f1_tokens(pred, ref.split()))


def _lcs_length(a: list[str], b: list[str]) -> int:
    # Classic O(len(a) * len(b)) dynamic programme, keeping one row; iterate the shorter
    # sequence in the inner loop so the row is as small as possible.
    if len(b) > len(a):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0] * (len(b) + 1)
        for j, token_b in enumerate(b, start=1):
            if token_a == token_b:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def _rouge_l_tokens(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision = lcs / len(pred)
    recall = lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, references: References) -> float:
    """ROUGE-L F-measure (beta = 1) on normalised tokens, the best over the references.

    With ``L`` the longest common subsequence of the token lists, precision is
    ``L / len(prediction)``, recall ``L / len(reference)`` and the score their harmonic mean.
    Empty-side convention as :func:`token_f1`. NaN when there is no reference.
    """
    pred = normalize_answer(prediction).split()
    return _best(references, lambda ref: _rouge_l_tokens(pred, ref.split()))


def answer_contains(prediction: str, references: References) -> float:
    """1.0 if any normalised reference occurs in the normalised prediction, else 0.0.

    The match is on whole tokens (``"4"`` is not found in ``"1945"``, ``"new york"`` is found in
    ``"in new york city"``). NaN when there is no reference.
    """
    # Padding both sides with spaces turns substring search into token-boundary search;
    # normalisation already collapsed whitespace, so the padding cannot create false matches.
    padded = f" {normalize_answer(prediction)} "
    return _best(references, lambda ref: float(f" {ref} " in padded))


ABSTENTION_PATTERNS: tuple[str, ...] = (
    r"\b(i|we) (do not|dont|did not|didnt|cannot|cant) know\b",
    r"\bno idea\b",
    r"\b(cannot|cant|can not|could not|couldnt|unable to|not able to) (be )?"
    r"(answer|answered|determine|determined|tell|say|said)\b",
    r"\bunanswerable\b",
    r"\bno answer\b",
    r"\b(not enough|insufficient|no|not sufficient) (information|context|data)\b",
    r"\b(information|context|contexts|documents?|passages?|text|sources?) "
    r"(does not|do not|doesnt|dont) (contain|provide|mention|say|specify|include|state)\b",
    r"\bnot (mentioned|stated|specified|provided|given|available|found) in\b",
    r"\b(do not|dont|does not|doesnt) have (enough|sufficient|any) "
    r"(information|context|data)\b",
    r"\bnot (in|within|part of) (provided )?"
    r"(context|contexts|documents?|passages?|text|sources?)\b",
)
"""Regular expressions searched in the *normalised* prediction by :func:`is_abstention`.

Normalisation drops apostrophes and articles, so "I don't know" is matched as "i dont know"
and "not enough information in the context" as "not enough information in context". Covered:
"I/we don't know", "no idea", "cannot answer / be answered / be determined / tell / say",
"unanswerable", "no answer", "not enough / insufficient / no information (context, data)",
"the context/documents do not contain/mention/...", "not mentioned/stated/... in ...",
"I do not have enough/any information", "(the answer is) not in the context/documents".
"""

ABSTENTION_EXACT: frozenset[str] = frozenset({"", "unknown", "na", "idk", "not applicable"})
"""Normalised predictions that are abstentions only when they are the whole answer.

The empty answer is one; "unknown" or "n/a" inside a longer answer may be content.
"""

#: Right single quotation mark, modifier letter apostrophe, prime, fullwidth apostrophe.
_APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u02bc\u2032\uff07"})

_ABSTENTION_RE = re.compile("|".join(f"(?:{p})" for p in ABSTENTION_PATTERNS))


def is_abstention(prediction: str) -> bool:
    """Whether the prediction declines to answer.

    True for an empty (after normalisation) prediction, for a prediction that is exactly one of
    :data:`ABSTENTION_EXACT`, and for one that contains a phrase of
    :data:`ABSTENTION_PATTERNS` anywhere ("I don't know", "This cannot be answered from the
    context", "No answer", "There is not enough information", "Unanswerable", ...).
    """
    # chat models write "don\u2019t" (U+2019): fold typographic apostrophes, which
    # normalisation keeps (as SQuAD's does, for exact match), so that the phrases match
    normalized = normalize_answer(prediction.translate(_APOSTROPHES))
    return normalized in ABSTENTION_EXACT or _ABSTENTION_RE.search(normalized) is not None


def abstention_accuracy(prediction: str, answerable: bool) -> float:
    """1.0 when the model abstains on an unanswerable question or answers an answerable one."""
    return float(is_abstention(prediction) != answerable)


AnswerMetricFn = Callable[[str, Sequence[str], "bool | None"], float]


@dataclass(frozen=True, kw_only=True)
class AnswerMetricSpec:
    """How the plugin calls one lexical answer metric.

    ``fn(prediction, references, answerable)`` has the same signature for every metric so a
    registry can call them uniformly; ``answerable`` is only read by ``abstention_accuracy``
    (``None`` means "answerable iff there is a non-empty reference").
    """

    name: str
    direction: str = "higher"
    needs_reference: bool
    fn: AnswerMetricFn


def _lift(metric: Callable[[str, References], float]) -> AnswerMetricFn:
    def call(prediction: str, references: Sequence[str], answerable: bool | None = None) -> float:
        return metric(prediction, references)

    call.__doc__ = metric.__doc__
    return call


def _abstention_metric(
    prediction: str, references: Sequence[str], answerable: bool | None = None
) -> float:
    if answerable is None:
        # SQuAD 2.0 style datasets mark unanswerable questions by giving no answer.
        answerable = any(normalize_answer(r) for r in _as_references(references))
    return abstention_accuracy(prediction, answerable)


ANSWER_METRICS: Mapping[str, AnswerMetricSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            AnswerMetricSpec(name="exact_match", needs_reference=True, fn=_lift(exact_match)),
            AnswerMetricSpec(name="token_f1", needs_reference=True, fn=_lift(token_f1)),
            AnswerMetricSpec(name="rouge_l", needs_reference=True, fn=_lift(rouge_l)),
            AnswerMetricSpec(
                name="answer_contains", needs_reference=True, fn=_lift(answer_contains)
            ),
            AnswerMetricSpec(
                name="abstention_accuracy", needs_reference=False, fn=_abstention_metric
            ),
        )
    }
)
"""The lexical answer metrics by name, read-only."""
