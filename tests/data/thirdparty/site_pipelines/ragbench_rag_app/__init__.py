"""A fake installed RAG application exposing components through entry points."""

from __future__ import annotations


class EchoPipeline:
    """Answers with the question after a prefix (test pipeline)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def answer(self, query):
        return {"answer": f"{self.prefix} {query.text}".strip(), "contexts": []}


class CannedLLM:
    """Answers every prompt with the same text and logs each call to a file (test LLM).

    The first ``fail_first`` calls fail with HTTP 429, which the plugin retries.
    """

    def __init__(self, answer: str, log: str = "", fail_first: int = 0) -> None:
        self.answer = answer
        self.log = log
        self.fail_first = fail_first
        self.calls = 0

    async def chat(self, messages, **params):
        from pytest_ragbench.llm.base import Completion, ProviderError, Usage

        self.calls += 1
        if self.log:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write("call\n")
        if self.calls <= self.fail_first:
            raise ProviderError("rate limited", status=429, retry_after=0)
        return Completion(text=self.answer, usage=Usage(7, 3), model="canned")
