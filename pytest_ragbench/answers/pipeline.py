"""Generation and judging for one RAG case: configuration, the pipeline, and prefetching.

The domain side of answer metrics. A suite's ``llm`` / ``judge`` / ``embedder`` /
``generation`` / ``cache`` / ``prices`` / ``max_cost`` / ``runs`` / ``seed`` keys are parsed by
:func:`parse_rag_config` into a :class:`RagConfig`; :func:`build_pipeline` turns it into a
:class:`RagPipeline` whose :meth:`RagPipeline.run_case` renders the prompt from the retrieved
contexts, asks the LLM, and scores the answer with the requested answer metrics (the
contract of :mod:`pytest_ragbench.metrics.contract`: built-in lexical and judged ones, the
suite's custom criteria, third-party ones), returning JSON-safe fields for the case record.
The judged parts of all of them go to the judge in one request per item.

Provider failures are data, never exceptions: a failed generation puts
``{"generation": reason}`` in ``errors`` and ``None`` in every requested metric; a failed
judgement puts one entry per failed metric.

Event loops. The HTTP clients belong to the event loop that first uses them, so one pipeline
must be driven from ONE loop: either ``await run_case(...)`` from your own loop, or the
synchronous API (:meth:`RagPipeline.submit` / :meth:`RagPipeline.result` /
:meth:`RagPipeline.run_case_sync`), which runs everything on the pipeline's own
:class:`Prefetcher` thread. The plugin uses the latter: it submits the LLM work of every item a
process will run ahead of time, and each item then blocks on its own result, in order.

Wrapping order of a paid provider (outermost first)::

    _MeteredLLM -> CachedLLM -> BudgetedLLM -> OpenAIChat
    _MeteredLLM -> CachedLLM -> BudgetedLLM -> GuardedLLM -> a registered LLM

so cache hits are served (and cost nothing) even when the budget is used up, and the per-case
meter sees exactly what each call cost. With a run budget there is no ``BudgetedLLM``: the
client (or the guard) refuses and charges with each lease of its run-wide pool. A registered
provider (or embedder) gets from :class:`~pytest_ragbench.llm.guard.GuardedLLM` what the
OpenAI client does itself: retries, breaker, timeouts, its pool's concurrency and rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import jinja2

from ..budget import RunBudget, RunCostBudget
from ..budget.wiring import endpoint_limits, pool_key
from ..datasets import Query
from ..embedders import HashingEmbedder
from ..errors import ComponentError, RagbenchError, did_you_mean
from ..llm import deadline
from ..llm.base import LLM, Embedder, LLMError, Message
from ..llm.cache import (
    CACHE_MODES,
    CachedEmbedder,
    CachedLLM,
    CacheMode,
    ResponseCache,
    cache_path_problem,
    chat_key,
)
from ..llm.extractive import ExtractiveLLM
from ..llm.guard import CallGuard, CallLimits, GuardedEmbedder, GuardedLLM
from ..llm.identity import ProviderId, canonical_json, strip_credentials
from ..llm.resilience import RateLimiter, RetryPolicy
from ..llm.usage import BudgetedLLM, CostBudget, PaidBefore, PriceTable, Usage
from ..metrics.answer import ANSWER_METRICS
from ..metrics.contract import AnswerSample, is_answer_metric, score_answer
from ..metrics.judge import JUDGED_METRICS, TEMPLATE_VERSION, Judge
from ..records import clean_float, jsonable
from .config import EndpointConfig, LlmConfig, RagConfig, _fail, _path, component_error
from .exchange import ExchangedLLM, LeftEmbedder, Role, unled_requests
from .metering import _Meter, _MeteredLLM
from .prefetch import Prefetcher
from .prompt import _context_vars, check_template, compiled_prompt, template_version

T = TypeVar("T")

RAG_METRICS: tuple[str, ...] = (*ANSWER_METRICS, *JUDGED_METRICS)
"""The built-in answer metric names :meth:`RagPipeline.run_case` knows without a suite."""

MetricRef = Any  # a metric name, or an object of the answer-metric contract


# -- the pipeline ----------------------------------------------------------------------------


class _Closable(Protocol):
    """What the pipeline closes at the end: its HTTP clients and guarded providers."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class CaseRequest:
    """The arguments of one :meth:`RagPipeline.run_case` call, for :meth:`RagPipeline.schedule`."""

    query: Query
    contexts: tuple[tuple[str, str], ...]
    metrics: tuple[MetricRef, ...]
    run: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "contexts", tuple((str(d), str(t)) for d, t in self.contexts))
        object.__setattr__(self, "metrics", tuple(self.metrics))


