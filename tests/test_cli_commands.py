"""The ``ragbench`` command's structure: subcommands, their --help, --version, usage errors,
the console-script entry, and ``ragbench list`` (with and without a pytest configuration)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import pytest_ragbench
from pytest_ragbench.cli import main

HELP_NAMES = {
    "compare": ["A", "B", "--history", "--db", "--gate", "--tolerance", "--test", "--alpha",
                "--require-same-dataset", "--json"],
    "history": ["--history", "--db", "--metric", "--suite", "--limit", "--prune", "--out"],
    "report": ["RUN_DIR", "--html", "--history"],
    "list": ["--conftest"],
    "schema": ["JSON Schema"],
    "cache": ["list", "prune"],
}


@pytest.mark.parametrize("command", sorted(HELP_NAMES))
def test_each_subcommand_has_its_own_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ragbench {command} ")
    for name in HELP_NAMES[command]:
        assert name in out, name


def test_report_help_offers_no_verbosity_flags_it_does_not_have(capsys):
    """--summary's help, shared with the plugin, said 'short with -q and full with -v', which
    ragbench report refuses as unrecognized arguments."""
    assert main(["report", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "with -q" not in out and "with -v" not in out
    assert "default: default" in out
    assert main(["report", "latest", "-q"]) == 2
    assert "unrecognized arguments: -q" in capsys.readouterr().err


def test_top_level_help_names_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in HELP_NAMES:
        assert f"    {command} " in out


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pytest-ragbench {pytest_ragbench.__version__}\n"


def test_console_script_entry_point_is_main():
    found = entry_points(group="console_scripts", name="ragbench")
    if not found:
        pytest.skip("pytest-ragbench is not installed in this environment")
    (ep,) = found
    assert ep.value == "pytest_ragbench.cli:main"
    assert ep.load() is main


def test_unknown_subcommand_is_a_usage_error(capsys):
    assert main(["lsit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ragbench ")
    assert "invalid choice: 'lsit'" in err


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: ragbench" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_the_shells_status_not_a_traceback(monkeypatch, capsys):
    from pytest_ragbench.cli import report

    def interrupted(args):
        print("written so far")
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run", interrupted)
    assert main(["report", "latest"]) == 130
    out, err = capsys.readouterr()
    assert (out, err) == ("written so far\n", "ragbench report: interrupted\n")


def test_bad_subcommand_option_names_the_subcommand(capsys):
    assert main(["history", "--limit", "many"]) == 2
    err = capsys.readouterr().err
    assert "usage: ragbench history" in err and "invalid int value: 'many'" in err


def _component_block(out: str, head: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index(head)
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("      "):
            break
        block.append(line)
    return block


def test_list_shows_user_parameters_and_plain_descriptions(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    bm25 = _component_block(out, "  bm25 -- built-in")
    assert bm25[1].startswith("      parameters: k1=0.9, b=0.4, stemmer='porter'")
    assert bm25[2] == ("      BM25 over the corpus passed to index(); implements the Retriever "
                       "protocol.")
    llm = _component_block(out, "  openai -- built-in")  # the LLM section comes first
    assert llm[1].startswith("      parameters: base_url, model, api_key_env=None")
    for internal in ("transport", "retry", "breaker", "rate_limiter", "rng"):
        assert f"{internal}=" not in out
    assert ":class:" not in out and ":meth:" not in out and "``" not in out
    assert "--conftest DIR" in out.splitlines()[-1]


CONFTEST = '''
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import httpx


class Keyword:
    """Scores by query words, see :class:`~collections.Counter` and ``str.split``.

    :param boost: weight of a match.
    """

    def __init__(self, boost: float = 1.0, words: list[str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 on_hit: Callable[[str], None] | None = None, _trace: bool = False) -> None:
        self.boost = boost


def pytest_ragbench_register(registry):
    registry.add("retriever", "keyword", Keyword)
'''


class _NoFinalCollection:
    """Skips the full garbage collection pytest makes at the end of a run to find unraisable
    exceptions, as pytester does for its in-process runs: in this process it walks the whole
    test session's heap (0.1-0.4 s per run in a full test run)."""

    def pytest_configure(self, config: pytest.Config) -> None:
        from _pytest.unraisableexception import gc_collect_iterations_key

        config.stash[gc_collect_iterations_key] = 0


