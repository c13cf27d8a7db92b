"""What the suite file alone tells is checked at load, before the first item, as a SuiteError."""

from __future__ import annotations

import fnmatch
import textwrap
from pathlib import Path

import pytest
from conftest import DOCS, QUERIES, write_jsonl

from pytest_ragbench.errors import SuiteError
from pytest_ragbench.suite.loader import Suite, load_suite

BASE = """\
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers: {bm25: {}}
"""
OPENAI = "{type: openai, base_url: 'http://127.0.0.1:9/v1', model: gpt-x}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    write_jsonl(tmp_path / "queries.jsonl", QUERIES)
    return tmp_path


def load(folder: Path, body: str) -> Suite:
    path = folder / "suite.yaml"
    path.write_text(BASE + textwrap.dedent(body))
    return load_suite(path, None)


def message(folder: Path, body: str) -> str:
    with pytest.raises(SuiteError) as info:
        load(folder, body)
    return str(info.value).replace(str(folder / "suite.yaml"), "S")


def test_judged_metric_without_judge(folder):
    assert message(folder, f"metrics: [token_f1, faithfulness]\nllm: {OPENAI}\n") == (
        "S:3: metrics[1]: faithfulness is judged by an LLM; add a 'judge:' section "
        "(e.g. judge: {llm: same} with an openai llm)")


def test_a_metric_that_embeds_without_an_embedder_is_refused_before_any_request(folder):
    # it passed collection: every case's answer was paid for, then every item errored
    body = f"metrics: [token_f1, answer_relevancy]\nllm: {OPENAI}\njudge: {{llm: same}}\n"
    assert message(folder, body) == (
        "S:3: metrics[1]: answer_relevancy needs an embedder; add an 'embedder:' section "
        "(e.g. embedder: {type: openai, ...}, or {type: hashing} offline)")
    suite = load(folder, body + "embedder: {type: hashing}\n")
    assert suite.rag is not None


def test_judged_metric_with_judge_loads(folder):
    suite = load(folder, f"metrics: [faithfulness]\nllm: {OPENAI}\njudge: {{llm: same}}\n")
    assert suite.rag is not None and suite.rag.judge is not None


def test_lexical_answer_metrics_need_no_judge(folder):
    assert load(folder, "metrics: [token_f1]\nllm: {type: extractive}\n").rag.judge is None


def test_model_missing_from_prices(folder):
    body = (f"metrics: [token_f1]\nllm: {OPENAI}\n"
            "prices: {gpt-y: {prompt: 1, completion: 2}}\n")
    assert message(folder, body) == (
        "S:5: prices: no price for model 'gpt-x' (did you mean 'gpt-y'?) (used by llm); "
        "add it to prices")


def test_judge_model_missing_from_prices(folder):
    judge = OPENAI.replace("gpt-x", "judge-1")
    body = (f"metrics: [faithfulness]\nllm: {OPENAI}\njudge: {{llm: {judge}}}\n"
            "prices: {gpt-x: {prompt: 1, completion: 2}}\nmax_cost: 1\n")
    assert "prices: no price for model 'judge-1'" in message(folder, body)
    assert "(used by judge.llm)" in message(folder, body)


def test_max_cost_without_prices_for_a_paid_llm(folder):
    assert message(folder, f"metrics: [token_f1]\nllm: {OPENAI}\nmax_cost: 2\n") == (
        "S:5: max_cost: needs 'prices' to know what the LLM calls cost")


@pytest.mark.parametrize(("body", "expected"), [
    # beyond any real value: costs overflowed to infinity and the run's end raised a TypeError
    (f"metrics: [token_f1]\nllm: {OPENAI}\n"
     "prices: {gpt-x: {prompt: 1.0e+306, completion: 1}}\n",
     "S:5: prices.gpt-x.prompt: expected a number (USD per 1M tokens) from 0 to 1000000, got "
     "1e+306"),
    # every case's requests were paid for, then each item asked for 30 GiB
    ("metrics: [answer_relevancy]\nllm: {type: extractive}\njudge: {llm: same}\n"
     "embedder: {type: hashing, dim: 2000000000}\n",
     "S:6: embedder.dim: expected an integer from 2 to 1048576, got 2000000000"),
    (f"metrics: [answer_relevancy]\nllm: {OPENAI}\n"
     "judge: {llm: same, n_questions: 100000000000000000000}\nembedder: {type: hashing}\n",
     "S:5: judge.n_questions: expected an integer from 1 to 50, got 100000000000000000000"),
])
def test_values_past_any_use_are_refused_at_load(folder, body, expected):
    assert message(folder, body) == expected


