"""What the plugin computes once per run instead of twice: same values as the longer way."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_ragbench.results.resume import SuiteKeys, settings_digest, settings_hash
from pytest_ragbench.suite.loader import load_suite

EXAMPLES = Path(__file__).resolve().parents[2] / "example_suites"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/suite.yaml")),
                         ids=lambda p: p.parent.name)
def test_case_keys_hash_the_loaded_document_as_the_file_reread(path: Path) -> None:
    suite = load_suite(path, None)
    assert suite.document is not None
    assert settings_digest(suite.document) == settings_hash(path)
    keys = SuiteKeys.of(suite, "s.yaml", "D", "1")
    # A suite built in code has no document: its file is read again, to the same key.
    assert SuiteKeys.of(replace(suite, document=None), "s.yaml", "D", "1") == keys


def test_settings_digest_leaves_out_what_changes_no_record(tmp_path: Path) -> None:
    doc = {"name": "s", "metrics": ["ndcg@10"], "gates": {"ndcg@10": 0.5},
           "retrievers": {"a": {"type": "bm25"}}}
    assert settings_digest(doc) == settings_digest({"name": "s", "metrics": ["ndcg@10"]})
    assert settings_digest(doc) != settings_digest({**doc, "metrics": ["recall@10"]})


def test_git_is_spawned_only_where_it_could_find_a_repository(tmp_path: Path, monkeypatch):
    from pytest_ragbench.session import GitCommitLookup, _may_be_in_git

    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GIT_COMMON_DIR", raising=False)
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    if _may_be_in_git(inner):
        pytest.skip("the temporary folder is inside a git repository")
    lookup = GitCommitLookup(inner)
    assert lookup._proc is None and lookup.result() is None
    (tmp_path / "a" / "HEAD").write_text("ref: refs/heads/main\n")  # a bare repository
    assert _may_be_in_git(inner)
    (tmp_path / "a" / "HEAD").unlink()
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git file
    assert _may_be_in_git(inner)
    (tmp_path / ".git").unlink()
    monkeypatch.setenv("GIT_DIR", str(tmp_path))
    assert _may_be_in_git(inner)


def test_the_history_appends_without_waiting_for_the_disk_at_each_commit(tmp_path: Path):
    from pytest_ragbench.results.history import RunHistory

    doc = {"run": {"id": "r1"}, "suites": {}}
    path = tmp_path / "h.sqlite"
    for run_id in ("r1", "r2"):  # a new file, then an existing one
        with RunHistory(path) as h:
            # 1 = NORMAL: in WAL mode only checkpoints sync; FULL (2) syncs every commit
            assert h.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
            assert h.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            h.append({**doc, "run": {"id": run_id}}, passed=True)
    with RunHistory(path, readonly=True) as h:
        assert [r[0] for r in h.conn.execute("SELECT id FROM runs ORDER BY id")] == ["r1", "r2"]


def _dist(site: Path, name: str, version: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_the_entry_point_scan_finds_what_importlib_metadata_finds(tmp_path: Path,
                                                                 monkeypatch) -> None:
    from importlib.metadata import entry_points

    from pytest_ragbench.registry import GROUPS, Registry, _ragbench_entry_points

    first, second = tmp_path / "first", tmp_path / "second"
    _dist(first, "rb-one", "1.0", "[ragbench.retrievers]\nkw = one:Kw\n[ragbench.metrics]\n"
                                  "nov = one:Nov\n\n[pytest11]\none = one.plugin\n")
    # the same distribution again, later on the path: shadowed, as importlib has it
    _dist(second, "rb-one", "0.9", "[ragbench.retrievers]\nold = one:Old\n")
    _dist(second, "rb-two", "2.0", "[console_scripts]\ntwo = two:main\n\n"
                                   "  [ragbench.pipelines]  \napp = two:App\n")
    _dist(second, "not-rb", "3.0", "[console_scripts]\nragbench.x = x:main\n")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    found = _ragbench_entry_points()
    ours = [(ep.group, ep.name, ep.value) for g in GROUPS.values() for ep in found
            if ep.group == g]
    theirs = [(ep.group, ep.name, ep.value) for g in GROUPS.values()
              for ep in entry_points().select(group=g)]
    assert ours == theirs
    assert ("ragbench.retrievers", "kw", "one:Kw") in ours
    assert ("ragbench.pipelines", "app", "two:App") in ours
    assert all(name != "old" for _, name, _ in ours)
    reg = Registry()
    assert reg.resolve("retriever", "kw").origin == "distribution rb-one 1.0"
    assert reg.resolve("pipeline", "app").origin == "distribution rb-two 2.0"


def test_the_document_keeps_its_value_after_the_dataset_is_loaded(tmp_path: Path) -> None:
    from pytest_ragbench.datasets import load_dataset

    path = tmp_path / "inline.yaml"
    path.write_text(
        "name: inline\n"
        "dataset:\n"
        "  documents:\n"
        "    - {_id: old, text: an old article, timestamp: '2025-12-29T00:00:00Z'}\n"
        "    - {_id: new, text: a new article, timestamp: 1767225600}\n"
        "  items:\n"
        "    - {_id: q1, text: article, relevant: {old: 3, new: 1}, tags: [a]}\n"
        "retrievers: {b: {type: bm25}}\n"
        "metrics:\n"
        "  - ndcg@2\n"
        "  - {name: temporal_ndcg@2, lambda: 0.69, T: 1d, now: '2026-01-01T00:00:00Z'}\n")
    suite = load_suite(path, None)
    load_dataset(suite.dataset)
    assert settings_digest(suite.document) == settings_hash(path)


def test_a_suites_metrics_share_one_entry_point_scan(monkeypatch) -> None:
    import pytest_ragbench.registry as registry

    scans: list[int] = []
    real = registry._ragbench_entry_points
    monkeypatch.setattr(registry, "_ragbench_entry_points", lambda: scans.append(1) or real())
    suite = load_suite(EXAMPLES / "rag" / "suite.yaml", None)
    assert len(suite.metrics) >= 3  # a scan per metric would show here
    assert len(scans) == 1


def test_a_json_suites_schema_key_is_no_setting(tmp_path: Path) -> None:
    # "$schema" is the editor's (as a YAML suite's comment is): the loaded document leaves it
    # out, so the file read again must too, and naming another copy of the schema changes no
    # finished case's record
    doc = {"name": "s", "metrics": ["ndcg@10"], "retrievers": {"bm25": {"type": "bm25"}},
           "dataset": {"documents": [{"id": "d1", "text": "a"}],
                       "items": [{"id": "q1", "query": "a", "relevant": ["d1"]}]}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"$schema": "./ragbench-suite.schema.json", **doc}))
    suite = load_suite(path, None)
    assert settings_digest(suite.document) == settings_hash(path)
    keys = SuiteKeys.of(suite, "s.json", "D", "1")
    assert SuiteKeys.of(replace(suite, document=None), "s.json", "D", "1") == keys
    assert settings_digest({"$schema": "https://example.org/s.json", **doc}) \
        == settings_digest(doc)
