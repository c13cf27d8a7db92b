"""The judge's ``items_per_call``: the batched prompt, each item's entry parsed and validated on
its own (one bad entry errors or re-asks one item, never its batch mates), usage split, the
per-item cache, metering, when batches are sent (pytest_ragbench.metrics.judge,
pytest_ragbench.llm.batching) and the suite key."""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench.answers.metering import _Meter, _MeteredLLM
from pytest_ragbench.errors import SuiteError
from pytest_ragbench.llm.base import Completion, LLMError, Usage
from pytest_ragbench.llm.batching import CallBatcher
from pytest_ragbench.llm.cache import CachedLLM, ResponseCache
from pytest_ragbench.llm.testing import per_item_judge
from pytest_ragbench.llm.usage import PriceTable
from pytest_ragbench.metrics.judge import Judge, JudgeInput, _shares
from pytest_ragbench.registry import Registry
from pytest_ragbench.suite.loader import load_suite

METRICS = ["faithfulness", "context_precision"]


def item(i: int, n_contexts: int = 2) -> JudgeInput:
    return JudgeInput(question=f"Question {i}?", answer=f"Answer {i}. Claim {i}.",
                      contexts=tuple(f"Context {i}.{k}" for k in range(n_contexts)),
                      reference=f"Reference {i}.")


def single_reply(messages: Sequence[dict[str, str]]) -> str:
    """A single-item judge that depends on the item only: as many claims as the answer has
    sentences, the first supported; every context useful but the last."""
    prompt = messages[1]["content"]
    answer = re.search(r"^ANSWER: (.*)$", prompt, flags=re.MULTILINE)
    sentences = [s for s in (answer.group(1) if answer else "").split(".") if s.strip()]
    contexts = len(re.findall(r"^\[\d+\] ", prompt, flags=re.MULTILINE))
    return json.dumps({
        "answer_claims": [{"claim": s.strip(), "supported": int(i == 0),
                           "ctx": [1] if i == 0 and contexts else []}
                          for i, s in enumerate(sentences)],
        "useful": [int(k < contexts - 1) for k in range(contexts)],
    })


class CountingLLM:
    """Answers with ``reply(messages)`` (or raises it, if it is an exception); records calls."""

    def __init__(self, reply: Callable[[Sequence[dict[str, str]]], str] | Exception) -> None:
        self.reply = reply
        self.calls: list[list[dict[str, str]]] = []

    async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
        self.calls.append([dict(m) for m in messages])
        await asyncio.sleep(0)
        if isinstance(self.reply, Exception):
            raise self.reply
        text = self.reply(messages)
        return Completion(text, Usage(len(messages[-1]["content"]), len(text), 1), model="fake")


def batched(ids_to_entries: Callable[[list[str], str], dict[str, Any]]
            ) -> Callable[[Sequence[dict[str, str]]], str]:
    """A batch reply built from the ids in the prompt; single prompts get ``single_reply``."""
    def reply(messages: Sequence[dict[str, str]]) -> str:
        user = messages[1]["content"]
        ids = re.findall(r'^ITEM "(item-\d+)"$', user, flags=re.MULTILINE)
        if not ids:
            return single_reply(messages)
        good = json.loads(per_item_judge(single_reply)(messages))
        return json.dumps(ids_to_entries(ids, json.dumps(good)))
    return reply


async def judge_all(judge: Judge, items: Sequence[JudgeInput]) -> list[Any]:
    return await asyncio.gather(*(judge.evaluate(x, METRICS) for x in items))


# -- the batched prompt ----------------------------------------------------------------------


