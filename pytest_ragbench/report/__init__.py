"""Renderers of run results: terminal summary, failure reports and result files."""
