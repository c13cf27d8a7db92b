"""The README's options table lists exactly the options and ini options the plugin registers
(its pytest_addoption hook, recorded), so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench import plugin

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


class _Recorder:
    """Stands in for pytest's parser and its option group: records what is registered."""

    def __init__(self) -> None:
        self.options: dict[str, dict[str, Any]] = {}
        self.ini: dict[str, dict[str, Any]] = {}

    def getgroup(self, name: str, description: str = "") -> _Recorder:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        for name in names:
            self.options[name] = kwargs

    def addini(self, name: str, help: str, type: Any = None, default: Any = None) -> None:
        self.ini[name] = {"help": help, "type": type, "default": default}


def _table() -> dict[str, str]:
    """README option table rows: option or ini name -> the row's description."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Command-line options"):]
    section = section[:section.index("\n## ", 4)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        m = re.match(r"^\| (.+?) \| (.+) \|$", line)
        if not m or m.group(1) in ("option", "---"):
            continue
        names = re.findall(r"`(--ragbench[\w-]*)", m.group(1))
        names += re.findall(r"^ini `(ragbench_\w+)`", m.group(1))
        assert names, f"README option row names no option: {line}"
        for name in names:
            rows[name] = m.group(2)
    return rows


def test_every_registered_option_is_in_the_readme_and_nothing_else() -> None:
    parser = _Recorder()
    plugin.pytest_addoption(parser)  # type: ignore[arg-type]
    rows = _table()
    assert set(rows) == set(parser.options) | set(parser.ini)
    assert parser.options and parser.ini


def test_readme_rows_show_each_choice_and_ini_default() -> None:
    parser = _Recorder()
    plugin.pytest_addoption(parser)  # type: ignore[arg-type]
    rows = _table()
    for name, spec in parser.options.items():
        for choice in spec.get("choices") or ():
            assert f"`{choice}`" in rows[name], (name, choice)
    for name, spec in parser.ini.items():
        if spec["type"] == "bool":
            assert f"default {str(spec['default']).lower()}" in rows[name], name
