"""What the coordinator and its clients agree on: the protocol version and the workerinput keys."""

from __future__ import annotations

PROTOCOL_VERSION = 2
"""Sent in the client's hello; the coordinator refuses any other."""

WORKERINPUT_ADDRESS = "ragbench_budget_address"
WORKERINPUT_TOKEN = "ragbench_budget_token"
