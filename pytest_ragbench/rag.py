"""Generation and judging for one RAG case: configuration, the pipeline, and prefetching.

The domain side of answer metrics. A suite's ``llm`` / ``judge`` / ``embedder`` /
``generation`` / ``cache`` / ``prices`` / ``max_cost`` / ``runs`` / ``seed`` keys are parsed by
:func:`parse_rag_config` into a :class:`RagConfig`; :func:`build_pipeline` turns it into a
:class:`RagPipeline` whose :meth:`RagPipeline.run_case` renders the prompt from the retrieved
contexts, asks the LLM, and computes the requested lexical (:data:`ANSWER_METRICS`) and
judged (:data:`JUDGED_METRICS`) metrics, returning JSON-safe fields for the case record.

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

so cache hits are served (and cost nothing) even when the budget is used up, and the per-case
meter sees exactly what each call cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import hashlib
import re
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import jinja2
import numpy as np

from .datasets import Query
from .errors import ComponentError, RagbenchError, did_you_mean, type_name, validation_message
from .llm.base import LLM, Completion, Embedder, LLMError, Message
from .llm.cache import CACHE_MODES, CachedEmbedder, CachedLLM, CacheMode, ResponseCache
from .llm.extractive import ABSTAIN, PROMPT_INSTRUCTIONS, ExtractiveLLM
from .llm.identity import ProviderId
from .llm.openai import OpenAIChat, OpenAIEmbedder
from .llm.prompts import prompt_environment
from .llm.resilience import RateLimiter, RetryPolicy
from .llm.usage import BudgetedLLM, CostBudget, PriceTable
from .metrics.answer import ANSWER_METRICS
from .metrics.judge import JUDGED_METRICS, TEMPLATE_VERSION, Judge, JudgeInput
from .records import clean_float, jsonable
from .suite import schema

__all__ = [
    "DEFAULT_TEMPLATE",
    "RAG_METRICS",
    "CacheConfig",
    "CaseRequest",
    "ConfigError",
    "EmbedderConfig",
    "EndpointConfig",
    "GenerationConfig",
    "HashingEmbedder",
    "JudgeConfig",
    "LlmConfig",
    "Prefetcher",
    "RagConfig",
    "RagPipeline",
    "build_pipeline",
    "check_template",
    "flaky_summary",
    "parse_rag_config",
    "rag_config_from_model",
    "template_version",
]

T = TypeVar("T")

RAG_METRICS: tuple[str, ...] = (*ANSWER_METRICS, *JUDGED_METRICS)
"""Every metric name :meth:`RagPipeline.run_case` computes."""

DEFAULT_CACHE_PATH = schema.DEFAULT_CACHE_PATH

DEFAULT_TEMPLATE = """\
{{ instructions }}

{% for c in contexts %}
[{{ c.n }}] {{ c.text | oneline }}
{% endfor %}

Question: {{ question | oneline }}
"""
"""The generation prompt (one user message). It follows the passage convention of
:mod:`pytest_ragbench.llm.extractive`, so the offline provider can answer it. Variables:
``question``, ``contexts`` (list of ``{"n", "id", "text"}``, best first), ``instructions`` and
``abstain`` (the exact abstention reply); filter ``oneline`` folds whitespace."""

_TEMPLATE_SCHEMA = "gen-1"
_WORD = re.compile(r"\w+")


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """An OpenAI-compatible endpoint and how to talk to it (no secret values, only env names).

    ``retries`` is the number of retries after the first attempt; ``backoff`` the base delay
    in seconds of the exponential backoff between them; ``rpm`` / ``tpm`` rate limits.
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # literal header values may be credentials, so they stay out of repr()
    headers: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    timeout: float = 60.0
    concurrency: int = 16
    retries: int = 4
    backoff: float = 0.5
    rpm: float | None = None
    tpm: float | None = None
    batch_size: int = 128  # embeddings only

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


