"""The LLM and embedder contracts shared by providers, judges and the plugin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class Usage:
    """Token counts as reported by the API's ``usage`` fields."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 1  # network requests this result cost (0 when served from the cache)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.requests + other.requests,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }


@dataclass(frozen=True)
class Completion:
    """One chat completion."""

    text: str
    usage: Usage = Usage()
    model: str = ""
    cached: bool = False


class LLMError(Exception):
    """A provider call failed for good (after retries, breaker open, bad reply)."""


@runtime_checkable
class LLM(Protocol):
    """An async chat model. ``params`` are provider parameters (temperature, max_tokens, seed)."""

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into a float32 array of shape (n, d)."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...