def _check_metrics(metrics: Sequence[MetricRef],
                   known: Mapping[str, Any] | None = None) -> list[tuple[str, Any]]:
    """``(record name, metric)`` for each metric: a name of the suite's (``known``) or a
    built-in one, or a metric object (named by its ``name``)."""
    from ..metrics.rag_components import BUILTIN_ANSWER_METRICS

    if isinstance(metrics, str) or is_answer_metric(metrics):
        metrics = [metrics]
    known = known or {}
    wanted: list[tuple[str, Any]] = []
    for ref in metrics:
        if is_answer_metric(ref):
            name, metric = str(ref.name), ref
        elif isinstance(ref, str) and ref in known:
            name, metric = ref, known[ref]
        elif isinstance(ref, str) and ref in BUILTIN_ANSWER_METRICS:
            name, metric = ref, BUILTIN_ANSWER_METRICS[ref]()
        else:
            names = [*known, *(n for n in RAG_METRICS if n not in known)]
            raise ValueError(f"unknown answer metric {ref!r}{did_you_mean(str(ref), names)}; "
                             f"known: {', '.join(names)}")
        if name not in (n for n, _ in wanted):
            wanted.append((name, metric))
    return wanted


def _judged(wanted: Sequence[tuple[str, Any]]) -> list[str]:
    """The names of the metrics that need the judge."""
    return [name for name, m in wanted
            if getattr(m, "judge_part", None) is not None or "judge" in m.needs]


