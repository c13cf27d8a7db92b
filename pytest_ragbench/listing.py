"""``pytest --ragbench-list``: every component with its origin and parameters.

The layout follows ``pytest --fixtures``: a section per kind, then per component its name and
origin, its parameters, and the first line of its documentation. Listing imports every
component's module (running a suite imports only what it names); a component that cannot be
loaded is listed with the reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from .errors import ComponentError
from .registry import KINDS, ComponentInfo, Registry, describe_params

Line = tuple[str, dict[str, Any]]

_TITLES = {"retriever": "retrievers", "llm": "LLMs", "embedder": "embedders",
           "metric": "metrics"}


def _doc_line(factory: Any) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def describe(info: ComponentInfo) -> list[Line]:
    """The lines of one component."""
    head = f"{info.name} -- {info.origin}"
    if info.overrides:
        head += f" (overrides {', '.join(info.overrides)})"
    if info.conflict:
        return [(f"{info.name} -- CONFLICT: provided by {' and by '.join(info.conflict)}",
                 {"red": True, "bold": True}),
                ("    using it is an error until one of them is uninstalled or a conftest "
                 "registers the one to use", {})]
    lines: list[Line] = [(head, {"green": True})]
    try:
        factory = info.load()
    except ComponentError as exc:
        lines.append((f"    unavailable: {exc}", {"yellow": True}))
        return lines
    params = describe_params(factory)
    lines.append((f"    parameters: {params or '(none)'}", {}))
    doc = _doc_line(factory)
    if doc:
        lines.append((f"    {doc}", {}))
    return lines


def render_listing(registry: Registry) -> Iterator[Line]:
    """Lines (text, terminal markup) for every component of every kind."""
    for kind in KINDS:
        yield ("", {})
        yield (f"{_TITLES[kind]} (type names for suite files)", {"bold": True})
        infos = registry.infos(kind)
        if not infos:
            yield ("  (none)", {})
        for info in infos.values():
            for text, markup in describe(info):
                yield (f"  {text}", markup)
    yield ("", {})
    yield ("Any type may also be written as 'package.module:Factory'. Origins: built-in, "
           "distribution (entry point), conftest or plugin (pytest_ragbench_register).", {})
