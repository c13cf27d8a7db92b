"""The pytest11 plugin of the fake distribution: registers a component through the hook."""

from __future__ import annotations


def pytest_ragbench_register(registry):
    registry.add("retriever", "extra-registered", "ragbench_extra.retrievers:KeywordRetriever")
