"""A 100,000-query suite against a bare parametrized pytest test of the same count.

Run from the repository root::

    python benchmarks/suite_scale.py [--queries 100000] [--docs 20000] [-n 0]

Writes a synthetic dataset (corpus, queries with two relevant documents each and a tag) and a
suite with two retrievers (BM25 at two parameter settings, so the summary has an A/B table) to
a temporary folder, and a test file with ``@pytest.mark.parametrize`` over as many ids doing
trivial work. Each command runs as its own subprocess; reported per command:

* wall time, and CPU time of the child (user + system, from ``RUSAGE_CHILDREN``; on a shared
  machine the steadier figure) and its peak resident memory (``ru_maxrss``);
* ``--collect-only -q``: collection alone;
* the full run, split from timestamps the plugin's own hooks would see: a tiny conftest-free
  way is used instead, ``-p`` of a helper plugin written next to the suite that notes when
  collection ends, when the last item finishes and when the session is about to exit, so the
  summary time (aggregation, A/B statistics, terminal summary, report files) is the time from
  the last item to the end of the process.

``--controller-end DOCS`` measures something else: the time from the last item to the end of
a small suite over DOCS documents under ``-n 2`` (the xdist controller used to read the whole
corpus again there, for the report's snippets).

The per-item overhead is (suite run - bare run) / items, where items = queries x retrievers for
the suite and the same number of ids for the bare test, so what remains is what the plugin
costs per item beyond pytest's own per-item protocol (BM25 retrieval and metrics included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240602

# Notes the moments the report splits the run at, in a file named by RAGBENCH_PHASES.
PHASES_PLUGIN = '''
import json, os, time

_marks = {}


def pytest_collection_finish(session):
    _marks["collected"] = time.time()


def pytest_runtest_logfinish(nodeid, location):
    _marks["last_item"] = time.time()


def pytest_unconfigure(config):
    _marks["unconfigure"] = time.time()
    with open(os.environ["RAGBENCH_PHASES"], "w") as fh:
        json.dump(_marks, fh)
'''

BARE_TEST = '''
import pytest

IDS = [f"q{i:06d}" for i in range({n})]


@pytest.mark.parametrize("case_id", IDS)
def test_case(case_id):
    assert case_id.startswith("q")
'''


def write_dataset(folder: Path, n_queries: int, n_docs: int) -> None:
    rng = np.random.default_rng(SEED)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    # Zipf-like word frequencies, so BM25 has frequent and rare terms to weigh.
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    with (folder / "corpus.jsonl").open("w") as fh:
        words = rng.choice(len(vocab), size=(n_docs, 40), p=p)
        for i in range(n_docs):
            fh.write(json.dumps({"_id": f"d{i:06d}", "title": "",
                                 "text": " ".join(vocab[words[i]].tolist())}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        # Each query takes 4 words of one document, which is relevant (grade 2), and a random
        # second document is relevant too (grade 1): the metrics are neither 0 nor 1.
        source = rng.integers(0, n_docs, size=n_queries)
        other = rng.integers(0, n_docs, size=n_queries)
        picks = rng.integers(0, words.shape[1], size=(n_queries, 4))
        tags = rng.choice(["a", "b", "c"], size=n_queries)
        for i in range(n_queries):
            text = " ".join(vocab[words[source[i], picks[i]]].tolist())
            relevant = {f"d{source[i]:06d}": 2, f"d{other[i]:06d}": 1}
            fh.write(json.dumps({"_id": f"q{i:06d}", "text": text, "relevant": relevant,
                                 "tags": [str(tags[i])]}) + "\n")
    (folder / "big.yaml").write_text(json.dumps({
        "name": "big", "dataset": {"corpus": "corpus.jsonl", "queries": "queries.jsonl"},
        "retrievers": {"bm25": {"k1": 0.9, "b": 0.4},
                       "bm25-classic": {"type": "bm25", "k1": 1.2, "b": 0.75}},
        "k": 100, "metrics": ["ndcg@10", "recall@100", "mrr@10"],
    }))


def run(cmd: list[str], folder: Path, phases: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` in ``folder``: wall and CPU seconds, peak RSS, the phase marks, the tail."""
    env = dict(os.environ)
    if phases is not None:
        env["RAGBENCH_PHASES"] = str(phases)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False, env=env)
    t1 = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode not in (0, 1):
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(cmd)}\n"
                         f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    res: dict[str, Any] = {
        "wall_s": t1 - t0,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        # RUSAGE_CHILDREN's ru_maxrss is the largest child so far: it is this child's only
        # when it grew, which the runs below ensure by running the smaller commands first.
        "peak_mb": after.ru_maxrss / 1024 if after.ru_maxrss > before.ru_maxrss else None,
        "tail": [line for line in out.stdout.strip().splitlines() if line.strip()][-1:],
        "stdout": out.stdout,
    }
    if phases is not None and phases.is_file():
        marks = json.loads(phases.read_text())
        # An xdist controller collects nothing itself: no collection mark.
        if "collected" in marks:
            res["collect_s"] = marks["collected"] - t0
        if "last_item" in marks:
            res["items_s"] = marks["last_item"] - marks.get("collected", t0)
            res["summary_s"] = t1 - marks["last_item"]
        phases.unlink()
    return res