def test_batch_prompt_holds_each_item_as_the_single_prompt_shows_it() -> None:
    judge = Judge(CountingLLM(single_reply), items_per_call=3)
    items = [item(1), item(2, n_contexts=3)]
    from pytest_ragbench.metrics.judge import _Ask
    ask = _Ask.for_metrics(METRICS, 3)
    messages, sections = judge._batch_messages(ask, items)
    user = messages[1]["content"]
    assert messages[0]["content"].startswith(judge.messages(items[0], METRICS)[0]["content"])
    for i, (x, section) in enumerate(zip(items, sections, strict=True)):
        single = judge.messages(x, METRICS)[1]["content"]
        assert single.startswith(section + "\n")  # the very text the single prompt shows
        assert f'ITEM "item-{i + 1}"\n{section}\n' in user
    # instructions once, not per item; the reply shape names every id in order
    assert user.count('- "answer_claims"') == 1
    assert user.count("CONTEXTS:") == 2
    assert user.rstrip().endswith(
        '{"item-1": {"answer_claims": ..., "useful": ...}, '
        '"item-2": {"answer_claims": ..., "useful": ...}}.')
    assert "one number per context of that item" in user


@pytest.mark.asyncio
async def test_batches_of_n_items_score_as_items_judged_alone() -> None:
    items = [item(i, n_contexts=1 + i % 3) for i in range(7)]
    alone_llm = CountingLLM(single_reply)
    alone = await judge_all(Judge(alone_llm), items)
    llm = CountingLLM(per_item_judge(single_reply))
    judge = Judge(llm, items_per_call=3)
    together = await judge_all(judge, items)
    assert len(alone_llm.calls) == 7
    assert len(llm.calls) == 3 and judge.batcher is not None
    assert judge.batcher.sizes == [3, 3, 1]  # in item order, sent as they fill
    for a, b in zip(alone, together, strict=True):
        assert a.scores == b.scores and not b.errors
        assert a.verdicts == b.verdicts
    # the batch's usage is split over its items and adds up exactly
    assert sum(r.usage.requests for r in together) == 3
    first = [r.usage for r in together[:3]]
    assert sum(u.prompt_tokens for u in first) == len(llm.calls[0][-1]["content"])
    assert all(u.prompt_tokens > 0 for u in first)


@pytest.mark.asyncio
async def test_one_bad_entry_is_judged_alone_and_its_mates_keep_their_verdicts() -> None:
    def entries(ids: list[str], good: str) -> dict[str, Any]:
        out = json.loads(good)
        out["item-2"]["useful"] = [1, 1, 1, 1]  # wrong length: invalid for that item only
        del out["item-3"]  # missing
        return out

    # item-2 alone answers well; item-3 alone keeps answering nonsense (2 requests)
    llm = CountingLLM(batched(entries))
    scripted = iter([single_reply, lambda m: "not json", lambda m: "still not json"])
    base = llm.reply

    def reply(messages: Sequence[dict[str, str]]) -> str:
        if 'ITEM "item-1"' in messages[1]["content"]:
            return base(messages)  # type: ignore[operator]
        return next(scripted)(messages)

    llm.reply = reply
    items = [item(1), item(2), item(3)]
    results = await judge_all(Judge(llm, items_per_call=3), items)
    assert len(llm.calls) == 4  # 1 batch, item-2 alone, item-3 alone and its retry
    alone = await judge_all(Judge(CountingLLM(single_reply)), items[:2])
    assert results[0].scores == alone[0].scores and not results[0].errors
    assert results[1].scores == alone[1].scores and not results[1].errors
    assert set(results[2].errors) == set(METRICS)
    assert all(math.isnan(v) for v in results[2].scores.values())
    message = results[2].errors["faithfulness"]
    assert "judge reply rejected after 1 retry" in message
    assert "its entry in a batched reply was rejected first: the reply has no entry for it" in (
        message)
    # the item judged alone pays for its own requests on top of its share
    assert results[2].usage.requests >= 2


@pytest.mark.asyncio
async def test_an_unusable_batch_reply_gets_one_retry_and_a_failed_call_errors_its_items(
) -> None:
    replies = iter(["nonsense", None])
    good = per_item_judge(single_reply)

    def reply(messages: Sequence[dict[str, str]]) -> str:
        text = next(replies)
        return good(messages) if text is None else text

    llm = CountingLLM(reply)
    results = await judge_all(Judge(llm, items_per_call=2), [item(1), item(2)])
    assert len(llm.calls) == 2
    assert llm.calls[1][-1]["content"].startswith("Your reply was rejected: not valid JSON")
    assert all(not r.errors for r in results)

    down = CountingLLM(LLMError("HTTP 503"))
    results = await judge_all(Judge(down, items_per_call=2), [item(1), item(2)])
    assert len(down.calls) == 1  # no item is asked alone from a failing endpoint
    assert all(r.errors["faithfulness"] == "judge request failed: HTTP 503" for r in results)