def test_a_cache_path_that_cannot_be_the_cache_is_refused_before_any_request(folder):
    # found at the first case, every case errored ("FileExistsError", "DatabaseError"), and
    # in refresh mode after its requests were paid for; checked where the pipeline is built
    # (before any case), where --ragbench-cache-path and --ragbench-cache apply
    from pytest_ragbench.answers.pipeline import build_pipeline

    (folder / "afile").write_text("x")
    (folder / "adir.sqlite").mkdir()
    (folder / "text.sqlite").write_text("not a database")
    for cache, said in (("{path: afile/c.sqlite}", "cannot be created: S/afile is a file"),
                        ("{path: adir.sqlite, mode: refresh}", "is a folder"),
                        ("{path: text.sqlite}", "is not an SQLite file")):
        rag = load(folder, f"metrics: [token_f1]\nllm: {{type: extractive}}\ncache: {cache}\n").rag
        with pytest.raises(ValueError) as info:
            build_pipeline(rag, base_dir=folder)
        text = str(info.value).replace(str(folder), "S")
        assert text.startswith("cache: the response cache ") and said in text, text
    # the command line's path or mode is the one that counts
    build_pipeline(rag, base_dir=folder, cache_path_override=str(folder / "ok.sqlite")).close()
    build_pipeline(rag, base_dir=folder, cache_mode_override="off").close()


def test_a_template_reading_as_many_contexts_as_the_suite_gives_builds(folder):
    # checked with one passage, contexts[1] was refused ("list object has no element 1")
    from pytest_ragbench.answers.pipeline import build_pipeline

    rag = load(folder, "metrics: [token_f1]\nllm: {type: extractive}\ncache: 'off'\n"
                       "generation: {contexts: 2, template: '{{ contexts[1].text }}'}\n").rag
    build_pipeline(rag, base_dir=folder).close()


def test_priced_models_load(folder):
    suite = load(folder, f"metrics: [token_f1]\nllm: {OPENAI}\n"
                         "prices: {gpt-x: {prompt: 1, completion: 2}}\nmax_cost: 1\n")
    assert suite.rag.max_cost == 1.0


@pytest.mark.parametrize(("generation", "expected"), [
    ("{template: '{{ question }'}", "S:5: generation.template: bad Jinja2 template: "),
    ("{template: '{% for c in contexts %}{{ c.text }}'}",
     "S:5: generation.template: bad Jinja2 template: "),
    ("{template_file: missing.j2}", "S:5: generation.template_file: cannot read template "),
    ("{template: prompts/gen.j2}", "S:5: generation.template: cannot read template "),
    # the template's own code failing: it was a traceback with no key or line
    ("{template: '{{ 1 / 0 }}'}", "S:5: generation.template: the template fails when "
                                  "rendered: ZeroDivisionError: division by zero"),
    ("{template: '{{ question(1) }}'}", "S:5: generation.template: the template fails when "
                                        "rendered: TypeError: "),
])
def test_templates_are_compiled_at_load(folder, generation, expected):
    body = f"metrics: [token_f1]\nllm: {{type: extractive}}\ngeneration: {generation}\n"
    assert message(folder, body).startswith(expected)


def test_a_template_reading_as_many_contexts_as_the_suite_gives_loads(folder):
    # checked with one passage, contexts[1] was refused ("list object has no element 1")
    body = ("metrics: [token_f1]\nllm: {type: extractive}\n"
            "generation: {contexts: 2, template: '{{ question }} {{ contexts[1].text }}'}\n")
    assert load(folder, body).rag is not None


def test_broken_template_file(folder):
    (folder / "gen.j2").write_text("{{ question }")
    body = "metrics: [token_f1]\nllm: {type: extractive}\ngeneration: {template_file: gen.j2}\n"
    assert message(folder, body).startswith(
        "S:5: generation.template_file: bad Jinja2 template: ")


