"""A fake installed RAG application exposing components through entry points."""

from __future__ import annotations


class EchoPipeline:
    """Answers with the question after a prefix (test pipeline)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def answer(self, query):
        return {"answer": f"{self.prefix} {query.text}".strip(), "contexts": []}


class CannedLLM:
    """Answers every prompt with the same text and logs each call to a file (test LLM)."""

    def __init__(self, answer: str, log: str = "") -> None:
        self.answer = answer
        self.log = log

    async def chat(self, messages, **params):
        from pytest_ragbench.llm.base import Completion, Usage

        if self.log:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write("call\n")
        return Completion(text=self.answer, usage=Usage(7, 3), model="canned")
