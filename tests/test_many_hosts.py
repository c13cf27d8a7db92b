"""A suite run through xdist gateways whose working directory is not the controller's.

One inner run of two ``popen//chdir=GW`` workers, the second started through a ``--px``
proxy (they share one host and one folder, as the workers of one remote host do), is
compared with a serial run of the same suite: the same metrics bit for bit, every output on
the controller's side, nothing in ``GW`` but what xdist copies there and the per-host index
cache, one BM25 index build for the host, and one run budget for both workers. The ssh test
runs the same suite through a real sshd on 127.0.0.1.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_INI, DOCS, OVERLAP_RETRIEVER, QUERIES, error_sections, write_jsonl

from pytest_ragbench.llm.testing import CHAT_PATH, FakeOpenAIServer

N_QUERIES = 8

# Loaded on the workers too (it sits next to the suite): each worker reports where it ran and
# how it got its BM25 index; the controller prints what came back.
CONFTEST = '''
import json, os
import pytest

def pytest_sessionfinish(session):
    out = getattr(session.config, "workeroutput", None)
    if out is None:
        return
    from pytest_ragbench.state import STATE_KEY
    state = session.config.stash[STATE_KEY]
    (path,) = state.explicit
    bm25 = state.runtime("suite.yaml", path).retriever("bm")
    out["host_info"] = json.dumps({
        "cwd": os.getcwd(), "rootpath": str(session.config.rootpath), "suite": str(path),
        "loaded_from_cache": bm25.loaded_from_cache, "cache_path": str(bm25.cache_path)})

_INFO = []

@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _INFO.append(node.workeroutput.get("host_info"))

def pytest_terminal_summary(terminalreporter):
    for info in _INFO:
        terminalreporter.write_line("HOST-INFO " + str(info))
'''


def reply(messages: Sequence[dict[str, Any]]) -> str:
    return "the answer is in the passage"


def write_project(root: Path, base_url: str) -> None:
    """A project: ini, conftest, a suite under ``suites/`` with its datasets in ``data/``."""
    docs = [{"_id": f"d{i}", "title": f"doc {i}", "text": f"passage {i} about topic {i}"}
            for i in range(10)]
    queries = [{"_id": f"q{i}", "text": f"topic {i} passage", "relevant": {f"d{i}": 1},
                "answer": "passage"} for i in range(N_QUERIES)]
    (root / "data").mkdir()
    write_jsonl(root / "data" / "corpus.jsonl", docs)
    write_jsonl(root / "data" / "queries.jsonl", queries)
    (root / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "suite.yaml").write_text(f"""
