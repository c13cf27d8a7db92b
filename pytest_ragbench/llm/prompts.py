"""The jinja2 environment every prompt template renders in (generation and judge prompts)."""

from __future__ import annotations

import jinja2


def prompt_environment() -> jinja2.Environment:
    """Plain-text rendering (prompts are not HTML), block tags trimmed, and an undefined
    variable is an error rather than an empty string silently sent to the model."""
    return jinja2.Environment(
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined,
    )
