"""Judge requests per item with ``judge: {items_per_call: N}``, and how far batched scores agree
with judging each item alone.

Run from the repository root::

    python benchmarks/judge_batching.py [--latency 0.05] [--sizes 1,5,10]

The fixture: the pipeline example's recorded outputs (``example_suites/pipeline/recorded``, 65
answers with their contexts) over the quickstart dataset (its reference answers), judged on
the five RAGAS metrics through ``pytest --ragbench`` (a subprocess, as a user runs it) by a
local OpenAI-compatible server (:class:`~pytest_ragbench.llm.testing.FakeOpenAIServer`). Its
judge is lexical and deterministic per item (claims are sentences, "supported" means most of
a claim's words are in a context, ...) and, through
:func:`~pytest_ragbench.llm.testing.per_item_judge`, answers every item of a batched prompt
exactly as it would answer that item alone. So a disagreement can only come from the batching
machinery (an entry given to the wrong item, a lost entry, a parse difference), not from a
model that judges differently in company; a real model's agreement must be measured against
that model.

For each N the table shows chat and embedding requests per item (counted at the server), the
batch sizes sent, the wall time, and per metric the mean absolute difference from N = 1 and the
share of items with exactly the same score. A last pair of rows reruns the largest N with the
response cache on (the second run must make no request), and at ``-n 2`` (same scores as
``-n 0``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_ragbench.llm.testing import (
    CHAT_PATH,
    EMBEDDINGS_PATH,
    FakeOpenAIServer,
    per_item_judge,
)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "example_suites" / "quickstart"
RECORDED = ROOT / "example_suites" / "pipeline" / "recorded" / "last_release.jsonl"
JUDGED = ("faithfulness", "answer_relevancy", "context_precision", "context_recall",
          "answer_correctness")
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3}


def _backed(claim: str, texts: Sequence[str]) -> list[int]:
    """1-based numbers of the texts holding at least 60% of the claim's words."""
    words = _words(claim)
    if not words:
        return []
    return [k + 1 for k, t in enumerate(texts) if len(words & _words(t)) >= 0.6 * len(words)]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def lexical_judge(messages: Sequence[dict[str, str]]) -> str:
    """A single-item judge reply computed from the item alone (every key, every field)."""
    prompt = next((str(m["content"]) for m in messages if m.get("role") == "user"), "")

    def line(label: str) -> str:
        found = re.search(rf"^{label}: (.*)$", prompt, flags=re.MULTILINE)
        return found.group(1) if found else ""

    answer, reference = line("ANSWER"), line("REFERENCE")
    contexts = re.findall(r"^\[\d+\] (.*)$", prompt, flags=re.MULTILINE)
    wanted = re.search(r'"questions": (\d+) different questions', prompt)
    answer_claims = _sentences(answer)
    reference_claims = _sentences(reference)
    ref_words = _words(reference)
    return json.dumps({
        "answer_claims": [
            {"claim": c, "supported": int(bool(_backed(c, contexts))), "ctx": _backed(c, contexts),
             "in_reference": int(bool(_backed(c, [reference])))} for c in answer_claims],
        "reference_claims": [
            {"claim": c, "attributed": int(bool(_backed(c, contexts))),
             "ctx": _backed(c, contexts), "in_answer": int(bool(_backed(c, [answer])))}
            for c in reference_claims],
        "useful": [int(len(ref_words & _words(x)) >= 0.3 * max(len(ref_words), 1))
                   for x in contexts],
        "questions": [f"What about {' '.join(c.split()[:6])}?"
                      for c in (answer_claims * 3)[: int(wanted.group(1)) if wanted else 0]],
        "noncommittal": int(bool(re.search(r"\b(not sure|do not know|cannot)\b", answer.lower()))),
    })


def write_suite(folder: Path, base_url: str, n: int, cache: str) -> Path:
    path = folder / f"suite{n}.yaml"
    path.write_text(json.dumps({
        "name": f"judge{n}",
        "dataset": {"corpus": str(QUICKSTART / "corpus.jsonl"),
                    "queries": str(QUICKSTART / "queries.jsonl")},
        "pipelines": {"last_release": {"type": "recorded", "path": str(RECORDED)}},
        "metrics": list(JUDGED),
        "judge": {"llm": {"type": "openai", "base_url": base_url, "model": f"judge{n}",
                          "concurrency": 16}, "items_per_call": n},
        "embedder": {"type": "openai", "base_url": base_url, "model": "emb"},
        "cache": {"mode": cache, "path": str(folder / "cache.sqlite")},
    }))
    return path


