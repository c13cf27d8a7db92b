"""Datasets read with Hugging Face ``datasets`` and ``ir_datasets`` (optional extras), offline.

Every dataset here is built by the test from the same few documents, queries and labels; read
through a library it must give the very dataset (the same content hash) that the JSONL files
give. Hub names resolve from a local datasets cache the test lays out; ir_datasets ids are
registered from local files. Nothing reaches the network: a dataset missing locally is a
clear error.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import BASE_INI, DOCS, OVERLAP_RETRIEVER, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.datasets import DataFileError, Dataset, DatasetSpec, load_dataset, read_qrels
from pytest_ragbench.datasets.libraries import qrels_from_rows
from pytest_ragbench.errors import SuiteError
from pytest_ragbench.suite.loader import load_suite

QUERIES = [{"_id": "q1", "text": "espresso grind size"},
           {"_id": "q2", "text": "how long to steep cold brew"},
           {"_id": "q3", "text": "milk temperature for steaming"},
           {"_id": "q9", "text": "a query without labels"}]
QRELS = [("q1", "d1", 2), ("q1", "d5", 1), ("q2", "d2", 2), ("q2", "d3", 0), ("q3", "d3", 1)]


def reference(tmp_path: Path) -> Dataset:
    """The dataset as JSONL files and a BEIR qrels file."""
    folder = tmp_path / "jsonl"
    folder.mkdir()
    write_jsonl(folder / "corpus.jsonl", DOCS)
    write_jsonl(folder / "queries.jsonl", QUERIES)
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in QRELS))
    return load_dataset(DatasetSpec(name="ref", source=folder / "suite.yaml",
                                    corpus=folder / "corpus.jsonl",
                                    queries=folder / "queries.jsonl",
                                    qrels=folder / "qrels.tsv"))


def suite_dataset(tmp_path: Path, dataset: str) -> Dataset:
    path = tmp_path / "suite.yaml"
    path.write_text(f"dataset:\n{textwrap.indent(textwrap.dedent(dataset), '  ')}"
                    "retrievers: bm25\nmetrics: [ndcg@10]\n", encoding="utf-8")
    return load_dataset(load_suite(path, None).dataset)


def assert_same(got: Dataset, want: Dataset) -> None:
    assert got.corpus == want.corpus
    assert [(q.id, q.text, dict(q.relevant)) for q in got.queries] == \
        [(q.id, q.text, dict(q.relevant)) for q in want.queries]
    assert got.content_hash == want.content_hash


def qrels_rows() -> list[dict[str, Any]]:
    return [{"query-id": q, "corpus-id": d, "score": g} for q, d, g in QRELS]


# -- Hugging Face datasets --------------------------------------------------------------------


@pytest.fixture
def hf() -> Any:
    return pytest.importorskip("datasets")


def test_local_parquet_files(tmp_path: Path, hf: Any) -> None:
    want = reference(tmp_path)
    hf.Dataset.from_list(DOCS).to_parquet(str(tmp_path / "corpus.parquet"))
    hf.Dataset.from_list(QUERIES).to_parquet(str(tmp_path / "queries.parquet"))
    (tmp_path / "qrels.tsv").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in QRELS))
    got = suite_dataset(tmp_path, """\
        hf:
          cache_dir: hf-cache
          corpus: corpus.parquet
          queries: {path: queries.parquet}
        qrels: qrels.tsv
        """)
    assert_same(got, want)
    assert {q.id for q in got.queries} == {"q1", "q2", "q3"}  # only labelled queries run


def test_local_csv_and_jsonl_files_read_as_the_file_forms_read_them(tmp_path: Path,
                                                                     hf: Any) -> None:
    # What the datasets library would infer from a CSV: ids "007" and "7" both the number 7,
    # a column of years with a gap floats; the same file named by 'corpus' reads as written.
    (tmp_path / "corpus.csv").write_text(
        "_id,title,text\n007,1984,Espresso needs a fine grind.\n7,,Cold brew steeps.\n"
        "010,2001,Steam milk to 60 degrees.\n", encoding="utf-8")
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "01", "text": "espresso grind"},
                                             {"_id": "1", "text": "cold brew"}])
    (tmp_path / "qrels.csv").write_text("query-id,corpus-id,score\n01,007,2\n1,7,1\n",
                                        encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("01\t007\t2\n1\t7\t1\n", encoding="utf-8")
    want = suite_dataset(tmp_path, """\
        corpus: corpus.csv
        queries: queries.jsonl
        qrels: qrels.tsv
        """)
    assert [d.id for d in want.corpus] == ["007", "7", "010"]
    got = suite_dataset(tmp_path, """\
        hf:
          cache_dir: hf-cache
          corpus: corpus.csv
          queries: queries.jsonl
          qrels: qrels.csv
        """)
    assert_same(got, want)
    assert [d.title for d in got.corpus] == ["1984", "", "2001"]
    # a .json file holding JSON lines is the library's to read, as it always was
    write_jsonl(tmp_path / "lines.json", [{"_id": "007", "title": "1984", "text": "a"}])
    got = suite_dataset(tmp_path, "hf: {corpus: lines.json, queries: queries.jsonl, "
                                  "cache_dir: hf-cache}\n")
    assert [(d.id, d.title) for d in got.corpus] == [("007", "1984")]
    # an error names the file and its line, as for the file forms
    (tmp_path / "corpus.csv").write_text("_id,text\nd1,a\nd1,b\n", encoding="utf-8")
    with pytest.raises(DataFileError) as exc:
        suite_dataset(tmp_path, "hf: {corpus: corpus.csv, queries: queries.jsonl}\n")
    assert (exc.value.file, exc.value.line) == (str(tmp_path / "corpus.csv"), 3)


def test_inline_labels_in_a_parquet_file(tmp_path: Path, hf: Any) -> None:
    # Arrow stores {doc: grade} mappings as one struct of every row's documents, the ones a
    # row lacks null: q1's labels read {d1: 2, d2: None}, refused as a grade that is None
    queries = [{"_id": "q1", "text": "espresso grind size", "relevant": {"d1": 2, "d5": 1}},
               {"_id": "q2", "text": "cold brew", "relevant": {"d2": 2, "d3": 0}}]
    write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    want = suite_dataset(tmp_path, "corpus: corpus.jsonl\nqueries: queries.jsonl\n")
    hf.Dataset.from_list(queries).to_parquet(str(tmp_path / "queries.parquet"))
    got = suite_dataset(tmp_path, """\
        hf:
          cache_dir: hf-cache
          corpus: corpus.jsonl
          queries: queries.parquet
        """)
    assert_same(got, want)
    assert [dict(q.relevant) for q in got.queries] == [{"d1": 2, "d5": 1}, {"d2": 2, "d3": 0}]


def test_a_save_to_disk_folder_with_corpus_queries_and_qrels_splits(tmp_path: Path,
                                                                     hf: Any) -> None:
    want = reference(tmp_path)
    hf.DatasetDict({
        "corpus": hf.Dataset.from_list(DOCS),
        # other column names, mapped by the suite
        "queries": hf.Dataset.from_list([{"qid": q["_id"], "question": q["text"]}
                                         for q in QUERIES]),
        "test": hf.Dataset.from_list(qrels_rows()),
    }).save_to_disk(str(tmp_path / "tiny"))
    got = suite_dataset(tmp_path, """\
        hf:
          path: tiny
          queries: {columns: {id: qid, text: question}}
          qrels: {split: test}
        """)
    assert_same(got, want)
    assert got.name == "suite"  # a local folder: the suite's name


def cache_hub_dataset(hf: Any, cache: Path, repo: str, configs: dict[str, dict[str, list]]
                      ) -> None:
    """Lay out ``repo`` in a datasets cache as ``load_dataset`` leaves a hub dataset there
    (``<namespace>___<name>/<config>/<version>/<commit>/``), built from local parquet files."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo.split("/")
    work = cache.parent / f"build-{uuid.uuid4().hex}"
    for config, splits in configs.items():
        files = {}
        for split, rows in splits.items():
            files[split] = str(work / f"{config}-{split}.parquet")
            work.mkdir(parents=True, exist_ok=True)
            hf.Dataset.from_list(rows).to_parquet(files[split])
        builder = Parquet(data_files=files, cache_dir=str(work / "prepared"), dataset_name=name,
                          config_name=config, hash="0a1b2c3d")
        builder.download_and_prepare()
        dest = cache / f"{namespace}___{name}" / config / "0.0.0" / "0a1b2c3d"
        shutil.copytree(builder.cache_dir, dest)
        info = json.loads((dest / "dataset_info.json").read_text())
        info["config_name"] = config
        (dest / "dataset_info.json").write_text(json.dumps(info))
    shutil.rmtree(work)


