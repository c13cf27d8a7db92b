"""The per-case record: the versioned, JSON-safe wire schema between workers and the controller.

A record is a plain ``dict`` of str/int/float/bool/None/list/dict, so it crosses the pytest-xdist
wire (execnet) and lands in JSONL files unchanged. Metric values that could not be computed are
``None`` (NaN) and are counted, never dropped silently.

Fields (schema version 1)::

    schema          1
    suite           suite id (the suite file's node id, e.g. "suites/qs.yaml")
    suite_name      the suite's name
    suite_hash      sha256 of the suite file
    dataset_hash    sha256 of the corpus and the selected queries
    retriever       retriever name in the suite
    case_id         query id
    run             repetition index (0 unless the suite repeats runs)
    query           query text
    type, difficulty, tags   query metadata (None / [] when absent)
    status          "ok" | "failed" (a per-query threshold missed) | "error"
    error           None | {"stage": "index"|"retrieve"|..., "type": str, "message": str}
    metrics         {metric name: float | None}
    latency_ms      float | None
    n_relevant      number of relevant (grade > 0) documents in the labels
    no_relevant     True when the query is judged but has no relevant document
    unknown_labels  None, or {"action": "kept" | "dropped", "documents": [doc_id, ...]}: the
                    query's labels naming documents the corpus lacks, kept (relevant and never
                    retrievable, as trec_eval scores them) or dropped, as the dataset's
                    ``unknown_documents`` says
    retrieved       [[doc_id, score, grade | None], ...] top ``record_depth`` in evaluation order
    record_depth    None, or the most documents ``retrieved`` and ``missed`` keep (the suite's
                    ``record_depth``; at least k with ``--ragbench-save-run``): a shorter
                    ``retrieved`` is the case's whole ranking
    missed          [[doc_id, grade], ...] relevant documents not retrieved within k
    relevant_ranks  {doc_id: rank | None} every relevant (grade > 0) document's 1-based rank in
                    the whole ranking of depth k (not only the ``record_depth`` kept in
                    ``retrieved``), None when it was not retrieved within k; ranked ones first
                    by rank, then the rest as in ``missed``
    thresholds      [{"metric", "op", "threshold", "value", "passed", "margin"[, "scope"]}, ...]
    xfail           None, or {"reason": str, "outcome": "xfailed" | "xpassed" | "failed" |
                    None} when the suite lists the case under ``xfail`` (a known failure) or an
                    xfail mark of the user's own applies to it. ``outcome`` is what
                    pytest reports for the item: "xfailed" when it failed as expected (below a
                    threshold, or an error), "xpassed" when it passed, "failed" when it passed
                    under a strict mark (``[XPASS(strict)]``), None when pytest did not
                    apply the xfail mark (``--runxfail``). ``status`` keeps the case's own
                    verdict ("failed" for a missed threshold), so an xfailed case is still
                    "failed" there; read :func:`case_outcome` to show or count cases.
    case_key        None, or {"key", "settings", "dataset", "system", "version"}: what the
                    record depends on, hashed (see :mod:`pytest_ragbench.results.resume`); a
                    resumed run reuses a finished record whose key is the case's key now

Cases that generate answers add, after these, the fields of an :class:`AnswerPart`:

    answer          the generated answer text
    contexts        the passages the answer was generated from
    judge           {metric name: the judge's verdict}
    usage           {"requests", "prompt_tokens", "completion_tokens"} of the LLM calls, and
                    "estimated": the calls whose counts are estimates (a reply without usage)
    cost            the calls' cost in dollars
    llm_calls       [[key, requests, cost], ...]: each chat call the case made, ``key``
                    naming its request (None for a judge batch's share of the case). A
                    request several cases share is charged in ``usage`` and ``cost`` to
                    the first of them in the records' order, not to whichever sent it
                    (:mod:`pytest_ragbench.results.settle`)

:class:`CaseRecord` types these fields and :func:`make_record` is the one constructor: the
collected cases (:mod:`pytest_ragbench.execution.runtime`), the hand-written tests'
``ragbench_record`` and the controller's records of cases that died without one all build their
records with it, so every producer writes the same keys in the same order.

Readers take records of every version: a missing field reads as its default (``xfail``: None,
so older records show their plain status; ``relevant_ranks``: {}, nothing to show;
``record_depth``: None, so a resume cannot tell a whole short ranking from a cut one).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

SCHEMA_VERSION = 1
USER_PROPERTY = "ragbench_record"
CASE_KEY_FIELD = "case_key"
#: The error stage of a case whose process died in it (a crashed xdist worker).
CRASH_STAGE = "crash"


class CaseFailure(TypedDict):
    """Why a case errored: the stage it failed in, the exception type and its message."""

    stage: str
    type: str
    message: str


class _ThresholdScope(TypedDict, total=False):
    scope: str  # a scoped threshold's scope (difficulty=hard, retriever=bm25)


class ThresholdCheck(_ThresholdScope):
    """One per-query threshold checked on a case."""

    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool | None
    margin: float | None


class AnswerPart(TypedDict, total=False):
    """What a case that generates an answer adds to its record (all optional)."""

    answer: str | None
    contexts: list[Any] | None
    judge: dict[str, Any] | None
    usage: dict[str, Any] | None
    cost: float | None
    llm_calls: list[list[Any]] | None


ANSWER_FIELDS = ("answer", "contexts", "judge", "usage", "cost", "llm_calls")


class _RecordFields(TypedDict):
    """The fields every record has."""

    schema: int
    suite: str
    suite_name: str
    suite_hash: str | None
    dataset_hash: str | None
    retriever: str
    case_id: str
    run: int
    query: str | None
    type: str | None
    difficulty: str | None
    tags: list[str]
    status: str
    error: CaseFailure | None
    metrics: dict[str, float | None]
    latency_ms: float | None
    n_relevant: int | None
    no_relevant: bool
    unknown_labels: dict[str, Any] | None
    retrieved: list[list[Any]]
    record_depth: int | None
    missed: list[list[Any]]
    relevant_ranks: dict[str, int | None]
    thresholds: list[ThresholdCheck]
    xfail: dict[str, Any] | None
    case_key: dict[str, Any] | None


class CaseRecord(_RecordFields, total=False):
    """The per-case record (see the module docstring). A plain ``dict`` at run time: it
    crosses the xdist wire and is written to ``cases.jsonl`` as it is. The answer fields
    (:class:`AnswerPart`) are present only on cases that generate answers."""

    answer: str | None
    contexts: list[Any] | None
    judge: dict[str, Any] | None
    usage: dict[str, Any] | None
    cost: float | None
    llm_calls: list[list[Any]] | None


def make_record(
    *, suite: str, retriever: str, case_id: str, run: int = 0, suite_name: str | None = None,
    suite_hash: str | None = None, dataset_hash: str | None = None, query: str | None = None,
    type: str | None = None, difficulty: str | None = None,
    tags: Iterable[str] = (), metrics: Iterable[str] | Mapping[str, float | None] = (),
    n_relevant: int | None = None, no_relevant: bool = False,
    unknown_labels: Mapping[str, Any] | None = None,
    error: CaseFailure | None = None, answer: AnswerPart | None = None,
) -> CaseRecord:
    """The one constructor of a :class:`CaseRecord`, with every field present.

    ``metrics`` names the metrics still to measure (each None) or maps them to values already
    measured. A record with an ``error`` has status "error", any other "ok" until something
    sets it. ``answer`` holds the fields of a generated answer, when the producer has them
    (a runtime merges them later with :func:`add_answer`).
    """
    rec: CaseRecord = {
        "schema": SCHEMA_VERSION,
        "suite": suite,
        "suite_name": suite if suite_name is None else suite_name,
        "suite_hash": suite_hash,
        "dataset_hash": dataset_hash,
        "retriever": retriever,
        "case_id": case_id,
        "run": int(run),
        "query": query,
        "type": type,
        "difficulty": difficulty,
        "tags": list(tags),
        "status": "ok" if error is None else "error",
        "error": error,
        "metrics": ({str(k): clean_float(v) for k, v in metrics.items()}
                    if isinstance(metrics, Mapping) else dict.fromkeys(metrics)),
        "latency_ms": None,
        "n_relevant": n_relevant,
        "no_relevant": bool(no_relevant),
        "unknown_labels": dict(unknown_labels) if unknown_labels else None,
        "retrieved": [],
        "record_depth": None,
        "missed": [],
        "relevant_ranks": {},
        "thresholds": [],
        "xfail": None,
        "case_key": None,
    }
    if answer is not None:
        add_answer(rec, answer)
    return rec


def relevant_ranks(ranked: Sequence[str], grades: Mapping[str, int]) -> dict[str, int | None]:
    """Each relevant (grade > 0) document of ``grades`` by its 1-based rank in ``ranked``.

    ``ranked`` is the whole ranking of the case (depth k), so a relevant document ranked below
    what a record keeps still shows where it is. Ranked documents come first by rank, then the
    ones not retrieved (None) by grade, highest first, and id, as ``missed`` lists them.
    """
    relevant = {d for d, g in grades.items() if g > 0}
    if not relevant:
        return {}
    found: dict[str, int | None] = {}
    for rank, doc_id in enumerate(ranked, 1):
        if doc_id in relevant and doc_id not in found:
            found[doc_id] = rank
    absent = sorted(relevant.difference(found), key=lambda d: (-grades[d], d))
    found.update(dict.fromkeys(absent))
    return found


def add_answer(rec: CaseRecord, part: AnswerPart | Mapping[str, Any]) -> None:
    """Merge the answer fields of ``part`` into ``rec``: each of :data:`ANSWER_FIELDS` is set
    (None when ``part`` lacks it), in that order, after the base fields, as plain JSON
    (contexts given as tuples become lists, as they would be read back)."""
    for name in ANSWER_FIELDS:
        rec[name] = jsonable(part.get(name))  # type: ignore[literal-required]


def record_key(rec: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """The identity of a case within a run; the canonical sort order of records."""
    return (str(rec["suite"]), str(rec["retriever"]), str(rec["case_id"]), int(rec.get("run", 0)))


def clean_float(value: Any) -> float | None:
    """A plain finite float, or None for NaN/inf/None (numpy scalars become Python floats)."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _json_key(key: Any) -> str:
    """A mapping key as :func:`json.dumps` writes it (``True`` -> "true", ``None`` -> "null"),
    so that :func:`dumps_json` gives the same text with or without the conversion walk."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    return str(key)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD.

    A JSON reply's ``"\\ud800"`` escape, or bytes decoded with ``surrogateescape``, give a str
    that no UTF-8 file, HTTP body or xdist message can carry: a model's answer or a judge's
    claim holding one stopped the whole run.
    """
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def valid_record(rec: Any) -> Any:
    """``rec`` as :func:`valid_strings` makes it, looked through first without building
    anything (a seventh of the rebuild's time on a record of 100 documents)."""
    return valid_strings(rec) if _holds_lone_surrogate(rec) else rec


