"""``ragbench cache``: list and prune the on-disk index cache (``bm25-*``, ``dense-*``).

Every change of a corpus or of an index's parameters makes a new entry and leaves the old one,
so the cache only grows until pruned. Entries a run is building or using are kept whatever
the options say (see :mod:`pytest_ragbench.retrievers.indexcache`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_command
from .pytestini import IniError, pytest_cache

#: The plugin's folder in pytest's cache.
_RAGBENCH = Path("d") / "ragbench"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(value: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a number and a unit, e.g. 30d, 12h, 90m, 2w or 45s")
    return float(m.group(1)) * _UNITS[m.group(2)]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cache`` (``list`` and ``prune``) to the command's subparsers."""
    p = add_command(
        commands, "cache", summary="list or prune the on-disk index cache (bm25, dense)",
        description="List or prune the index cache the bm25 and dense retrievers keep under "
                    "pytest's cache folder (<cache_dir>/d/ragbench): one folder per corpus "
                    "and parameters, never removed by a run. Entries a run is building or "
                    "using are kept.")
    actions = p.add_subparsers(title="actions", dest="action", metavar="ACTION")
    actions.required = True
    for name, summary in (("list", "list the entries with their size and last use (exit "
                                   "1 when an entry's state is unknown: a lock file that "
                                   "cannot be opened)"),
                          ("prune", "remove entries not used for a while (or all); exit 1 "
                                    "when an entry's state is unknown, whether or not it was "
                                    "due, or --all kept one in use")):
        a = actions.add_parser(name, help=summary, description=summary)
        a.add_argument("--dir", type=Path, default=None, metavar="DIR",
                       help="the index cache folder, a pytest cache folder holding it, or "
                            "a project folder whose .pytest_cache holds it "
                            "(default: d/ragbench in the pytest cache of the project here, as "
                            "pytest finds it: its rootdir and ini file, and the ini's "
                            "cache_dir or an -o cache_dir=... in its addopts or in "
                            "PYTEST_ADDOPTS, by default .pytest_cache; give --dir for a cache "
                            "moved by -o cache_dir or --rootdir on pytest's command line)")
        if name == "list":
            a.add_argument("--json", action="store_true",
                           help="print the entries as JSON, one object each in a list")
        else:
            which = a.add_mutually_exclusive_group(required=True)
            which.add_argument("--older-than", type=_age, metavar="AGE",
                               help="remove entries last used more than AGE ago (30d, 12h, "
                                    "2w...), and what builds killed midway left")
            which.add_argument("--all", action="store_true", help="remove every entry")
            a.add_argument("--dry-run", action="store_true",
                           help="say what would be removed, remove nothing")
        a.set_defaults(run=run)


def _find(given: Path | None) -> Path:
    """The index cache folder: ``given`` (itself, its ``d/ragbench`` or its
    ``.pytest_cache/d/ragbench``), else the one in the
    pytest cache of the project pytest would find from here (see :mod:`.pytestini`). Never
    just any ``.pytest_cache`` above: one in a parent folder (``/tmp``, a home folder) is
    another project's."""
    if given is not None:
        # a project folder (its .pytest_cache holds the index cache) read as an empty cache:
        # "0 entries", exit 0, with the entries one level below
        for inside in (given / _RAGBENCH, given / ".pytest_cache" / _RAGBENCH):
            if inside.is_dir():
                return inside
        return given
    return pytest_cache(Path.cwd()).folder / _RAGBENCH


