"""Where workers of other folders and hosts find the controller's suites (pytest_ragbench.hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_ragbench.datasets import DatasetSpec, load_dataset
from pytest_ragbench.hosts import (
    ControllerPaths,
    HostPathError,
    HostPaths,
    budget_bind,
    candidate_roots,
    dataset_difference,
    gateway_count,
    is_remote_spec,
    moves_workers,
    parse_address,
    resolve_host,
    separate_suite_args,
    unsendable_args,
)

pytestmark = pytest.mark.unit


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("name: s\n")
    return path


def test_controller_paths_are_rootdir_relative_and_survive_workerinput(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    paths = ControllerPaths.of(root, root / "sub", [root / "suites" / "a.yaml",
                                                     tmp_path / "other" / "b.yaml"])
    assert paths.suites == ("suites/a.yaml", str(tmp_path / "other" / "b.yaml"))
    assert ControllerPaths.from_input(paths.to_input()) == paths


def test_candidate_roots_in_order_without_duplicates(tmp_path: Path) -> None:
    ctrl, gw = tmp_path / "proj", tmp_path / "gw"
    assert candidate_roots(ctrl, gw, gw) == [gw, gw / "proj", ctrl]
    assert candidate_roots(ctrl, ctrl, ctrl) == [ctrl, ctrl / "proj"]


def test_the_worker_rootdir_wins_then_the_rsync_layout_then_the_controller_path(
        tmp_path: Path) -> None:
    ctrl, gw = tmp_path / "proj", tmp_path / "gw"
    _touch(ctrl / "suites" / "a.yaml")
    given = ControllerPaths.of(ctrl, ctrl, [ctrl / "suites" / "a.yaml"])

    host = resolve_host(given, gw, gw)  # same machine: the controller's own files
    assert host.root == ctrl and host.suites() == {ctrl / "suites" / "a.yaml": "suites/a.yaml"}

    _touch(gw / "proj" / "suites" / "a.yaml")  # what `--rsyncdir proj` copies into GW
    host = resolve_host(given, gw, gw)
    assert host.root == gw / "proj"
    assert host.suites() == {gw / "proj" / "suites" / "a.yaml": "suites/a.yaml"}

    _touch(gw / "suites" / "a.yaml")  # GW is itself a copy of the project (its rootdir)
    assert resolve_host(given, gw, gw).root == gw


def test_a_root_must_hold_every_suite(tmp_path: Path) -> None:
    ctrl, gw = tmp_path / "proj", tmp_path / "gw"
    for rel in ("a.yaml", "b.yaml"):
        _touch(ctrl / rel)
    _touch(gw / "a.yaml")  # half a project in GW: the controller's path holds both
    given = ControllerPaths.of(ctrl, ctrl, [ctrl / "a.yaml", ctrl / "b.yaml"])
    assert resolve_host(given, gw, gw).root == ctrl


def test_a_copy_that_differs_from_the_controllers_suite_is_skipped_or_named(
        tmp_path: Path) -> None:
    """A stale copy ran its own metrics and queries: the controller aggregated them by its own
    suite (its metric all NaN, its gates unchecked) and the run passed."""
    ctrl, gw = tmp_path / "proj", tmp_path / "gw"
    _touch(ctrl / "suites" / "a.yaml")
    given = ControllerPaths.of(ctrl, ctrl, [ctrl / "suites" / "a.yaml"])
    assert ControllerPaths.from_input(given.to_input()) == given
    (gw / "proj" / "suites").mkdir(parents=True)
    (gw / "proj" / "suites" / "a.yaml").write_text("name: s\nmetrics: [recall@10]\n")
    # the controller's own files on this host: they, not the stale copy
    assert resolve_host(given, gw, gw).root == ctrl
    (ctrl / "suites" / "a.yaml").unlink()  # another host: only the copy
    with pytest.raises(HostPathError) as info:
        resolve_host(given, gw, gw)
    assert str(info.value).startswith(
        f"suite file suites/a.yaml on this worker's host ({gw / 'proj' / 'suites' / 'a.yaml'}) "
        f"differs from the controller's ({ctrl / 'suites' / 'a.yaml'})")
    # a controller that sent no digests (an older version) is taken at its word
    old = ControllerPaths(given.rootdir, given.cwd, given.suites)
    assert resolve_host(ControllerPaths.from_input(
        {k: v for k, v in old.to_input().items() if k != "digests"}), gw, gw).root == gw / "proj"


def test_a_suite_outside_the_rootdir_must_be_the_controllers_too(tmp_path: Path) -> None:
    ctrl, gw, outside = tmp_path / "proj", tmp_path / "gw", tmp_path / "shared" / "s.yaml"
    _touch(outside)
    given = ControllerPaths.of(ctrl, ctrl, [outside])
    outside.write_text("name: edited\n")
    with pytest.raises(HostPathError, match=r"outside the controller's rootdir.*differs"):
        resolve_host(given, gw, gw)


def test_paths_move_with_the_rootdir(tmp_path: Path) -> None:
    ctrl, gw = tmp_path / "proj", tmp_path / "gw"
    _touch(gw / "proj" / "s.yaml")
    host = resolve_host(ControllerPaths.of(ctrl, ctrl / "sub", [ctrl / "s.yaml"]), gw, gw)
    assert host.cwd == gw / "proj" / "sub"
    assert host.map(str(ctrl / "x" / "cache.sqlite")) == gw / "proj" / "x" / "cache.sqlite"
    assert host.map("/data/corpus.jsonl") == Path("/data/corpus.jsonl")  # outside: as is
    assert host.map("rel/file") == gw / "proj" / "rel" / "file"


def test_a_missing_suite_names_the_file_the_rootdir_and_every_place_tried(
        tmp_path: Path) -> None:
    ctrl, gw = tmp_path / "proj", tmp_path / "gw"
    given = ControllerPaths.of(ctrl, ctrl, [ctrl / "suites" / "a.yaml"])
    with pytest.raises(HostPathError) as info:
        resolve_host(given, gw, gw)
    message = str(info.value)
    assert "suite file suites/a.yaml" in message and str(ctrl) in message
    for tried in (gw / "suites" / "a.yaml", gw / "proj" / "suites" / "a.yaml",
                  ctrl / "suites" / "a.yaml"):
        assert str(tried) in message
    assert "docs/many-hosts.md" in message


def test_a_suite_outside_the_rootdir_needs_the_same_absolute_path(tmp_path: Path) -> None:
    ctrl, gw, outside = tmp_path / "proj", tmp_path / "gw", tmp_path / "shared" / "s.yaml"
    given = ControllerPaths.of(ctrl, ctrl, [outside])
    with pytest.raises(HostPathError, match="same absolute path on every host"):
        resolve_host(given, gw, gw)
    _touch(outside)
    # found where it is, named by its path relative to the controller's rootdir (pytest
    # would name it "", as every other file argument outside the rootdir)
    assert resolve_host(given, gw, gw).suites() == {outside: "../shared/s.yaml"}


@pytest.mark.parametrize(("spec", "remote"), [
    ("popen", False), ("2*popen//chdir=/tmp/gw", False), ("popen//python=python3.12", False),
    ("ssh=build1//python=/opt/venv/bin/python", True), ("4*ssh=user@host", True),
    ("socket=10.0.0.5:8888", True),
])
def test_remote_specs(spec: str, remote: bool) -> None:
    assert is_remote_spec(spec) is remote


def test_gateway_count() -> None:
    assert gateway_count(["2*popen//chdir=/x", "ssh=h", "3*ssh=g//python=p"]) == 6
    assert gateway_count([]) == 0


@pytest.mark.parametrize(("value", "expected"), [
    ("10.0.0.5", ("10.0.0.5", 0)), ("ctrl.example.org:7711", ("ctrl.example.org", 7711)),
    ("[::1]:7711", ("::1", 7711)), ("[fe80::1]", ("fe80::1", 0)), (" host:0 ", ("host", 0)),
])
def test_parse_address(value: str, expected: tuple[str, int]) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize("value", ["", ":7711", "host:port", "host:70000", "[::1", "[::1]x"])
def test_parse_address_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="expected HOST, HOST:PORT or \\[IPv6\\]:PORT"):
        parse_address(value)


def test_budget_bind() -> None:
    assert budget_bind(None, ["2*popen//chdir=/x"]) == ("127.0.0.1", 0)
    assert budget_bind(None, ["popen", "ssh=h"]) == ("0.0.0.0", 0)
    assert budget_bind("10.1.2.3:9000", ["ssh=h"]) == ("10.1.2.3", 9000)


def test_budget_bind_follows_via_gateways_to_their_proxy() -> None:
    """``--px ssh=h//id=hop --tx 4*popen//via=hop`` puts four workers on h: the coordinator
    listened on 127.0.0.1 (every --tx spec reads 'popen'), which they cannot reach."""
    assert budget_bind(None, ["4*popen//via=hop"], ["ssh=h//id=hop"]) == ("0.0.0.0", 0)
    assert budget_bind(None, ["2*popen//via=hop"], ["id=hop//execmodel=thread//popen"]) == (
        "127.0.0.1", 0)
    assert budget_bind(None, ["popen//via=nowhere"], []) == ("0.0.0.0", 0)


def test_moves_workers() -> None:
    assert not moves_workers(["popen", "2*popen"]) and not moves_workers([])
    assert moves_workers(["popen", "2*popen//chdir=/tmp/gw"])
    assert moves_workers(["ssh=h//python=p"])


def test_separate_suite_args() -> None:
    args = ["--ragbench", "a.yaml", "--ragbench=b.yaml", "-k", "x", "--ragbench-out", "o"]
    assert separate_suite_args(args) == ["a.yaml"]


def test_unsendable_args_are_existing_paths_outside_the_rsync_roots(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text("{}")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "t.py").write_text("")
    args = ["--ragbench-baseline", "base.json", "-k", "x", "missing.json",
            str(tmp_path / "root" / "t.py") + "::test", str(tmp_path / "base.json"),
            "--junitxml=base.json"]
    assert unsendable_args(args, tmp_path, [tmp_path / "root"]) == [
        ("--ragbench-baseline", "base.json"),
        (str(tmp_path / "root" / "t.py") + "::test", str(tmp_path / "base.json"))]


def _beir(root: Path, docs: str, queries: str, qrels: str) -> DatasetSpec:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(docs)
    (root / "queries.jsonl").write_text(queries)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return DatasetSpec(name="d", source=root / "s.yaml", path=root, split="test")


def test_a_dataset_part_that_differs_from_the_controllers_is_named(tmp_path: Path) -> None:
    """A host's corpus, queries or qrels not the controller's: its cases were scored against
    its own copy and mixed into the controller's run. The part that differs is named where
    the worker read it."""
    docs = '{"_id": "a", "text": "alpha"}\n{"_id": "b", "text": "beta"}\n'
    queries = '{"_id": "q1", "text": "alpha?"}\n{"_id": "q2", "text": "beta?"}\n'
    qrels = "query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tb\t1\n"
    ctrl = load_dataset(_beir(tmp_path / "ctrl", docs, queries, qrels))
    host = HostPaths(ControllerPaths(str(tmp_path), str(tmp_path), ("s.yaml",), ("",),
                                     (ctrl.digests(),)), tmp_path / "w")
    suite = tmp_path / "w" / "s.yaml"

    def differs(d: str, q: str, r: str) -> str | None:
        spec = _beir(tmp_path / "w", d, q, r)
        return dataset_difference(host, suite, load_dataset(spec), spec)

    w = tmp_path / "w"
    assert differs(docs, queries, qrels) is None
    assert differs(docs.replace("beta", "gamma"), queries, qrels).startswith(
        f"the corpus file {w / 'corpus.jsonl'} on this worker's host differs from the "
        f"controller's (dataset 'd' of suite {suite})")
    assert differs(docs, queries.replace("beta?", "b?"), qrels).startswith(
        f"the queries file {w / 'queries.jsonl'} on this worker's host differs")
    assert differs(docs, queries, qrels.replace("q2\tb", "q2\ta")).startswith(
        f"the qrels file {w / 'qrels' / 'test.tsv'} on this worker's host differs")
    # a query the host's qrels leave out is a different selection: the qrels are named
    assert differs(docs, queries, qrels.replace("q2\tb\t1\n", "")).startswith(
        "the qrels file")
    # a controller that read no dataset (its workers share its folder) checks nothing
    bare = HostPaths(ControllerPaths(str(tmp_path), str(tmp_path), ("s.yaml",)), w)
    spec = _beir(w, docs.replace("beta", "gamma"), queries, qrels)
    assert dataset_difference(bare, suite, load_dataset(spec), spec) is None
