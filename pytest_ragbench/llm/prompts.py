"""The jinja2 environment every prompt template renders in (generation and judge prompts)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


def prompt_environment() -> jinja2.Environment:
    """Plain-text rendering (prompts are not HTML), block tags trimmed, and an undefined
    variable is an error rather than an empty string silently sent to the model."""
    # here, not at import: a run without generation or judging (retrieval metrics only)
    # never renders a prompt, and jinja2 cost each of its processes about 50 ms
    import jinja2

    return jinja2.Environment(
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined,
    )


@functools.lru_cache(maxsize=64)
def compiled(text: str) -> jinja2.Template:
    """``text`` compiled in :func:`prompt_environment`, once per process: compiling takes about
    10 ms a template (three for every judge), and a compiled template renders from any thread.
    """
    return prompt_environment().from_string(text)
