"""Re-render the report files of a saved run folder (``ragbench report RUN_DIR``).

A run folder (see :mod:`pytest_ragbench.results.runfolder`) holds ``run.json`` (written when the
run starts), ``cases.jsonl`` (appended live, so it survives a crash) and, when the run finished,
``summary.json``. From these this module writes
``report.html``, ``cases.csv`` and ``summary.md`` again, e.g. after upgrading the plugin or for
a run that crashed before writing them. Without ``summary.json`` the summary is recomputed from
the records and the suites' specs the run wrote to ``run.json`` when it started (so with the
suites' gates and metric directions; a folder without ``run.json`` gets neither), without a
baseline comparison, and the report is marked partial.
Document snippets come from the suites' datasets when the suite files are still where the run
read them and the data has not changed since (same dataset hash). Trend lines come from the run
history database (``.ragbench/history.sqlite`` next to the ``runs`` folder, or ``--history``)
or, without one, from the finished runs next to the folder.

Nothing here imports pytest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..datasets import Document, load_dataset
from ..errors import RagbenchError
from ..records import case_outcome, jsonable
from ..results.aggregate import summarize_run
from ..results.history import HistoryError, RunHistory
from ..results.runfolder import (
    RUN_JSON,
    RecordsFileError,
    read_run_start,
    records_cut_short,
    still_going,
)
from ..results.settle import settle_shared_calls
from ..results.verdict import Coverage, make_verdict
from .documents import CorpusLookup, shown_document_texts
from .files import (
    CASES_CSV,
    CASES_JSONL,
    SUMMARY_JSON,
    SUMMARY_MD,
    read_jsonl,
    summary_markdown,
    write_cases_csv,
)
from .html import REPORT_HTML, write_html

__all__ = ["HISTORY_RUNS", "RunFolderError", "history_from_db", "history_from_runs", "load_run",
           "rerender"]

HISTORY_RUNS = 20
"""How many earlier runs the trend lines of a re-rendered report show at most."""


class RunFolderError(RagbenchError):
    """The folder is not a ragbench run folder."""


def _is_run_folder(path: Path) -> bool:
    # run.json alone: a run killed before its first case ended (an index still building)
    return any((path / name).is_file() for name in (CASES_JSONL, SUMMARY_JSON, RUN_JSON))


def _not_a_run_folder(run_dir: Path) -> RunFolderError:
    if not run_dir.is_dir():
        if run_dir.exists():
            return RunFolderError(f"{run_dir} is a file, not a run folder (expected the folder "
                                  f"that holds {CASES_JSONL} and {SUMMARY_JSON})")
        return RunFolderError(f"{run_dir}: no such folder")
    message = (f"{run_dir} is not a ragbench run folder (it has none of {RUN_JSON}, "
               f"{CASES_JSONL} and {SUMMARY_JSON})")
    if (run_dir / "latest").exists() or any(
            p.is_dir() and _is_run_folder(p) for p in run_dir.iterdir()):
        message += f"; it holds runs: pass one of them, e.g. {run_dir / 'latest'}"
    return RunFolderError(message)


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("suites"), list) else None


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and records of a run folder; raises :class:`RunFolderError` if it is not one.

    A missing or unreadable ``summary.json`` (a crashed run) is recomputed from ``cases.jsonl``
    and flagged with ``run.partial = True`` and a ``run.note`` saying why.
    """
    if not run_dir.is_dir() or not _is_run_folder(run_dir):
        raise _not_a_run_folder(run_dir)
    going = still_going(run_dir)
    if going is not None:
        # its records so far read as a run that stopped: 'the run was interrupted'
        raise RunFolderError(f"{run_dir}: {going}: its reports are written when it ends")
    cases = run_dir / CASES_JSONL
    try:
        records = read_jsonl(cases) if cases.is_file() else []
    except RecordsFileError as exc:
        raise RunFolderError(str(exc)) from None
    # cases.jsonl has each record as it came; the run's outputs showed them settled
    settle_shared_calls(records)
    summary = _read_summary(run_dir / SUMMARY_JSON)
    if summary is not None and not cases.is_file() and any(
            int(r.get("n_cases") or 0) for s in summary["suites"]
            for r in s.get("retrievers") or []):
        # rewritten from the summary alone, cases.csv and the report's per-query rows were
        # emptied (an artifact uploaded without the large file)
        raise RunFolderError(f"{run_dir}: {CASES_JSONL} is missing, and the run recorded "
                             f"cases: nothing was rewritten (restore {CASES_JSONL})")
    problem = records_cut_short(cases, summary, records) \
        if summary is not None and cases.is_file() else None
    if problem is not None:
        raise RunFolderError(f"{problem}: nothing was rewritten (restore {CASES_JSONL})")
    if summary is None:
        missing = not (run_dir / SUMMARY_JSON).exists()
        why = f"{SUMMARY_JSON} is {'missing' if missing else 'unreadable'}"
        start, specs, collected = read_run_start(run_dir / RUN_JSON)
        summary = jsonable(summarize_run(records, specs, collected))
        kept = any(spec is not None for spec in specs.values())
        summary["run"] = {
            "id": str(start.get("id") or run_dir.resolve().name),
            **({"started": start["started"]} if isinstance(start.get("started"), str) else {}),
            "partial": True,
            "n_records": len(records),
            "note": f"{why} (the run did not finish), so the summary was recomputed from "
                    + (f"{CASES_JSONL} and the suites kept in {RUN_JSON}, without baseline "
                       "comparison." if kept else
                       f"{CASES_JSONL}, without gates or baseline comparison."),
        }
        if collected:
            summary["run"]["n_cases"] = sum(s["n_cases_run"] for s in summary["suites"])
            # every suite collected (one that recorded no case yet has no row in the
            # summary), as the live run counts them
            summary["run"]["n_cases_total"] = Coverage(
                run={s["id"]: int(s["n_cases_run"]) for s in summary["suites"]},
                total=collected).cases_total
        # The verdict as the run would have given it: its failed and errored cases count
        # (rebuilt from the gates alone, a crashed run with failures read "passed")
        outcomes = [case_outcome(r) for r in records]
        n = int(summary["run"].get("n_cases", len(records)))
        total = int(summary["run"].get("n_cases_total", n))
        verdict = make_verdict(
            items_failed=outcomes.count("failed"), items_errored=outcomes.count("error"),
            gates=summary.get("gates") or [], cases_run=n, cases_total=total,
            # a run killed after its last case (in its summary) ran every case: "partial: 8
            # of 8 cases" read as a contradiction; without the counts nobody can tell
            partial=n < total or not collected,
            # it did not finish: killed, as a SIGTERM's run says, not "passed"
            interrupted=True)
        summary["verdict"], summary["passed"] = verdict, verdict["passed"]
    return summary, records


