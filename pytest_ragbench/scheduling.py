"""xdist scheduling for LLM suites: each worker gets its whole share of ragbench cases up front.

xdist's default ``load`` scheduling hands each worker a small first batch (a quarter of its
share) and tops it up as items finish. A worker can only prefetch the LLM work of the items it
already holds, so with ``-n 2`` each worker keeps few requests in flight and the run is slower
than ``-n 0``. Here the ragbench cases are dealt out to the workers in turn (the first to the
first worker, the second to the second, ...) and sent at once: every worker's prefetcher sees
all of its cases, and the run budget (shared by the workers) keeps the total in flight at the
suite's ``concurrency``. Dealing in turn rather than in contiguous blocks keeps the workers
moving through the suite side by side, so reports arrive close to pytest's order. Other tests
are scheduled as ``load`` does. Used only when the user did not choose ``--dist``; imported
only when xdist starts workers.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable
from typing import Any

import pytest
from xdist.scheduler.load import LoadScheduling


def dist_chosen(config: pytest.Config) -> bool:
    """Whether ``--dist`` was given (command line, ``addopts`` or ``PYTEST_ADDOPTS``)."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    with contextlib.suppress(ValueError, KeyError):
        args += list(config.getini("addopts"))
    return any(str(a) == "--dist" or str(a).startswith("--dist=") for a in args)


class RagbenchScheduling(LoadScheduling):
    """``load`` scheduling, except that ragbench cases go out at once, dealt in turn."""

    def __init__(self, config: pytest.Config, log: Any = None,
                 is_case: Callable[[str], bool] | None = None) -> None:
        super().__init__(config, log)
        self._is_case = is_case or (lambda nodeid: False)

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None or not self._check_nodes_have_same_collection():
            super().schedule()
            return
        collection = next(iter(self.node2collection.values()))
        cases = [i for i, nodeid in enumerate(collection) if self._is_case(nodeid)]
        if not cases:
            super().schedule()
            return
        self.collection = collection
        chosen = set(cases)
        self.pending[:] = [i for i in range(len(collection)) if i not in chosen]
        if self.maxschedchunk is None:
            self.maxschedchunk = len(collection)
        nodes = self.nodes
        for n, node in enumerate(nodes):
            # in collection order within each worker: its items report in pytest order
            share = cases[n::len(nodes)]
            if share:
                self.node2pending[node].extend(share)
                node.send_runtest_some(share)
        for node in nodes:
            # the other tests, as load scheduling hands them out (shuts idle nodes down)
            self.check_schedule(node)
