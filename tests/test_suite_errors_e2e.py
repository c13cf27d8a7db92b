"""The loader's messages reach the user as a usage error, without a traceback (the loader's
own cases are unit tests: tests/unit/test_suite_errors.py)."""

from __future__ import annotations

import textwrap

import pytest
from conftest import ALIAS_BOMB as BOMB
from conftest import LOADER_SUITE as GOOD

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

# -- end to end: the same messages reach the user, as a usage error, without a traceback --------


def run_bad(pytester: pytest.Pytester, suite: str) -> pytest.RunResult:
    (pytester.path / "suite.yaml").write_text(textwrap.dedent(suite))
    result = pytester.runpytest("--ragbench=suite.yaml")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR)
    return result


def test_end_to_end_unknown_key(pytester, mini_suite):
    mini_suite(GOOD)
    result = run_bad(pytester, GOOD + "metric: [mrr@10]\n")
    result.stdout.fnmatch_lines(["*suite.yaml:8: metric: unknown key 'metric' "
                                 "(did you mean 'metrics'?) (expected one of: *)"])


def test_end_to_end_alias_bomb_fails_fast(pytester, mini_suite):
    mini_suite(GOOD)
    result = run_bad(pytester, GOOD + BOMB)
    result.stdout.fnmatch_lines(["*suite.yaml:*: *expands to more than * values*"])


def test_end_to_end_module_that_raises_on_import(pytester, mini_suite):
    # the user's module raised (not an ImportError): one line saying what and where, not a
    # traceback through the plugin's collection and importlib's frames
    mini_suite(GOOD)
    pytester.makepyfile(raises_on_import="raise RuntimeError('no API key configured')\n")
    result = run_bad(pytester, GOOD.replace("bm25: {}", "mine: {type: 'raises_on_import:R'}"))
    result.stdout.fnmatch_lines([
        "*suite.yaml:6: retrievers.mine: cannot import 'raises_on_import' for "
        "'raises_on_import:R': RuntimeError: no API key configured (at *raises_on_import.py:1)"])
    assert "importlib" not in result.stdout.str()


def test_a_bad_langchain_or_llamaindex_object_is_reported_at_its_own_line(pytester,
                                                                          mini_suite):
    """A langchain or llamaindex pipeline's bad 'object' (a wrong attribute, not a Runnable or
    query engine, built by a factory as such) was reported at the pipeline's name, where
    every other parameter's error points at that parameter's own line."""
    mini_suite()
    pytester.makepyfile(app_mod="""
        three = 3

        def make_three():
            return 3
    """)
    result = run_bad(pytester, """\
        name: objects
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          lc:
            type: langchain
            object: "app_mod:nothing"
          li:
            type: llamaindex
            # the older spelling
            engine: "app_mod:three"
        metrics: [recall@10]
        """)
    result.stdout.fnmatch_lines([
        "*suite.yaml:6: pipelines.lc.object: 'app_mod' has no attribute 'nothing'",
        "*suite.yaml:10: pipelines.li.engine: 'app_mod:three' is int, not a LlamaIndex query "
        "engine or retriever",
    ], consecutive=True)
    # a factory's object is checked when built, still before the first item
    result = run_bad(pytester, """\
        name: made
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          made:
            type: langchain
            object: "app_mod:make_three"
        metrics: [recall@10]
        """)
    result.stdout.fnmatch_lines([
        "*suite.yaml:6: pipelines.made.object: 'app_mod:make_three' is int, not a LangChain "
        "Runnable (chain) or BaseRetriever"])


