"""Check that the BM25 retriever returns bit-identical results to an earlier revision.

Run from the repository root::

    python benchmarks/bm25_identity.py [--rev main] [--data PATH/TO/BEIR/nfcorpus]

The reference ``bm25.py`` and ``tokenize.py`` are read from git at ``--rev`` and imported as
private modules next to the current ones, so both implementations see the same corpus in the
same process. Every query of ``queries.jsonl`` is run through ``retrieve`` and
``retrieve_many`` at k=10 and k=1000, for both idf variants, once as is and once with the size
thresholds lowered so that the code paths meant for large corpora run too, and compared as exact
(id, float) lists: same ids, same scores to the last bit, same order within ties. Exit status 0
only if everything is identical.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

from pytest_ragbench.datasets import DatasetSpec, load_dataset
from pytest_ragbench.retrievers import bm25 as bm25_module
from pytest_ragbench.retrievers.bm25 import BM25Retriever

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/datasets/nfcorpus"
if not DEFAULT_DATA.is_dir():
    DEFAULT_DATA = Path("/work/shared/datasets/nfcorpus")


def load_reference(rev: str) -> types.ModuleType:
    """The ``bm25`` module of ``rev``, importing that revision's tokenizer too."""
    def source(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
            text=True,
        ).stdout

    modules: dict[str, types.ModuleType] = {}
    for name, path in (("_ref_tokenize", "pytest_ragbench/retrievers/tokenize.py"),
                       ("_ref_bm25", "pytest_ragbench/retrievers/bm25.py")):
        text = source(path).replace("from .tokenize import", "from ._ref_tokenize import")
        full = f"pytest_ragbench.retrievers.{name}"
        spec = importlib.util.spec_from_loader(full, loader=None)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = "pytest_ragbench.retrievers"
        sys.modules[full] = mod
        exec(compile(text, f"{rev}:{path}", "exec"), mod.__dict__)
        modules[name] = mod
    return modules["_ref_bm25"]


@contextlib.contextmanager
def large_corpus_paths(on: bool) -> Iterator[None]:
    """Lower the size thresholds so that NFCorpus takes the paths meant for large corpora:
    ranking from a sampled bound or from block maxima (at k=1000 too), the max-score
    shortcut."""
    names = {"_DENSE_ACCUMULATE": 0, "_SMALL_CANDIDATES": 32,
             "_SHORTCUT_MAX_K": 10**9, "_BLOCKS_PER_K": 1, "_MIN_BLOCKS": 1}
    saved = {n: getattr(bm25_module, n) for n in names}
    if on:
        for n, v in names.items():
            setattr(bm25_module, n, v)
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(bm25_module, n, v)


def compare(name: str, old: Sequence[Sequence[tuple[str, float]]],
            new: Sequence[Sequence[tuple[str, float]]]) -> bool:
    bad = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if list(a) != list(b)]
    hits = sum(len(a) for a in old)
    print(f"{'OK  ' if not bad else 'DIFF'} {name}: {len(old)} queries, {hits} hits"
          + (f", {len(bad)} queries differ (first: #{bad[0]})" if bad else ""))
    return not bad


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="main", help="git revision holding the reference")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    ref = load_reference(args.rev)
    data = args.data.resolve()
    ds = load_dataset(DatasetSpec(name=data.name, source=data, path=data, split=args.split))
    # Every query of queries.jsonl, not only the judged ones of the split: more tie cases.
    with (data / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh if line.strip()]
    ok = True
    for idf in ("lucene", "rank_bm25"):
        old = ref.BM25Retriever(k1=0.9, b=0.4, idf=idf)
        old.index(ds.corpus)
        new = BM25Retriever(k1=0.9, b=0.4, idf=idf)
        new.index(ds.corpus)
        for k in (10, 1000):
            expected = [old.retrieve(q, k) for q in queries]
            for paths in ("default", "large-corpus"):
                with large_corpus_paths(paths == "large-corpus"):
                    ok &= compare(f"idf={idf} k={k} {paths} paths: retrieve", expected,
                                  [new.retrieve(q, k) for q in queries])
                    ok &= compare(f"idf={idf} k={k} {paths} paths: retrieve_many", expected,
                                  new.retrieve_many(queries, k))
    print("identical" if ok else "NOT identical")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
