"""Which files are suite files: what pytest checks for every file it collects, kept apart from
the suite parser so that runs without suites never import it (nor YAML, nor pydantic)."""

from __future__ import annotations

from pathlib import Path

SUITE_SUFFIXES = (".ragbench.yaml", ".ragbench.yml", ".ragbench.json")


def is_suite_file(path: Path) -> bool:
    """Whether ``path`` is named like a suite file collected from testpaths."""
    name = path.name.lower()
    return any(name.endswith(s) for s in SUITE_SUFFIXES)