def test_every_bad_component_parameter_of_a_suite_is_listed_in_its_one_error(pytester,
                                                                              mini_suite):
    """Only the first was reported (pipeline a's object), so a user fixed one, ran again and
    met the next, as the runtime checks (unset variables) do not make them do."""
    mini_suite()
    result = run_bad(pytester, """\
        name: many
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          bm25: {k1: fast}
        pipelines:
          a:
            type: langchain
            object: "nomod_a:chain"
          b:
            type: langchain
            object: "nomod_b:chain"
          c:
            type: http
            url: http://127.0.0.1:9/answer
            params: {query: 1}
        metrics:
          - ndcg@10
          - {name: temporal_ndcg@10, lambda: high}
          - {name: temporal_ndcg@5, lambda: low}
        """)
    out = result.stdout.str()
    assert out.count("ERROR collecting suite.yaml") == 1, out
    result.stdout.fnmatch_lines([
        "*suite.yaml:4: retrievers.bm25.k1: expected a number, got 'fast'",
        "*suite.yaml:8: pipelines.a.object: cannot import 'nomod_a' for 'nomod_a:chain': "
        "No module named 'nomod_a'",
        "*suite.yaml:11: pipelines.b.object: cannot import 'nomod_b' for 'nomod_b:chain': "
        "No module named 'nomod_b'",
        "*suite.yaml:15: pipelines.c.params.query: set by ragbench in each request*",
        "*suite.yaml:18: metrics[[]1[]].lambda: expected a number, got 'high'",
        "*suite.yaml:19: metrics[[]2[]].lambda: expected a number, got 'low'",
    ], consecutive=True)


def test_every_bad_parameter_of_one_component_is_listed_in_its_one_error(pytester, mini_suite):
    """Within one component only the first bad parameter was reported (bm25's k1, not its b;
    an unknown one hid a wrong type beside it), so a user fixed one, ran again and met the
    next."""
    mini_suite()
    result = run_bad(pytester, """\
        name: one
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          bm25:
            k1: fast
            b: high
          other:
            type: bm25
            nope: 1
            k1: slow
        metrics:
          - ndcg@10
          - {name: temporal_ndcg@10, lambda: high, field: 3}
        """)
    out = result.stdout.str()
    assert out.count("ERROR collecting suite.yaml") == 1, out
    result.stdout.fnmatch_lines([
        "*suite.yaml:5: retrievers.bm25.k1: expected a number, got 'fast'",
        "*suite.yaml:6: retrievers.bm25.b: expected a number, got 'high'",
        "*suite.yaml:9: retrievers.other.nope: retriever 'bm25' got unknown parameter(s) nope; "
        "it accepts: *",
        "*suite.yaml:10: retrievers.other.k1: expected a number, got 'slow'",
        "*suite.yaml:13: metrics[[]1[]].lambda: expected a number, got 'high'",
        "*suite.yaml:13: metrics[[]1[]].field: expected a string, got 3",
    ], consecutive=True)


def test_every_bad_parameter_of_a_registered_llm_is_at_its_own_line(pytester, mini_suite):
    """A registered LLM's bad parameters were one error at the ``llm:`` line, its second and
    third problems lines without a file or key (a retriever's are each at their own line); a
    bad judge LLM beside it was found only a run later (building stopped at the first)."""
    mini_suite()
    pytester.makepyfile(my_llm="""
        class MyLLM:
            def __init__(self, model: str, temperature: float = 0.0):
                self.model = model

            def complete(self, messages, **kwargs):
                return "x"
    """)
    result = run_bad(pytester, """\
        name: one
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          overlap: {type: "overlap_retriever:Overlap"}
        llm:
          type: my_llm:MyLLM
          modle: small
          temperature: hot
        judge:
          llm: {type: "my_llm:MyLLM", model: judge, temperature: warm}
        metrics: [recall@10, token_f1, faithfulness]
        """)
    out = result.stdout.str()
    assert out.count("ERROR collecting suite.yaml") == 1, out
    # in the order of the file, as the loader's problems are
    result.stdout.fnmatch_lines([
        "*suite.yaml:5: llm: llm 'my_llm:MyLLM' is missing required parameter(s) model; it "
        "accepts: model, temperature",
        "*suite.yaml:7: llm.modle: llm 'my_llm:MyLLM' got unknown parameter(s) modle (did you "
        "mean 'model'?); it accepts: model, temperature",
        "*suite.yaml:8: llm.temperature: expected a number, got 'hot'",
        "*suite.yaml:10: judge.llm.temperature: expected a number, got 'warm'",
    ], consecutive=True)


