"""Registers the application's pipeline under a short name for suite files."""

from coffee_bot import CoffeeBot


def pytest_ragbench_register(registry):
    registry.add("pipeline", "coffee_bot", CoffeeBot)