@pytest.mark.parametrize(("template", "said"), [
    ("Q: {{ question }}\n{% for c in contexts %}\n{{ c.text }}\n", "bad Jinja2 template: "
     "Unexpected end of template. *(at line 3 of the template)"),  # an unclosed block
    ("Q: {{ question }}\n\n{{ questoin }}\n", "bad Jinja2 template: 'questoin' is undefined "
     "(at line 3 of the template)"),
    ("Q: {{ question }}\n{{ 1 / 0 }}\n", "the template fails when rendered: "
     "ZeroDivisionError: division by zero (at line 2 of the template)"),
])
def test_a_broken_template_names_its_own_line(folder, template, said):
    # the suite's line is the key's; the template file may be long
    (folder / "gen.j2").write_text(template)
    body = "metrics: [token_f1]\nllm: {type: extractive}\ngeneration: {template_file: gen.j2}\n"
    text = message(folder, body)
    assert fnmatch.fnmatchcase(text, "S:5: generation.template_file: " + said), text


def test_template_file_that_is_not_utf8(folder):
    (folder / "gen.j2").write_bytes(b"\xff\xfe{{ question }}")
    body = "metrics: [token_f1]\nllm: {type: extractive}\ngeneration: {template_file: gen.j2}\n"
    assert message(folder, body).startswith("S:5: generation.template_file: cannot read ")


def test_good_template_file_loads(folder):
    (folder / "gen.j2").write_text("Q={{ question }}")
    body = "metrics: [token_f1]\nllm: {type: extractive}\ngeneration: {template_file: gen.j2}\n"
    assert load(folder, body).rag.generation.template_file == "gen.j2"


def beir(folder: Path, *splits: str) -> None:
    (folder / "beir" / "qrels").mkdir(parents=True)
    for split in splits:
        (folder / "beir" / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n")


def test_beir_path_without_split_lists_the_splits(folder):
    beir(folder, "test", "dev")
    path = folder / "suite.yaml"
    path.write_text("dataset:\n  path: beir\nretrievers: {bm25: {}}\nmetrics: [ndcg@10]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, None)
    assert str(info.value) == (f"{path}:2: dataset.path: a BEIR folder with qrels needs 'split' "
                               "(available splits: dev, test)")


def test_beir_path_with_split_or_without_qrels_loads(folder):
    beir(folder, "test")
    path = folder / "suite.yaml"
    path.write_text("dataset: {path: beir, split: test}\nretrievers: {bm25: {}}\n"
                    "metrics: [ndcg@10]\n")
    assert load_suite(path, None).dataset.split == "test"
    (folder / "plain").mkdir()
    path.write_text("dataset: plain\nretrievers: {bm25: {}}\nmetrics: [ndcg@10]\n")
    assert load_suite(path, None).dataset.split is None


def test_cutoff_above_k(folder):
    assert message(folder, "metrics: [ndcg@10, ndcg@1000]\nk: 100\n") == (
        "S:3: metrics[1]: ndcg@1000 looks at the top 1000 documents but each retriever returns "
        "only k: 100; raise k or lower the cutoff")


def test_a_cutoff_above_k_is_no_error_without_retrievers(folder):
    # k bounds what a retriever returns; a pipeline's contexts are scored as it gave them,
    # however many, so a pipelines-only suite was refused for "each retriever" it did not have
    path = folder / "suite.yaml"
    path.write_text("dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
                    "pipelines: {app: {type: recorded, path: out.jsonl}}\n"
                    "metrics: [recall@10, ndcg@20]\nk: 3\n")
    assert load_suite(path, None).k == 3
    path.write_text(path.read_text() + "retrievers: {bm25: {}}\n")
    with pytest.raises(SuiteError, match="recall@10 looks at the top 10 documents but each "
                                         "retriever returns only k: 3"):
        load_suite(path, None)


def test_cutoffs_up_to_k_load_and_k_defaults_to_the_largest(folder):
    assert load(folder, "metrics: [ndcg@10, recall@100]\nk: 100\n").k == 100
    assert load(folder, "metrics: [ndcg@10, recall@100]\n").k == 100


def test_all_checks_run_before_any_dataset_is_read(folder):
    # the corpus is garbage, yet the suite error comes first: nothing has read it
    (folder / "corpus.jsonl").write_text("{not json\n")
    assert "looks at the top 1000" in message(folder, "metrics: [ndcg@1000]\nk: 10\n")
