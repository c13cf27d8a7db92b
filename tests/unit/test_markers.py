"""The automatic ``unit`` / ``e2e`` markers of tests/conftest.py."""

from __future__ import annotations

import pytest


def test_tests_under_unit_are_marked_unit(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("e2e") is None


def test_exactly_the_tests_using_pytester_are_marked_e2e(
    request: pytest.FixtureRequest,
) -> None:
    items = request.session.items
    assert request.node in items
    for item in items:
        uses_pytester = "pytester" in getattr(item, "fixturenames", ())
        assert (item.get_closest_marker("e2e") is not None) == uses_pytester, item.nodeid
        # A unit test never starts a pytest run.
        assert not (uses_pytester and item.get_closest_marker("unit")), item.nodeid
