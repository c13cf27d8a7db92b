"""A battery of malformed inputs: each gets one clear message, a usage/collection exit status,
and never a traceback, an INTERNALERROR, a hang or silence (issue 11, point 5).

Every case is one pytest run (in-process, through pytester) or one ``ragbench`` command (in
process, through :func:`pytest_ragbench.cli.main`) on a small, otherwise valid suite with one
thing broken: the file's encoding, a file that cannot be read (EIO through ``/proc/self/mem``,
a permission error by patching ``open``, a symlink loop, a directory), the YAML document, a
number, a grade, a run / baseline / history file, an output folder, an option's value. A case
passes when

- the exit status is the expected usage/collection status (2 or 4; the ``ragbench`` command's
  usage status 2);
- exactly one output line matches the case's pattern, which names the file (with its line for
  a text file) or the option, and the field;
- the output holds no ``Traceback`` and no ``INTERNALERROR``, and the case ends within
  :data:`TIMEOUT` seconds (an alarm fails it otherwise).

Cases whose one line is the collection error of a broken suite, dataset, run or template file
(:func:`collection_error_case`) are checked in tests/unit/test_bad_inputs_loader.py by the calls
collection makes, with the same pattern, without a pytest run each; per category the first of
them stays a pytest run here, for the exit status and the output as a whole.

Cases the product does not handle yet, in files another change is reworking, are
``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import builtins
import codecs
import errno
import fnmatch
import io
import json
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BASE_INI

# Imported once here, not once per in-process run: pytester drops the modules a run imports,
# and building the suite schema's models and the retrievers again costs most of a case's time.
import pytest_ragbench.collect
import pytest_ragbench.execution.prechecks
import pytest_ragbench.execution.runtime
import pytest_ragbench.report.html
import pytest_ragbench.results.compare
import pytest_ragbench.results.history
import pytest_ragbench.retrievers.bm25
import pytest_ragbench.retrievers.hybrid
import pytest_ragbench.retrievers.runfile
import pytest_ragbench.session
import pytest_ragbench.suite.loader  # noqa: F401
from pytest_ragbench.cli import main as ragbench_main

TIMEOUT = 20  # seconds per case: the alias bomb once hung collection for minutes
USAGE, COLLECTION = pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED
BAD_EXITS = (USAGE, COLLECTION)  # a usage error (4) or a collection error (2)


# -- the valid inputs each case breaks one thing of ---------------------------------------------

CORPUS = (
    '{"_id": "d1", "title": "Espresso", "text": "Espresso needs a fine grind."}\n'
    '{"_id": "d2", "title": "Cold brew", "text": "Cold brew steeps coarse grounds."}\n'
    '{"_id": "d3", "title": "Milk", "text": "Steam milk to sixty degrees."}\n'
)
QUERIES = (
    '{"_id": "q1", "text": "espresso grind", "reference_answer": "a fine grind"}\n'
    '{"_id": "q2", "text": "cold brew steep", "reference_answer": "coarse grounds"}\n'
)
QRELS = "q1 0 d1 1\nq2 0 d2 2\n"
RUN = "q1 Q0 d1 1 2.5 r\nq2 Q0 d2 1 1.5 r\n"
TEMPLATE = "Context:\n{% for c in contexts %}{{ c }}\n{% endfor %}Question: {{ question }}\n"

# Line numbers matter: messages are checked against them.
SUITE = """\
name: battery
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
  qrels: qrels.txt
retrievers:
  bm25: {k1: 0.9, b: 0.4}
