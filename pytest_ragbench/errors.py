"""Error types that carry where bad input came from, so users get one precise message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class RagbenchError(Exception):
    """Base class of every error the plugin reports to users without a traceback."""


class SuiteError(RagbenchError):
    """Bad input in a suite file or a dataset it names.

    The message reads ``FILE:LINE: KEY.PATH: what was wrong (expected ...)`` with the parts that
    are known; it is what the user sees, as a usage or collection error.
    """

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

    def format(self) -> str:
        where = ""
        if self.file:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (where, self.key) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.detail}" if prefix else self.detail


class ComponentError(RagbenchError):
    """A component (retriever, LLM, metric, ...) could not be found or built."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
