"""What a validated suite is: :class:`Suite`, its components (:class:`ComponentSpec`) and the
line map of its file (:class:`Lines`).

Kept apart from :mod:`.loader` (YAML, the pydantic schema) so that a process given a suite
already validated (an xdist worker, see :mod:`.handoff`) can hold and use one without
importing either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ComponentError, SuiteError
from ..results.gates import BaselineSettings

if TYPE_CHECKING:
    from ..datasets import DatasetSpec
    from ..metrics.spec import MetricSpec
    from ..results.gates import Gate, GateCheck, Tolerance

#: A key path into a suite document (mapping keys and list indexes).
KeyPath = tuple[str | int, ...]

#: Where the LLM response cache lives by default, relative to the suite file.
DEFAULT_CACHE_PATH = ".ragbench/llm-cache.sqlite"


#: The last level of a key path as :func:`key_str` writes it: ``.name`` or ``[index]``.
_PARENT = re.compile(r"(\.[^.\[]*|\[\d+\])$")


class Lines:
    """Maps key paths of a YAML document to 1-based line numbers, for error messages."""

    def __init__(self, lines: dict[KeyPath, int] | None = None) -> None:
        self._lines = lines or {}
        self._by_key: dict[str, int] | None = None

    def get(self, path: Sequence[Any]) -> int | None:
        p = tuple(path)
        while p:
            if p in self._lines:
                return self._lines[p]
            p = p[:-1]
        return self._lines.get(())

    def __eq__(self, other: object) -> bool:
        # the same map (a suite handed to a worker holds a copy of the controller's)
        return isinstance(other, Lines) and other._lines == self._lines

    __hash__ = None  # type: ignore[assignment]  # mutable cache inside: no hashing

    def at_key(self, key: str) -> int | None:
        """The line of a key path as messages write it (``llm.headers.X-Org``), else of the
        nearest key above it: for the errors found after loading, which name keys only."""
        if self._by_key is None:
            # key_str of each path, so a key holding a dot (ndcg_cut.10) is found as written
            self._by_key = {key_str(p): line for p, line in self._lines.items()}
        while key:
            if key in self._by_key:
                return self._by_key[key]
            parent = _PARENT.sub("", key)
            if parent == key:  # a top-level key the file does not have
                break
            key = parent
        return self._lines.get(())



@dataclass(frozen=True)
class ComponentSpec:
    """A component named in a suite: its name in reports, its type and its parameters."""

    name: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    key: str = ""
    line: int | None = None
    timeout: float | None = None  # ``case_timeout``: seconds one retrieval may take
    #: the spec's key path and the document's lines, to point at one parameter's line
    path: tuple[Any, ...] = field(default=(), compare=False, hash=False, repr=False)
    lines: Lines | None = field(default=None, compare=False, hash=False, repr=False)

    def error(self, file: Path, exc: ComponentError) -> SuiteError:
        """``exc`` (from checking or building this component) as the suite's error: at the
        faulty parameter's key and line when it names one, else at the component's."""
        if exc.path and self.path and self.lines is not None:
            full = (*self.path, *exc.path)
            return SuiteError(exc.detail or str(exc), file=file, key=key_str(full),
                              line=self.lines.get(full))
        return SuiteError(str(exc), file=file, key=self.key or None, line=self.line)

    def errors(self, file: Path, exc: ComponentError) -> list[SuiteError]:
        """Every problem ``exc`` stands for (several parameters at fault: one each) as
        :meth:`error` reads it."""
        return [self.error(file, problem) for problem in exc.each()]


@dataclass(frozen=True)
class Suite:
    """A validated suite definition (the dataset itself is loaded lazily, per process)."""

    name: str
    path: Path
    dataset: DatasetSpec
    retrievers: tuple[ComponentSpec, ...]
    metrics: tuple[MetricSpec, ...]
    k: int
    thresholds: tuple[Gate, ...]
    gates: tuple[GateCheck, ...]
    tolerances: Mapping[str, Tolerance] = field(compare=False, hash=False, default_factory=dict)
    baseline_settings: BaselineSettings = field(compare=False, hash=False,
                                                default_factory=BaselineSettings)
    seed: int = 0
    record_depth: int = 20
    suite_hash: str = ""
    xfail: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    rag: Any = field(default=None, compare=False, hash=False)  # rag.RagConfig when answers run
    runs: int = 1
    #: The RAG systems under test (``pipelines:``); each answers every query.
    pipelines: tuple[ComponentSpec, ...] = ()
    #: The suite file's document as parsed (None for a suite built in code): case keys hash
    #: its settings without reading and parsing the file again.
    document: Any = field(default=None, compare=False, hash=False, repr=False)
    #: The line map of the suite file (None for a suite built in code), for the errors found
    #: once its dataset is read and its components built.
    lines: Lines | None = field(default=None, compare=False, hash=False, repr=False)
    #: The key path and line of each of ``thresholds`` and ``gates`` (same order; empty for a
    #: suite built in code), for what only the dataset shows (a scope no query matches).
    threshold_places: tuple[tuple[str, int | None], ...] = field(
        default=(), compare=False, hash=False, repr=False)
    gate_places: tuple[tuple[str, int | None], ...] = field(
        default=(), compare=False, hash=False, repr=False)

    @property
    def systems(self) -> tuple[ComponentSpec, ...]:
        """Retrievers, then pipelines: every name that collects a group of cases."""
        return (*self.retrievers, *self.pipelines)

    def is_pipeline(self, name: str) -> bool:
        """Whether ``name`` is one of the suite's pipelines (not a retriever)."""
        return any(p.name == name for p in self.pipelines)

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)


def key_str(path: Sequence[Any]) -> str:
    """A key path as messages show it: ``retrievers.bm25.k1``, ``metrics[2]``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