class RagPipeline:
    """Generation and judging for cases; built by :func:`build_pipeline`.

    ``llm`` / ``judge`` / ``embedder`` are the fully wrapped objects in use (for inspection).
    """

    def __init__(
        self,
        config: RagConfig,
        *,
        llm: LLM,
        judge: Judge | None,
        embedder: Embedder | None,
        template: jinja2.Template,
        template_version: str,
        meter: contextvars.ContextVar[_Meter | None],
        budget: CostBudget | RunCostBudget | None,
        cache: ResponseCache | None,
        clients: Sequence[_Closable],
        exchanged: bool = False,
        leads: bool = False,
    ) -> None:
        self.config = config
        self.llm = llm
        self.judge = judge
        self.embedder = embedder
        self.template_version = template_version
        self.budget = budget
        self.cache = cache
        #: Whether a paid chat client asks the run's request exchange first (see
        #: :func:`build_pipeline`'s ``exchange``).
        self.exchanged = exchanged
        #: Whether it leads the run's request exchange (the xdist controller's head start):
        #: it then keeps a second window of cases open (see :meth:`_open_cases`).
        self.leads = leads
        self._template = template
        self._meter = meter
        self._clients = list(clients)
        self._prefetcher: Prefetcher | None = None
        self._prefetcher_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return (f"RagPipeline(llm={self.config.llm.type}:{self.config.llm.model}, "
                f"judge={self.judge is not None}, template={self.template_version})")

    @property
    def n_contexts(self) -> int:
        """How many retrieved contexts go into the prompt."""
        return self.config.generation.contexts

    @property
    def spent(self) -> float:
        """USD spent so far under ``max_cost`` (0 without a budget); with a run budget, the
        whole run's spend under this suite's cap (every worker)."""
        return self.budget.spent if self.budget is not None else 0.0

    def messages(self, question: str, contexts: Sequence[tuple[str, str]]) -> list[Message]:
        """The generation request for ``question`` over the top contexts."""
        top = list(contexts)[: self.n_contexts]
        return [{"role": "user", "content": self._template.render(**_context_vars(question, top))}]

    async def run_case(
        self,
        query: Query,
        contexts: Sequence[tuple[str, str]],
        metrics: Sequence[MetricRef],
        run: int = 0,
    ) -> dict[str, Any]:
        """Generate an answer from the top contexts and compute ``metrics``.

        ``contexts`` are ``(doc_id, text)`` best first (only the first ``generation.contexts``
        are used). Returns JSON-safe fields to merge into the case record::

            {"answer": str | None, "contexts": [doc ids], "metrics": {name: float | None},
             "judge": {metric: evidence}, "usage": {"prompt_tokens", "completion_tokens",
             "requests"}, "cost": float, "errors": {metric | "generation": reason}}

        ``usage`` counts the chat calls of this case (generation and judge; cache hits keep
        their tokens with 0 requests); ``cost`` is what they cost in USD (0 for cache hits;
        priced embeddings are charged to the run's cost cap, not to a case). ``metrics`` are
        names (the suite's, or built-in) or answer-metric objects. Raises ``ValueError`` for
        an unknown metric name only.
        """
        wanted = _check_metrics(metrics, self.config.metrics)
        top = [(str(d), str(t)) for d, t in list(contexts)[: self.n_contexts]]
        meter = _Meter()
        token = self._meter.set(meter)
        try:
            with self._case():
                return await self._run_case_limited(query, top, wanted, run, meter)
        finally:
            self._meter.reset(token)

    def _case(self, key: Hashable = None) -> contextlib.AbstractContextManager[None]:
        """One case's generation and judging, for the judge's batches (``items_per_call``):
        a batch that is not full waits while this case may still join it. ``key`` is the
        prefetch key the submitting thread waits on."""
        return self.judge.case(key) if self.judge is not None else contextlib.nullcontext()

    async def _run_case_limited(self, query: Query, top: list[tuple[str, str]],
                                wanted: list[tuple[str, Any]], run: int,
                                meter: _Meter) -> dict[str, Any]:
        limit = self.config.generation.timeout
        if limit is None:
            return await self._run_case(query, top, wanted, run, meter)
        progress: dict[str, Any] = {"stage": "generation"}
        try:
            # the limit does not count the time the case's calls all wait for the run's
            # slots: each process opens as many cases as the run has slots, so how long
            # they queue depends on how many workers share the slots, not on the case
            return await deadline.within(
                limit, lambda: self._run_case(query, top, wanted, run, meter, progress))
        except TimeoutError:
            return self._timed_out(top, wanted, meter, progress, limit)

    def _timed_out(self, top: list[tuple[str, str]], wanted: list[tuple[str, Any]],
                   meter: _Meter,
                   progress: dict[str, Any], limit: float) -> dict[str, Any]:
        """The fields of a case stopped by ``generation.timeout``: an explicit error naming
        the stage it was in and the limit; an answer already generated is kept."""
        stage = str(progress["stage"])
        message = (f"{stage} timed out: the case's generation and judging took longer than "
                   f"generation.timeout {limit:g} s")
        answer = progress.get("answer")
        errors = {stage: message} if stage == "generation" else {
            m: message for m in _judged(wanted)}
        scores: dict[str, float | None] = {m: None for m, _ in wanted}
        scores.update({k: v for k, v in progress.get("scores", {}).items() if k in scores
                       and k not in errors})
        return {
            "answer": answer,
            "contexts": [d for d, _ in top],
            "metrics": scores,
            "judge": {},
            "usage": meter.usage(),
            "cost": meter.cost,
            "llm_calls": list(meter.calls),
            "errors": errors,
        }

    async def _run_case(self, query: Query, top: list[tuple[str, str]],
                        wanted: list[tuple[str, Any]], run: int, meter: _Meter,
                        progress: dict[str, Any] | None = None) -> dict[str, Any]:
        progress = {} if progress is None else progress
        scores: dict[str, float | None] = {m: None for m, _ in wanted}
        progress["scores"] = scores
        errors: dict[str, str] = {}
        verdicts: dict[str, Any] = {}
        answer: str | None = None
        try:
            completion = await self.llm.chat(
                self.messages(query.text, top), seed=self.config.seed + run
            )
            answer = completion.text.strip()
        except (LLMError, RagbenchError) as exc:
            errors["generation"] = str(exc) or type(exc).__name__

        if answer is not None:
            progress.update(stage="judge", answer=answer)
            await self._score(query, answer, top, wanted, scores, verdicts, errors)
        return {
            "answer": answer,
            "contexts": [d for d, _ in top],
            "metrics": scores,
            "judge": jsonable(verdicts),
            "usage": meter.usage(),
            "cost": meter.cost,
            "llm_calls": list(meter.calls),
            "errors": errors,
        }

    async def _score(
        self,
        query: Query,
        answer: str,
        top: list[tuple[str, str]],
        wanted: list[tuple[str, Any]],
        scores: dict[str, float | None],
        verdicts: dict[str, Any],
        errors: dict[str, str],
    ) -> None:
        """Score ``answer`` with ``wanted``; the judged parts in one judge request."""
        sample = AnswerSample(
            question=query.text, answer=answer, contexts=tuple(t for _, t in top),
            # the judge compares against one reference; the dataset's first is canonical
            references=tuple(query.reference_answers), query=query)
        # filled as values come, so what was scored survives a timeout (progress holds
        # this very dict)
        result = await score_answer(wanted, sample, judge=self.judge, embedder=self.embedder,
                                    values=scores)
        for name, value in result.metrics.items():
            scores[name] = clean_float(value)
        verdicts.update(result.verdicts)
        errors.update(result.errors)

    async def judge_answer(self, query: Query, answer: str,
                           contexts: Sequence[tuple[str, str]], metrics: Sequence[MetricRef],
                           run: int = 0) -> dict[str, Any]:
        """Score an answer produced elsewhere (a pipeline under test, a hand-written test):
        nothing is generated.

        ``contexts`` are ``(id, text)`` as the pipeline used them (all of them: the
        ``generation.contexts`` cut is for generated answers). Returns the fields of
        :meth:`run_case` for ``metrics`` (every answer metric, judged or not); ``usage`` /
        ``cost`` are the judge's. ``run`` is accepted for symmetry; the judge's seed is the
        suite's.
        """
        wanted = _check_metrics(metrics, self.config.metrics)
        top = [(str(d), str(t)) for d, t in contexts]
        meter = _Meter()
        token = self._meter.set(meter)
        try:
            scores: dict[str, float | None] = {m: None for m, _ in wanted}
            errors: dict[str, str] = {}
            verdicts: dict[str, Any] = {}
            if wanted:
                # the controller's head start judges only the answers it generated itself
                with self._case(), unled_requests():
                    await self._judge_limited(query, answer, top, wanted, scores, verdicts,
                                              errors)
        finally:
            self._meter.reset(token)
        return {"metrics": scores, "judge": jsonable(verdicts), "usage": meter.usage(),
                "cost": meter.cost, "llm_calls": list(meter.calls), "errors": errors}

    async def _judge_limited(self, query: Query, answer: str, top: list[tuple[str, str]],
                             wanted: list[tuple[str, Any]], scores: dict[str, float | None],
                             verdicts: dict[str, Any], errors: dict[str, str]) -> None:
        """:meth:`_score` bounded by ``generation.timeout``, as a generated answer's judging
        is; past it the judged metrics are errors naming the limit."""
        limit = self.config.generation.timeout
        if limit is None:
            await self._score(query, answer, top, wanted, scores, verdicts, errors)
            return
        try:
            await deadline.within(limit, lambda: self._score(query, answer, top, wanted,
                                                             scores, verdicts, errors))
        except TimeoutError:
            message = (f"judge timed out: the case's judging took longer than "
                       f"generation.timeout {limit:g} s")
            for name in _judged(wanted):
                errors[name] = message
                scores[name] = None
            verdicts.clear()

    def submit_judgement(self, key: Hashable, query: Query, answer: str,
                         contexts: Sequence[tuple[str, str]], metrics: Sequence[MetricRef],
                         run: int = 0) -> bool:
        """Start :meth:`judge_answer` for ``key`` in the background, like :meth:`submit`
        (a pipeline's answers are judged ahead while items report in order); collect it
        with :meth:`result`."""
        wanted = tuple(metrics)
        _check_metrics(wanted, self.config.metrics)  # fail in the caller, not in the background
        top = tuple((str(d), str(t)) for d, t in contexts)
        self._feeder("feeding")

        async def judging() -> dict[str, Any]:
            with self._case(key):
                return await self.judge_answer(query, answer, top, wanted, run)

        return self.prefetcher.submit(key, judging)

    def judge_answer_sync(self, query: Query, answer: str,
                          contexts: Sequence[tuple[str, str]], metrics: Sequence[MetricRef],
                          run: int = 0) -> dict[str, Any]:
        """:meth:`judge_answer` on the pipeline's own loop, waiting for it."""
        self._feeder("idle")
        return self.prefetcher.call(
            lambda: self.judge_answer(query, answer, contexts, metrics, run))

    # -- synchronous API on the pipeline's own loop ------------------------------------------

    @property
    def prefetcher(self) -> Prefetcher:
        """The pipeline's :class:`Prefetcher` (created on first use)."""
        with self._prefetcher_lock:
            if self._closed:
                raise RuntimeError("the pipeline is closed")
            if self._prefetcher is None:
                # with a run budget the budget holds the run's limit; this only caps how many
                # cases this process keeps open at once
                self._prefetcher = Prefetcher(self._open_cases())
            return self._prefetcher

    def _open_cases(self) -> int:
        """How many cases the prefetcher keeps open: :attr:`slots`, twice that when the
        pipeline leads the exchange. A leading case claims its request (a round trip to the
        run's exchange) before it asks for a slot; with one window open, a case began only
        when another ended, so the claim came between a response and the next request, and
        the controller's slots sat idle about 1 ms longer per response than at ``-n 0``
        (15.6 of 16 busy on average instead of 15.85). With a second window open the next
        cases wait for their slots with their retrieval, prompt and claim done. The run
        budget still bounds the requests in flight, and the head start only leads cases
        without a time limit, so none of them runs out of time while it waits."""
        window = self.slots
        return 2 * window if self.leads else window

    @property
    def slots(self) -> int:
        """How many of its cases have their requests out at once: the LLM's concurrency,
        rounded up to a multiple of the judge's ``items_per_call`` so that batches fill up
        while cases come and go."""
        window = self.config.llm.concurrency
        per_call = self.judge.items_per_call if self.judge is not None else 1
        return -(-window // per_call) * per_call

    def submit(self, key: Hashable, query: Query, contexts: Sequence[tuple[str, str]],
               metrics: Sequence[MetricRef], run: int = 0) -> bool:
        """Start :meth:`run_case` for ``key`` in the background; see :meth:`Prefetcher.submit`."""
        request = CaseRequest(query, tuple(contexts), tuple(metrics), run)
        _check_metrics(request.metrics, self.config.metrics)  # fail here, not in the background
        self._feeder("feeding")

        async def case() -> dict[str, Any]:
            with self._case(key):
                return await self.run_case(request.query, request.contexts, request.metrics,
                                           request.run)

        return self.prefetcher.submit(key, case)

    def schedule(self, keys_and_requests: Iterable[tuple[Hashable, CaseRequest]]) -> int:
        """Submit many cases (in the order given); returns how many were newly scheduled."""
        scheduled = 0
        for key, request in keys_and_requests:
            scheduled += self.submit(key, request.query, request.contexts, request.metrics,
                                     request.run)
        return scheduled

    def result(self, key: Hashable, timeout: float | None = None) -> dict[str, Any]:
        """Block until ``key``'s case is done and return its fields; see
        :meth:`Prefetcher.result`."""
        self._feeder("awaiting" if not self.prefetcher.ready(key) else "collected", key)
        value: dict[str, Any] = self.prefetcher.result(key, timeout)
        return value

    def run_case_sync(self, query: Query, contexts: Sequence[tuple[str, str]],
                      metrics: Sequence[MetricRef], run: int = 0) -> dict[str, Any]:
        """:meth:`run_case` on the pipeline's own loop, waiting for it."""
        self._feeder("idle")
        return self.prefetcher.call(lambda: self.run_case(query, contexts, metrics, run))

    def _feeder(self, state: str, key: Hashable = None) -> None:
        """Tell the judge's batcher (``items_per_call`` > 1) what the submitting thread does:
        it submits cases one by one (each after its retrieval or its pipeline's answer) and
        then waits for one; partial batches wait while its next case may still join them."""
        batcher = self.judge.batcher if self.judge is not None else None
        if batcher is None:
            return
        loop = self.prefetcher.loop
        if state == "feeding":
            loop.call_soon_threadsafe(batcher.feeding)
        elif state == "awaiting":
            loop.call_soon_threadsafe(batcher.awaiting, key)
        elif state == "collected":
            loop.call_soon_threadsafe(batcher.collected, key)
        else:
            loop.call_soon_threadsafe(batcher.idle)

    # -- teardown ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP clients and the cache (from the loop that used the clients)."""
        clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # teardown must not mask results
                await client.aclose()
        self._close_cache()

    def _close_cache(self) -> None:
        if self.judge is not None:
            with contextlib.suppress(Exception):  # teardown must not mask results
                self.judge.forget_rejected()
        if self.cache is not None:
            self.cache.close()

    def close(self) -> None:
        """Cancel prefetched work, close clients and cache, stop the loop. Idempotent.

        Without a prefetcher (the pipeline was driven from your own loop), call
        ``await aclose()`` from that loop instead; this then only closes what is left.
        """
        with self._prefetcher_lock:
            if self._closed:
                return
            self._closed = True
            prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            prefetcher.close(self.aclose)
            return
        if self._clients:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.aclose())
                return
            raise RuntimeError("RagPipeline.close() called inside an event loop; "
                               "use 'await pipeline.aclose()'")
        self._close_cache()

    def __enter__(self) -> RagPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunShare:
    """What a pipeline draws from the run's budget: the budget and this suite's cost cap."""

    budget: RunBudget
    cost_key: str | None
    prices: PriceTable | None