@dataclass(frozen=True)
class LlmConfig:
    """A chat provider: ``type`` ``"openai"`` (with ``endpoint``) or ``"extractive"``."""

    type: str
    endpoint: EndpointConfig | None = None
    threshold: float = 0.4  # extractive
    max_sentences: int = 1  # extractive
    concurrency: int = 16

    @property
    def paid(self) -> bool:
        return self.type == "openai"

    @property
    def model(self) -> str:
        return self.endpoint.model if self.endpoint is not None else ExtractiveLLM.model


@dataclass(frozen=True)
class JudgeConfig:
    """The judge: its LLM (``None`` = the generation LLM), mode, questions, call params."""

    llm: LlmConfig | None = None
    mode: str = "batched"
    n_questions: int = 3
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


@dataclass(frozen=True)
class EmbedderConfig:
    """``type`` ``"hashing"`` (offline, ``dim``) or ``"openai"`` (with ``endpoint``)."""

    type: str
    dim: int = 256
    endpoint: EndpointConfig | None = None


@dataclass(frozen=True)
class GenerationConfig:
    """How many retrieved contexts go into the prompt, and an optional template override.

    ``template`` is inline Jinja2 text or a path (relative to the suite's directory);
    ``template_file`` is always a path. At most one of them is set.
    """

    contexts: int = 5
    template: str | None = None
    template_file: str | None = None


@dataclass(frozen=True)
class CacheConfig:
    """The response cache file (relative to the suite's directory) and its mode."""

    path: str = DEFAULT_CACHE_PATH
    mode: CacheMode = "on"


@dataclass(frozen=True)
class RagConfig:
    """Everything needed to generate and judge answers; see :func:`parse_rag_config`."""

    llm: LlmConfig
    judge: JudgeConfig | None = None
    embedder: EmbedderConfig | None = None
    generation: GenerationConfig = GenerationConfig()
    cache: CacheConfig = CacheConfig()
    prices: PriceTable | None = field(default=None, hash=False)
    max_cost: float | None = None
    runs: int = 1
    seed: int = 0
    key_prefix: str = field(default="", compare=False)  # for messages at build time


def _path(prefix: str, *parts: str) -> str:
    return prefix + ".".join(parts)


class ConfigError(ValueError):
    """A bad configuration value: ``key`` is its key path, ``detail`` what is wrong.

    ``str()`` reads ``key: detail``, as every ValueError of this module always has.
    """

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(key, message)


def _endpoint(model: schema.EndpointModel, *, batch_size: int = 128) -> EndpointConfig:
    return EndpointConfig(
        base_url=model.base_url,
        model=model.model,
        api_key_env=model.api_key_env,
        params=dict(model.params or {}),
        headers=dict(model.headers or {}),
        timeout=float(model.timeout),
        concurrency=model.concurrency,
        retries=model.retries,
        backoff=float(model.backoff),
        rpm=None if model.rpm is None else float(model.rpm),
        tpm=None if model.tpm is None else float(model.tpm),
        batch_size=batch_size,
    )


def _llm(model: schema.OpenAILlm | schema.ExtractiveLlm) -> LlmConfig:
    if isinstance(model, schema.ExtractiveLlm):
        return LlmConfig("extractive", threshold=float(model.threshold),
                         max_sentences=model.max_sentences, concurrency=model.concurrency)
    endpoint = _endpoint(model)
    return LlmConfig("openai", endpoint, concurrency=endpoint.concurrency)


