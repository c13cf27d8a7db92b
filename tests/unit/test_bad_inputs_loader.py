"""The bad-input battery's suite and dataset cases without a pytest run inside.

Each case of :data:`test_bad_inputs_battery.LOADER_CASES` breaks the suite file, a dataset
file, a run file or a prompt template. What a user sees for those is the collection error of
:class:`pytest_ragbench.collect.SuiteFile`: ``collect`` asks the plugin's state for the suite's
runtime (which loads and checks the suite), reads its dataset and prepares its components, and
``repr_failure`` shows a :class:`~pytest_ragbench.errors.RagbenchError` as its text alone. This
file makes the same calls on a :class:`~pytest_ragbench.state.RagbenchState` of this test
session and checks the same things as the battery: a ``RagbenchError`` (shown without a
traceback), exactly one line of its text matching the case's pattern, within the battery's
timeout. The battery keeps one end-to-end run per category for the exit status and the output
as a whole.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from test_bad_inputs_battery import LOADER_CASES, Case, alarm, write_files

from pytest_ragbench.errors import RagbenchError
from pytest_ragbench.state import RagbenchState

__all__ = ["alarm"]  # the battery's timeout fixture, used by name below


def collection_error(config: pytest.Config, suite: Path) -> RagbenchError:
    """The error collecting ``suite`` raises, by the calls ``SuiteFile.collect`` makes."""
    state = RagbenchState(config)
    with pytest.raises(RagbenchError) as info:
        runtime = state.runtime(suite.name, suite)
        _ = runtime.dataset
        runtime.prepare()
    return info.value


@pytest.mark.parametrize("case", [c.param() for c in LOADER_CASES])
def test_bad_input_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          pytestconfig: pytest.Config, alarm: None, case: Case) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, case, monkeypatch)
    named = [a.removeprefix("--ragbench=") for a in case.args if a.startswith("--ragbench=")]
    assert len(named) == len(case.args), case.args  # only a suite file, no other option
    text = str(collection_error(pytestconfig, tmp_path / (named[0] if named else "suite.yaml")))
    assert "Traceback" not in text and "INTERNALERROR" not in text, text
    matching = [line for line in text.splitlines() if fnmatch.fnmatchcase(line, case.expect)]
    assert len(matching) == 1, f"expected one line matching {case.expect!r}, got " \
                               f"{len(matching)}:\n{text}"