def _holds_lone_surrogate(value: Any) -> bool:
    # exact types first: an ABC check per value cost more than the rest of the walk
    kind = type(value)
    if kind is str:
        return not value.isascii() and _LONE_SURROGATE.search(value) is not None
    if kind is float or kind is int or kind is bool or value is None:
        return False
    # plain loops: any() over a generator took half as long again, per record
    if kind is dict or isinstance(value, Mapping):
        for k, v in value.items():  # noqa: SIM110
            if _holds_lone_surrogate(k) or _holds_lone_surrogate(v):
                return True
        return False
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        for v in value:  # noqa: SIM110
            if _holds_lone_surrogate(v):
                return True
        return False
    return isinstance(value, str) and _holds_lone_surrogate(str(value))


def valid_strings(value: Any) -> Any:
    """``value`` (plain JSON data) with :func:`valid_text` applied to every string, keys
    included; the same object when none holds a lone surrogate."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, Mapping):
        pairs = [(valid_strings(k), valid_strings(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items(),
                                                                   strict=True)):
            return value
        return dict(pairs)
    if isinstance(value, list | tuple):
        items = [valid_strings(v) for v in value]
        if all(v is v0 for v, v0 in zip(items, value, strict=True)):
            return value
        return type(value)(items) if isinstance(value, tuple) else items
    return value


def jsonable(value: Any) -> Any:
    """Recursively convert to plain JSON types (numpy scalars, tuples, Paths, NaN -> None)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return clean_float(value)
    if isinstance(value, Mapping):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    # numpy scalars and similar expose item()
    item = getattr(value, "item", None)
    if callable(item):
        return jsonable(item())
    return str(value)


