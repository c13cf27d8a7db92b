"""The LLM and embedder contracts shared by providers, judges and the plugin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..records import valid_text

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class Usage:
    """Token counts as reported by the API's ``usage`` fields.

    ``estimated``: the counts are an estimate (4 characters a token), the reply having said
    none; a mark on the counts, not a count, so it takes no part in equality.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 1  # network requests this result cost (0 when served from the cache)
    estimated: bool = field(default=False, compare=False)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.requests + other.requests,
            self.estimated or other.estimated,
        )

    def as_dict(self) -> dict[str, int]:
        out = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }
        if self.estimated:
            out["estimated"] = 1
        return out


@dataclass(frozen=True)
class Completion:
    """One chat completion."""

    text: str
    usage: Usage = Usage()
    model: str = ""
    cached: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            # a reply's "\ud83d" escape: the answer goes into judge requests and records
            object.__setattr__(self, "text", valid_text(self.text))


class LLMError(Exception):
    """A provider call failed for good (after retries, breaker open, bad reply)."""


class ProviderError(LLMError):
    """What an LLM or embedder raises when a call failed, saying whether to try again.

    The call wrapper every provider runs under (:mod:`pytest_ragbench.llm.guard`) retries it
    when ``retryable`` is true; by default that is when ``status`` is 408, 429 or a 5xx.
    ``retry_after`` (seconds, e.g. from a ``Retry-After`` header) sets the wait before the
    next attempt, and pauses the provider's whole run-wide pool.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 retryable: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        if retryable is None:
            retryable = status is not None and (status in (408, 429) or 500 <= status <= 599)
        self.retryable = retryable


@runtime_checkable
class LLM(Protocol):
    """An async chat model. ``params`` are provider parameters (temperature, max_tokens, seed)."""

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into a float32 array of shape (n, d)."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...