def test_hub_names_resolve_from_the_local_cache(tmp_path: Path, hf: Any) -> None:
    want = reference(tmp_path)
    cache = tmp_path / "hf-cache"
    # The BEIR layout on the hub: configs corpus and queries, labels in a -qrels dataset.
    cache_hub_dataset(hf, cache, "acme/tinybeir", {"corpus": {"corpus": DOCS},
                                                   "queries": {"queries": QUERIES}})
    cache_hub_dataset(hf, cache, "acme/tinybeir-qrels",
                      {"default": {"test": qrels_rows(), "train": qrels_rows()[:1]}})
    got = suite_dataset(tmp_path, """\
        hf:
          path: acme/tinybeir
          cache_dir: hf-cache
          qrels: {path: acme/tinybeir-qrels, split: test}
        """)
    assert_same(got, want)
    assert got.name == "acme/tinybeir"


def test_a_hub_name_not_in_the_cache_is_a_clear_error_without_a_download(
        tmp_path: Path, hf: Any) -> None:
    (tmp_path / "hf-cache").mkdir()
    t0 = time.monotonic()
    with pytest.raises(SuiteError) as exc:
        suite_dataset(tmp_path, """\
            hf: {path: acme/not-cached, cache_dir: hf-cache}
            """)
    assert time.monotonic() - t0 < 30  # no network time-outs
    message = str(exc.value)
    assert "dataset.hf.corpus" in message
    assert "'acme/not-cached' is not in the local cache" in message
    assert "nothing is downloaded during a run" in message


