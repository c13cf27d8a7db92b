"""``ragbench schema``: prints pytest_ragbench.suite.schema.suite_json_schema() as JSON."""

from __future__ import annotations

import json

from pytest_ragbench.cli import main


def test_schema_prints_the_suite_json_schema(capsys):
    from pytest_ragbench.suite.schema import suite_json_schema

    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed, dict) and printed
    assert printed == json.loads(json.dumps(suite_json_schema()))
