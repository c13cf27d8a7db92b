"""Bad suite files (bytes, encodings, YAML structure, numbers) get one SuiteError, fast."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from conftest import DOCS, QUERIES, write_jsonl
from conftest import LOADER_SUITE as GOOD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.errors import SuiteError
from pytest_ragbench.registry import Registry
from pytest_ragbench.suite.loader import MAX_DEPTH, load_suite, parse_document


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    write_jsonl(tmp_path / "queries.jsonl", QUERIES)
    return tmp_path


def message(path: Path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path, Registry(use_entry_points=False).names("retriever"))
    return str(info.value)


def write(folder: Path, data: str | bytes) -> Path:
    path = folder / "suite.yaml"
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def test_utf8_with_bom_is_fine(folder):
    load_suite(write(folder, b"\xef\xbb\xbf" + GOOD.encode()), None)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_are_named(folder, encoding):
    text = message(write(folder, GOOD.encode(encoding)))
    assert text.startswith(str(folder / "suite.yaml"))
    assert "save it as UTF-8" in text
    assert "UTF-16" in text or "UTF-32" in text or "NUL bytes" in text


def test_non_utf8_byte_names_line_and_column(folder):
    raw = GOOD.replace("name: e", "name: caf\xe9").encode("latin-1")
    assert message(write(folder, raw)) == (
        f"{folder / 'suite.yaml'}:1: not UTF-8: byte 0xe9 at column 10 cannot be decoded; "
        "save the file as UTF-8")


def test_directory_given_as_suite_file(folder):
    (folder / "dir.yaml").mkdir()
    assert message(folder / "dir.yaml").endswith(
        "dir.yaml: is a directory; expected a suite file (.yaml, .yml or .json)")


def test_missing_file(folder):
    assert message(folder / "nope.yaml").endswith("nope.yaml: suite file not found")


def test_symlink_loop(folder):
    a, b = folder / "a.yaml", folder / "b.yaml"
    a.symlink_to(b)
    b.symlink_to(a)
    assert message(a).endswith("a.yaml: cannot read the suite file: symbolic link loop")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(folder):
    path = write(folder, GOOD)
    path.chmod(0)
    try:
        assert message(path).endswith("suite.yaml: cannot read the suite file: Permission denied")
    finally:
        path.chmod(0o644)


def test_read_error_eio(folder, monkeypatch):
    path = write(folder, GOOD)

    def broken(self: Path) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", broken)
    assert message(path).endswith("suite.yaml: cannot read the suite file: Input/output error")


def test_alias_bomb_fails_fast(folder):
    bomb = "l0: &l0 lol\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 11))
    assert len(bomb) < 700
    start = time.perf_counter()
    text = message(write(folder, GOOD + bomb))
    assert time.perf_counter() - start < 5
    assert "expands to more than" in text and "suite.yaml:" in text


def test_recursive_alias(folder):
    text = message(write(folder, GOOD + "xfail: &a {q1: *a}\n"))
    assert "refers to a node that contains it" in text


def test_text_that_is_not_unicode_scalars_is_a_suite_error():
    # files decode strictly, but text handed to parse_document may hold a lone surrogate,
    # which LibYAML (reading UTF-8) cannot take
    with pytest.raises(SuiteError, match="unacceptable character #xd800"):
        parse_document("name: \ud800\n", Path("s.yaml"))


def test_json_escapes_of_characters_outside_the_bmp_read_as_before():
    # json.dumps writes them as surrogate-pair escapes, which LibYAML refuses
    text = json.dumps({"name": "caf\u00e9 \U0001F600", "metrics": ["ndcg@10"]})
    assert "\\ud83d" in text
    data, _ = parse_document(text, Path("s.json"))
    assert data["name"] == "caf\u00e9 \ud83d\ude00" and data["metrics"] == ["ndcg@10"]


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting(folder, opening):
    closing = "]" if opening == "[" else "}"
    text = message(write(folder, GOOD + "description: " + opening * 5000 + closing * 5000 + "\n"))
    assert f"nested more than {MAX_DEPTH} levels deep" in text
    assert ":8:" in text


def test_a_json_suite_may_name_its_json_schema(folder):
    """Editors check a JSON file against the schema its ``$schema`` names (a YAML suite names
    it in a comment); the suite is the same with it, and it must be a URL or a path."""
    suite = yaml.safe_load(GOOD)
    plain = folder / "plain.json"
    plain.write_text(json.dumps(suite), encoding="utf-8")
    named = folder / "named.json"
    named.write_text(json.dumps({"$schema": "ragbench-suite.schema.json", **suite}, indent=1),
                     encoding="utf-8")
    known = Registry(use_entry_points=False).names("retriever")
    assert load_suite(named, known).metrics == load_suite(plain, known).metrics
    named.write_text(json.dumps({**suite, "$schema": 5}, indent=1), encoding="utf-8")
    line = named.read_text().splitlines().index(' "$schema": 5') + 1
    with pytest.raises(SuiteError) as info:
        load_suite(named, known)
    assert str(info.value) == (f"{named}:{line}: $schema: expected the URL or path of the "
                               "suite's JSON Schema, got number")


def test_duplicate_keys_name_both_lines(folder):
    text = message(write(folder, GOOD + "k: 10\nseed: 1\nk: 20\n"))
    assert text == (f"{folder / 'suite.yaml'}:10: k: duplicate key 'k' (first at line 8, "
                    "again at line 10)")


def test_duplicate_nested_keys(folder):
    text = message(write(folder, GOOD.replace("bm25: {}", "bm25: {k1: 1, k1: 2}")))
    assert "retrievers.bm25.k1: duplicate key 'k1'" in text


@pytest.mark.parametrize(("change", "expected"), [
    ("k: .inf\n", "k: expected a positive integer, got inf"),
    ("k: -3\n", "k: must be a positive integer, got -3"),
    ("record_depth: 0\n", "record_depth: must be a positive integer, got 0"),
    ("seed: 1.5\n", "seed: expected an integer, got 1.5"),
    ("baseline: {alpha: .nan}\n", "baseline.alpha: expected a number strictly between 0 and 1"),
    ("baseline: {alpha: 1.5}\n", "baseline.alpha: expected a number strictly between 0 and 1"),
    ("llm: {type: extractive}\nmax_cost: .inf\n", "max_cost: expected a finite number >= 0"),
    ("llm: {type: extractive}\nmax_cost: -1\n", "max_cost: expected a finite number >= 0"),
    ("llm: {type: extractive, threshold: .nan}\n", "llm.threshold: expected a share in (0, 1]"),
])
def test_non_finite_and_out_of_range_numbers(folder, change, expected):
    assert expected in message(write(folder, GOOD + change))


def test_component_parameters_are_checked_against_the_factory(folder):
    # the loader leaves parameters to the registry; the plugin runs this check at collection
    registry = Registry(use_entry_points=False)
    suite = load_suite(write(folder, GOOD.replace("bm25: {}", "bm25: {k1: .inf}")), None)
    (spec,) = suite.retrievers
    with pytest.raises(Exception) as info:
        registry.check("retriever", spec.type, spec.params)
    assert str(info.value) == "retriever 'bm25' parameter k1: expected a finite number, got inf"


def test_metric_parameters_go_through_the_same_check(folder):
    text = message(write(folder, GOOD.replace(
        "metrics: [ndcg@10, recall@10]", "metrics: [{name: temporal_ndcg@10, lambda: .inf}]")))
    # at the parameter's own key and line
    assert text.endswith("suite.yaml:7: metrics[0].lambda: expected a finite number, got inf")


def test_an_unknown_key_hides_no_other_problem_of_the_schema(folder):
    """An unknown key ended the validation of its mapping: the next unknown key, a bad
    case_timeout, a bad k and an unknown dataset key beside it showed a run later each."""
    text = message(write(folder, GOOD.replace("bm25: {}", "bm25: {case_timeout: soon}")
                         .replace("  queries: queries.jsonl", "  queries: queries.jsonl\n"
                                                              "  split: 3\n  qrel: q.tsv")
                         + "seeed: 3\nk: many\nkk: 4\n"))
    lines = [line.partition("suite.yaml:")[2] for line in text.splitlines()]
    assert lines == [
        "5: dataset.split: expected a non-empty string, got 3",
        "6: dataset.qrel: unknown key 'qrel' (did you mean 'qrels'?) (expected one of: "
        "answer_field, corpus, documents, hf, ir_datasets, items, max_queries, name, path, "
        "qrels, queries, query_ids, split, unknown_documents)",
        "8: retrievers.bm25.case_timeout: expected a number, got 'soon'",
        "10: seeed: unknown key 'seeed' (did you mean 'seed'?) (expected one of: baseline, "
        "cache, dataset, description, embedder, gates, generation, judge, k, llm, max_cost, "
        "metrics, name, pipelines, prices, record_depth, retrievers, runs, seed, thresholds, "
        "xfail)",
        "11: k: expected a positive integer, got 'many'",
        "12: kk: unknown key 'kk' (did you mean 'k'?) (expected one of: baseline, cache, "
        "dataset, description, embedder, gates, generation, judge, k, llm, max_cost, metrics, "
        "name, pipelines, prices, record_depth, retrievers, runs, seed, thresholds, xfail)",
    ], text


# -- the parser never raises anything but SuiteError ------------------------------------------

yaml_text = st.text(alphabet=st.sampled_from(list("ab:- \n[]{},&*!|>'\"#%@`?0.\t")),
                    max_size=80)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_text)
def test_parse_document_only_raises_suite_errors(text: str) -> None:
    try:
        parse_document(text, Path("x.yaml"))
    except SuiteError as exc:
        assert str(exc).startswith("x.yaml")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.sampled_from(["[", "{k: "]))
def test_any_nesting_depth_is_a_message_or_a_document(depth: int, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    text = "a: " + opening * depth + closing * depth
    try:
        data, _ = parse_document(text, Path("x.yaml"))
    except SuiteError as exc:
        assert depth >= MAX_DEPTH and "nested more than" in str(exc)
    else:
        assert depth < MAX_DEPTH and isinstance(data, dict)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_are_a_message_or_a_suite(tmp_path_factory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "s.yaml"
    path.write_bytes(raw)
    with pytest.raises(SuiteError):  # no bytes of this size make a complete suite
        load_suite(path, None)


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "example_suites").glob("*/suite.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_example_suite_loads(path: Path) -> None:
    try:
        suite = load_suite(path, Registry(use_entry_points=False).names("retriever"))
    except SuiteError as exc:
        if "dataset folder not found" in str(exc):
            pytest.skip("the shared datasets folder is not beside this checkout")
        raise
    assert suite.metrics and suite.systems


# -- any document is a Suite or one SuiteError, never another exception ------------------------

TOP_KEYS = ["name", "dataset", "retrievers", "metrics", "k", "thresholds", "gates", "baseline",
            "seed", "record_depth", "xfail", "llm", "judge", "generation", "cache", "prices",
            "max_cost", "runs", "corpus", "queries", "path", "split", "type", "bm25", "name",
            "ndcg@10", "tolerance", "alpha", "template", "contexts", "mode"]
scalars = (st.none() | st.booleans() | st.integers(-5, 2000) | st.floats(allow_nan=True)
           | st.sampled_from(["bm25", "ndcg@10", "recall@5", ">= 0.5", "5%", "corpus.jsonl",
                              "queries.jsonl", "extractive", "same", "off", "{{ question }",
                              "", "q1"])
           | st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(TOP_KEYS) | st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)
# At the top level, only the suite's own keys: with every name of TOP_KEYS there, about three
# examples in four carried a key that is no top-level key (corpus, path, alpha...) and stopped
# at the first check ("unknown key"), which tests of their own cover. Those names still appear
# at every nested level.
SUITE_KEYS = ["name", "k", "thresholds", "gates", "baseline", "seed", "record_depth", "xfail",
              "llm", "judge", "generation", "cache", "prices", "max_cost", "runs"]
base = st.fixed_dictionaries({
    "dataset": st.just({"corpus": "corpus.jsonl", "queries": "queries.jsonl"}) | documents,
    "retrievers": st.just({"bm25": {}}) | documents,
    "metrics": st.just(["ndcg@10"]) | documents,
}, optional={key: documents for key in SUITE_KEYS})


def test_the_generated_top_level_keys_are_suite_keys() -> None:
    from pytest_ragbench.suite.schema import SuiteModel

    assert set(SUITE_KEYS) <= set(SuiteModel.model_fields)
    assert set(SUITE_KEYS) <= set(TOP_KEYS)


# 100 examples: drawing these nested documents is most of this test's time.
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(document=base)
def test_any_document_is_a_suite_or_one_suite_error(folder: Path, document: dict) -> None:
    import json

    path = folder / "suite.yaml"
    path.write_text(json.dumps(document), encoding="utf-8")
    try:
        load_suite(path, Registry(use_entry_points=False).names("retriever"))
    except SuiteError as exc:
        assert str(exc).startswith(str(path))


def test_an_entry_the_schema_refused_is_not_read_as_a_component(folder: Path) -> None:
    """The components the schema accepts are checked beside its problems; one it refused
    under a key pydantic names otherwise (a character outside the BMP, which JSON writes as
    a surrogate pair) was read as a retriever, an AttributeError instead of the error."""
    path = folder / "suite.yaml"
    path.write_text(json.dumps({
        "dataset": {"corpus": "corpus.jsonl", "queries": "queries.jsonl"},
        "retrievers": {"\U00010000": False, "bm25": {}}, "metrics": ["ndcg@10"]}))
    text = message(path)
    assert text.startswith(f"{path}:1: retrievers.") and "expected a mapping" in text, text


def test_dataset_paths_that_loop_or_are_the_wrong_kind_name_the_entry(tmp_path: Path) -> None:
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain.txt").write_text("x")
    cases = {
        "corpus: loop1\n  queries: q.jsonl": ("dataset.corpus", "symlink loop"),
        "corpus: folder\n  queries: q.jsonl": ("dataset.corpus", "is a directory (expected a"),
        "path: plain.txt": ("dataset.path", "is a file (expected a BEIR folder"),
    }
    for dataset, (key, text) in cases.items():
        suite = tmp_path / "suite.yaml"
        suite.write_text(f"name: x\ndataset:\n  {dataset}\nretrievers: {{bm25: {{}}}}\n"
                         "metrics: [ndcg@10]\n")
        with pytest.raises(SuiteError) as exc:
            load_suite(suite, None)
        assert exc.value.key == key and exc.value.line == 3, str(exc.value)
        assert text in str(exc.value)


def test_dataset_paths_under_the_home_folder(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # '~/data/nfcorpus' was looked for under the suite's folder, where a run retriever's
    # path, an embedder's and the hf entries expand it
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    write_jsonl(home / "data" / "corpus.jsonl", DOCS)
    write_jsonl(home / "data" / "queries.jsonl", QUERIES)
    (home / "data" / "qrels.tsv").write_text("q1\td1\t1\n")
    monkeypatch.setenv("HOME", str(home))
    suite = tmp_path / "suites" / "suite.yaml"
    suite.parent.mkdir()
    for dataset in ("~/data", "{path: ~/data, qrels: ~/data/qrels.tsv}",
                    "{corpus: ~/data/corpus.jsonl, queries: ~/data/queries.jsonl}"):
        suite.write_text(f"name: x\ndataset: {dataset}\nretrievers: {{bm25: {{}}}}\n"
                         "metrics: [ndcg@10]\n")
        spec = load_suite(suite, None).dataset
        assert (spec.path or spec.corpus.parent) == home / "data"


@pytest.mark.parametrize(("line", "expected"), [
    ("k: 010\n", ":8: k: 010 is the octal number 8 in YAML (a leading zero), not 10: write 8, "
                 "or 10 without the leading zero"),
    ("record_depth: -0_30\n", ":8: record_depth: -0_30 is the octal number -24 in YAML"),
    ("k: 1:30\n", ":8: k: 1:30 is a base-60 number in YAML (its colons): write the number you "
                  "mean, or quote it for text"),
    ("thresholds: {ndcg@10: 0:30.5}\n", ":8: thresholds.ndcg@10: 0:30.5 is a base-60 number"),
])
def test_a_number_yaml_reads_otherwise_than_json_is_named(folder, loader, line, expected):
    # YAML 1.1 (PyYAML) reads these as 8, -24, 90 and 30.5 where JSON and YAML 1.2 read 10
    # or text; the suite would have run with a k no one wrote
    path = write(folder, GOOD + line)
    with pytest.raises(SuiteError) as info:
        loader.load_suite(path, Registry(use_entry_points=False).names("retriever"))
    assert str(info.value).startswith(f"{path}{expected}")


@pytest.mark.parametrize(("line", "key", "value"), [
    ("record_depth: 007\n", "record_depth", 7), ("seed: 0x1F\n", "seed", 31),
    ("seed: 1_000\n", "seed", 1000), ("seed: 00\n", "seed", 0), ("seed: -0\n", "seed", 0)])
def test_numbers_read_alike_by_yaml_and_json_load_as_before(folder, loader, line, key, value):
    # 007 is 7 either way
    path = write(folder, GOOD + line)
    suite = loader.load_suite(path, Registry(use_entry_points=False).names("retriever"))
    assert getattr(suite, key) == value
