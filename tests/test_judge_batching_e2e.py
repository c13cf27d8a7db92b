"""``judge: {items_per_call: N}`` through the plugin, against a real OpenAI-compatible server on
127.0.0.1: judge requests per item at N = 1, 5 and 10 in one run (three suites, each judge
with its own model name so the server tells their requests apart), generated answers and a
pipeline's answers alike, with the same scores as judging each item alone."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest
from conftest import BASE_INI, DOCS, latest_run, write_jsonl

from pytest_ragbench.llm.testing import FakeOpenAIServer, per_item_judge

N_ITEMS = 10


def reply(messages: Sequence[dict[str, str]]) -> str:
    """Generation echoes the first context (and adds an unsupported claim to the extra
    notes); the judge depends on each item only: the answer's sentences are its claims,
    supported when a context contains them, and a context is useful when it has an even
    number of words (arbitrary, but a function of the item alone)."""
    prompt = next((str(m["content"]) for m in messages if m.get("role") == "user"), "")
    if "Produce these keys" not in prompt:
        first = re.search(r"\[1\] (.*)", prompt)
        extra = " It never fails." if "extra" in prompt.lower() else ""
        return (first.group(1) if first else "I do not know.") + extra
    answer = re.search(r"^ANSWER: (.*)$", prompt, flags=re.MULTILINE)
    contexts = re.findall(r"^\[\d+\] (.*)$", prompt, flags=re.MULTILINE)
    claims = [s.strip() for s in (answer.group(1) if answer else "").split(".") if s.strip()]
    return json.dumps({
        "answer_claims": [{"claim": c, "supported": int(any(c in x for x in contexts)),
                           "ctx": [k + 1 for k, x in enumerate(contexts) if c in x]}
                          for c in claims],
        "useful": [int(len(x.split()) % 2 == 0) for x in contexts],
    })


@pytest.fixture
def server():
    with FakeOpenAIServer(reply=per_item_judge(reply), latency=0.02) as srv:
        yield srv


def write_files(pytester: pytest.Pytester, base_url: str) -> None:
    docs = [*DOCS, *({"_id": f"x{i}", "title": f"Extra {i}",
                      "text": f"Extra note {i} on brewing time {i} minutes."} for i in range(4))]
    queries = [{"_id": f"q{i:02d}", "text": d["title"].lower() + " advice",
                "relevant": {d["_id"]: 1}, "answer": d["text"]} for i, d in enumerate(docs)]
    assert len(queries) == N_ITEMS
    write_jsonl(pytester.path / "corpus.jsonl", docs)
    write_jsonl(pytester.path / "queries.jsonl", queries)
    write_jsonl(pytester.path / "outputs.jsonl", [
        {"query_id": q["_id"], "answer": d["text"], "contexts": [{"id": d["_id"]}, {"id": "d1"}]}
        for q, d in zip(queries, docs, strict=True)])
    pytester.makeini(BASE_INI)
    llm = f'{{type: openai, base_url: "{base_url}", model: MODEL}}'
    common = ("dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
              "metrics: [faithfulness, context_precision]\ncache: {mode: 'off'}\n")
    for n in (1, 5):
        (pytester.path / f"gen{n}.yaml").write_text(
            f"name: gen{n}\n{common}retrievers: {{bm25: {{}}}}\n"
            f"llm: {llm.replace('MODEL', 'gen')}\ngeneration: {{contexts: 2}}\n"
            f"judge: {{llm: {llm.replace('MODEL', f'judge{n}')}, items_per_call: {n}}}\n")
    (pytester.path / "pipe10.yaml").write_text(
        f"name: pipe10\n{common}pipelines: {{recorded: {{type: recorded, path: outputs.jsonl}}}}\n"
        f"judge: {{llm: {llm.replace('MODEL', 'judge10')}, items_per_call: 10}}\n")


def test_requests_per_item_at_1_5_10_with_the_scores_of_judging_alone(pytester, server):
    write_files(pytester, server.base_url)
    result = pytester.runpytest("--ragbench=gen1.yaml", "--ragbench=gen5.yaml",
                                "--ragbench=pipe10.yaml", "-p", "no:randomly")
    result.assert_outcomes(passed=3 * N_ITEMS)
    by_model = Counter(r.body["model"] for r in server.requests if r.path.endswith("/chat/"
                                                                                   "completions"))
    assert by_model == {"gen": 2 * N_ITEMS, "judge1": N_ITEMS, "judge5": 2, "judge10": 1}
    sizes = [len(re.findall(r'^ITEM "item-\d+"$', r.body["messages"][1]["content"],
                            flags=re.MULTILINE))
             for r in server.requests if r.body["model"] in ("judge5", "judge10")]
    assert sorted(sizes) == [5, 5, 10]

    records = [json.loads(line) for line in
               (latest_run(pytester.path) / "cases.jsonl").read_text().splitlines()]
    scores: dict[str, dict[str, dict]] = defaultdict(dict)
    for rec in records:
        assert rec["status"] == "ok", rec
        scores[rec["suite_name"]][rec["case_id"]] = rec["metrics"]
    # same answers (one generation model), so the same scores batched by 5 as judged alone
    assert scores["gen5"] == scores["gen1"]
    for metric in ("faithfulness", "context_precision"):  # items differ
        assert len({m[metric] for m in scores["gen1"].values()}) > 1, scores["gen1"]
    # each item's requests: the batch's one request went to one of its items, so they add up
    judge_requests = Counter(rec["suite_name"] for rec in records for _ in
                             range(rec["usage"]["requests"]))
    assert judge_requests == {"gen1": 2 * N_ITEMS, "gen5": N_ITEMS + 2, "pipe10": 1}