def history_from_runs(runs_root: Path, *, before: str | None = None,
                      limit: int = HISTORY_RUNS) -> list[dict[str, Any]]:
    """Means of the finished runs in ``runs_root`` for the report's trend lines.

    Run folders are named by their sortable run id; only those sorting before ``before``
    (when given) count, at most the last ``limit``; partial runs are left out because their
    means cover only some queries. Each entry is ``{"run_id", "finished",
    "means": {"SUITE_ID/RETRIEVER/METRIC": mean}}``.
    """
    if not runs_root.is_dir():
        return []
    names = sorted(p.name for p in runs_root.iterdir()
                   if p.is_dir() and not p.is_symlink() and (p / SUMMARY_JSON).is_file()
                   and (before is None or p.name < before))
    out: list[dict[str, Any]] = []
    for name in names[-limit:]:
        summary = _read_summary(runs_root / name / SUMMARY_JSON)
        run = (summary or {}).get("run") or {}
        means = _run_means(summary) if summary is not None else None
        if means is None or not isinstance(run, Mapping) or run.get("partial"):
            continue
        out.append({"run_id": run.get("id", name), "finished": run.get("finished"),
                    "means": means})
    return out


def _run_means(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"SUITE_ID/RETRIEVER/METRIC": mean}`` of a run's summary, or None for one of a
    shape this version does not read: another run's file (another tool's, edited by hand)
    leaves the trends, not every report of the runs beside it."""
    means: dict[str, Any] = {}
    for s in summary["suites"]:
        if not isinstance(s, Mapping) or not isinstance(s.get("retrievers", []), list):
            return None
        for r in s.get("retrievers", []):
            if not isinstance(r, Mapping) or not isinstance(r.get("metrics", {}), Mapping) \
                    or "id" not in s or "name" not in r:
                return None
            for m, st in r.get("metrics", {}).items():
                if not isinstance(st, Mapping):
                    return None
                means[f"{s['id']}/{r['name']}/{m}"] = st.get("mean")
    return means


def history_from_db(db: Path, *, before: str | None = None,
                    limit: int = HISTORY_RUNS) -> list[dict[str, Any]]:
    """Means of the complete runs in a run history database, in the same form as
    :func:`history_from_runs` (keys use the suite name, or the suite id for each of
    several suite files sharing a name). Raises ``HistoryError`` when the
    database cannot be read."""
    with RunHistory(db, readonly=True) as h:
        runs = [r for r in h.runs() if not r.partial and (before is None or r.id < before)]
        runs = runs[-limit:] if limit > 0 else []
        means: dict[str, dict[str, float | None]] = {r.id: {} for r in runs}
        for metric in h.metrics():
            for (name, sid, retriever), per_run in h.file_means(metric).items():
                # the report's trends look a suite up by its id or its name
                suite = name if sid is None else sid
                for run_id, mean in per_run.items():
                    if run_id in means:
                        means[run_id][f"{suite}/{retriever}/{metric}"] = mean
    return [{"run_id": r.id, "finished": r.started, "means": means[r.id]} for r in runs]


def _history(run_dir: Path, db: Path | None, run_id: str) -> list[dict[str, Any]]:
    real = run_dir.resolve()
    # The default layout is .ragbench/runs/<run id> with .ragbench/history.sqlite beside runs.
    path = db if db is not None else real.parent.parent / "history.sqlite"
    if path.is_file():
        try:
            return history_from_db(path, before=run_id)
        except HistoryError:
            if db is not None:
                raise
    return history_from_runs(real.parent, before=run_id)


def _corpus_lookup(summary: Mapping[str, Any]) -> CorpusLookup:
    """Read a suite's corpus again from its suite file, if it still describes the same data."""
    root = (summary.get("run") or {}).get("rootdir")
    hashes = {str(s.get("id")): s.get("dataset_hash") for s in summary.get("suites") or []}

    def corpus_of(suite_id: str) -> Mapping[str, Document] | None:
        if not root or not hashes.get(suite_id):
            return None
        from ..suite.loader import load_suite

        try:
            dataset = load_dataset(load_suite(Path(root) / suite_id, None).dataset)
        except (RagbenchError, OSError, ValueError):
            return None
        if dataset.content_hash != hashes[suite_id]:
            return None
        return {d.id: d for d in dataset.corpus}

    return corpus_of


