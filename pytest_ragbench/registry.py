"""Component registry: resolves the names written in suite files to factories.

Kinds: ``retriever``, ``pipeline`` (a RAG system under test), ``llm``, ``embedder`` and
``metric``. Where a name can come from, and
which source wins (see ``docs/writing-a-plugin.md``):

1. ``package.module:attr`` written as a component ``type``: imported directly; not a name, so
   it never conflicts with anything.
2. The ``pytest_ragbench_make_component`` hook (see :mod:`pytest_ragbench.hookspecs`) is asked
   first for every build; an implementation returning something other than ``None`` wins.
3. Run-time registrations (:meth:`Registry.add`, usually from a ``pytest_ragbench_register``
   hook in a conftest.py or a pytest plugin). They *override* built-ins and entry points of the
   same name (``--ragbench-list`` says so); two run-time registrations of one name from
   different places are an error naming both.
4. Entry points of installed distributions, groups ``ragbench.retrievers``,
   ``ragbench.pipelines``, ``ragbench.llms``, ``ragbench.embedders`` and ``ragbench.metrics``,
   and
5. the built-ins of this package. Sources 4 and 5 are peers: one name claimed by two of them
   (two distributions, or a distribution and a built-in) is an error naming both, raised when a
   suite uses that name, so installing a package can never silently change what ``bm25``
   means.

Loading is lazy: listing names reads package metadata only; a component's module is imported
when a suite names it (validation at collection time) or when it is built.

Factories receive a suite's parameters as keyword arguments. A factory may also ask, by
parameter name, for ``cache_dir``, ``base_dir`` or ``context`` (the whole
:class:`BuildContext`); a suite key that is a Python keyword (``lambda``) is passed to the
parameter with a trailing underscore (``lambda_``). A factory may define
``ragbench_check(params, context)`` (a static or class method) to validate parameters at
collection time without building anything heavy.

Parameters are checked the same way for every kind, before ``ragbench_check`` and before
building: unknown names (with the closest accepted one), missing required ones, and each
value against the factory's type hint (validated by pydantic as a value read from a JSON/YAML
document: no string-to-number coercion, no NaN or infinity). A hint pydantic cannot validate
from such a document (an arbitrary class) is not checked. Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import keyword
import sys
import traceback
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any, Protocol

from .errors import (
    ComponentError,
    ParamError,
    ParamValueError,
    did_you_mean,
    exception_text,
    validation_message,
)

KINDS = ("retriever", "pipeline", "llm", "embedder", "metric")

#: Entry point group of each kind.
GROUPS: dict[str, str] = {kind: f"ragbench.{kind}s" for kind in KINDS}

# Built-ins are "module:attr" strings so that listing them imports nothing.
BUILTINS: dict[str, dict[str, str]] = {
    "retriever": {
        "bm25": "pytest_ragbench.retrievers.bm25:bm25_retriever",
        "dense": "pytest_ragbench.retrievers.dense:DenseRetriever",
        "hybrid": "pytest_ragbench.retrievers.hybrid:HybridRetriever",
        "run": "pytest_ragbench.retrievers.runfile:RunFileRetriever",
        "http": "pytest_ragbench.retrievers.http:HTTPRetriever",
    },
    "pipeline": {
        "http": "pytest_ragbench.pipelines.http:HTTPPipeline",
        "recorded": "pytest_ragbench.pipelines.recorded:RecordedPipeline",
        "langchain": "pytest_ragbench.pipelines.adapters:LangChainPipeline",
        "llamaindex": "pytest_ragbench.pipelines.adapters:LlamaIndexPipeline",
    },
    "llm": {
        "openai": "pytest_ragbench.llm.openai:openai_chat",
        "extractive": "pytest_ragbench.llm.extractive:ExtractiveLLM",
    },
    "embedder": {
        "hashing": "pytest_ragbench.embedders:HashingEmbedder",
        "openai": "pytest_ragbench.embedders:openai_embedder",
        "sentence-transformers": "pytest_ragbench.embedders:SentenceTransformerEmbedder",
    },
    "metric": {
        "ndcg": "pytest_ragbench.metrics.spec:ndcg",
        "recall": "pytest_ragbench.metrics.spec:recall",
        "precision": "pytest_ragbench.metrics.spec:precision",
        "mrr": "pytest_ragbench.metrics.spec:mrr",
        "map": "pytest_ragbench.metrics.spec:map_metric",
        "hit": "pytest_ragbench.metrics.spec:hit",
        "r_precision": "pytest_ragbench.metrics.spec:r_precision",
        "latency_ms": "pytest_ragbench.metrics.spec:latency_ms",
        "temporal_ndcg": "pytest_ragbench.metrics.temporal:TemporalNDCG",
        "exact_match": "pytest_ragbench.metrics.rag_components:exact_match",
        "token_f1": "pytest_ragbench.metrics.rag_components:token_f1",
        "rouge_l": "pytest_ragbench.metrics.rag_components:rouge_l",
        "answer_contains": "pytest_ragbench.metrics.rag_components:answer_contains",
        "abstention_accuracy": "pytest_ragbench.metrics.rag_components:abstention_accuracy",
        "faithfulness": "pytest_ragbench.metrics.rag_components:faithfulness",
        "answer_relevancy": "pytest_ragbench.metrics.rag_components:answer_relevancy",
        "context_precision": "pytest_ragbench.metrics.rag_components:context_precision",
        "context_recall": "pytest_ragbench.metrics.rag_components:context_recall",
        "answer_correctness": "pytest_ragbench.metrics.rag_components:answer_correctness",
        "criteria": "pytest_ragbench.metrics.rag_components:criteria",
    },
}

#: Built-ins whose dependencies are an optional extra: name -> (importable module, install hint).
REQUIRES: dict[str, dict[str, tuple[str, str]]] = {
    "embedder": {
        "sentence-transformers": (
            "sentence_transformers", "pip install 'pytest-ragbench[dense]'",
        ),
    },
}

# Names that are not components of this package but that users reach for; kind -> name -> hint.
OPTIONAL_HINTS: dict[str, dict[str, str]] = {
    "embedder": {
        "sentence_transformers": "the built-in is spelled 'sentence-transformers' "
                                 "(pip install 'pytest-ragbench[dense]')",
    },
}

#: Parameters the registry fills from the :class:`BuildContext`; never user parameters.
CONTEXT_PARAMS = ("cache_dir", "base_dir", "context")

BUILTIN_ORIGIN = "built-in"


@dataclass(frozen=True)
class ComponentInfo:
    """Where a component name comes from and how to build it."""

    kind: str
    name: str
    origin: str  # "built-in", "distribution NAME VERSION", "conftest PATH", "plugin NAME", ...
    target: str | None = None  # "module:attr", imported on first use
    factory: Callable[..., Any] | None = field(default=None, compare=False)
    overrides: tuple[str, ...] = ()  # origins this run-time registration shadows
    conflict: tuple[str, ...] = ()  # origins that all claim the name (an error on use)
    requires: tuple[str, str] | None = None  # (module, install hint) of an optional extra

    def load(self) -> Callable[..., Any]:
        """Import (if needed) and return the factory."""
        if self.conflict:
            raise ComponentError(
                f"{self.kind} {self.name!r} is provided by {' and by '.join(self.conflict)}; "
                "uninstall one of them, register the one you want from a conftest.py "
                "(pytest_ragbench_register), or name it as 'package.module:Factory'"
            )
        if self.requires is not None and importlib.util.find_spec(self.requires[0]) is None:
            raise ComponentError(
                f"{self.kind} {self.name!r} needs the optional package {self.requires[0]!r}, "
                f"which is not installed: {self.requires[1]}"
            )
        if self.factory is not None:
            return self.factory
        assert self.target is not None
        return load_target(self.target)


@dataclass(frozen=True)
class BuildContext:
    """What the plugin passes to factories that ask for it by parameter name.

    ``registry`` builds nested components (:meth:`build`); ``retriever`` returns another
    retriever of the same suite, built and indexed (hybrid retrievers use it); ``siblings``
    maps the suite's retriever names to ``(type, params)`` for collection-time checks;
    ``run_budget`` returns the run's budget (the pools whose ``concurrency`` holds across
    xdist workers), for a client of a rate-limited endpoint; None outside a run.
    ``name`` is the name the component being built has in the suite; ``run_start`` is the
    run's start time in epoch seconds (the same on every xdist worker); a metric scores
    against ``CaseResult.run_start``, which a resumed run takes from the run it resumes
    (metrics are built before it knows that run).
    """

    cache_dir: Path | None = None
    base_dir: Path | None = None
    llm_cache_path: Path | None = None  # --ragbench-cache-path / the rootdir default
    llm_cache_mode: str | None = None  # --ragbench-cache
    registry: Registry | None = field(default=None, compare=False, repr=False)
    retriever: Callable[[str], Any] | None = field(default=None, compare=False, repr=False)
    siblings: Mapping[str, tuple[str, Mapping[str, Any]]] = field(
        default_factory=dict, compare=False, repr=False)
    name: str = ""
    run_start: float | None = None
    run_budget: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    def _registry(self) -> Registry:
        return self.registry if self.registry is not None else Registry()

    def build(self, kind: str, spec: str | Mapping[str, Any]) -> Any:
        """Build a nested component from ``"type"`` or ``{"type": ..., **params}``."""
        type_name, params = split_spec(kind, spec)
        return self._registry().build(kind, type_name, params, self)

    def check(self, kind: str, spec: str | Mapping[str, Any], key: str | None = None) -> None:
        """Validate a nested component spec without building it.

        ``key``: the caller's parameter that holds the spec (a dense retriever's
        ``embedder``). Given, each problem is a :class:`ParamError` at its own key below it
        (``embedder.dim``), so the suite points at that line; else the caller's own.
        """
        type_name, params = split_spec(kind, spec)
        try:
            self._registry().check(kind, type_name, params, self)
        except ComponentError as exc:
            if key is None:
                if isinstance(exc, ParamError):
                    # its parameter path is below the nested spec, not a key of the caller's
                    raise ComponentError(str(exc)) from None
                raise
            raise ParamError.combine([
                ParamError(str(p), param=display_path((key, *p.path)), path=(key, *p.path),
                           detail=p.detail or str(p)) for p in exc.each()]) from None


def split_spec(kind: str, spec: Any) -> tuple[str, dict[str, Any]]:
    """``"hashing"`` or ``{"type": "hashing", "dim": 64}`` -> ``("hashing", {"dim": 64})``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        type_name = spec.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise ComponentError(
                f"a nested {kind} needs a 'type', e.g. {{type: hashing}}; got {dict(spec)!r}"
            )
        return type_name, {str(k): v for k, v in spec.items() if k != "type"}
    raise ComponentError(
        f"expected a {kind} name or a mapping with a 'type' key, got {type(spec).__name__}"
    )


