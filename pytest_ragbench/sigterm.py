"""Replacing the SIGTERM handler of a pytest process for a while, and putting it back.

The controller turns SIGTERM into a Ctrl-C while cases run (``session.SigtermAsInterrupt``),
and so does an xdist worker that collected cases (``worker_exits.interrupt_on_sigterm``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any


def replace_sigterm(handler: Callable[[int, Any], None], *,
                    keep_ignored: bool = False) -> Callable[[], None] | None:
    """Make ``handler`` this process's SIGTERM handler; returns what puts the previous one
    back. None, and nothing changed, off the main thread, where the platform has no SIGTERM
    to handle, or (``keep_ignored``) when SIGTERM is ignored on purpose."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if keep_ignored and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            return None
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main interpreter thread / no SIGTERM
        return None

    def restore() -> None:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore


def drop_lineless_frames(excinfo: Any) -> None:
    """Leave out of an interrupt's traceback the frames that have no line number.

    A signal raised as a KeyboardInterrupt lands between any two instructions, some of which
    have no line (``tb_lineno`` None), and pytest's report of the interrupt then failed with a
    TypeError of its own (exit status 1 and a traceback instead of an interrupted run's 2).
    ``excinfo``: the ``pytest.ExceptionInfo`` of ``pytest_keyboard_interrupt``.
    """
    def has_line(entry: Any) -> bool:
        try:
            return isinstance(entry.lineno, int)
        except TypeError:  # pytest's lineno subtracts 1 from None
            return False

    with contextlib.suppress(AttributeError, TypeError):
        excinfo.traceback = excinfo.traceback.filter(has_line)