@pytest.mark.parametrize("batch_reply", ["entries", "no-entries"])
@pytest.mark.asyncio
async def test_an_items_error_does_not_name_its_place_in_the_batch(batch_reply: str) -> None:
    """Which items share a batch, and in what order, depends on timing (and on -n): an item
    whose entry and lone requests are both refused got an error naming its batch id
    ('item-3', or every id of a reply with none), so summary.json, the CSV and junit of one
    run differed from another's."""
    def single(messages: Sequence[dict[str, str]]) -> str:
        return "not json" if "Question 9?" in messages[1]["content"] else single_reply(messages)

    def reply(messages: Sequence[dict[str, str]]) -> str:
        if batch_reply == "no-entries" and 'ITEM "item-1"' in messages[1]["content"]:
            return "{}"
        return per_item_judge(single)(messages)

    errors = set()
    for batch in ([item(9), item(1), item(2)], [item(1), item(2), item(9)], [item(1), item(9)]):
        results = await judge_all(Judge(CountingLLM(reply), items_per_call=3), batch)
        failed = [r for r in results if r.errors]
        assert len(failed) == 1
        errors.add(failed[0].errors["faithfulness"])
    assert len(errors) == 1, errors
    assert "rejected first" in errors.pop()


@pytest.mark.parametrize("bad", ["1" * 5000, "[" * 100_000 + "]" * 100_000],
                         ids=["long-integer", "deep-nesting"])
@pytest.mark.asyncio
async def test_json_that_python_cannot_read_is_a_bad_reply_not_a_crash_of_the_batch(
        bad: str) -> None:
    """json.loads raises ValueError (an integer of over 4300 digits, a judge stuck repeating
    one) or RecursionError beside its decode errors: both escaped as an exception to every
    case of the batch (5 cases errored for one entry)."""
    good = per_item_judge(single_reply)

    def reply(messages: Sequence[dict[str, str]]) -> str:
        text = good(messages)
        if 'ITEM "item-2"' in messages[1]["content"]:
            return text.replace('"item-2": {"answer_claims": [{',
                                '"item-2": {"answer_claims": [{"why": ' + bad + ", ", 1)
        return text

    llm = CountingLLM(reply)
    results = await judge_all(Judge(llm, items_per_call=3), [item(1), item(2), item(3)])
    alone = await judge_all(Judge(CountingLLM(single_reply)), [item(1), item(2), item(3)])
    # the batch's reply is refused (and its retry): each item is then judged alone
    assert [r.scores for r in results] == [r.scores for r in alone]
    assert all(not r.errors for r in results)


def test_usage_shares_are_proportional_integers_that_add_up() -> None:
    assert _shares(10, [1, 1, 1]) == [4, 3, 3]
    assert _shares(1, [5, 10, 5]) == [0, 1, 0]
    assert _shares(7, [2, 1]) == [5, 2]
    assert _shares(0, [3, 4]) == [0, 0]
    for total in range(0, 50, 7):
        assert sum(_shares(total, [3, 1, 4, 1, 5])) == total


@pytest.mark.asyncio
async def test_each_entry_is_cached_so_a_rerun_makes_no_call_whatever_the_batches(
        tmp_path: Path) -> None:
    items = [item(i, n_contexts=2) for i in range(5)]
    inner = CountingLLM(per_item_judge(single_reply))
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        cached = CachedLLM(inner, cache, provider_id="fake", template_version="t")
        first = await judge_all(Judge(cached, items_per_call=3, replies=cached), items)
        assert len(inner.calls) == 2
        # other batches (reversed order, another size): every item is served from the cache
        for n, order in ((3, items[::-1]), (2, items), (5, items[1:])):
            again = await judge_all(Judge(cached, items_per_call=n, replies=cached), order)
            assert len(inner.calls) == 2
            by_question = {x.question: r for x, r in zip(order, again, strict=True)}
            for x, r in zip(items, first, strict=True):
                if x in order:
                    assert by_question[x.question].scores == r.scores
                    assert by_question[x.question].usage.requests == 0
        # the plain per-item judge has its own keys: batched verdicts are not mixed into it
        await judge_all(Judge(cached, replies=cached), items[:1])
        assert len(inner.calls) == 3


