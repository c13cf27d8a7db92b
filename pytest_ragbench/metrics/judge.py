"""LLM-judged RAG metrics with the RAGAS definitions, in one judge call per item.

Definitions (as in RAGAS):

``faithfulness``
    The answer is split into claims; each is checked against the retrieved contexts.
    Score = supported claims / claims. NaN when the answer makes no claim.
``answer_relevancy``
    The judge writes ``n_questions`` questions that the answer answers; the score is the mean
    cosine similarity between the embedding of the real question and each generated question's
    embedding, or 0 when the judge flags the answer as noncommittal (evasive, a refusal).
``context_precision``
    Each ranked context gets a binary verdict v_k, "useful to arrive at the reference answer".
    Score = sum_k (precision@k * v_k) / (number of useful contexts), 0 when none is useful
    (and 0 when nothing was retrieved). Needs a reference.
``context_recall``
    The reference is split into claims; score = claims attributable to the contexts / claims.
    Needs a reference; NaN when the reference makes no claim.
``answer_correctness``
    Answer claims are classified against the reference (TP: supported by the reference, FP: not
    in the reference) and reference claims against the answer (FN: missing from the answer).
    Factual score = RAGAS's F-beta (beta 1): precision TP / (TP + FP) and recall TP / (TP + FN),
    a precision (recall) with nothing to count being 1 when FN (FP) is 0 too and 0 otherwise,
    F = 0 when both are 0; so with claims on both sides F1 = TP / (TP + 0.5 * (FP + FN)). As in
    RAGAS, the factual score is 1.0 when neither the answer nor the reference states a claim
    (nothing to compare), and follows the counts when one of them does (an answer stating no
    claim to a reference that does scores 0). Without an embedder the score IS this factual
    score. With an embedder it is RAGAS's weighted average
    ``(0.75 * F1 + 0.25 * cos) / (0.75 + 0.25)`` with ``cos`` the cosine similarity of answer
    and reference, not clipped (it can be negative).
    Needs a reference.
custom criteria (:class:`Criteria`)
    A rubric written in the suite (G-Eval / promptfoo ``llm-rubric`` style): the criterion's
    text, an integer scale ``(low, high)`` and optional scored examples. The judge gives one
    integer on the scale; the score is ``(s - low) / (high - low)`` in [0, 1]. Its verdict is
    asked in the same request as the other judged metrics of the item.

Cost. RAGAS spends 7 chat requests and 2 embedding requests per item on the first four metrics.
In ``mode="batched"`` (default) :class:`Judge` asks for everything the requested metrics need in
ONE chat request, sharing claim extraction between metrics (faithfulness and correctness use the
same answer claims, context recall and correctness the same reference claims), and makes at most
ONE embedding request (question, generated questions, and for correctness answer and reference,
together). ``mode="per_metric"`` makes one chat request per metric (same schema, one section
each) and still one embedding request. A parse failure costs one more request (one retry).
In per-metric mode answer relevancy questions are generated without showing the real question,
as in RAGAS; in batched mode the judge sees it (the other sections need it) and is told not to
reword it.

Reply schema. The judge must reply with one JSON object (a single fenced ```json block is
accepted) holding exactly the keys the prompt asks for; other keys are ignored. A "verdict" is
``0`` or ``1`` (``false`` / ``true`` accepted). Context numbers are 1-based, as in the prompt.

- ``"answer_claims"`` (faithfulness, answer_correctness): list of objects
  ``{"claim": non-empty str, "supported": verdict, "ctx": [int, ...], "in_reference": verdict,
  "why": str}``; ``supported`` is required for faithfulness, ``in_reference`` for
  answer_correctness; ``ctx`` (contexts backing a supported claim) and ``why`` (reason for a 0)
  are optional, but ``ctx`` numbers must be in 1..number of contexts.
- ``"reference_claims"`` (context_recall, answer_correctness): list of objects
  ``{"claim": str, "attributed": verdict, "ctx": [int, ...], "in_answer": verdict, "why": str}``;
  ``attributed`` required for context_recall, ``in_answer`` for answer_correctness.
- ``"useful"`` (context_precision): list of verdicts, exactly one per context, in rank order.
- ``"questions"`` (answer_relevancy): list of exactly ``n_questions`` non-empty strings.
- ``"noncommittal"`` (answer_relevancy): verdict.
- ``"criteria"`` (custom criteria): an object with one entry per criterion name,
  ``{"score": integer on the criterion's scale, "why": str}`` (``why`` optional; a whole
  number written as ``4.0`` is accepted).

Batching across items. With ``items_per_call`` N > 1 the requests of up to N items judged at
the same time that ask for the same parts go out as ONE chat request: the instructions once,
then each item's section (exactly as the single prompt shows it) under an id ``item-1``,
``item-2``, ... in item order, and the reply is one JSON object keyed by those ids. Each item's
entry is validated on its own, exactly as a single item's reply is; an item whose entry is
missing or invalid is judged alone once (the single request, with its usual retry) and its
batch mates keep their verdicts. A reply that is not an object holding any item's entry gets
one correction retry for the whole batch. A failed request (:class:`LLMError`) errors the items
of that batch. A batched call's usage (requests, prompt and completion tokens) is split over its
items in proportion to the length of each item's section of the prompt, by largest remainder,
so the shares add up exactly; each share is priced as the item's own. With a ``replies`` store
each item's entry is kept under the key of the request it would make alone in a batch, so a
rerun is served without any request whatever batches form. Batches never wait to fill up: see
:class:`~pytest_ragbench.llm.batching.CallBatcher`.

Failures are never exceptions: a reply that still does not validate after one retry (the retry
message quotes the validation error), an :class:`~pytest_ragbench.llm.base.LLMError`, a missing
embedder, or a bad embedding become an entry in :attr:`JudgeResult.errors` for every metric
concerned, whose score is then NaN. A NaN score without an error entry means "not computable"
(no reference, no claims) and :attr:`JudgeResult.verdicts` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import did_you_mean
from ..llm.base import LLM, Completion, Embedder, LLMError, Message, Usage
from ..llm.batching import CallBatcher
from ..llm.deadline import SharedCall
from ..llm.prompts import compiled
from ..records import valid_strings

__all__ = [
    "CRITERIA_INPUTS",
    "JUDGED_METRICS",
    "MAX_ITEMS_PER_CALL",
    "TEMPLATE_VERSION",
    "Criteria",
    "CriterionExample",
    "Judge",
    "JudgeInput",
    "JudgeResult",
    "ReplyStore",
]

JUDGED_METRICS: tuple[str, ...] = (
    "faithfulness",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "answer_correctness",
)
"""Names of the metrics :class:`Judge` computes."""

_NEEDS_REFERENCE = frozenset({"context_precision", "context_recall", "answer_correctness"})
_CORRECTNESS_WEIGHTS = (0.75, 0.25)  # factual F1, semantic similarity (the RAGAS defaults)
_MODES = ("batched", "per_metric")
_MAX_REPLY_IN_VERDICTS = 2000

MAX_ITEMS_PER_CALL: int = 50
"""The most items one batched judge request may hold (``items_per_call``)."""

_SYSTEM_PROMPT = (
    "You grade the output of a retrieval-augmented question answering system. Be literal: a "
    "statement is backed by a text only if the text says it or it follows directly from it; "
    "background knowledge does not count. Reply with one JSON object and nothing else."
)

# Sections appear only when a requested metric needs them, so a batched request pays for the
# shared parts (question, answer, contexts, claim extraction) once.
_ITEM_TEMPLATE = """\
{% if show_question %}
QUESTION: {{ question }}
{% endif %}
{% if show_answer %}
ANSWER: {{ answer }}
{% endif %}
{% if show_reference %}
REFERENCE: {{ reference }}
{% endif %}
{% if show_contexts %}
CONTEXTS:
{% for text in contexts %}
[{{ loop.index }}] {{ text }}
{% else %}
(none)
{% endfor %}
{% endif %}
"""

# What to produce for an item, shared by the single and the batched prompt.
_KEYS_TEMPLATE = """\
{% if ask.answer_claims %}
- "answer_claims": the ANSWER split into short self-contained factual claims (resolve pronouns; \
[] if it states no fact). Each is {"claim": text\
{% if ask.ans_supported %}, "supported": 1 if the CONTEXTS back it else 0, \
"ctx": [numbers of the contexts that back it]{% endif %}\
{% if ask.ans_in_ref %}, "in_reference": 1 if the REFERENCE backs it else 0{% endif %}}.
{% endif %}
{% if ask.reference_claims %}
- "reference_claims": the REFERENCE split into short self-contained factual claims. \
Each is {"claim": text\
{% if ask.ref_attributed %}, "attributed": 1 if the CONTEXTS back it else 0, \
"ctx": [numbers of the contexts that back it]{% endif %}\
{% if ask.ref_in_answer %}, "in_answer": 1 if the ANSWER states it else 0{% endif %}}.
{% endif %}
{% if ask.answer_claims or ask.reference_claims %}
  Give each claim with a 0 a "why" of at most 12 words.
{% endif %}
{% if ask.useful %}
- "useful": {{ contexts | length }} numbers, one per context in order: 1 if that context helps \
to arrive at the REFERENCE, else 0.
{% endif %}
{% if ask.n_questions %}
- "questions": {{ ask.n_questions }} different questions that the ANSWER would answer, derived \
from the ANSWER's content alone{% if show_question %} (do not reword the QUESTION){% endif %}, \
each understandable on its own.
- "noncommittal": 1 if the ANSWER is evasive, vague or declines to answer, else 0.
{% endif %}
{% if ask.criteria %}
- "criteria": an object with one entry per criterion below, keyed by its name, each \
{"score": an integer on the criterion's scale, "why": at most 20 words}. Grade each criterion \
on its own terms only.
{% for c in ask.criteria %}
  {{ c.name | tojson }} (an integer from {{ c.scale[0] }} to {{ c.scale[1] }}): {{ c.criteria }}
{% for ex in c.examples %}
    Example{% if ex.question is not none %}: QUESTION {{ ex.question | tojson }}{% endif %}; \
ANSWER {{ ex.answer | tojson }} -> {"score": {{ ex.score }}\
{% if ex.reason is not none %}, "why": {{ ex.reason | tojson }}{% endif %}}
{% endfor %}
{% endfor %}
{% endif %}
"""

_USER_TEMPLATE = (
    _ITEM_TEMPLATE
    + "\nProduce these keys:\n"
    + _KEYS_TEMPLATE
    + "\nReply with only the JSON object {{ '{' }}{{ keys | join(', ') }}{{ '}' }}.\n"
)

_RETRY_TEMPLATE = (
    "Your reply was rejected: {error}. Reply again with only the corrected JSON object, "
    "following the instructions above."
)

# The batched prompt (``items_per_call`` > 1): the instructions once, then each item's own
# section, exactly as the single prompt shows it; the reply is one object keyed by item id.
_BATCH_SYSTEM_PROMPT = (
    _SYSTEM_PROMPT + " Several items are graded in one request: grade each on its own, as if it "
    "were the only one."
)
_USEFUL_SINGLE = "{{ contexts | length }} numbers, one per context in order"
_USEFUL_BATCHED = "one number per context of that item, in order"
_BATCH_KEYS_TEMPLATE = _KEYS_TEMPLATE.replace(_USEFUL_SINGLE, _USEFUL_BATCHED)
_BATCH_USER_TEMPLATE = (
    """\
Grade each of the {{ items | length }} ITEMs below on its own: what one item says is no \
evidence about another.
{% for it in items %}

ITEM {{ it.id | tojson }}
{{ it.text }}
{% endfor %}

For each item, produce these keys (its QUESTION, ANSWER, REFERENCE and CONTEXTS are the ones \
in its section):
"""
    + _BATCH_KEYS_TEMPLATE
    + """
Reply with only one JSON object holding one entry per item, keyed by its id: {{ '{' }}\
{% for it in items %}{{ it.id | tojson }}: {{ '{' }}{{ keys | join(', ') }}{{ '}' }}\
{% if not loop.last %}, {% endif %}{% endfor %}{{ '}' }}.
"""
)

TEMPLATE_VERSION: str = (
    "judge-1+"
    + hashlib.sha256(
        "\0".join((_SYSTEM_PROMPT, _USER_TEMPLATE, _RETRY_TEMPLATE)).encode("utf-8")
    ).hexdigest()[:12]
)
"""Identifies the judge prompts; it changes whenever any prompt text changes, so caches and
suites that pin it never mix scores from different prompts."""


@dataclass(frozen=True)
class JudgeInput:
    """One RAG output to judge: the question, the generated answer, the ranked retrieved
    contexts (best first) and, when the dataset has one, the reference answer."""

    question: str
    answer: str
    contexts: tuple[str, ...]
    reference: str | None = None

    def __post_init__(self) -> None:
        # Callers often hold contexts in a list; keep the value immutable and hashable.
        object.__setattr__(self, "contexts", tuple(self.contexts))


CRITERIA_INPUTS: tuple[str, ...] = ("question", "answer", "contexts", "reference")
"""What a custom criterion may show the judge; the answer is always shown."""


@dataclass(frozen=True)
class CriterionExample:
    """A scored example shown to the judge with a criterion (few-shot calibration)."""

    answer: str
    score: int
    question: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Criteria:
    """A custom-criteria judged metric: ``criteria`` is the rubric text, ``scale`` the integer
    range ``(low, high)`` the judge grades on, ``examples`` scored examples, ``inputs`` what
    the judge is shown (of :data:`CRITERIA_INPUTS`; the answer always). Its score is the
    judge's integer normalised to [0, 1]; NaN (skipped) for an item without a reference
    when ``inputs`` holds ``"reference"``. Raises ValueError for a bad definition."""

    name: str
    criteria: str
    scale: tuple[int, int] = (1, 5)
    examples: tuple[CriterionExample, ...] = ()
    inputs: tuple[str, ...] = ("question", "answer")

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(self.scale))
        object.__setattr__(self, "examples", tuple(
            e if isinstance(e, CriterionExample) else CriterionExample(**e)
            for e in self.examples))
        inputs = tuple(dict.fromkeys(("answer", *self.inputs)))
        object.__setattr__(self, "inputs", inputs)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a criterion needs a non-empty name, got {self.name!r}")
        if self.name in JUDGED_METRICS:
            raise ValueError(f"criterion name {self.name!r} is the name of a built-in judged "
                             "metric; choose another")
        if not isinstance(self.criteria, str) or not self.criteria.strip():
            raise ValueError(f"{self.name}: criteria must be a non-empty text")
        low_high = self.scale
        if (len(low_high) != 2 or any(isinstance(v, bool) or not isinstance(v, int)
                                      for v in low_high) or low_high[0] >= low_high[1]):
            raise ValueError(f"{self.name}: scale must be two integers [low, high] with "
                             f"low < high, got {list(low_high)}")
        for name in inputs:
            if name not in CRITERIA_INPUTS:
                raise ValueError(f"{self.name}: unknown input {name!r}"
                                 f"{did_you_mean(name, CRITERIA_INPUTS)}; known: "
                                 f"{', '.join(CRITERIA_INPUTS)}")
        for i, example in enumerate(self.examples):
            if (isinstance(example.score, bool) or not isinstance(example.score, int)
                    or not low_high[0] <= example.score <= low_high[1]):
                raise ValueError(f"{self.name}: examples[{i}].score must be an integer from "
                                 f"{low_high[0]} to {low_high[1]}, got {example.score!r}")

    def normalise(self, score: int) -> float:
        """The judge's integer mapped to [0, 1] (low -> 0, high -> 1)."""
        low, high = self.scale
        return (score - low) / (high - low)


@dataclass(frozen=True)
class JudgeResult:
    """Scores and evidence for one item.

    ``scores`` has every requested metric (NaN when it could not be computed); ``errors`` names
    the metrics that failed and why; ``verdicts`` holds JSON-safe evidence per metric (claims,
    verdicts, reasons, similarities, or ``skipped`` / ``error`` explanations); ``usage`` sums
    the chat requests this item cost (with ``items_per_call`` > 1, its share of a batched
    request; see "Batching across items"); ``embed_requests`` counts embedding requests.
    """

    scores: dict[str, float]
    verdicts: dict[str, Any]
    usage: Usage
    embed_requests: int
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ask:
    """Which parts of the reply schema one judge request asks for."""

    ans_supported: bool = False
    ans_in_ref: bool = False
    ref_attributed: bool = False
    ref_in_answer: bool = False
    useful: bool = False
    n_questions: int = 0
    criteria: tuple[Criteria, ...] = ()

    @property
    def answer_claims(self) -> bool:
        return self.ans_supported or self.ans_in_ref

    @property
    def reference_claims(self) -> bool:
        return self.ref_attributed or self.ref_in_answer

    def reply_keys(self) -> list[str]:
        keys = []
        if self.answer_claims:
            keys.append("answer_claims")
        if self.reference_claims:
            keys.append("reference_claims")
        if self.useful:
            keys.append("useful")
        if self.n_questions:
            keys += ["questions", "noncommittal"]
        if self.criteria:
            keys.append("criteria")
        return keys

    def shows(self, part: str) -> bool:
        """Whether some criterion asks for ``part`` of the item."""
        return any(part in c.inputs for c in self.criteria)

    @classmethod
    def for_metrics(cls, metrics: Iterable[str | Criteria], n_questions: int) -> _Ask:
        metrics = list(metrics)
        wanted = {m for m in metrics if isinstance(m, str)}
        return cls(
            ans_supported="faithfulness" in wanted,
            ans_in_ref="answer_correctness" in wanted,
            ref_attributed="context_recall" in wanted,
            ref_in_answer="answer_correctness" in wanted,
            useful="context_precision" in wanted,
            n_questions=n_questions if "answer_relevancy" in wanted else 0,
            criteria=tuple(m for m in metrics if isinstance(m, Criteria)),
        )


@dataclass(frozen=True)
class _Reply:
    """A validated judge reply, with verdicts as ints and JSON-safe claim dicts."""

    answer_claims: list[dict[str, Any]]
    reference_claims: list[dict[str, Any]]
    useful: list[int]
    questions: list[str]
    noncommittal: bool
    criteria: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Outcome:
    """What one judge request (with its retry) produced."""

    reply: _Reply | None
    error: str | None
    usage: Usage
    text: str | None


@dataclass(frozen=True)
class _BatchEntry:
    """One item's part of a batched request: its outcome (``usage`` is its share of the
    call), why its entry was rejected (None when it was usable or the call failed), and
    whether the call was served from the cache."""

    outcome: _Outcome
    why: str | None = None
    cached: bool = False
    #: the part of ``outcome.usage`` that was paid for, when only some of the call's attempts
    #: came from the cache (None: all of it, or none when ``cached``)
    paid: Usage | None = None


@runtime_checkable
class ReplyStore(Protocol):
    """Where each item's entry of a batched reply is kept, keyed like a chat request
    (:class:`~pytest_ragbench.llm.cache.CachedLLM` is one)."""

    def lookup(self, messages: Sequence[Message], params: Mapping[str, Any]
               ) -> Completion | None: ...

    def store(self, messages: Sequence[Message], params: Mapping[str, Any],
              completion: Completion) -> None: ...

    def forget(self, messages: Sequence[Message], params: Mapping[str, Any]) -> bool: ...

    def mark_rejected(self, messages: Sequence[Message], params: Mapping[str, Any]) -> None: ...


def _item_id(index: int) -> str:
    """The id of the item at 0-based ``index`` of a batched request."""
    return f"item-{index + 1}"


def _shares(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainder (ties to the earlier
    item), so the shares are integers adding up to ``total``."""
    whole = sum(weights)
    base = [total * w // whole for w in weights]
    rest = total - sum(base)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in by_remainder[:rest]:
        base[i] += 1
    return base


def _shares_of(free: Usage, paid: Usage, sections: Sequence[str]) -> list[tuple[Usage, Usage]]:
    """Each item's share of a batched call whose attempts were ``free`` (from the cache) and
    ``paid``: (its whole share, the paid part of it)."""
    return [(f + p, p) for f, p in zip(_split_usage(free, sections),
                                       _split_usage(paid, sections), strict=True)]


def _split_usage(usage: Usage, sections: Sequence[str]) -> list[Usage]:
    """Each item's share of a batched call's usage: requests, prompt and completion tokens
    each split in proportion to the length of the item's section of the prompt."""
    weights = [max(len(s), 1) for s in sections]
    columns = [_shares(n, weights) for n in
               (usage.prompt_tokens, usage.completion_tokens, usage.requests)]
    return [Usage(p, c, r, usage.estimated) for p, c, r in zip(*columns, strict=True)]


class _SchemaError(ValueError):
    """The judge's reply does not match the schema; the message is shown to the judge."""


class _EmbedError(Exception):
    """The embedder failed or returned something unusable."""


_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)


def _reject_constant(name: str) -> Any:
    raise _SchemaError(f"{name} is not allowed in the reply")


def _load_object(text: str) -> dict[str, Any]:
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _SchemaError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except _SchemaError:
        raise  # a constant the reply may not use (NaN), already worded
    except (ValueError, RecursionError) as exc:
        # what json.loads raises beyond its decode errors: an integer of more digits than
        # Python converts (a judge stuck repeating one), nesting deeper than the stack; a
        # reply the judge gets to correct, not a crash of every case of its batch
        raise _SchemaError(f"not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(value, dict):
        raise _SchemaError(f"expected a JSON object, got {_json_type(value)}")
    # a claim's "\ud800" escape: claims and reasons go into records
    return valid_strings(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _verdict(value: Any, where: str) -> int:
    # bool is checked first because it is a subclass of int.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    raise _SchemaError(f"{where}: expected 0 or 1, got {json.dumps(value)}")


def _required(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise _SchemaError(f"{where}: missing key {key!r}")
    return obj[key]


def _context_numbers(value: Any, where: str, n_contexts: int) -> list[int]:
    if not isinstance(value, list):
        raise _SchemaError(f"{where}: expected an array of context numbers")
    numbers = []
    for i, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, int):
            raise _SchemaError(f"{where}[{i}]: expected a context number, got {json.dumps(number)}")
        if not 1 <= number <= n_contexts:
            allowed = f"1..{n_contexts}" if n_contexts else "none (there are no contexts)"
            raise _SchemaError(f"{where}[{i}]: context number {number} out of range ({allowed})")
        numbers.append(number)
    return numbers


def _claims(
    obj: Mapping[str, Any],
    key: str,
    verdict_keys: Sequence[str],
    with_ctx: bool,
    n_contexts: int,
) -> list[dict[str, Any]]:
    value = _required(obj, key, "reply")
    if not isinstance(value, list):
        raise _SchemaError(f"{key}: expected an array, got {_json_type(value)}")
    claims = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise _SchemaError(f"{where}: expected an object, got {_json_type(entry)}")
        text = _required(entry, "claim", where)
        if not isinstance(text, str) or not text.strip():
            raise _SchemaError(f"{where}.claim: expected a non-empty string")
        claim: dict[str, Any] = {"claim": text.strip()}
        for verdict_key in verdict_keys:
            claim[verdict_key] = _verdict(
                _required(entry, verdict_key, where), f"{where}.{verdict_key}"
            )
        if with_ctx:
            claim["ctx"] = _context_numbers(entry.get("ctx", []), f"{where}.ctx", n_contexts)
        why = entry.get("why")
        if why is not None:
            if not isinstance(why, str):
                raise _SchemaError(f"{where}.why: expected a string")
            claim["why"] = why.strip()
        claims.append(claim)
    return claims


def _parse_reply(text: str, ask: _Ask, n_contexts: int) -> _Reply:
    return _parse_object(_load_object(text), ask, n_contexts)


def _parse_object(obj: Mapping[str, Any], ask: _Ask, n_contexts: int) -> _Reply:
    """A reply object validated against ``ask``: one item's reply, or its entry in a batch."""
    answer_claims: list[dict[str, Any]] = []
    reference_claims: list[dict[str, Any]] = []
    useful: list[int] = []
    questions: list[str] = []
    noncommittal = False
    if ask.answer_claims:
        flags = (("supported", ask.ans_supported), ("in_reference", ask.ans_in_ref))
        keys = [k for k, on in flags if on]
        answer_claims = _claims(obj, "answer_claims", keys, ask.ans_supported, n_contexts)
    if ask.reference_claims:
        flags = (("attributed", ask.ref_attributed), ("in_answer", ask.ref_in_answer))
        keys = [k for k, on in flags if on]
        reference_claims = _claims(obj, "reference_claims", keys, ask.ref_attributed, n_contexts)
    if ask.useful:
        value = _required(obj, "useful", "reply")
        if not isinstance(value, list):
            raise _SchemaError(f"useful: expected an array, got {_json_type(value)}")
        if len(value) != n_contexts:
            raise _SchemaError(
                f"useful: expected {n_contexts} verdicts (one per context), got {len(value)}"
            )
        useful = [_verdict(v, f"useful[{i}]") for i, v in enumerate(value)]
    if ask.n_questions:
        value = _required(obj, "questions", "reply")
        if not isinstance(value, list):
            raise _SchemaError(f"questions: expected an array, got {_json_type(value)}")
        if len(value) != ask.n_questions:
            raise _SchemaError(f"questions: expected {ask.n_questions} questions, got {len(value)}")
        for i, question in enumerate(value):
            if not isinstance(question, str) or not question.strip():
                raise _SchemaError(f"questions[{i}]: expected a non-empty string")
            questions.append(question.strip())
        noncommittal = bool(_verdict(_required(obj, "noncommittal", "reply"), "noncommittal"))
    criteria = _criteria(obj, ask.criteria) if ask.criteria else {}
    return _Reply(answer_claims, reference_claims, useful, questions, noncommittal, criteria)


def _criteria(obj: Mapping[str, Any], wanted: Sequence[Criteria]) -> dict[str, dict[str, Any]]:
    value = _required(obj, "criteria", "reply")
    if not isinstance(value, dict):
        raise _SchemaError(f"criteria: expected an object, got {_json_type(value)}")
    out: dict[str, dict[str, Any]] = {}
    for criterion in wanted:
        where = f"criteria.{criterion.name}"
        entry = _required(value, criterion.name, "criteria")
        if not isinstance(entry, dict):
            raise _SchemaError(f"{where}: expected an object, got {_json_type(entry)}")
        score = _required(entry, "score", where)
        low, high = criterion.scale
        # a whole number written as 4.0 is still the integer the scale asks for
        if isinstance(score, float) and score.is_integer():
            score = int(score)
        if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
            raise _SchemaError(f"{where}.score: expected an integer from {low} to {high}, "
                               f"got {json.dumps(score)}")
        verdict: dict[str, Any] = {"score": score}
        why = entry.get("why")
        if why is not None:
            if not isinstance(why, str):
                raise _SchemaError(f"{where}.why: expected a string")
            verdict["why"] = why.strip()
        out[criterion.name] = verdict
    return out


def _average_precision(useful: Sequence[int]) -> tuple[float, list[float]]:
    precision_at_k = []
    hits = 0
    total = 0.0
    for k, verdict in enumerate(useful, start=1):
        hits += verdict
        precision_at_k.append(hits / k)
        total += precision_at_k[-1] * verdict
    return (total / hits if hits else 0.0), precision_at_k


def _cosines(matrix: np.ndarray, anchor: int, others: Sequence[int]) -> list[float]:
    norms = np.linalg.norm(matrix, axis=1)
    rows = [anchor, *others]
    if np.any(norms[rows] == 0.0):
        raise _EmbedError("the embedder returned a zero vector")
    sims = matrix[list(others)] @ matrix[anchor] / (norms[list(others)] * norms[anchor])
    return [float(s) for s in sims]


class Judge:
    """Computes the :data:`JUDGED_METRICS` for one item at a time with an LLM judge.

    ``llm`` answers the judge prompts; ``embedder`` is needed for ``answer_relevancy`` and turns
    ``answer_correctness`` into RAGAS's weighted blend. ``mode`` is ``"batched"`` (one chat
    request per item for all requested metrics) or ``"per_metric"`` (one per metric).
    ``n_questions`` is how many questions answer relevancy generates. ``params`` go to every
    ``llm.chat`` call unchanged (e.g. ``{"temperature": 0, "seed": 0}`` for repeatable
    judging). ``template_version`` pins the prompts: a value other than
    :data:`TEMPLATE_VERSION` is refused, so scores from different prompts are never mixed.

    ``items_per_call`` > 1 judges up to that many items in one chat request (see
    :meth:`case` and the module's "Batching across items"); ``replies`` (e.g. the
    :class:`~pytest_ragbench.llm.cache.CachedLLM` under ``llm``) stores each item's entry of a
    batched reply on its own, so a rerun needs no request whatever the batches are;
    ``charge`` receives each item's share of a batched call, in that item's context (e.g. to
    add it to a per-case meter that ``llm`` would otherwise charge with the whole call). A
    batching judge is used from one event loop.
    """

    def __init__(
        self,
        llm: LLM,
        embedder: Embedder | None = None,
        *,
        mode: str = "batched",
        n_questions: int = 3,
        params: Mapping[str, Any] | None = None,
        template_version: str = TEMPLATE_VERSION,
        items_per_call: int = 1,
        replies: ReplyStore | None = None,
        charge: Callable[[Completion, str | None], None] | None = None,
    ) -> None:
        if (isinstance(items_per_call, bool) or not isinstance(items_per_call, int)
                or not 1 <= items_per_call <= MAX_ITEMS_PER_CALL):
            raise ValueError(f"items_per_call must be an integer from 1 to "
                             f"{MAX_ITEMS_PER_CALL}, got {items_per_call!r}")
        if mode not in _MODES:
            raise ValueError(f"judge mode must be one of {_MODES}, got {mode!r}")
        if isinstance(n_questions, bool) or not isinstance(n_questions, int) or n_questions < 1:
            raise ValueError(f"n_questions must be a positive integer, got {n_questions!r}")
        if template_version != TEMPLATE_VERSION:
            raise ValueError(
                f"judge template version {template_version!r} was requested but this "
                f"pytest-ragbench has {TEMPLATE_VERSION!r}; scores would not be comparable"
            )
        self.llm = llm
        self.embedder = embedder
        self.mode = mode
        self.n_questions = n_questions
        self.params: dict[str, Any] = dict(params or {})
        self.template_version = template_version
        self.items_per_call = items_per_call
        self._template = compiled(_USER_TEMPLATE)
        self._item_template = compiled(_ITEM_TEMPLATE)
        self._batch_template = compiled(_BATCH_USER_TEMPLATE)
        self._replies = replies
        # requests whose stored replies were rejected (see forget_rejected)
        self._rejected: list[list[Message]] = []
        self._charge = charge
        # the items being judged in a batch, by the request each would make alone
        self._judging: dict[str, tuple[asyncio.Future[None], SharedCall]] = {}
        self.batcher: CallBatcher[_Ask, JudgeInput, _BatchEntry] | None = (
            CallBatcher(items_per_call, self._call_batch) if items_per_call > 1 else None)
        """Groups the requests of items judged at the same time (None when
        ``items_per_call`` is 1); its ``calls`` and ``sizes`` say what was sent."""

    def case(self, tag: Any = None) -> contextlib.AbstractContextManager[None]:
        """Mark one item's work (say its generation, then :meth:`evaluate`) as one case.

        With ``items_per_call`` > 1 a batch that is not full waits while some open case is
        neither waiting for the judge nor finished, since it may still join; it is sent as
        soon as every open case waits. :meth:`evaluate` is a case of its own when called
        outside one. ``tag`` names the case for :meth:`CallBatcher.awaiting
        <pytest_ragbench.llm.batching.CallBatcher.awaiting>`. A no-op with ``items_per_call``
        1."""
        return self.batcher.case(tag) if self.batcher is not None else contextlib.nullcontext()

    def messages(self, item: JudgeInput, metrics: Sequence[str | Criteria]) -> list[Message]:
        """The chat messages of the single batched request for ``metrics`` (for inspection,
        dry runs and token estimates); metrics that need no request are left out, and the list is
        empty when none does."""
        wanted = [m for m in self._check(metrics) if self._skip(item, m) is None]
        ask = _Ask.for_metrics(wanted, self.n_questions)
        return self._messages(item, ask) if ask.reply_keys() else []

    async def evaluate(self, item: JudgeInput,
                       metrics: Sequence[str | Criteria]) -> JudgeResult:
        """Judge ``item`` on ``metrics`` (names from :data:`JUDGED_METRICS` and
        :class:`Criteria`, whose results are keyed by their names).

        Never raises for judge or embedder failures: see :class:`JudgeResult`.
        Raises :class:`ValueError` for an unknown metric name.
        """
        wanted = self._check(metrics)
        with self.case():
            return await self._evaluate(item, wanted)

    async def _evaluate(self, item: JudgeInput, wanted: list[str | Criteria]) -> JudgeResult:
        scores = {_key(m): math.nan for m in wanted}
        verdicts: dict[str, Any] = {}
        errors: dict[str, str] = {}

        pending: list[str | Criteria] = []
        for metric in wanted:
            skip = self._skip(item, metric)
            if skip is None:
                pending.append(metric)
                continue
            kind, reason, score = skip
            scores[_key(metric)] = score
            verdicts[_key(metric)] = {kind: reason}
            if kind == "error":
                errors[_key(metric)] = reason

        groups = [pending] if self.mode == "batched" else [[m] for m in pending]
        groups = [g for g in groups if g]
        outcomes = await asyncio.gather(
            *(self._request(item, _Ask.for_metrics(g, self.n_questions)) for g in groups)
        )
        usage = Usage(0, 0, 0)
        # Texts to embed, and for each metric that needs them, the row indices it uses.
        embed_texts: list[str] = []
        relevancy_rows: tuple[int, list[int]] | None = None
        correctness_rows: tuple[int, int] | None = None
        correctness_f1 = math.nan

        for group, outcome in zip(groups, outcomes, strict=True):
            usage += outcome.usage
            if outcome.reply is None:
                assert outcome.error is not None
                for metric in group:
                    errors[_key(metric)] = outcome.error
                    verdicts[_key(metric)] = {"error": outcome.error}
                    if outcome.text is not None:
                        verdicts[_key(metric)]["reply"] = outcome.text[:_MAX_REPLY_IN_VERDICTS]
                continue
            reply = outcome.reply
            for metric in group:
                if isinstance(metric, Criteria):
                    verdict = reply.criteria[metric.name]
                    scores[metric.name] = metric.normalise(verdict["score"])
                    verdicts[metric.name] = {**verdict, "scale": list(metric.scale)}
                elif metric == "faithfulness":
                    scores[metric], verdicts[metric] = _claim_ratio(
                        reply.answer_claims, "supported", "the answer states no claim"
                    )
                elif metric == "context_recall":
                    scores[metric], verdicts[metric] = _claim_ratio(
                        reply.reference_claims, "attributed", "the reference states no claim"
                    )
                elif metric == "context_precision":
                    ap, precision_at_k = _average_precision(reply.useful)
                    scores[metric] = ap
                    verdicts[metric] = {"useful": reply.useful, "precision_at_k": precision_at_k}
                elif metric == "answer_relevancy":
                    verdicts[metric] = {
                        "questions": reply.questions,
                        "noncommittal": reply.noncommittal,
                    }
                    if reply.noncommittal:
                        scores[metric] = 0.0
                    else:
                        start = len(embed_texts)
                        embed_texts += [item.question, *reply.questions]
                        others = list(range(start + 1, len(embed_texts)))
                        relevancy_rows = (start, others)
                elif metric == "answer_correctness":
                    correctness_f1, verdicts[metric] = _factual_f1(reply)
                    if self.embedder is None or math.isnan(correctness_f1):
                        scores[metric] = correctness_f1
                    else:
                        start = len(embed_texts)
                        embed_texts += [item.answer, item.reference or ""]
                        correctness_rows = (start, start + 1)

        embed_requests = 0
        if embed_texts:
            assert self.embedder is not None
            embed_requests = 1
            matrix: np.ndarray | None = None
            embed_error = ""
            try:
                matrix = await self._embed(embed_texts)
            except _EmbedError as exc:
                embed_error = str(exc)

            def cosines(anchor: int, others: list[int]) -> list[float]:
                # A failed embedding request fails every metric that was waiting for it.
                if matrix is None:
                    raise _EmbedError(embed_error)
                return _cosines(matrix, anchor, others)

            if relevancy_rows is not None:
                try:
                    sims = cosines(*relevancy_rows)
                    scores["answer_relevancy"] = float(np.mean(sims))
                    verdicts["answer_relevancy"]["similarities"] = sims
                except _EmbedError as exc:
                    errors["answer_relevancy"] = verdicts["answer_relevancy"]["error"] = str(exc)
            if correctness_rows is not None:
                try:
                    # RAGAS neither clips nor rescales the cosine: a negative one lowers the
                    # score below the factual part's share.
                    (sim,) = cosines(correctness_rows[0], [correctness_rows[1]])
                    w_f1, w_sim = _CORRECTNESS_WEIGHTS
                    scores["answer_correctness"] = (
                        (w_f1 * correctness_f1 + w_sim * sim) / (w_f1 + w_sim))
                    verdicts["answer_correctness"].update(
                        similarity=sim,
                        formula=(f"({w_f1} * factual_f1 + {w_sim} * similarity)"
                                 f" / ({w_f1} + {w_sim})"),
                    )
                except _EmbedError as exc:
                    errors["answer_correctness"] = str(exc)
                    verdicts["answer_correctness"]["error"] = str(exc)

        return JudgeResult(
            scores=scores,
            verdicts=verdicts,
            usage=usage,
            embed_requests=embed_requests,
            errors=errors,
        )

    def _check(self, metrics: Sequence[str | Criteria]) -> list[str | Criteria]:
        if isinstance(metrics, str | Criteria):
            metrics = [metrics]
        wanted: list[str | Criteria] = []
        criteria: dict[str, Criteria] = {}
        for metric in metrics:
            if isinstance(metric, Criteria):
                if criteria.setdefault(metric.name, metric) != metric:
                    raise ValueError(f"two different criteria are named {metric.name!r}")
                if metric not in wanted:
                    wanted.append(metric)
                continue
            if metric not in JUDGED_METRICS:
                raise ValueError(
                    f"unknown judged metric {metric!r}{did_you_mean(metric, JUDGED_METRICS)}; "
                    f"known: {', '.join(JUDGED_METRICS)}"
                )
            if metric not in wanted:
                wanted.append(metric)
        return wanted

    def _skip(self, item: JudgeInput,
              metric: str | Criteria) -> tuple[str, str, float] | None:
        """Why ``metric`` needs no judge request, as ``(kind, reason, score)`` with kind
        ``"error"`` or ``"skipped"``; None when it needs one."""
        if isinstance(metric, Criteria):
            if "reference" in metric.inputs and not (item.reference and item.reference.strip()):
                reason = f"{metric.name} needs a reference answer and the item has none"
                return ("skipped", reason, math.nan)
            return None
        if metric == "answer_relevancy" and self.embedder is None:
            return ("error", "answer_relevancy needs an embedder", math.nan)
        if metric in _NEEDS_REFERENCE and not (item.reference and item.reference.strip()):
            reason = f"{metric} needs a reference answer and the item has none"
            return ("skipped", reason, math.nan)
        if metric == "context_precision" and not item.contexts:
            # Nothing retrieved means no useful context at any rank: the "none useful" case.
            return ("skipped", "no contexts were retrieved", 0.0)
        return None

    @staticmethod
    def _shown(ask: _Ask) -> dict[str, Any]:
        """Which parts of an item the prompt shows, and the reply keys, for ``ask``."""
        return {
            "ask": ask,
            "keys": [json.dumps(k) + ": ..." for k in ask.reply_keys()],
            # As in RAGAS, questions are generated from the answer without seeing the real one,
            # which would otherwise leak into them and inflate answer relevancy.
            "show_question": (ask.answer_claims or ask.reference_claims or ask.useful
                              or ask.shows("question")),
            "show_answer": (ask.answer_claims or ask.ref_in_answer or bool(ask.n_questions)
                            or bool(ask.criteria)),
            "show_reference": (ask.reference_claims or ask.ans_in_ref or ask.useful
                               or ask.shows("reference")),
            "show_contexts": (ask.ans_supported or ask.ref_attributed or ask.useful
                              or ask.shows("contexts")),
        }

    @staticmethod
    def _item_vars(item: JudgeInput) -> dict[str, Any]:
        return {"question": item.question, "answer": item.answer,
                "reference": item.reference or "", "contexts": list(item.contexts)}

    def _messages(self, item: JudgeInput, ask: _Ask) -> list[Message]:
        user = self._template.render(**self._item_vars(item), **self._shown(ask))
        return [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ]

    def _batch_messages(self, ask: _Ask,
                        items: Sequence[JudgeInput]) -> tuple[list[Message], list[str]]:
        """The batched request for ``items`` (ids ``item-1``, ``item-2``, ... in order) and
        each item's section of it."""
        shown = self._shown(ask)
        sections = [self._item_template.render(**self._item_vars(item), **shown).rstrip("\n")
                    for item in items]
        user = self._batch_template.render(
            items=[{"id": _item_id(i), "text": text} for i, text in enumerate(sections)],
            **shown)
        return ([{"role": "system", "content": _BATCH_SYSTEM_PROMPT},
                 {"role": "user", "content": user}], sections)

    async def _request(self, item: JudgeInput, ask: _Ask) -> _Outcome:
        if self.batcher is None:
            return await self._request_alone(item, ask)
        if self._replies is None:
            return await self._batched(item, ask)
        # the request this item would make alone: where its entry is stored
        alone, _ = self._batch_messages(ask, [item])
        outcome = self._stored_entry(item, ask, alone)
        if outcome is not None:
            return outcome
        # An identical item judged at the same moment (two repetitions that answered alike)
        # waits for the first one's entry, as a second identical request waits for the
        # first at items_per_call 1: both would otherwise join batches and be sent.
        key = json.dumps(alone)
        first = self._judging.get(key)
        if first is not None:
            done, shared = first
            # the first one's request is this item's too: its waits for a slot are (see
            # llm/deadline.py)
            with shared.joined():
                await self.batcher.wait_for(asyncio.shield(done))
            outcome = self._stored_entry(item, ask, alone)
            # the first one's entry was not stored (its request failed): ask on its own
            return outcome or await self._batched(item, ask)
        done = asyncio.get_running_loop().create_future()
        shared = SharedCall()
        self._judging[key] = (done, shared)
        try:
            with shared.making():
                return await self._batched(item, ask)
        finally:
            del self._judging[key]
            done.set_result(None)

    async def _batched(self, item: JudgeInput, ask: _Ask) -> _Outcome:
        assert self.batcher is not None
        entry = await self.batcher.request(ask, item)
        if self._charge is not None:
            key = self._share_key(item, ask)
            # only the attempts that were sent are priced (one may have come from the cache:
            # an earlier run's rejected reply, before a correction), as at items_per_call 1
            share, zero = entry.outcome.usage, Usage(0, 0, 0)
            paid = entry.paid if entry.paid is not None else zero if entry.cached else share
            free = Usage(share.prompt_tokens - paid.prompt_tokens,
                         share.completion_tokens - paid.completion_tokens,
                         share.requests - paid.requests, share.estimated)
            if free != zero or paid == zero:
                self._charge(Completion("", free, cached=True), key)
            if paid != zero:
                self._charge(Completion("", paid, cached=False), key)
        if entry.why is None:
            return entry.outcome
        # its entry was missing or invalid: this item alone is asked again, once
        alone = await self._request_alone(item, ask)
        error = alone.error
        if error is not None:
            error = f"{error} (its entry in a batched reply was rejected first: {entry.why})"
        elif alone.text is not None:
            # kept where a batch looks, so a rerun asks nothing whatever batches form
            self._store_entry(item, ask, _load_object(alone.text), alone.usage, "")
        return _Outcome(alone.reply, error, entry.outcome.usage + alone.usage, alone.text)

    def _share_key(self, item: JudgeInput, ask: _Ask) -> str | None:
        """The key an item's share of a batched call is charged under: the request it would
        make alone. Two repetitions that answered alike share one entry, and the run charges
        it to the first of them in the records' order (results/settle.py) whichever reached
        the judge first, as it does a request they share at items_per_call 1. Without the
        response cache nothing is shared, and no request is keyed."""
        if self._replies is None:
            return None
        alone, _ = self._batch_messages(ask, [item])
        text = json.dumps([alone, self.params], sort_keys=True, ensure_ascii=False,
                          default=repr)
        return "judge-item-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def _store_entry(self, item: JudgeInput, ask: _Ask, entry: Mapping[str, Any],
                     usage: Usage, model: str) -> None:
        """Store a valid entry as the reply ``item`` gets in a batch of one."""
        if self._replies is None:
            return
        alone, _ = self._batch_messages(ask, [item])
        self._replies.store(alone, self.params, Completion(
            json.dumps({_item_id(0): entry}), usage, model=model))

    def _stored_entry(self, item: JudgeInput, ask: _Ask,
                      alone: list[Message]) -> _Outcome | None:
        """This item's entry of an earlier batched reply (stored under ``alone``, the
        request it would make alone), when ``replies`` has it."""
        if self._replies is None:
            return None
        hit = self._replies.lookup(alone, self.params)
        if hit is None:
            return None
        try:
            entry = _load_object(hit.text).get(_item_id(0))
            if not isinstance(entry, dict):
                return None
            reply = _parse_object(entry, ask, len(item.contexts))
        except _SchemaError:
            return None  # not a usable entry: ask again
        if self._charge is not None:
            self._charge(hit, self._share_key(item, ask))
        return _Outcome(reply, None, hit.usage, hit.text)

    async def _call_batch(self, ask: _Ask, items: list[JudgeInput]) -> list[_BatchEntry]:
        """One batched request for ``items`` (with one correction retry when the reply is not
        an object holding any item's entry); each entry validated on its own."""
        messages, sections = self._batch_messages(ask, items)
        ids = [_item_id(i) for i in range(len(items))]
        free = paid = Usage(0, 0, 0)  # the attempts served by the cache, and the others
        text: str | None = None
        obj: dict[str, Any] | None = None
        model = ""
        # why the reply was refused: ``error`` tells the judge (with the ids it must use),
        # ``reason`` the items' records, which must not name a batch id: who shares a batch,
        # and in what order, depends on timing, and the records must not
        error = reason = ""
        for _attempt in range(2):
            try:
                completion = await self.llm.chat(messages, **self.params)
            except LLMError as exc:
                return [_BatchEntry(_Outcome(None, f"judge request failed: {exc}", share, text),
                                    cached=False, paid=paid_share)
                        for share, paid_share in _shares_of(free, paid, sections)]
            if completion.cached:
                free += completion.usage
            else:
                paid += completion.usage
            text, model = completion.text, completion.model
            try:
                obj = _load_object(text)
                if not any(i in obj for i in ids):
                    raise _SchemaError(f"expected one entry per item, keyed by its id "
                                       f"({', '.join(ids)}); found none")
            except _SchemaError as exc:
                # obj is set when the reply was an object without any id
                reason = (str(exc) if obj is None
                          else "expected one entry per item, keyed by its id; found none")
                obj, error = None, str(exc)
                messages = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": _RETRY_TEMPLATE.format(error=error)},
                ]
                continue
            break
        cached = paid == Usage(0, 0, 0)
        out: list[_BatchEntry] = []
        for item_id, item, (share, paid_share) in zip(ids, items,
                                                     _shares_of(free, paid, sections),
                                                     strict=True):
            if obj is None:
                why = f"the batched reply did not parse after 1 retry: {reason}"
                out.append(_BatchEntry(_Outcome(None, why, share, text), why, cached,
                                       paid_share))
                continue
            entry = obj.get(item_id)
            try:
                if entry is None:
                    raise _SchemaError("the reply has no entry for it")
                if not isinstance(entry, dict):
                    raise _SchemaError(f"expected an object, got {_json_type(entry)}")
                reply = _parse_object(entry, ask, len(item.contexts))
            except _SchemaError as exc:
                why = str(exc)
                out.append(_BatchEntry(_Outcome(None, why, share, text), why, cached,
                                       paid_share))
                continue
            # stored as the reply this item would get alone, so any batch finds it (also for
            # a batch of one: after a correction retry its first, rejected reply is the one
            # cached under these messages)
            self._store_entry(item, ask, entry, share, model)
            out.append(_BatchEntry(_Outcome(reply, None, share, text), None, cached,
                                   paid_share))
        return out

    async def _request_alone(self, item: JudgeInput, ask: _Ask) -> _Outcome:
        messages = self._messages(item, ask)
        usage = Usage(0, 0, 0)
        text: str | None = None
        error = ""
        for _attempt in range(2):
            try:
                completion = await self.llm.chat(messages, **self.params)
                usage += completion.usage
                text = completion.text
                try:
                    reply = _parse_reply(text, ask, len(item.contexts))
                except _SchemaError:
                    # the response cache stored it as any reply: dropped when the run ends
                    # (see forget_rejected), so that later runs ask afresh; marked now, for
                    # a run that dies first
                    self._rejected.append(list(messages))
                    if self._replies is not None:
                        self._replies.mark_rejected(messages, self.params)
                    raise
            except LLMError as exc:
                return _Outcome(None, f"judge request failed: {exc}", usage, text)
            except _SchemaError as exc:
                error = str(exc)
                messages = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": _RETRY_TEMPLATE.format(error=error)},
                ]
                continue
            return _Outcome(reply, None, usage, text)
        return _Outcome(
            None, f"judge reply rejected after 1 retry: {error}", usage, text
        )

    def forget_rejected(self) -> None:
        """Drop from the response cache the replies this judge rejected (and the stored
        corrections it rejected too), once the run is over.

        Within the run an identical request still gets the same reply and correction, paid
        once and judged alike; replayed at every later run, one bad reply (cut short at
        ``max_tokens``, a provider's hiccup) failed its case for good.
        """
        rejected, self._rejected = self._rejected, []
        if self._replies is not None:
            for messages in rejected:
                self._replies.forget(messages, self.params)

    async def _embed(self, texts: list[str]) -> np.ndarray:
        assert self.embedder is not None
        try:
            raw = await self.embedder.embed(texts)
        except LLMError as exc:
            raise _EmbedError(f"embedding request failed: {exc}") from None
        matrix = np.asarray(raw, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise _EmbedError(f"the embedder returned shape {matrix.shape} for {len(texts)} texts")
        if not np.all(np.isfinite(matrix)):
            raise _EmbedError("the embedder returned non-finite values")
        return matrix


def _key(metric: str | Criteria) -> str:
    """The name results are keyed by."""
    return metric.name if isinstance(metric, Criteria) else metric


def _claim_ratio(
    claims: list[dict[str, Any]], verdict_key: str, empty_note: str
) -> tuple[float, dict[str, Any]]:
    backed = sum(c[verdict_key] for c in claims)
    evidence: dict[str, Any] = {
        "claims": [
            {k: c[k] for k in ("claim", verdict_key, "ctx", "why") if k in c} for c in claims
        ],
        verdict_key: backed,
        "total": len(claims),
    }
    if not claims:
        evidence["note"] = empty_note
        return math.nan, evidence
    return backed / len(claims), evidence


def f_beta(tp: int, fp: int, fn: int, beta: float = 1.0) -> float:
    """RAGAS's F-beta of claim counts: an empty precision (recall) is 1 when there is no FN
    (FP) either, else 0; 0 when precision and recall are both 0."""
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    if precision + recall == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall)


