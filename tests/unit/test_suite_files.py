"""Which files are suite files, and where collection would find them."""

from __future__ import annotations

from pathlib import Path

from pytest_ragbench.suite.files import find_suite_files, is_suite_file


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
