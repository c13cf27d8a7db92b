"""Retention: keep the newest N runs (their folders and history rows), and every run a baseline
points at; delete the rest.

Applied at the end of each run with the ``ragbench_keep_runs`` ini option, and on demand by
``ragbench history --prune N``. The runs are those of the history and the run folders of the
output folder together, newest first by run id (run ids begin with their UTC start time),
complete and partial alike. Beyond the newest N, a run is kept when a baseline points at it:

- it was saved as a baseline file (``--ragbench-save-baseline``) and that file still holds it;
- a kept run was compared against it (``--ragbench-baseline`` in any form: a run number, a run
  id, ``last``, ``best``, a run folder or a baseline file holding it), and so on down the
  chain;
- it is what ``last`` or ``best`` resolves to for one of the history's suites now, so that
  pruning never changes what those references mean;
- ``latest`` points at it, or the caller protects it (the run that is pruning);
- a kept unfinished run resumed it (``run.json``'s ``resumed_from``), down the chain: that
  run's own resume reuses the records it had not replayed yet from there.

Those references are recorded in the history (:meth:`RunHistory.append`); a run made with
``--ragbench-no-history`` records none. A run folder with no ``summary.json`` and no history
row whose run's process is alive on this host, or that changed in the last hour (a run on
another host), may belong to a run still going: it is neither counted nor deleted. Nothing here
imports pytest.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .history import RunHistory
from .runfolder import (
    KEEP_RUNS_INI,
    RUN_ID,
    SUMMARY_JSON,
    folder_size,
    is_running,
    latest_run_id,
    parse_keep_runs,
    run_folders,
)

__all__ = ["KEEP_RUNS_INI", "RUNNING_GRACE_S", "PruneResult", "PrunedRun", "human_size",
           "parse_keep_runs", "prune_lines", "prune_runs"]

RUNNING_GRACE_S = 3600.0
"""A run folder without ``summary.json`` touched this recently may still be running."""


@dataclass(frozen=True)
class PrunedRun:
    """One deleted run: its history number (None without a history row), its folder (None
    without one) and that folder's size in bytes."""

    run_id: str
    number: int | None
    folder: Path | None
    size: int


@dataclass
class PruneResult:
    """What :func:`prune_runs` did."""

    keep: int
    deleted: list[PrunedRun] = field(default_factory=list)
    pinned: dict[str, str] = field(default_factory=dict)
    """Runs past the newest ``keep`` that were kept, with the reason."""
    numbers: dict[str, int] = field(default_factory=dict)
    running: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    history_bytes: tuple[int, int] | None = None
    """The history file's size before and after compacting (``vacuum=True`` only)."""

    @property
    def freed(self) -> int:
        """Bytes given back: the deleted folders, and the history's shrinking if compacted."""
        db = 0 if self.history_bytes is None else max(0, self.history_bytes[0]
                                                          - self.history_bytes[1])
        return sum(r.size for r in self.deleted) + db

    def label(self, run_id: str) -> str:
        number = self.numbers.get(run_id)
        return f"#{number} {run_id}" if number is not None else run_id


def _db_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        part = path.with_name(path.name + suffix)
        if part.is_file():
            total += part.stat().st_size
    return total


def _newest_change(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime,
                    *(p.stat().st_mtime for p in folder.iterdir() if p.is_file())])
    except OSError:
        return 0.0