name: hosts
dataset: {{corpus: data/corpus.jsonl, queries: data/queries.jsonl}}
retrievers: {{bm: {{type: bm25}}}}
metrics: [recall@5, ndcg@5, answer_contains]
llm: {{type: openai, base_url: {base_url}, model: m, retries: 0, timeout: 10, concurrency: 1}}
cache: off
""", encoding="utf-8")


def run_outputs(root: Path) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    run = (root / ".ragbench" / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "cases.jsonl").read_text().splitlines()]
    return summary, {(r["retriever"], r["case_id"]): (r["metrics"], r["retrieved"], r["status"])
                     for r in records}


def host_infos(lines: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("HOST-INFO ")]


def one_collection_error(result: pytest.RunResult) -> str:
    """The terminal output of a run that ended on one collection error, neither a traceback
    nor an INTERNALERROR, its whitespace runs made single spaces (long paths wrap)."""
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # as xdist reports collection errors
    result.stdout.fnmatch_lines(["*= 1 error in *"])
    text = result.stdout.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text
    return " ".join(text.split())


def test_chdir_gateways_match_a_serial_run_and_one_behind_a_proxy_ends_with_the_run(
        pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The two workers of the run share GW, one started directly, the other through a
    ``--px`` proxy: xdist ends a proxy after the workers behind it; those stay with its
    teardown (a worker that finished, as the direct one, is otherwise told to exit at once:
    worker_exits.py), and the run ends as any other."""
    gw = tmp_path_factory.mktemp("gateway")  # outside the controller's rootdir
    with FakeOpenAIServer(reply=reply) as server:
        write_project(pytester.path, server.base_url)
        serial = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        serial.assert_outcomes(passed=N_QUERIES)
        serial_summary, serial_records = run_outputs(pytester.path)
        serial_run = serial_summary["run"]["id"]

        # only the workers' run needs a latency: requests that two workers send at once
        # must overlap at the server for a per-worker budget to show
        server.latency = 0.05
        result = pytester.runpytest(
            "--ragbench=suite.yaml", f"--tx=popen//chdir={gw}",
            "--px=id=hop//execmodel=thread//popen", f"--tx=popen//via=hop//chdir={gw}", "-d",
            "--junitxml=junit.xml", "--ragbench-html=out/report.html")
        assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
        result.assert_outcomes(passed=N_QUERIES)
        result.stdout.fnmatch_lines(["ragbench: passed"])
        text = result.stdout.str() + result.stderr.str()
        assert "Traceback" not in text and "INTERNALERROR" not in text
        assert server.count(CHAT_PATH) == 2 * N_QUERIES
        # concurrency: 1 held across both workers: the budget is the run's, not a worker's
        assert server.max_in_flight == 1

    summary, records = run_outputs(pytester.path)
    assert summary["run"]["id"] != serial_run and summary["run"]["workers"] == 2
    # the same case records and aggregate metrics as the serial run, bit for bit
    assert records == serial_records and len(records) == N_QUERIES
    assert ([s["retrievers"][0]["metrics"] for s in summary["suites"]]
            == [s["retrievers"][0]["metrics"] for s in serial_summary["suites"]])
    (pool,) = summary["run"]["budget"]["pools"]
    assert pool["requests"] == N_QUERIES and pool["max_in_flight"] == 1

    # outputs: in the controller's paths only
    assert (pytester.path / "junit.xml").is_file()
    assert (pytester.path / "out" / "report.html").is_file()
    assert (pytester.path / ".ragbench" / "history.sqlite").is_file()
    assert sorted(p.name for p in gw.iterdir()) == [".pytest_cache", "_pytest", "pytest"]
    written = {p.name for p in gw.rglob("*")}
    assert not written & {".ragbench", "junit.xml", "report.html", "summary.json", "out"}

    # each worker ran in GW, found the controller's suite, and the host built one index
    infos = host_infos(result.outlines)
    assert len(infos) == 2
    for info in infos:
        assert Path(info["cwd"]) == gw and Path(info["rootpath"]) == gw
        assert Path(info["suite"]) == pytester.path / "suite.yaml"
        assert Path(info["cache_path"]).parent == gw / ".pytest_cache" / "d" / "ragbench"
    assert sorted(i["loaded_from_cache"] for i in infos) == [False, True]
    cache = gw / ".pytest_cache" / "d" / "ragbench"
    (index,) = [p for p in cache.iterdir() if p.is_dir()]
    assert str(index) == infos[0]["cache_path"] and (cache / f"{index.name}.lock").is_file()