def dumps_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``jsonable(value)`` with ``allow_nan=False``, without the conversion
    walk when ``value`` is plain JSON already (records are built that way; the recursive walk
    costs more than the encoding). Both paths write keys as JSON does (``True`` -> "true").
    ``kwargs`` go to :func:`json.dumps`."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except (TypeError, ValueError):
        return json.dumps(jsonable(value), allow_nan=False, **kwargs)


XFAIL_OUTCOMES = ("xfailed", "xpassed")
OUTCOMES = ("error", "failed", "xpassed", "xfailed", "ok")
"""What :func:`case_outcome` returns, the ones that need attention first."""


def xfail_outcome(rec: Mapping[str, Any]) -> str | None:
    """How pytest reported a known failure ("xfailed" or "xpassed"); None for any other case,
    also for records written before the ``xfail`` field existed."""
    xfail = rec.get("xfail")
    if isinstance(xfail, Mapping):
        outcome = xfail.get("outcome")
        if outcome in XFAIL_OUTCOMES:
            return str(outcome)
    return None


def strict_xpass(rec: Mapping[str, Any]) -> bool:
    """Whether the case passed under a strict xfail mark, which pytest reports as a failure
    (``[XPASS(strict)]``)."""
    xfail = rec.get("xfail")
    return isinstance(xfail, Mapping) and xfail.get("outcome") == "failed"


