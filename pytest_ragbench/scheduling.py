"""xdist scheduling for LLM suites: each worker gets its whole share of ragbench cases up front.

xdist's default ``load`` scheduling hands each worker a small first batch (a quarter of its
share) and tops it up as items finish. A worker can only prefetch the LLM work of the items it
already holds, so with ``-n 2`` each worker keeps few requests in flight and the run is slower
than ``-n 0``. Here the ragbench cases are dealt out to the workers and sent at once: every
worker's prefetcher sees all of its cases, and the run budget (shared by the workers) keeps the
total in flight at the suite's ``concurrency``.

The cases of one query (every system's, every repetition's, in every suite) go to the same
worker. Two systems whose retrievers agree send the same prompt; at ``-n 0`` the second case
gets the first one's response from the response cache (one request, which
:mod:`pytest_ragbench.results.settle` charges to the first case in the records' order). Dealt
to two workers, the two cases asked at about the same time and both sent it: the run paid
twice (a controller with a head start hands out its responses through the run's exchange, but
not every run has one). On one worker they ask in pytest order, as at ``-n 0``.

Queries are dealt in turn (the first to the first worker, the second to the second, ...,
each to a worker with the fewest cases so far): the workers then move through the suite side
by side, so reports arrive close to pytest's order. Other tests are scheduled as ``load``
does. Used only when the user did not choose ``--dist``; imported only when xdist starts
workers.

When the controller's head start answers the cases (in collection order), the last few of
them go to one worker (``tail``, see :func:`deal`; the queries with every case among them).
Dealt in turn, every worker had its last case in the final round of responses, and all of
them ended and exited at once, on the cores the controller then needed to aggregate the run
and write its outputs (at ``-n 4`` on 2 cores that took it 70 ms after the last case against
51 ms at ``-n 0``). With the tail on one worker the others end a few rounds earlier, while
the LLM work still runs, and the controller's end took 53 ms.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from xdist.scheduler.load import LoadScheduling


def dist_chosen(config: pytest.Config) -> bool:
    """Whether ``--dist`` was given (command line, ``addopts`` or ``PYTEST_ADDOPTS``)."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    with contextlib.suppress(ValueError, KeyError):
        args += list(config.getini("addopts"))
    return any(str(a) == "--dist" or str(a).startswith("--dist=") for a in args)


#: A repeated case's suffix (``q1[run2]``, see collect.py): its repetitions ask one query.
_RUN_SUFFIX = re.compile(r"\[run\d+\]$")


def query_of(nodeid: str) -> str:
    """The query a case's node id (``file::system::query``, with ``[runN]`` when the suite
    repeats its cases) asks: the cases that may send the same requests share it."""
    query = nodeid.split("::", 2)[-1]
    return _RUN_SUFFIX.sub("", query) if query.endswith("]") else query


def deal(nodeids: Sequence[str], workers: int, tail: int = 0) -> list[list[int]]:
    """Each worker's share of the cases ``nodeids`` (their indexes, in collection order):
    the cases of one query (:func:`query_of`) together, queries in order of first
    appearance, each to a worker with the fewest cases so far (the one dealt to longest ago
    among those: in turn when the queries have as many cases each).

    The queries whose cases are all among the last ``tail`` all go to one worker, the one
    with the fewest cases once the others are dealt (see the module docstring); a query with
    a case before them (another system's, another suite's) is dealt in turn."""
    numbers: dict[str, int] = {}
    group = [numbers.setdefault(query_of(nodeid), len(numbers)) for nodeid in nodeids]
    sizes = [0] * len(numbers)
    for g in group:
        sizes[g] += 1
    first = [len(group)] * len(numbers)
    for index, g in enumerate(group):
        first[g] = min(first[g], index)
    last = {g for g in range(len(numbers)) if first[g] >= len(group) - tail} if tail > 0 \
        else set()
    owner = [0] * len(numbers)
    # (cases so far, when last dealt to, worker)
    heap = [(0, w, w) for w in range(workers)]
    for g, size in enumerate(sizes):
        if g in last:
            continue
        count, _, worker = heap[0]
        owner[g] = worker
        heapq.heapreplace(heap, (count + size, workers + g, worker))
    for g in last:
        owner[g] = heap[0][2]
    shares: list[list[int]] = [[] for _ in range(workers)]
    for index, g in enumerate(group):
        shares[owner[g]].append(index)
    return shares


class RagbenchScheduling(LoadScheduling):
    """``load`` scheduling, except that ragbench cases go out at once, dealt by query.

    ``tail(cases)`` says how many of the last ragbench cases (node ids, in collection order)
    one worker takes (:func:`deal`); none without it."""

    def __init__(self, config: pytest.Config, log: Any = None,
                 is_case: Callable[[str], bool] | None = None,
                 tail: Callable[[Sequence[str]], int] | None = None) -> None:
        super().__init__(config, log)
        self._is_case = is_case or (lambda nodeid: False)
        self._tail = tail

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
        case_ids = [collection[i] for i in cases]
        shares = deal(case_ids, len(nodes), self._tail(case_ids) if self._tail else 0)
        for node, dealt in zip(nodes, shares, strict=True):
            # in collection order within each worker: its items report in pytest order
            share = [cases[i] for i in dealt]
            if share:
                self.node2pending[node].extend(share)
                node.send_runtest_some(share)
        for node in nodes:
            # the other tests, as load scheduling hands them out (shuts idle nodes down)
            self.check_schedule(node)