def test_a_pipeline_suites_registered_judge_llm_is_reported_once_at_its_own_key(
        pytester, mini_suite):
    """A suite of pipelines has no ``llm:`` (the judge's own LLM stands in for it): a bad
    parameter of a registered judge LLM was reported twice, once at ``llm.temperature``, a key
    the file does not have, whose line was looked for forever (collection hung)."""
    mini_suite()
    pytester.makepyfile(my_llm="""
        class MyLLM:
            def __init__(self, model: str, temperature: float = 0.0):
                if temperature < 0:
                    raise ValueError("temperature must be >= 0")
                self.model = model

            async def chat(self, messages, **kwargs):
                raise NotImplementedError


        class App:
            def answer(self, query):
                return "x"
    """)
    result = run_bad(pytester, """\
        name: pipes
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          app: {type: "my_llm:App"}
        judge:
          llm: {type: "my_llm:MyLLM", model: judge, temperature: warm}
        metrics: [faithfulness]
        """)
    out = result.stdout.str()
    assert out.count("ERROR collecting suite.yaml") == 1, out
    result.stdout.fnmatch_lines(
        ["*suite.yaml:6: judge.llm.temperature: expected a number, got 'warm'"])
    assert out.count("llm.temperature") == 1, out
    # one it cannot build: built once (the stand-in is the judge's), said at the judge's line
    result = run_bad(pytester, """\
        name: pipes
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          app: {type: "my_llm:App"}
        judge:
          llm: {type: "my_llm:MyLLM", model: judge, temperature: -1}
        metrics: [faithfulness]
        """)
    result.stdout.fnmatch_lines(
        ["*suite.yaml:6: judge.llm: cannot build llm 'my_llm:MyLLM': temperature must be >= 0"])


def test_a_components_own_check_is_listed_beside_its_refused_parameters(pytester, mini_suite):
    """A parameter the registry refused (unknown, mistyped) hid what the component's own
    check finds (a reserved request parameter, a dense retriever's embedder, a langchain
    pipeline's object): a user fixed the one and met the other a run later."""
    mini_suite()
    result = run_bad(pytester, """\
        name: checked
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          h:
            type: http
            url: http://127.0.0.1:9/search
            params: {query: 1}
            extra: 1
          dense:
            type: dense
            batch_sise: 8
            embedder: {type: hashing, dim: lots}
        pipelines:
          lc:
            type: langchain
            object: "nomod_lc:chain"
            input_kye: q
          typed:
            type: langchain
            object: 3
        metrics: [recall@10]
        """)
    out = result.stdout.str()
    assert out.count("ERROR collecting suite.yaml") == 1, out
    result.stdout.fnmatch_lines([
        "*suite.yaml:7: retrievers.h.params.query: set by ragbench in each request*",
        "*suite.yaml:8: retrievers.h.extra: retriever 'http' got unknown parameter(s) extra;*",
        "*suite.yaml:11: retrievers.dense.batch_sise: retriever 'dense' got unknown "
        "parameter(s) batch_sise (did you mean 'batch_size'?)*",
        "*suite.yaml:12: retrievers.dense.embedder.dim: expected an integer, got 'lots'",
        "*suite.yaml:16: pipelines.lc.object: cannot import 'nomod_lc' for 'nomod_lc:chain': "
        "No module named 'nomod_lc'",
        "*suite.yaml:17: pipelines.lc.input_kye: pipeline 'langchain' got unknown "
        "parameter(s) input_kye (did you mean 'input_key'?)*",
        # the object held back from the check is not said to be missing as well
        "*suite.yaml:20: pipelines.typed.object: expected a string, got 3",
        "*short test summary*",
    ], consecutive=True)


def test_each_bad_parameter_of_a_nested_embedder_has_a_line_of_its_own(pytester, mini_suite):
    """A dense retriever's embedder with two bad parameters read as one error whose second
    line had no file, line or key: an editor's problem matcher (and a reader) took it for
    part of the first. Then each was at the retriever's line; each is at its own key's."""
    mini_suite()
    result = run_bad(pytester, """\
        name: nested
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          dense:
            type: dense
            embedder: {type: hashing, dim: lots, bogus: 2}
          block:
            type: dense
            embedder:
              type: hashing
              dim: lots
          named:
            type: dense
            embedder: nosuch
        metrics: [recall@10]
        """)
    result.stdout.fnmatch_lines([
        "*suite.yaml:6: retrievers.dense.embedder.bogus: embedder 'hashing' got unknown "
        "parameter(s) bogus;*",
        "*suite.yaml:6: retrievers.dense.embedder.dim: expected an integer, got 'lots'",
        "*suite.yaml:11: retrievers.block.embedder.dim: expected an integer, got 'lots'",
        "*suite.yaml:14: retrievers.named.embedder: unknown embedder 'nosuch'*",
    ], consecutive=True)