@pytest.mark.asyncio
async def test_identical_items_judged_together_are_sent_once_with_the_cache_on(
        tmp_path: Path) -> None:
    # two repetitions of a case that answered alike are judged at the same moment: with the
    # cache on the second reads the first's entry, as a second identical request does at N=1
    items = [item(0), item(0), item(1), item(2), item(1)]
    inner = CountingLLM(per_item_judge(single_reply))
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        cached = CachedLLM(inner, cache, provider_id="fake", template_version="t")
        charged: list[tuple[Completion, str | None]] = []
        judge = Judge(cached, items_per_call=5, replies=cached,
                      charge=lambda c, key=None: charged.append((c, key)))
        results = await judge_all(judge, items)
    sent = [len(re.findall(r'^ITEM "item-\d+"$', call[1]["content"], flags=re.MULTILINE))
            for call in inner.calls]
    assert sent == [3]
    assert [r.scores for r in results[:2]] == [results[0].scores] * 2
    assert results[4].scores == results[2].scores and not any(r.errors for r in results)
    # the copies are charged as cache hits are: nothing
    assert sorted(c.cached for c, _ in charged) == [False] * 3 + [True] * 2
    # under the key of the entry they share: the run charges it to the first case in the
    # records' order, whichever reached the judge first (results/settle.py)
    keys = [key for _, key in charged]
    assert None not in keys
    assert sorted(keys.count(k) for k in set(keys)) == [1, 2, 2]  # item 0 and item 1 twice


@pytest.mark.asyncio
async def test_an_item_judged_alone_after_its_entry_was_rejected_is_cached_for_any_batch(
        tmp_path: Path) -> None:
    def entries(ids: list[str], good: str) -> dict[str, Any]:
        out = json.loads(good)
        out["item-2"]["useful"] = [1, 1, 1, 1]  # wrong length: item-2 is asked alone
        return out

    inner = CountingLLM(batched(entries))
    base = inner.reply

    def reply(messages: Sequence[dict[str, str]]) -> str:
        if 'ITEM "item-1"' in messages[1]["content"]:
            return base(messages)  # type: ignore[operator]
        return single_reply(messages)

    inner.reply = reply
    items = [item(1), item(2)]
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        cached = CachedLLM(inner, cache, provider_id="fake", template_version="t")
        first = await judge_all(Judge(cached, items_per_call=2, replies=cached), items)
        assert len(inner.calls) == 2 and not any(r.errors for r in first)
        # another batch (the other order): both entries come from the cache
        again = await judge_all(Judge(cached, items_per_call=2, replies=cached), items[::-1])
        assert len(inner.calls) == 2
        assert [r.scores for r in again[::-1]] == [r.scores for r in first]


@pytest.mark.asyncio
async def test_each_item_meter_is_charged_its_share_and_the_costs_add_up() -> None:
    meter_var: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("m", default=None)
    prices = PriceTable.from_mapping({"fake": {"prompt": 1.0, "completion": 2.0}})
    inner = CountingLLM(per_item_judge(single_reply))
    metered = _MeteredLLM(inner, meter_var, prices, "fake")
    judge = Judge(metered, items_per_call=4, charge=metered.charge)
    meters = [_Meter() for _ in range(4)]

    async def one(x: JudgeInput, meter: _Meter) -> None:
        meter_var.set(meter)
        await judge.evaluate(x, METRICS)

    await asyncio.gather(*(one(item(i), m) for i, m in enumerate(meters)))
    assert len(inner.calls) == 1
    call = inner.calls[0]
    prompt = len(call[-1]["content"])
    assert sum(m.prompt_tokens for m in meters) == prompt
    assert sum(m.requests for m in meters) == 1
    completion = sum(m.completion_tokens for m in meters)
    total = prices.cost("fake", Usage(prompt, completion, 1))
    assert sum(m.cost for m in meters) == pytest.approx(total)
    assert all(m.prompt_tokens > 0 and m.cost > 0 for m in meters)


