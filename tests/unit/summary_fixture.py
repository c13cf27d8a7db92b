"""A synthetic run summary (the shape :func:`pytest_ragbench.results.aggregate.summarize_run`
writes) for the renderer tests: 5 systems x 13 metrics, A/B tables, gates, a baseline."""

from __future__ import annotations

from typing import Any

SYSTEMS = ["bm25", "dense", "hybrid", "rerank", "splade"]
METRICS = ["ndcg@10", "recall@10", "mrr@10", "map@10", "precision@5", "recall@100",
           "ndcg@5", "r-precision", "success@1", "success@5", "recall@5", "precision@10",
           "latency_ms"]
N = 50


def stats(mean: float, n: int = N, direction: str = "higher") -> dict[str, Any]:
    return {"mean": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05, "std": 0.1, "n": n,
            "n_nan": 0, "direction": direction}


def synthetic_summary(*, failed_gates: int = 2, suite: str = "bench") -> dict[str, Any]:
    """5 systems x 13 metrics; every pair of systems differs significantly on ndcg@10 and
    recall@10 (so the compact A/B table has something to spell out)."""
    retrievers = []
    for i, name in enumerate(SYSTEMS):
        metrics = {m: stats(0.3 + 0.1 * i + 0.01 * j) for j, m in enumerate(METRICS)}
        metrics["latency_ms"] = stats(10.0 + i, direction="lower")
        retrievers.append({"name": name, "n_cases": N, "n_errors": 0, "n_failed": 0,
                           "n_xfailed": 0, "n_xpassed": 0, "n_no_relevant": 0,
                           "error_rate": 0.0, "errors": [], "metrics": metrics})
    ab = []
    for m in METRICS:
        pairs = []
        for i, a in enumerate(SYSTEMS):
            for j in range(i + 1, len(SYSTEMS)):
                sig = m in ("ndcg@10", "recall@10")
                pairs.append({"a": a, "b": SYSTEMS[j], "n": N, "mean_a": 0.3, "mean_b": 0.4,
                              "delta": 0.1 * (j - i), "ci_low": 0.05, "ci_high": 0.15,
                              "p_holm": 0.001 if sig else 0.4, "significant": sig})
        ab.append({"metric": m, "direction": "lower" if m == "latency_ms" else "higher",
                   "test": "permutation", "alpha": 0.05, "pairs": pairs, "best": "splade",
                   "p_best": 0.91})
    gates = []
    for i, name in enumerate(SYSTEMS):
        for metric, threshold in (("ndcg@10", 0.45), ("map@10", 0.1)):
            value = retrievers[i]["metrics"][metric]["mean"]
            passed = not (metric == "ndcg@10" and i < failed_gates)
            gates.append({"kind": "threshold", "suite": suite, "retriever": name,
                          "metric": metric, "scope": None, "op": ">=",
                          "threshold": threshold, "value": value, "passed": passed,
                          "margin": value - threshold if passed else -0.1,
                          "text": f"{metric} >= {threshold}", "n": N})
    return {"schema_version": 1, "suites": [{
        "id": "suite.yaml", "name": suite, "suite_hash": "x", "dataset_hash": "0123456789abcdef",
        "metrics": METRICS, "retrievers": retrievers, "n_cases_run": N * 5,
        "n_cases_total": N * 5, "partial": False, "ab": ab}],
        "gates": gates, "gates_passed": failed_gates == 0}


def synthetic_verdict(failed_gates: int = 2) -> dict[str, Any]:
    from pytest_ragbench.results.verdict import make_verdict

    summary = synthetic_summary(failed_gates=failed_gates)
    return make_verdict(gates=summary["gates"], rows=[], cases_run=N * 5, cases_total=N * 5,
                        partial=False)
