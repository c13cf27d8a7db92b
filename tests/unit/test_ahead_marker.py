"""The file in which an xdist worker says which queries its look-ahead is in (crash blame)."""

from __future__ import annotations

from pathlib import Path

from pytest_ragbench.execution.ahead import AheadMarker, read_marker


def test_the_marker_holds_the_queries_while_the_look_ahead_is_in_them(tmp_path: Path) -> None:
    marker = AheadMarker(tmp_path / "gw0.ahead", skip=["s.yaml::q9"])
    with marker.running("s.yaml", ["q1", "q2"]):
        with marker.running("s.yaml", ["q3"]):
            assert read_marker(tmp_path / "gw0.ahead") == ["s.yaml::q1", "s.yaml::q2",
                                                           "s.yaml::q3"]
        assert read_marker(tmp_path / "gw0.ahead") == ["s.yaml::q1", "s.yaml::q2"]
    assert read_marker(tmp_path / "gw0.ahead") == []
    assert not marker.allows("s.yaml", "q9") and marker.allows("s.yaml", "q1")
    marker.close()


def test_a_folder_that_is_not_there_is_tried_once(tmp_path: Path, monkeypatch) -> None:
    """A worker on another host has no such folder: it used to try to open the file at every
    case of its look-ahead."""
    import os

    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a: opened.append(path) or real_open(path, *a))
    marker = AheadMarker(tmp_path / "nowhere" / "gw0.ahead")
    for case in ("q1", "q2", "q3"):
        with marker.running("s.yaml", [case]):
            pass
    assert len(opened) == 1


def test_a_controller_removes_the_markers_folders_of_controllers_that_are_gone(
        tmp_path: Path) -> None:
    """A controller killed with SIGKILL never removes its folder: every such run left one in
    the temp folder for good."""
    import os
    import subprocess
    import sys

    from pytest_ragbench.crash_blame import DIR_PREFIX, markers_dir

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f"{DIR_PREFIX}{gone.stdout.strip()}-abc"
    live = tmp_path / f"{DIR_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{DIR_PREFIX}notapid"
    for folder in (dead, live, other):
        folder.mkdir()
    (dead / "gw0.ahead").write_text("s.yaml::q1\n")
    made = markers_dir(str(tmp_path))
    assert made.is_dir() and made.name.startswith(f"{DIR_PREFIX}{os.getpid()}-")
    assert not dead.exists() and live.is_dir() and other.is_dir()