class ComponentHook(Protocol):
    """How the plugin lets ``pytest_ragbench_make_component`` implementations build things."""

    def active(self) -> bool:
        """Whether any implementation exists (unknown names are then left to build time)."""
        ...

    def make(self, kind: str, name: str, params: Mapping[str, Any], context: BuildContext) -> Any:
        """The first non-None result of the hook, or None."""
        ...


#: The method a system's object answers with, by kind.
_SYSTEM_METHODS = {"pipeline": ("answer", "answer(query)"),
                   "retriever": ("retrieve", "retrieve(query, k)")}
#: What a user names the question when writing the answer or retrieve function itself.
_QUESTION_NAMES = frozenset({"query", "question", "q", "text", "query_text", "prompt"})


def _called_hint(kind: str, type_name: str, factory: Callable[..., Any],
                 missing: Sequence[str]) -> str:
    """Why a function asks for the question the suite cannot give it: it is the answer (or
    retrieve) function itself, named where its factory belongs ("missing required
    parameter(s) query" alone sent the user to add a query to the suite)."""
    method = _SYSTEM_METHODS.get(kind)
    if method is None or inspect.isclass(factory) or not _QUESTION_NAMES & set(missing):
        return ""
    return (f" (a {kind} type is a factory: a class, or a function that returns an object "
            f"with {method[1]}, called with the suite's parameters; {type_name!r} looks like "
            f"the {method[0]} function itself)")


