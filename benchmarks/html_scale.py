"""How big and how slow is the HTML report of a large run? (prints figures; not a test)

Builds a synthetic run of ``--queries`` queries (default 10,000) per retriever, with top-10
retrieved documents, missed relevant documents, per-query thresholds and a few errors, in two
flavours:

- ``retrieval``: retrieval metrics only;
- ``rag``: also a generated answer, five 500-character contexts, judge verdicts with reasons,
  token usage and cost per query, and document snippets (``doc_text``) -- the worst case for
  the embedded per-query data, which the report then shortens to stay under its size budget.

For each it prints the HTML size and the render time (best of ``--repeat``), and checks the
size against the 15 MB limit the report promises for 10,000 queries. Exit status 1 if a report
is over the limit.

Run: ``python benchmarks/html_scale.py [--queries N] [--retrievers R] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from pytest_ragbench.report.html import render_html
from pytest_ragbench.results.aggregate import summarize_run

LIMIT_BYTES = 15 * 1024 * 1024
METRICS = ("ndcg@10", "recall@10", "mrr@10", "P@5")
WORDS = ("espresso", "grind", "water", "temperature", "pressure", "milk", "foam", "roast", "bean",
         "acidity", "crema", "extraction", "brew", "ratio", "filter", "kettle", "pour", "bloom",
         "origin", "altitude", "process", "washed", "natural")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def synthetic_records(n_queries: int, retrievers: int, *, rag: bool,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Records shaped like the plugin's (see pytest_ragbench.records), with random scores."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for ri in range(retrievers):
        name = f"retriever-{ri}"
        for qi in range(n_queries):
            case = f"q{qi:05d}"
            relevant = {f"doc{rng.randrange(200_000):06d}": rng.choice((1, 2))
                        for _ in range(rng.randint(1, 3))}
            retrieved = []
            for rank in range(10):
                if relevant and rng.random() < 0.25:
                    doc = rng.choice(list(relevant))
                else:
                    doc = f"doc{rng.randrange(200_000):06d}"
                retrieved.append([doc, round(20.0 - rank - rng.random(), 4),
                                  relevant.get(doc, 0)])
            seen = {d for d, _, _ in retrieved}
            missed = [[d, g] for d, g in relevant.items() if d not in seen]
            error = rng.random() < 0.005
            metrics = {m: None if error else round(rng.betavariate(2, 2), 6) for m in METRICS}
            recall = metrics["recall@10"]
            status = "error" if recall is None else ("failed" if recall < 0.2 else "ok")
            rec: dict[str, Any] = {
                "schema": 1, "suite": "suites/big.yaml", "suite_name": "big",
                "suite_hash": "ab" * 32, "dataset_hash": "cd" * 32, "retriever": name,
                "case_id": case, "run": 0, "query": f"how does {_sentence(rng, 8)} work?",
                "type": rng.choice((None, "factoid", "howto")),
                "difficulty": rng.choice((None, "easy", "hard")), "tags": ["synthetic"],
                "status": status,
                "error": {"stage": "retrieve", "type": "TimeoutError",
                          "message": "retriever timed out after 30 s"} if error else None,
                "metrics": metrics, "latency_ms": round(rng.uniform(2, 80), 3),
                "n_relevant": len(relevant), "no_relevant": False,
                "retrieved": [] if error else retrieved, "missed": missed,
                "thresholds": [{"metric": "recall@10", "op": ">=", "threshold": 0.2,
                                "value": metrics["recall@10"],
                                "passed": status != "failed", "margin": 0.0}],
            }
            if rag and not error:
                rec["answer"] = _sentence(rng, 80)
                rec["contexts"] = [_sentence(rng, 80)[:500] for _ in range(5)]
                rec["judge"] = {
                    "faithfulness": {"claims": [
                        {"claim": _sentence(rng, 12), "supported": rng.random() < 0.8,
                         "ctx": [1], "why": _sentence(rng, 15)} for _ in range(4)],
                        "supported": 3, "total": 4},
                    "context_precision": {"useful": [1, 0, 1, 0, 0],
                                          "precision_at_k": [1.0, 0.5, 0.667, 0.5, 0.4]},
                }
                rec["usage"] = {"prompt_tokens": 1800, "completion_tokens": 240, "requests": 2}
                rec["cost"] = 0.00123
            out.append(rec)
    return out


def synthetic_doc_text(records: list[dict[str, Any]], seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    docs = {d for r in records for d, *_ in [*r["retrieved"], *r["missed"]]}
    return {d: _sentence(rng, 60) for d in sorted(docs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--retrievers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the reports here")
    args = parser.parse_args(argv)
    ok = True
    for flavour in ("retrieval", "rag"):
        records = synthetic_records(args.queries, args.retrievers, rag=flavour == "rag")
        doc_text = synthetic_doc_text(records) if flavour == "rag" else None
        t0 = time.perf_counter()
        summary = summarize_run(records, {})
        t_summary = time.perf_counter() - t0
        summary["run"] = {"id": f"synthetic-{flavour}", "n_records": len(records),
                          "partial": False}
        best = float("inf")
        html = ""
        for _ in range(max(args.repeat, 1)):
            t0 = time.perf_counter()
            html = render_html(summary, records, doc_text=doc_text)
            best = min(best, time.perf_counter() - t0)
        size = len(html.encode("utf-8"))
        verdict = "ok" if size < LIMIT_BYTES else "OVER LIMIT"
        ok &= size < LIMIT_BYTES
        print(f"{flavour:<9} {len(records):>7} cases: {size / 1e6:6.2f} MB "
              f"({size / len(records):.0f} B/case), render {best:.2f} s "
              f"(summary {t_summary:.2f} s) [{verdict}]")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{flavour}.html").write_text(html, encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
