"""pytest entry point (pytest11) of pytest-ragbench: options, collection and per-process state.

The controller-side aggregation lives in :mod:`pytest_ragbench.session` and is registered only
where ``not hasattr(config, "workerinput")``; workers only collect and run cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import options
from .collect import RECORD_KEY, CaseItem, SuiteFile
from .errors import RagbenchError
from .registry import BuildContext, Registry
from .runtime import SuiteRuntime
from .suite import Suite, is_suite_file, load_suite

STATE_KEY = pytest.StashKey["RagbenchState"]()
REPORT_ATTR = "ragbench_record"


class RagbenchState:
    """Everything the plugin keeps for one pytest process: suites, runtimes, the registry."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.registry = Registry()
        self.explicit: list[Path] = []
        self._suites: dict[Path, Suite] = {}
        self._runtimes: dict[str, SuiteRuntime] = {}
        self._markers: set[str] = set()

    def cache_dir(self) -> Path | None:
        cache = getattr(self.config, "cache", None)
        if cache is None:
            return None
        return Path(cache.mkdir("ragbench"))

    def load_suite(self, path: Path) -> Suite:
        path = path.resolve()
        if path not in self._suites:
            self._suites[path] = load_suite(path, self.registry.names("retriever"))
        return self._suites[path]

    def runtime(self, suite_id: str, path: Path) -> SuiteRuntime:
        """The process-wide runtime of a suite, created on first use."""
        if suite_id not in self._runtimes:
            suite = self.load_suite(path)
            ctx = BuildContext(cache_dir=self.cache_dir(), base_dir=suite.path.parent)
            self._runtimes[suite_id] = SuiteRuntime(suite, suite_id, self.registry, ctx)
        return self._runtimes[suite_id]

    def register_marker(self, name: str) -> None:
        if name not in self._markers:
            self._markers.add(name)
            self.config.addinivalue_line("markers", f"{name}: ragbench query attribute")

    def close(self) -> None:
        for rt in self._runtimes.values():
            rt.close()
        self._runtimes.clear()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def _suite_args(config: pytest.Config) -> list[Path]:
    paths: list[Path] = []
    invocation = config.invocation_params.dir
    for raw in config.getoption("ragbench") or []:
        paths.append((invocation / raw).resolve())
    for raw in config.getini("ragbench_suites") or []:
        paths.append((config.rootpath / raw).resolve())
    for p in paths:
        if not p.is_file():
            raise pytest.UsageError(f"ragbench: suite file not found: {p}")
    return list(dict.fromkeys(paths))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ragbench: a case collected from a ragbench suite")
    state = RagbenchState(config)
    config.stash[STATE_KEY] = state
    state.explicit = _suite_args(config)
    if state.explicit:
        _add_suites_to_args(config, state.explicit)
    if not hasattr(config, "workerinput"):
        from .session import RagbenchSession

        config.pluginmanager.register(RagbenchSession(config), "ragbench-session")


def _add_suites_to_args(config: pytest.Config, suites: list[Path]) -> None:
    """Make the suites collection arguments; alone when no test paths were given explicitly."""
    explicit_args = config.args_source == pytest.Config.ArgsSource.ARGS
    current = list(config.args) if explicit_args else []
    have = set()
    for a in current:
        try:
            have.add((config.invocation_params.dir / a.split("::")[0]).resolve())
        except OSError:
            continue
    current += [str(p) for p in suites if p not in have]
    config.args[:] = current


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> SuiteFile | None:
    state = parent.config.stash[STATE_KEY]
    if is_suite_file(file_path) or file_path.resolve() in state.explicit:
        return SuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "setup" and isinstance(item, CaseItem):
        rec = item.stash.get(RECORD_KEY, None)
        if rec is not None:
            # A plain attribute survives xdist's report serialisation (it copies __dict__).
            setattr(report, REPORT_ATTR, rec)
    return report


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE_KEY, None)
    if state is None or not state.explicit:
        return None
    return [f"ragbench suites: {', '.join(str(p) for p in state.explicit)}"]


__all__ = ["REPORT_ATTR", "STATE_KEY", "RagbenchError", "RagbenchState"]