def _whose() -> str:
    """Where pytest's cache of the project here comes from, for a message."""
    found = pytest_cache(Path.cwd())
    if found.origin is not None:
        return found.origin
    where = f"{found.inifile}" if found.inifile is not None else "no ini file"
    return f"pytest's default cache folder of the rootdir {found.rootdir} ({where})"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{int(seconds // span)}{unit} ago"
    return "just now"


def run(args: argparse.Namespace) -> int:
    """List or prune; returns the exit status."""
    # sizes as `ragbench history --prune` writes them: one unit style wherever sizes show
    from ..results.retention import human_size
    from ..retrievers.indexcache import LockFileError, prune_entry, scan, sweep_orphans

    try:
        folder = _find(args.dir)
    except IniError as exc:
        print(f"ragbench cache: cannot read pytest's configuration: {exc}; give --dir",
              file=sys.stderr)
        return EXIT_USAGE
    if args.dir is not None and not folder.is_dir():
        print(f"ragbench cache: {args.dir}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    if not folder.is_dir():
        if args.action == "list" and args.json:
            print("[]")
        else:
            print(f"no index cache here: {folder} does not exist ({_whose()}); "
                  "give --dir for another")
        return EXIT_OK
    now = time.time()
    entries = scan(folder)
    if args.action == "list":
        # as a prune does: an entry whose state cannot be known is a problem to fix, which a
        # script checking the list's exit status would otherwise not see
        unknown = sum(e.state_unknown is not None for e in entries)
        status = EXIT_FAILED if unknown else EXIT_OK
        if args.json:
            print(json.dumps([{"path": str(e.path), "kind": e.kind, "size": e.size,
                               "last_used": e.last_used, "unfinished": e.unfinished,
                               "in_use": e.in_use, "state_unknown": e.state_unknown}
                              for e in entries], indent=2))
            return status
        print(f"index cache: {folder}")
        for e in entries:
            notes = ", ".join(n for n, on in (
                ("unfinished build", e.unfinished), ("in use", e.in_use),
                (f"state unknown: {e.state_unknown}", e.state_unknown is not None)) if on)
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"  {e.path.name:<40} {human_size(e.size):>10}  last used {stamp} "
                  f"({_ago(now - e.last_used)})" + (f"  [{notes}]" if notes else ""))
        total = sum(e.size for e in entries)
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {human_size(total)}"
              + (f"; {unknown} of state unknown" if unknown else ""))
        return status
    print(f"index cache: {folder}")
    chosen = [e for e in entries
              if args.all or e.unfinished or now - e.last_used > args.older_than]
    freed, kept, unknown = 0, 0, 0
    verb = "would remove" if args.dry_run else "removed"
    for e in chosen:
        if args.dry_run and e.state_unknown is not None:
            unknown += 1
            print(f"would keep {e.path.name}: {_unknown(e.state_unknown)}")
            continue
        try:
            outcome = "removed" if args.dry_run and not e.in_use else (
                "in use" if args.dry_run else prune_entry(e))
        except LockFileError as exc:
            unknown += 1
            print(f"kept {e.path.name}: {_unknown(str(exc))}; make it a file this user can "
                  f"open for writing (or, once no run uses the entry, remove {e.path} and "
                  f"{exc.path} by hand)")
            continue
        if outcome == "removed":
            freed += e.size
            print(f"{verb} {e.path.name} ({human_size(e.size)})")
        else:
            kept += 1
            print(f"kept {e.path.name}: {outcome} by a run now")
    # an entry too recent to prune whose state is unknown is still one this prune could not
    # check (and no prune can remove once it is old): said, and exit 1, as `list` does
    left = [e for e in entries if e not in chosen and e.state_unknown is not None]
    for e in left:
        print(f"left {e.path.name} (last used {_ago(now - e.last_used)}): "
              f"{_unknown(e.state_unknown or '')}")
    if not args.dry_run:
        sweep_orphans(folder)
    notes = [text for text, n in ((f"{kept} kept (in use)", kept),
                                  (f"{unknown} kept (state unknown)", unknown),
                                  (f"{len(left)} left (state unknown)", len(left))) if n]
    print(f"{verb} {len(chosen) - kept - unknown} of {len(entries)} entries, "
          f"{human_size(freed)}" + "".join(f"; {n}" for n in notes))
    # an entry whose state cannot be known is a problem to fix whatever was asked for
    return EXIT_FAILED if unknown or left or (kept and args.all) else EXIT_OK


def _unknown(why: str) -> str:
    return f"cannot tell whether a run is building or using it: {why}"
