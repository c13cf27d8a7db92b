"""Options the plugin and the ``ragbench`` command share are defined once
(:mod:`pytest_ragbench.options`), so names, types, defaults and help cannot drift apart."""

from __future__ import annotations

import argparse
import json

import pytest

from pytest_ragbench import options
from pytest_ragbench.cli import build_parser, main
from pytest_ragbench.results.baseline import save_baseline
from pytest_ragbench.results.history import RunHistory


def _cli_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a for a in sub.choices[command]._actions for s in a.option_strings}


def _plugin_options(pytester: pytest.Pytester) -> dict[str, dict]:
    config = pytester.parseconfig()
    group = config._parser.getgroup("ragbench")
    return {name: opt.attrs() for opt in group.options for name in opt.names()}


@pytest.mark.parametrize(("plugin_name", "cli_name", "type_func"), [
    ("--ragbench-gate", "--gate", options.gate_arg),
    ("--ragbench-tolerance", "--tolerance", options.tolerance_arg),
])
def test_gate_and_tolerance_come_from_one_definition(pytester, plugin_name, cli_name,
                                                     type_func):
    plugin = _plugin_options(pytester)[plugin_name]
    cli = _cli_actions("compare")[cli_name]
    assert plugin["type"] is type_func and cli.type is type_func
    assert plugin["help"] == cli.help
    assert plugin["default"] == cli.default
    assert plugin["metavar"] == cli.metavar


def test_history_option_is_shared_by_plugin_compare_and_history(pytester):
    plugin = _plugin_options(pytester)["--ragbench-history"]
    for command in ("compare", "history"):
        actions = _cli_actions(command)
        assert actions["--history"] is actions["--db"]  # --db: the command's earlier name
        assert actions["--history"].help == plugin["help"]
        assert actions["--history"].dest == "history"


def test_plugin_option_names_and_destinations_are_unchanged(pytester):
    config = pytester.parseconfig("--ragbench-gate", "ndcg@10 >= 0.5",
                                  "--ragbench-tolerance", "5%", "--ragbench-history", "h.db")
    assert config.getoption("ragbench_gate") == ["ndcg@10 >= 0.5"]
    assert config.getoption("ragbench_tolerance") == options.tolerance_arg("5%")
    assert config.getoption("ragbench_history") == "h.db"
    result = pytester.runpytest("--ragbench-tolerance", "lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ragbench-tolerance*"])


def test_prefixes_make_the_names():
    seen: list[tuple[str, ...]] = []

    def record(*names: str, **attrs: object) -> None:
        seen.append(names)

    options.add_gate_options(record, prefix="x-")
    options.add_history_option(record, prefix="", aliases=("--db",))
    assert seen == [("--x-gate",), ("--x-tolerance",), ("--history", "--db")]


def _doc(run_id: str, low: int) -> dict:
    scores = {f"q{i:02d}": (0.5 if i < low else 1.0) for i in range(20)}
    return {
        "schema_version": 1, "kind": "ragbench-baseline", "run": {"id": run_id},
        "suites": {"s.yaml": {
            "name": "s", "suite_hash": "h", "dataset_hash": "d", "seed": 0,
            "gates": [], "baseline_settings": {}, "cases": {},
            "retrievers": {"r": {"n_cases": 20, "n_errors": 0, "errors": [], "metrics": {
                "ndcg@10": {"mean": sum(scores.values()) / 20, "direction": "higher",
                            "scores": scores}}}},
        }},
    }


def test_compare_reads_the_history_named_by_history(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with RunHistory(tmp_path / "elsewhere.sqlite") as h:
        h.append(_doc("20250101-a", 0))
        h.append(_doc("20250102-b", 2))
    assert main(["compare", "20250101-a", "last", "--history", "elsewhere.sqlite"]) == 1
    assert "history run #2 (20250102-b)" in capsys.readouterr().out
    # Without gates any drop fails; the shared --tolerance allows it, as in the plugin.
    assert main(["compare", "20250101-a", "last", "--db", "elsewhere.sqlite",
                 "--tolerance", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    save_baseline(tmp_path / "a.json", _doc("a", 0))
    assert main(["compare", "a.json", "20250101-a"]) == 2  # no history in the cwd
    assert "20250101-a" in capsys.readouterr().err


def test_a_cache_path_option_that_cannot_be_the_cache_is_a_usage_error(pytester, mini_suite):
    mini_suite()
    (pytester.path / "afile").write_text("x")
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-cache-path=afile/c.sqlite")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ragbench: --ragbench-cache-path afile/c.sqlite: *c.sqlite "
                                 "cannot be created: *afile is a file, not a folder"])
