"""Who pays for a request several cases share (results.settle)."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

from pytest_ragbench.results.settle import settle_shared_calls


def rec(system: str, case: str, calls: list[list[Any]], run: int = 0,
        **extra: Any) -> dict[str, Any]:
    return {"suite": "s.yaml", "retriever": system, "case_id": case, "run": run,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                      "requests": sum(c[1] for c in calls)},
            "cost": sum(c[2] for c in calls), "llm_calls": calls, **extra}


def charged(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[int, float]]:
    return {(r["retriever"], r["case_id"], r["run"]): (r["usage"]["requests"], r["cost"])
            for r in records}


def test_the_first_case_in_order_pays_whoever_sent_it() -> None:
    # b::q1 sent the shared generation request ("g1") and a::q1 read it from the cache
    records = [rec("b", "q1", [["g1", 1, 0.3], ["j-b", 1, 0.1]]),
               rec("a", "q1", [["g1", 0, 0.0], ["j-a", 1, 0.1]])]
    settle_shared_calls(records)
    assert charged(records) == {("a", "q1", 0): (2, 0.4), ("b", "q1", 0): (1, 0.1)}
    # tokens are what each case used, cached or not
    assert all(r["usage"]["prompt_tokens"] == 10 for r in records)


def test_repetitions_sharing_a_judge_request_charge_the_first_run() -> None:
    records = [rec("a", "q1", [["g-run1", 1, 0.2], ["judge", 1, 0.1]], run=1),
               rec("a", "q1", [["g-run0", 1, 0.2], ["judge", 0, 0.0]], run=0)]
    settle_shared_calls(records)
    assert charged(records) == {("a", "q1", 0): (2, 0.30000000000000004),
                                ("a", "q1", 1): (1, 0.2)}


def test_a_request_sent_twice_is_charged_twice_to_the_first_case() -> None:
    # two workers asked at once and both sent it: the run paid twice
    records = [rec("a", "q1", [["g", 1, 0.25]]), rec("b", "q1", [["g", 1, 0.25]])]
    settle_shared_calls(records)
    assert charged(records) == {("a", "q1", 0): (2, 0.5), ("b", "q1", 0): (0, 0.0)}


def test_batch_shares_and_a_pipelines_own_spend_stay_with_their_case() -> None:
    records = [rec("p", "q1", [[None, 0, 0.05], ["g", 0, 0.0]],
                   system_usage={"prompt_tokens": 3, "completion_tokens": 2, "cost": 1.0}),
               rec("p", "q0", [["g", 1, 0.25]])]
    records[0]["cost"] += 1.0  # the pipeline's own reported cost is in the record's cost
    settle_shared_calls(records)
    assert charged(records) == {("p", "q0", 0): (1, 0.25), ("p", "q1", 0): (0, 1.05)}


def test_records_without_calls_are_left_as_they_are() -> None:
    old = {"suite": "s.yaml", "retriever": "a", "case_id": "q1", "run": 0,
           "usage": {"requests": 3}, "cost": 0.7}
    unanswered = {"suite": "s.yaml", "retriever": "a", "case_id": "q2", "run": 0,
                  "usage": None, "cost": None, "llm_calls": None}
    records = [copy.deepcopy(old), copy.deepcopy(unanswered)]
    settle_shared_calls(records)
    assert records == [old, unanswered]


def test_the_result_depends_on_the_calls_only_not_on_their_order_or_who_sent() -> None:
    rng = random.Random(7)
    keys = [f"k{i}" for i in range(6)]
    price = {key: rng.uniform(0.001, 0.3) for key in keys}  # the same request, the same cost
    base = []
    for system, case in itertools.product("abc", ["q1", "q2", "q3"]):
        shares = [[None, 0, rng.uniform(0.001, 0.1)] for _ in range(2)]  # judge batch shares
        base.append((system, case, rng.sample(keys, 3), shares))
    outcomes = []
    for _ in range(20):
        shuffled = base[:]
        rng.shuffle(shuffled)
        sent: set[str] = set()
        records = []
        for system, case, used, shares in shuffled:
            calls = [list(share) for share in shares]
            for key in used:
                first = key not in sent
                sent.add(key)
                calls.append([key, int(first), price[key] if first else 0.0])
            rng.shuffle(calls)  # calls come back in any order
            records.append(rec(system, case, calls))
        settle_shared_calls(records)
        assert sum(r["usage"]["requests"] for r in records) == len(sent)
        outcomes.append(charged(records))
        settle_shared_calls(records)  # settling again changes nothing
        assert charged(records) == outcomes[-1]
    assert all(o == outcomes[0] for o in outcomes)
