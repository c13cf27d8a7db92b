"""Suites handed from the xdist controller to its workers (pytest_ragbench/suite/handoff.py):
a worker takes one only for the very file it collects, and gets the suite the loader builds."""

from __future__ import annotations

import copyreg
import dataclasses
import json
import shutil
import sys
import types
from pathlib import Path
from types import MappingProxyType

import pytest

from pytest_ragbench.headstart import same_python_here
from pytest_ragbench.registry import Registry
from pytest_ragbench.suite.handoff import handed_over, pack, registry_fingerprint, take
from pytest_ragbench.suite.loader import load_suite

SUITE = """
name: handed
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers:
  bm25: {k1: 1.2}
  second: {type: bm25, b: 0.5}
metrics: [recall@10, ndcg@5, token_f1]
thresholds: {recall@10: ">= 0.1"}
gates: {ndcg@5: ">= 0.2", error_rate: "<= 0.0"}
baseline: {tolerance: {ndcg@5: 0.01}}
llm:
  type: openai
  base_url: http://127.0.0.1:9/v1
  model: m
  headers: {X-Team: search}
  params: {temperature: 0}
xfail: {q1: known gap}
"""


def handed(*suites, registry: Registry | None = None) -> dict:
    return handed_over(list(suites), registry or Registry())


@pytest.fixture
def suite_path(tmp_path: Path) -> Path:
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "text": "one"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "one", "relevant": {"d1": 1}, "answer": "one"}) + "\n")
    path = (tmp_path / "suite.yaml").resolve()
    path.write_text(SUITE)
    return path


def test_a_handed_suite_is_the_one_the_loader_builds(suite_path: Path) -> None:
    suite = load_suite(suite_path, None)
    assert suite.thresholds and suite.gates and suite.tolerances and suite.xfail and suite.rag
    table = dict(copyreg.dispatch_table)
    got = take(handed(suite), Registry(), suite_path)
    assert got is not None and got is not suite
    # every field, those left out of == included
    for f in dataclasses.fields(suite):
        assert getattr(got, f.name) == getattr(suite, f.name), f.name
    assert got.rag == suite.rag and got.retrievers[1].params == {"b": 0.5}
    # the metrics' components (left out of ==) are the ones the loader built, state included
    for mine, built in zip(got.metrics, suite.metrics, strict=True):
        assert type(mine.component) is type(built.component)
        assert vars(mine.component) == vars(built.component)
    # read-only mappings stay read-only
    assert isinstance(got.rag.llm.endpoint.headers, MappingProxyType)
    assert isinstance(got.metrics[0].params, MappingProxyType)
    # the pickler's table was its own: the interpreter's is as it was
    assert copyreg.dispatch_table == table


def test_a_worker_validates_a_file_that_changed_or_is_elsewhere(
        suite_path: Path, tmp_path: Path) -> None:
    given = handed(load_suite(suite_path, None))
    assert take(given, Registry(), suite_path) is not None
    # the same bytes at another path (another host's checkout, a chdir gateway)
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(suite_path, other / "suite.yaml")
    assert take(given, Registry(), (other / "suite.yaml").resolve()) is None
    # the file edited since the controller read it
    suite_path.write_text(SUITE.replace("k1: 1.2", "k1: 1.5"))
    assert take(given, Registry(), suite_path) is None
    # gone: the loader says so
    suite_path.unlink()
    assert take(given, Registry(), suite_path) is None


def test_what_does_not_pickle_or_load_is_validated_by_the_worker(suite_path: Path) -> None:
    suite = load_suite(suite_path, None)
    # a plugin's closure somewhere in the suite: left out of the hand-over
    odd = dataclasses.replace(suite, document={"made_by": lambda: None})
    assert pack([odd]) == {}
    # a blob this process cannot load, or that is not a suite
    fingerprint = registry_fingerprint(Registry())
    for blob in (b"not a pickle", "text"):
        given = {"registry": fingerprint, "suites": {str(suite_path): blob}}
        assert take(given, Registry(), suite_path) is None
    assert take({}, Registry(), suite_path) is None


class _Odd:
    def __reduce__(self):
        raise ValueError("cannot be copied")


def test_a_suite_whose_parts_fail_to_pickle_in_any_way_is_left_out(suite_path: Path) -> None:
    suite = load_suite(suite_path, None)
    assert pack([dataclasses.replace(suite, document={"odd": _Odd()})]) == {}
    assert str(suite_path) in pack([suite])


def test_a_class_from_a_conftest_is_not_guessed(suite_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # pickle names it conftest.Metric; in a worker, "conftest" may be another folder's
    module = types.ModuleType("conftest")
    metric = type("Metric", (), {"__module__": "conftest"})
    module.Metric = metric
    monkeypatch.setitem(sys.modules, "conftest", module)
    suite = load_suite(suite_path, None)
    given = handed(dataclasses.replace(suite, document={"metric": metric()}))
    assert str(suite_path) in given["suites"]
    assert take(given, Registry(), suite_path) is None


def test_a_worker_whose_registry_differs_validates_the_suite_itself(suite_path: Path) -> None:
    given = handed(load_suite(suite_path, None))
    assert take(given, Registry(), suite_path) is not None
    # a conftest only the worker loaded registers a metric of its own
    worker = Registry()
    with worker.origin("conftest tests/conftest.py"):
        worker.add("metric", "token_f1", "mod:factory")
    assert take(given, worker, suite_path) is None


def test_the_registry_fingerprint_changes_with_what_a_name_resolves_to() -> None:
    plain = registry_fingerprint(Registry())
    assert registry_fingerprint(Registry()) == plain
    registry = Registry()
    with registry.origin("conftest sub/conftest.py"):
        registry.add("metric", "my_metric", "mod:factory")
    assert registry_fingerprint(registry) != plain
    shadowing = Registry()
    with shadowing.origin("conftest sub/conftest.py"):
        shadowing.add("retriever", "bm25", "mod:factory")  # a built-in name, overridden
    assert registry_fingerprint(shadowing) not in (plain, registry_fingerprint(registry))


@pytest.mark.parametrize(("spec", "here"), [
    ("popen", True), ("2*popen", True), ("popen//chdir=elsewhere", True),
    ("popen//python=/opt/other/bin/python", False), ("popen//via=gw0", False),
    ("ssh=host//python=python3", False), ("2*ssh=host", False)])
def test_suites_go_only_to_workers_with_this_interpreter_here(spec: str, here: bool) -> None:
    assert same_python_here(spec) is here
