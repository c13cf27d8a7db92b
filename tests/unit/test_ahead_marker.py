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
    the temp folder for good. Gone is when nobody holds the folder's lock (a pid would not
    say so across pid namespaces: a container's live run lost its folder); a folder whose
    lock file is younger than a minute may not be locked yet, and one without a lock file
    (an older version's), a symlink or a file are left alone."""
    import os
    import time

    from pytest_ragbench.crash_blame import DIR_PREFIX, OWNER_LOCK, markers_dir
    from pytest_ragbench.retrievers.cachelock import hold_lock

    def age(folder: Path) -> None:
        old = time.time() - 3600
        os.utime(folder / OWNER_LOCK, (old, old))

    gone, live, young, legacy = (tmp_path / f"{DIR_PREFIX}{name}"
                                 for name in ("gone", "live", "young", "legacy"))
    for folder in (gone, live, young, legacy):
        folder.mkdir()
    for folder in (gone, young):
        (folder / OWNER_LOCK).touch()
    (gone / "gw0.ahead").write_text("s.yaml::q1\n")
    held = hold_lock(live / OWNER_LOCK)  # another run's controller, running
    assert held is not None
    age(gone), age(live)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / f"{DIR_PREFIX}link")
    (tmp_path / f"{DIR_PREFIX}file").write_text("")
    made, lock = markers_dir(str(tmp_path))
    assert made.is_dir() and made.name.startswith(DIR_PREFIX) and made.parent == tmp_path
    assert not gone.exists() and live.is_dir() and young.is_dir() and legacy.is_dir()
    assert (tmp_path / "elsewhere").is_dir() and (tmp_path / f"{DIR_PREFIX}file").is_file()
    # a running controller's folder stays, however old; once it lets go it is gone
    age(made)
    again, again_lock = markers_dir(str(tmp_path))
    assert made.is_dir() and live.is_dir()
    lock.close()
    held.close()
    again_lock.close()
    last, last_lock = markers_dir(str(tmp_path))
    last_lock.close()
    assert not made.exists() and not live.exists() and again.is_dir() and last.is_dir()


def test_without_a_lock_crash_blame_is_off_and_the_run_goes_on(tmp_path: Path,
                                                               monkeypatch) -> None:
    """A temp folder on a file system without locks (NFS mounted nolock): every xdist run
    ended in an INTERNALERROR at its first worker."""
    import tempfile
    from types import SimpleNamespace

    from pytest_ragbench import crash_blame
    from pytest_ragbench.retrievers import cachelock

    def no_locks(path: Path) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(cachelock, "hold_lock", no_locks)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    blame = crash_blame.CrashBlame(SimpleNamespace())  # type: ignore[arg-type]
    node = SimpleNamespace(workerinput={})
    blame.pytest_configure_node(node)
    blame.pytest_configure_node(node)
    assert crash_blame.WORKERINPUT_DIR not in node.workerinput
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    blame.pytest_unconfigure()
