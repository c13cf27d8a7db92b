"""``ragbench schema``: the JSON Schema of suite files, for editors and validators."""

from __future__ import annotations

import argparse
import json

from .common import EXIT_OK, add_command


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``schema`` to the command's subparsers."""
    p = add_command(commands, "schema", summary="print the JSON Schema of suite files",
                    description="Print the JSON Schema of suite files (YAML or JSON) as JSON, "
                                "e.g. for an editor's YAML language server: "
                                "ragbench schema > ragbench-suite.schema.json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the schema; returns the exit status."""
    # Imported here: the suite parser (and the schema built from it) is only needed now.
    from ..suite.schema import suite_json_schema

    print(json.dumps(suite_json_schema(), indent=2, ensure_ascii=False))
    return EXIT_OK
