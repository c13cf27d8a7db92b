"""The component listing shared by ``pytest --ragbench-list`` and ``ragbench list``.

The layout follows ``pytest --fixtures``: a section per kind, then per component its name and
origin, the parameters a suite file can set, and a one-sentence description. Listing imports
every component's module (running a suite imports only what it names); a component that
cannot be loaded is listed with the reason.

Which parameters are shown is decided by a rule, so that plugin authors control it without
registering anything: a parameter is left out when the registry fills it (``cache_dir``,
``base_dir``, ``context``), when its name starts with ``_``, or when its annotation names a type
a suite file cannot spell (a client, a callback, a transport...). Suite files are YAML or
JSON, so what they can spell is strings, numbers, booleans, null, lists and mappings of those
(``Any`` and paths included: nested specs and file names are written that way).
"""

from __future__ import annotations

import collections.abc
import inspect
import pathlib
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ComponentError
from .llm.guard import GUARD_KEYS
from .registry import CONTEXT_PARAMS, KINDS, ComponentInfo, Registry, display_name

Line = tuple[str, dict[str, Any]]

_TITLES = {"retriever": "retrievers", "pipeline": "pipelines", "llm": "LLMs",
           "embedder": "embedders",
           "metric": "metrics"}

# The keys of the call wrapper every registered provider runs under (llm/guard.py).
_CALL_KEYS = ", ".join(GUARD_KEYS)
_CALL_NOTES = {
    # the suite loader takes it from any system's spec; no factory ever sees it
    "retriever": "In a suite's retrievers:, every type also takes case_timeout (seconds one "
                 "retrieval may take; not passed to it).",
    "pipeline": "In a suite's pipelines:, every type also takes case_timeout (seconds one "
                "answer may take; not passed to it).",
    "llm": f"In a suite's llm: or judge: {{llm: ...}}, every type but openai and extractive "
           f"also takes {_CALL_KEYS} (how it is called: retries, limits; not passed to it).",
    "embedder": f"In a suite's embedder:, every type but openai and hashing also takes "
                f"{_CALL_KEYS} (how it is called: retries, limits; not passed to it).",
}

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

_SCALARS: tuple[Any, ...] = (str, int, float, bool, type(None), None, Any, object)
_CONTAINERS: tuple[Any, ...] = (
    list, tuple, dict, set, frozenset,
    collections.abc.Sequence, collections.abc.MutableSequence, collections.abc.Mapping,
    collections.abc.MutableMapping, collections.abc.Iterable, collections.abc.Collection,
)
# Names an unresolvable string annotation may consist of and still be suite-writable; the
# string is unresolvable when its names are imported under TYPE_CHECKING only.
_PLAIN_NAMES = frozenset({
    "str", "int", "float", "bool", "None", "Any", "object", "list", "tuple", "dict", "set",
    "frozenset", "Sequence", "MutableSequence", "Mapping", "MutableMapping", "Iterable",
    "Collection", "Optional", "Union", "Literal", "Annotated", "Path", "PurePath", "typing",
    "collections", "abc", "pathlib", "t",
})


# -- parameters ------------------------------------------------------------------------------

def _annotation_scope(factory: Callable[..., Any]) -> dict[str, Any]:
    """The globals a factory's string annotations were written against."""
    target: Any = factory.__init__ if inspect.isclass(factory) else factory
    scope = getattr(inspect.unwrap(target), "__globals__", None)
    if isinstance(scope, dict):
        return scope
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    return dict(vars(module)) if module is not None else {}


def _plain_type(annotation: Any) -> bool:
    """Whether a suite file (YAML/JSON) can spell a value of this resolved annotation."""
    if annotation is inspect.Parameter.empty or annotation in _SCALARS:
        return True
    if inspect.isclass(annotation) and issubclass(annotation, pathlib.PurePath):
        return True
    if annotation in _CONTAINERS:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, (str, int, float, bool)) or a is None for a in args)
    if origin is typing.Annotated:
        return _plain_type(args[0])
    if origin is typing.Union or origin is types.UnionType or origin in _CONTAINERS:
        return all(a is Ellipsis or _plain_type(a) for a in args)
    return False


def _plain_annotation(annotation: Any, scope: dict[str, Any]) -> bool:
    if not isinstance(annotation, str):
        return _plain_type(annotation)
    try:
        # The factory's own annotation, in its own module's namespace (what get_type_hints
        # does, one parameter at a time so that one unresolvable name spoils nothing else).
        resolved = eval(annotation, scope, {})
    except Exception:  # whatever the failure, judge the spelling instead
        names = re.findall(r"[A-Za-z_]\w*", re.sub(r"'[^']*'|\"[^\"]*\"", "", annotation))
        return all(name in _PLAIN_NAMES for name in names)
    return _plain_type(resolved)


