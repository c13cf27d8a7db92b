"""An offline, deterministic "LLM" that answers by quoting the best-matching context sentence.

Prompt convention (what :func:`format_prompt` renders, and what :class:`ExtractiveLLM` reads
from the *last user message*):

* each context passage starts on a line ``[n] text`` (``n`` an integer) and continues on the
  following lines until a blank line, the next ``[m]`` line or the question line;
* the question is the text after a line starting with ``Question:`` (up to the next blank
  line); without such a line, every line that is not part of a passage is the question.

The provider splits passages into sentences and scores each by the share of the question's
content words it contains (lowercased words, minus a small stop-word list, with a plural
``s`` dropped). It answers with the best sentence(s); when the best share is below
``threshold`` it answers exactly :data:`ABSTAIN` so abstention can be measured.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .base import Completion, Message, Usage
from .identity import ProviderId

ABSTAIN = "I don't know."

_PASSAGE = re.compile(r"^\s*\[(\d+)\]\s?(.*)$")
_QUESTION = re.compile(r"^\s*question\s*:\s*(.*)$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")
_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    out over own same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself
    answer question context passage passages using given following based
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

PROMPT_INSTRUCTIONS = (
    "Answer the question using only the numbered context passages. "
    f'If they do not contain the answer, reply "{ABSTAIN}"'
)


def format_prompt(question: str, passages: Sequence[str]) -> str:
    """Render ``question`` and ``passages`` in the convention :class:`ExtractiveLLM` reads."""
    # a passage's own blank lines would end it early, so they are folded into spaces
    lines = [f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, start=1)]
    return f"{PROMPT_INSTRUCTIONS}\n\n" + "\n".join(lines) + f"\n\nQuestion: {question.strip()}"


@dataclass(frozen=True)
class ParsedPrompt:
    """The question and the passages found in a prompt."""

    question: str
    passages: tuple[str, ...]


def parse_prompt(text: str) -> ParsedPrompt:
    """Split a prompt written in the convention above into question and passages."""
    passages: list[list[str]] = []
    question: list[str] = []
    loose: list[str] = []  # lines that are neither passage nor labelled question
    state = "loose"
    for line in text.splitlines():
        passage = _PASSAGE.match(line)
        labelled = _QUESTION.match(line)
        if passage:
            passages.append([passage.group(2)])
            state = "passage"
        elif labelled:
            question = [labelled.group(1)]
            state = "question"
        elif not line.strip():
            state = "loose"
        elif state == "passage":
            passages[-1].append(line.strip())
        elif state == "question":
            question.append(line.strip())
        else:
            loose.append(line.strip())
    asked = question if question else loose
    return ParsedPrompt(
        question=" ".join(part for part in asked if part),
        passages=tuple(" ".join(parts).strip() for parts in passages),
    )


def content_words(text: str) -> set[str]:
    """Lowercased words minus stop words, with a plural ``s`` dropped from longer words."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return words


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class ExtractiveLLM:
    """An offline :class:`~pytest_ragbench.llm.base.LLM`: answers with context sentences.

    Args:
        threshold: minimum share (0..1] of the question's content words a sentence must
            contain; below it the answer is exactly ``"I don't know."``.
        max_sentences: how many of the best sentences (ranked by score, then by position) to
            return, joined by a space.

    Request parameters (temperature, seed, ...) are accepted and ignored: the output depends
    on the messages only. ``usage`` counts whitespace-separated words (all message contents
    for the prompt, the answer for the completion) and one request.
    """

    model = "extractive"

    def __init__(self, *, threshold: float = 0.4, max_sentences: int = 1) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
        self.threshold = threshold
        self.max_sentences = max_sentences

    def __repr__(self) -> str:
        return f"ExtractiveLLM(threshold={self.threshold}, max_sentences={self.max_sentences})"

    @property
    def provider_id(self) -> ProviderId:
        """Identity for cache keys; the settings change answers, so they are part of it."""
        return ProviderId(
            "extractive",
            model=self.model,
            params={"threshold": self.threshold, "max_sentences": self.max_sentences},
        )

    def answer(self, prompt: str) -> str:
        """The answer to a prompt in the convention of this module."""
        parsed = parse_prompt(prompt)
        wanted = content_words(parsed.question)
        if not wanted:
            return ABSTAIN
        scored: list[tuple[float, int, str]] = []
        position = 0
        for passage in parsed.passages:
            for sentence in _SENTENCE_END.split(passage):
                sentence = sentence.strip()
                if not sentence:
                    continue
                share = len(wanted & content_words(sentence)) / len(wanted)
                scored.append((share, position, sentence))
                position += 1
        best = sorted(
            (item for item in scored if item[0] >= self.threshold),
            key=lambda item: (-item[0], item[1]),
        )[: self.max_sentences]
        if not best:
            return ABSTAIN
        return " ".join(sentence for _, _, sentence in best)

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Answer the last user message; see the module docstring for the prompt convention."""
        text = self.answer(_last_user_text(messages))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(
            text=text,
            usage=Usage(prompt_tokens, len(text.split()), 1),
            model=self.model,
        )