def rag_config_from_model(model: schema.RagFields, *, key_prefix: str = "") -> RagConfig:
    """The :class:`RagConfig` of validated suite keys (``model.llm`` must be set)."""
    assert model.llm is not None
    judge = None
    if model.judge is not None:
        j = model.judge
        judge = JudgeConfig(llm=None if j.llm == "same" else _llm(j.llm), mode=j.mode,
                            n_questions=j.n_questions, params=dict(j.params or {}))
    embedder = None
    if isinstance(model.embedder, schema.HashingEmbedderModel):
        embedder = EmbedderConfig("hashing", dim=model.embedder.dim)
    elif model.embedder is not None:
        embedder = EmbedderConfig(
            "openai", endpoint=_endpoint(model.embedder, batch_size=model.embedder.batch_size))
    gen = model.generation or schema.GenerationModel()
    cache = model.cache
    if isinstance(cache, schema.CacheModel):
        cache_config = CacheConfig(path=cache.path, mode=cache.mode)
    else:
        cache_config = CacheConfig(mode=cache if cache is not None else "on")
    prices = None
    if model.prices is not None:
        prices = PriceTable.from_mapping({m: p.model_dump() for m, p in model.prices.items()},
                                         key=_path(key_prefix, "prices"))
    return RagConfig(
        llm=_llm(model.llm),
        judge=judge,
        embedder=embedder,
        generation=GenerationConfig(contexts=gen.contexts, template=gen.template,
                                    template_file=gen.template_file),
        cache=cache_config,
        prices=prices,
        max_cost=None if model.max_cost is None else float(model.max_cost),
        runs=model.runs,
        seed=model.seed,
        key_prefix=key_prefix,
    )


def parse_rag_config(data: Mapping[str, Any], *, key_prefix: str = "") -> RagConfig:
    """Parse the generation/judging keys of a suite into a :class:`RagConfig`.

    ``data`` holds (some of) ``llm`` (required), ``judge``, ``embedder``, ``generation``,
    ``cache``, ``prices``, ``max_cost``, ``runs`` and ``seed``, as described by
    :class:`pytest_ragbench.suite.schema.RagFields`; ``key_prefix`` (e.g. ``"rag."``) is put in
    front of every key path in messages. Raises ``ValueError("key.path: what is wrong")`` for
    bad input. Nothing is contacted or read here.
    """
    from pydantic import ValidationError

    where = key_prefix.rstrip(".") or "suite"
    if not isinstance(data, Mapping):
        raise _fail(where, f"expected a mapping, got {type_name(data)}")
    try:
        model = schema.RagFields.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = schema.key_path(err, data)
        key = key_prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path
                                   ).lstrip(".")
        raise _fail(key or where, validation_message(dict(err))) from None
    if model.llm is None:
        raise _fail(_path(key_prefix, "llm"), "missing (answer metrics need a generation LLM)")
    return rag_config_from_model(model, key_prefix=key_prefix)


def check_template(generation: GenerationConfig, base_dir: Path, key_prefix: str = "") -> None:
    """Read, compile and render once the generation template, as :func:`build_pipeline` will.

    Raises :class:`ConfigError` (``generation.template: ...``) for a missing, unreadable or
    broken template, so a suite fails when it is loaded rather than at its first case.
    """
    template_key = _path(key_prefix, "generation")
    which = "template_file" if generation.template_file else "template"
    try:
        text = _template_text(generation, Path(base_dir), template_key)
    except UnicodeDecodeError as exc:
        raise _fail(f"{template_key}.{which}", f"cannot read template: not UTF-8 (byte "
                                               f"{exc.start}: {exc.reason})") from None
    try:
        template = _environment().from_string(text)
        template.render(**_context_vars("q", [("d", "t")]))
    except jinja2.TemplateError as exc:
        raise _fail(f"{template_key}.{which}", f"bad Jinja2 template: {exc}") from None


# -- prompt template -------------------------------------------------------------------------


def template_version(template_text: str) -> str:
    """The cache-key version of a generation template: it changes with any text change."""
    digest = hashlib.sha256(
        "\0".join((template_text, PROMPT_INSTRUCTIONS, ABSTAIN)).encode("utf-8")
    ).hexdigest()[:12]
    return f"{_TEMPLATE_SCHEMA}+{digest}"