def xfail_reason(rec: Mapping[str, Any]) -> str | None:
    """The suite's reason when it lists the case as a known failure, else None."""
    xfail = rec.get("xfail")
    reason = xfail.get("reason") if isinstance(xfail, Mapping) else None
    return None if reason is None else str(reason)


def case_outcome(rec: Mapping[str, Any]) -> str:
    """The case as pytest reported it: "ok", "failed", "error", "xfailed" or "xpassed".

    An expected failure is "xfailed" whatever made it fail, so that it is neither shown nor
    counted as a failure; an unknown status reads as "error" rather than passing silently.
    """
    outcome = xfail_outcome(rec)
    if outcome is not None:
        return outcome
    if strict_xpass(rec):
        return "failed"
    status = rec.get("status")
    return str(status) if status in ("ok", "failed", "error") else "error"


def mark_expected_failure(rec: dict[str, Any], reason: str, *, applied: bool) -> None:
    """Fill in ``rec["xfail"]`` for a case the suite lists as a known failure.

    Call it once ``rec["status"]`` is final. The record travels to the controller with the
    item's setup report, before the call phase runs, so the outcome is derived rather than
    observed: a collected case fails its setup exactly when the status is "error" and its call
    exactly when it is "failed", and pytest reports either under a non-strict xfail mark as
    xfailed, and a pass as xpassed. ``applied`` is False when pytest ignores xfail marks
    (``--runxfail``); the case is then reported, and recorded, as a plain pass or failure.
    """
    outcome: str | None = None
    if applied:
        outcome = "xpassed" if rec.get("status") == "ok" else "xfailed"
    rec["xfail"] = {"reason": reason, "outcome": outcome}


def failure_message(longrepr: Any, default: str = "the case failed without a record") -> str:
    """What a failed report says went wrong, in one line: its exception (``RuntimeError: no
    data``, pytest's crash line) when it has one, else the last line of its text (a crashed
    worker's report is a plain string); the traceback's last line says only where
    (``conftest.py:4: RuntimeError``)."""
    crash = getattr(getattr(longrepr, "reprcrash", None), "message", None)
    if isinstance(crash, str) and crash.strip():
        return crash.strip().splitlines()[0]
    lines = str(longrepr).strip().splitlines() if longrepr is not None else []
    return lines[-1] if lines else default


def error_record(
    *, suite: str, retriever: str, case_id: str, message: str, stage: str, run: int = 0,
    etype: str = "Error", meta: Mapping[str, Any] | None = None,
    suite_name: str | None = None, suite_hash: str | None = None,
) -> CaseRecord:
    """A minimal record for a case that died before producing one (e.g. a crashed worker).

    ``meta``: the query's text (``query``), type, difficulty and tags, where known (reports
    show the text; scoped gates select on the rest);
    ``suite_name`` and ``suite_hash``: the suite's, where known (the summary, a baseline
    comparison and the TREC run files take them from a suite's records).
    """
    meta = meta or {}
    return make_record(suite=suite, retriever=retriever, case_id=case_id, run=run,
                       suite_name=suite_name, suite_hash=suite_hash,
                       query=meta.get("query"), type=meta.get("type"),
                       difficulty=meta.get("difficulty"), tags=meta.get("tags") or (),
                       error={"stage": stage, "type": etype, "message": message})
