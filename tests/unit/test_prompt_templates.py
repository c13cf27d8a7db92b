"""Prompt templates are compiled once per text, and a broken one fails every time."""

from __future__ import annotations

import jinja2
import pytest

from pytest_ragbench.answers.prompt import compiled_prompt
from pytest_ragbench.llm.prompts import compiled


@pytest.mark.parametrize("compile_", [compiled, compiled_prompt])
def test_one_compilation_per_text(compile_):
    text = "Q: {{ question }} ({{ n }})"
    first = compile_(text)
    assert compile_(text) is first
    assert compile_(text + " ") is not first
    assert first.render(question="why", n=1) == "Q: why (1)"
    with pytest.raises(jinja2.UndefinedError):  # strict, as a fresh compilation
        first.render(question="why")


@pytest.mark.parametrize("compile_", [compiled, compiled_prompt])
def test_a_broken_template_is_an_error_each_time(compile_):
    for _ in range(2):
        with pytest.raises(jinja2.TemplateSyntaxError):
            compile_("{% if %}")


def test_generation_templates_keep_their_filter():
    assert compiled_prompt("{{ text | oneline }}").render(text="a\n\nb") == "a b"
