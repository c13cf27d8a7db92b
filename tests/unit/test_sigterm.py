"""SIGTERM as a Ctrl-C: the interrupt's traceback as pytest reports it."""

from __future__ import annotations

import types

import pytest

from pytest_ragbench.sigterm import drop_lineless_frames


def _interrupt_with_a_lineless_frame() -> KeyboardInterrupt:
    def handler() -> None:
        raise KeyboardInterrupt

    try:
        handler()
    except KeyboardInterrupt as exc:
        tb = exc.__traceback__
    assert tb is not None
    # a signal can land on an instruction without a line: an offset past the code's end
    # gives such an entry (tb_lineno None)
    lineless = types.TracebackType(tb.tb_next, tb.tb_frame, 10**6, -1)
    assert lineless.tb_lineno is None
    return KeyboardInterrupt().with_traceback(lineless)


def test_an_interrupt_in_a_frame_without_a_line_is_reported_without_it() -> None:
    # pytest's report of such an interrupt failed with its own TypeError (exit 1, not the 2
    # of an interrupted run): seen when SIGTERM stopped a run during the head start
    broken = pytest.ExceptionInfo.from_exception(_interrupt_with_a_lineless_frame())
    with pytest.raises(TypeError):
        broken.getrepr(funcargs=True)
    excinfo = pytest.ExceptionInfo.from_exception(_interrupt_with_a_lineless_frame())
    drop_lineless_frames(excinfo)
    text = str(excinfo.getrepr(funcargs=True))
    assert "def handler" in text and "KeyboardInterrupt" in text
    assert len(excinfo.traceback) == 1
