"""TREC run files written from the per-case records (``--ragbench-save-run=DIR``).

One file per suite and system, ``DIR/<suite name>.<system>.trec``, one line per retrieved
document::

    qid Q0 docid rank score tag

The controller writes them from the records it already holds, so workers write nothing and the
files are the same whatever ``-n`` is: queries in query-id order, documents in trec_eval's
evaluation order (score descending, ties by document id descending, the order the records keep),
ranks from 1 in that order, scores as Python's shortest round-tripping ``repr`` so that a
replay (the ``run`` retriever, trec_eval, ranx, pytrec_eval) sees the very same floats.

A record keeps the top ``record_depth`` documents; with the option given every suite's record
depth is raised to its ``k`` (in the process running the cases), so each file holds the top
``k`` and the controller needs nothing but the records.
Repetitions of a case (``runs: 3``) retrieve the same documents; the first is written. A case
that errored before retrieving has no lines (trec_eval then leaves the query out, the ``run``
retriever with ``missing: empty`` scores it 0). A record whose scores are missing (a pipeline
that reports contexts without scores), or do not give its order (a pipeline's contexts are
ranked as it lists them: distances that grow down the list, a reranker's order under its
retriever's scores, ties), is written with scores ``n, n-1, ..., 1`` so that a replay ranks
what the run scored.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics.retrieval import trec_order
from ..records import record_key

SUFFIX = ".trec"
# Characters a file name may keep as they are; anything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


class RunFileError(ValueError):
    """A run file that cannot be written faithfully (an id with white space, say)."""


def safe_name(text: str) -> str:
    """``text`` as one file-name component: unsafe characters become ``_``; never empty,
    never ``.`` or ``..``."""
    name = _UNSAFE.sub("_", text).strip(".") or "_"
    return name


@dataclass
class RunTable:
    """The rankings of one (suite, system): query id -> [(doc id, score)] in evaluation order."""

    suite_name: str
    system: str
    rankings: dict[str, list[tuple[str, float | None]]] = field(default_factory=dict)


def collect_runs(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], RunTable]:
    """Group records by (suite id, system); the lowest repetition of each case wins."""
    tables: dict[tuple[str, str], RunTable] = {}
    for rec in sorted(records, key=record_key):
        sid, system = str(rec["suite"]), str(rec["retriever"])
        table = tables.get((sid, system))
        if table is None:
            table = tables[(sid, system)] = RunTable(
                suite_name=str(rec.get("suite_name") or sid), system=system)
        qid = str(rec["case_id"])
        if qid in table.rankings:
            continue  # a later repetition of a case already taken
        rows = rec.get("retrieved") or []
        table.rankings[qid] = [(str(row[0]), _score(row[1])) for row in rows]
    return tables


def _score(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _check_id(value: str, what: str, table: RunTable) -> None:
    if not value or any(c.isspace() for c in value):
        raise RunFileError(
            f"suite {table.suite_name!r}, system {table.system!r}: {what} {value!r} is empty or "
            "holds white space, which a TREC run file (white-space separated columns) cannot "
            "hold")


def _scores_give_order(rows: list[tuple[str, float | None]]) -> bool:
    """Whether a replay ordering ``rows`` by score (trec_eval's order) keeps their order."""
    scored = [(doc, score) for doc, score in rows if score is not None]
    return len(scored) == len(rows) and trec_order(scored) == [doc for doc, _ in rows]


def format_run(table: RunTable, tag: str | None = None) -> str:
    """The TREC run text of ``table``; :class:`RunFileError` for ids a run cannot hold."""
    tag = safe_name(tag or table.system)
    lines: list[str] = []
    for qid in sorted(table.rankings):
        rows = table.rankings[qid]
        if not rows:
            continue
        _check_id(qid, "query id", table)
        if not _scores_give_order(rows):
            # Keep the recorded order (the one scored): descending integer scores.
            rows = [(doc, float(len(rows) - i)) for i, (doc, _) in enumerate(rows)]
        for rank, (doc, score) in enumerate(rows, 1):
            _check_id(doc, "document id", table)
            lines.append(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")
    return "".join(lines)


def run_file_names(tables: Mapping[tuple[str, str], RunTable]) -> dict[tuple[str, str], str]:
    """``<suite name>.<system>.trec`` per table; suites sharing a name (files in two
    folders) are told apart by their suite ids instead, and names that still coincide once
    made safe (systems ``bm25#a`` and ``bm25_a``: one file was lost) by a hash of each."""
    suites_named: dict[str, set[str]] = {}
    for (sid, _), table in tables.items():
        suites_named.setdefault(table.suite_name, set()).add(sid)
    out: dict[tuple[str, str], str] = {}
    for (sid, system), table in tables.items():
        suite = table.suite_name if len(suites_named[table.suite_name]) == 1 else sid
        out[(sid, system)] = f"{safe_name(suite)}.{safe_name(system)}"
    counts = Counter(out.values())
    for key, stem in out.items():
        if counts[stem] > 1:
            digest = hashlib.sha256("\0".join(key).encode("utf-8")).hexdigest()[:8]
            stem = f"{stem}-{digest}"
        out[key] = stem + SUFFIX
    return out


def write_run_files(records: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Write one TREC run file per (suite, system) of ``records`` into ``out_dir``.

    Returns the paths written, in name order. Raises :class:`RunFileError` for an id a run
    file cannot hold (nothing is written then) and ``OSError`` when the folder or a file
    cannot be written.
    """
    tables = collect_runs(records)
    names = run_file_names(tables)
    texts = {names[key]: format_run(table) for key, table in tables.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in sorted(texts):
        path = out_dir / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(texts[name], encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def save_runs(records: Iterable[Mapping[str, Any]], out_dir: Path) -> list[str]:
    """Write the run files and say what happened, as lines for the terminal summary.

    Never raises for a file that cannot be written: the run's results stand without it.
    """
    try:
        written = write_run_files(records, out_dir)
    except RunFileError as exc:
        return [f"ragbench: no run files written: {exc}"]
    except OSError as exc:
        return [f"ragbench: cannot write run files to {out_dir}: {exc.strerror or exc}"]
    if not written:
        return [f"ragbench: no run files written to {out_dir} (no case retrieved anything)"]
    return [f"ragbench: run file {p}" for p in written]