def test_hf_split_and_column_errors_name_the_entry(tmp_path: Path, hf: Any) -> None:
    hf.DatasetDict({"corpus": hf.Dataset.from_list(DOCS),
                    "queries": hf.Dataset.from_list(QUERIES)}).save_to_disk(str(tmp_path / "t"))
    with pytest.raises(SuiteError, match=r"dataset\.hf\.qrels: no split 'dev' in hf:.* "
                                         r"\(available splits: corpus, queries\)"):
        suite_dataset(tmp_path, "hf: {path: t, qrels: {split: dev}}\n")
    with pytest.raises(SuiteError, match=r"dataset\.hf\.queries: columns\.text: no column "
                                         r"'question' in .*\(columns: _id, text\)"):
        suite_dataset(tmp_path, "hf: {path: t, queries: {columns: {text: question}}}\n")
    with pytest.raises(SuiteError, match=r"dataset\.hf\.qrels: .*no query_id column"):
        suite_dataset(tmp_path, "hf: {path: t, qrels: {split: corpus}}\n")
    with pytest.raises(SuiteError, match=r"dataset\.hf\.qrels: columns\.grade: no column "
                                         r"'stars'"):
        suite_dataset(tmp_path, "hf: {path: t, qrels: {split: corpus, columns: {grade: stars}}}\n")


@pytest.mark.parametrize(("dataset", "message"), [
    ("hf: {path: x, corpus: corpus.jsonl}\ncorpus: c.jsonl\n",
     "'corpus' cannot be combined with 'hf'"),
    ("hf: {corpus: {config: corpus}, queries: q}\n", "expected 'path'"),
    ("hf: {path: x, corpus: {columns: {body: text}}}\n", "unknown field 'body'"),
    ("hf: x\nir_datasets: y\n", "either 'hf' or 'ir_datasets'"),
    ("hf: ./missing/folder\n", "not found"),
])
def test_hf_suite_errors(tmp_path: Path, dataset: str, message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        suite_dataset(tmp_path, dataset)


# -- ir_datasets ------------------------------------------------------------------------------


class TitledDoc(NamedTuple):
    doc_id: str
    title: str
    text: str


@pytest.fixture
def irds() -> Any:
    return pytest.importorskip("ir_datasets")


def register_local(irds: Any, folder: Path, docs: Any = None) -> str:
    """An ir_datasets dataset of local TSV docs/queries and TREC qrels, under a new id."""
    from ir_datasets.datasets.base import Dataset as IrDataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs.tsv").write_text("".join(f"{d['_id']}\t{d['title']}\t{d['text']}\n"
                                             for d in DOCS))
    (folder / "queries.tsv").write_text("".join(f"{q['_id']}\t{q['text']}\n" for q in QUERIES))
    (folder / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in QRELS))
    name = f"ragbench-test/{uuid.uuid4().hex}"
    irds.registry.register(name, IrDataset(
        docs or TsvDocs(LocalDownload(folder / "docs.tsv"), doc_cls=TitledDoc),
        TsvQueries(LocalDownload(folder / "queries.tsv")),
        TrecQrels(LocalDownload(folder / "qrels.txt"), {}),
    ))
    return name


def test_an_ir_datasets_dataset_registered_from_local_files(tmp_path: Path, irds: Any) -> None:
    want = reference(tmp_path)
    name = register_local(irds, tmp_path / "irds")
    got = suite_dataset(tmp_path, f"ir_datasets: {name}\n")
    assert_same(got, want)
    assert got.name == name


