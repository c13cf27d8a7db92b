"""A user's project that does not use ragbench at all: installing the plugin (and with it
pytest-asyncio) must not add a warning to their runs, nor change how their async code runs."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("pytest_asyncio")

UNRELATED = """
    def test_plain():
        assert 1 + 1 == 2
"""

ASYNC_FIXTURES = """
    import asyncio
    import pytest
    import pytest_asyncio

    @pytest_asyncio.fixture(scope="module")
    async def module_loop():
        return asyncio.get_running_loop()

    @pytest.mark.asyncio(loop_scope="module")
    async def test_one(module_loop):
        assert asyncio.get_running_loop() is module_loop

    @pytest.mark.asyncio(loop_scope="module")
    async def test_two(module_loop):
        assert asyncio.get_running_loop() is module_loop
"""


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def _run(pytester: pytest.Pytester, capfd: pytest.CaptureFixture[str], *args: str
         ) -> tuple[pytest.RunResult, str]:
    """An in-process run and all it showed: its output, what its xdist workers wrote to the
    inherited stderr, and the warnings it let out (in a process of its own, pytest-asyncio's
    configure-time warning would go to stderr; in process it reaches this test's recorder)."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        result = pytester.runpytest(*args)
    fd = capfd.readouterr()
    shown = "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    return result, "\n".join((_output(result), fd.out, fd.err, shown))


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_unrelated_project_runs_without_warnings(pytester: pytest.Pytester,
                                                 capfd: pytest.CaptureFixture[str],
                                                 workers: list[str]) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    # Unset option: pytest-asyncio's behaviour (a fixture's loop has the fixture's scope) holds.
    pytester.makepyfile(test_async=ASYNC_FIXTURES)
    strict, strict_text = _run(pytester, capfd, "-p", "no:cacheprovider", "-W", "error",
                               *workers)
    assert strict.ret == 0, strict_text
    strict.assert_outcomes(passed=3)
    relaxed, relaxed_text = _run(pytester, capfd, "-p", "no:cacheprovider", "-rw", *workers)
    relaxed.assert_outcomes(passed=3)
    for text in (strict_text, relaxed_text):
        assert "Warning" not in text and "warnings summary" not in text, text
        assert "INTERNALERROR" not in text


def test_a_value_the_user_set_stands(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = module\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
    assert result.ret == 0, _output(result)
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=module*"])
    override = pytester.runpytest(
        "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=session")
    override.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=session*"])


def test_a_bad_value_the_user_set_is_still_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = sometimes\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    assert "'sometimes' is not a valid asyncio_default_fixture_loop_scope" in _output(result)
