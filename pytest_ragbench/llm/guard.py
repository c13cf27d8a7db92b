"""The call wrapper of registered providers: retries, breaker, timeouts, limits and the budget.

The built-in OpenAI clients do all of this around each HTTP request. A provider from the
registry (a conftest registration, an entry point, ``package.module:Factory``) knows nothing
of it, so every call to it goes through a :class:`CallGuard`, which gives it the same
treatment: a circuit breaker, a slot of its run-wide pool (concurrency, ``rpm``, ``tpm`` and
the spending cap, shared with every worker) or, without a run budget, a local semaphore and
rate limiter, a per-attempt ``timeout``, a ``case_timeout`` for the whole call, and retries
with exponential backoff and jitter (or the provider's ``retry_after``).

What is retried (:func:`classify`):

* :class:`~pytest_ragbench.llm.base.ProviderError` with ``retryable`` true (by default:
  ``status`` 408, 429 or 5xx);
* any exception with an integer ``status_code`` or ``status`` attribute (the OpenAI and
  Anthropic SDKs' status errors, ``httpx.HTTPStatusError`` through its ``response``) whose
  status is 408, 429 or 5xx; a ``Retry-After`` header of its ``response`` is honoured;
* timeouts and dropped connections: ``TimeoutError``, ``ConnectionError``, httpx's transport
  errors, and the SDKs' ``APIConnectionError`` / ``APITimeoutError``.

Anything else fails the call at once. Every failure leaves the wrapper as an
:class:`~pytest_ragbench.llm.base.LLMError` naming the provider, so a case records it as its
error and the run goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from ..budget.api import RunBudget
from ..budget.limits import Adaptive
from ..budget.wiring import outcome_of
from ..errors import exception_text
from . import deadline
from .base import LLM, Completion, Embedder, LLMError, Message, ProviderError, Usage
from .resilience import (
    CircuitBreaker,
    RateLimiter,
    RetryPolicy,
    Sleep,
    attempt_timed_out,
    is_retryable_status,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Suite keys of a registered provider that configure this wrapper, not the factory.
GUARD_KEYS = ("concurrency", "retries", "backoff", "rpm", "tpm", "timeout", "case_timeout")

# What the OpenAI and Anthropic SDKs call a dropped connection and a timeout.
_TRANSIENT_NAMES = frozenset({"APIConnectionError", "APITimeoutError"})


@dataclass(frozen=True)
class CallLimits:
    """How a provider is called: the suite keys of :data:`GUARD_KEYS`.

    ``concurrency`` is fixed unless ``adaptive`` is set (``concurrency: auto``); ``retries``
    counts retries after the first attempt; ``backoff`` is the base delay in seconds;
    ``timeout`` bounds one attempt and ``case_timeout`` one whole call (None: unbounded).
    """

    concurrency: int = 16
    adaptive: Adaptive | None = None
    retries: int = 4
    backoff: float = 0.5
    rpm: float | None = None
    tpm: float | None = None
    timeout: float | None = None
    case_timeout: float | None = None


@dataclass(frozen=True)
class Failure:
    """One failed attempt as the wrapper sees it."""

    message: str
    retryable: bool
    outcome: str  # the run budget's lease outcome: "throttled", "timeout" or "error"
    retry_after: float | None = None

    @property
    def endpoint_fault(self) -> bool:
        """Whether it counts against the breaker: a 429 is an answer from a live provider."""
        return self.retryable and self.outcome != "throttled"


def _status(exc: BaseException) -> int | None:
    for owner in (exc, getattr(exc, "response", None)):
        for name in ("status_code", "status"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    headers = getattr(getattr(exc, "response", None), "headers", None)
    getter = getattr(headers, "get", None)
    if callable(getter):
        try:
            header = getter("retry-after")
        except Exception:  # a headers object of some other shape: no hint
            return None
        return parse_retry_after(header) if isinstance(header, str) else None
    return None


def _transient(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, TimeoutError | ConnectionError | httpx.TransportError):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def describe_exception(exc: BaseException) -> str:
    """``ValueError: text`` for a foreign exception; an LLMError's own message as it is."""
    if isinstance(exc, LLMError) and str(exc):
        return str(exc)
    status = getattr(exc, "status", None) if isinstance(exc, ProviderError) else None
    if isinstance(status, int) and not isinstance(status, bool):
        # all it says of what went wrong, and why it was (or was not) retried
        return f"{type(exc).__name__} (status {status})"
    return exception_text(exc)


