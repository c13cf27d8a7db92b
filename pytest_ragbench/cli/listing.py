"""``ragbench list``: every available component, as ``pytest --ragbench-list`` shows it.

Without ``--conftest`` the command reads what needs no pytest: the built-ins and the entry
points of installed distributions. Components registered from a ``conftest.py`` or a pytest
plugin exist only inside a pytest configuration, so ``--conftest DIR`` runs ``pytest
--ragbench-list`` for DIR in this process: the same configuration, the same renderer
(:mod:`pytest_ragbench.listing`), hence the same output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_command

# pytest's exit status for a usage error (an unimportable conftest, a bad ini file).
_PYTEST_USAGE_ERROR = 4


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``list`` to the command's subparsers."""
    p = add_command(commands, "list",
                    summary="list the available components (retrievers, pipelines, LLMs, "
                            "embedders, metrics) and their parameters",
                    description="List the components suite files can name, with their origin, "
                                "the parameters a suite can set and a one-line description.")
    p.add_argument("--conftest", type=Path, default=None, metavar="DIR",
                   help="also list what the conftest.py files and pytest plugins of the "
                        "project at DIR register (runs 'pytest --ragbench-list' for DIR); "
                        "without it, built-ins and installed distributions only")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the listing; returns the exit status."""
    if args.conftest is not None:
        return _list_with_pytest(args.conftest)
    from ..listing import render_listing
    from ..registry import Registry

    for text, _markup in render_listing(
            Registry(), footer="Components registered by conftest.py files or pytest plugins "
                               "are listed with --conftest DIR."):
        print(text)
    return EXIT_OK


def _list_with_pytest(directory: Path) -> int:
    if not directory.is_dir():
        print(f"ragbench list: --conftest {directory}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    import pytest

    directory = directory.resolve()
    args = ["--ragbench-list", "--rootdir", str(directory), str(directory)]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        # The plugin is found through its pytest11 entry point, which this setting disables;
        # loading it by name as well would register it twice otherwise.
        args[:0] = ["-p", "pytest_ragbench.plugin"]
    # run in DIR, as 'pytest --ragbench-list' there: the ini's addopts (--ragbench=suite.yaml)
    # name paths relative to it, which from another folder were 'suite file not found'
    before = Path.cwd()
    os.chdir(directory)
    try:
        status = int(pytest.main(args))
    finally:
        os.chdir(before)
    if status == EXIT_OK:
        return EXIT_OK
    return EXIT_USAGE if status == _PYTEST_USAGE_ERROR else EXIT_FAILED
