"""What the subcommands share: exit statuses and how a subcommand's parser is added."""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2



def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *,
                summary: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subparser whose one-line ``summary`` shows in ``ragbench --help``."""
    return commands.add_parser(name, help=summary, description=description or summary)
