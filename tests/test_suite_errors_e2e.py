"""The loader's messages reach the user as a usage error, without a traceback (the loader's
own cases are unit tests: tests/unit/test_suite_errors.py)."""

from __future__ import annotations

import textwrap

import pytest

GOOD = """\
name: e
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
retrievers:
  bm25: {}
metrics: [ndcg@10, recall@10]
"""

# ten levels of nine aliases of the level below: 9**10 strings from under 700 bytes
BOMB = "l0: &l0 lol\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 11))


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