metrics: [ndcg@10, recall@10]
k: 10
"""
RUN_SUITE = SUITE.replace("  bm25: {k1: 0.9, b: 0.4}", "  sub: {type: run, path: run.trec}")
# Retrieval plus offline answers, for the generation keys (line 10 on).
RAG_SUITE = SUITE.replace("[ndcg@10, recall@10]", "[ndcg@10, token_f1]") + (
    "llm: {type: extractive}\n"
    "generation: {contexts: 2, template_file: prompt.j2}\n"
)
# A paid endpoint that is never called: every case below fails before the first item.
OPENAI_SUITE = SUITE.replace("[ndcg@10, recall@10]", "[ndcg@10, token_f1]") + (
    "llm:\n"                                                       # 10
    "  type: openai\n"                                             # 11
    "  base_url: http://127.0.0.1:9/v1\n"                          # 12
    "  model: m\n"                                                 # 13
    "  params: {temperature: 0}\n"                                 # 14
    "  concurrency: 4\n"                                           # 15
    "prices: {m: {prompt: 0.15, completion: 0.6}}\n"               # 16
    "max_cost: 1.0\n"                                              # 17
)
HYBRID_SUITE = SUITE.replace(
    "  bm25: {k1: 0.9, b: 0.4}",
    "  bm25: {k1: 0.9, b: 0.4}\n  plain: {type: bm25, stemmer: null}\n"
    "  fused: {type: hybrid, retrievers: [bm25, plain], rrf_k: 60}")

# The user's own search service and RAG app (never called: each case fails at collection).
HTTP_SUITE = SUITE.replace(
    "  bm25: {k1: 0.9, b: 0.4}",
    "  svc:\n"                                                     # 7
    "    type: http\n"                                             # 8
    "    url: http://127.0.0.1:9/search\n"                         # 9
    "    timeout: 5\n"                                             # 10
    "    params:\n"                                                # 11
    "      index: main")                                           # 12
HTTP_PIPELINE_SUITE = HTTP_SUITE.replace("retrievers:\n  svc:", "pipelines:\n  app:").replace(
    "/search", "/answer")


def sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# -- special files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Special:
    """A file that is not plain content: ``dir``, ``loop`` (symlink loop), ``eio`` (a file whose
    read fails with EIO), ``denied`` (open raises PermissionError), ``link:NAME`` (a symlink to
    NAME)."""

    kind: str


DIR, LOOP, EIO, DENIED = Special("dir"), Special("loop"), Special("eio"), Special("denied")
HAS_PROC_MEM = Path("/proc/self/mem").exists()


def latin1(text: str, line: int) -> bytes:
    """``text`` as UTF-8 except one Latin-1 byte (0xe9) on ``line``."""
    lines = text.encode().splitlines(keepends=True)
    lines[line - 1] = lines[line - 1].replace(b"e", b"\xe9", 1)
    return b"".join(lines)


def utf16(text: str) -> bytes:
    return text.encode("utf-16")  # with a byte order mark


def utf16_nobom(text: str) -> bytes:
    return text.encode("utf-16-le")


def utf32(text: str) -> bytes:
    return text.encode("utf-32")


def bom8(text: str) -> bytes:
    return codecs.BOM_UTF8 + text.encode()


# -- cases --------------------------------------------------------------------------------------


@dataclass
class Case:
    """One malformed input: the files that differ from the valid set, the arguments, and the
    pattern of the one line that must say what is wrong (fnmatch, case-sensitive)."""

    id: str
    expect: str
    files: dict[str, str | bytes | Special] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    suite: str = SUITE
    exits: tuple[int, ...] = BAD_EXITS
    cli: tuple[str, ...] | None = None  # a ``ragbench`` command instead of a pytest run
    xfail: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # more lines that must each appear exactly once (a case whose run collects a second suite)
    also: tuple[str, ...] = ()

    def param(self) -> object:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.id, marks=marks)


def files_case(id: str, name: str, content: str | bytes | Special, expect: str, *,
               suite: str = SUITE, args: tuple[str, ...] = (), xfail: str = "") -> Case:
    return Case(id, expect, {name: content}, args=args, suite=suite, xfail=xfail)


BASELINE_ARGS = ("--ragbench-baseline=base.json",)
HISTORY_ARGS = ("--ragbench-history=hist.sqlite",)

ENCODINGS: list[Case] = [
    # the suite file
    files_case("suite-latin1", "suite.yaml", latin1(SUITE, 1),
               "*suite.yaml:1: not UTF-8: byte 0xe9*save the file as UTF-8"),
    files_case("suite-utf16", "suite.yaml", utf16(SUITE), "*suite.yaml: the file is UTF-16*UTF-8"),
    files_case("suite-utf16-nobom", "suite.yaml", utf16_nobom(SUITE),
               "*suite.yaml:1: the file contains NUL bytes*UTF-8"),
    files_case("suite-utf32", "suite.yaml", utf32(SUITE), "*suite.yaml: the file is UTF-32*UTF-8"),
    files_case("suite-json-utf16", "suite.json", utf16(json.dumps({"name": "x"})),
               "*suite.json: the file is UTF-16*UTF-8", args=("--ragbench=suite.json",)),
    # the dataset files
    files_case("corpus-latin1", "corpus.jsonl", latin1(CORPUS, 2),
               "*corpus.jsonl:2: invalid UTF-8 byte 0xe9*expected UTF-8*"),
    files_case("corpus-utf16", "corpus.jsonl", utf16(CORPUS),
               "*corpus.jsonl:1: the file is UTF-16*expected UTF-8*"),
    files_case("corpus-utf16-nobom", "corpus.jsonl", utf16_nobom(CORPUS),
               "*corpus.jsonl:1: NUL byte*expected UTF-8*"),
    files_case("corpus-utf32", "corpus.jsonl", utf32(CORPUS),
               "*corpus.jsonl:1: the file is UTF-32*expected UTF-8*"),
    files_case("queries-latin1", "queries.jsonl", latin1(QUERIES, 2),
               "*queries.jsonl:2: invalid UTF-8 byte 0xe9*"),
    files_case("queries-utf16", "queries.jsonl", utf16(QUERIES),
               "*queries.jsonl:1: the file is UTF-16*"),
    files_case("qrels-latin1", "qrels.txt", b"q1 0 d1 1\nq2 0 d\xe92 2\n",
               "*qrels.txt:2: invalid UTF-8 byte 0xe9*"),
    files_case("qrels-utf16", "qrels.txt", utf16(QRELS), "*qrels.txt:1: the file is UTF-16*"),
    files_case("qrels-utf32", "qrels.txt", utf32(QRELS), "*qrels.txt:1: the file is UTF-32*"),
    files_case("run-latin1", "run.trec", b"q1 Q0 d1 1 2.5 r\nq2 Q0 d\xe92 1 1.5 r\n",
               "*run.trec:2: invalid UTF-8 byte 0xe9*",
               suite=RUN_SUITE),
    files_case("run-utf16", "run.trec", utf16(RUN), "*run.trec:1: the file is UTF-16*",
               suite=RUN_SUITE),
    files_case("baseline-latin1", "base.json", b'{"kind": "caf\xe9"}',
               "*base.json*not valid JSON*", args=BASELINE_ARGS),
    files_case("baseline-utf16", "base.json", utf16('{"kind": "ragbench-baseline"}'),
               "*base.json*", args=BASELINE_ARGS),
    files_case("template-latin1", "prompt.j2", latin1(TEMPLATE, 3),
               "*suite.yaml:11: generation.template_file: *not UTF-8*", suite=RAG_SUITE),
    files_case("template-utf16", "prompt.j2", utf16(TEMPLATE),
               "*suite.yaml:11: generation.template_file: *", suite=RAG_SUITE),
]

UNREADABLE: list[Case] = [
    files_case(f"{name}-{special.kind}", name, special, expect, suite=suite, args=args)
    for special in (EIO, DENIED)
    for name, expect, suite, args in (
        # EIO comes from a symlink to /proc/self/mem, which the message names
        ("suite.yaml", "*: cannot read the suite file: *", SUITE, ()),
        ("corpus.jsonl", "*corpus.jsonl: cannot * the file: *", SUITE, ()),
        ("queries.jsonl", "*queries.jsonl: cannot * the file: *", SUITE, ()),
        ("qrels.txt", "*qrels.txt: cannot * the file: *", SUITE, ()),
        ("run.trec", "*run.trec: cannot * the file: *", RUN_SUITE, ()),
        ("base.json", "*base.json: cannot read the baseline*", SUITE, BASELINE_ARGS),
        ("prompt.j2", "*suite.yaml:11: generation.template_file: *", RAG_SUITE, ()),
    )
]

LOOPS: list[Case] = [
    files_case(f"{name}-symlink-loop", name, LOOP, expect, suite=suite, args=args)
    for name, expect, suite, args in (
        ("suite.yaml", "*suite.yaml: cannot read the suite file: symbolic link loop", SUITE, ()),
        ("corpus.jsonl", "*suite.yaml:3: dataset.corpus: corpus file: symlink loop*", SUITE,
         ()),
        ("queries.jsonl", "*suite.yaml:4: dataset.queries: queries file: symlink loop*", SUITE,
         ()),
        ("qrels.txt", "*suite.yaml:5: dataset.qrels: qrels file: symlink loop*", SUITE, ()),
        ("run.trec", "*suite.yaml:7: retrievers.sub*run*symlink loop*", RUN_SUITE, ()),
        ("base.json", "*baseline 'base.json': no such file or run folder: *base.json (a symbolic "
                      "link to nothing*", SUITE,
         BASELINE_ARGS),
        ("prompt.j2", "*suite.yaml:11: generation.template_file: *", RAG_SUITE, ()),
    )
] + [
    files_case("hist.sqlite-symlink-loop", "hist.sqlite", LOOP, "*hist.sqlite*", args=HISTORY_ARGS),
]

DIRECTORIES: list[Case] = [
    files_case(f"{name}-is-a-directory", name, DIR, expect, suite=suite, args=args)
    for name, expect, suite, args in (
        ("suite.yaml", "*suite.yaml: is a directory; expected a suite file*", SUITE, ()),
        ("corpus.jsonl", "*suite.yaml:3: dataset.corpus: *is a directory (expected a file)*",
         SUITE, ()),
        ("queries.jsonl", "*suite.yaml:4: dataset.queries: *is a directory*", SUITE, ()),
        ("qrels.txt", "*suite.yaml:5: dataset.qrels: *is a directory*", SUITE, ()),
        ("run.trec", "*suite.yaml:7: retrievers.sub*is a directory*", RUN_SUITE, ()),
        ("base.json", "*base.json*", SUITE, BASELINE_ARGS),
        ("prompt.j2", "*suite.yaml:11: generation.template_file: *", RAG_SUITE, ()),
        ("hist.sqlite", "*hist.sqlite: is a folder, expected a run history file*", SUITE,
         HISTORY_ARGS),
    )
]

BOMB = "".join(
    f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
    for name, prev in zip("bcdefghij", "abcdefghi", strict=True))
YAML: list[Case] = [
    Case("yaml-alias-bomb", "*suite.yaml:*: the document expands to more than * values*",
         suite=SUITE + "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB),
    Case("yaml-deep-flow-nesting", "*suite.yaml:10: nested more than 64 levels deep",
         suite=SUITE + "deep: " + "[" * 5000 + "]" * 5000 + "\n"),
    Case("yaml-deep-block-nesting", "*suite.yaml:*: nested more than 64 levels deep",
         suite=SUITE + "deep:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(100))
         + "  " * 101 + "v\n"),
    Case("json-deep-nesting", "*suite.json:1: nested more than 64 levels deep",
         files={"suite.json": '{"a": ' + "[" * 5000 + "]" * 5000 + "}"},
         args=("--ragbench=suite.json",)),
    Case("yaml-duplicate-top-key",
         "*suite.yaml:10: k: duplicate key 'k' (first at line 9, again at line 10)",
         suite=SUITE + "k: 20\n"),
    Case("yaml-duplicate-nested-key",
         "*suite.yaml:4: dataset.corpus: duplicate key 'corpus' (first at line 3, again at "
         "line 4)*", suite=sub(SUITE, "  queries: queries.jsonl", "  corpus: queries.jsonl")),
    Case("yaml-duplicate-param-key", "*suite.yaml:7: retrievers.bm25.k1: duplicate key 'k1'*",
         suite=sub(SUITE, "{k1: 0.9, b: 0.4}", "{k1: 0.9, k1: 1.2}")),
    Case("json-duplicate-key", "*suite.json:1: k: duplicate key 'k'*",
         files={"suite.json": '{"k": 10, "k": 20}'}, args=("--ragbench=suite.json",)),
    Case("yaml-recursive-alias", "*suite.yaml:10: alias *a refers to a node that contains it",
         suite=SUITE + "x: &a [1, *a]\n"),
    Case("yaml-syntax-error", "*suite.yaml:*: not valid YAML/JSON: *",
         suite=SUITE + "gates: {ndcg@10: '>= 0.5'\n"),
    Case("yaml-tab-indent", "*suite.yaml:*: not valid YAML/JSON: *",
         suite=sub(SUITE, "  corpus:", "\tcorpus:")),
    Case("yaml-empty-file", "*suite.yaml: expected a mapping at the top level, got null",
         suite=""),
    Case("yaml-top-level-list", "*suite.yaml:1: expected a mapping at the top level, got list",
         suite="- a\n- b\n"),
    Case("yaml-python-tag", "*suite.yaml:10: not valid YAML/JSON: *",
         suite=SUITE + "x: !!python/object/apply:os.system [echo]\n"),
]

NUMBERS: list[Case] = [
    Case(f"number-{cid}", expect, suite=suite, env=env)
    for cid, suite, expect, env in (
        ("k-zero", sub(SUITE, "k: 10", "k: 0"), "*suite.yaml:9: k: *", {}),
        ("k-negative", sub(SUITE, "k: 10", "k: -5"), "*suite.yaml:9: k: *", {}),
        ("k-inf", sub(SUITE, "k: 10", "k: .inf"), "*suite.yaml:9: k: *", {}),
        ("k-fraction", sub(SUITE, "k: 10", "k: 2.5"), "*suite.yaml:9: k: *", {}),
        ("k-text", sub(SUITE, "k: 10", "k: ten"), "*suite.yaml:9: k: *", {}),
        ("k-huge", sub(SUITE, "k: 10", "k: 1e400"), "*suite.yaml:9: k: *", {}),
        ("k1-inf", sub(SUITE, "k1: 0.9", "k1: .inf"),
         "*suite.yaml:7: retrievers.bm25*k1*finite*", {}),
        ("k1-nan", sub(SUITE, "k1: 0.9", "k1: .nan"), "*suite.yaml:7: retrievers.bm25*k1*", {}),
        ("k1-negative", sub(SUITE, "k1: 0.9", "k1: -1"),
         "*suite.yaml:7: retrievers.bm25*k1*", {}),
        ("k1-text", sub(SUITE, "k1: 0.9", "k1: fast"), "*suite.yaml:7: retrievers.bm25*k1*", {}),
        ("b-above-one", sub(SUITE, "b: 0.4", "b: 2"), "*suite.yaml:7: retrievers.bm25*b*", {}),
        ("b-nan", sub(SUITE, "b: 0.4", "b: .nan"), "*suite.yaml:7: retrievers.bm25*b*", {}),
        ("metric-cutoff-zero", sub(SUITE, "[ndcg@10, recall@10]", "[ndcg@0, recall@10]"),
         "*suite.yaml:8: metrics*ndcg@0*", {}),
        ("metric-cutoff-above-k", sub(SUITE, "[ndcg@10, recall@10]", "[ndcg@100, recall@10]"),
         "*suite.yaml:8: metrics*ndcg@100*k: 10*", {}),
        ("threshold-nan", SUITE + "thresholds: {recall@10: '>= .nan'}\n",
         "*suite.yaml:10: thresholds.recall@10: *", {}),
        ("threshold-inf", SUITE + "thresholds: {recall@10: '>= inf'}\n",
         "*suite.yaml:10: thresholds.recall@10: *", {}),
        ("threshold-above-one", SUITE + "thresholds: {recall@10: '>= 1.5'}\n",
         "*suite.yaml:10: thresholds.recall@10: recall@10 lies between 0 and 1, so 'recall@10 "
         ">= 1.5' can never pass*", {}),
        ("gate-system-typo", SUITE + "gates: ['retriever=bm52: ndcg@10: drop <= 0.01']\n",
         "*suite.yaml:10: gates[[]0]: 'retriever=bm52: ndcg@10: drop <= 0.01' is scoped to "
         "retriever=bm52, which is not a system of this suite (did you mean 'bm25'?)*", {}),
        ("threshold-system-typo", SUITE + "thresholds: {'retriever=bm52: ndcg@10': '>= 0.5'}\n",
         "*suite.yaml:10: thresholds.retriever=bm52: ndcg@10: *not a system of this suite*", {}),
        ("gate-negative", SUITE + "gates: {ndcg@10: '>= -2'}\n",
         "*suite.yaml:10: gates.ndcg@10: *'ndcg@10 >= -2' always passes*", {}),
        ("gate-error-rate-percent", SUITE + "gates: ['error_rate <= 5']\n",
         "*suite.yaml:10: gates[[]0]: error_rate lies between 0 and 1*always passes*", {}),
        ("gate-nan", SUITE + "gates: {ndcg@10: '>= nan'}\n", "*suite.yaml:10: gates.ndcg@10: *",
         {}),
        ("gate-text", SUITE + "gates: {ndcg@10: '>= high'}\n",
         "*suite.yaml:10: gates.ndcg@10: *", {}),
        ("gate-alpha-two", SUITE + "gates: {ndcg@10: 'no significant drop at 2'}\n",
         "*suite.yaml:10: gates.ndcg@10: *", {}),
        ("tolerance-negative", SUITE + "baseline: {tolerance: -0.1}\n",
         "*suite.yaml:10: baseline.tolerance: *", {}),
        ("tolerance-inf", SUITE + "baseline: {tolerance: .inf}\n",
         "*suite.yaml:10: baseline.tolerance: *", {}),
        ("tolerance-negative-percent", SUITE + "baseline: {tolerance: '-5%'}\n",
         "*suite.yaml:10: baseline.tolerance: *", {}),
        ("baseline-alpha", SUITE + "baseline: {alpha: 1.5}\n",
         "*suite.yaml:10: baseline.alpha: *", {}),
        ("seed-fraction", SUITE + "seed: 1.5\n", "*suite.yaml:10: seed: *", {}),
        ("seed-inf", SUITE + "seed: .inf\n", "*suite.yaml:10: seed: *", {}),
        ("max-queries-zero", sub(SUITE, "  qrels: qrels.txt", "  qrels: qrels.txt\n"
                                 "  max_queries: 0"), "*suite.yaml:6: dataset.max_queries: *",
         {}),
        ("record-depth-negative", SUITE + "record_depth: -1\n", "*suite.yaml:10: record_depth: *",
         {}),
        ("temporal-lambda-negative", sub(SUITE, "[ndcg@10, recall@10]",
                                         "[ndcg@10, {name: temporal_ndcg@10, lambda: -1}]"),
         "*suite.yaml:8: metrics*lambda*", {}),
        ("rrf-k-negative", sub(HYBRID_SUITE, "rrf_k: 60", "rrf_k: -1"),
         "*suite.yaml:9: retrievers.fused*rrf_k*", {}),
        ("weights-nan", sub(HYBRID_SUITE, "rrf_k: 60", "method: weighted, weights: [.nan, 1]"),
         "*suite.yaml:9: retrievers.fused*weights*", {}),
        ("concurrency-zero", sub(OPENAI_SUITE, "concurrency: 4", "concurrency: 0"),
         "*suite.yaml:15: llm.concurrency: *", {}),
        ("temperature-inf", sub(OPENAI_SUITE, "temperature: 0", "temperature: .inf"),
         "*suite.yaml:14: llm.params*temperature*", {}),
        # every case's request failed at run time (after its retries) on a URL no client sends
        ("base-url-no-scheme", sub(OPENAI_SUITE, "http://127.0.0.1:9/v1", "localhost:8000/v1"),
         "*suite.yaml:12: llm.base_url: expected an http(s) URL with a host, "
         "e.g. https://api.openai.com/v1, got 'localhost:8000/v1'", {}),
        ("base-url-space", sub(OPENAI_SUITE, "http://127.0.0.1:9/v1", "'http://exa mple/v1'"),
         "*suite.yaml:12: llm.base_url: expected an http(s) URL with a host*", {}),
        ("header-name-space", sub(OPENAI_SUITE, "  concurrency: 4", "  headers: {X Team: a}"),
         "*suite.yaml:15: llm.headers: 'X Team' is not a valid header name*", {}),
        ("header-value-newline", sub(OPENAI_SUITE, "  concurrency: 4",
                                     "  headers: {X-Team: \"a\\nb\"}"),
         "*suite.yaml:15: llm.headers.X-Team: the value holds a control character*",
         {}),
        ("header-value-trailing-space", sub(OPENAI_SUITE, "  concurrency: 4",
                                            "  headers: {X-Team: 'a '}"),
         "*suite.yaml:15: llm.headers.X-Team: the value starts or ends with a space*", {}),
        # a password in the URL (basic auth) is never shown
        ("base-url-bad-port-with-password",
         sub(OPENAI_SUITE, "http://127.0.0.1:9/v1", "'https://user:s3cr3t@host:80a/v1'"),
         "*suite.yaml:12: llm.base_url: *got 'https://[*][*][*]@host:80a/v1'", {}),
        ("header-value-not-ascii", sub(OPENAI_SUITE, "  concurrency: 4",
                                       "  headers: {X-Team: caf\u00e9}"),
         "*suite.yaml:15: llm.headers.X-Team: the value holds a letter outside ASCII*", {}),
        # the client reads one whole JSON reply with one choice and sets the model itself
        ("params-stream", sub(OPENAI_SUITE, "temperature: 0", "stream: true"),
         "*suite.yaml:14: llm.params.stream: streamed replies are not supported*", {}),
        ("params-model", sub(OPENAI_SUITE, "temperature: 0", "model: other"),
         "*suite.yaml:14: llm.params.model: set by ragbench*llm.model*", {}),
        # the prompt and the texts are no model: the advice to set llm.model misled
        ("params-messages", sub(OPENAI_SUITE, "temperature: 0", "messages: []"),
         "*suite.yaml:14: llm.params.messages: set by ragbench for each request (the prompt, "
         "from generation.template or the judge's own); remove the key", {}),
        ("params-n", sub(OPENAI_SUITE, "temperature: 0", "n: 3"),
         "*suite.yaml:14: llm.params.n: *only the first*", {}),
        ("params-n-true", sub(OPENAI_SUITE, "temperature: 0", "n: true"),
         "*suite.yaml:14: llm.params.n: *only the first*", {}),
        ("params-max-tokens-exponent", sub(OPENAI_SUITE, "temperature: 0", "max_tokens: 6e4"),
         "*suite.yaml:14: llm.params.max_tokens: expected a number, got the text '6e4'*", {}),
        # YAML 1.1 reads 6e4 (no dot, no exponent sign) as text
        ("rpm-exponent-text", sub(OPENAI_SUITE, "  concurrency: 4", "  rpm: 6e4"),
         "*suite.yaml:15: llm.rpm: expected a number, got the text '6e4'*write 60000*", {}),
        ("timeout-exponent-text", sub(OPENAI_SUITE, "  concurrency: 4", "  timeout: 1e-1"),
         "*suite.yaml:15: llm.timeout: *the text '1e-1'*write 0.1*", {}),
        ("timeout-zero", sub(OPENAI_SUITE, "  concurrency: 4", "  timeout: 0"),
         "*suite.yaml:15: llm.timeout: *", {}),
        ("price-negative", sub(OPENAI_SUITE, "prompt: 0.15", "prompt: -1"),
         "*suite.yaml:16: prices.m.prompt: *", {}),
        ("price-nan", sub(OPENAI_SUITE, "completion: 0.6", "completion: .nan"),
         "*suite.yaml:16: prices.m.completion: *", {}),
        ("max-cost-negative", sub(OPENAI_SUITE, "max_cost: 1.0", "max_cost: -2"),
         "*suite.yaml:17: max_cost: *", {}),
        ("max-cost-inf", sub(OPENAI_SUITE, "max_cost: 1.0", "max_cost: .inf"),
         "*suite.yaml:17: max_cost: *", {}),
        ("model-not-priced", sub(OPENAI_SUITE, "{m: {prompt", "{other: {prompt"),
         "*suite.yaml:16: prices: *'m'*", {}),
        ("runs-zero", OPENAI_SUITE + "runs: 0\n", "*suite.yaml:18: runs: *", {}),
        ("contexts-zero", RAG_SUITE.replace("contexts: 2", "contexts: 0"),
         "*suite.yaml:11: generation.contexts: *", {}),
        # at the key's own line, not the system's name's (line 7)
        ("http-retriever-params-query", sub(HTTP_SUITE, "index: main", "index: main\n"
                                            "      query: x"),
         "*suite.yaml:13: retrievers.svc.params.query: set by ragbench in each request (the "
         "query's text); leave it out", {}),
        ("http-pipeline-params-metadata", sub(HTTP_PIPELINE_SUITE, "index: main",
                                              "metadata: {a: 1}"),
         "*suite.yaml:12: pipelines.app.params.metadata: set by ragbench in each request "
         "(the question's metadata); leave it out", {}),
        ("http-retriever-timeout-zero", sub(HTTP_SUITE, "timeout: 5", "timeout: 0"),
         "*suite.yaml:10: retrievers.svc.timeout: must be a number of seconds > 0, got 0", {}),
        ("http-pipeline-retries-negative", sub(HTTP_PIPELINE_SUITE, "timeout: 5",
                                               "retries: -1"),
         "*suite.yaml:10: pipelines.app.retries: must be >= 0, got -1", {}),
        ("http-retriever-url", sub(HTTP_SUITE, "http://127.0.0.1:9/search", "localhost/search"),
         "*suite.yaml:9: retrievers.svc.url: must be an http(s) URL with a host, got "
         "'localhost/search'", {}),
        ("http-pipeline-header", sub(HTTP_PIPELINE_SUITE, "timeout: 5",
                                     "headers:\n      X-Team: 'a '"),
         "*suite.yaml:11: pipelines.app.headers.X-Team: the value starts or ends with a space*",
         {}),
    )
]

GRADES: list[Case] = [
    files_case(f"qrels-grade-{name}", "qrels.txt", f"q1 0 d1 1\nq2 0 d2 {grade}\n",
               f"*qrels.txt:2: relevance grade must be an integer, got '{grade}'")
    for name, grade in (("fraction", "1.5"), ("inf", "inf"), ("nan", "nan"), ("text", "high"),
                        ("huge", "99999999999999999999"))
] + [
    files_case("qrels-conflicting-rows", "qrels.txt", "q1 0 d1 1\nq2 0 d2 2\nq1 0 d1 0\n",
               "*qrels.txt:3: query 'q1', document 'd1': grade 0 conflicts with grade 1 at "
               "line 1*"),
    files_case("qrels-wrong-columns", "qrels.txt", "q1 0 d1 1\nq2 d2\n",
               "*qrels.txt:2: expected 3 * or 4 * columns, got 2"),
    files_case("inline-grade-fraction", "queries.jsonl",
               '{"_id": "q1", "text": "espresso", "relevant": {"d1": 1.5}}\n',
               "*queries.jsonl:1: *grade*", suite=sub(SUITE, "  qrels: qrels.txt\n", "")),
    files_case("inline-grade-infinity", "queries.jsonl",
               '{"_id": "q1", "text": "espresso", "relevant": {"d1": Infinity}}\n',
               "*queries.jsonl:1: *grade*", suite=sub(SUITE, "  qrels: qrels.txt\n", "")),
]

DATA_FILES: list[Case] = [
    # run files
    files_case("run-short-line", "run.trec", "q1 Q0 d1 1 2.5 r\nq2 Q0 d2\n",
               "*run.trec:2: expected 'qid Q0 docid rank score tag' (6 columns), got 3",
               suite=RUN_SUITE),
    files_case("run-nan-score", "run.trec", "q1 Q0 d1 1 nan r\n",
               "*run.trec:1: score 'nan' is not finite*", suite=RUN_SUITE),
    files_case("run-empty", "run.trec", "", "*run.trec: the run file holds no results*",
               suite=RUN_SUITE),
    files_case("run-jsonl-truncated", "run.jsonl", '{"query_id": "q1", "results": [["d1", 2',
               "*run.jsonl:1: malformed JSON line: *",
               suite=sub(RUN_SUITE, "run.trec", "run.jsonl")),
    files_case("corpus-truncated-json", "corpus.jsonl", CORPUS + '{"_id": "d4", "te',
               "*corpus.jsonl:4: malformed JSON line: *"),
    files_case("corpus-deep-json", "corpus.jsonl", '{"_id": "d1", "text": ' + "[" * 100000 + "\n",
               "*corpus.jsonl:1: malformed JSON line: *"),
    # baselines
    files_case("baseline-truncated", "base.json", '{"schema_version": 1, "kind": "ragb',
               "*base.json: not valid JSON*", args=BASELINE_ARGS),
    files_case("baseline-empty", "base.json", "", "*base.json: not valid JSON*",
               args=BASELINE_ARGS),
    files_case("baseline-wrong-version", "base.json",
               json.dumps({"schema_version": 99, "kind": "ragbench-baseline", "suites": {}}),
               "*base.json: baseline schema version 99 is not supported*", args=BASELINE_ARGS),
    files_case("baseline-not-a-baseline", "base.json", json.dumps([1, 2]),
               "*base.json: not a ragbench baseline*", args=BASELINE_ARGS),
    files_case("baseline-bad-scores", "base.json", json.dumps(
        {"schema_version": 1, "kind": "ragbench-baseline", "suites": {"s": {
            "name": "battery", "retrievers": {"bm25": {"metrics": {"ndcg@10": {
                "mean": "high", "scores": {}}}}}}}}),
        "*base.json: s/bm25/ndcg@10: means and scores must be numbers or null",
        args=BASELINE_ARGS),
    files_case("baseline-deep-json", "base.json", "[" * 100000, "*base.json: not valid JSON*",
               args=BASELINE_ARGS),
    files_case("baseline-huge-int", "base.json", '{"kind": ' + "1" * 5000 + "}",
               "*base.json: not valid JSON*", args=BASELINE_ARGS),
    Case("baseline-missing-file", "*baseline 'nope.json': no such file or run folder: *nope.json",
         args=("--ragbench-baseline=nope.json",)),
    # histories
    files_case("history-not-sqlite", "hist.sqlite", b"this is not a database, just text\n" * 40,
               "*hist.sqlite: not a ragbench run history*", args=HISTORY_ARGS),
    files_case("history-truncated-sqlite", "hist.sqlite", b"SQLite format 3\x00" + b"\x00" * 50,
               "*hist.sqlite: *", args=HISTORY_ARGS),
    Case("history-foreign-sqlite", "*hist.sqlite: not a ragbench run history*",
         files={"hist.sqlite": "<foreign-sqlite>"}, args=HISTORY_ARGS),
    Case("baseline-last-from-garbage-history", "*hist.sqlite: not a ragbench run history*",
         files={"hist.sqlite": b"garbage" * 100},
         args=(*HISTORY_ARGS, "--ragbench-baseline=last")),
]

OUTPUTS: list[Case] = [
    Case("out-is-a-file", "*ragbench*out.txt*", files={"out.txt": "x"},
         args=("--ragbench-out=out.txt",)),
    Case("out-under-a-file", "*ragbench*out.txt*", files={"out.txt": "x"},
         args=("--ragbench-out=out.txt/runs",)),
    # A write failing at the end is one line and the run goes on (issue 11, point 5): the
    # verdict is the tests', so the exit status stays 0.
    Case("html-is-a-directory", "ragbench: cannot write *report-dir*: Is a directory",
         files={"report-dir": DIR}, args=("--ragbench-html=report-dir",), exits=(0,)),
    Case("save-baseline-is-a-directory", "ragbench: cannot write *base-dir: Is a directory",
         files={"base-dir": DIR}, args=("--ragbench-save-baseline=base-dir",), exits=(0,)),
    Case("history-under-a-file", "*out.txt*", files={"out.txt": "x"},
         args=("--ragbench-history=out.txt/hist.sqlite",)),
]

OPTIONS: list[Case] = [
    Case("gate-metric-typo", "ragbench: --ragbench-gate 'ndcg@1O >= 0.5': no collected suite "
         "computes 'ndcg@1O' (did you mean 'ndcg@10'?)*", args=("--ragbench-gate=ndcg@1O >= 0.5",)),
    Case("gate-syntax", "*--ragbench-gate*", args=("--ragbench-gate=ndcg@10 >>= 0.5",)),
    Case("gate-system-typo", "ragbench: --ragbench-gate 'retriever=bm52: ndcg@10 >= 0.5': no "
         "collected suite has a system 'bm52' (did you mean 'bm25'?); the systems: bm25",
         args=("--ragbench-gate=retriever=bm52: ndcg@10 >= 0.5",)),
    Case("gate-empty", "*--ragbench-gate*", args=("--ragbench-gate=",)),
    # refused in a suite file; on the command line the whole run ran to fail on it
    Case("gate-bound-sixty", "ragbench: --ragbench-gate 'ndcg@10 >= 60': ndcg@10 lies between "
         "0 and 1, so 'ndcg@10 >= 60' can never pass (expected a bound between 0 and 1)",
         args=("--ragbench-gate=ndcg@10 >= 60",)),
    Case("tolerance-bare-five", "*--ragbench-tolerance*5%*", args=("--ragbench-tolerance=5",)),
    Case("tolerance-negative-percent", "*--ragbench-tolerance*",
         args=("--ragbench-tolerance=-1%",)),
    # Under xdist the controller reports a worker's collection error as an error: exit 1. The
    # run (worker start-up is most of its time) also collects a second suite whose corpus is
    # not UTF-8: each error is shown once, not once per worker, and nothing passes. (This is
    # tests/test_dataset_errors.py::test_non_utf8_corpus_is_one_collection_error under xdist.)
    Case("xdist-duplicate-key", "*suite.yaml:10: k: duplicate key 'k'*", suite=SUITE + "k: 20\n",
         files={"utf.yaml": sub(SUITE, "corpus.jsonl", "latin1.jsonl"),
                "latin1.jsonl": latin1(CORPUS, 2)},
         args=("--ragbench=suite.yaml", "--ragbench=utf.yaml", "-n", "2"), exits=(1,),
         also=("*latin1.jsonl:2: invalid UTF-8 byte 0xe9 at column 20 (expected UTF-8 text*",
               "=*= 2 errors in *")),  # the summary line: two errors, nothing passed
    Case("tolerance-text", "*--ragbench-tolerance*", args=("--ragbench-tolerance=lots",)),
    Case("tolerance-nan", "*--ragbench-tolerance*", args=("--ragbench-tolerance=nan",)),
    Case("cache-bogus", "*--ragbench-cache*bogus*", args=("--ragbench-cache=bogus",)),
    Case("baseline-unknown-run-id", "*baseline 'deadbeef' is not a file, a run folder nor a run*",
         args=("--ragbench-baseline=deadbeef",)),
    Case("baseline-last-without-history",
         "*baseline 'last' is not a file, a run folder nor a run in *none.sqlite (no run history*",
         args=("--ragbench-baseline=last", "--ragbench-history=none.sqlite")),
    Case("suite-missing", "*suite file not found: *missing.yaml",
         args=("--ragbench=missing.yaml",)),
]


def cli(id: str, argv: tuple[str, ...], expect: str, files: dict | None = None,
        xfail: str = "") -> Case:
    return Case(id, expect, files or {}, cli=argv, exits=(2,), xfail=xfail)


COMMANDS: list[Case] = [
    cli("cli-no-command", (), "*usage: ragbench*"),
    cli("cli-unknown-command", ("frobnicate",), "*invalid choice: 'frobnicate'*"),
    cli("compare-missing-files", ("compare", "a.json", "b.json"),
        "ragbench compare: *a.json*"),
    cli("compare-truncated-baseline", ("compare", "base.json", "base.json"),
        "ragbench compare: *base.json*not valid JSON*", {"base.json": '{"kind": "ragbe'}),
    cli("compare-utf16-baseline", ("compare", "base.json", "base.json"),
        "ragbench compare: *base.json*", {"base.json": utf16('{"kind": 1}')}),
    cli("compare-deep-baseline", ("compare", "base.json", "base.json"),
        "ragbench compare: *base.json*", {"base.json": "[" * 100000}),
    cli("compare-alpha-two", ("compare", "a.json", "b.json", "--alpha", "2"),
        "*argument --alpha: alpha must be strictly between 0 and 1*"),
    cli("compare-tolerance-negative", ("compare", "a.json", "b.json", "--tolerance=-1%"),
        "*argument --tolerance: tolerance must be a non-negative number, got '-1%'"),
    cli("compare-tolerance-five", ("compare", "a.json", "b.json", "--tolerance", "5"),
        "*argument --tolerance: an absolute tolerance of 5 *'5%'*"),
    cli("compare-gate-syntax", ("compare", "a.json", "b.json", "--gate", "ndcg@10 >>= 1"),
        "*argument --gate: *"),
    cli("compare-last-garbage-history", ("compare", "last", "last", "--history", "h.sqlite"),
        "ragbench compare: *h.sqlite*", {"h.sqlite": b"garbage" * 100}),
    cli("history-missing-db", ("history", "--history", "none.sqlite"),
        "ragbench history: *none.sqlite*"),
    cli("cmd-history-not-sqlite", ("history", "--history", "h.sqlite"),
        "ragbench history: *h.sqlite: not a ragbench run history*", {"h.sqlite": b"x" * 500}),
    cli("cmd-history-directory", ("history", "--history", "h.sqlite"),
        "ragbench history: *h.sqlite: is a folder*", {"h.sqlite": DIR}),
    cli("history-limit-text", ("history", "--limit", "many"),
        "*argument --limit: invalid int value: 'many'"),
    cli("history-limit-negative", ("history", "--limit", "-1"),
        "*argument --limit: expected at least 1, got -1"),
    cli("report-missing-dir", ("report", "nowhere"), "ragbench report: *nowhere*"),
    cli("report-on-a-file", ("report", "f.txt"), "ragbench report: *f.txt is a file, not a run "
        "folder*", {"f.txt": "x"}),
    # A torn summary.json is a crashed run: re-rendered from cases.jsonl, and said so.
    Case("report-truncated-summary", "ragbench report: summary.json is unreadable *",
         {"run/summary.json": '{"schema_version": 1, "su', "run/cases.jsonl": ""},
         cli=("report", "run"), exits=(0,)),
    cli("report-utf16-cases", ("report", "run"),
        "ragbench report: *cases.jsonl: line 1: not UTF-8*",
        {"run/cases.jsonl": utf16('{"a": 1}\n'), "run/summary.json": "{}"}),
]

CONTROLS: list[Case] = [
    # Valid inputs that look odd: they must run, not be refused.
    Case("control-utf8-bom-everywhere", "*2 passed*", exits=(0,),
         files={"suite.yaml": bom8(SUITE), "corpus.jsonl": bom8(CORPUS),
                "queries.jsonl": bom8(QUERIES), "qrels.txt": bom8(QRELS)}),
    # A dataset file symlinked to a blob without a suffix (a content-addressed store) is read
    # by the name the suite gives it.
    Case("control-corpus-symlink-to-blob", "*2 passed*", exits=(0,),
         files={"store/3f9a": CORPUS, "corpus.jsonl": Special("link:store/3f9a")},
         args=("--ragbench-no-output",)),
    # latency_ms has no upper bound: a gate of 5000 ms is meant.
    Case("control-unbounded-metric-gate", "*PASS battery/bm25: latency_ms *<= 5000*", exits=(0,),
         suite=sub(SUITE, "[ndcg@10, recall@10]", "[ndcg@10, recall@10, latency_ms]")
         + "gates: {latency_ms: '<= 5000'}\n", args=("--ragbench-no-output",)),
    Case("control-tolerance-percent", "*2 passed*", exits=(0,),
         args=("--ragbench-tolerance=5%", "--ragbench-no-output")),
]

ALL = [*ENCODINGS, *UNREADABLE, *LOOPS, *DIRECTORIES, *YAML, *NUMBERS, *GRADES, *DATA_FILES,
       *OUTPUTS, *OPTIONS, *COMMANDS, *CONTROLS]
# What each category of issue 11 holds (test_every_category_has_cases).
CATEGORIES: dict[str, list[Case]] = {
    "encodings": ENCODINGS, "unreadable": UNREADABLE, "symlink loops": LOOPS,
    "directories": DIRECTORIES, "yaml": YAML, "numbers": NUMBERS, "grades": GRADES,
    "run/baseline/history files": DATA_FILES, "outputs": OUTPUTS, "options": OPTIONS,
    "commands": COMMANDS,
}
# The plugin checks a named suite path before any loader runs (plugin._suite_args): a usage
# error of its own, which only a pytest run shows.
PLUGIN_CHECKED = {"suite.yaml-symlink-loop", "suite.yaml-is-a-directory", "suite-missing"}


def collection_error_case(case: Case) -> bool:
    """Whether the case's one line is the collection error of its suite file: a broken suite,
    dataset, run or template file and no option but the suite's path. Those are checked by
    tests/unit/test_bad_inputs_loader.py with the calls collection makes (no pytest run)."""
    return (case.cli is None and case.exits == BAD_EXITS and not case.env and not case.xfail
            and case.id not in PLUGIN_CHECKED
            and all(a.startswith("--ragbench=") for a in case.args))


# Per category, the first collection-error case stays a pytest run here: it shows that such
# an error reaches the user as a collection error status and one line without a traceback.
LOADER_CASES: list[Case] = [
    case for cases in CATEGORIES.values()
    for case in [c for c in cases if collection_error_case(c)][1:]]
_LOADER_IDS = {c.id for c in LOADER_CASES}
E2E_CASES: list[Case] = [c for c in ALL if c.id not in _LOADER_IDS]


# -- running a case -----------------------------------------------------------------------------


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail a case that runs longer than TIMEOUT instead of hanging the test run."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"the case did not finish within {TIMEOUT} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def deny_reads(monkeypatch: pytest.MonkeyPatch, denied: set[Path]) -> None:
    """``open`` of these files raises PermissionError, as for a file of another user (the tests
    may run as root, for whom chmod 000 changes nothing)."""
    real_open = io.open

    def guarded(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, str | Path) and Path(file).absolute() in denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(io, "open", guarded)
    monkeypatch.setattr(builtins, "open", guarded)


def write_files(root: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, str | bytes | Special] = {
        "corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels.txt": QRELS, "run.trec": RUN,
        "prompt.j2": TEMPLATE, "suite.yaml": case.suite,
    }
    denied: set[Path] = set()
    for name, content in {**base, **case.files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Special):
            if content is DIR:
                path.mkdir()
            elif content is LOOP:
                path.symlink_to(path.name + ".loop")
                path.with_name(path.name + ".loop").symlink_to(path.name)
            elif content.kind.startswith("link:"):
                path.symlink_to(root / content.kind.removeprefix("link:"))
            elif content is EIO:
                if not HAS_PROC_MEM:
                    pytest.skip("needs /proc/self/mem (a file whose read fails with EIO)")
                path.symlink_to("/proc/self/mem")
            else:
                path.write_text("x")
                denied.add(path.absolute())
        elif content == "<foreign-sqlite>":
            with sqlite3.connect(path) as db:
                db.execute("create table t (x)")
            db.close()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if denied:
        deny_reads(monkeypatch, denied)


def run_case(pytester: pytest.Pytester, case: Case, capsys: pytest.CaptureFixture[str]
             ) -> tuple[int, str]:
    if case.cli is not None:
        try:
            code = ragbench_main(list(case.cli))
        except SystemExit as exc:  # pragma: no cover - main returns, it should not exit
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # what a user would see as a traceback
            code, out = -1, f"Traceback: {type(exc).__name__}: {exc}"
            return code, out + capsys.readouterr().err
        captured = capsys.readouterr()
        return code, captured.out + captured.err
    pytester.makeini(BASE_INI)
    suite_args = () if any(a.startswith("--ragbench=") for a in case.args) else (
        "--ragbench=suite.yaml",)
    # Without hypothesis's plugin: its terminal summary imports (and pytest rewrites) the whole
    # hypothesis package again in every in-process run, which cost most of the battery's time.
    result = pytester.runpytest(*suite_args, "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                *case.args)
    return int(result.ret), result.stdout.str() + "\n" + result.stderr.str()


@pytest.mark.parametrize("case", [c.param() for c in E2E_CASES])
def test_bad_input(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str], alarm: None, case: Case) -> None:
    monkeypatch.chdir(pytester.path)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    write_files(pytester.path, case, monkeypatch)
    code, out = run_case(pytester, case, capsys)
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert code in case.exits, f"exit {code}, expected one of {case.exits}:\n{out}"
    for pattern in (case.expect, *case.also):
        matching = [line for line in out.splitlines() if fnmatch.fnmatchcase(line, pattern)]
        assert len(matching) == 1, f"expected one line matching {pattern!r}, got " \
                                   f"{len(matching)}:\n{out}"


def test_every_category_has_cases() -> None:
    """The battery keeps at least one case per category of issue 11 and about 90 in all; each
    case runs either here or in tests/unit/test_bad_inputs_loader.py, and each category keeps
    a pytest run here (for a collection-error category, one of a collection error)."""
    assert all(CATEGORIES.values()), [name for name, cases in CATEGORIES.items() if not cases]
    assert sum(len(cases) for cases in CATEGORIES.values()) >= 90
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
    e2e = {c.id for c in E2E_CASES}
    assert sorted(e2e | _LOADER_IDS) == sorted(ids) and not e2e & _LOADER_IDS
    for name, cases in CATEGORIES.items():
        kept = [c.id for c in cases if c.id in e2e]
        assert kept, name
        if any(collection_error_case(c) for c in cases):
            assert any(collection_error_case(c) for c in cases if c.id in e2e), name