def _oneline(value: Any) -> str:
    # a passage's own blank lines would end it early in the [n] convention
    return " ".join(str(value).split())


def _environment() -> jinja2.Environment:
    env = prompt_environment()
    env.filters["oneline"] = _oneline
    return env


def _looks_like_path(text: str) -> bool:
    # a template without a variable could not include the question, so one line without any
    # Jinja2 markup can only be meant as a file name
    return "\n" not in text and "{{" not in text and "{%" not in text


def _template_text(generation: GenerationConfig, base_dir: Path, key: str) -> str:
    if generation.template_file is not None:
        source, where = generation.template_file, f"{key}.template_file"
    elif generation.template is not None and _looks_like_path(generation.template):
        source, where = generation.template, f"{key}.template"
    elif generation.template is not None:
        return generation.template
    else:
        return DEFAULT_TEMPLATE
    path = base_dir / source
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(where, f"cannot read template {path}: {exc.strerror or exc}") from None


def _context_vars(question: str, contexts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "question": question,
        "contexts": [{"n": i, "id": d, "text": t} for i, (d, t) in enumerate(contexts, 1)],
        "instructions": PROMPT_INSTRUCTIONS,
        "abstain": ABSTAIN,
    }


# -- offline embedder ------------------------------------------------------------------------


class HashingEmbedder:
    """An offline :class:`~pytest_ragbench.llm.base.Embedder`: signed feature hashing.

    Each lowercase word adds +-1 to one of ``dim`` buckets (chosen and signed by a BLAKE2b
    hash, so vectors are the same in every process); rows are L2-normalised float32. Texts
    sharing words get similar vectors. A text without words hashes as a whole, so no row is
    the zero vector (the judge rejects those).
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"

    @property
    def provider_id(self) -> ProviderId:
        return ProviderId("hashing", model="hashing", params={"dim": self.dim})

    def vector(self, text: str) -> np.ndarray:
        """The embedding of one text."""
        row = np.zeros(self.dim, dtype=np.float64)
        for word in _WORD.findall(text.lower()) or [text]:
            number = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(),
                                    "big")
            row[number % self.dim] += 1.0 if (number >> 63) & 1 else -1.0
        norm = float(np.linalg.norm(row))
        if norm == 0.0:  # opposite signs cancelled out exactly
            row[0], norm = 1.0, 1.0
        return (row / norm).astype(np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 array of shape ``(len(texts), dim)``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.vector(t) for t in texts])


# -- per-case metering ---------------------------------------------------------------------


class _Meter:
    """What one case's chat calls cost (mutated by :class:`_MeteredLLM` within the case)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.requests = 0
        self.cost = 0.0

    def add(self, completion: Completion, cost: float) -> None:
        self.prompt_tokens += completion.usage.prompt_tokens
        self.completion_tokens += completion.usage.completion_tokens
        self.requests += completion.usage.requests
        self.cost += cost

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }


class _MeteredLLM:
    """Adds every completion's usage and cost to the meter of the case being run.

    The meter travels in a context variable because many cases run concurrently on one loop
    through the same client; asyncio copies the context into the judge's subtasks, and the
    meter object itself is shared, so their calls are counted too.
    """

    def __init__(self, inner: LLM, meter: contextvars.ContextVar[_Meter | None],
                 prices: PriceTable | None, model: str | None) -> None:
        self.inner = inner
        self._meter = meter
        self._prices = prices
        self._model = model  # None: a free provider

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        completion = await self.inner.chat(messages, **params)
        meter = self._meter.get()
        if meter is not None:
            cost = 0.0
            if self._prices is not None and self._model is not None and not completion.cached:
                cost = self._prices.cost(self._model, completion.usage)
            meter.add(completion, cost)
        return completion


# -- prefetching -----------------------------------------------------------------------------


