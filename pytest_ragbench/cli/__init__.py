"""The ``ragbench`` command: ``compare``, ``history``, ``report``, ``list``, ``schema`` and
``cache``.

One argparse parser with a subparser per command (each module of this package adds its own
and the function that runs it), so every command has its own ``--help`` and argparse reports
bad arguments the same way everywhere. Exit status: 0 on success, 1 when a comparison fails
its gates (or a report cannot be written), 2 on a usage error (bad arguments, an unknown
command, unreadable input), 130 when interrupted (Ctrl-C). Options the plugin has too come
from :mod:`pytest_ragbench.options`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from . import cache, compare, history, listing, report, schema
from .common import EXIT_FAILED, EXIT_USAGE

# 128 + SIGINT, what a shell reports for a command Ctrl-C ended
EXIT_INTERRUPTED = 130

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ragbench`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ragbench",
        description="Work with pytest-ragbench results outside pytest: compare runs against "
                    "baselines, browse the run history, re-render reports, list components, "
                    "print the suite file schema, list and prune the index cache.",
        epilog="'ragbench COMMAND --help' describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"pytest-ragbench {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for module in (compare, history, report, listing, schema, cache):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ragbench`` console script; returns the exit status."""
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: 0 after --help/--version, 2 on bad arguments
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        status = int(args.run(args))
        # Output to a pipe is block-buffered (unless PYTHONUNBUFFERED is set): flushed here, a
        # reader that went away raises below rather than in the interpreter's exit flush.
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        # Ctrl-C (a report reading a large corpus again, a history being pruned): said in one
        # line with the shell's status for it, as pytest says it, not a traceback
        sys.stdout.flush()
        print(f"ragbench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``ragbench list | head``): not an error of ours, and Python
        # would print a traceback when it flushes stdout at exit; point stdout at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
