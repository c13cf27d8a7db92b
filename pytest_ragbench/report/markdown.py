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