def test_a_suite_missing_on_a_host_is_one_collection_error(
        pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    """What a worker on a host without the suite reports: the controller's workerinput is
    rewritten (after the plugin's) to name a suite no host has."""
    gw = tmp_path_factory.mktemp("gateway")
    write_project(pytester.path, "http://127.0.0.1:9/v1")
    pytester.makeconftest("""
import pytest

@pytest.hookimpl(trylast=True, optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["ragbench_hosts"]["suites"] = ["suites/gone.yaml"]
""")
    result = pytester.runpytest("--ragbench=suite.yaml", f"--tx=popen//chdir={gw}",
                                "--dist=load")
    assert ("ragbench: suite file suites/gone.yaml (relative to the controller's rootdir "
            f"{pytester.path}) not found on this worker's host; tried {gw}/suites/gone.yaml"
            ) in one_collection_error(result)


def test_a_suite_that_differs_on_a_host_is_one_collection_error(
        pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A host whose copy of the suite is not the controller's (stale, edited): its cases ran
    by its copy's metrics and gates, and the controller aggregated them by its own (a metric
    NaN for every case, the copy's gates unchecked, 'passed'). Stands in for another host:
    the controller's digest of the suite is rewritten (after the plugin's)."""
    gw = tmp_path_factory.mktemp("gateway")
    write_project(pytester.path, "http://127.0.0.1:9/v1")
    pytester.makeconftest("""
import pytest

@pytest.hookimpl(trylast=True, optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["ragbench_hosts"]["digests"] = ["0" * 64]
""")
    result = pytester.runpytest("--ragbench=suite.yaml", f"--tx=popen//chdir={gw}",
                                "--dist=load")
    assert (f"ragbench: suite file suite.yaml on this worker's host ({pytester.path}/suite.yaml)"
            f" differs from the controller's ({pytester.path}/suite.yaml)"
            ) in one_collection_error(result)


def test_datasets_that_differ_on_a_host_are_a_collection_error_of_their_suite_each(
        pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Another checkout of the project whose datasets are not the controller's (the suite
    files the same): its worker scored its cases against its own documents and queries and
    the controller mixed them with the other hosts' into one run. The gateway runs in that
    checkout. Two suites share the run, as a worker checks each suite's dataset as it
    collects that suite (one collection error of its own each):

    - suite.yaml, whose corpus differs;
    - suites/s.yaml, whose queries differ and whose retriever its folder's conftest
      registers: the controller, which does not load that conftest, could not read the
      suite ('unknown retriever'), and so compared no dataset for it: the other checkout's
      queries ran unnoticed."""
    write_project(pytester.path, "http://127.0.0.1:9/v1")
    # the project's conftest reports on the one suite of the other tests' runs
    (pytester.path / "conftest.py").unlink()
    suites = pytester.path / "suites"
    suites.mkdir()
    (suites / "overlap_retriever.py").write_text(OVERLAP_RETRIEVER)
    (suites / "conftest.py").write_text(
        "import sys, os\nsys.path.insert(0, os.path.dirname(__file__))\n"
        "from overlap_retriever import Overlap\n\n"
        "def pytest_ragbench_register(registry):\n"
        "    registry.add('retriever', 'mine', Overlap)\n")
    write_jsonl(suites / "corpus.jsonl", DOCS)
    write_jsonl(suites / "queries.jsonl", QUERIES)
    (suites / "s.yaml").write_text("dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
                                   "retrievers: {mine: {type: mine}}\nmetrics: [recall@3]\n")
    copy = tmp_path_factory.mktemp("host2") / "proj"
    shutil.copytree(pytester.path, copy)
    corpus = copy / "data" / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("passage 3 about", "passage 3 on"))
    queries = copy / "suites" / "queries.jsonl"
    queries.write_text(queries.read_text().replace("espresso", "ristretto", 1))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench=suites/s.yaml",
                                f"--tx=popen//chdir={copy}", "--dist=load")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # as xdist reports collection errors
    result.stdout.fnmatch_lines(["*= 2 errors in *"])
    out = result.stdout.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out
    sections = {name: " ".join(" ".join(lines).split())
                for name, lines in error_sections(out).items()}
    assert set(sections) == {"suite.yaml", "suites/s.yaml"}, out
    assert (f"ragbench: the corpus file {corpus} on this worker's host differs from the "
            f"controller's (dataset 'hosts' of suite {copy / 'suite.yaml'})"
            ) in sections["suite.yaml"]
    assert (f"ragbench: the queries file {queries} on this worker's host differs from the "
            "controller's") in sections["suites/s.yaml"]


def test_gateway_usage_errors(pytester: pytest.Pytester) -> None:
    """Caught before xdist starts a worker: one line each, no INTERNALERROR."""
    write_project(pytester.path, "http://127.0.0.1:9/v1")
    result = pytester.runpytest("--ragbench", "suite.yaml", "--tx=popen//chdir=gw", "-d")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ragbench: with --tx gateways that use chdir= or "
                                 "another host, write --ragbench=suite.yaml as one argument*"])
    # any separate argument naming an existing path: xdist stopped on it with an
    # INTERNALERROR once the gateways were up (a baseline file always exists)
    (pytester.path / "base.json").write_text("{}")
    (pytester.path / "out.xml").write_text("")
    (pytester.path / "tests").mkdir()
    for args, expected in (
            (["--junitxml", "out.xml"], "write --junitxml=out.xml as one argument*"),
            (["--ragbench-baseline", "base.json"], "write --ragbench-baseline=base.json as "
                                                   "one argument*'base.json'*"),
            (["tests"], "pytest-xdist cannot send the path argument 'tests' to the workers*")):
        result = pytester.runpytest("--ragbench=suite.yaml", "--tx=popen//chdir=gw", "-d",
                                    *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: ragbench: with --tx gateways that use chdir= "
                                     f"or another host, {expected}"])
        assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    # xdist starts no worker for these, so they take any argument, as without the plugin
    for mode, status in (("--collect-only", pytest.ExitCode.OK),
                         ("--ragbench-list", pytest.ExitCode.OK)):
        result = pytester.runpytest("--ragbench=suite.yaml", "--tx=popen//chdir=gw", "-d",
                                    mode, "tests")
        assert result.ret == status, result.stderr.str()
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-budget-address=host:x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ragbench: --ragbench-budget-address='host:x': "
                                 "expected HOST, HOST:PORT or [[]IPv6]:PORT*"])
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert not (pytester.path / "gw").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pytester.runpytest("--ragbench=suite.yaml", "-n", "1",
                                    f"--ragbench-budget-address=127.0.0.1:{port}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ragbench: cannot listen for the run budget on "
                                 f"127.0.0.1:{port}: *address already in use*"])


# -- a real sshd on 127.0.0.1 -------------------------------------------------------------