def _factual_f1(reply: _Reply) -> tuple[float, dict[str, Any]]:
    tp = sum(c["in_reference"] for c in reply.answer_claims)
    fp = len(reply.answer_claims) - tp
    fn = sum(1 - c["in_answer"] for c in reply.reference_claims)
    one_side_empty = not reply.answer_claims or not reply.reference_claims
    # RAGAS classifies whenever either side states a claim (an answer that states none to a
    # reference that does scores 0); only with neither is factuality 1.0, nothing to compare
    neither = not reply.answer_claims and not reply.reference_claims
    f1 = 1.0 if neither else f_beta(tp, fp, fn)
    evidence: dict[str, Any] = {
        "answer_claims": [
            {k: c[k] for k in ("claim", "in_reference", "why") if k in c}
            for c in reply.answer_claims
        ],
        "reference_claims": [
            {k: c[k] for k in ("claim", "in_answer", "why") if k in c}
            for c in reply.reference_claims
        ],
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "factual_f1": f1,
        "formula": "factual_f1",
    }
    if one_side_empty:
        side = ("neither the answer nor the reference" if not reply.answer_claims
                and not reply.reference_claims else
                "the answer" if not reply.answer_claims else "the reference")
        evidence["note"] = f"{side} states no claim: factual score {f1:.4g}"
    return f1, evidence
