"""Escaping user-provided strings (suite, retriever, metric and query names, gate texts) for
Markdown, so that a name renders as the text it is: no raw HTML, no emphasis, no broken table.

CommonMark and GitHub's tables are the target (pull-request comments, CI step summaries).
"""

from __future__ import annotations

import re
from typing import Any

# Backslash-escaped: characters that start emphasis, links, code, headings, strikethrough or
# (in GFM tables) a new cell. CommonMark allows a backslash before any ASCII punctuation.
_ESCAPED = frozenset("\\`*_[]|#~!")
# Written as entities: a renderer that passes HTML through must never see a tag or an entity.
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_BACKTICKS = re.compile(r"`+")


def _one_line(value: Any) -> str:
    # A line break would end a table row or a heading early.
    return _LINE_BREAKS.sub(" ", str(value))


def md_text(value: Any) -> str:
    """``value`` as literal inline Markdown text, on one line (safe in a table cell)."""
    out = []
    for ch in _one_line(value):
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _ESCAPED:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def md_code(value: Any, *, in_table: bool = False) -> str:
    """``value`` as one inline code span, whatever backticks it holds.

    Code spans show HTML and emphasis literally; the fence is one backtick longer than the
    longest run inside, padded with a space when the text starts or ends with a backtick.
    ``in_table``: ``|`` is escaped, which GitHub's tables require even inside code.
    """
    text = _one_line(value)
    if in_table:
        text = text.replace("|", "\\|")
    if not text:
        return "` `"  # an empty code span does not exist
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    # A renderer strips one space from each end when both ends have one (and the text is not
    # all spaces): pad then, so that what it strips is ours.
    edge_spaces = text.startswith(" ") and text.endswith(" ") and bool(text.strip(" "))
    pad = " " if text.startswith("`") or text.endswith("`") or edge_spaces else ""
    return f"{fence}{pad}{text}{pad}{fence}"
