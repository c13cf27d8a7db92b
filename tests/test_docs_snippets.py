"""The YAML the README and docs/ show can be copied as it is: every block parses with the
strict pure-Python YAML parser (a user's PyYAML without libyaml, an editor, GitHub Actions),
and every suite or suite fragment is one the suite schema accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pytest_ragbench.suite.schema import suite_json_schema

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MINIMAL = {"dataset": {"corpus": "c.jsonl", "queries": "q.jsonl"},
           "retrievers": {"bm25": {}}, "metrics": ["ndcg@10"]}


def _yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```yaml\n(.*?)^```", text, flags=re.M | re.S):
            line = text.count("\n", 0, match.start()) + 2
            blocks.append((f"{page.relative_to(ROOT).as_posix()}:{line}", match.group(1)))
    return blocks


BLOCKS = _yaml_blocks()


def _is_ci_config(data: Any) -> bool:
    """A GitHub Actions workflow or a list of its steps, the docs' only YAML that is not a
    suite."""
    if isinstance(data, dict):
        return "jobs" in data
    return isinstance(data, list) and all(isinstance(s, dict) and "run" in s for s in data)


def test_the_docs_show_yaml() -> None:
    assert len(BLOCKS) >= 20


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_yaml_block_parses_and_a_suite_fragment_fits_the_schema(where: str, block: str) -> None:
    # The pure-Python parser is the strict one: libyaml (the loader's CSafeLoader, when
    # installed) takes a few plain scalars it refuses, as in flow mappings "espresso?,".
    try:
        data = yaml.load(block, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        pytest.fail(f"{where}: not valid YAML: {exc}")
    if _is_ci_config(data):
        return
    assert isinstance(data, dict), where
    schema = suite_json_schema()
    unknown = set(data) - set(schema["properties"])
    assert not unknown, f"{where}: not suite keys: {sorted(unknown)}"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors({**MINIMAL, **data})]
    assert errors == [], where


def _tables() -> list[tuple[str, list[str]]]:
    """Each Markdown table outside code fences: where it starts, and its lines."""
    tables = []
    for page in PAGES:
        lines, fenced = page.read_text(encoding="utf-8").splitlines(), False
        current: list[str] = []
        for number, line in enumerate(lines, 1):
            if line.startswith("```"):
                fenced = not fenced
            if not fenced and line.startswith("|"):
                if not current:
                    tables.append((f"{page.relative_to(ROOT).as_posix()}:{number}", current))
                current.append(line)
            else:
                current = []
    return tables


def test_every_table_row_has_its_headers_cells() -> None:
    # GitHub splits a cell at every '|' not escaped as '\|', also inside `code`: a row with
    # an unescaped one is cut into extra cells (architecture.md's `ragbench compare | ...`).
    tables = _tables()
    assert len(tables) >= 10
    for where, rows in tables:
        widths = [len(re.split(r"(?<!\\)\|", row.strip().strip("|"))) for row in rows]
        assert set(widths) == {widths[0]}, (where, widths)
