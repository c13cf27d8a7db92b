"""A user's RAG service under test: an ``http`` pipeline's wall time against its bound.

Run from anywhere (it starts pytest in subprocesses, with the installed plugin)::

    python benchmarks/pipeline_throughput.py [--items 64] [--latency 0.25] [--concurrency 8]

A service on 127.0.0.1 answers each question after ``latency`` seconds (as many at once as it
is sent) and counts the requests in flight. The suite asks it every question through the
``http`` pipeline, once with ``concurrency: 1`` (one question at a time) and once with
``concurrency``, at ``-n 0`` and ``-n 2``. The best the service allows is
``items * latency / concurrency``: ``span`` is the service's own time from the first request
to the last answer, and its ratio to that bound shows what asking costs on top (target
<= 1.25x at ``concurrency``); ``latency`` is the median of the cases' ``latency_ms`` against
the service's (what a case measures must stay the service's time, not the items' queue).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.25


class Service:
    """Answers every POST after ``latency`` seconds; keeps when requests came and went."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.first = self.last = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.now += 1
                    owner.most = max(owner.most, owner.now)
                    owner.first = owner.first or time.perf_counter()
                time.sleep(owner.latency)
                n = body["query_id"][1:]
                data = json.dumps({"answer": f"answer {n}",
                                   "contexts": [{"id": f"d{n}"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with owner.lock:
                    owner.now -= 1
                    owner.last = time.perf_counter()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/answer"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.most, self.first, self.last = 0, 0.0, 0.0


def write_suite(folder: Path, items: int, url: str, concurrency: int) -> None:
    with (folder / "corpus.jsonl").open("w") as fh:
        for i in range(items):
            fh.write(json.dumps({"_id": f"d{i}", "text": f"document {i}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        for i in range(items):
            fh.write(json.dumps({"_id": f"q{i}", "text": f"question {i}",
                                 "relevant": {f"d{i}": 1}}) + "\n")
    (folder / "suite.yaml").write_text(
        "name: service\n"
        "dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
        f"pipelines:\n  app: {{type: http, url: '{url}', concurrency: {concurrency}}}\n"
        "metrics: [recall@10]\n", encoding="utf-8")


def run(folder: Path, workers: int) -> tuple[float, list[float]]:
    args = [sys.executable, "-m", "pytest", "--ragbench=suite.yaml", "-q", "-p",
            "no:cacheprovider", "--ragbench-out", "out"]
    if workers:
        args += ["-n", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"pytest failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    cases = (folder / "out" / "latest" / "cases.jsonl").read_text().splitlines()
    return wall, [json.loads(c)["latency_ms"] for c in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", default="0,2")
    opts = parser.parse_args()
    service = Service(opts.latency)
    print(f"{opts.items} questions, service latency {opts.latency * 1000:.0f} ms")
    print(" conc  -n   wall s  span s  bound s  span ratio  max in flight  latency ms (median)")
    worst = 0.0
    for concurrency in (1, opts.concurrency):
        for workers in (int(w) for w in opts.workers.split(",")):
            with tempfile.TemporaryDirectory(prefix="ragbench-pipeline-bench-") as tmp:
                folder = Path(tmp)
                write_suite(folder, opts.items, service.url, concurrency)
                service.reset()
                wall, latencies = run(folder, workers)
            span = service.last - service.first
            bound = opts.items * opts.latency / concurrency
            ratio = span / bound
            if concurrency == opts.concurrency:
                worst = max(worst, ratio)
            print(f" {concurrency:4d}  {workers:2d}  {wall:7.2f}  {span:6.2f}  {bound:7.2f}  "
                  f"{ratio:9.3f}x  {service.most:13d}  {statistics.median(latencies):8.1f}")
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"span within {TARGET_RATIO}x of its bound at concurrency {opts.concurrency}: "
          f"{verdict} (worst {worst:.3f}x)")


if __name__ == "__main__":
    main()