def _saved_baseline_holds(path: str, run_id: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return False
    run = doc.get("run") if isinstance(doc, dict) else None
    return isinstance(run, dict) and run.get("id") == run_id


def _static_pins(h: RunHistory | None, out_dir: Path, protect: Iterable[str],
                 numbers: dict[str, int]) -> dict[str, str]:
    """Runs kept whatever else is kept: saved baselines, last/best, latest, protected."""
    pins: dict[str, str] = {rid: "this run" for rid in protect}
    latest = latest_run_id(out_dir)
    if latest is not None:
        pins.setdefault(latest, "'latest' points at it")
    if h is None:
        return pins
    for holder, _target, path in h.baseline_refs():
        if path is not None and holder in numbers and _saved_baseline_holds(path, holder):
            pins.setdefault(holder, f"saved as baseline {path}")
    for name in h.suite_names():
        for spec in ("last", "best"):
            for rid, _sid in h.resolve_suites(spec, name):
                pins.setdefault(rid, f"'{spec}' for suite {name}")
    return pins


def prune_runs(out_dir: Path, history: Path | None, keep: int, *,
               protect: Iterable[str] = (), vacuum: bool = False,
               now: float | None = None) -> PruneResult:
    """Keep the newest ``keep`` runs and those a baseline points at; delete the others'
    folders in ``out_dir`` and rows in the ``history`` database (when the file exists).

    ``protect``: run ids never deleted (the run that prunes). ``vacuum``: compact the history
    file afterwards and measure it. Raises HistoryError for a history that cannot be read or
    written; a folder that cannot be deleted is reported in ``errors`` and keeps its row.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    result = PruneResult(keep=keep)
    now = time.time() if now is None else now
    db = history if history is not None and history.is_file() else None
    # measured before the history is opened: the deleted rows go to the write-ahead log
    # first, which grew the file a prune then reported as freed
    size_before = _db_size(db) if db is not None else 0
    h = RunHistory(db) if db is not None else None
    try:
        rows = h.runs() if h is not None else []
        result.numbers = {r.id: r.seq for r in rows}
        # only folders named as runs are: a copy kept under a name of its own is the user's
        folders = {rid: path for rid, path in run_folders(out_dir).items()
                   if RUN_ID.fullmatch(rid)}
        for rid, folder in folders.items():
            # a run still going (its process alive: an index built for hours before the
            # first case left run.json alone, changed at its start) whatever its age
            if (rid not in result.numbers and not (folder / SUMMARY_JSON).is_file()
                    and (now - _newest_change(folder) < RUNNING_GRACE_S
                         or is_running(folder))):
                result.running.append(rid)
        candidates = sorted((set(result.numbers) | set(folders)) - set(result.running),
                            reverse=True)
        kept = set(candidates[:keep])
        pinned = {rid: why for rid, why in _static_pins(h, out_dir, protect,
                                                        result.numbers).items()
                  if rid not in kept}
        refs = h.baseline_refs() if h is not None else []
        changed = True
        while changed:  # runs a kept run compared against, and the runs those compared to
            changed = False
            for holder, target, _path in refs:
                if (target is not None and (holder in kept or holder in pinned)
                        and target not in kept and target not in pinned):
                    pinned[target] = f"baseline of run {result.label(holder)}"
                    changed = True
        _pin_resumed(folders, kept, pinned, result)
        result.pinned = {rid: why for rid, why in pinned.items() if rid in candidates}
        doomed = [rid for rid in reversed(candidates) if rid not in kept and rid not in pinned]
        gone_rows: list[str] = []
        for rid in doomed:
            folder = folders.get(rid)
            size = 0
            if folder is not None:
                size = folder_size(folder)
                try:
                    shutil.rmtree(folder)
                except FileNotFoundError:
                    pass  # another run pruning at the same moment got there first
                except OSError as exc:
                    result.errors.append(f"cannot delete {folder}: {exc}")
                    continue
            if rid in result.numbers:
                gone_rows.append(rid)
            result.deleted.append(PrunedRun(rid, result.numbers.get(rid), folder, size))
        if h is not None and gone_rows:
            h.delete_runs(gone_rows)
        if h is not None and vacuum and db is not None:
            h.vacuum()
            result.history_bytes = (size_before, _db_size(db))
    finally:
        if h is not None:
            h.close()
    return result


def _pin_resumed(folders: dict[str, Path], kept: set[str], pinned: dict[str, str],
                 result: PruneResult) -> None:
    """Pin the run each kept, pinned or running run resumed (``run.json``'s
    ``resumed_from``, down the chain) while that run is unfinished: stopped before it
    replayed every record it reuses, its own resume reads the rest from there."""
    from .resume import is_unfinished, resumed_from_folder

    todo = [rid for rid in (*kept, *pinned, *result.running) if rid in folders]
    while todo:
        holder = todo.pop()
        if not is_unfinished(folders[holder]):
            continue  # it holds every record it reused
        earlier = resumed_from_folder(folders[holder])
        if earlier is None or earlier.name not in folders or earlier.name in kept \
                or earlier.name in pinned or folders[earlier.name].resolve() != earlier:
            continue
        pinned[earlier.name] = f"resumed by the unfinished run {result.label(holder)}"
        todo.append(earlier.name)


def human_size(n: int) -> str:
    """Bytes as ``812 B``, ``4.1 kB``, ``12.3 MB``, ``1.2 GB`` (powers of 1000)."""
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB"):
        n_f = n / 1000.0
        if n_f < 1000 or unit == "GB":
            return f"{n_f:.1f} {unit}"
        n = int(n_f)
    return f"{n} B"  # not reached


def prune_lines(result: PruneResult, *, detail: bool = True) -> list[str]:
    """What pruning did, in lines: a headline, then (``detail``) every deleted run with its
    folder size, every run kept because a baseline points at it, and any error."""
    n = len(result.deleted)
    head = (f"pruned {n} run{'s' if n != 1 else ''}, freed {human_size(result.freed)} "
            f"(keeping the newest {result.keep}"
            + (f" and {len(result.pinned)} a baseline points at" if result.pinned else "")
            + ")")
    lines = [head]
    if not detail:
        return lines + result.errors
    for run in result.deleted:
        what = (f"folder {human_size(run.size)}" if run.folder is not None else "no folder")
        row = "history row" if run.number is not None else "no history row"
        lines.append(f"  deleted {result.label(run.run_id)}: {what}, {row}")
    if result.history_bytes is not None:
        before, after = result.history_bytes
        lines.append(f"  history: {human_size(before)} -> {human_size(after)}")
    for rid, why in sorted(result.pinned.items()):
        lines.append(f"  kept {result.label(rid)}: {why}")
    for rid in result.running:
        lines.append(f"  kept {rid}: no summary.json, and its run is still going or "
                     "changed within the hour")
    return lines + result.errors
