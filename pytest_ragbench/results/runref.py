"""Run references: how a user names one run, resolved to its run folder.

A run reference is, tried in this order:

- a path to a folder (absolute, or relative to the current directory): that folder;
- ``latest``: the run ``OUT/latest`` points at (the newest run started);
- a run number, ``3`` (or ``#3``): the ``#`` ``ragbench history`` shows, looked up in the run
  history; numbers are never reused, so a pruned run's number is an error, not another run;
- ``last`` or ``best``: the run the history resolves them to (newest complete run, best run;
  see :meth:`~pytest_ragbench.results.history.RunHistory.resolve`);
- a run id, or a unique prefix of one: from the history, else among the run folders in
  ``OUT`` (runs made with ``--ragbench-no-history`` have a folder and no history row).

:func:`resolve_run_ref` is the one place this happens for anything that needs a run folder
(``ragbench report``, resuming a run); baselines take the same references through
:func:`pytest_ragbench.results.compare.load_side`, which reads numbers, ``last``, ``best`` and
ids from the history as well. Nothing here imports pytest.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RagbenchError
from .history import HistoryError, RunHistory, run_number
from .runfolder import LATEST, latest_run_id, run_folders


class RunRefError(RagbenchError):
    """A run reference that names no run folder; the message says what was tried."""


def resolve_run_ref(ref: str, out_dir: Path, *, history: Path | None = None,
                    cwd: Path | None = None) -> Path:
    """The run folder that the run reference ``ref`` names (see the module docstring).

    ``out_dir`` is the folder holding the run folders (``.ragbench/runs``, or
    ``--ragbench-out``), ``history`` the run history database (numbers, ``last`` and
    ``best`` need it; a missing file counts as an empty history), ``cwd`` what a relative
    path is relative to (default: the current directory). Raises :class:`RunRefError`.
    """
    text = ref.strip()
    if not text:
        raise RunRefError("empty run reference (expected a run folder, 'latest', a run "
                          "number, 'last', 'best' or a run id)")
    base = Path.cwd() if cwd is None else cwd
    path = Path(text) if Path(text).is_absolute() else base / text
    if path.is_dir():
        return path
    if text == LATEST:
        run_id = latest_run_id(out_dir)
        if run_id is None:
            raise RunRefError(f"run 'latest': {out_dir} has no {LATEST} run (no run has "
                              "written a folder there yet)")
        return _folder(out_dir, run_id, f"run 'latest' ({run_id})")
    number = run_number(text)
    db = history if history is not None and history.is_file() else None
    if db is None and (number is not None or text in ("last", "best")):
        where = f"there is none at {history}" if history is not None else "none was given"
        what = "a run number" if number is not None else repr(text)
        raise RunRefError(f"run {text!r}: {what} is looked up in the run history, and {where}")
    found: str | None = None
    shown: int | None = None
    history_error: str | None = None
    if db is not None:
        try:
            with RunHistory(db, readonly=True) as h:
                found = h.resolve(text)
                shown = h.number_of(found)
        except HistoryError as exc:
            if number is not None or text in ("last", "best") or "ambiguous" in str(exc):
                raise RunRefError(f"run {text!r}: {exc}") from None
            history_error = str(exc)
    if found is not None:
        what = f"run {text!r}" + (f" (#{shown}, id {found})" if shown is not None and
                                  found != text else "")
        return _folder(out_dir, found, what)
    folders = run_folders(out_dir)
    matches = [rid for rid in folders if rid == text] or [
        rid for rid in folders if rid.startswith(text)]
    if len(matches) == 1:
        return folders[matches[0]]
    if len(matches) > 1:
        raise RunRefError(f"run {text!r}: run id prefix is ambiguous in {out_dir} "
                          f"({len(matches)} run folders)")
    tried = [f"no such folder ({path})", f"no run folder of that id in {out_dir}"]
    if history_error is not None:
        tried.insert(1, f"no such run in the history {db}")
    raise RunRefError(f"run {text!r}: " + ", ".join(tried) + " (expected a run folder, "
                      "'latest', a run number, 'last', 'best' or a run id; 'ragbench "
                      "history' lists the runs)")


def _folder(out_dir: Path, run_id: str, what: str) -> Path:
    folder = out_dir / run_id
    if folder.is_dir():
        return folder
    raise RunRefError(f"{what} has no run folder in {out_dir} (pruned, or written with "
                      "another --ragbench-out)")