@pytest.mark.parametrize("second_first", [False, True])
@pytest.mark.asyncio
async def test_the_first_repetition_in_the_records_order_pays_for_an_entry_both_share(
        tmp_path: Path, second_first: bool) -> None:
    """Two repetitions that answered alike share one judge entry (the cache on): the run
    charged it to whichever reached the judge first, so the same command charged q1 run 0 in
    one run and run 1 in the next."""
    from pytest_ragbench.results.settle import settle_shared_calls

    meter_var: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("m", default=None)
    prices = PriceTable.from_mapping({"fake": {"prompt": 1.0, "completion": 1.0}})
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cached = CachedLLM(CountingLLM(per_item_judge(single_reply)), cache,
                           provider_id="fake", template_version="t")
        metered = _MeteredLLM(cached, meter_var, prices, "fake")
        judge = Judge(metered, items_per_call=3, replies=cached, charge=metered.charge)
        meters = {0: _Meter(), 1: _Meter(), 2: _Meter()}  # two repeats of q1, and q2

        async def one(run: int, x: JudgeInput) -> None:
            meter_var.set(meters[run])
            await judge.evaluate(x, METRICS)

        order = [(1, item(1)), (0, item(1))] if second_first else [(0, item(1)), (1, item(1))]
        await asyncio.gather(*(one(run, x) for run, x in [*order, (2, item(2))]))
    records = [{"suite": "s", "retriever": "a", "case_id": "q1" if run < 2 else "q2",
                "run": run % 2, "llm_calls": meters[run].calls, "usage": {}, "cost": 0.0}
               for run in (1, 0, 2)]
    settle_shared_calls(records)
    cost = {(r["case_id"], r["run"]): r["cost"] for r in records}
    assert cost[("q1", 0)] > 0 and cost[("q1", 1)] == 0 and cost[("q2", 0)] > 0


@pytest.mark.parametrize("retry_fails_again", [False, True])
@pytest.mark.asyncio
async def test_a_batch_whose_rejected_reply_came_from_the_cache_prices_only_its_paid_retry(
        tmp_path: Path, retry_fails_again: bool) -> None:
    """A rerun after the first run's correction retry failed: the rejected first reply comes
    from the cache (free), the retry is paid. Both were priced as paid."""
    good = per_item_judge(single_reply)
    first_run = [True]

    def reply(messages: Sequence[dict[str, str]]) -> str:
        if messages[-1]["content"].startswith("Your reply was rejected"):
            if first_run[0]:
                raise LLMError("HTTP 503")
            return good(messages[:2])
        return "sorry, no JSON"  # cached by the first run

    meter_var: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("m", default=None)
    prices = PriceTable.from_mapping({"fake": {"prompt": 1.0, "completion": 0.0}})
    inner = CountingLLM(reply)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cached = CachedLLM(inner, cache, provider_id="fake", template_version="t")
        metered = _MeteredLLM(cached, meter_var, prices, "fake")

        async def run() -> list[_Meter]:
            judge = Judge(metered, items_per_call=2, replies=cached, charge=metered.charge)
            meters = [_Meter(), _Meter()]

            async def one(x: JudgeInput, meter: _Meter) -> None:
                meter_var.set(meter)
                await judge.evaluate(x, METRICS)

            await asyncio.gather(*(one(item(i), m) for i, m in enumerate(meters)))
            return meters

        await run()
        first_run[0] = retry_fails_again
        calls = len(inner.calls)
        meters = await run()
    assert len(inner.calls) - calls == 1  # the retry; the first reply from the cache
    if retry_fails_again:  # nothing was answered: nothing is priced, as at items_per_call 1
        assert sum(m.cost for m in meters) == 0
        return
    paid = len(inner.calls[-1][-1]["content"])  # prompt tokens of the live retry
    assert sum(m.cost for m in meters) == pytest.approx(prices.cost("fake", Usage(paid, 0, 1)))


