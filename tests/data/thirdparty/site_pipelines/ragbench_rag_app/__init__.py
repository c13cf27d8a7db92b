"""A fake installed RAG application exposing components through entry points."""

from __future__ import annotations


class EchoPipeline:
    """Answers with the question after a prefix (test pipeline)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def answer(self, query):
        return {"answer": f"{self.prefix} {query.text}".strip(), "contexts": []}