def user_params(factory: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """The parameters a suite file can set, by the module's rule; None if not introspectable.

    A ``**kwargs`` parameter is kept (the factory accepts any key).
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    scope = _annotation_scope(factory)
    return [p for p in sig.parameters.values()
            if p.kind is inspect.Parameter.VAR_KEYWORD or _user_facing(p, scope)]


def _user_facing(p: inspect.Parameter, scope: dict[str, Any]) -> bool:
    return (p.kind in _KEYWORD_KINDS and p.name not in CONTEXT_PARAMS
            and not p.name.startswith("_") and _plain_annotation(p.annotation, scope))


def describe_user_params(factory: Callable[..., Any]) -> str:
    """``name, name=default, ...`` as a suite writes them (``lambda``, not ``lambda_``)."""
    params = user_params(factory)
    if params is None:
        return "..."
    parts: list[str] = []
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        name = display_name(p.name)
        parts.append(name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}")
    return ", ".join(parts)


# -- description -----------------------------------------------------------------------------

# One pass, left to right, so that what a literal contains (``*args*``) is never read as markup.
_INLINE = re.compile(
    r":(?:[\w-]+:)?(?P<role>[\w-]+):`(?P<target>[^`]+)`"
    r"|``(?P<literal>.+?)``"
    r"|`(?P<link>[^`<]+?)\s*<[^>]*>`__?"
    r"|`(?P<ref>[^`]+)`_{0,2}"
    r"|(?<!\\)\*\*(?P<strong>\S(?:.*?\S)?)(?<!\\)\*\*"
    r"|(?<![\w*\\])\*(?P<em>\S(?:.*?\S)?)(?<!\\)\*(?![\w*])"
    r"|\\(?P<escaped>.)"
)
_FIELD = re.compile(r"^:[^:\s][^:]*:")
# A sentence ends at . ! ? followed by whitespace or the end, except after common abbreviations.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bcf)(?<!\bvs)[.!?](?=\s|$)")


def _role_text(role: str, content: str) -> str:
    titled = re.fullmatch(r"(.+?)\s*<[^>]+>", content)
    if titled:
        return titled.group(1)
    text = content.split(".")[-1] if content.startswith("~") else content
    text = text.lstrip("~!")
    if role in ("meth", "func") and not text.endswith(")"):
        text += "()"
    return text


def _inline(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if groups["role"] is not None:
        return _role_text(groups["role"], groups["target"])
    if groups["strong"] is not None or groups["em"] is not None:
        return plain_text(groups["strong"] or groups["em"])
    return next(v for k, v in groups.items() if v is not None and k != "target")


def plain_text(rest: str) -> str:
    """reST/Sphinx inline markup removed: roles, literals, links, emphasis, escapes."""
    text = re.sub(r"\s*::$", ":", rest.strip())  # "Example::" introduces a literal block
    return " ".join(_INLINE.sub(_inline, text).split())


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, as plain text."""
    lines: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip():
            if lines:
                break
            continue
        if _FIELD.match(line.strip()):  # :param x: and friends are not prose
            continue
        lines.append(line.strip())
    text = plain_text(" ".join(lines))
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text


def describe_factory(factory: Callable[..., Any]) -> str:
    """One line of plain text describing a component, or ``""``."""
    return first_sentence(inspect.getdoc(factory) or "")


# -- rendering -------------------------------------------------------------------------------

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
    params = describe_user_params(factory)
    lines.append((f"    parameters: {params or '(none)'}", {}))
    doc = describe_factory(factory)
    if doc:
        lines.append((f"    {doc}", {}))
    return lines


def render_listing(registry: Registry, *, footer: str = "") -> Iterator[Line]:
    """Lines (text, terminal markup) for every component of every kind.

    ``footer`` is appended to the closing note (the command uses it to say what it left out).
    """
    for kind in KINDS:
        yield ("", {})
        yield (f"{_TITLES[kind]} (type names for suite files)", {"bold": True})
        infos = registry.infos(kind)
        if not infos:
            yield ("  (none)", {})
        for info in infos.values():
            for text, markup in describe(info):
                yield (f"  {text}", markup)
        if kind in _CALL_NOTES:
            yield (f"  {_CALL_NOTES[kind]}", {})
    yield ("", {})
    yield ("Any type may also be written as 'package.module:Factory'. Origins: built-in, "
           "distribution (entry point), conftest or plugin (pytest_ragbench_register)."
           + (f" {footer}" if footer else ""), {})