# -- when batches are sent -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_partial_batch_waits_for_open_cases_and_goes_when_all_wait() -> None:
    calls: list[list[int]] = []

    async def call(group: str, payloads: list[int]) -> list[int]:
        calls.append(payloads)
        return [p * 10 for p in payloads]

    batcher: CallBatcher[str, int, int] = CallBatcher(4, call)
    release = asyncio.Event()

    async def case(i: int, slow: bool = False) -> int:
        with batcher.case():
            if slow:
                await release.wait()  # e.g. still generating its answer
            return await batcher.request("g", i)

    tasks = [asyncio.create_task(case(i, slow=i == 0)) for i in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == []  # case 0 is open and may still join
    release.set()
    assert await asyncio.gather(*tasks) == [0, 10, 20]
    assert calls == [[0, 1, 2]]  # one call, in case order

    # a case that leaves without asking (say, its generation failed) releases the others
    calls.clear()
    leave = asyncio.Event()

    async def leaver() -> None:
        with batcher.case():
            await leave.wait()

    waiting = [asyncio.create_task(case(i)) for i in (5, 6)]
    gone = asyncio.create_task(leaver())
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == []
    leave.set()
    await gone
    assert await asyncio.gather(*waiting) == [50, 60]
    assert calls == [[5, 6]]


@pytest.mark.asyncio
async def test_a_full_batch_goes_at_once_and_a_cancelled_waiter_leaves_its_mates_alone() -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    sizes: list[int] = []

    async def call(group: str, payloads: list[int]) -> list[int]:
        sizes.append(len(payloads))
        started.set()
        await finish.wait()
        return payloads

    batcher: CallBatcher[str, int, int] = CallBatcher(2, call)
    blocker_done = asyncio.Event()

    async def blocker() -> None:
        with batcher.case():  # open and never asking: only a full batch can go
            await blocker_done.wait()

    held = asyncio.create_task(blocker())
    tasks = [asyncio.create_task(batcher.request("g", i)) for i in range(2)]
    await asyncio.wait_for(started.wait(), 1)
    assert sizes == [2]
    tasks[0].cancel()
    finish.set()
    assert await tasks[1] == 1
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    blocker_done.set()
    await held


@pytest.mark.asyncio
async def test_a_call_whose_cases_have_all_gone_is_stopped() -> None:
    """Cases whose time limits ran out while their batch was answered: the call ran on and
    was paid, charged to nobody; a case's own call is stopped at its limit."""
    stopped = asyncio.Event()

    async def call(group: str, payloads: list[int]) -> list[int]:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return payloads

    batcher: CallBatcher[str, int, int] = CallBatcher(2, call)
    tasks = [asyncio.create_task(batcher.request("g", i)) for i in range(2)]
    await asyncio.sleep(0.05)
    tasks[0].cancel()
    await asyncio.sleep(0.05)
    assert not stopped.is_set()  # one case still waits on it
    tasks[1].cancel()
    await asyncio.wait_for(stopped.wait(), 1)
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


# -- the suite key ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("0", "expected an integer from 1 to 50, got 0"),
    ("51", "expected an integer from 1 to 50, got 51"),
    ("ten", "expected an integer from 1 to 50, got 'ten'"),
])
def test_items_per_call_out_of_bounds_is_one_clear_error(tmp_path: Path, value: str,
                                                         expected: str) -> None:
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "x", "answer": "y"}\n')
    (tmp_path / "suite.yaml").write_text(textwrap.dedent(f"""\
        name: s
        dataset: {{queries: q.jsonl}}
        pipelines: {{p: {{type: recorded, path: out.jsonl}}}}
        metrics: [faithfulness]
        judge:
          llm: {{type: openai, base_url: "http://127.0.0.1:9/v1", model: m}}
          items_per_call: {value}
        """))
    with pytest.raises(SuiteError) as info:
        load_suite(tmp_path / "suite.yaml", Registry(use_entry_points=False).names("retriever"))
    message = str(info.value)
    assert "suite.yaml:7: judge.items_per_call: " + expected in message, message


