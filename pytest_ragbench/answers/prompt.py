"""The generation prompt: the default template, user templates and their checks.
"""

from __future__ import annotations

import functools
import hashlib
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from ..llm.extractive import ABSTAIN, PROMPT_INSTRUCTIONS
from ..llm.prompts import prompt_environment
from .config import GenerationConfig, _fail, _path

DEFAULT_TEMPLATE = """\
{{ instructions }}

{% for c in contexts %}
[{{ c.n }}] {{ c.text | oneline }}
{% endfor %}

Question: {{ question | oneline }}
"""
"""The generation prompt (one user message). It follows the passage convention of
:mod:`pytest_ragbench.llm.extractive`, so the offline provider can answer it. Variables:
``question``, ``contexts`` (list of ``{"n", "id", "text"}``, best first), ``instructions`` and
``abstain`` (the exact abstention reply); filter ``oneline`` folds whitespace."""

_TEMPLATE_SCHEMA = "gen-1"


def check_template(generation: GenerationConfig, base_dir: Path, key_prefix: str = "") -> str:
    """Read, compile and render once the generation template; its text.

    Raises :class:`ConfigError` (``generation.template: ...``) for a missing, unreadable or
    broken template, so a suite fails when it is loaded (and its pipeline when it is built)
    rather than at its first case.
    """
    template_key = _path(key_prefix, "generation")
    which = "template_file" if generation.template_file else "template"
    try:
        text = _template_text(generation, Path(base_dir), template_key)
    except UnicodeDecodeError as exc:
        raise _fail(f"{template_key}.{which}", f"cannot read template: not UTF-8 (byte "
                                               f"{exc.start}: {exc.reason})") from None
    # as many passages as a case gives it (one only, and contexts[1] was refused)
    passages = [(f"d{i}", f"passage {i}") for i in range(max(1, int(generation.contexts)))]
    try:
        template = compiled_prompt(text)
        template.render(**_context_vars("q", passages))
    except jinja2.TemplateError as exc:
        raise _fail(f"{template_key}.{which}",
                    f"bad Jinja2 template: {exc}{_template_line(exc)}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
            RecursionError) as exc:
        # an error of the template's own code (1/0, a bad call): it was a traceback
        raise _fail(f"{template_key}.{which}", f"the template fails when rendered: "
                                               f"{type(exc).__name__}: {exc}"
                                               f"{_template_line(exc)}") from None
    return text


def _template_line(exc: Exception) -> str:
    """`` (at line N of the template)`` where the error is, or nothing: the suite's line is
    that of the key naming the template, and a template file may be long."""
    line = exc.lineno if isinstance(exc, jinja2.TemplateSyntaxError) else None
    if line is None:
        # a render error: Jinja2 rewrites the traceback to show the template's own lines
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__))
                     if f.filename == "<template>"), None)
    return f" (at line {line} of the template)" if line else ""


# -- prompt template -------------------------------------------------------------------------


def template_version(template_text: str) -> str:
    """The cache-key version of a generation template: it changes with any text change."""
    digest = hashlib.sha256(
        "\0".join((template_text, PROMPT_INSTRUCTIONS, ABSTAIN)).encode("utf-8")
    ).hexdigest()[:12]
    return f"{_TEMPLATE_SCHEMA}+{digest}"


def _oneline(value: Any) -> str:
    # a passage's own blank lines would end it early in the [n] convention
    return " ".join(str(value).split())


def _environment() -> jinja2.Environment:
    env = prompt_environment()
    env.filters["oneline"] = _oneline
    return env


@functools.lru_cache(maxsize=64)
def compiled_prompt(text: str) -> jinja2.Template:
    """A generation template compiled once per process (checked when its suite loads, used
    again by each pipeline built from it; see :func:`~pytest_ragbench.llm.prompts.compiled`)."""
    return _environment().from_string(text)


def _looks_like_path(text: str) -> bool:
    # a template without a variable could not include the question, so one line without any
    # Jinja2 markup can only be meant as a file name
    return "\n" not in text and "{{" not in text and "{%" not in text


def _template_text(generation: GenerationConfig, base_dir: Path, key: str) -> str:
    if generation.template_file is not None:
        source, where = generation.template_file, f"{key}.template_file"
    elif generation.template is not None and _looks_like_path(generation.template):
        source, where = generation.template, f"{key}.template"
    elif generation.template is not None:
        return generation.template
    else:
        return DEFAULT_TEMPLATE
    path = base_dir / source
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(where, f"cannot read template {path}: {exc.strerror or exc}") from None


def _context_vars(question: str, contexts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "question": question,
        "contexts": [{"n": i, "id": d, "text": t} for i, (d, t) in enumerate(contexts, 1)],
        "instructions": PROMPT_INSTRUCTIONS,
        "abstain": ABSTAIN,
    }


