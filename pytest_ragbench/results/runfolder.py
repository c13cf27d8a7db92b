"""The files of a run folder (``.ragbench/runs/<run id>/``) that the domain reads back.

``run.json``
    Written when the run starts, before any case: the run id, its start time and the spec of
    every suite about to run (:class:`~pytest_ragbench.results.spec.SuiteSpec`), plus the
    cases each suite holds as far as they are known then (all of them without pytest-xdist;
    with it they arrive later and live only in ``summary.json``). It is what lets
    ``ragbench report`` aggregate a run that was killed before ``summary.json`` was written
    with the suites' gates, metric directions, seed and test settings.
``cases.jsonl``
    One record per line (:mod:`pytest_ragbench.records`), appended and flushed as cases
    finish, so a crash loses no finished case (a torn last line is skipped when read).
``summary.json``
    Written at the end of the run: the aggregated summary with the run's metadata.

The report files (``cases.csv``, ``summary.md``, ``report.html``) are written by
:mod:`pytest_ragbench.report`. Nothing here imports pytest.

The ``.ragbench`` folder that holds the runs (and the history) gets a ``.gitignore`` of ``*``
the first time a run or the history is written into it without one (:func:`ignore_folder`):
run outputs are not source. A ``.gitignore`` already there is the user's and is never
rewritten, so an empty one keeps the folder tracked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import type_name

if TYPE_CHECKING:
    from .spec import SuiteSpec

#: The run history, relative to the rootdir (here, not in history.py: every run asks for it
#: at start-up, and the history module loads sqlite3).
DEFAULT_HISTORY = Path(".ragbench") / "history.sqlite"

# The session loads this module in every pytest run (the names above); the spec reader, and the
# gate parser it brings, only when a run folder is read back.

RUN_SCHEMA_VERSION = 1

CASES_JSONL = "cases.jsonl"
SUMMARY_JSON = "summary.json"
RUN_JSON = "run.json"
RAGBENCH_FOLDER = ".ragbench"
GITIGNORE = ".gitignore"
GITIGNORE_TEXT = "# Written by pytest-ragbench: run outputs are not source.\n*\n"
LATEST = "latest"
# Read by every run (the session checks it before the first item), so here and not in the
# retention module, which loads the history.
KEEP_RUNS_INI = "ragbench_keep_runs"


def parse_keep_runs(value: str) -> int | None:
    """The ``ragbench_keep_runs`` ini value: a whole number of runs, at least 1; empty keeps
    every run (None). Raises ValueError with what was expected."""
    text = str(value).strip()
    if not text:
        return None
    try:
        keep = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number of runs to keep (at least 1), got "
                         f"{text!r}") from None
    if keep < 1:
        raise ValueError(f"expected a whole number of runs to keep (at least 1), got {text} "
                         "(leave the option out to keep every run)")
    return keep


def ignore_folder(path: Path) -> Path | None:
    """Write ``.gitignore`` (``*``) into the ``.ragbench`` folder that is ``path`` or holds
    it, unless that folder has one; returns the file written, else None.

    Only a folder named ``.ragbench``: a ``--ragbench-out`` elsewhere is the user's to place.
    Created exclusively, so two runs starting together write it once; a folder that cannot
    be written to is left alone (writing the run there reports that).
    """
    folder = next((p for p in (path, *path.parents) if p.name == RAGBENCH_FOLDER), None)
    if folder is None or not folder.is_dir():
        return None
    target = folder / GITIGNORE
    try:
        with target.open("x", encoding="utf-8") as fh:
            fh.write(GITIGNORE_TEXT)
    except OSError:
        return None
    return target


def make_run_folder(out_root: Path, run_id: str) -> Path:
    """Create ``out_root/<run id>`` (and the folders above it) and git-ignore the
    ``.ragbench`` folder it is in; returns the run folder."""
    run_dir = out_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ignore_folder(out_root)
    return run_dir


def is_run_folder(path: Path) -> bool:
    """A real folder (not the ``latest`` link) holding any file a run writes. A real folder
    named ``latest`` is a copy of a run made by a tool that follows links (an uploaded CI
    artifact, ``cp -rL``), not a run of its own: taken for one, it sorted after every run id
    and a resume or a listing took a stale run for the newest."""
    return (path.is_dir() and not path.is_symlink() and path.name.lower() != LATEST.lower()
            and any((path / name).is_file() for name in (RUN_JSON, CASES_JSONL, SUMMARY_JSON)))


#: A run id as the session makes them: the UTC start time, then 6 random hex digits.
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def run_folders(out_root: Path) -> dict[str, Path]:
    """The run folders in ``out_root`` by run id (their folder name), sorted by id, that is
    by start time (run ids begin with it)."""
    if not out_root.is_dir():
        return {}
    return {p.name: p for p in sorted(out_root.iterdir(), key=lambda p: p.name)
            if is_run_folder(p)}


def latest_run_id(out_root: Path) -> str | None:
    """The run ``out_root/latest`` points at (a symlink, or the ``LATEST`` text file written
    where links cannot be made)."""
    link = out_root / LATEST
    with contextlib.suppress(OSError):
        if link.is_symlink():
            return Path(os.readlink(link)).name
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (out_root / LATEST.upper()).read_text(encoding="utf-8").strip()
        return text or None
    return None


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class RecordsFileError(ValueError):
    """A ``cases.jsonl`` line that is not a case record (not a torn last line)."""


_RECORD_KEYS = ("suite", "retriever", "case_id")


def _metrics_problem(metrics: Any) -> str | None:
    """What is wrong with a record's ``metrics`` (a mapping of name to number or null)."""
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        return f"'metrics' is {type_name(metrics)}, expected an object"
    for name, value in metrics.items():
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, int | float)):
            return f"metric {name!r} is {type_name(value)}, expected a number or null"
    return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a run's case records back, skipping a torn last line left by a crash.

    Raises :class:`RecordsFileError` naming the file and line for any other line that is not
    a record: the outputs rebuilt from the file would otherwise miss cases without a word,
    or fail on the first field they read.
    """
    out: list[dict[str, Any]] = []
    # bytes, decoded line by line: a crash may tear the last line inside a character
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not raw.endswith(b"\n"):
                    break
                # every caller reports this one (ragbench compare printed a traceback)
                raise RecordsFileError(f"{path}: line {number}: not UTF-8 text (byte "
                                       f"{exc.start}: {exc.reason})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                # only the last line can lack its line break: the line a crash tore (its
                # case is missing, as if it never ended)
                if not line.endswith("\n"):
                    break
                raise RecordsFileError(f"{path}: line {number}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise RecordsFileError(f"{path}: line {number}: expected a case record (a "
                                       f"JSON object), got {type_name(rec)}")
            if not all(isinstance(rec.get(key), str) for key in _RECORD_KEYS):
                raise RecordsFileError(f"{path}: line {number}: expected a case record with "
                                       "'suite', 'retriever' and 'case_id'")
            problem = _metrics_problem(rec.get("metrics"))
            if problem:
                # a hand-edited value: `ragbench report` stopped with a traceback in the CSV
                raise RecordsFileError(f"{path}: line {number}: {problem}")
            out.append(rec)
    return out


def records_cut_short(path: Path, summary: Mapping[str, Any],
                      records: list[dict[str, Any]]) -> str | None:
    """What is wrong when a finished run's ``cases.jsonl`` (``path``) holds another number
    of records than its ``summary`` says it recorded, else None.

    A finished run's file is complete: fewer records there is a copy or an upload that
    stopped midway (or an emptied file), whose cut last line :func:`read_jsonl` takes for
    a crash's. Outputs rebuilt from it would lose cases without a word, a comparison would
    take them for queries removed."""
    run = summary.get("run")
    recorded = run.get("n_records") if isinstance(run, Mapping) else None
    if not isinstance(recorded, int) or isinstance(recorded, bool) \
            or recorded == len(records):
        return None
    return (f"{path} holds {len(records)} case records, and the run recorded {recorded} "
            f"({SUMMARY_JSON})")


def run_start_doc(*, run_id: str, started: str, specs: Mapping[str, SuiteSpec | None],
                  collected: Mapping[str, int], resumed_from: str | None = None,
                  clock: float | None = None) -> dict[str, Any]:
    """The content of ``run.json`` (suites whose file could not be read are left out).
    ``resumed_from``: the folder of the run a resumed run reuses records of (a resume of
    this run, if it stops too, reuses that run's records as well). ``clock``: the time, in
    epoch seconds, the run's time-dependent metrics score against (``temporal_ndcg``
    without ``now``): its start, or the clock of the run it resumes."""
    doc = {
        "schema_version": RUN_SCHEMA_VERSION,
        "id": run_id,
        "started": started,
        "suites": {sid: spec for sid, spec in sorted(specs.items()) if spec is not None},
        "collected": dict(sorted(collected.items())),
    }
    if resumed_from is not None:
        doc["resumed_from"] = resumed_from
    if clock is not None:
        doc["clock"] = clock
    # who runs it: a resume started beside it must not take a run still going for a stopped one
    doc["process"] = {"pid": os.getpid(), "host": socket.gethostname(),
                      "start": _process_start(os.getpid())}
    return doc


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None: with the pid,
    it tells a run's process from a later one given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def is_running(folder: Path) -> bool:
    """Whether a run folder's run is still going: no ``summary.json`` yet, and the process
    its ``run.json`` names is alive on this host (another than this one)."""
    return running_pid(folder) is not None


def running_pid(folder: Path) -> int | None:
    """The process id of a run folder's run while it is still going (see
    :func:`is_running`), else None."""
    if (folder / SUMMARY_JSON).exists():
        return None
    try:
        doc = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
        pid, host = int(doc["process"]["pid"]), str(doc["process"]["host"])
        start = doc["process"].get("start")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if host != socket.gethostname() or pid == os.getpid() or pid <= 0:
        return None
    if isinstance(start, int) and _process_start(pid) not in (start, None):
        return None  # the pid is another process's now: the run's was killed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        return pid  # alive, owned by someone else
    return pid


def still_going(folder: Path) -> str | None:
    """``the run is still going (process N on this host)`` for a run folder whose run is
    (its missing ``summary.json`` is not a run that stopped), else None."""
    pid = running_pid(folder)
    return None if pid is None else f"the run is still going (process {pid} on this host)"


def read_run_start(path: Path) -> tuple[dict[str, Any], dict[str, SuiteSpec | None],
                                        dict[str, int]]:
    """``run.json`` read back: (the doc, the specs by suite id, the cases per suite).

    A missing or unreadable file (a run folder of an older version) gives empty results;
    a spec this version cannot read is None (that suite is aggregated without gates).
    """
    from .spec import read_spec

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}, {}, {}
    if not isinstance(doc, dict):
        return {}, {}, {}
    suites = doc.get("suites")
    specs = ({str(sid): read_spec(data) for sid, data in suites.items()}
             if isinstance(suites, Mapping) else {})
    collected: dict[str, int] = {}
    raw = doc.get("collected")
    if isinstance(raw, Mapping):
        for sid, n in raw.items():
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                collected[str(sid)] = n
    return doc, specs, collected