def _list_in_process(directory, monkeypatch: pytest.MonkeyPatch, capsys
                     ) -> tuple[int, pytest.LineMatcher, str]:
    """``ragbench list --conftest DIR`` in this process: its exit status, stdout, stderr.

    Its pytest run imports DIR's ``conftest.py`` as the module ``conftest``, the name of this
    suite's own; the modules are put back as they were, as an in-process pytester run does.
    """
    real_main = pytest.main
    monkeypatch.setattr(pytest, "main", lambda args=None, plugins=None: real_main(
        args, plugins=[*(plugins or ()), _NoFinalCollection()]))
    modules = dict(sys.modules)
    try:
        status = main(["list", "--conftest", str(directory)])
    finally:
        sys.modules.clear()
        sys.modules.update(modules)
        monkeypatch.setattr(pytest, "main", real_main)
    out, err = capsys.readouterr()
    return status, pytest.LineMatcher(out.splitlines()), out + err


def test_list_with_conftest_includes_its_registrations(pytester, monkeypatch, capsys):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    status, out, text = _list_in_process(pytester.path, monkeypatch, capsys)
    assert status == 0, text
    out.fnmatch_lines([
        "  bm25 -- built-in",
        "      parameters: k1=0.9, b=0.4, *",
        "  keyword -- conftest conftest.py",
        "      parameters: boost=1.0, words=None",
        "      Scores by query words, see Counter and str.split.",
    ])
    assert "collected" not in out.str()


