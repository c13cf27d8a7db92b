"""Hooks pytest-ragbench adds to pytest (registered in ``pytest_addhooks``).

Implement them in a ``conftest.py`` or in a pytest plugin. Examples::

    # conftest.py
    def pytest_ragbench_register(registry):
        registry.add("retriever", "mine", "mypkg.search:MyRetriever")
        registry.add("metric", "novelty", Novelty)

    def pytest_ragbench_make_component(kind, name, params, context):
        if kind == "llm" and name == "stub":
            return StubLLM(**params)
        return None  # let the registry build it
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .registry import BuildContext, Registry


@pytest.hookspec
def pytest_ragbench_register(registry: Registry) -> None:
    """Register components by name: ``registry.add(kind, name, factory)``.

    ``kind`` is ``"retriever"``, ``"llm"``, ``"embedder"`` or ``"metric"``; ``factory`` a class,
    a function or a ``"module:attr"`` string (imported only when a suite uses the name).

    Called once per implementation per process (controller and every xdist worker), before the
    first suite that follows the implementation's registration is loaded: implementations in
    the rootdir's or a suite folder's ``conftest.py`` and in installed plugins are all seen
    before their suites. The registry records where each name came from (``conftest <path>``
    or ``plugin <name> (distribution <dist> <version>)``) for ``--ragbench-list`` and for
    conflict messages. Run-time registrations override built-ins and entry points of the same
    name; the same name from two places is an error naming both.
    """


@pytest.hookspec(firstresult=True)
def pytest_ragbench_make_component(
    kind: str, name: str, params: Mapping[str, Any], context: BuildContext
) -> Any | None:
    """Build the component ``name`` of ``kind`` yourself; return None to pass.

    Asked first for every component the plugin builds (retrievers, nested embedders, metrics,
    fixture components), with the suite's parameters and the :class:`BuildContext`
    (``cache_dir``, ``base_dir``, ``build(kind, spec)`` for nested components). The first
    non-None result is used as is. A name that no registry source knows passes collection when
    an implementation of this hook exists (only building can tell), so its mistakes appear as
    per-item errors; register names with :func:`pytest_ragbench_register` to have them checked
    at collection time.
    """


@pytest.hookspec
def pytest_ragbench_case_result(record: Mapping[str, Any], config: pytest.Config) -> None:
    """A case record arrived on the controller (the only process that gets this call).

    ``record`` is the JSON-safe per-case record (schema in :mod:`pytest_ragbench.records`) of
    a collected case or of a hand-written test that used ``ragbench_record``; called once per
    record as reports arrive, in completion order, with or without xdist. Use it to feed your
    own sink (a database, a dashboard); do not modify the record.
    """
