"""The published JSON Schema: shipped as a file, equal to the models, accepting every example."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml

from pytest_ragbench.suite.schema import SCHEMA_FILE, suite_json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(ROOT.glob("example_suites/**/*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = suite_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_shipped_file_equals_the_models() -> None:
    shipped = json.loads(files("pytest_ragbench.suite").joinpath(SCHEMA_FILE).read_text("utf-8"))
    # regenerate with: ragbench schema > pytest_ragbench/suite/ragbench-suite.schema.json
    assert shipped == suite_json_schema()


def test_schema_is_json_and_deterministic() -> None:
    assert json.loads(json.dumps(suite_json_schema())) == suite_json_schema()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_suite_is_valid(validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


GOOD = {"dataset": {"corpus": "c.jsonl", "queries": "q.jsonl"},
        "retrievers": {"bm25": {"k1": 0.9}}, "metrics": ["ndcg@10"]}


@pytest.mark.parametrize("change", [
    {"metric": ["mrr@10"]},  # unknown top-level key
    {"dataset": {"corpse": "c.jsonl", "queries": "q.jsonl"}},  # unknown nested key
    {"k": "ten"},
    {"k": 0},
    {"k": 1.5},
    {"metrics": []},
    {"metrics": 3},
    {"retrievers": {"bm25": {"type": 5}}},
    {"llm": {"type": ""}},  # any other name may be a registered LLM type (checked at load)
    {"llm": {"type": "extractive", "threshold": 2}},
    {"llm": {"type": "openai", "model": "m"}},  # base_url missing
    {"cache": "sometimes"},
    {"baseline": {"test": "t-test"}},
    {"record_depth": True},
    {"xfail": {"q1": 5}},
])
def test_unknown_keys_and_wrong_types_are_rejected(validator, change) -> None:
    assert validator.is_valid(GOOD), list(validator.iter_errors(GOOD))
    assert list(validator.iter_errors({**GOOD, **change}))


def test_a_json_suite_may_name_its_json_schema(validator) -> None:
    assert validator.is_valid({"$schema": "ragbench-suite.schema.json", **GOOD})
    assert not validator.is_valid({"$schema": 5, **GOOD})


def test_shorthands_are_accepted(validator) -> None:
    for change in ({"dataset": "beir/nfcorpus"}, {"metrics": "ndcg@10, recall@100"},
                   {"retrievers": ["bm25", {"name": "b2", "type": "bm25"}]},
                   {"cache": False}, {"cache": "read-only"}, {"xfail": ["q1", 7]},
                   {"gates": ["ndcg@10 >= 0.5"]}, {"gates": {"ndcg@10": [">= 0.5", 0.4]}},
                   {"llm": {"base_url": "http://x/v1", "model": "m"}},
                   {"llm": {"type": "my_llm", "temperature": 0}},
                   {"pipelines": {"app": {"type": "recorded", "path": "out.jsonl"}}}):
        assert validator.is_valid({**GOOD, **change}), change


def test_a_criteria_metric_is_one_metric_entry(validator) -> None:
    # A criteria entry also has a 'name', as an open metric entry does: the schema's oneOf
    # matched both and refused every criteria metric, where the plugin runs it.
    criteria = {"name": "helpfulness", "type": "criteria", "criteria": "Is it helpful?"}
    assert validator.is_valid({**GOOD, "metrics": ["ndcg@10", criteria]})
    assert validator.is_valid({**GOOD, "metrics": [{"name": "novelty@10", "weight": 2}]})
    assert not validator.is_valid({**GOOD, "metrics": [{**criteria, "scale": [1]}]})
    assert not validator.is_valid({**GOOD, "metrics": [{"name": "x", "type": "criteria"}]})


def test_ids_yaml_reads_as_decimals_are_ids(validator) -> None:
    # `query_ids: [1.10]` and `xfail: [2.5]` run as the ids written (docs/datasets.md); an
    # editor read the schema's string-or-integer and flagged them.
    dataset = {**GOOD["dataset"], "query_ids": [1.1, 7, "q1"]}
    assert validator.is_valid({**GOOD, "dataset": dataset, "xfail": [2.5, 3]})
    assert not validator.is_valid({**GOOD, "xfail": [[2.5]]})


def test_yaml_language_server_line_in_readme_points_at_the_schema() -> None:
    section = (ROOT / "README.md").read_text().split("## A suite in 30 seconds", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "# yaml-language-server: $schema=" in section
    assert f"ragbench schema > {SCHEMA_FILE}" in section


def test_cache_modes_match_the_cache() -> None:
    from pytest_ragbench.llm.cache import CACHE_MODES
    from pytest_ragbench.suite import schema

    assert schema.CACHE_MODES == CACHE_MODES


def test_schema_module_imports_neither_yaml_nor_the_loader() -> None:
    # `ragbench schema` should stay cheap: the schema needs pydantic only
    code = textwrap.dedent("""
        import sys
        from pytest_ragbench.suite.schema import suite_json_schema
        suite_json_schema()
        heavy = ("yaml", "numpy", "sqlite3", "pytest_ragbench.suite.loader")
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_unknown_documents_values_match_the_datasets() -> None:
    from pytest_ragbench.datasets.core import UNKNOWN_DOCUMENTS
    from pytest_ragbench.suite import schema

    assert schema.UNKNOWN_DOCUMENTS == UNKNOWN_DOCUMENTS
    described = schema.SuiteModel.model_json_schema()["$defs"]["DatasetModel"]["properties"]
    assert described["unknown_documents"]["enum"] == list(UNKNOWN_DOCUMENTS)