def rerender(run_dir: Path, *, html_path: Path | None = None,
             history_db: Path | None = None,
             on_note: Callable[[str], None] | None = None,
             summary_level: str = "default") -> list[Path]:
    """Write ``report.html`` (or ``html_path``), ``cases.csv`` and ``summary.md`` for a run
    folder and return their paths.

    Trends come from ``history_db`` when given, else from the default history database or the
    sibling run folders; ``summary_level`` is how much ``summary.md`` shows (``short``,
    ``default``, ``full``). Raises :class:`RunFolderError` for a folder that is not a run folder
    and ``HistoryError`` when an explicitly given ``history_db`` cannot be read.
    """
    summary, records = load_run(run_dir)
    # rendered before any file is written: a summary.json of the right outline that this
    # version cannot read (another version's, or edited by hand) is named, as 'ragbench
    # compare' names it, where it ended in a traceback after report.html was rewritten
    try:
        for key in ("run", "baseline"):
            if not isinstance(summary.get(key) or {}, Mapping):
                raise TypeError(f"'{key}' is {type(summary[key]).__name__}, expected a "
                                "mapping")
        baseline_rows = (summary.get("baseline") or {}).get("rows") or []
        md = summary_markdown(summary, baseline_rows, level=summary_level)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        run = summary.get("run")
        if isinstance(run, Mapping) and run.get("note"):
            raise  # recomputed from the records here: not the file's fault
        raise RunFolderError(f"{run_dir / SUMMARY_JSON}: not a ragbench summary this version "
                             f"reads ({type(exc).__name__}: {exc})") from None
    note = (summary.get("run") or {}).get("note")
    if note and on_note is not None:
        # A recomputed summary (a crashed run) must not pass for the one the run wrote.
        on_note(note)
    # the run's own id: a folder copied by a tool that follows links is named "latest",
    # which sorts after every run id and would put later runs in the run's trend
    run_id = str((summary.get("run") or {}).get("id") or run_dir.resolve().name)
    history = _history(run_dir, history_db, run_id)
    doc_text = shown_document_texts(records, _corpus_lookup(summary))
    html = write_html(html_path if html_path is not None else run_dir / REPORT_HTML,
                      summary, records, history=history, doc_text=doc_text)
    csv_path = run_dir / CASES_CSV
    write_cases_csv(csv_path, records)
    run = summary.get("run") or {}
    if run.get("partial") and ("verdict" not in summary or run.get("note")):
        # summary_markdown judges only gates and regressions; say plainly that it is partial.
        md = (f"> **Partial run**: {run.get('note') or 'the run did not finish.'}\n\n" + md)
    md_path = run_dir / SUMMARY_MD
    md_path.write_text(md, encoding="utf-8")
    return [html, csv_path, md_path]
