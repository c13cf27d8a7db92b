"""Keeping secrets (API keys, tokens, passwords) out of every message a component produces.

Servers sometimes echo the key they were sent in an error body, whole or in part, and messages
quote bodies as short excerpts. Two rules make that safe:

1. scrub first, cut second: a body is redacted *before* it is cut to an excerpt, so a cut can
   never leave the head of a key that the whole-key replacement would have caught;
2. no fragments: after whole secrets are replaced, every run of :data:`MIN_FRAGMENT` or more
   characters that also occurs inside a secret is replaced too (a key echoed partially, a
   prefix cut by the server).

:class:`Redactor` is what the LLM clients, the embedders and the HTTP retriever share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Shortest run of a secret's characters that counts as a leak.
MIN_FRAGMENT = 8
#: Shortest secret replaced wherever it occurs (shorter values would match ordinary words).
MIN_SECRET = 4
MASK = "***"
#: Header names whose literal values are secrets too, not only ``${ENV}`` substitutions.
SECRET_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|cookie|password", re.I)


_AUTH_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9-]* +(\S+)")


def header_secrets(name: str, value: str, substituted: Iterable[str] = ()) -> list[str]:
    """The secrets in one request header: the values substituted from ``${ENV}`` references,
    or, for a secret-named header (Authorization, X-Api-Key, ...) written literally, its value
    without an auth scheme word (``Bearer``), so that "Bearer" itself is not a secret."""
    found = [s for s in substituted if s]
    if found or not SECRET_HEADER.search(name):
        return found
    scheme = _AUTH_SCHEME.fullmatch(value.strip())
    return [scheme.group(1) if scheme else value]


class Redactor:
    """Replaces secrets, and fragments of them, with ``***``.

    ``secrets`` are the literal values to hide; values shorter than :data:`MIN_SECRET` are
    ignored. A redactor without secrets returns texts unchanged.
    """

    __slots__ = ("_grams", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET}
        # Longest first, so a secret containing another one is replaced whole.
        self._secrets: tuple[str, ...] = tuple(sorted(kept, key=lambda s: (-len(s), s)))
        # Every run of MIN_FRAGMENT characters of any secret: a longer shared run is a chain
        # of these, so finding them all finds every leaked fragment.
        self._grams = frozenset(
            s[i:i + MIN_FRAGMENT] for s in self._secrets
            for i in range(len(s) - MIN_FRAGMENT + 1)
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secrets hidden, longest first (never print these)."""
        return self._secrets

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"

    def __call__(self, text: str) -> str:
        """``text`` with every secret and every :data:`MIN_FRAGMENT`-character run of one
        replaced by ``***``."""
        if not self._secrets or not text:
            return text
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        if not self._grams or len(text) < MIN_FRAGMENT:
            return text
        covered_until = -1
        spans: list[tuple[int, int]] = []
        for i in range(len(text) - MIN_FRAGMENT + 1):
            if text[i:i + MIN_FRAGMENT] in self._grams:
                end = i + MIN_FRAGMENT
                if spans and i <= covered_until:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((i, end))
                covered_until = end
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for start, end in spans:
            parts += [text[pos:start], MASK]
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def excerpt(self, text: str, limit: int, *, collapse: bool = False) -> str:
        """At most ``limit`` characters of ``text`` (plus ``...`` when cut), redacted before
        the cut; ``collapse`` first joins runs of whitespace into single spaces."""
        text = self(text)
        if collapse:
            text = " ".join(text.split())
        if len(text) > limit:
            text = text[:limit] + "..."
        # Collapsing whitespace can join characters into a new run of a secret.
        return self(text)