def classify(exc: BaseException) -> Failure:
    """What a provider's exception means for the retry loop (see the module docs)."""
    message = describe_exception(exc)
    if isinstance(exc, ProviderError):
        return Failure(message, bool(exc.retryable), outcome_of(exc.status or None),
                       _retry_after(exc))
    status = _status(exc)
    if status is not None:
        return Failure(message, is_retryable_status(status), outcome_of(status),
                       _retry_after(exc))
    if _transient(exc):
        timed_out = isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__
        return Failure(message, True, "timeout" if timed_out else "error")
    return Failure(message, False, "error")


@dataclass(frozen=True)
class _Outcome:
    value: Any = None
    failure: Failure | None = None


class CallGuard:
    """Runs a provider's calls under retries, breaker, limits and the budget (module docs).

    ``name`` (e.g. ``llm 'mine'``) starts every message. With ``run_budget`` and ``pool`` each
    attempt holds one lease of that declared pool (``cost_key`` / ``cost_of`` refuse calls
    past the cap and charge each reply's cost); without, a local semaphore of
    ``limits.concurrency`` and a rate limiter of ``limits.rpm`` / ``limits.tpm``.
    """

    def __init__(
        self,
        name: str,
        limits: CallLimits = CallLimits(),
        *,
        run_budget: RunBudget | None = None,
        pool: str | None = None,
        cost_key: str | None = None,
        cost_of: Callable[[Usage], float] | None = None,
        breaker: CircuitBreaker | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if run_budget is not None and not pool:
            raise ValueError("a run budget needs the pool to draw from")
        if limits.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {limits.concurrency}")
        self.name = name
        self.limits = limits
        self._retry = RetryPolicy(max_attempts=limits.retries + 1, base_delay=limits.backoff)
        self._breaker = breaker if breaker is not None else CircuitBreaker()
        self._budget = run_budget
        self._pool = pool or ""
        self._cost_key = cost_key
        self._cost_of = cost_of
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(limits.concurrency)
        self._limiter = (RateLimiter(limits.rpm, limits.tpm)
                         if run_budget is None and (limits.rpm or limits.tpm) else None)
        self.attempts = 0  # attempts made over this guard's life (retries included)

    def __repr__(self) -> str:
        return f"CallGuard({self.name}, {self.limits})"

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def call(self, fn: Callable[[], Awaitable[T]], *, tokens: int = 0,
                   usage_of: Callable[[T], Usage] | None = None) -> tuple[T, int]:
        """``await fn()`` with retries; its value and the number of attempts it took.

        ``tokens`` estimates the request for ``tpm``; ``usage_of(value)`` gives the real
        usage of a reply (or the provider's estimate, said by ``Usage.estimated``), to settle
        the estimate and price the call.
        """
        limit = self.limits.case_timeout
        if limit is None:
            return await self._retrying(fn, tokens, usage_of)
        try:
            return await deadline.within(limit, lambda: self._retrying(fn, tokens, usage_of),
                                         blames_calls=True)
        except TimeoutError:
            raise LLMError(f"{self.name} timed out: the call took longer than case_timeout "
                           f"{limit:g} s (retries included; waiting for a slot is not "
                           f"counted)") from None

    async def _retrying(self, fn: Callable[[], Awaitable[T]], tokens: int,
                        usage_of: Callable[[T], Usage] | None) -> tuple[T, int]:
        with deadline.call():
            attempt = 0
            while True:
                attempt += 1
                await self._breaker.before_call(self.name)
                try:
                    self.attempts += 1
                    outcome = await self._attempt(fn, tokens, usage_of)
                except BaseException:
                    self._breaker.record_abort()
                    raise
                failure = outcome.failure
                if failure is None:
                    await self._breaker.record_success()
                    return outcome.value, attempt
                if failure.endpoint_fault:
                    await self._breaker.record_failure(failure.message)
                else:
                    await self._breaker.record_success()
                if not failure.retryable:
                    raise LLMError(f"{self.name} failed: {failure.message}")
                if attempt >= self._retry.max_attempts:
                    raise LLMError(f"{self.name} failed after {attempt} attempt"
                                   f"{'' if attempt == 1 else 's'}: "
                                   f"{failure.message}")
                delay = self._retry.delay(attempt, failure.retry_after, self._rng)
                logger.info("%s attempt %d/%d failed (%s); retrying in %.2f s", self.name, attempt,
                            self._retry.max_attempts, failure.message, delay)
                await self._sleep(delay)

    async def _invoke(self, fn: Callable[[], Awaitable[T]]) -> _Outcome:
        timeout = self.limits.timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            value = await (fn() if timeout is None else asyncio.wait_for(fn(), timeout))
        except (asyncio.TimeoutError, TimeoutError) as exc:
            if timeout is None:
                return _Outcome(failure=classify(exc))
            return _Outcome(failure=Failure(attempt_timed_out(timeout), True, "timeout"))
        except Exception as exc:
            return _Outcome(failure=classify(exc))
        if timeout is not None and loop.time() - started > timeout:
            # a reply past the timeout that wait_for let through: the provider blocked the
            # loop (a synchronous call inside ``async def``) or answered after its
            # cancellation
            return _Outcome(failure=Failure(attempt_timed_out(timeout), True, "timeout"))
        return _Outcome(value=value)

    async def _attempt(self, fn: Callable[[], Awaitable[T]], tokens: int,
                       usage_of: Callable[[T], Usage] | None) -> _Outcome:
        if self._budget is None:
            with deadline.waiting_for_slot():
                if self._limiter is not None:
                    await self._limiter.acquire(tokens)
                await self._semaphore.acquire()
            try:
                outcome = await self._invoke(fn)
            finally:
                self._semaphore.release()
            if self._limiter is not None and outcome.failure is None and usage_of is not None:
                usage = usage_of(outcome.value)
                self._limiter.adjust(usage.prompt_tokens + usage.completion_tokens - tokens)
            return outcome
        with deadline.waiting_for_slot():
            lease = await self._budget.acquire(self._pool, tokens=tokens,
                                               cost_key=self._cost_key,
                                               hold=self.limits.timeout)
        try:
            outcome = await self._invoke(fn)
        except BaseException:
            # cancelled at a time limit: too slow (the adaptive level backs off on it);
            # otherwise abandoned, which says nothing about the provider
            lease.release("timeout" if deadline.expired() else "aborted")
            raise
        if outcome.failure is not None:
            failure = outcome.failure
            lease.release(failure.outcome, retry_after=failure.retry_after, fault=(
                (self._breaker.failure_threshold, self._breaker.reset_timeout,
                 f"{failure.message}; {self.name}") if failure.endpoint_fault else None))
            return outcome
        used: int | None = None
        usd: float | None = None
        estimated = False
        try:
            if usage_of is not None:
                usage = usage_of(outcome.value)
                used = usage.prompt_tokens + usage.completion_tokens
                estimated = usage.estimated is True
                if self._cost_of is not None:
                    # charged with the release, in one step, as the built-in clients do
                    usd = self._cost_of(Usage(usage.prompt_tokens, usage.completion_tokens, 1,
                                              estimated))
        except BaseException:
            lease.release("error")  # the slot is given back whatever went wrong
            raise
        lease.release("ok", tokens_used=used, usd=usd, estimated=estimated)
        return outcome


def _count(value: Any) -> int | None:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        return None
    return int(value) if value >= 0 else None


def counted_usage(usage: Any) -> Usage:
    """A provider's ``Completion.usage`` with its token counts as ``int``; raises
    :class:`LLMError` (not retried: the provider would count the same way again) when it is
    not a :class:`Usage` of whole numbers >= 0, which neither ``tpm`` nor the costs and
    ``max_cost`` could count."""
    if isinstance(usage, Usage):
        prompt, completion = _count(usage.prompt_tokens), _count(usage.completion_tokens)
        if prompt is not None and completion is not None:
            return Usage(prompt, completion, usage.requests, estimated=usage.estimated is True)
    raise LLMError(f"returned a usage of {usage!r}, expected Usage(prompt_tokens, "
                   "completion_tokens) of whole numbers >= 0")


async def _awaited(result: Any, method: str) -> Any:
    """The awaited result of a provider's ``method``; a plain value (a synchronous ``def``)
    is a clear error, not retried: Python's own reads "object Completion can't be used in
    'await' expression" and does not say what to change."""
    if not inspect.isawaitable(result):
        raise LLMError(f"{method}() returned {type(result).__name__}, not an awaitable: define "
                       f"{method} with async def")
    return await result


def estimate_tokens(messages: Sequence[Message], max_tokens: Any = None) -> int:
    """A request's token estimate for rate limiting: ~4 characters a token, plus the reply."""
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    reply = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) \
        and max_tokens > 0 else 0
    return chars // 4 + 1 + reply


