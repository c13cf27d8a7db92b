"""Which files are suite files, and where collection would find them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_ragbench.suite.files import case_matcher, find_suite_files, is_suite_file


def test_find_suite_files_walks_folders_as_collection_does(tmp_path: Path) -> None:
    for rel in ("a.ragbench.yaml", "sub/b.RAGBENCH.yml", "sub/deeper/c.ragbench.json",
                "sub/not-a-suite.yaml", ".hidden/d.ragbench.yaml", "build/e.ragbench.yaml",
                "node_modules/f.ragbench.yaml"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("name: x\n")
    found = find_suite_files([tmp_path, tmp_path / "a.ragbench.yaml"],
                             skip=["build", "node_*"])
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in found] == [
        "a.ragbench.yaml", "sub/b.RAGBENCH.yml", "sub/deeper/c.ragbench.json"]
    # a file named on the command line is taken when it is a suite file, else ignored
    assert find_suite_files([tmp_path / "sub" / "not-a-suite.yaml"]) == []
    assert is_suite_file(Path("x.ragbench.yaml")) and not is_suite_file(Path("x.yaml"))


def test_case_matcher_resolves_each_file_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the xdist controller asks for every id each worker collected: a path resolved per id
    # cost it seconds of CPU on large suites while the run's requests waited for it
    explicit = tmp_path / "suite.yaml"
    explicit.write_text("name: x\n")
    matcher = case_matcher(tmp_path, [explicit])
    resolved: list[Path] = []
    real_resolve = Path.resolve

    def counting(self: Path, strict: bool = False) -> Path:
        resolved.append(self)
        return real_resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", counting)
    ids = [f"suite.yaml::bm25::q{i}" for i in range(500)]
    other = [f"tests/test_x.py::test_{i}" for i in range(500)]
    assert all(matcher(i) for i in ids)
    assert not any(matcher(i) for i in other)
    assert matcher("b.ragbench.yaml::bm25::q1")
    assert not matcher("suite.yaml")  # a file, not an item
    assert len(resolved) == 2  # suite.yaml and tests/test_x.py, once each
