"""The loader's messages reach the user as a usage error, without a traceback (the loader's
own cases are unit tests: tests/unit/test_suite_errors.py)."""

from __future__ import annotations

import textwrap

import pytest
from conftest import ALIAS_BOMB as BOMB
from conftest import LOADER_SUITE as GOOD

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

# -- end to end: the same messages reach the user, as a usage error, without a traceback --------


def run_bad(pytester: pytest.Pytester, suite: str) -> pytest.RunResult:
    (pytester.path / "suite.yaml").write_text(textwrap.dedent(suite))
    result = pytester.runpytest("--ragbench=suite.yaml")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR)
    return result


def test_end_to_end_unknown_key(pytester, mini_suite):
    mini_suite(GOOD)
    result = run_bad(pytester, GOOD + "metric: [mrr@10]\n")
    result.stdout.fnmatch_lines(["*suite.yaml:8: metric: unknown key 'metric' "
                                 "(did you mean 'metrics'?) (expected one of: *)"])


def test_end_to_end_alias_bomb_fails_fast(pytester, mini_suite):
    mini_suite(GOOD)
    result = run_bad(pytester, GOOD + BOMB)
    result.stdout.fnmatch_lines(["*suite.yaml:*: *expands to more than * values*"])


def test_end_to_end_module_that_raises_on_import(pytester, mini_suite):
    # the user's module raised (not an ImportError): one line saying what and where, not a
    # traceback through the plugin's collection and importlib's frames
    mini_suite(GOOD)
    pytester.makepyfile(raises_on_import="raise RuntimeError('no API key configured')\n")
    result = run_bad(pytester, GOOD.replace("bm25: {}", "mine: {type: 'raises_on_import:R'}"))
    result.stdout.fnmatch_lines([
        "*suite.yaml:6: retrievers.mine: cannot import 'raises_on_import' for "
        "'raises_on_import:R': RuntimeError: no API key configured (at *raises_on_import.py:1)"])
    assert "importlib" not in result.stdout.str()
