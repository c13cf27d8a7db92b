"""Which files are suite files: what pytest checks for every file it collects, kept apart from
the suite parser so that runs without suites never import it (nor YAML, nor pydantic)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

SUITE_SUFFIXES = (".ragbench.yaml", ".ragbench.yml", ".ragbench.json")


def is_suite_file(path: Path) -> bool:
    """Whether ``path`` is named like a suite file collected from testpaths."""
    name = path.name.lower()
    return any(name.endswith(s) for s in SUITE_SUFFIXES)


def case_matcher(root: Path, explicit: Iterable[Path]) -> Callable[[str], bool]:
    """Whether a node id (relative to ``root``) is a case of a suite file: named like one or
    one of ``explicit`` (``--ragbench`` paths). Each file part is resolved once: the xdist
    controller asks for every id of every worker's collection, and resolving a path per id
    held its main thread for about 0.6 s (py-spy) on a 400-case suite at ``-n 4``, while
    the run's requests waited for the GIL."""
    wanted = {p.resolve() for p in explicit}
    known: dict[str, bool] = {}

    def is_case(nodeid: str) -> bool:
        file, sep, _ = nodeid.partition("::")
        if not sep:
            return False
        found = known.get(file)
        if found is None:
            path = root / file
            found = known[file] = is_suite_file(path) or path.resolve() in wanted
        return found

    return is_case


def find_suite_files(roots: Iterable[Path], skip: Sequence[str] = ()) -> list[Path]:
    """The suite files under ``roots`` (files or folders), as collection would find them:
    folders whose name matches a pattern of ``skip`` (pytest's ``norecursedirs``) and hidden
    folders are not entered. Sorted, each once."""
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            if is_suite_file(root):
                found.add(root.resolve())
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")
                       and not any(fnmatch.fnmatch(d, pat) for pat in skip)]
            found.update(Path(folder, f).resolve() for f in files if is_suite_file(Path(f)))
    return sorted(found)