def test_list_with_conftest_from_another_folder_reads_the_ini_as_pytest_there_would(
        pytester, monkeypatch, capsys):
    """An ini's ``addopts = --ragbench=suites/s.yaml`` resolves against DIR, where 'pytest
    --ragbench-list' runs: run from DIR's parent, the listing failed with 'suite file not
    found' for the suite's path under the current folder."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "addopts = --ragbench=suites/s.yaml\n")
    suites = pytester.mkdir("suites")
    (suites / "corpus.jsonl").write_text('{"_id": "d1", "text": "espresso"}\n')
    (suites / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "espresso", "relevant": {"d1": 1}}\n')
    (suites / "s.yaml").write_text(
        "name: s\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
        "retrievers: {bm25: {}}\nmetrics: [ndcg@10]\n")
    monkeypatch.chdir(pytester.path.parent)
    status, out, text = _list_in_process(pytester.path, monkeypatch, capsys)
    assert status == 0, text
    out.fnmatch_lines(["  keyword -- conftest conftest.py"])
    assert Path.cwd() == pytester.path.parent


def test_list_without_conftest_leaves_conftest_registrations_out(pytester, capsys):
    pytester.makeconftest(CONFTEST)  # in the current folder, which `list` alone leaves alone
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "keyword" not in out
    assert "  bm25 -- built-in" in out.splitlines()


def test_list_with_a_broken_conftest_is_a_usage_error(pytester, monkeypatch, tmp_path, capsys):
    pytester.makeconftest("import no_such_module_anywhere\n")
    status, _, text = _list_in_process(pytester.path, monkeypatch, capsys)
    assert status == 2
    assert "no_such_module_anywhere" in text
    assert main(["list", "--conftest", str(tmp_path / "missing")]) == 2


def test_list_into_a_closed_pipe_is_no_traceback():
    # `ragbench list | head -1`: the reader is gone before the listing is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    # Buffered, as on a machine without PYTHONUNBUFFERED: the broken pipe then shows at the
    # final flush.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        p = subprocess.run([sys.executable, "-m", "pytest_ragbench.cli", "list"],
                           stdout=write_end, stderr=subprocess.PIPE, env=env, check=False)
    finally:
        os.close(write_end)
    assert (p.returncode, p.stderr.decode()) == (1, "")


def test_list_with_conftest_when_plugin_autoload_is_disabled(pytester, monkeypatch, capsys):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(CONFTEST)
    status, out, text = _list_in_process(pytester.path, monkeypatch, capsys)
    assert status == 0, text
    out.fnmatch_lines(["  keyword -- conftest conftest.py"])


def test_cache_lists_entries_and_prunes_those_unused_for_a_while(tmp_path, monkeypatch, capsys):
    """Every corpus or parameter change left an index folder in .pytest_cache for ever, and
    nothing listed or removed them."""
    from pytest_ragbench.datasets import Document
    from pytest_ragbench.retrievers.bm25 import BM25Retriever

    cache = tmp_path / ".pytest_cache" / "d" / "ragbench"
    docs = [Document(f"d{i}", f"text {i} about {i % 3}") for i in range(20)]
    old, new = BM25Retriever(cache_dir=cache), BM25Retriever(cache_dir=cache, k1=1.5)
    old.index(docs)
    new.index(docs)
    old._set_lease(None)  # that run ended ten days ago
    ten_days = time.time() - 10 * 86400
    os.utime(cache / f"{old.cache_path.name}.use", (ten_days, ten_days))
    os.utime(old.cache_path, (ten_days, ten_days))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # no project here: a cache above is not its own
    assert main(["cache", "prune", "--all"]) == 0
    assert capsys.readouterr().out.startswith("no index cache here")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # found from a folder below it

    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"index cache: {cache}\n")
    lines = out.splitlines()
    assert old.cache_path.name in lines[1] and "(10d ago)" in lines[1]
    assert new.cache_path.name in lines[2] and "(just now)  [in use]" in lines[2]
    # sizes as `ragbench history --prune` writes them (kB, powers of 1000), not KB
    assert re.search(r" \d+\.\d kB  last used", lines[1]) and "KB" not in out, out
    assert lines[3].startswith("2 entries, ")
    # the project's folder itself: its entries, not "0 entries" of a folder holding none
    assert main(["cache", "list", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == out

    assert main(["cache", "prune", "--older-than", "7d", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(
        f"index cache: {cache}\nwould remove {old.cache_path.name} (")
    assert old.cache_path.is_dir()
    orphan = cache / "bm25-0123456789abcdef0123456789abcdef.lock"  # its entry long gone
    orphan.write_bytes(b"")
    assert main(["cache", "prune", "--older-than", "1w"]) == 0
    out = capsys.readouterr().out
    assert not orphan.exists()
    assert not (cache / f"{old.cache_path.name}.use").exists()
    assert f"removed {old.cache_path.name} (" in out
    assert out.splitlines()[-1].startswith("removed 1 of 2 entries, ")
    assert not old.cache_path.exists() and new.cache_path.is_dir()
    # --all keeps what a run uses, says so, and exits 1: not everything went
    assert main(["cache", "prune", "--all", "--dir", str(tmp_path / ".pytest_cache")]) == 1
    assert (f"kept {new.cache_path.name}: in use by a run now"
            in capsys.readouterr().out)
    assert new.retrieve("text 1", 2)

    assert main(["cache", "prune", "--older-than", "7"]) == 2
    assert "expected a number and a unit, e.g. 30d" in capsys.readouterr().err
    assert main(["cache", "list", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err


CACHE_DIR_INIS = [
    pytest.param("pytest.ini", "[pytest]\ncache_dir = build/pt\n", id="pytest.ini"),
    pytest.param("pyproject.toml", '[tool.pytest.ini_options]\ncache_dir = "build/pt"\n',
                 id="pyproject.toml"),
    pytest.param("tox.ini", "[tox]\nenvlist = py\n\n[pytest]\ncache_dir = build/pt\n",
                 id="tox.ini"),
    pytest.param("setup.cfg", "[metadata]\nname = x\n\n[tool:pytest]\ncache_dir = build/pt\n",
                 id="setup.cfg"),
    pytest.param("pytest.ini", "[pytest]\ncache_dir = $RB_ELSEWHERE/pt\n", id="env-var"),
]
if pytest.version_tuple >= (9,):
    CACHE_DIR_INIS.append(pytest.param("pytest.toml", '[pytest]\ncache_dir = "build/pt"\n',
                                       id="pytest.toml"))


@pytest.mark.parametrize(("ini", "text"), CACHE_DIR_INIS)
def test_cache_finds_the_index_cache_where_pytests_cache_dir_option_put_it(
        pytester, tmp_path_factory, monkeypatch, capsys, ini, text):
    """A run whose ini moves pytest's cache (``cache_dir``) keeps its index cache there, and
    ``ragbench cache list`` looked in ``<rootdir>/.pytest_cache`` only: 'no index cache
    here'. Nor is every tox.ini or pyproject.toml a rootdir: pytest takes the nearest file
    holding pytest configuration."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv("RB_ELSEWHERE", str(elsewhere))
    cache = (elsewhere / "pt" if "RB_ELSEWHERE" in text else pytester.path / "build" / "pt"
             ) / "d" / "ragbench"
    (pytester.path / ini).write_text(text)
    pytester.makefile(".jsonl", corpus='{"id": "d1", "text": "espresso grind size"}\n'
                                       '{"id": "d2", "text": "milk steaming"}')
    pytester.makefile(".jsonl", queries='{"id": "q1", "text": "grind", "relevant": ["d1"]}')
    pytester.makefile(".yaml", suite="dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
                                     "retrievers: {bm25: {}}\nmetrics: [recall@10]\n")
    sub = pytester.mkdir("sub")  # files pytest does not take for configuration
    (sub / "tox.ini").write_text("[tox]\nenvlist = py\n")
    (sub / "pyproject.toml").write_text('[project]\nname = "sub"\n')
    monkeypatch.chdir(sub)
    assert main(["cache", "list"]) == 0
    assert capsys.readouterr().out.startswith(f"no index cache here: {cache} does not exist")

    monkeypatch.chdir(pytester.path)
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=1)
    capsys.readouterr()
    built = sorted(p.name for p in cache.glob("bm25-*") if p.is_dir())
    assert len(built) == 1  # where pytest put it
    monkeypatch.chdir(sub)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"index cache: {cache}\n") and built[0] in out
    assert main(["cache", "prune", "--all"]) == 0
    assert not any(cache.glob("bm25-*"))

