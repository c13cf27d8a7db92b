"""A second fake third-party distribution whose names clash with others (test data)."""

from __future__ import annotations


class OtherKeyword:
    """Returns nothing (never used: its names are in conflict)."""

    def index(self, corpus):
        pass

    def retrieve(self, query, k):
        return []