@pytest.mark.asyncio
async def test_partial_batches_wait_while_the_feeder_may_still_start_cases() -> None:
    calls: list[list[str]] = []

    async def call(group: str, payloads: list[str]) -> list[str]:
        calls.append(payloads)
        return payloads

    batcher: CallBatcher[str, str, str] = CallBatcher(3, call)
    done = asyncio.Event()

    async def case(tag: str, wait_for: asyncio.Event | None = None) -> str:
        with batcher.case(tag):
            if wait_for is not None:
                await wait_for.wait()
                return tag  # finishes without the judge (say, its generation failed)
            return await batcher.request("g", tag)

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    batcher.feeding()  # the feeder submits a and b, then waits for c, which is running
    a = asyncio.create_task(case("a"))
    b = asyncio.create_task(case("b"))
    c = asyncio.create_task(case("c", done))
    await settle()
    assert calls == []
    batcher.awaiting("c")
    await settle()
    assert calls == []  # c is running: when it is done the feeder goes on
    done.set()
    await c
    await settle()
    assert calls == []  # the feeder resumed (c is done) and may submit more
    d = asyncio.create_task(case("d"))
    await settle()
    assert calls == [["a", "b", "d"]]  # full: sent at once
    e = asyncio.create_task(case("e"))
    batcher.awaiting("e")  # waiting for a case that waits for a batch: nothing can join
    await settle()
    assert calls[-1] == ["e"]
    assert await asyncio.gather(a, b, d, e) == ["a", "b", "d", "e"]

    # A case done before the feeder asked for it (its result taken without waiting) and then
    # run again under its tag (a rerun): when the feeder waits for the rerun before it has
    # started, nothing can join a partial batch, which must go (a stale "done" tag would
    # have the batch wait forever for a feeder it took as resumed).
    await case("k", done)
    batcher.collected("k")
    calls.clear()
    batcher.feeding()
    x = asyncio.create_task(case("x"))
    await settle()
    batcher.awaiting("k")
    await settle()
    assert calls == [["x"]] and await x == "x"
    # a case reopened under the tag of one that finished uncollected is not done
    await case("m", done)
    assert "m" in batcher._finished
    again = asyncio.Event()
    m = asyncio.create_task(case("m", again))
    await settle()
    assert "m" not in batcher._finished
    again.set()
    await m


@pytest.mark.asyncio
async def test_per_metric_mode_and_criteria_batch_each_request_kind_on_its_own() -> None:
    from pytest_ragbench.metrics.judge import Criteria

    rubric = Criteria("tone", "Is it polite?", scale=(1, 5))

    def reply(messages: Sequence[dict[str, str]]) -> str:
        out = json.loads(single_reply(messages))
        prompt = messages[1]["content"]
        if '"tone" (an integer from 1 to 5)' in prompt:
            answer = re.search(r"^ANSWER: (.*)$", prompt, flags=re.MULTILINE)
            out["criteria"] = {"tone": {"score": 1 + len(answer.group(1)) % 5 if answer else 1}}
        return json.dumps(out)

    items = [item(i) for i in range(8, 12)]
    metrics = [*METRICS, rubric]
    alone = await asyncio.gather(*(Judge(CountingLLM(reply), mode="per_metric").evaluate(x, metrics)
                                   for x in items))
    llm = CountingLLM(per_item_judge(reply))
    judge = Judge(llm, mode="per_metric", items_per_call=4)
    together = await asyncio.gather(*(judge.evaluate(x, metrics) for x in items))
    assert len(llm.calls) == 3  # one per judged part, each holding the four items
    assert judge.batcher is not None and judge.batcher.sizes == [4, 4, 4]
    assert [r.scores for r in together] == [r.scores for r in alone]
    assert len({r.scores["tone"] for r in together}) > 1
