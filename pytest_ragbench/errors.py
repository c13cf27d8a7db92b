"""Error types that carry where bad input came from, so users get one precise message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path


class RagbenchError(Exception):
    """Base class of every error the plugin reports to users without a traceback."""


class SuiteError(RagbenchError):
    """Bad input in a suite file or a dataset it names.

    The message reads ``FILE:LINE: KEY.PATH: what was wrong (expected ...)`` with the parts that
    are known; it is what the user sees, as a usage or collection error.
    """

    #: The problems an error of several lines is made of (each a line), so that it can be
    #: merged into a larger one in the order of the file.
    parts: tuple[SuiteError, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        self.detail = message
        super().__init__(self.format())

    def place(self, line: int | None) -> None:
        """Set the line where only the caller knows it (the message follows)."""
        self.line = line
        self.args = (self.format(),)

    def format(self) -> str:
        where = ""
        if self.file:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (where, self.key) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.detail}" if prefix else self.detail


class ComponentError(RagbenchError):
    """A component (retriever, LLM, metric, ...) could not be found or built.

    ``param`` is the key path below the component's own key (``"k1"``, ``"stopwords[0]"``)
    when one parameter is at fault, and ``path`` the same as keys (``("stopwords", 0)``), so a
    caller can point at its line; ``detail`` is then what is wrong with it, without the
    component's name (which the key path gives). When several of the component's parameters
    are at fault, ``problems`` holds an error for each (see :meth:`combine`).
    """

    def __init__(self, message: str, *, param: str | None = None,
                 path: tuple[str | int, ...] = (), detail: str | None = None,
                 problems: Sequence[ComponentError] = ()) -> None:
        super().__init__(message)
        self.param = param
        self.path = path
        self.detail = detail
        self.problems = tuple(problems)

    @classmethod
    def combine(cls, errors: Sequence[ComponentError]) -> ComponentError:
        """One error for what is wrong with one component: ``errors[0]`` alone, else an
        error whose message is a line each, with the first's parameter (for a caller that
        points at one line) and every one in ``problems``."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        return cls("\n".join(str(e) for e in errors), param=first.param, path=first.path,
                   detail=first.detail, problems=errors)

    def each(self) -> tuple[ComponentError, ...]:
        """Every problem this error stands for: those it combines, else itself."""
        return self.problems or (self,)


class ParamValueError(ValueError):
    """A component's ``ragbench_check`` (or factory) rejecting one of its own parameters.

    ``path`` is the parameter's key path below the component (``("params", "query")``) and
    ``detail`` what is wrong with it, without its name: the suite's error then names the
    parameter's key and points at its line rather than the component's. The message reads on
    its own (``params.query is set by ...``), for code that builds the component directly.
    A check that finds several raises them as one (:meth:`combine`), each at its own key.
    """

    def __init__(self, message: str, *, path: tuple[str | int, ...], detail: str,
                 problems: Sequence[ParamValueError] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.detail = detail
        self.problems = tuple(problems)

    @classmethod
    def combine(cls, errors: Sequence[ParamValueError]) -> ParamValueError:
        """Several parameters refused at once (a check that reports every problem, not its
        first): ``errors[0]`` alone, else an error whose message is a line each, with the
        first's path and every one in ``problems``."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        return cls("\n".join(str(e) for e in errors), path=first.path, detail=first.detail,
                   problems=errors)

    @classmethod
    def at(cls, name: str, detail: str) -> ParamValueError:
        """Parameter ``name`` refused: its key and line in a suite, ``name detail`` on its
        own."""
        return cls(f"{name} {detail}", path=(name,), detail=detail)

    def each(self) -> tuple[ParamValueError, ...]:
        """Every parameter refused: those this error combines, else itself."""
        return self.problems or (self,)


class ParamError(ComponentError, ValueError):
    """A :class:`ComponentError` that is also a ValueError, for callers whose contract is
    ValueError (``resolve_metric``); it keeps which parameter is at fault."""

    @classmethod
    def of(cls, exc: ComponentError, prefix: str = "") -> ParamError:
        """``exc`` as a ValueError, keeping which parameter it names."""
        return cls(f"{prefix}{exc}", param=exc.param, path=exc.path, detail=exc.detail,
                   problems=[cls.of(p, prefix) for p in exc.problems])


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def exception_text(exc: BaseException) -> str:
    """``ValueError: what went wrong``, or the type alone when the exception says nothing (a
    bare ``assert``, ``raise ValueError()``), not a colon followed by nothing. An exception
    whose ``__str__`` itself raises is named with that error: its own message cannot be had,
    and the error it raised must not escape the case that reports it."""
    try:
        text = str(exc)
    except Exception as broken:
        try:
            why = str(broken)
        except Exception:  # its error's own message is broken too: its type must do
            why = ""
        why = f"{type(broken).__name__}: {why}" if why.strip() else type(broken).__name__
        return f"{type(exc).__name__} (its message could not be read: {why})"
    return f"{type(exc).__name__}: {text}" if text.strip() else type(exc).__name__


def type_name(value: object) -> str:
    """How a value's type reads in a message about a YAML/JSON document."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(error: dict[str, object]) -> str:
    """One pydantic validation error (an item of ``ValidationError.errors()``) in our words.

    Takes the error's plain dict so this module, imported by every pytest run, never imports
    pydantic itself.
    """
    kind = error.get("type")
    ctx = error.get("ctx")
    ctx = ctx if isinstance(ctx, dict) else {}
    value = error.get("input")
    got = f"got {_shown(value)}" if isinstance(value, str | int | float) else (
        f"got {type_name(value)}")
    if kind in ("ragbench", "shape"):
        message = str(error.get("msg"))
        return message if kind == "ragbench" else f"{message}, {got}"
    simple = {
        "missing": "missing (required)",
        "model_type": "expected a mapping",
        "model_attributes_type": "expected a mapping",
        "dict_type": "expected a mapping",
        "list_type": "expected a list",
        "tuple_type": "expected a list",
        "string_type": "expected a string",
        "int_type": "expected an integer",
        "int_from_float": "expected an integer",
        "float_type": "expected a number",
        "bool_type": "expected true or false",
        "finite_number": "expected a finite number",
        "path_type": "expected a path string",
        "union_tag_not_found": "expected a mapping",
    }
    if kind == "missing":
        return simple["missing"]
    if kind in simple:
        return f"{simple[str(kind)]}, {got}"
    if kind == "extra_forbidden":
        # the schema's closed mappings put what was meant in the key's stand-in value
        return str(getattr(value, "unknown_key_message", "unknown key"))
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, {got}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")), "?")
        return f"expected a value {bounds[str(kind)]} {limit}, {got}"
    if kind in ("too_short", "too_long"):
        return f"expected {ctx.get('min_length', ctx.get('max_length'))} item(s) at " + (
            "least" if kind == "too_short" else "most") + f", {got}"
    return f"{error.get('msg')}, {got}"
