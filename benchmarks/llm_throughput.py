"""LLM client throughput against a local fake endpoint, and the request cost of judged metrics.

Run from anywhere::

    python benchmarks/llm_throughput.py [--items 200] [--latency 0.2] [--concurrency 16]

Part 1 (generation): one ``OpenAIChat.chat`` per item through the real HTTP stack against
:class:`~pytest_ragbench.llm.testing.FakeOpenAIServer`, which answers every request after a
fixed latency. With ``concurrency`` requests in flight the best possible wall time is
``calls * latency / concurrency``; the ratio of the measured time to that bound shows the
client's overhead (target: <= 1.25x).

Part 2 (judged metrics): requests and tokens per item for the four RAGAS metrics
(faithfulness, answer relevancy, context precision, context recall) with
``pytest_ragbench.metrics.judge.Judge``, batched and per-metric, then a second batched pass
through the response cache, and the four with two custom criteria (a suite's ``type:
criteria`` metrics) scored the way the plugin scores an item
(``pytest_ragbench.metrics.contract.score_answer``): the criteria join the same single chat
request, so the row must still read 1 chat and 1 embedding request per item. The fake
server's judge replies are valid JSON built from the prompt; its token counts are whitespace
words, so compare rows with each other rather than with a real tokenizer's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_ragbench.llm.base import Message
from pytest_ragbench.llm.cache import CachedEmbedder, CachedLLM, ResponseCache
from pytest_ragbench.llm.extractive import format_prompt
from pytest_ragbench.llm.openai import OpenAIChat, OpenAIEmbedder
from pytest_ragbench.llm.resilience import RetryPolicy
from pytest_ragbench.llm.testing import CHAT_PATH, EMBEDDINGS_PATH, FakeOpenAIServer

TARGET_RATIO = 1.25
FOUR_METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")


def item_prompt(i: int) -> list[Message]:
    passages = [f"Passage {j} about topic {i} says fact number {i * 10 + j}." for j in range(4)]
    return [{"role": "user", "content": format_prompt(f"What does topic {i} say?", passages)}]


async def generation(items: int, latency: float, concurrency: int) -> None:
    with FakeOpenAIServer(latency=latency) as server:
        async with OpenAIChat(
            server.base_url, "bench-model", concurrency=concurrency, timeout=30
        ) as llm:
            started = time.perf_counter()
            results = await asyncio.gather(*(llm.chat(item_prompt(i)) for i in range(items)))
            wall = time.perf_counter() - started
            usage = llm.usage
        calls = server.count(CHAT_PATH)
    bound = calls * latency / concurrency
    ratio = wall / bound if bound else float("nan")
    verdict = "OK" if ratio <= TARGET_RATIO else "SLOW"
    print(
        f"generation: {items} items, {calls} calls, latency {latency * 1000:.0f} ms, "
        f"concurrency {concurrency}"
    )
    print(
        f"  wall {wall:.3f} s   lower bound {bound:.3f} s   ratio {ratio:.3f}x "
        f"(target <= {TARGET_RATIO}x) {verdict}"
    )
    print(
        f"  {len(results)} completions, {usage.requests} requests, "
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"
    )
    print(f"  {rounds_note(calls, latency, concurrency)}")


# -- judged metrics ------------------------------------------------------------------------


def judge_reply(messages: Sequence[Message]) -> str:
    """A valid judge reply for whatever the prompt asks (extra keys are ignored by the judge)."""
    prompt = str(messages[-1].get("content", "")) if messages else ""
    if prompt.startswith("Your reply was rejected"):  # a retry keeps the original request first
        prompt = next((str(m["content"]) for m in messages if m.get("role") == "user"), "")
    contexts = len(re.findall(r"^\[\d+\] ", prompt, flags=re.MULTILINE))
    wanted = re.search(r'"questions": (\d+) different questions', prompt)
    ctx = [1] if contexts else []
    names = re.findall(r'^  "([^"]+)" \(an integer from', prompt, flags=re.MULTILINE)
    rubric = {"criteria": {n: {"score": 4, "why": "clear"} for n in names}} if names else {}
    return json.dumps(
        {
            "answer_claims": [
                {
                    "claim": "The answer states a fact.",
                    "supported": 1,
                    "ctx": ctx,
                    "in_reference": 1,
                },
                {
                    "claim": "The answer states another fact.",
                    "supported": 0,
                    "ctx": [],
                    "in_reference": 0,
                    "why": "not in the contexts",
                },
            ],
            "reference_claims": [
                {
                    "claim": "The reference states a fact.",
                    "attributed": 1,
                    "ctx": ctx,
                    "in_answer": 1,
                },
            ],
            "useful": [1 if k % 2 == 0 else 0 for k in range(contexts)],
            "questions": [
                f"Generated question {q}?" for q in range(int(wanted.group(1)) if wanted else 0)
            ],
            "noncommittal": 0,
            **rubric,
        }
    )


def judge_available() -> bool:
    return importlib.util.find_spec("pytest_ragbench.metrics.judge") is not None


async def judged_metric_costs(items: int) -> None:
    """Requests and tokens per item for the four judged metrics (RAGAS definitions)."""
    if not judge_available():
        print("judge metrics: not yet available")
        return
    from pytest_ragbench.metrics.contract import AnswerSample, score_answer
    from pytest_ragbench.metrics.judge import Judge, JudgeInput
    from pytest_ragbench.metrics.rag_components import BUILTIN_ANSWER_METRICS, criteria

    rubrics = [
        criteria("helpfulness", "Does the answer give the asker something to act on?",
                 examples=[{"answer": "It depends.", "score": 1, "why": "evasive"}]),
        criteria("tone", "Is the answer polite and neutral?", scale=[0, 10],
                 inputs=["answer"]),
    ]
    with_criteria = [*(BUILTIN_ANSWER_METRICS[m]() for m in FOUR_METRICS), *rubrics]

    async def score_item(judge: Judge, x: JudgeInput) -> Any:
        sample = AnswerSample(x.question, x.answer, x.contexts, (x.reference or "",))
        scores = await score_answer([(m.name, m) for m in with_criteria], sample, judge=judge,
                                    embedder=judge.embedder)
        return judge, scores

    inputs = [
        JudgeInput(
            question=f"What does topic {i} say?",
            answer=f"Topic {i} says fact number {i * 10}. It also says something else.",
            contexts=tuple(
                f"Passage {j} about topic {i} says fact {i * 10 + j}." for j in range(4)
            ),
            reference=f"Topic {i} says fact number {i * 10}.",
        )
        for i in range(items)
    ]
    print(f"judge metrics: {', '.join(FOUR_METRICS)}; {items} items, 4 contexts each")
    print(
        f"  {'setup':<22} {'chat req':>9} {'embed req':>10} {'prompt tok':>11} "
        f"{'compl tok':>10} {'scored':>7}"
    )
    retry = RetryPolicy(max_attempts=3, base_delay=0.01)
    with FakeOpenAIServer(reply=judge_reply) as server, tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "judge.sqlite")
        async with (
            OpenAIChat(server.base_url, "judge", retry=retry) as chat,
            OpenAIEmbedder(server.base_url, "emb", retry=retry) as embedder,
        ):
            cached_chat = CachedLLM(chat, cache, provider_id=chat.provider_id)
            cached_embedder = CachedEmbedder(embedder, cache, provider_id=embedder.provider_id)
            setups = [
                ("batched", Judge(chat, embedder, mode="batched")),
                ("per_metric", Judge(chat, embedder, mode="per_metric")),
                ("batched, cold cache", Judge(cached_chat, cached_embedder, mode="batched")),
                ("batched, warm cache", Judge(cached_chat, cached_embedder, mode="batched")),
            ]
            for name, judge in setups:
                before_chat, before_embed = server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH)
                results = await asyncio.gather(*(judge.evaluate(x, FOUR_METRICS) for x in inputs))
                chat_requests = (server.count(CHAT_PATH) - before_chat) / items
                embed_requests = (server.count(EMBEDDINGS_PATH) - before_embed) / items
                prompt = sum(r.usage.prompt_tokens for r in results) / items
                completion = sum(r.usage.completion_tokens for r in results) / items
                scored = sum(not r.errors for r in results)
                print(
                    f"  {name:<22} {chat_requests:>9.2f} {embed_requests:>10.2f} "
                    f"{prompt:>11.1f} {completion:>10.1f} {scored:>4}/{items}"
                )
            # the plugin's path: four judged metrics and two custom criteria per item
            metered = Judge(chat, embedder, mode="batched")
            before_chat, before_embed = server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH)
            usage_before = chat.usage
            outs = await asyncio.gather(*(score_item(metered, x) for x in inputs))
            chat_requests = (server.count(CHAT_PATH) - before_chat) / items
            embed_requests = (server.count(EMBEDDINGS_PATH) - before_embed) / items
            prompt = (chat.usage.prompt_tokens - usage_before.prompt_tokens) / items
            completion = (chat.usage.completion_tokens - usage_before.completion_tokens) / items
            scored = sum(not s.errors and s.metrics["helpfulness"] == 0.75 for _, s in outs)
            verdict = "OK" if chat_requests == 1 and embed_requests == 1 else "TOO MANY"
            print(
                f"  {'batched + 2 criteria':<22} {chat_requests:>9.2f} {embed_requests:>10.2f} "
                f"{prompt:>11.1f} {completion:>10.1f} {scored:>4}/{items}  {verdict}"
            )
        cache.close()
    print("  (requests counted at the server; tokens are what results report, cached included)")


def rounds_note(calls: int, latency: float, concurrency: int) -> str:
    """What a fixed latency allows at best: the requests go in whole rounds of
    ``concurrency``, so the bound (``calls x latency / concurrency``) is only reachable when
    ``concurrency`` divides ``calls``; at 50 requests and 16 slots, 4 rounds are 1.28x it."""
    rounds = math.ceil(calls / concurrency) if concurrency else 0
    floor = rounds * latency
    bound = calls * latency / concurrency if concurrency else float("nan")
    return (f"{calls} requests at {concurrency} in flight take at least {rounds} rounds of "
            f"{latency * 1000:.0f} ms: {floor:.3f} s, {floor / bound:.3f}x the bound")


def plugin_generation(items: int, latency: float, concurrency: int,
                      workers: Sequence[int] = (0, 2, 4), repeats: int = 3) -> bool:
    """The same load through `pytest --ragbench` at each ``-n``: the plugin prefetches the LLM
    work of the items ahead while they report in order, the run budget holds ``concurrency``
    for the whole run (all workers), and with workers the controller starts the LLM work
    while they boot (its head start; the ``no head start`` column is the same run with
    ``RAGBENCH_NO_HEAD_START=1``). The LLM phase is the wall time minus the same suite
    answered by the offline extractive provider at the same ``-n`` (same retrieval and worker
    start-up, no network); the server's own span (first request's arrival to last request's
    answer) is shown too, between ``first`` (launch to the first request's arrival) and
    ``tail`` (the last answer to the process's exit): the three add up to the wall time.
    The lower bound of either is requests x latency / concurrency.
    The runs see the plugins and environment of a user's install (:data:`USER_PLUGINS_ONLY`,
    :func:`user_environment`), after one warm-up run that writes the bytecode caches.
    Each figure is the median of ``repeats`` runs (the machine may be shared); the runs of a
    repeat go side by side, and the medians of their paired differences (wall, first, span,
    tail) show where ``-n N`` gains or loses. Returns whether wall(-n N) <= wall(-n 0) for
    every N.

    Every run writes the run's outputs (run folder, reports, history), as a user's run does;
    the ``no outputs`` column is the same run with ``--ragbench-no-output``, whose end is
    shorter (at ``-n N`` the last worker's exit is then no longer hidden behind the
    controller's writing)."""
    import json
    import os
    import statistics
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(latency=latency) as server:
        folder = Path(tmp)
        with (folder / "corpus.jsonl").open("w") as fh:
            for i in range(500):
                fh.write(json.dumps({"_id": f"d{i}", "text": f"document {i} about topic {i % 50}"})
                         + "\n")
        with (folder / "queries.jsonl").open("w") as fh:
            for i in range(items):
                fh.write(json.dumps({"_id": f"q{i:04d}", "text": f"topic {i % 50} question {i}",
                                     "relevant": {f"d{i % 500}": 1},
                                     "reference_answer": f"answer {i}"}) + "\n")

        launched: list[float] = []

        def run(llm: dict, n: int, head_start: bool = True, outputs: bool = True) -> float:
            (folder / "suite.yaml").write_text(json.dumps({
                "name": "tp", "dataset": {"corpus": "corpus.jsonl", "queries": "queries.jsonl"},
                "retrievers": {"bm25": {}}, "k": 10, "metrics": ["recall@10", "token_f1"],
                "llm": llm, "cache": {"mode": "off"},
            }))
            cmd = [sys.executable, "-m", "pytest", "--ragbench=suite.yaml", "-q", "-p",
                   "no:cacheprovider", "--rootdir", str(folder), "-c", os.devnull,
                   *([] if outputs else ["--ragbench-no-output"]), "-n", str(n),
                   *USER_PLUGINS_ONLY]
            env = user_environment()
            env.pop("RAGBENCH_NO_HEAD_START", None)
            if not head_start:
                env["RAGBENCH_NO_HEAD_START"] = "1"
            t0 = time.monotonic()  # the fake server stamps arrivals with this clock
            launched.append(t0)
            out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False,
                                 env=env)
            wall = time.monotonic() - t0
            if out.returncode != 0:
                raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
            return wall

        online = {"type": "openai", "base_url": server.base_url, "model": "m",
                  "concurrency": concurrency}
        # a first run writes the bytecode and pytest's rewritten plugins, as a user's first
        # run does; the figures are of the runs after it
        run(online, max(workers))
        print(f"pytest --ragbench: {items} items, latency {latency * 1000:.0f} ms, "
              f"concurrency {concurrency} for the whole run; median of {repeats} runs")
        print(f"  {'-n':>3} {'calls':>6} {'wall s':>8} {'no head start':>14} {'no outputs':>11} "
              f"{'offline s':>10} "
              f"{'LLM phase s':>12} {'first s':>8} {'span s':>7} {'tail s':>7} {'bound s':>8} "
              f"{'ratio':>7} {'span ratio':>11} {'max in flight':>14}")
        # the runs of one repeat go side by side (every -n and kind), so that a change in
        # the machine's load falls on all the figures alike
        offline_t: dict[int, list[float]] = {n: [] for n in workers}
        plain_t: dict[int, list[float]] = {n: [] for n in workers}
        online_t: dict[int, list[float]] = {n: [] for n in workers}
        quiet_t: dict[int, list[float]] = {n: [] for n in workers}  # --ragbench-no-output
        spans: dict[int, list[float]] = {n: [] for n in workers}
        # from launch to the first request's arrival, and from the last answer to the exit
        firsts: dict[int, list[float]] = {n: [] for n in workers}
        tails: dict[int, list[float]] = {n: [] for n in workers}
        calls: dict[int, int] = {}
        in_flight: dict[int, int] = {n: 0 for n in workers}
        for _ in range(repeats):
            for n in workers:
                offline_t[n].append(run({"type": "extractive"}, n))
                if n:
                    plain_t[n].append(run(online, n, head_start=False))
                quiet_t[n].append(run(online, n, outputs=False))
                server.reset_counts()
                before = server.count(CHAT_PATH)
                first = len(server.arrival_times())
                online_t[n].append(run(online, n))
                calls[n] = server.count(CHAT_PATH) - before
                in_flight[n] = max(in_flight[n], server.max_in_flight)
                arrivals = server.arrival_times()[first:]
                spans[n].append(arrivals[-1] + latency - arrivals[0] if arrivals
                                else float("nan"))
                if arrivals:
                    firsts[n].append(arrivals[0] - launched[-1])
                    tails[n].append(launched[-1] + online_t[n][-1] - arrivals[-1] - latency)
        walls: dict[int, float] = {}
        for n in workers:
            offline = statistics.median(offline_t[n])
            wall, span = statistics.median(online_t[n]), statistics.median(spans[n])
            walls[n] = wall
            bound = calls[n] * latency / concurrency
            phase = wall - offline
            ratio = phase / bound if bound else float("nan")
            span_ratio = span / bound if bound else float("nan")
            verdict = "OK" if span_ratio <= TARGET_RATIO else "SLOW"
            shown_plain = f"{statistics.median(plain_t[n]):>14.3f}" if n else f"{'-':>14}"
            first_s, tail_s = statistics.median(firsts[n]), statistics.median(tails[n])
            print(f"  {n:>3} {calls[n]:>6} {wall:>8.3f} {shown_plain} "
                  f"{statistics.median(quiet_t[n]):>11.3f} {offline:>10.3f} "
                  f"{phase:>12.3f} {first_s:>8.3f} {span:>7.3f} {tail_s:>7.3f} {bound:>8.3f} "
                  f"{ratio:>6.3f}x {span_ratio:>10.3f}x {in_flight[n]:>14}  {verdict}")
        print(f"  (target: the LLM span <= {TARGET_RATIO}x its bound at every -n, max in flight "
              f"<= {concurrency})")
        print(f"  ({rounds_note(max(calls.values()), latency, concurrency)})")
        ok = True
        if 0 in walls:
            for n in (w for w in workers if w):
                fine = walls[n] <= walls[0]
                ok = ok and fine
                # the runs of a repeat went side by side: their differences show how far the
                # verdict stands from the machine's noise
                paired = [a - b for a, b in zip(online_t[n], online_t[0], strict=True)]
                print(f"  wall(-n {n}) {walls[n]:.3f} s <= wall(-n 0) {walls[0]:.3f} s: "
                      f"{'OK' if fine else 'NO'}  (per repeat, -n {n} minus -n 0: "
                      f"{' '.join(f'{d:+.3f}' for d in paired)} s)")
                # where the difference lies: the median of each phase's paired differences
                # (single runs vary by tenths of a second on a shared machine: more repeats
                # narrow these down)
                phases = []
                for name, s in (("first", firsts), ("span", spans), ("tail", tails)):
                    if s[n] and len(s[n]) == len(s[0]):
                        diffs = [a - b for a, b in zip(s[n], s[0], strict=True)]
                        phases.append(f"{name} {statistics.median(diffs):+.3f}")
                print(f"    median of the paired differences: wall "
                      f"{statistics.median(paired):+.3f}  {'  '.join(phases)} s")
                quiet = [a - b for a, b in zip(quiet_t[n], quiet_t[0], strict=True)]
                print(f"    with --ragbench-no-output: {statistics.median(quiet_t[n]):.3f} s "
                      f"against {statistics.median(quiet_t[0]):.3f} s (median of the paired "
                      f"differences {statistics.median(quiet):+.3f} s)")
        return ok


#: The pytest plugins a user's environment loads are those of pytest-ragbench's own
#: dependencies. A development install adds the `test` extra, of which hypothesis has a
#: pytest plugin: its terminal summary imports all of hypothesis in every process (about
#: 1 s per worker, on the run's critical path), a cost of that install, not of this one.
USER_PLUGINS_ONLY = ("-p", "no:hypothesispytest")


def user_environment() -> dict[str, str]:
    """The environment for the pytest runs, as a user's shell has it: bytecode is written
    and reused (``PYTHONDONTWRITEBYTECODE``, set on some development machines, makes every
    process compile its modules and rewrite its plugins again, 0.2-0.3 s each)."""
    import os

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_package() -> None:
    """Write the package's bytecode, as an installed package has it: workers then start as
    they do for a user (under PYTHONDONTWRITEBYTECODE every process compiles it again)."""
    import compileall

    import pytest_ragbench

    compileall.compile_dir(Path(pytest_ragbench.__file__).parent, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--judge-items", type=int, default=20)
    ap.add_argument("--workers", default="0,2,4", help="the -n values for the pytest part")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure of the pytest part")
    args = ap.parse_args(argv)
    asyncio.run(generation(args.items, args.latency, args.concurrency))
    print()
    compile_package()
    workers = [int(n) for n in args.workers.split(",")]
    if not plugin_generation(args.items, args.latency, args.concurrency, workers,
                             args.repeats):
        # worker start-up alone (the offline column) can exceed the whole -n 0 run on a
        # small machine; a suite where the LLM dominates shows what workers then give
        print()
        plugin_generation(args.items * 2, args.latency * 2, args.concurrency, workers,
                          args.repeats)
    print()
    asyncio.run(judged_metric_costs(args.judge_items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
