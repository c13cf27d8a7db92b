"""A small terminal screen for tests: what a person would see after a stream of output.

It knows what pytest and ragbench's status line write: printable text, ``\\r``, ``\\n`` (as
a tty's ``onlcr`` shows it: a new line at column 0), ``\\b``, and the CSI sequences ``K``
(erase to the end of the line), ``A`` (up), ``C`` (right) and ``m`` (colours, ignored); OSC
sequences (pytest's terminal progress) are ignored. Rows are never scrolled off: the screen is
the whole scrollback. An unknown escape sequence fails the test rather than being guessed."""

from __future__ import annotations

import re

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def render(stream: str, width: int) -> list[str]:
    """The rows of the screen after ``stream``, right-stripped, trailing empty rows dropped."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(stream):
        ch = stream[i]
        if ch == "\x1b":
            osc = _OSC.match(stream, i)
            if osc:
                i = osc.end()
                continue
            csi = _CSI.match(stream, i)
            if not csi:
                raise AssertionError(f"unknown escape sequence at {i}: {stream[i:i + 10]!r}")
            arg, final = csi.group(1), csi.group(2)
            n = int(arg) if arg.isdigit() else 1
            if final == "K":
                del rows[row][col:]
            elif final == "A":
                row = max(0, row - n)
            elif final == "C":
                col = min(width - 1, col + n)
            elif final != "m":
                raise AssertionError(f"unknown CSI {csi.group(0)!r}")
            i = csi.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
        elif ch == "\b":
            col = max(0, col - 1)
        else:
            if col >= width:  # the terminal wraps
                row, col = row + 1, 0
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
        while len(rows) <= row:
            rows.append([])
        i += 1
    text = ["".join(r).rstrip() for r in rows]
    while text and not text[-1]:
        text.pop()
    return text
