"""Metrics for scoring benchmark runs: retrieval metrics live in :mod:`.retrieval`."""