class Prefetcher:
    """Runs coroutines concurrently on a private event loop in a background thread.

    :meth:`submit` schedules ``coro_factory()`` under a key (at most ``concurrency`` run at a
    time, started in submission order); :meth:`result` blocks the calling thread until that
    key's result is ready. Results can be collected in any order; each is handed out once.
    :meth:`close` cancels whatever is still pending and stops the loop.
    """

    def __init__(self, concurrency: int = 16, *, name: str = "ragbench-prefetch") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        self._semaphore = asyncio.Semaphore(concurrency)  # binds to the loop on first wait
        self._lock = threading.Lock()
        self._futures: dict[Hashable, concurrent.futures.Future[Any]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Prefetcher(concurrency={self.concurrency}, pending={self.pending})"

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop (for objects that must be created on it)."""
        return self._loop

    @property
    def pending(self) -> int:
        """Submitted keys whose work has not finished yet."""
        with self._lock:
            return sum(1 for f in self._futures.values() if not f.done())

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _bounded(self, coro_factory: Callable[[], Awaitable[T]]) -> T:
        async with self._semaphore:
            return await coro_factory()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the prefetcher is closed")

    def submit(self, key: Hashable, coro_factory: Callable[[], Awaitable[Any]]) -> bool:
        """Schedule ``coro_factory()`` under ``key``; False (and nothing done) if ``key`` is
        already pending or uncollected. The factory is called on the loop, when a slot frees."""
        with self._lock:
            self._check_open()
            if key in self._futures:
                return False
            self._futures[key] = asyncio.run_coroutine_threadsafe(
                self._bounded(coro_factory), self._loop
            )
            return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._futures

    def result(self, key: Hashable, timeout: float | None = None) -> Any:
        """Wait for ``key``'s result and return it (or raise what its coroutine raised).

        Raises ``KeyError`` for a key never submitted (or already collected),
        ``TimeoutError`` when ``timeout`` seconds pass first (the work goes on and the key
        can be waited for again), ``RuntimeError`` when the work was cancelled by
        :meth:`close` or when called from the prefetcher's own thread (it would deadlock).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("Prefetcher.result() called from the prefetcher's own loop")
        with self._lock:
            future = self._futures.get(key)
        if future is None:
            raise KeyError(key)
        try:
            value = future.result(timeout)
        except concurrent.futures.CancelledError:
            raise RuntimeError(f"prefetched work for {key!r} was cancelled") from None
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine itself raised a TimeoutError
                self._forget(key, future)
                raise
            raise TimeoutError(f"prefetched work for {key!r} not done after {timeout} s") from None
        except BaseException:
            self._forget(key, future)
            raise
        self._forget(key, future)
        return value

    def _forget(self, key: Hashable, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._futures.get(key) is future:
                del self._futures[key]

    def call(self, coro_factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``coro_factory()`` on the loop now (outside the concurrency bound) and wait."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("Prefetcher.call() called from the prefetcher's own loop")
        with self._lock:
            self._check_open()

        async def run() -> T:
            return await coro_factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def close(self, finalizer: Callable[[], Awaitable[None]] | None = None,
              timeout: float = 30.0) -> None:
        """Cancel pending work, await ``finalizer()`` on the loop (e.g. closing clients that
        live on it), stop the loop and join the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(
                    self._shutdown(finalizer), self._loop
                ).result(timeout)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)

    async def _shutdown(self, finalizer: Callable[[], Awaitable[None]] | None) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if finalizer is not None:
            await finalizer()


# -- the pipeline ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRequest:
    """The arguments of one :meth:`RagPipeline.run_case` call, for :meth:`RagPipeline.schedule`."""

    query: Query
    contexts: tuple[tuple[str, str], ...]
    metrics: tuple[str, ...]
    run: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "contexts", tuple((str(d), str(t)) for d, t in self.contexts))
        object.__setattr__(self, "metrics", tuple(self.metrics))


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    wanted: list[str] = []
    for name in metrics:
        if name not in RAG_METRICS:
            raise ValueError(f"unknown answer metric {name!r}{did_you_mean(name, RAG_METRICS)}; "
                             f"known: {', '.join(RAG_METRICS)}")
        if name not in wanted:
            wanted.append(name)
    return wanted


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
        budget: CostBudget | None,
        cache: ResponseCache | None,
        clients: Sequence[OpenAIChat | OpenAIEmbedder],
    ) -> None:
        self.config = config
        self.llm = llm
        self.judge = judge
        self.embedder = embedder
        self.template_version = template_version
        self.budget = budget
        self.cache = cache
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
        """USD spent so far under ``max_cost`` (0 without a budget)."""
        return self.budget.spent if self.budget is not None else 0.0

    def messages(self, question: str, contexts: Sequence[tuple[str, str]]) -> list[Message]:
        """The generation request for ``question`` over the top contexts."""
        top = list(contexts)[: self.n_contexts]
        return [{"role": "user", "content": self._template.render(**_context_vars(question, top))}]

    async def run_case(
        self,
        query: Query,
        contexts: Sequence[tuple[str, str]],
        metrics: Sequence[str],
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
        embeddings are not priced). Raises ``ValueError`` for an unknown metric name only.
        """
        wanted = _check_metrics(metrics)
        top = [(str(d), str(t)) for d, t in list(contexts)[: self.n_contexts]]
        meter = _Meter()
        token = self._meter.set(meter)
        try:
            return await self._run_case(query, top, wanted, run, meter)
        finally:
            self._meter.reset(token)

    async def _run_case(self, query: Query, top: list[tuple[str, str]], wanted: list[str],
                        run: int, meter: _Meter) -> dict[str, Any]:
        scores: dict[str, float | None] = {m: None for m in wanted}
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
            references = [r for r in query.reference_answers if r.strip()]
            for name in wanted:
                spec = ANSWER_METRICS.get(name)
                if spec is not None:
                    scores[name] = clean_float(spec.fn(answer, references, bool(references)))
            judged = [m for m in wanted if m in JUDGED_METRICS]
            if judged:
                await self._judge(query, answer, top, references, judged, scores, verdicts,
                                  errors)
        return {
            "answer": answer,
            "contexts": [d for d, _ in top],
            "metrics": scores,
            "judge": jsonable(verdicts),
            "usage": meter.usage(),
            "cost": meter.cost,
            "errors": errors,
        }

    async def _judge(
        self,
        query: Query,
        answer: str,
        top: list[tuple[str, str]],
        references: list[str],
        judged: list[str],
        scores: dict[str, float | None],
        verdicts: dict[str, Any],
        errors: dict[str, str],
    ) -> None:
        if self.judge is None:
            for name in judged:
                errors[name] = f"{name} needs a judge; add a 'judge:' section to the suite"
            return
        item = JudgeInput(
            question=query.text,
            answer=answer,
            contexts=tuple(t for _, t in top),
            # the judge compares against one reference; the dataset's first is canonical
            reference=references[0] if references else None,
        )
        try:
            result = await self.judge.evaluate(item, judged)
        except (LLMError, RagbenchError) as exc:  # e.g. the cache file became unwritable
            for name in judged:
                errors[name] = str(exc) or type(exc).__name__
            return
        for name in judged:
            scores[name] = clean_float(result.scores.get(name))
        verdicts.update(result.verdicts)
        errors.update(result.errors)

    # -- synchronous API on the pipeline's own loop ------------------------------------------

    @property
    def prefetcher(self) -> Prefetcher:
        """The pipeline's :class:`Prefetcher` (created on first use)."""
        with self._prefetcher_lock:
            if self._closed:
                raise RuntimeError("the pipeline is closed")
            if self._prefetcher is None:
                self._prefetcher = Prefetcher(self.config.llm.concurrency)
            return self._prefetcher

    def submit(self, key: Hashable, query: Query, contexts: Sequence[tuple[str, str]],
               metrics: Sequence[str], run: int = 0) -> bool:
        """Start :meth:`run_case` for ``key`` in the background; see :meth:`Prefetcher.submit`."""
        request = CaseRequest(query, tuple(contexts), tuple(metrics), run)
        _check_metrics(request.metrics)  # fail in the caller, not in the background
        return self.prefetcher.submit(key, lambda: self.run_case(
            request.query, request.contexts, request.metrics, request.run))

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
        value: dict[str, Any] = self.prefetcher.result(key, timeout)
        return value

    def run_case_sync(self, query: Query, contexts: Sequence[tuple[str, str]],
                      metrics: Sequence[str], run: int = 0) -> dict[str, Any]:
        """:meth:`run_case` on the pipeline's own loop, waiting for it."""
        return self.prefetcher.call(lambda: self.run_case(query, contexts, metrics, run))

    # -- teardown ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP clients and the cache (from the loop that used the clients)."""
        clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # teardown must not mask results
                await client.aclose()
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
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> RagPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- building --------------------------------------------------------------------------------


def _endpoint_kwargs(endpoint: EndpointConfig) -> dict[str, Any]:
    limiter = (RateLimiter(endpoint.rpm, endpoint.tpm)
               if endpoint.rpm is not None or endpoint.tpm is not None else None)
    return {
        "api_key_env": endpoint.api_key_env,
        "headers": dict(endpoint.headers),
        "timeout": endpoint.timeout,
        "params": dict(endpoint.params),
        "concurrency": endpoint.concurrency,
        "retry": RetryPolicy(max_attempts=endpoint.retries + 1, base_delay=endpoint.backoff),
        "rate_limiter": limiter,
    }


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
) -> RagPipeline:
    """Build the LLM(s), cache, budget, judge and embedder that ``config`` describes.

    Relative paths (cache, template file) are resolved against ``base_dir`` (the suite's
    directory). ``cache_path_override`` / ``cache_mode_override`` come from the command line.
    Raises ``ValueError("key.path: ...")`` when something cannot be built (an unset API key
    variable, a model without a price, an unreadable or broken template). No request is sent.
    """
    prefix = config.key_prefix
    base_dir = Path(base_dir)
    mode = cache_mode_override or config.cache.mode
    if mode not in CACHE_MODES:
        raise ValueError(f"cache mode {mode!r} is not one of {', '.join(CACHE_MODES)}")

    template_key = _path(prefix, "generation")
    text = _template_text(config.generation, base_dir, template_key)
    try:
        template = _environment().from_string(text)
        # render once so a misspelt variable fails now rather than in every case
        template.render(**_context_vars("q", [("d", "t")]))
    except jinja2.TemplateError as exc:
        which = "template_file" if config.generation.template_file else "template"
        raise _fail(f"{template_key}.{which}", f"bad Jinja2 template: {exc}") from None
    version = template_version(text)

    clients: list[OpenAIChat | OpenAIEmbedder] = []
    cache: ResponseCache | None = None
    try:
        if mode != "off":
            path = Path(cache_path_override or config.cache.path)
            cache = ResponseCache(path if path.is_absolute() else base_dir / path, mode)
        budget = CostBudget(config.max_cost) if config.max_cost is not None else None
        meter: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar(
            "ragbench_case_meter", default=None
        )

        def provider(llm_config: LlmConfig, key: str) -> tuple[LLM, ProviderId, str | None]:
            """The budgeted provider, its identity and its priced model (None when free)."""
            if llm_config.type == "extractive":
                extractive = ExtractiveLLM(threshold=llm_config.threshold,
                                           max_sentences=llm_config.max_sentences)
                return extractive, extractive.provider_id, None
            assert llm_config.endpoint is not None
            endpoint = llm_config.endpoint
            client = _component(key, lambda: OpenAIChat(
                endpoint.base_url, endpoint.model, **_endpoint_kwargs(endpoint)))
            clients.append(client)
            if config.prices is not None:
                try:
                    config.prices.price(endpoint.model)
                except LLMError as exc:
                    raise _fail(_path(prefix, "prices"), str(exc)) from None
            inner: LLM = client
            if budget is not None and config.prices is not None:
                inner = BudgetedLLM(client, budget, config.prices, model=endpoint.model)
            return inner, client.provider_id, endpoint.model

        def finish(inner: LLM, pid: ProviderId, model: str | None, version: str) -> LLM:
            wrapped: LLM = inner
            # a free provider (model None) is offline and deterministic: caching gains nothing
            if cache is not None and model is not None:
                wrapped = CachedLLM(inner, cache, provider_id=pid, template_version=version)
            return _MeteredLLM(wrapped, meter, config.prices, model)

        gen_inner, gen_id, gen_model = provider(config.llm, _path(prefix, "llm"))
        llm = finish(gen_inner, gen_id, gen_model, version)

        embedder: Embedder | None = None
        if config.embedder is not None and config.embedder.type == "hashing":
            embedder = HashingEmbedder(config.embedder.dim)
        elif config.embedder is not None:
            assert config.embedder.endpoint is not None
            ep = config.embedder.endpoint
            emb = _component(_path(prefix, "embedder"), lambda: OpenAIEmbedder(
                ep.base_url, ep.model, batch_size=ep.batch_size, **_endpoint_kwargs(ep)))
            clients.append(emb)
            embedder = (CachedEmbedder(emb, cache, provider_id=emb.provider_id)
                        if cache is not None else emb)

        judge: Judge | None = None
        if config.judge is not None:
            if config.judge.llm is None:  # "same": share the client, budget and price
                j_inner, j_id, j_model = gen_inner, gen_id, gen_model
            else:
                j_inner, j_id, j_model = provider(config.judge.llm, _path(prefix, "judge", "llm"))
            judge = Judge(
                finish(j_inner, j_id, j_model, TEMPLATE_VERSION),
                embedder,
                mode=config.judge.mode,
                n_questions=config.judge.n_questions,
                params={"seed": config.seed, **config.judge.params},
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
    )


def _close_quietly(clients: Sequence[OpenAIChat | OpenAIEmbedder],
                   cache: ResponseCache | None) -> None:
    async def close_all() -> None:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    if clients:
        with contextlib.suppress(Exception):  # a half-built pipeline; the real error matters
            asyncio.run(close_all())
    if cache is not None:
        cache.close()


# -- repeated runs ---------------------------------------------------------------------------


def flaky_summary(values_by_run: Sequence[float | None], *, threshold: float = 0.5
                  ) -> dict[str, Any]:
    """How much one case's metric moved across repeated runs (``runs: N``).

    Returns ``{"runs", "values", "missing", "mean", "min", "max", "spread", "pass_rate",
    "flips"}``: ``spread`` is max - min over the computed values, ``pass_rate`` the share
    of them ``>= threshold``, and ``flips`` whether that pass/fail verdict differs between
    runs. Missing (None/NaN) values are counted, not used; all-missing gives None statistics.
    """
    values = [clean_float(v) for v in values_by_run]
    present = [v for v in values if v is not None]
    summary: dict[str, Any] = {
        "runs": len(values),
        "values": values,
        "missing": len(values) - len(present),
        "mean": None,
        "min": None,
        "max": None,
        "spread": None,
        "pass_rate": None,
        "flips": False,
    }
    if present:
        passes = [v >= threshold for v in present]
        summary.update(
            mean=sum(present) / len(present),
            min=min(present),
            max=max(present),
            spread=max(present) - min(present),
            pass_rate=sum(passes) / len(passes),
            flips=len(set(passes)) > 1,
        )
    return summary
