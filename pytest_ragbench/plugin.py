"""pytest entry point (pytest11) of pytest-ragbench."""

from __future__ import annotations