def _import_failure(exc: Exception) -> str:
    """What a user's module raised while imported (or its code while called), and where:
    the file and line of a SyntaxError, else of the innermost frame outside importlib (its
    frames are frozen or its own)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} (at {exc.filename}:{exc.lineno})"
    text = exception_text(exc)
    machinery = Path(importlib.__file__ or "").parent
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.startswith("<") and Path(frame.filename).parent != machinery:
            return f"{text} (at {frame.filename}:{frame.lineno})"
    return text


def load_target(target: str) -> Callable[..., Any]:
    """Import ``package.module:attr``; raises ComponentError with the reason."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ComponentError(f"{target!r} is not of the form 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ComponentError(f"cannot import {module_name!r} for {target!r}: {exc}") from None
    except Exception as exc:
        # The module itself raised (a SyntaxError, a missing environment variable): the
        # user's error, shown as one message with where it was raised, not as a traceback
        # through the plugin and importlib.
        raise ComponentError(f"cannot import {module_name!r} for {target!r}: "
                             f"{_import_failure(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ComponentError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ComponentError(f"{target!r} is not callable")
    return obj


class Registry:
    """Name -> factory lookup for one pytest process (or one CLI run)."""

    def __init__(self, *, use_entry_points: bool = True,
                 hook: ComponentHook | None = None) -> None:
        self._added: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self._entry_points: dict[str, dict[str, list[ComponentInfo]]] | None = None
        self._use_entry_points = use_entry_points
        self._origin: str | None = None
        self.hook = hook
        # factory -> parameter name -> pydantic TypeAdapter, built on first check
        self._param_types: dict[Any, dict[str, Any]] = {}

    # -- registration ----------------------------------------------------------------------

    @contextlib.contextmanager
    def origin(self, origin: str) -> Iterator[None]:
        """Attribute :meth:`add` calls without an explicit origin to ``origin`` meanwhile."""
        previous, self._origin = self._origin, origin
        try:
            yield
        finally:
            self._origin = previous

    def add(self, kind: str, name: str, factory: Callable[..., Any] | str,
            origin: str | None = None) -> None:
        """Register a component at run time (from a hook, a plugin or a conftest.py).

        ``factory`` is a callable (class or function) or a ``"module:attr"`` string imported on
        first use. ``origin`` defaults to the plugin whose ``pytest_ragbench_register`` is
        running. A run-time registration overrides built-ins and entry points of the same name;
        registering one name from two different origins is an error naming both.
        """
        _check_kind(kind)
        if not isinstance(name, str) or not name or ":" in name:
            raise ComponentError(f"{kind} name {name!r} must be a non-empty string without ':'")
        where = origin or self._origin or "a run-time registration"
        existing = self._added[kind].get(name)
        if existing is not None and existing.origin != where:
            raise ComponentError(
                f"{kind} {name!r} is registered twice: by {existing.origin} and by {where}"
            )
        if isinstance(factory, str):
            self._added[kind][name] = ComponentInfo(kind, name, where, target=factory)
        elif callable(factory):
            self._added[kind][name] = ComponentInfo(kind, name, where, factory=factory)
        else:
            raise ComponentError(f"{kind} {name!r}: factory must be callable or 'module:attr'")

    # -- lookup ----------------------------------------------------------------------------

    def _eps(self) -> dict[str, dict[str, list[ComponentInfo]]]:
        if self._entry_points is None:
            found: dict[str, dict[str, list[ComponentInfo]]] = {k: {} for k in KINDS}
            if self._use_entry_points:
                # One scan of every installed distribution's metadata, not one per group.
                eps = _ragbench_entry_points()
                for kind in KINDS:
                    for ep in (e for e in eps if e.group == GROUPS[kind]):
                        dist = getattr(ep, "dist", None)
                        origin = (
                            f"distribution {dist.name} {dist.version}" if dist is not None
                            else f"an installed distribution ({ep.value})"
                        )
                        claims = found[kind].setdefault(ep.name, [])
                        if all(c.origin != origin for c in claims):
                            claims.append(ComponentInfo(kind, ep.name, origin, target=ep.value))
            self._entry_points = found
        return self._entry_points

    def infos(self, kind: str) -> dict[str, ComponentInfo]:
        """Every component of ``kind`` by name, after precedence (conflicts marked)."""
        _check_kind(kind)
        claims: dict[str, list[ComponentInfo]] = {
            name: [ComponentInfo(kind, name, BUILTIN_ORIGIN, target=target,
                                 requires=REQUIRES.get(kind, {}).get(name))]
            for name, target in BUILTINS[kind].items()
        }
        for name, infos in self._eps()[kind].items():
            claims.setdefault(name, []).extend(infos)
        merged: dict[str, ComponentInfo] = {}
        for name, infos in claims.items():
            if len(infos) == 1:
                merged[name] = infos[0]
            else:
                first = infos[0]
                merged[name] = ComponentInfo(
                    kind, name, first.origin, target=first.target,
                    conflict=tuple(i.origin for i in infos),
                )
        for name, info in self._added[kind].items():
            shadowed = merged.get(name)
            overrides = () if shadowed is None else (shadowed.conflict or (shadowed.origin,))
            merged[name] = ComponentInfo(kind, name, info.origin, target=info.target,
                                         factory=info.factory, overrides=overrides)
        return dict(sorted(merged.items()))

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind`` (module paths are accepted too but not listed)."""
        return list(self.infos(kind))

    def resolve(self, kind: str, type_name: str) -> ComponentInfo:
        """Find ``type_name`` (a registered name or ``module:attr``); ComponentError if unknown."""
        _check_kind(kind)
        if ":" in type_name:
            return ComponentInfo(kind, type_name, "module path", target=type_name)
        infos = self.infos(kind)
        if type_name in infos:
            return infos[type_name]
        raise ComponentError(self.unknown_message(kind, type_name, infos))

    def unknown_message(self, kind: str, type_name: str,
                        infos: Mapping[str, ComponentInfo] | None = None) -> str:
        """``unknown <kind> 'x' (did you mean 'y'?) (known: ...)`` plus an install hint."""
        known = sorted(infos if infos is not None else self.infos(kind))
        hint = OPTIONAL_HINTS.get(kind, {}).get(type_name)
        return (
            f"unknown {kind} {type_name!r}{did_you_mean(type_name, known)} "
            f"(known: {', '.join(known) or 'none'}; or 'package.module:Factory')"
            + (f"; {hint}" if hint else "")
        )

    # -- validation and building -----------------------------------------------------------

    def check(self, kind: str, type_name: str, params: Mapping[str, Any],
              ctx: BuildContext | None = None) -> None:
        """Validate a component spec without building it (imports the factory's module).

        Unknown names, missing optional packages, unknown or missing parameters and whatever
        the factory's own ``ragbench_check`` rejects raise :class:`ComponentError`. A name no
        source knows is accepted when a ``pytest_ragbench_make_component`` implementation
        exists, since only building can tell whether it handles the name.
        """
        ctx = ctx if ctx is not None else BuildContext(registry=self)
        try:
            info = self.resolve(kind, type_name)
        except ComponentError:
            if self.hook is not None and self.hook.active() and ":" not in type_name:
                return
            raise
        factory = info.load()
        try:
            self._kwargs(kind, type_name, factory, params, ctx)
            problems: list[ComponentError] = []
        except ComponentError as exc:
            problems = list(exc.each())
        checker = getattr(factory, "ragbench_check", None)
        checked = _checkable(factory, params, problems) if callable(checker) else None
        if callable(checker) and checked is not None:
            # what the component's own check finds is listed beside the parameters refused
            # above, not found a run later once they are fixed
            given, held = checked
            found = _checker_problems(checker, given, ctx, kind, type_name)
            # with a parameter held back, what the check says of it, or of the component
            # as a whole ("needs 'object'", a KeyError of a check written for a complete
            # spec), may be that parameter's absence
            problems += [p for p in found if not held
                         or (p.path and str(p.path[0]) not in held)]
        if problems:
            raise ComponentError.combine(problems)

    def build(self, kind: str, type_name: str, params: Mapping[str, Any],
              ctx: BuildContext | None = None) -> Any:
        """Build a component: the make-component hook first, then the resolved factory."""
        ctx = ctx if ctx is not None else BuildContext(registry=self)
        if ctx.registry is None:
            ctx = _with_registry(ctx, self)
        if self.hook is not None:
            made = self.hook.make(kind, type_name, dict(params), ctx)
            if made is not None:
                return made
        info = self.resolve(kind, type_name)
        factory = info.load()
        kwargs = self._kwargs(kind, type_name, factory, params, ctx)
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ComponentError(f"cannot build {kind} {type_name!r}: {exc}") from None

    def _kwargs(self, kind: str, type_name: str, factory: Callable[..., Any],
                params: Mapping[str, Any], ctx: BuildContext) -> dict[str, Any]:
        """Map suite parameters onto the factory's signature; fill context parameters."""
        sig = signature_params(factory)
        if sig is None:  # **kwargs: nothing can be checked
            return dict(params)
        accepted, required = sig
        shown = [display_name(p) for p in accepted if p not in CONTEXT_PARAMS]
        kwargs: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in params.items():
            target = f"{key}_" if keyword.iskeyword(key) and f"{key}_" in accepted else key
            if target not in accepted or key == "context" or target == "context":
                unknown.append(str(key))
            else:
                kwargs[target] = value
        # every problem of the component at once: fixing one and meeting the next a run
        # later is what one collection error is there to spare
        problems: list[ComponentError] = []
        if unknown:
            # `timeout` is the HTTP components' per-request limit; a Python component's
            # time limit is the suite's own `case_timeout`
            hint = ("; the time limit of any retriever or pipeline is case_timeout"
                    if "timeout" in unknown and kind in ("retriever", "pipeline") else "")
            problems.append(ComponentError(
                f"{kind} {type_name!r} got unknown parameter(s) {', '.join(unknown)}"
                f"{did_you_mean(unknown[0], shown)}; it accepts: "
                f"{', '.join(shown) or 'no parameters'}{hint}", param=unknown[0],
                path=(unknown[0],)
            ))
        problems += self._check_types(kind, type_name, factory, kwargs)
        for name in CONTEXT_PARAMS:
            if name in accepted and name not in kwargs:
                kwargs[name] = ctx if name == "context" else getattr(ctx, name)
        missing = [display_name(p) for p in required if p not in kwargs]
        if missing:
            problems.append(ComponentError(
                f"{kind} {type_name!r} is missing required parameter(s) {', '.join(missing)}; "
                f"it accepts: {', '.join(shown)}{_called_hint(kind, type_name, factory, missing)}"
            ))
        if problems:
            raise ComponentError.combine(problems)
        return kwargs

    def _check_types(self, kind: str, type_name: str, factory: Callable[..., Any],
                     kwargs: Mapping[str, Any]) -> list[ComponentError]:
        """Each user parameter against the factory's type hint: a ComponentError naming
        each one at fault."""
        if not kwargs:  # nothing to check: no need to build the factory's type adapters
            return []
        from pydantic import ValidationError

        try:
            types = self._param_types.get(factory)
        except TypeError:  # an unhashable callable: check without remembering
            types = None
        if types is None:
            types = param_types(factory)
            with contextlib.suppress(TypeError):
                self._param_types[factory] = types
        problems: list[ComponentError] = []
        for target, value in kwargs.items():
            adapter = types.get(target)
            if adapter is None:
                continue
            try:
                # as a document value: YAML dates and the like read as their text
                text = json.dumps(value, default=str)
            except (TypeError, ValueError):
                continue
            try:
                adapter.validate_json(text, strict=True)
            except ValidationError as exc:
                # a union reports one error per member, each under the member's label:
                # the deepest one is the member the value was meant for
                err = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
                loc = list(err["loc"])
                if loc and isinstance(loc[0], str) and _is_union(adapter.core_schema):
                    loc = loc[1:]
                where = display_path((display_name(target), *loc))
                detail = validation_message(dict(err))
                problems.append(ComponentError(
                    f"{kind} {type_name!r} parameter {where}: {detail}", param=where,
                    path=(display_name(target), *loc), detail=detail))
        return problems


def _ragbench_entry_points() -> list[EntryPoint]:
    """The entry points of the ragbench groups, as ``importlib.metadata.entry_points()`` finds
    them (the first distribution of each name on the path; its entry points in file order).

    That function parses every distribution's ``entry_points.txt``; here a file that names
    no ragbench group is skipped unparsed (every pytest run scans ~100 of them, few match).
    """
    groups = tuple(f"[{g}]" for g in GROUPS.values())
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for dist in distributions():
        # the key importlib.metadata.entry_points() keeps one distribution of a name by
        name = dist._normalized_name  # type: ignore[attr-defined]
        if name in seen:
            continue
        seen.add(name)
        text = dist.read_text("entry_points.txt")
        if text and any(g in text for g in groups):
            found.extend(ep for ep in dist.entry_points if ep.group in GROUPS.values())
    return found


def _is_union(core_schema: Any) -> bool:
    while core_schema.get("type") in ("nullable", "default"):
        core_schema = core_schema["schema"]
    return core_schema.get("type") == "union"


def param_types(factory: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> pydantic TypeAdapter of its hint, for the hints pydantic can check."""
    from pydantic import ConfigDict, PydanticUserError, TypeAdapter

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # a hint naming something only imported for type checkers
        hints = {}
    namespace = vars(sys.modules.get(getattr(target, "__module__", ""), typing))
    config = ConfigDict(strict=True, allow_inf_nan=False)
    out: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.name in CONTEXT_PARAMS or p.annotation is inspect.Parameter.empty:
            continue
        hint = hints.get(p.name, p.annotation)
        if isinstance(hint, str):
            try:
                hint = eval(hint, dict(namespace))  # the factory's own annotation text
            except Exception:
                continue
        if hint is Any:
            continue
        try:
            out[p.name] = TypeAdapter(hint, config=config)
        # PydanticUserError covers a hint it cannot build a schema for and a dataclass or
        # model hint (those refuse the config): such parameters are not checked
        except (PydanticUserError, TypeError, NameError, ValueError):
            continue
    return out


def _with_registry(ctx: BuildContext, registry: Registry) -> BuildContext:
    return replace(ctx, registry=registry)


def display_name(param: str) -> str:
    """``lambda_`` -> ``lambda``: the key a suite writes for a keyword-named parameter."""
    if param.endswith("_") and keyword.iskeyword(param[:-1]):
        return param[:-1]
    return param


def _checkable(factory: Callable[..., Any], params: Mapping[str, Any],
               refused: Sequence[ComponentError]) -> tuple[dict[str, Any], frozenset[str]] | None:
    """The parameters a factory's ``ragbench_check`` is given beside the ``refused`` ones,
    and the keys held back from it: all of them and none held back when none is refused,
    else those accepted and not refused (the check sees its defaults for the others, so it
    neither repeats nor trips over them), with the refused ones it accepts and the required
    ones missing held back. None when the factory takes ``**kwargs`` (nothing is refused
    then)."""
    if not refused:
        return dict(params), frozenset()
    sig = signature_params(factory)
    if sig is None:
        return None
    accepted, required = sig
    faulty = {str(p.path[0]) for p in refused if p.path}
    known = {display_name(a) for a in accepted if a != "context"}
    missing = {display_name(r) for r in required
               if r not in CONTEXT_PARAMS and display_name(r) not in params}
    given = {k: v for k, v in params.items() if k in known and k not in faulty}
    return given, frozenset((faulty & known) | missing)


def _checker_problems(checker: Callable[..., Any], params: dict[str, Any], ctx: BuildContext,
                      kind: str, type_name: str) -> list[ComponentError]:
    """What a factory's ``ragbench_check`` refuses of ``params``."""
    try:
        checker(params, ctx)
    except ParamError as exc:
        # the checker's own parameter, named by a message that names the component
        return list(exc.each())
    except ComponentError as exc:
        # a nested component's (a dense retriever's embedder): its parameter path is below
        # the nested spec, not a key of this component, so point at this one, a line each
        return [ComponentError(str(p)) for p in exc.each()]
    except ParamValueError as exc:
        return [ComponentError(f"{kind} {type_name!r}: {p}", param=display_path(p.path),
                               path=p.path, detail=p.detail) for p in exc.each()]
    except (TypeError, ValueError) as exc:
        return [ComponentError(f"{kind} {type_name!r}: {exc}")]
    except Exception as exc:
        # the check's own bug (a KeyError on a parameter it took for given): one line with
        # where it was raised, not a traceback through the plugin's collection
        return [ComponentError(f"{kind} {type_name!r}: its ragbench_check raised "
                               f"{_import_failure(exc)}")]
    return []


def display_path(path: Sequence[str | int]) -> str:
    """A parameter's key path as messages name it: ``embedder.dim``, ``stopwords[0]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def signature_params(factory: Callable[..., Any]) -> tuple[list[str], list[str]] | None:
    """(accepted keyword names, required ones) of a factory, or None when it takes ``**kw``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names: list[str] = []
    required: list[str] = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
    return names, required


def factory_params(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword parameter names a factory accepts, or None when it takes ``**kwargs``."""
    sig = signature_params(factory)
    return None if sig is None else sig[0]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        # a ComponentError, so that a conftest's registration shows as this one message
        raise ParamError(f"unknown component kind {kind!r}{did_you_mean(str(kind), KINDS)} "
                         f"(expected one of {', '.join(KINDS)})")


def describe_params(factory: Callable[..., Any]) -> str:
    """``name, name=default, ...`` for listings (context parameters left out)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return "..."
    parts: list[str] = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        if (p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           inspect.Parameter.KEYWORD_ONLY) or p.name in CONTEXT_PARAMS):
            continue
        name = display_name(p.name)
        parts.append(name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}")
    return ", ".join(parts)