def test_cache_prune_keeps_an_entry_whose_lock_files_cannot_be_opened_and_says_why(
        tmp_path, monkeypatch, capsys):
    """A ``.lock`` that could not be opened read as 'being built by a run now', and a ``.use``
    that could not be opened crashed the prune with a traceback: neither says what is wrong
    or what to do. (A folder in the file's place: chmod 000 does not stop root.)"""
    from pytest_ragbench.datasets import Document
    from pytest_ragbench.retrievers.bm25 import BM25Retriever

    cache = tmp_path / ".pytest_cache" / "d" / "ragbench"
    docs = [Document(f"d{i}", f"text {i} about {i % 3}") for i in range(20)]
    locked, used, fine = (BM25Retriever(cache_dir=cache, k1=k1) for k1 in (1.1, 1.2, 1.3))
    for retriever in (locked, used, fine):
        retriever.index(docs)
        retriever._set_lease(None)
    bad_lock = cache / f"{locked.cache_path.name}.lock"
    bad_use = cache / f"{used.cache_path.name}.use"
    for bad in (bad_lock, bad_use):
        bad.unlink()
        bad.mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(tmp_path)

    # exit 1 as a prune's (it exited 0: a script checking the list could not tell), every
    # entry still listed
    assert main(["cache", "list"]) == 1
    out = capsys.readouterr().out
    for name, bad in ((locked.cache_path.name, bad_lock), (used.cache_path.name, bad_use)):
        (line,) = [x for x in out.splitlines() if name in x]
        assert f"[state unknown: cannot open {bad}: Is a directory]" in line
    assert fine.cache_path.name in out
    assert out.splitlines()[-1].startswith("3 entries, ")
    assert out.splitlines()[-1].endswith("; 2 of state unknown")
    assert main(["cache", "list", "--json"]) == 1
    listed = {Path(e["path"]).name: e for e in json.loads(capsys.readouterr().out)}
    assert listed[used.cache_path.name]["state_unknown"] == f"cannot open {bad_use}: " \
        "Is a directory"
    assert listed[fine.cache_path.name]["state_unknown"] is None

    assert main(["cache", "prune", "--all", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"would remove {fine.cache_path.name} (" in out
    assert f"would keep {locked.cache_path.name}: cannot tell whether a run is building " \
        f"or using it: cannot open {bad_lock}: Is a directory" in out
    assert "being built" not in out

    assert main(["cache", "prune", "--older-than", "0s"]) == 1
    out = capsys.readouterr().out
    for name, bad in ((locked.cache_path.name, bad_lock), (used.cache_path.name, bad_use)):
        assert (f"kept {name}: cannot tell whether a run is building or using it: cannot "
                f"open {bad}: Is a directory; make it a file this user can open for writing "
                f"(or, once no run uses the entry, remove {cache / name} and {bad} by hand)"
                in out), out
    assert f"removed {fine.cache_path.name} (" in out
    assert out.splitlines()[-1].startswith("removed 1 of 3 entries, ")
    assert "2 kept (state unknown)" in out.splitlines()[-1]
    assert locked.cache_path.is_dir() and used.cache_path.is_dir()
    assert not fine.cache_path.exists()


def test_cache_prune_exits_1_for_an_entry_of_unknown_state_it_was_not_asked_to_prune(
        tmp_path, monkeypatch, capsys):
    """``prune --older-than`` exited 0 when the entry whose lock file cannot be opened was
    too recent to prune, where ``list`` exits 1 for it and docs/many-hosts.md says a prune
    exits 1 for any such entry whatever the options: a nightly prune could not tell that it
    had not checked an entry (which no prune can remove once it is old)."""
    from pytest_ragbench.datasets import Document
    from pytest_ragbench.retrievers.bm25 import BM25Retriever

    cache = tmp_path / ".pytest_cache" / "d" / "ragbench"
    docs = [Document(f"d{i}", f"text {i} about {i % 3}") for i in range(20)]
    recent, old = (BM25Retriever(cache_dir=cache, k1=k1) for k1 in (1.1, 1.2))
    for retriever in (recent, old):
        retriever.index(docs)
        retriever._set_lease(None)
    ten_days = time.time() - 10 * 86400
    os.utime(cache / f"{old.cache_path.name}.use", (ten_days, ten_days))
    os.utime(old.cache_path, (ten_days, ten_days))
    bad = cache / f"{recent.cache_path.name}.lock"
    bad.unlink()
    bad.mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(tmp_path)

    for dry_run, verb in ((["--dry-run"], "would remove"), ([], "removed")):
        assert main(["cache", "prune", "--older-than", "7d", *dry_run]) == 1
        out = capsys.readouterr().out
        assert f"{verb} {old.cache_path.name} (" in out
        assert (f"left {recent.cache_path.name} (last used just now): cannot tell whether a "
                f"run is building or using it: cannot open {bad}: Is a directory" in out), out
        assert out.splitlines()[-1].startswith(f"{verb} 1 of 2 entries, ")
        assert out.splitlines()[-1].endswith("; 1 left (state unknown)")
    assert recent.cache_path.is_dir() and not old.cache_path.exists()


@pytest.mark.skipif(not Path("/sys/devices/system/cpu/online").is_file(),
                    reason="needs Linux's sysfs")
def test_cache_list_and_dry_run_see_a_lock_file_this_user_cannot_write(
        tmp_path, monkeypatch, capsys):
    """A ``.use`` file this user can read but not open for writing (another user's) was
    listed without a mark and 'would remove'd by --dry-run (exit 0), while the prune itself
    kept the entry as state unknown and exited 1. (A link to a sysfs file no one may write
    stands for such a file: chmod does not stop root.)"""
    from pytest_ragbench.datasets import Document
    from pytest_ragbench.retrievers.bm25 import BM25Retriever

    cache = tmp_path / ".pytest_cache" / "d" / "ragbench"
    retriever = BM25Retriever(cache_dir=cache)
    retriever.index([Document(f"d{i}", f"text {i} about {i % 3}") for i in range(20)])
    retriever._set_lease(None)
    use = cache / f"{retriever.cache_path.name}.use"
    target = Path("/sys/devices/system/cpu/online")
    try:
        with target.open("r+b"):
            pytest.skip(f"{target} can be opened for writing here")
    except OSError:
        if not target.exists():
            pytest.skip(f"no {target} here (no sysfs)")
    use.unlink()
    use.symlink_to(target)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(tmp_path)

    assert main(["cache", "list"]) == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines()
               if retriever.cache_path.name in x]
    assert f"[state unknown: cannot open {use}: " in line
    assert main(["cache", "prune", "--all", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"would keep {retriever.cache_path.name}: cannot tell whether a run is building " \
        f"or using it: cannot open {use}: " in out
    assert main(["cache", "prune", "--all"]) == 1
    assert "1 kept (state unknown)" in capsys.readouterr().out
    assert retriever.cache_path.is_dir()


@pytest.mark.parametrize("where", ["ini addopts", "PYTEST_ADDOPTS"])
def test_cache_finds_the_index_cache_moved_by_an_override_in_addopts(
        pytester, monkeypatch, capsys, where):
    """``-o cache_dir=...`` in the ini's ``addopts`` or in ``PYTEST_ADDOPTS`` moves pytest's
    cache (and the index cache in it) as in the ini itself: ``ragbench cache list`` looked in
    the ini's (or pytest's default) folder and said 'no index cache here', calling that
    pytest's default cache folder."""
    from pytest_ragbench.cli.pytestini import _overrides_from_ini_addopts

    if where == "ini addopts" and not _overrides_from_ini_addopts():
        pytest.skip("this pytest reads its ini's values before the ini's addopts")
    ini = "[pytest]\ncache_dir = build/ini\n"
    if where == "ini addopts":
        ini += ("addopts = -p no:randomly -o cache_dir=build/first "
                "--override-ini=cache_dir=build/moved\n")
    else:
        monkeypatch.setenv("PYTEST_ADDOPTS", "-o cache_dir=build/moved")
    (pytester.path / "pytest.ini").write_text(ini)
    pytester.makefile(".jsonl", corpus='{"id": "d1", "text": "espresso grind size"}\n')
    pytester.makefile(".jsonl", queries='{"id": "q1", "text": "grind", "relevant": ["d1"]}')
    pytester.makefile(".yaml", suite="dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
                                     "retrievers: {bm25: {}}\nmetrics: [recall@10]\n")
    monkeypatch.chdir(pytester.path)
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=1)
    cache = pytester.path / "build" / "moved" / "d" / "ragbench"
    built = sorted(p.name for p in cache.glob("bm25-*") if p.is_dir())
    assert len(built) == 1  # where pytest put it
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"index cache: {cache}\n") and built[0] in out
    shutil.rmtree(cache)
    assert main(["cache", "list"]) == 0
    origin = (f"the addopts of {pytester.path / 'pytest.ini'}" if where == "ini addopts"
              else "PYTEST_ADDOPTS")
    assert capsys.readouterr().out.startswith(
        f"no index cache here: {cache} does not exist (-o cache_dir=build/moved in {origin})")
