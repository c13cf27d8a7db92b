"""The plugin guide's examples work as written: docs/writing-a-plugin.md's package (its
pyproject entry point and module) installed as real distribution metadata, and its pytester
example, with its conftest.py, run against it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def _key(toml: str, key: str) -> str:
    m = re.search(rf'^{key} = "([^"]+)"$', toml, flags=re.M)
    assert m is not None, key
    return m.group(1)


def test_the_guides_pytester_example_passes_as_written(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    pyproject = next(b for b in _blocks(guide, "toml") if "[project]" in b)
    # The few keys needed, read by hand: tomllib is Python 3.11+.
    project = {"name": _key(pyproject, "name"), "version": _key(pyproject, "version"),
               "entry-points": {
                   group: dict(re.findall(r'^(\S+) = "([^"]+)"$', body, flags=re.M))
                   for group, body in re.findall(r'^\[project\.entry-points\."([^"]+)"\]\n'
                                                 r'(.*?)(?=^\[|\Z)', pyproject,
                                                 flags=re.M | re.S)}}
    assert project["entry-points"]["ragbench.retrievers"]["keyword"]
    module = next(b for b in _blocks(guide, "python") if "class KeywordRetriever" in b)
    testing = guide[guide.index("## Testing your plugin"):]
    conftest, test = _blocks(testing, "python")[:2]
    assert conftest.startswith("# conftest.py") and "def test_" in test

    # The package as `pip install` would leave it: the module and its metadata.
    site = pytester.mkdir("site")
    name = project["name"]
    package = site / name.replace("-", "_")
    package.mkdir()
    (package / "__init__.py").write_text(module, encoding="utf-8")
    info = site / f"{name.replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                   f"Version: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in project["entry-points"].items()))
    monkeypatch.syspath_prepend(str(site))
    for mod in [m for m in sys.modules if m.startswith(package.name)]:
        monkeypatch.delitem(sys.modules, mod)

    pytester.makeconftest(conftest)
    pytester.makepyfile(test_keyword=test)
    # No -p pytester here: the guide's conftest.py must be what enables it.
    result = pytester.runpytest("-p", "no:cacheprovider", "test_keyword.py")
    result.assert_outcomes(passed=1)
