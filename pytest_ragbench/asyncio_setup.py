"""pytest-asyncio, our dependency, as a guest in the user's pytest runs.

pytest-asyncio (0.24 to 1.x) warns at every start when its ``asyncio_default_fixture_loop_scope``
option is unset, so installing this plugin made every test run of a user's project print a
deprecation warning (and fail under ``-W error``). While unset, pytest-asyncio runs an async
fixture in the event loop of the fixture's own scope; that is what happens here too: the warning
is silenced only for that unset case, and nothing is set, so a user's async fixtures keep their
loops. A value the user set (ini file or ``-o``) is left alone, and so is any warning about it.

Not setting a value is deliberate: pytest has no public way for a plugin to give another
plugin's ini option a default (``Config.inicfg`` is deprecated, ``-o`` added to the arguments
of ``pytest_load_initial_conftests`` is read too late), and ``"function"``, the value the
warning suggests, would move users' session-scoped async fixtures to per-test loops.
"""

from __future__ import annotations

import re
import warnings

import pytest

#: The start of pytest-asyncio's message (the same from 0.24 to 1.x).
UNSET_MESSAGE = 'The configuration option "asyncio_default_fixture_loop_scope" is unset'
OPTION = "asyncio_default_fixture_loop_scope"


def quiet_unset_fixture_loop_scope(config: pytest.Config) -> None:
    """Ignore pytest-asyncio's "option is unset" warning when the user has not set it.

    Must run before pytest-asyncio's ``pytest_configure`` (a ``tryfirst`` hook); the filter
    lives in the warnings context pytest opens for configuration.
    """
    if not config.pluginmanager.hasplugin("asyncio"):
        return
    try:
        value = config.getini(OPTION)
    except ValueError:  # a pytest-asyncio without the option: nothing to warn about
        return
    if value:
        return
    warnings.filterwarnings("ignore", message=re.escape(UNSET_MESSAGE),
                            category=pytest.PytestDeprecationWarning)