async def _close(component: Any) -> None:
    for name in ("aclose", "close"):
        method = getattr(component, name, None)
        if callable(method):
            result = method()
            if asyncio.iscoroutine(result):
                await result
            return


class GuardedLLM:
    """A registered :class:`~pytest_ragbench.llm.base.LLM` called through a :class:`CallGuard`.

    The returned ``Completion.usage.requests`` is the number of attempts the call took.
    """

    def __init__(self, inner: LLM, guard: CallGuard) -> None:
        self.inner = inner
        self.guard = guard

    def __repr__(self) -> str:
        return f"GuardedLLM({self.inner!r})"

    @property
    def provider_id(self) -> Any:
        return getattr(self.inner, "provider_id", None)

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Call the provider under the guard; raise LLMError for good."""

        async def once() -> Completion:
            completion = await _awaited(self.inner.chat(messages, **params), "chat")
            if not isinstance(completion, Completion):
                # not retryable: the same provider will return the same kind of thing again
                raise LLMError(f"returned {type(completion).__name__}, expected a "
                               "pytest_ragbench.llm.base.Completion")
            # checked inside the attempt: a usage that cannot be counted fails it, and its
            # slot is given back, rather than failing to price it after the attempt
            return replace(completion, usage=counted_usage(completion.usage))

        estimate = estimate_tokens(messages, params.get("max_tokens"))
        completion, attempts = await self.guard.call(
            once, tokens=estimate,
            usage_of=lambda c: c.usage)
        return replace(completion, usage=Usage(completion.usage.prompt_tokens,
                                               completion.usage.completion_tokens, attempts,
                                               completion.usage.estimated))

    async def aclose(self) -> None:
        """Close the provider (its ``aclose`` or ``close``) if it has one."""
        await _close(self.inner)


class GuardedEmbedder:
    """A registered :class:`~pytest_ragbench.llm.base.Embedder` called through a
    :class:`CallGuard` (one guarded call per ``embed``); the result's shape is checked."""

    def __init__(self, inner: Embedder, guard: CallGuard) -> None:
        self.inner = inner
        self.guard = guard

    def __repr__(self) -> str:
        return f"GuardedEmbedder({self.inner!r})"

    @property
    def provider_id(self) -> Any:
        return getattr(self.inner, "provider_id", None)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The provider's embeddings of ``texts``, float32 ``(len(texts), d)``."""
        texts = list(texts)

        async def once() -> np.ndarray:
            array = np.asarray(await _awaited(self.inner.embed(texts), "embed"),
                               dtype=np.float32)
            if array.ndim != 2 or array.shape[0] != len(texts):
                raise LLMError(f"returned an array of shape {array.shape} for {len(texts)} "
                               "texts, expected (n, d)")
            return array

        estimate = sum(len(t) for t in texts) // 4 + 1
        array, _ = await self.guard.call(once, tokens=estimate)
        return array

    async def aclose(self) -> None:
        """Close the embedder (its ``aclose`` or ``close``) if it has one."""
        await _close(self.inner)
