"""The package's import graph: no cycles, and the domain never imports pytest or the glue.

Every import counts, also those inside functions (a lazy import still ties two modules
together); only ``if TYPE_CHECKING:`` blocks are left out.
"""

from __future__ import annotations

import ast
import functools
import gc
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_ragbench

PACKAGE = Path(pytest_ragbench.__file__).resolve().parent
GLUE = {"plugin", "state", "collect", "fixtures", "session", "hookspecs", "resuming"}
# Modules with no pytest import: everything but the glue, the CLI (runs pytest for `list
# --conftest`) and the report renderers that pytest's terminal writer feeds.
DOMAIN = ("answers", "budget", "datasets", "execution", "llm", "metrics", "results",
          "retrievers", "suite", "embedders", "records", "registry", "errors", "redact")


# Parsing the whole package takes a while; the package does not change during a test run, so
# every test reads the same graph (callers must not mutate what they get).
@functools.cache
def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _statements(tree: ast.AST) -> list[ast.stmt]:
    """Every statement of ``tree`` at any depth (function bodies, branches, handlers...).

    Imports are statements, so walking statements finds them all; it skips the expressions,
    most of a module's nodes (``ast.walk`` over everything was most of this file's time).
    """
    found: list[ast.stmt] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for _, value in ast.iter_fields(node):
            if isinstance(value, list):
                for child in value:
                    if isinstance(child, ast.stmt):
                        found.append(child)
                        stack.append(child)
                    elif isinstance(child, ast.excepthandler | ast.match_case):
                        stack.append(child)
    return found


@functools.cache
def import_statements(path: Path) -> tuple[list[ast.Import | ast.ImportFrom], frozenset[int]]:
    """The module's import statements (parsed once per run), and the ids of those inside an
    ``if TYPE_CHECKING:`` block. Callers must not mutate what they get."""
    # The collector off while the tree is built and walked: a syntax tree holds no reference
    # cycles (refcounting frees it), but its million allocations set off full collections that
    # walk the whole test session's heap (about 1 s of this file's 2 s in a full run).
    enabled = gc.isenabled()
    gc.disable()
    try:
        statements = _statements(ast.parse(path.read_text(encoding="utf-8")))
    finally:
        if enabled:
            gc.enable()
    imports = [s for s in statements if isinstance(s, ast.Import | ast.ImportFrom)]
    guarded = {id(sub) for s in statements
               if isinstance(s, ast.If) and "TYPE_CHECKING" in ast.dump(s.test)
               for sub in _statements(s)}
    return imports, frozenset(guarded)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    imports, skipped = import_statements(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in imports:
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("area", DOMAIN)
def test_the_domain_imports_neither_pytest_nor_the_glue(area: str) -> None:
    graph = import_graph()
    names = module_names()
    members = [n for n in names if n == f"pytest_ragbench.{area}"
               or n.startswith(f"pytest_ragbench.{area}.")]
    assert members, area
    glue = {f"pytest_ragbench.{g}" for g in GLUE}
    for name in members:
        assert not graph[name] & glue, name
        for node in import_statements(names[name])[0]:
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] not in {"pytest", "_pytest"}
                           for a in node.names), name
            elif isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] not in {"pytest", "_pytest"}, name


def test_results_and_metrics_import_no_renderer() -> None:
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith(("pytest_ragbench.results", "pytest_ragbench.metrics")):
            assert not {d for d in deps if d.startswith("pytest_ragbench.report")}, name


#: What a retrieval-only run's processes import (the plugin, collection, metrics, retrievers).
RETRIEVAL_RUN_MODULES = ("plugin", "state", "session", "collect", "metrics.contract",
                         "retrievers.bm25", "retrievers.dense", "retrievers.hybrid")
#: What an offline run that generates answers imports besides.
OFFLINE_ANSWER_MODULES = ("answers.pipeline", "execution.runtime", "execution.headstart")


def test_an_offline_run_imports_no_http_client_and_no_scipy() -> None:
    """httpx (with the OpenAI-compatible client) comes in only when a suite names an endpoint,
    scipy only for significance tests, and jinja2 only for prompts: about 0.1 s, 0.2 s and
    0.05 s of every xdist worker's start. A fresh interpreter: this one has imported
    everything already."""
    code = ("import importlib, sys\n"
            "def load(names):\n"
            "    for name in names:\n"
            "        importlib.import_module('pytest_ragbench.' + name)\n"
            "def loaded(names):\n"
            "    return sorted(m for m in names if m in sys.modules)\n"
            f"load({RETRIEVAL_RUN_MODULES!r})\n"
            "print(loaded(('scipy', 'httpx', 'jinja2', 'pytest_ragbench.llm.openai')))\n"
            f"load({OFFLINE_ANSWER_MODULES!r})\n"
            "print(loaded(('scipy', 'httpx', 'pytest_ragbench.llm.openai')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout + out.stderr