def _endpoint_kwargs(endpoint: EndpointConfig, share: _RunShare | None = None,
                     *, priced: bool = False, kind: str = "llm") -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "api_key_env": endpoint.api_key_env,
        "headers": dict(endpoint.headers),
        "timeout": endpoint.timeout,
        "params": dict(endpoint.params),
        "concurrency": endpoint.concurrency,
        "retry": RetryPolicy(max_attempts=endpoint.retries + 1, base_delay=endpoint.backoff),
        "case_timeout": endpoint.case_timeout,
    }
    if share is None:
        kwargs["rate_limiter"] = (RateLimiter(endpoint.rpm, endpoint.tpm)
                                  if endpoint.rpm is not None or endpoint.tpm is not None
                                  else None)
        return kwargs
    limits = endpoint_limits(endpoint.concurrency, adaptive=endpoint.adaptive,
                             rpm=endpoint.rpm, tpm=endpoint.tpm)
    # never credentials in the key: it travels to the coordinator and into the summary
    key = pool_key(strip_credentials(endpoint.base_url), endpoint.model, limits, kind=kind)
    share.budget.declare(key, limits)
    kwargs.update(run_budget=share.budget, pool=key)
    if priced and share.cost_key is not None and share.prices is not None:
        prices, model = share.prices, endpoint.model

        def cost_of(usage: Usage) -> float:
            return prices.cost(model, usage)

        kwargs.update(cost_key=share.cost_key, cost_of=cost_of)
    return kwargs