def run(folder: Path, suite: Path, workers: int = 0) -> tuple[dict[str, dict[str, Any]], float]:
    """Scores per case of one ``pytest --ragbench`` run, and its wall time."""
    out_dir = folder / f"out-{suite.stem}-{workers}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "pytest", f"--ragbench={suite}", "-q", "-p", "no:cacheprovider",
           "--rootdir", str(folder), "-c", os.devnull, f"--ragbench-out={out_dir}",
           "--ragbench-no-history", *(["-n", str(workers)] if workers else ["-p", "no:xdist"])]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    cases = next(out_dir.rglob("cases.jsonl"))
    scores = {}
    for raw in cases.read_text().splitlines():
        rec = json.loads(raw)
        if rec.get("status") == "error":
            raise SystemExit(f"case {rec['case_id']} errored: {rec.get('error')}")
        scores[rec["case_id"]] = {m: rec["metrics"].get(m) for m in JUDGED}
    return scores, wall


def agreement(base: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]],
              metric: str) -> tuple[float, float]:
    """Mean absolute difference and exact-agreement rate of ``metric`` over the cases (two
    missing values agree; one missing value is a difference of 1)."""
    diffs = []
    for case, scores in base.items():
        a, b = scores.get(metric), other[case].get(metric)
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            diffs.append(0.0 if a is None and b is None else 1.0)
        else:
            diffs.append(abs(a - b))
    return sum(diffs) / len(diffs), sum(d == 0.0 for d in diffs) / len(diffs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    ap.add_argument("--sizes", default="1,5,10", help="the items_per_call values")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(
            reply=per_item_judge(lexical_judge), latency=args.latency) as server:
        folder = Path(tmp)

        def measure(n: int, cache: str = "off", workers: int = 0
                    ) -> tuple[dict[str, dict[str, Any]], float, int, int, list[int]]:
            server.reset_counts()
            scores, wall = run(folder, write_suite(folder, server.base_url, n, cache), workers)
            sizes_sent = sorted((len(re.findall(r'^ITEM "item-\d+"$',
                                                r.body["messages"][1]["content"], re.M)) or 1)
                                for r in server.requests if r.path.endswith(CHAT_PATH[3:]))
            return (scores, wall, server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH),
                    sizes_sent)

        rows: list[tuple[str, Any]] = []
        base: dict[str, dict[str, Any]] | None = None
        for n in sizes:
            rows.append((f"N={n}", measure(n)))
            if base is None:
                base = rows[-1][1][0]
        largest = max(sizes)
        rows.append((f"N={largest} cache 1st", measure(largest, cache="on")))
        rows.append((f"N={largest} cache 2nd", measure(largest, cache="on")))
        rows.append((f"N={largest} -n 2", measure(largest, workers=2)))
        assert base is not None
        items = len(base)
        print(f"judge batching: {items} recorded answers of example_suites/pipeline, "
              f"{', '.join(JUDGED)}; latency {args.latency * 1000:.0f} ms, judge concurrency 16")
        print("  agreement with N=1 per metric: mean |difference| / share of items with the "
              "same score")
        head = "".join(f" {m[:17]:>17}" for m in JUDGED)
        print(f"  {'run':<17} {'chat/item':>9} {'emb/item':>8} {'wall s':>7}  "
              f"{'batch sizes':<22}{head}")
        for name, (scores, wall, chat, embed, sent) in rows:
            counts = Counter(sent)
            shown = ", ".join(f"{k}x{v}" for k, v in sorted(counts.items(), reverse=True)) or "-"
            cells = ""
            for metric in JUDGED:
                mad, same = agreement(base, scores, metric)
                cells += f" {f'{mad:.4f} / {100 * same:3.0f}%':>17}"
            print(f"  {name:<17} {chat / items:>9.3f} {embed / items:>8.3f} {wall:>7.2f}  "
                  f"{shown:<22}{cells}")
        print("  (batch sizes: items per chat request, 'size x count'; the judge answers each "
              "item as it would alone, so any disagreement is the batching's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