def controller_end(n_docs: int) -> int:
    """A 20-query BM25 suite over ``n_docs`` documents (50 words each) under ``-n 2``, run
    twice with one on-disk index cache (the second run loads the index): the time from the
    last item to the end of the process, where the xdist controller aggregates and writes the
    report. With an explicit cache folder the first run's build does not count."""
    folder = Path(tempfile.mkdtemp(prefix="suite-end-"))
    write_dataset(folder, 20, n_docs)
    (folder / "phases_plugin.py").write_text(PHASES_PLUGIN)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "phases_plugin", "--rootdir", str(folder),
           "-c", os.devnull, "-n", "2", "--ragbench=big.yaml", "--ragbench-out",
           str(folder / "out"), "-o", f"cache_dir={folder / 'cache'}"]
    print(f"controller end: 20 queries x 2 retrievers over {n_docs} documents, -n 2")
    for label in ("cold index cache", "warm index cache"):
        r = run(cmd, folder, folder / "phases.json")
        print(f"  {label}: wall {r['wall_s']:.1f} s, start to last item {r['items_s']:.1f} s, "
              f"last item -> exit {r.get('summary_s', float('nan')):.1f} s "
              f"({' '.join(r['tail'])})")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("-n", dest="workers", default="0", help="pytest-xdist workers (default 0)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--controller-end", type=int, metavar="DOCS", default=0,
                    help="instead: time from the last item to exit of a 20-query suite over "
                         "DOCS documents under -n 2 (the controller must not re-read the corpus)")
    args = ap.parse_args()
    if args.controller_end:
        return controller_end(args.controller_end)
    folder = Path(tempfile.mkdtemp(prefix="suite-scale-"))
    write_dataset(folder, args.queries, args.docs)
    (folder / "phases_plugin.py").write_text(PHASES_PLUGIN)
    (folder / "test_bare.py").write_text(BARE_TEST.replace("{n}", str(2 * args.queries)))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "phases_plugin",
            "--rootdir", str(folder), "-c", os.devnull, "-n", args.workers]
    suite = ["--ragbench=big.yaml", "--ragbench-out", str(folder / "out")]
    phases = folder / "phases.json"
    items = 2 * args.queries
    print(f"synthetic suite: {args.queries} queries x 2 retrievers (BM25 0.9/0.4 and 1.2/0.75) "
          f"= {items} items, {args.docs} documents, -n {args.workers}; bare test: "
          f"{items} parametrized ids")
    # Smallest first, so that each child's ru_maxrss is a new maximum (see run()).
    rows = {
        "bare: --collect-only": run([*base, "--collect-only", "test_bare.py"], folder, phases),
        "bare: run": run([*base, "test_bare.py"], folder, phases),
        "suite: --collect-only": run([*base, "--collect-only", *suite], folder, phases),
        "suite: run (HTML, A/B)": run([*base, *suite], folder, phases),
    }
    print(f"\n{'':<24} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'collect s':>10} "
          f"{'items s':>8} {'summary s':>10}")
    for name, r in rows.items():
        def cell(key: str, fmt: str = "8.1f", r: dict[str, Any] = r) -> str:
            v = r.get(key)
            width = fmt.split(".")[0]
            return f"{v:{fmt}}" if v is not None else f"{'-':>{width}}"
        print(f"{name:<24} {cell('wall_s')} {cell('cpu_s')} {cell('peak_mb', '8.0f')} "
              f"{cell('collect_s', '10.1f')} {cell('items_s')} {cell('summary_s', '10.1f')}")
    bare, ours = rows["bare: run"], rows["suite: run (HTML, A/B)"]
    per_item = 1e3 * (ours["wall_s"] - bare["wall_s"]) / items
    per_item_cpu = 1e3 * (ours["cpu_s"] - bare["cpu_s"]) / items
    print(f"\nper item: bare {1e3 * bare['wall_s'] / items:.3f} ms, suite "
          f"{1e3 * ours['wall_s'] / items:.3f} ms; overhead over the bare test "
          f"{per_item:.3f} ms wall, {per_item_cpu:.3f} ms CPU per item (retrieval and metrics "
          f"included)")
    collect = rows["suite: --collect-only"]["wall_s"] - rows["bare: --collect-only"]["wall_s"]
    print(f"collection overhead over the bare test: {1e3 * collect / items:.3f} ms per item")
    for name in ("bare: run", "suite: run (HTML, A/B)"):
        print(f"{name} ends: {' '.join(rows[name]['tail'])}")
    ab = [line.strip() for line in ours["stdout"].splitlines() if "A/B" in line]
    print("summary A/B line: " + (ab[0] if ab else "(not shown at this summary level)"))
    summary_json = folder / "out" / "latest" / "summary.json"
    if summary_json.is_file():
        summary = json.loads(summary_json.read_text())
        for block in summary["suites"][0].get("ab") or []:
            for pair in block["pairs"]:
                print(f"  A/B {block['metric']}: {pair['a']} {pair['mean_a']:.4f} vs {pair['b']} "
                      f"{pair['mean_b']:.4f}, delta {pair['delta']:+.4f} "
                      f"[{pair['ci_low']:+.4f}, {pair['ci_high']:+.4f}], "
                      f"p (Holm) {pair['p_holm']:.4g}, n {pair['n']}")
    out_files = sorted((folder / "out").rglob("*.html"))
    if out_files:
        print(f"HTML report: {out_files[0].stat().st_size / 2**20:.1f} MB")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
