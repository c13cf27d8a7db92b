"""Controller side, no pytest: aggregates, statistics, gates, baselines, history, verdict.

Everything here works from the per-case records and what ``summary.json`` stores; nothing reads a
suite file or a corpus again.
"""
