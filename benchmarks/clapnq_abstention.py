"""ClapNQ dev as a RAG suite: retrieval, offline extractive answers, and abstention accuracy on
the real unanswerable split (300 answerable + 300 unanswerable questions).

The passages of all questions form the corpus; an answerable question's gold passage is its one
relevant document and its answers are the references; an unanswerable question has no reference,
so the system should abstain ("I don't know."). Runs `pytest --ragbench` on the converted suite
and prints the summary.

    python benchmarks/clapnq_abstention.py [--data ../shared/datasets/clapnq] [--limit 300]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "datasets" / "clapnq"


def convert(data: Path, out: Path, limit: int) -> tuple[int, int, int]:
    dev = data / "annotated_data" / "dev"
    docs: dict[str, dict[str, str]] = {}
    queries = []
    for name, answerable in (("clapnq_dev_answerable.jsonl", True),
                             ("clapnq_dev_unanswerable.jsonl", False)):
        with (dev / name).open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= limit:
                    break
                rec = json.loads(line)
                ids = []
                for p in rec["passages"]:
                    key = hashlib.sha1((p["title"] + "\n" + p["text"]).encode()).hexdigest()[:16]
                    docs.setdefault(key, {"_id": key, "title": p["title"], "text": p["text"]})
                    ids.append(key)
                q = {"_id": rec["id"], "text": rec["input"],
                     "type": "answerable" if answerable else "unanswerable"}
                answers = [o["answer"] for o in rec.get("output", []) if o.get("answer")]
                if answerable:
                    q["relevant"] = {d: 1 for d in ids}
                    q["reference_answers"] = answers
                queries.append(q)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in docs.values():
            fh.write(json.dumps(d) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps(q) + "\n")
    n_ans = sum(1 for q in queries if q["type"] == "answerable")
    return len(docs), n_ans, len(queries) - n_ans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--limit", type=int, default=300, help="questions per split")
    args = ap.parse_args()
    if not (args.data / "annotated_data").is_dir():
        raise SystemExit(f"ClapNQ not found at {args.data} (pass --data)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_docs, n_ans, n_unans = convert(args.data, folder, args.limit)
        (folder / "suite.yaml").write_text(json.dumps({
            "name": "clapnq-dev",
            "dataset": {"corpus": "corpus.jsonl", "queries": "queries.jsonl"},
            "retrievers": {"bm25": {}},
            "k": 10,
            "metrics": ["recall@5", "ndcg@10", "token_f1", "rouge_l", "abstention_accuracy"],
            "llm": {"type": "extractive", "threshold": 0.5},
            "generation": {"contexts": 3},
            "gates": {"type=unanswerable: abstention_accuracy": ">= 0.0"},
        }))
        print(f"ClapNQ dev: {n_docs} passages, {n_ans} answerable + {n_unans} unanswerable")
        cmd = [sys.executable, "-m", "pytest", "--ragbench=suite.yaml", "-q", "-p",
               "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(folder), "-c",
               os.devnull, "--ragbench-no-output"]
        out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
        text = out.stdout
        start = text.find("ragbench summary")
        print(text[start - 32:] if start >= 0 else text + out.stderr)


if __name__ == "__main__":
    main()
