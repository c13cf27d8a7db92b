"""The files of a run folder (``.ragbench/runs/<run id>/``) that the domain reads back.

``run.json``
    Written when the run starts, before any case: the run id, its start time and the spec of
    every suite about to run (:class:`~pytest_ragbench.results.spec.SuiteSpec`), plus the
    cases each suite holds as far as they are known then (all of them without pytest-xdist;
    with it they arrive later and live only in ``summary.json``). It is what lets
    ``ragbench report`` aggregate a run that was killed before ``summary.json`` was written
    with the suites' gates, metric directions, seed and test settings.
``cases.jsonl``
    One record per line (:mod:`pytest_ragbench.records`), appended and flushed as cases
    finish, so a crash loses no finished case (a torn last line is skipped when read).
``summary.json``
    Written at the end of the run: the aggregated summary with the run's metadata.

The report files (``cases.csv``, ``summary.md``, ``report.html``) are written by
:mod:`pytest_ragbench.report`. Nothing here imports pytest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import SuiteSpec

# The session loads this module in every pytest run (the names above); the spec reader, and the
# gate parser it brings, only when a run folder is read back.

RUN_SCHEMA_VERSION = 1

CASES_JSONL = "cases.jsonl"
SUMMARY_JSON = "summary.json"
RUN_JSON = "run.json"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read records back, skipping a torn last line left by a crash."""
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def run_start_doc(*, run_id: str, started: str, specs: Mapping[str, SuiteSpec | None],
                  collected: Mapping[str, int]) -> dict[str, Any]:
    """The content of ``run.json`` (suites whose file could not be read are left out)."""
    return {
        "schema_version": RUN_SCHEMA_VERSION,
        "id": run_id,
        "started": started,
        "suites": {sid: spec for sid, spec in sorted(specs.items()) if spec is not None},
        "collected": dict(sorted(collected.items())),
    }


def read_run_start(path: Path) -> tuple[dict[str, Any], dict[str, SuiteSpec | None],
                                        dict[str, int]]:
    """``run.json`` read back: (the doc, the specs by suite id, the cases per suite).

    A missing or unreadable file (a run folder of an older version) gives empty results;
    a spec this version cannot read is None (that suite is aggregated without gates).
    """
    from .spec import read_spec

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}, {}, {}
    if not isinstance(doc, dict):
        return {}, {}, {}
    suites = doc.get("suites")
    specs = ({str(sid): read_spec(data) for sid, data in suites.items()}
             if isinstance(suites, Mapping) else {})
    collected: dict[str, int] = {}
    raw = doc.get("collected")
    if isinstance(raw, Mapping):
        for sid, n in raw.items():
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                collected[str(sid)] = n
    return doc, specs, collected
