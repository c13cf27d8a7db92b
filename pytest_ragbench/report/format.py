"""The number formats every output shares (terminal, Markdown, HTML, SVG, junit, failures).

One place, so a mean, a delta or a p-value reads the same wherever it is shown. A value that is
missing or not finite (None, NaN, inf) is shown as ``nan``: the summaries store such values as
null, and the outputs say "not a number" the same way.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a finite float; None for None, booleans, non-numbers, NaN and inf."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def num(value: Any, digits: int = 4, signed: bool = False) -> str:
    """A score, mean, margin or delta: ``digits`` decimals (``+`` for ``signed``), or ``nan``."""
    f = finite(value)
    if f is None:
        return "nan"
    return f"{f:+.{digits}f}" if signed else f"{f:.{digits}f}"


def p_value(value: Any) -> str:
    """A p-value: four decimals, or scientific notation below 1e-4 (so it never reads 0)."""
    f = finite(value)
    if f is None:
        return "nan"
    return f"{f:.4f}" if f >= 1e-4 else f"{f:.1e}"


def coord(x: float) -> str:
    """An SVG coordinate: two decimals, trailing zeros dropped (keeps the markup small)."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def signed(value: Any, digits: int = 4) -> str:
    """A delta or margin, always with its sign: ``num(value, digits, signed=True)``."""
    return num(value, digits, signed=True)


def count(value: int) -> str:
    """A large count in a few characters: ``950``, ``12.3k``, ``4.5M``."""
    n = int(value)
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def estimate_note(estimated: int, of: int, unit: str = "requests") -> str:
    """What a token count or spend is when ``estimated`` of its ``of`` requests (or cases)
    were counted by an estimate, the reply having said no usage; '' when none were."""
    if not estimated:
        return ""
    return f"estimated for {estimated} of {of} {unit}: the endpoint sent no usage"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``"1 error"``, ``"3 errors"``: a count with its noun in the number it takes."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def duration(seconds: float | None) -> str:
    """A duration as a person reads it: ``45s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def money(value: Any) -> str:
    """A cost in dollars: ``$0.0123`` (four decimals, as the usage lines show it)."""
    return f"${num(value)}"


def one_line(text: str) -> str:
    """``text`` safe as one terminal line: line breaks and tabs become spaces, other control
    characters (a terminal's escape sequences) U+FFFD. Names from a suite (its name may hold
    a line break) otherwise split the summary's lines or recolour the terminal."""
    if text.isprintable():
        return text
    return "".join(
        " " if c.isspace() else "\ufffd" if unicodedata.category(c) in ("Cc", "Zl", "Zp")
        else c for c in text)
