"""Component registry: resolves names from suite files to factories.

Sources, in order of precedence (a name found in an earlier source wins; two *installed
distributions* claiming one name is an error naming both):

1. ``package.module:attr`` written directly as a component ``type`` in a suite file;
2. components registered at run time (conftest hooks, plugins) through :meth:`Registry.add`;
3. entry points of installed distributions, groups ``ragbench.<kind>s`` (loaded lazily: only a
   name a suite uses is imported);
4. the built-ins of this package.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import ComponentError, did_you_mean

KINDS = ("retriever", "llm", "embedder", "metric")

# Built-ins are "module:attr" strings so that listing them imports nothing.
BUILTINS: dict[str, dict[str, str]] = {
    "retriever": {
        "bm25": "pytest_ragbench.retrievers.bm25:BM25Retriever",
    },
    "llm": {},
    "embedder": {},
    "metric": {},
}

# Optional built-ins whose dependencies are an extra: name -> pip install hint.
OPTIONAL_HINTS: dict[str, dict[str, str]] = {"retriever": {}, "llm": {}, "embedder": {}}


@dataclass(frozen=True)
class ComponentInfo:
    """Where a component name comes from and how to build it."""

    kind: str
    name: str
    origin: str  # "built-in", "distribution NAME VERSION", "conftest PATH", "plugin NAME"
    target: str | None = None  # "module:attr", imported on first use
    factory: Callable[..., Any] | None = field(default=None, compare=False)

    def load(self) -> Callable[..., Any]:
        if self.factory is not None:
            return self.factory
        assert self.target is not None
        return load_target(self.target)


@dataclass(frozen=True)
class BuildContext:
    """What the plugin passes to factories that ask for it by parameter name."""

    cache_dir: Path | None = None
    base_dir: Path | None = None


def load_target(target: str) -> Callable[..., Any]:
    """Import ``package.module:attr``; raises ComponentError with the reason."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ComponentError(f"{target!r} is not of the form 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ComponentError(f"cannot import {module_name!r} for {target!r}: {exc}") from None
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
    """Name -> factory lookup for one pytest session (or one CLI run)."""

    def __init__(self, *, use_entry_points: bool = True) -> None:
        self._added: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self._entry_points: dict[str, dict[str, ComponentInfo]] | None = None
        self._use_entry_points = use_entry_points

    def add(self, kind: str, name: str, factory: Callable[..., Any] | str, origin: str) -> None:
        """Register a component at run time (from a hook or a plugin)."""
        _check_kind(kind)
        existing = self._added[kind].get(name)
        if existing is not None and existing.origin != origin:
            raise ComponentError(
                f"{kind} {name!r} is registered twice: by {existing.origin} and by {origin}"
            )
        if isinstance(factory, str):
            self._added[kind][name] = ComponentInfo(kind, name, origin, target=factory)
        else:
            self._added[kind][name] = ComponentInfo(kind, name, origin, factory=factory)

    def _eps(self) -> dict[str, dict[str, ComponentInfo]]:
        if self._entry_points is None:
            found: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
            if self._use_entry_points:
                for kind in KINDS:
                    for ep in entry_points(group=f"ragbench.{kind}s"):
                        dist = getattr(ep, "dist", None)
                        origin = (
                            f"distribution {dist.name} {dist.version}" if dist is not None
                            else "an installed distribution"
                        )
                        prev = found[kind].get(ep.name)
                        if prev is not None and prev.origin != origin:
                            raise ComponentError(
                                f"{kind} {ep.name!r} is provided by two packages: "
                                f"{prev.origin} and {origin}; uninstall one of them"
                            )
                        found[kind][ep.name] = ComponentInfo(kind, ep.name, origin,
                                                             target=ep.value)
            self._entry_points = found
        return self._entry_points

    def infos(self, kind: str) -> dict[str, ComponentInfo]:
        """Every component of ``kind`` by name, after precedence."""
        _check_kind(kind)
        merged: dict[str, ComponentInfo] = {
            name: ComponentInfo(kind, name, "built-in", target=target)
            for name, target in BUILTINS[kind].items()
        }
        merged.update(self._eps()[kind])
        merged.update(self._added[kind])
        return merged

    def names(self, kind: str) -> list[str]:
        return sorted(self.infos(kind))

    def resolve(self, kind: str, type_name: str) -> ComponentInfo:
        """Find ``type_name`` (a registered name or ``module:attr``)."""
        if ":" in type_name:
            return ComponentInfo(kind, type_name, "module path", target=type_name)
        infos = self.infos(kind)
        if type_name in infos:
            return infos[type_name]
        hint = OPTIONAL_HINTS.get(kind, {}).get(type_name)
        if hint:
            raise ComponentError(f"{kind} {type_name!r} needs an optional extra: {hint}")
        raise ComponentError(
            f"unknown {kind} {type_name!r}{did_you_mean(type_name, infos)} "
            f"(known: {', '.join(sorted(infos)) or 'none'})"
        )

    def build(
        self, kind: str, type_name: str, params: Mapping[str, Any], ctx: BuildContext
    ) -> Any:
        """Build a component, passing context values the factory asks for by name."""
        info = self.resolve(kind, type_name)
        factory = info.load()
        kwargs = dict(params)
        accepted = factory_params(factory)
        if accepted is not None:
            unknown = [k for k in kwargs if k not in accepted]
            if unknown:
                raise ComponentError(
                    f"{kind} {type_name!r} got unknown parameter(s) {', '.join(unknown)}"
                    f"{did_you_mean(unknown[0], accepted)}; it accepts: "
                    f"{', '.join(accepted) or 'no parameters'}"
                )
            for name in ("cache_dir", "base_dir"):
                if name in accepted and name not in kwargs:
                    kwargs[name] = getattr(ctx, name)
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ComponentError(f"cannot build {kind} {type_name!r}: {exc}") from None


def factory_params(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword parameter names a factory accepts, or None when it takes ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names: list[str] = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
    return names


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r} (expected one of {', '.join(KINDS)})")


def describe_params(factory: Callable[..., Any]) -> str:
    """``name=default, ...`` for listings."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return "..."
    parts: Iterable[str] = (
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in ("cache_dir", "base_dir")
    )
    return ", ".join(parts)
