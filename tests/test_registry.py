"""Registry: precedence, conflicts, lazy entry points, parameter checks, messages (no pytest
plugin machinery here: the plugin's behaviour is in test_components_plugin.py)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench import registry as registry_module
from pytest_ragbench.errors import ComponentError
from pytest_ragbench.registry import (
    BuildContext,
    Registry,
    describe_params,
    display_name,
    split_spec,
)

THIRDPARTY = Path(__file__).parent / "data" / "thirdparty"


@pytest.fixture
def site_a(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake distribution ragbench-extra 1.2.0 made importable with its metadata."""
    path = THIRDPARTY / "site_a"
    monkeypatch.syspath_prepend(str(path))  # also invalidates importlib's caches
    for name in [m for m in sys.modules if m.startswith("ragbench_extra")]:
        monkeypatch.delitem(sys.modules, name)
    return path


@pytest.fixture
def site_b(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake distribution ragbench-clash 0.3.0 (claims 'keyword' and 'bm25')."""
    path = THIRDPARTY / "site_b"
    monkeypatch.syspath_prepend(str(path))
    return path


class Fixed:
    """A test retriever returning fixed hits."""

    def __init__(self, *, hits: int = 1, label: str = "x") -> None:
        self.hits = hits
        self.label = label

    def index(self, corpus: Any) -> None:
        pass

    def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        return [("d1", 1.0)][: self.hits]


def test_builtins_are_listed_without_importing_them() -> None:
    for mod in ("pytest_ragbench.retrievers.http", "pytest_ragbench.retrievers.runfile"):
        sys.modules.pop(mod, None)
    reg = Registry(use_entry_points=False)
    assert {"bm25", "dense", "hybrid", "run", "http"} <= set(reg.names("retriever"))
    assert {"hashing", "openai", "sentence-transformers"} <= set(reg.names("embedder"))
    assert {"ndcg", "latency_ms", "temporal_ndcg"} <= set(reg.names("metric"))
    assert reg.resolve("retriever", "run").origin == "built-in"
    assert "pytest_ragbench.retrievers.http" not in sys.modules
    assert "pytest_ragbench.retrievers.runfile" not in sys.modules


def test_entry_points_are_found_through_real_metadata_and_loaded_lazily(site_a: Path) -> None:
    reg = Registry()
    info = reg.resolve("retriever", "keyword")
    assert info.origin == "distribution ragbench-extra 1.2.0"
    assert reg.resolve("metric", "novelty").origin == "distribution ragbench-extra 1.2.0"
    assert "constant" in reg.names("embedder")
    assert "ragbench_extra.retrievers" not in sys.modules  # listed, not imported
    built = reg.build("retriever", "keyword", {"boost": 2.0})
    assert type(built).__name__ == "KeywordRetriever"
    assert built.boost == 2.0
    assert "ragbench_extra.retrievers" in sys.modules


def test_two_distributions_claiming_one_name_is_an_error_naming_both(site_a: Path,
                                                                      site_b: Path) -> None:
    reg = Registry()
    info = reg.infos("retriever")["keyword"]
    assert set(info.conflict) == {"distribution ragbench-extra 1.2.0",
                                  "distribution ragbench-clash 0.3.0"}
    with pytest.raises(ComponentError) as exc:
        reg.build("retriever", "keyword", {})
    message = str(exc.value)
    assert "ragbench-extra 1.2.0" in message
    assert "ragbench-clash 0.3.0" in message
    # Other names of the same distributions stay usable.
    assert reg.resolve("metric", "novelty").origin == "distribution ragbench-extra 1.2.0"


def test_distribution_claiming_a_builtin_name_is_a_conflict(site_b: Path) -> None:
    reg = Registry()
    with pytest.raises(ComponentError, match=r"'bm25' is provided by built-in and by "
                                             r"distribution ragbench-clash 0\.3\.0"):
        reg.check("retriever", "bm25", {})


def test_runtime_registration_overrides_and_resolves_a_conflict(site_a: Path,
                                                                 site_b: Path) -> None:
    reg = Registry()
    reg.add("retriever", "keyword", Fixed, origin="conftest tests/conftest.py")
    info = reg.resolve("retriever", "keyword")
    assert info.origin == "conftest tests/conftest.py"
    assert set(info.overrides) == {"distribution ragbench-extra 1.2.0",
                                   "distribution ragbench-clash 0.3.0"}
    assert isinstance(reg.build("retriever", "keyword", {}), Fixed)
    reg.add("retriever", "bm25", Fixed, origin="conftest tests/conftest.py")
    assert reg.resolve("retriever", "bm25").overrides == (
        "built-in", "distribution ragbench-clash 0.3.0")


def test_same_name_from_two_registrations_names_both() -> None:
    reg = Registry(use_entry_points=False)
    reg.add("metric", "mine", Fixed, origin="conftest a/conftest.py")
    reg.add("metric", "mine", Fixed, origin="conftest a/conftest.py")  # same place: fine
    with pytest.raises(ComponentError, match=r"registered twice: by conftest a/conftest\.py "
                                             r"and by plugin other"):
        reg.add("metric", "mine", Fixed, origin="plugin other")


def test_origin_context_attributes_registrations() -> None:
    reg = Registry(use_entry_points=False)
    with reg.origin("plugin p (distribution p 1.0)"):
        reg.add("retriever", "a", Fixed)
    reg.add("retriever", "b", Fixed)
    assert reg.resolve("retriever", "a").origin == "plugin p (distribution p 1.0)"
    assert reg.resolve("retriever", "b").origin == "a run-time registration"


def test_add_rejects_bad_names_and_factories() -> None:
    reg = Registry(use_entry_points=False)
    with pytest.raises(ComponentError, match="without ':'"):
        reg.add("retriever", "a:b", Fixed)
    with pytest.raises(ComponentError, match="must be callable"):
        reg.add("retriever", "x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown component kind 'retrievers'"):
        reg.add("retrievers", "x", Fixed)


def test_unknown_name_lists_known_names_with_did_you_mean() -> None:
    reg = Registry(use_entry_points=False)
    with pytest.raises(ComponentError) as exc:
        reg.resolve("retriever", "hybird")
    message = str(exc.value)
    assert message.startswith("unknown retriever 'hybird' (did you mean 'hybrid'?)")
    assert "known: bm25, dense, http, hybrid, run" in message


def test_missing_optional_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setitem(registry_module.REQUIRES["embedder"], "sentence-transformers",
                        ("no_such_module_for_ragbench", "pip install 'pytest-ragbench[dense]'"))
    reg = Registry(use_entry_points=False)
    with pytest.raises(ComponentError) as exc:
        reg.check("embedder", "sentence-transformers", {"model": "m"})
    assert "needs the optional package 'no_such_module_for_ragbench'" in str(exc.value)
    assert "pip install 'pytest-ragbench[dense]'" in str(exc.value)


def test_misspelled_optional_name_gets_a_hint() -> None:
    reg = Registry(use_entry_points=False)
    with pytest.raises(ComponentError, match=r"spelled 'sentence-transformers' \(pip install"):
        reg.resolve("embedder", "sentence_transformers")


def test_unknown_parameter_lists_the_component_parameters() -> None:
    reg = Registry(use_entry_points=False)
    reg.add("retriever", "fixed", Fixed, origin="test")
    with pytest.raises(ComponentError) as exc:
        reg.check("retriever", "fixed", {"hit": 2})
    assert str(exc.value) == ("retriever 'fixed' got unknown parameter(s) hit (did you mean "
                              "'hits'?); it accepts: hits, label")


def test_missing_required_parameter_is_named() -> None:
    reg = Registry(use_entry_points=False)
    with pytest.raises(ComponentError, match=r"retriever 'run' is missing required parameter\(s\)"
                                             r" path; it accepts: path, format"):
        reg.check("retriever", "run", {})


def test_the_answer_function_itself_given_as_a_pipeline_type_gets_a_hint() -> None:
    """A pipeline's type is a factory of an object with answer(query): the answer function
    itself was told it "is missing required parameter(s) query; it accepts: query", as if
    the suite should give it the question."""

    def my_app(query: Any) -> dict[str, str]:
        return {"answer": "?"}

    def my_search(query: Any, k: int) -> list[tuple[str, float]]:
        return []

    reg = Registry(use_entry_points=False)
    reg.add("pipeline", "app", my_app, origin="test")
    reg.add("retriever", "search", my_search, origin="test")
    with pytest.raises(ComponentError) as exc:
        reg.check("pipeline", "app", {})
    assert str(exc.value) == (
        "pipeline 'app' is missing required parameter(s) query; it accepts: query (a pipeline "
        "type is a factory: a class, or a function that returns an object with answer(query), "
        "called with the suite's parameters; 'app' looks like the answer function itself)")
    with pytest.raises(ComponentError, match=r"is missing required parameter\(s\) query, k; "
                       r"it accepts: query, k \(a retriever type is a factory: a class, or a "
                       r"function that returns an object with retrieve\(query, k\), .*"
                       r"'search' looks like the retrieve function itself\)$"):
        reg.check("retriever", "search", {})


def test_context_parameters_are_filled_and_not_user_settable(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def factory(*, size: int = 1, cache_dir: Path | None = None, base_dir: Path | None = None,
                context: BuildContext | None = None) -> Fixed:
        seen.update(cache_dir=cache_dir, base_dir=base_dir, context=context)
        return Fixed()

    reg = Registry(use_entry_points=False)
    reg.add("retriever", "f", factory, origin="test")
    ctx = BuildContext(cache_dir=tmp_path / "c", base_dir=tmp_path, name="f")
    reg.build("retriever", "f", {"size": 2}, ctx)
    assert seen["cache_dir"] == tmp_path / "c"
    assert seen["base_dir"] == tmp_path
    assert seen["context"].registry is reg  # the context knows its registry for nested builds
    with pytest.raises(ComponentError, match="unknown parameter"):
        reg.check("retriever", "f", {"context": 1})
    assert describe_params(factory) == "size=1"


def test_keyword_named_parameters_take_a_trailing_underscore() -> None:
    def factory(*, lambda_: float = 0.3) -> dict[str, float]:
        return {"lambda": lambda_}

    reg = Registry(use_entry_points=False)
    reg.add("metric", "kw", factory, origin="test")
    assert reg.build("metric", "kw", {"lambda": 0.7}) == {"lambda": 0.7}
    assert display_name("lambda_") == "lambda"
    assert display_name("size_") == "size_"
    assert describe_params(factory) == "lambda=0.3"


def test_factory_check_runs_at_collection_time() -> None:
    class Picky:
        @staticmethod
        def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
            if params.get("n", 0) > 3:
                raise ValueError("n must be at most 3")

        def __init__(self, *, n: int = 0) -> None:
            raise AssertionError("check must not build")

    reg = Registry(use_entry_points=False)
    reg.add("retriever", "picky", Picky, origin="test")
    reg.check("retriever", "picky", {"n": 1})
    with pytest.raises(ComponentError, match="retriever 'picky': n must be at most 3"):
        reg.check("retriever", "picky", {"n": 5})


def test_module_path_types_are_imported_directly() -> None:
    reg = Registry(use_entry_points=False)
    made = reg.build("retriever", f"{__name__}:Fixed", {"hits": 0})
    assert isinstance(made, Fixed)
    assert made.hits == 0
    with pytest.raises(ComponentError, match=r"cannot import 'no_such_pkg_xyz\.mod'"):
        reg.check("retriever", "no_such_pkg_xyz.mod:Thing", {})
    with pytest.raises(ComponentError, match="has no attribute 'Missing'"):
        reg.check("retriever", "pytest_ragbench.registry:Missing", {})


def test_a_module_that_raises_on_import_is_one_component_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # not a traceback through the plugin and importlib: what it raised, and where
    (tmp_path / "raises_on_import.py").write_text("import os\n\nos.environ['NO_SUCH_VAR']\n")
    (tmp_path / "bad_syntax_mod.py").write_text("x = 1\ndef f(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(use_entry_points=False)
    with pytest.raises(ComponentError) as info:
        reg.check("retriever", "raises_on_import:Thing", {})
    assert str(info.value) == (
        "cannot import 'raises_on_import' for 'raises_on_import:Thing': KeyError: "
        f"'NO_SUCH_VAR' (at {tmp_path / 'raises_on_import.py'}:3)")
    with pytest.raises(ComponentError) as info:
        reg.build("pipeline", "bad_syntax_mod:f", {})
    assert str(info.value) == (
        "cannot import 'bad_syntax_mod' for 'bad_syntax_mod:f': SyntaxError: invalid syntax "
        f"(at {tmp_path / 'bad_syntax_mod.py'}:2)")


class _Hook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def active(self) -> bool:
        return True

    def make(self, kind: str, name: str, params: Mapping[str, Any],
             context: BuildContext) -> Any:
        self.calls.append((kind, name, dict(params)))
        return Fixed(hits=0) if name == "magic" else None


def test_make_component_hook_is_asked_first_and_may_pass() -> None:
    hook = _Hook()
    reg = Registry(use_entry_points=False, hook=hook)
    assert isinstance(reg.build("retriever", "magic", {"x": 1}), Fixed)
    # passes (None): the registry builds the built-in
    emb = reg.build("embedder", "hashing", {"dim": 8})
    assert emb.dim == 8
    assert hook.calls == [("retriever", "magic", {"x": 1}), ("embedder", "hashing", {"dim": 8})]
    # an unknown name cannot be checked when a hook might build it...
    reg.check("retriever", "magic", {"x": 1})
    # ...but still fails at build time when no implementation builds it
    with pytest.raises(ComponentError, match="unknown retriever 'nothing'"):
        reg.build("retriever", "nothing", {})


def test_nested_specs() -> None:
    assert split_spec("embedder", "hashing") == ("hashing", {})
    assert split_spec("embedder", {"type": "hashing", "dim": 8}) == ("hashing", {"dim": 8})
    with pytest.raises(ComponentError, match="needs a 'type'"):
        split_spec("embedder", {"dim": 8})
    with pytest.raises(ComponentError, match="expected a embedder name or a mapping"):
        split_spec("embedder", 3)
    ctx = BuildContext(registry=Registry(use_entry_points=False))
    assert ctx.build("embedder", {"type": "hashing", "dim": 16}).dim == 16
    with pytest.raises(ComponentError, match="unknown embedder 'hashin'"):
        ctx.check("embedder", "hashin")