def _has_price(prices: PriceTable | None, model: str) -> bool:
    """Whether ``prices`` lists ``model`` (a registered LLM's or an embedding model's price is
    optional: only a priced one is charged to the run's cost cap)."""
    if prices is None:
        return False
    try:
        prices.price(model)
    except LLMError:
        return False
    return True


def _component(key: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except ComponentError as exc:
        # the client's messages start with its own field name ("api_key_env: ...")
        raise ValueError(f"{key}.{exc}") from None


def build_pipeline(
    config: RagConfig,
    *,
    base_dir: Path,
    cache_path_override: str | Path | None = None,
    cache_mode_override: CacheMode | None = None,
    components: Callable[[str, str, Mapping[str, Any]], Any] | None = None,
    run_budget: RunBudget | None = None,
    cost_key: str | None = None,
    exchange: Role | None = None,
    exchange_scope: str | None = None,
    spent_before: PaidBefore | None = None,
) -> RagPipeline:
    """Build the LLM(s), cache, budget, judge and embedder that ``config`` describes.

    Relative paths (cache, template file) are resolved against ``base_dir`` (the suite's
    directory). ``cache_path_override`` / ``cache_mode_override`` come from the command line.
    With ``run_budget`` every endpoint draws from its run-wide pool and ``max_cost`` is the
    run's cap ``cost_key`` (one per suite file), whatever process the pipeline is in; without
    it, limits and the cap hold for this pipeline only.
    Raises ``ValueError("key.path: ...")`` when something cannot be built (an unset API key
    variable, a model without a price, an unreadable or broken template). No request is sent.
    ``components(kind, type, params)`` builds registered LLM / embedder types (default: a
    registry of built-ins and installed entry points); they get the same cache, budget and
    metering as the built-in providers.
    ``exchange`` (with ``run_budget``): the role of this process in the run's request
    exchange (:mod:`.exchange`); each paid chat client asks it first. Not with a judge that
    batches items (``items_per_call`` > 1), whose batches differ between processes; the
    built pipeline's :attr:`RagPipeline.exchanged` says whether it applied.
    ``exchange_scope``: the scope its requests are claimed in (the suite's id; see
    :class:`~.exchange.ExchangedLLM`). ``spent_before``: what ``max_cost`` already paid for
    (the cases a resumed run reuses: the run is one, old and new cases, under one cap).
    """
    prefix = config.key_prefix
    base_dir = Path(base_dir)
    mode = cache_mode_override or config.cache.mode
    if mode not in CACHE_MODES:
        raise ValueError(f"cache mode {mode!r} is not one of {', '.join(CACHE_MODES)}")

    # rendered once so a misspelt variable fails now rather than in every case
    text = check_template(config.generation, base_dir, prefix)
    template = compiled_prompt(text)
    version = template_version(text)

    clients: list[_Closable] = []
    cache: ResponseCache | None = None
    try:
        if mode != "off":
            path = Path(cache_path_override or config.cache.path)
            path = path if path.is_absolute() else base_dir / path
            problem = cache_path_problem(path, mode)
            if problem:
                # found at the first case, every case errored with the raw exception (in
                # refresh mode after its requests were paid for)
                raise _fail(_path(prefix, "cache"), f"the response cache {path} {problem}")
            cache = ResponseCache(path, mode)
        budget: CostBudget | RunCostBudget | None = None
        share: _RunShare | None = None
        if run_budget is not None:
            key = cost_key or prefix or "suite"
            if config.max_cost is not None:
                budget = RunCostBudget(run_budget, key, config.max_cost,
                                       spent_before or PaidBefore())
            share = _RunShare(run_budget, key if budget is not None else None, config.prices)
        elif config.max_cost is not None:
            budget = CostBudget(config.max_cost)
            budget.add(spent_before.usd if spent_before is not None else 0.0)
        meter: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar(
            "ragbench_case_meter", default=None
        )
        role = exchange if run_budget is not None and (
            config.judge is None or config.judge.items_per_call <= 1) else None
        exchanged: list[str] = []

        def provider(llm_config: LlmConfig, key: str) -> tuple[LLM, ProviderId, str | None]:
            """The budgeted provider, its identity and its priced model (None when free)."""
            if llm_config.registered:
                return _registered_llm(llm_config, key, config, budget, share, cache,
                                       components, clients)
            if llm_config.type == "extractive":
                extractive = ExtractiveLLM(threshold=llm_config.threshold,
                                           max_sentences=llm_config.max_sentences)
                return extractive, extractive.provider_id, None
            assert llm_config.endpoint is not None
            # here, not at import: httpx costs an offline run's every process 0.1 s
            from ..llm.openai import OpenAIChat

            endpoint = llm_config.endpoint
            client = _component(key, lambda: OpenAIChat(
                endpoint.base_url, endpoint.model,
                **_endpoint_kwargs(endpoint, share, priced=True)))
            clients.append(client)
            if config.prices is not None:
                try:
                    config.prices.price(endpoint.model)
                except LLMError as exc:
                    raise _fail(_path(prefix, "prices"), str(exc)) from None
            inner: LLM = client
            # a run budget refuses and charges inside the client, with each lease
            if budget is not None and config.prices is not None and share is None:
                assert isinstance(budget, CostBudget)
                inner = BudgetedLLM(client, budget, config.prices, model=endpoint.model)
            return inner, client.provider_id, endpoint.model

        def finish(inner: LLM, pid: ProviderId, model: str | None, version: str) -> LLM:
            wrapped: LLM = inner
            # an unpriced registered LLM comes cached already (see _registered_llm)
            cached = inner if isinstance(inner, CachedLLM) else None
            # a free provider (model None) is offline and deterministic: caching gains nothing
            if cache is not None and model is not None:
                wrapped = cached = CachedLLM(inner, cache, provider_id=pid,
                                             template_version=version)
            if role is not None and model is not None:
                assert run_budget is not None
                # outside the cache: a handed-over response keeps the cached flag it had
                wrapped = ExchangedLLM(wrapped, run_budget, role=role, provider_id=pid,
                                       template_version=version, scope=exchange_scope)
                exchanged.append(version)
            # through a cache, cases may share a request; the meter names it by its cache key
            # (without one every case sends its own, and the exchange alone shares nothing
            # between cases: a second asker sends its own)
            key = None
            if cached is not None and cached.cache.mode != "off":
                key = _cache_key_of(cached)
            return _MeteredLLM(wrapped, meter, config.prices, model, key=key)

        # a suite of pipelines' stand-in llm is its judge's own (built once, as for "same",
        # and named at judge.llm: the file has no llm: key)
        gen_inner, gen_id, gen_model = provider(
            config.llm, _path(prefix, "llm") if config.llm_in_suite
            else _path(prefix, "judge", "llm"))
        llm = finish(gen_inner, gen_id, gen_model, version)

        embedder: Embedder | None = None
        if config.embedder is not None and config.embedder.registered:
            emb_type = config.embedder.type
            built = _build_registered(components, "embedder", emb_type,
                                      config.embedder.params, _path(prefix, "embedder"))
            pid = registered_identity(built, emb_type, "", config.embedder.params)
            guarded = GuardedEmbedder(built, _guard(
                f"embedder {emb_type!r}", config.embedder.limits,
                pid.base_url or f"registered embedder {emb_type!r}", pid.model or emb_type,
                share, kind="embedding"))
            clients.append(guarded)
            embedder = (CachedEmbedder(guarded, cache, provider_id=pid)
                        if cache is not None else guarded)
        elif config.embedder is not None and config.embedder.type == "hashing":
            embedder = HashingEmbedder(dim=config.embedder.dim, nonzero=True)
        elif config.embedder is not None:
            assert config.embedder.endpoint is not None
            from ..llm.openai import OpenAIEmbedder

            ep = config.embedder.endpoint
            emb = _component(_path(prefix, "embedder"), lambda: OpenAIEmbedder(
                ep.base_url, ep.model, batch_size=ep.batch_size,
                **_endpoint_kwargs(ep, share, kind="embedding",
                                   priced=_has_price(config.prices, ep.model))))
            clients.append(emb)
            embedder = (CachedEmbedder(emb, cache, provider_id=emb.provider_id)
                        if cache is not None else emb)

        if role == "lead" and embedder is not None and not isinstance(embedder,
                                                                      HashingEmbedder):
            embedder = LeftEmbedder()
        judge: Judge | None = None
        if config.judge is not None:
            if config.judge.llm is None or not config.llm_in_suite:
                # "same" (or the stand-in): share the client, budget and price
                j_inner, j_id, j_model = gen_inner, gen_id, gen_model
            else:
                j_inner, j_id, j_model = provider(config.judge.llm, _path(prefix, "judge", "llm"))
            judge_llm = finish(j_inner, j_id, j_model, TEMPLATE_VERSION)
            judge = Judge(
                judge_llm,
                embedder,
                mode=config.judge.mode,
                n_questions=config.judge.n_questions,
                params={"seed": config.seed, **config.judge.params},
                items_per_call=config.judge.items_per_call,
                # each item's entry of a batched reply is cached on its own, and each item's
                # meter is charged its share of the call
                replies=judge_llm.inner if isinstance(judge_llm.inner, CachedLLM) else None,
                charge=judge_llm.charge,
            )
    except BaseException:
        _close_quietly(clients, cache)
        raise
    return RagPipeline(
        config,
        llm=llm,
        judge=judge,
        embedder=embedder,
        template=template,
        template_version=version,
        meter=meter,
        budget=budget,
        cache=cache,
        clients=clients,
        exchanged=bool(exchanged),
        leads=role == "lead" and bool(exchanged),
    )


def _build_registered(components: Callable[[str, str, Mapping[str, Any]], Any] | None,
                      kind: str, type_name: str, params: Mapping[str, Any], key: str) -> Any:
    if components is None:
        from ..registry import Registry

        registry = Registry()

        def components(k: str, t: str, p: Mapping[str, Any]) -> Any:
            return registry.build(k, t, p)

    try:
        return components(kind, type_name, params)
    except ComponentError as exc:
        raise component_error(key, exc) from None
    except (TypeError, ValueError) as exc:
        raise _fail(key, str(exc)) from None


def _scalars(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that can be part of a cache key: every one a suite file can write
    (nested lists and mappings too, so changing one misses the cache); objects handed over
    by a hook are left out."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        try:
            canonical_json(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


def _guard(name: str, limits: CallLimits, endpoint: str, model: str,
           share: _RunShare | None, *, priced: bool = False, kind: str = "llm") -> CallGuard:
    """The call guard of a registered provider: a run-wide pool of its own with a run budget
    (declared now, named by ``endpoint`` and ``model``), else local limits."""
    if share is None:
        return CallGuard(name, limits)
    pool_limits = endpoint_limits(limits.concurrency, adaptive=limits.adaptive,
                                  rpm=limits.rpm, tpm=limits.tpm)
    key = pool_key(strip_credentials(endpoint), model, pool_limits, kind=kind)
    share.budget.declare(key, pool_limits)
    if priced and share.cost_key is not None and share.prices is not None:
        prices = share.prices

        def cost_of(usage: Usage) -> float:
            return prices.cost(model, usage)

        return CallGuard(name, limits, run_budget=share.budget, pool=key,
                         cost_key=share.cost_key, cost_of=cost_of)
    return CallGuard(name, limits, run_budget=share.budget, pool=key)


def registered_identity(built: Any, name: str, model: str,
                        params: Mapping[str, Any]) -> ProviderId:
    """The cache identity of a registered LLM or embedder: its own ``provider_id`` (a
    :class:`ProviderId`, or a plain string the type's parameters are added to), else its
    type and parameters.

    A string was ignored: the response cache keyed on type and parameters alone, so the
    version string a component bumps when its code changes left its old answers cached.
    """
    pid = getattr(built, "provider_id", None)
    if isinstance(pid, ProviderId):
        return pid
    base = _scalars(params)
    if isinstance(pid, str) and pid:
        base = {**base, "provider_id": pid}
    return ProviderId(name, model=model, params=base)


def _registered_llm(llm_config: LlmConfig, key: str, config: RagConfig,
                    budget: CostBudget | RunCostBudget | None, share: _RunShare | None,
                    cache: ResponseCache | None,
                    components: Callable[[str, str, Mapping[str, Any]], Any] | None,
                    clients: list[_Closable]) -> tuple[LLM, ProviderId, str | None]:
    """A registered LLM type under its call guard: cached, and budgeted and priced when
    ``prices`` names its model.

    Its identity (for cache keys) is its own ``provider_id`` or its type and parameters; its
    model for ``prices`` is its ``model`` parameter, else its type name. A priced one is
    wrapped like a paid built-in (by the caller); an unpriced one is cached here and costs 0.
    """
    name = llm_config.type
    built: LLM = _build_registered(components, "llm", name, llm_config.params, key)
    pid = registered_identity(built, name, llm_config.model, llm_config.params)
    model = llm_config.model
    priced = _has_price(config.prices, model)
    guarded = GuardedLLM(built, _guard(f"llm {name!r}", llm_config.limits,
                                       pid.base_url or f"registered llm {name!r}", model,
                                       share, priced=priced))
    clients.append(guarded)
    inner: LLM = guarded
    if not priced:
        if cache is not None:
            inner = CachedLLM(inner, cache, provider_id=pid)
        return inner, pid, None
    assert config.prices is not None
    # a run budget refuses and charges inside the guard, with each lease
    if budget is not None and share is None:
        assert isinstance(budget, CostBudget)
        inner = BudgetedLLM(inner, budget, config.prices, model=model)
    return inner, pid, model


def _cache_key_of(cached: CachedLLM) -> Callable[[Sequence[Message], dict[str, Any]], str]:
    """The response-cache key ``cached`` gives a request (what cases share through it)."""
    def key(messages: Sequence[Message], params: dict[str, Any]) -> str:
        return chat_key(cached.provider_id, messages, params, cached.template_version)

    return key


def _close_quietly(clients: Sequence[_Closable], cache: ResponseCache | None) -> None:
    async def close_all() -> None:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    if clients:
        with contextlib.suppress(Exception):  # a half-built pipeline; the real error matters
            asyncio.run(close_all())
    if cache is not None:
        cache.close()