def test_ir_datasets_never_downloads(tmp_path: Path, irds: Any) -> None:
    from ir_datasets.formats import TsvDocs
    from ir_datasets.util import Download, RequestsDownload

    # Docs that ir_datasets would fetch, as for a catalogue dataset not downloaded yet.
    remote = TsvDocs(Download([RequestsDownload("http://127.0.0.1:9/docs.tsv")],
                              cache_path=str(tmp_path / "store" / "docs.tsv")))
    name = register_local(irds, tmp_path / "irds", docs=remote)
    with pytest.raises(SuiteError) as exc:
        suite_dataset(tmp_path, f"ir_datasets: {name}\n")
    assert "dataset.ir_datasets" in str(exc.value)
    assert "is not in the local ir_datasets store" in str(exc.value)
    assert not (tmp_path / "store" / "docs.tsv").exists()
    # the refusal ends with the read: ir_datasets' own downloads work again afterwards
    assert irds.lazy_libs.requests().__name__ == "requests"


def test_unknown_ir_datasets_id(tmp_path: Path, irds: Any) -> None:
    with pytest.raises(SuiteError, match=r"dataset\.ir_datasets: unknown ir_datasets id "
                                         r"'ragbench-test/nope'"):
        suite_dataset(tmp_path, "ir_datasets: ragbench-test/nope\n")


# -- a whole run, with two workers ------------------------------------------------------------

CONFTEST = '''
from pathlib import Path
from typing import NamedTuple

import ir_datasets
from ir_datasets.datasets.base import Dataset
from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
from ir_datasets.util import LocalDownload

HERE = Path(__file__).parent


class TitledDoc(NamedTuple):
    doc_id: str
    title: str
    text: str


# Registered by the conftest, as a project registers its own collection; each worker does too.
ir_datasets.registry.register("ragbench-test/local", Dataset(
    TsvDocs(LocalDownload(HERE / "irds" / "docs.tsv"), doc_cls=TitledDoc),
    TsvQueries(LocalDownload(HERE / "irds" / "queries.tsv")),
    TrecQrels(LocalDownload(HERE / "irds" / "qrels.txt"), {}),
))
'''


def test_library_datasets_in_a_run_with_two_workers(pytester: pytest.Pytester, hf: Any,
                                                    irds: Any) -> None:
    register_local(irds, pytester.path / "irds")  # writes the files the conftest names
    hf.Dataset.from_list(DOCS).to_parquet(str(pytester.path / "corpus.parquet"))
    hf.Dataset.from_list(QUERIES).to_parquet(str(pytester.path / "queries.parquet"))
    (pytester.path / "qrels.tsv").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in QRELS))
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl", QUERIES)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(overlap_retriever=OVERLAP_RETRIEVER)
    pytester.makeini(BASE_INI)
    tail = ("retrievers:\n  overlap:\n    type: overlap_retriever:Overlap\n"
            "metrics: [ndcg@10, recall@10]\n")
    for name, dataset in (
        ("irds", "  ir_datasets: ragbench-test/local\n"),
        ("hf", "  hf: {corpus: corpus.parquet, queries: queries.parquet, "
               "cache_dir: hf-cache}\n  qrels: qrels.tsv\n"),
        ("files", "  corpus: corpus.jsonl\n  queries: queries.jsonl\n  qrels: qrels.tsv\n"),
    ):
        (pytester.path / f"{name}.yaml").write_text(f"name: {name}\ndataset:\n{dataset}{tail}")
    # In process: the controller finds datasets and ir_datasets imported already (the hf and
    # irds fixtures), where a subprocess controller imported them again (seconds).
    result = pytester.runpytest("--ragbench=irds.yaml", "--ragbench=hf.yaml",
                                "--ragbench=files.yaml", "-n", "2", "-q",
                                "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=9)
    summary = json.loads((pytester.path / ".ragbench" / "runs" / "latest" /
                          "summary.json").read_text())
    # the same data, whichever way it was read: the same dataset hash and scores
    seen = {s["name"]: (s["dataset_hash"], s["retrievers"][0]["metrics"])
            for s in summary["suites"]}
    assert seen["irds"] == seen["files"] == seen["hf"]
    assert seen["files"][1]["ndcg@10"]["n"] == 3


# -- labels from library rows follow the qrels file rules -------------------------------------

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(ids, ids, st.integers(-1, 3)), max_size=25))
def test_library_qrels_rows_read_as_a_qrels_file_would(tmp_path: Path, rows) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in rows))
    numbered = [(i, q, d, g) for i, (q, d, g) in enumerate(rows, 1)]
    try:
        from_file = [tuple(r) for r in read_qrels(path)]
    except DataFileError as exc:  # a pair given two grades
        with pytest.raises(DataFileError) as got:
            qrels_from_rows(numbered, Path("rows"))
        assert got.value.line == exc.line
        return
    assert [tuple(r) for r in qrels_from_rows(numbered, Path("rows"))] == from_file