def _sshd() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An sshd for the current user on 127.0.0.1 (own host key, own config, all in tmp);
    yields the ssh host name and the client config (``ssh -F``) that reaches it.

    The client config shares one connection (``ControlMaster``): the login probe below opens
    it, and the test's ssh gateway runs its worker in a new session of it, started by the
    same sshd, without a second key exchange and login (about 0.4 s here)."""
    daemon, client = _sshd(), shutil.which("ssh")
    if daemon is None or client is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs OpenSSH's sshd, ssh and ssh-keygen (apt-get install "
                    "openssh-server openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port, user = _free_port(), getpass.getuser()
    # ssh binds the control socket at its path plus a 17-character suffix first, and a Unix
    # socket's path holds at most 107 bytes: under a long --basetemp, no shared connection
    control = d / "control"
    shared = (f"  ControlMaster auto\n  ControlPath {control}\n  ControlPersist 60\n"
              if len(os.fsencode(control)) <= 80 else "")
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "PasswordAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nSubsystem sftp internal-sftp\n")
    (d / "ssh_config").write_text(
        f"Host ragbench-test\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {d / 'user_key'}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        f"  StrictHostKeyChecking no\n  UserKnownHostsFile {d / 'known_hosts'}\n"
        f"  LogLevel ERROR\n{shared}")
    log = d / "sshd.log"
    proc = subprocess.Popen([daemon, "-D", "-E", str(log), "-f", str(d / "sshd_config")])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.skip(f"sshd does not start here: {log.read_text()[-500:].strip()}")
            time.sleep(0.05)
        try:
            probe = subprocess.run([client, "-F", str(d / "ssh_config"), "ragbench-test",
                                    "true"], capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.skip("the test sshd accepts no login within 20 s")
        if probe.returncode != 0:
            pytest.skip(f"cannot log in to the test sshd: {probe.stderr.strip()[-300:]}")
        yield "ragbench-test", d / "ssh_config"
    finally:
        # the shared connection's master outlives the listening sshd: end it first
        subprocess.run([client, "-F", str(d / "ssh_config"), "-O", "exit", "ragbench-test"],
                       capture_output=True, timeout=20)
        proc.terminate()
        proc.wait(10)


def test_ssh_gateway_runs_a_suite(pytester: pytest.Pytester, sshd: tuple[str, Path],
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--tx ssh=HOST//python=...`` through a real sshd: the worker runs in a folder of its
    own (xdist's default for ssh, under the remote home), finds the suite at the controller's
    rootdir path, reaches the run budget at the address the controller gave it, and every
    output stays on the controller's side."""
    host, ssh_config = sshd
    gw = tmp_path_factory.mktemp("ssh-gateway")
    # The remote interpreter imports the package under test (as an installed one would be).
    package_root = Path(__file__).resolve().parents[1]
    python = f"env PYTHONPATH={package_root} {sys.executable}"
    with FakeOpenAIServer(latency=0.01, reply=reply) as server:
        write_project(pytester.path, server.base_url)
        result = pytester.runpytest(
            "--ragbench=suite.yaml", "--dist=load",
            f"--tx=ssh={host}//ssh_config={ssh_config}//python={python}//chdir={gw}",
            "--ragbench-budget-address=127.0.0.1")
        result.assert_outcomes(passed=N_QUERIES)
        assert server.count(CHAT_PATH) == N_QUERIES
    summary, records = run_outputs(pytester.path)
    assert len(records) == N_QUERIES and summary["run"]["workers"] == 1
    (pool,) = summary["run"]["budget"]["pools"]
    assert pool["requests"] == N_QUERIES
    (info,) = host_infos(result.outlines)
    assert Path(info["cwd"]) == gw and Path(info["suite"]) == pytester.path / "suite.yaml"
    assert not {p.name for p in gw.rglob("*")} & {".ragbench", "summary.json", "report.html"}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_suites_outside_the_rootdir_keep_their_own_cases_and_ids(
        pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
        workers: list[str]) -> None:
    # pytest names every file argument outside the rootdir "" (and a folder argument's files
    # by their name): two such suites shared their cases' ids, and one's results were lost
    pytester.makeini(BASE_INI)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    suites = []
    for name, k in (("first", 5), ("second", 1)):
        folder = elsewhere / name
        folder.mkdir()
        write_jsonl(folder / "corpus.jsonl", DOCS)
        write_jsonl(folder / "queries.jsonl", QUERIES)
        # the second retrieves one document: q1, with two relevant ones, fails its threshold
        (folder / "suite.yaml").write_text(
            f"name: {name}\ndataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}\n"
            f"retrievers: {{bm: {{type: bm25}}}}\nk: {k}\nmetrics: [recall@{k}]\n"
            f"thresholds: {{recall@{k}: '>= 1.0'}}\n", encoding="utf-8")
        suites.append(f"--ragbench={folder / 'suite.yaml'}")
    result = pytester.runpytest(*suites, "-p", "no:randomly", *workers)
    rel = Path(os.path.relpath(elsewhere, pytester.path))
    ids = {name: (rel / name / "suite.yaml").as_posix() for name in ("first", "second")}
    result.assert_outcomes(passed=2 * len(QUERIES) - 1, failed=1)
    result.stdout.fnmatch_lines([f"FAILED {ids['second']}::bm::q1*"])
    run = (pytester.path / ".ragbench" / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert {s["name"]: s["id"] for s in summary["suites"]} == ids
    records = [json.loads(line) for line in (run / "cases.jsonl").read_text().splitlines()]
    assert sorted((r["suite"], r["case_id"]) for r in records) == sorted(
        (sid, q["_id"]) for sid in ids.values() for q in QUERIES)
    assert (run / "run.json").is_file()


def test_a_folder_argument_outside_the_rootdir_keeps_pytests_ids(
        pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    # only --ragbench suites outside the rootdir are renamed (pytest names them ""); files a
    # folder argument finds keep their path in that folder, the same on every host and in
    # earlier runs' records and --deselect lists
    pytester.makeini(BASE_INI)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    write_jsonl(elsewhere / "corpus.jsonl", DOCS)
    write_jsonl(elsewhere / "queries.jsonl", QUERIES)
    (elsewhere / "x.ragbench.yaml").write_text(
        "name: x\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
        "retrievers: {bm: {type: bm25}}\nmetrics: [recall@5]\n", encoding="utf-8")
    result = pytester.runpytest(str(elsewhere), f"--rootdir={pytester.path}", "--collect-only",
                                "-q", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["x.ragbench.yaml::bm::q1"])
    assert "../" not in result.stdout.str()


def test_dist_each_is_refused_for_suite_cases_and_kept_for_other_tests(
        pytester: pytest.Pytester, mini_suite: Any) -> None:
    """``--dist each`` runs every test on every worker: each case was answered (its LLM calls
    paid) once per worker, and the run kept whichever worker's record came first. Cases of a
    suite (from a suite file, or hand-written tests that record them) are refused at
    collection, once, before any case runs; a run without any, or with one worker, is
    xdist's as usual."""
    mini_suite()
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest("--ragbench=suite.yaml", "test_plain.py", "-n", "2",
                                "--dist", "each")
    out = result.stdout.str()
    assert result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), out
    result.assert_outcomes(errors=1)
    # each worker found it; the controller shows it once
    (section,) = error_sections(out).values()
    assert " ".join(section).count("--dist each runs every test on every worker") == 1, out
    result.stdout.fnmatch_lines(["*use another --dist mode*runs: N*"])
    assert not (pytester.path / ".ragbench" / "runs" / "latest" / "cases.jsonl").exists()
    # hand-written tests that record a suite's cases (no --ragbench), by the marker or by
    # cases(): the same error
    pytester.makepyfile(test_hand="""
        import pytest
        from pytest_ragbench.fixtures import cases

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        def test_case(ragbench_case, ragbench_record):
            ragbench_record("hit", 1.0)
        """, test_helper="""
        import pytest
        from pytest_ragbench.fixtures import cases

        @pytest.mark.parametrize("ragbench_case", cases("suite.yaml", retriever="overlap"),
                                 indirect=True)
        def test_case(ragbench_case, ragbench_record):
            ragbench_record("hit", 1.0)
        """)
    for hand in ("test_hand.py", "test_helper.py"):
        result = pytester.runpytest(hand, "test_plain.py", "-n", "2", "--dist", "each")
        result.assert_outcomes(errors=1)
        (section,) = error_sections(result.stdout.str()).values()
        assert "--dist each runs every test on every worker" in " ".join(section), hand
    # no case recorded (a test of the suite's retriever only, a plain test): every worker
    # runs them, as xdist does; and a lone worker runs each case once, suite or not
    pytester.makepyfile(test_retriever="""
        import pytest

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        def test_top(ragbench_retriever):
            assert ragbench_retriever.name == "overlap"
        """)
    result = pytester.runpytest("test_retriever.py", "test_plain.py", "-n", "2", "--dist",
                                "each")
    result.assert_outcomes(passed=4)
    result = pytester.runpytest("--ragbench=suite.yaml", "-n", "1", "--dist", "each")
    result.assert_outcomes(passed=5)
