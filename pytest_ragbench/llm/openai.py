"""Chat and embedding clients for OpenAI-compatible HTTP endpoints (OpenAI, vLLM, llama.cpp...).

Each instance owns one ``httpx.AsyncClient`` (one connection pool) and must be used from one
event loop; close it with ``await client.aclose()`` or ``async with``. Every request goes
through, in order: the circuit breaker, the rate limiter, the concurrency semaphore and a
per-request timeout; failed attempts are retried according to the :class:`RetryPolicy`.

Given a run budget (``run_budget`` and its ``pool``), the rate limiter and semaphore are
replaced by one lease of that budget per attempt, shared with every other client and worker
of the run: it holds concurrency, rpm, tpm and, with ``cost_key``, the spending cap for the
whole run, and each release tells the adaptive controller what happened (429, timeout,
Retry-After). The circuit breaker stays per instance.

Secrets: the API key is read from the environment variable *named* by ``api_key_env`` and
header values may be ``${ENV_NAME}`` references. Those values live only inside the HTTP
client's headers; every message this module produces (exceptions, logs, breaker reasons) is
scrubbed of them, and of any 8-character run of them, because servers sometimes echo the key
back (whole or in part) in their error bodies; a body is scrubbed before it is cut to an excerpt
(:mod:`pytest_ragbench.redact`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import numpy as np

from ..budget.api import RunBudget
from ..budget.wiring import outcome_of
from ..errors import ComponentError, exception_text
from ..http_headers import env_value, expand_env
from ..redact import Redactor, header_secrets
from ..tls import ssl_context_for
from . import deadline
from .base import Completion, LLMError, Message, ProviderError, Usage
from .identity import ProviderId, strip_credentials
from .resilience import (
    CircuitBreaker,
    RateLimiter,
    RetryPolicy,
    Sleep,
    attempt_timed_out,
    is_retryable_status,
    parse_retry_after,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ERROR_DETAIL_CHARS = 300


class _BadReply(Exception):
    """A 2xx reply whose JSON does not have the expected shape."""


def _env_value(name: str, where: str) -> str:
    try:
        return env_value(name, where)
    except ValueError as exc:
        raise ComponentError(str(exc)) from None


def _resolve_header(name: str, value: str) -> tuple[str, list[str]]:
    """Substitute ``${ENV}`` references; return the value and the substituted (secret) parts."""
    try:
        return expand_env(value, f"headers.{name}")
    except ValueError as exc:
        raise ComponentError(str(exc)) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _estimate_tokens(messages: Sequence[Message], max_tokens: Any) -> int:
    # ~4 characters per token is the usual rule of thumb; only used for rate limiting
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    completion = max_tokens if _is_int(max_tokens) else 0
    return chars // 4 + 1 + completion


@dataclass(frozen=True)
class _Attempt:
    """The outcome of one HTTP attempt."""

    value: Any = None
    failure: str = ""  # empty when the attempt succeeded
    retryable: bool = False
    endpoint_fault: bool = False  # counts against the circuit breaker
    retry_after: float | None = None
    status: int | None = None  # the HTTP status, None when no response came
    timed_out: bool = False


class _OpenAIEndpoint:
    """Transport, secrets and resilience shared by the chat and embedding clients."""

    _kind: ClassVar[str] = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        params: Mapping[str, Any] | None = None,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        rate_limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        run_budget: RunBudget | None = None,
        pool: str | None = None,
        cost_key: str | None = None,
        cost_of: Callable[[Usage], float] | None = None,
        case_timeout: float | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not base_url:
            raise ComponentError("base_url: must not be empty")
        if not model:
            raise ComponentError("model: must not be empty")
        if timeout <= 0:
            raise ComponentError(f"timeout: must be > 0 seconds, got {timeout}")
        if concurrency < 1:
            raise ComponentError(f"concurrency: must be >= 1, got {concurrency}")
        if case_timeout is not None and case_timeout <= 0:
            raise ComponentError(f"case_timeout: must be > 0 seconds, got {case_timeout}")
        if run_budget is not None and not pool:
            raise ComponentError("pool: a run budget needs the pool to draw from")
        secrets: list[str] = []
        request_headers: dict[str, str] = {}
        if api_key_env is not None:
            key = _env_value(api_key_env, "api_key_env")
            secrets.append(key)
            request_headers["Authorization"] = f"Bearer {key}"
        for name, raw in (headers or {}).items():
            value, resolved = _resolve_header(name, str(raw))
            secrets.extend(header_secrets(name, value, resolved))
            request_headers[name] = value
        auth: tuple[str, str] | None = None
        parts = urlsplit(base_url)
        if parts.username or parts.password:
            # credentials in the URL become basic auth so that URLs in logs stay clean
            auth = (unquote(parts.username or ""), unquote(parts.password or ""))
            secrets.extend(s for s in auth if s)
        self._redact = Redactor(secrets)
        self.model = model
        self._endpoint = strip_credentials(base_url)
        self._timeout = float(timeout)
        self._params = dict(params or {})
        self._retry = retry if retry is not None else RetryPolicy()
        self._breaker = breaker if breaker is not None else CircuitBreaker()
        self._limiter = rate_limiter
        self._rng = rng if rng is not None else random.Random()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._budget = run_budget
        self._pool = pool or ""
        self._cost_key = cost_key
        self._cost_of = cost_of
        self._case_timeout = case_timeout
        self._sleep = sleep
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._requests = 0
        self._client_options: dict[str, Any] = {
            "headers": request_headers, "auth": auth, "transport": transport,
            "concurrency": max(concurrency, 1)}
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    @property
    def _client(self) -> httpx.AsyncClient:
        """The connection pool, made for the first request: a process that sends none (an
        xdist worker whose responses the controller's head start obtains) never imports
        httpx, about 70 ms of CPU while its siblings boot and the controller sends."""
        if self._http is None:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            import httpx

            options = self._client_options
            self._http = httpx.AsyncClient(
                headers=options["headers"],
                auth=options["auth"],
                # httpx's own timeout is a backstop; the overall per-request bound is wait_for
                timeout=httpx.Timeout(self._timeout),
                # with a run budget ``concurrency`` is the pool's level (or adaptive bound)
                limits=httpx.Limits(max_connections=options["concurrency"]),
                transport=options["transport"],
                verify=ssl_context_for(self._endpoint),
            )
        return self._http

    @property
    def base_url(self) -> str:
        """The endpoint URL without credentials."""
        return self._endpoint

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def provider_id(self) -> ProviderId:
        """Identity for cache keys: kind, endpoint, model and default params (no secrets)."""
        return ProviderId(self._kind, self._endpoint, self.model, self._params)

    @property
    def usage(self) -> Usage:
        """Totals over this instance's life: tokens of successful replies, every request sent."""
        return Usage(self._prompt_tokens, self._completion_tokens, self._requests)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._endpoint!r}, model={self.model!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        self._closed = True
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _scrub(self, text: str) -> str:
        return self._redact(text)

    def _error_detail(self, response: httpx.Response) -> str:
        text = response.text
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                text = error["message"]
            elif isinstance(error, str):
                text = error
        # scrubbed before the cut: a key cut in half would escape the whole-key replacement
        return self._redact.excerpt(text, _ERROR_DETAIL_CHARS, collapse=True) or "(empty body)"

    async def _send(self, url: str, body: dict[str, Any]) -> httpx.Response | _Attempt:
        """POST once within the per-attempt timeout: the response, or the failed attempt."""
        import httpx  # imported by the client's making, named here for its errors

        try:
            return await asyncio.wait_for(self._client.post(url, json=body), self._timeout)
        except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
            return _Attempt(
                failure=attempt_timed_out(self._timeout),
                retryable=True,
                endpoint_fault=True,
                timed_out=True,
            )
        except httpx.TransportError as exc:
            return _Attempt(
                failure=f"connection error ({exception_text(exc)})",
                retryable=True,
                endpoint_fault=True,
            )
        except Exception as exc:
            # httpx maps httpcore's errors by class; when httpcore was imported twice (a
            # reloaded module set) one slips through unmapped. It is still a dropped
            # connection, not a bug of the caller.
            if not type(exc).__module__.startswith(("httpcore", "h11")):
                raise
            return _Attempt(
                failure=f"connection error ({exception_text(exc)})",
                retryable=True,
                endpoint_fault=True,
            )

    async def _attempt(self, url: str, body: dict[str, Any], parse: Callable[[Any], T],
                       estimated_tokens: int = 0,
                       usage_of: Callable[[Any], Usage] | None = None) -> _Attempt:
        if self._budget is None:
            with deadline.waiting_for_slot():
                await self._semaphore.acquire()
            try:
                sent = await self._send(url, body)
            finally:
                self._semaphore.release()
            return sent if isinstance(sent, _Attempt) else self._interpret(sent, parse)
        with deadline.waiting_for_slot():
            lease = await self._budget.acquire(self._pool, tokens=estimated_tokens,
                                               cost_key=self._cost_key, hold=self._timeout)
        try:
            sent = await self._send(url, body)
            if isinstance(sent, _Attempt):
                lease.release(outcome_of(None, timed_out=sent.timed_out),
                              fault=self._fault(sent))
                return sent
            outcome = self._interpret(sent, parse)
        except BaseException:
            # cancelled at a time limit: the endpoint was too slow for it (the limit does not
            # count the wait for this slot), which the adaptive level backs off on; otherwise
            # (abandoned, or a bug) it says nothing about the endpoint; either frees the slot
            lease.release("timeout" if deadline.expired() else "aborted")
            raise
        tokens: int | None = None
        usd: float | None = None
        estimated = False
        if not outcome.failure and usage_of is not None:
            usage = usage_of(outcome.value)
            tokens = usage.prompt_tokens + usage.completion_tokens
            estimated = usage.estimated
            if self._cost_of is not None:
                # charged with the release, in one step: no request is admitted while a
                # finished call's cost is still unknown
                usd = self._cost_of(usage)
        lease.release(outcome_of(outcome.status), retry_after=outcome.retry_after,
                      tokens_used=tokens, usd=usd, fault=self._fault(outcome),
                      estimated=estimated)
        return outcome

    def _fault(self, outcome: _Attempt) -> tuple[int, float, str] | None:
        """What the run's breaker of the pool counts of a failed attempt (see
        :meth:`~pytest_ragbench.budget.api.Lease.release`)."""
        if not outcome.endpoint_fault:
            return None
        return (self._breaker.failure_threshold, self._breaker.reset_timeout,
                f"{self._scrub(outcome.failure)}; endpoint {self._endpoint}")

    def _interpret(self, response: httpx.Response, parse: Callable[[Any], T]) -> _Attempt:
        status = response.status_code
        if not 200 <= status <= 299:
            retryable = is_retryable_status(status)
            return _Attempt(
                failure=f"HTTP {status}: {self._error_detail(response)}",
                retryable=retryable,
                # 429 and other 4xx are answers from a live endpoint, not outages
                endpoint_fault=retryable and status != 429,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                status=status,
            )
        raw = response.text
        try:
            data = json.loads(raw)
        except ValueError as exc:
            truncated = isinstance(exc, json.JSONDecodeError) and exc.pos >= len(raw.rstrip())
            kind = "truncated" if truncated else "malformed"
            return _Attempt(
                failure=f"{kind} JSON in reply body ({exc}; {len(raw)} chars)",
                retryable=True,
                endpoint_fault=True,
                status=status,
            )
        try:
            value = parse(data)
        except _BadReply as exc:
            return _Attempt(failure=f"unexpected reply: {exc}", endpoint_fault=True,
                            status=status)
        return _Attempt(value=value, status=status)

    async def _request(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[Any], T],
        estimated_tokens: int,
        usage_of: Callable[[Any], Usage] | None = None,
    ) -> tuple[T, int]:
        """POST with retries; return the parsed value and the number of requests it took.

        With ``case_timeout`` the whole call (attempts and backoff, not the waits for the
        run's slots) is bounded too; past it the call fails with an error naming that limit.
        """
        if self._case_timeout is None:
            return await self._retrying(path, body, parse, estimated_tokens, usage_of)
        try:
            return await deadline.within(
                self._case_timeout,
                lambda: self._retrying(path, body, parse, estimated_tokens, usage_of),
                blames_calls=True)
        except TimeoutError:
            raise LLMError(f"POST {self._endpoint + path} timed out: the call took longer "
                           f"than case_timeout {self._case_timeout:g} s (retries included; "
                           f"waiting for a slot is not counted)") from None

    async def _retrying(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[Any], T],
        estimated_tokens: int,
        usage_of: Callable[[Any], Usage] | None,
    ) -> tuple[T, int]:
        with deadline.call():
            url = self._endpoint + path
            attempt = 0
            while True:
                attempt += 1
                await self._breaker.before_call(self._endpoint)
                try:
                    if self._limiter is not None and self._budget is None:
                        with deadline.waiting_for_slot():
                            await self._limiter.acquire(estimated_tokens)
                    self._requests += 1
                    outcome = await self._attempt(url, body, parse, estimated_tokens, usage_of)
                except BaseException:
                    self._breaker.record_abort()
                    raise
                if not outcome.failure:
                    await self._breaker.record_success()
                    return outcome.value, attempt
                failure = self._scrub(outcome.failure)
                if outcome.endpoint_fault:
                    was_open = self._breaker.state == "open"
                    await self._breaker.record_failure(failure)
                    if self._budget is not None and not was_open \
                            and self._breaker.state == "open":
                        # one breaker for the run: the other workers stop sending too
                        self._budget.trip(self._pool, self._breaker.reset_timeout,
                                          f"{failure}; endpoint {self._endpoint}")
                else:
                    await self._breaker.record_success()
                # the endpoint's answer, the same for any process that sends this request (the
                # run's exchange hands it over); not retryable any more
                if not outcome.retryable:
                    raise ProviderError(f"POST {url} failed: {failure}", retryable=False)
                if attempt >= self._retry.max_attempts:
                    raise ProviderError(f"POST {url} failed after {attempt} attempt"
                                        f"{'' if attempt == 1 else 's'}: {failure}",
                                        retryable=False)
                delay = self._retry.delay(attempt, outcome.retry_after, self._rng)
                logger.info(
                    "POST %s attempt %d/%d failed (%s); retrying in %.2f s",
                    url,
                    attempt,
                    self._retry.max_attempts,
                    failure,
                    delay,
                )
                await self._sleep(delay)


def _parse_chat(data: Any) -> tuple[str, Usage | None, str]:
    """The first choice's text, the reply's usage (None when it sends none) and model."""
    if not isinstance(data, dict):
        raise _BadReply(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _BadReply("'choices' is missing or empty")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise _BadReply("'choices[0].message' is missing")
    content = message.get("content")
    if not isinstance(content, str):
        raise _BadReply(
            f"'choices[0].message.content' is {type(content).__name__}, expected a string"
        )
    usage = data.get("usage")
    model = data.get("model")
    model = model if isinstance(model, str) else ""
    if usage is None:
        return content, None, model  # some compatible servers send none: estimated
    if not isinstance(usage, dict):
        raise _BadReply(f"'usage' is {type(usage).__name__}, expected an object")
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (_is_int(prompt) and _is_int(completion)):
        raise _BadReply("'usage.prompt_tokens'/'usage.completion_tokens' are not counts")
    return content, Usage(prompt, completion, 1), model


def _chat_tokens(value: tuple[str, Usage, str]) -> Usage:
    usage = value[1]
    return Usage(usage.prompt_tokens, usage.completion_tokens, 1, usage.estimated)


def _embedding_tokens(value: tuple[np.ndarray, int, bool]) -> Usage:
    return Usage(value[1], 0, 1, value[2])


class OpenAIChat(_OpenAIEndpoint):
    """An :class:`~pytest_ragbench.llm.base.LLM` over ``POST {base_url}/chat/completions``.

    Args:
        base_url: endpoint root including the version, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent with every request.
        api_key_env: NAME of the environment variable holding the API key (read now; a
            named but unset variable is an error). ``None`` sends no Authorization header.
        headers: extra headers; values may contain ``${ENV_NAME}`` references.
        timeout: seconds allowed per request (each attempt), default 60.
        params: default request parameters (temperature, max_tokens, seed, ...); per-call
            ``chat(..., **params)`` override them.
        concurrency: maximum requests in flight from this instance, default 16 (with a run
            budget: only the size of the connection pool).
        retry, breaker, rate_limiter: resilience settings (defaults: ``RetryPolicy()``, a new
            ``CircuitBreaker()``, no rate limit).
        rng: random source for backoff jitter; transport: an httpx transport (tests).
        sleep: how the client waits between attempts (default ``asyncio.sleep``; tests).
        run_budget, pool: draw every attempt from this declared pool of the run's budget
            instead of the local semaphore and rate limiter.
        cost_key, cost_of: refuse calls once the run's cap ``cost_key`` is used up, and
            charge each reply's ``cost_of(usage)`` to it as its slot is released.
        case_timeout: seconds one ``chat`` call may take in all (retries included; its
            waits for a slot of the run's budget are not counted: see :mod:`.deadline`).

    ``Completion.usage.requests`` is the number of HTTP requests the call took (retries
    included); token counts are those of the successful reply.
    """

    _kind = "openai-chat"

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Send ``messages`` and return the first choice's text; raise LLMError for good."""
        merged = {**self._params, **params}
        body = {**merged, "model": self.model, "messages": [dict(m) for m in messages]}
        estimate = _estimate_tokens(messages, merged.get("max_tokens"))
        prompt_guess = _estimate_tokens(messages, None)

        def parse(data: Any) -> tuple[str, Usage, str]:
            text, usage, model = _parse_chat(data)
            if usage is None:
                # a reply without usage is counted as the limiter estimates a request
                usage = Usage(prompt_guess, len(text) // 4 + 1, 1, estimated=True)
            return text, usage, model

        (text, usage, model), requests = await self._request(
            "/chat/completions", body, parse, estimate, _chat_tokens
        )
        self._prompt_tokens += usage.prompt_tokens
        self._completion_tokens += usage.completion_tokens
        if self._limiter is not None and self._budget is None:
            self._limiter.adjust(usage.prompt_tokens + usage.completion_tokens - estimate)
        return Completion(
            text=text,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, requests,
                        estimated=usage.estimated),
            model=model or self.model,
        )


def _embedding_parser(count: int,
                      estimate: int) -> Callable[[Any], tuple[np.ndarray, int, bool]]:
    """A parser of a reply to ``count`` texts: its vectors, tokens and whether they are an
    estimate: ``estimate`` when it says none (counted as 0, such a batch would settle ``tpm``
    to nothing and cost nothing under ``max_cost``)."""

    def parse(data: Any) -> tuple[np.ndarray, int, bool]:
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise _BadReply("'data' is missing")
        items = data["data"]
        if len(items) != count:
            raise _BadReply(f"{len(items)} embeddings for {count} inputs")
        if not all(isinstance(item, dict) for item in items):
            raise _BadReply("'data' items are not objects")
        if all(_is_int(item.get("index")) for item in items):
            items = sorted(items, key=lambda item: item["index"])
            if [item["index"] for item in items] != list(range(count)):
                raise _BadReply("'data[].index' values are not 0..n-1")
        try:
            array = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise _BadReply(
                f"'data[].embedding' is not a list of equal-length vectors ({exc})"
            ) from None
        if array.ndim != 2 or not np.isfinite(array).all():
            raise _BadReply("'data[].embedding' vectors are not finite numbers")
        usage = data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if _is_int(tokens):
            return array, tokens, False
        return array, estimate, True

    return parse


class OpenAIEmbedder(_OpenAIEndpoint):
    """An :class:`~pytest_ragbench.llm.base.Embedder` over ``POST {base_url}/embeddings``.

    Takes the same arguments as :class:`OpenAIChat` plus ``batch_size`` (texts per request,
    default 128); batches go out concurrently within ``concurrency``. Token usage is counted
    in :attr:`usage` (the Embedder contract returns only the array).
    """

    _kind = "openai-embeddings"

    def __init__(self, base_url: str, model: str, *, batch_size: int = 128, **kwargs: Any) -> None:
        if batch_size < 1:
            raise ComponentError(f"batch_size: must be >= 1, got {batch_size}")
        super().__init__(base_url, model, **kwargs)
        self.batch_size = batch_size

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape ``(len(texts), d)``; ``(0, 0)`` for no texts."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        parts = await asyncio.gather(*(self._embed_batch(batch) for batch in batches))
        dims = {part.shape[1] for part in parts}
        if len(dims) != 1:
            raise LLMError(f"POST {self._endpoint}/embeddings returned mixed dimensions {dims}")
        return np.concatenate(parts, axis=0)

    async def _embed_batch(self, batch: list[str]) -> np.ndarray:
        body = {**self._params, "model": self.model, "input": batch}
        estimate = sum(len(t) for t in batch) // 4 + 1
        (array, tokens, _), _ = await self._request(
            "/embeddings", body, _embedding_parser(len(batch), estimate), estimate,
            _embedding_tokens
        )
        self._prompt_tokens += tokens
        if self._limiter is not None and self._budget is None:
            self._limiter.adjust(tokens - estimate)
        return array


def openai_chat(
    *,
    base_url: str,
    model: str,
    api_key_env: str | None = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    case_timeout: float | None = None,
    concurrency: int = 16,
    retries: int = 4,
    backoff: float = 0.5,
    rpm: float | None = None,
    tpm: float | None = None,
) -> OpenAIChat:
    """A chat model behind an OpenAI-compatible endpoint (POST {base_url}/chat/completions).

    The keys of a suite's ``llm: {type: openai, ...}``: ``api_key_env`` names the environment
    variable holding the key, header values may reference ``${ENV_NAME}``, ``params`` are
    request parameters (temperature, max_tokens, seed), ``timeout`` is per attempt and
    ``case_timeout`` per call, ``retries`` after the first attempt with exponential
    ``backoff``, ``rpm`` / ``tpm`` rate limits for this client.
    """
    limiter = RateLimiter(rpm, tpm) if rpm is not None or tpm is not None else None
    return OpenAIChat(base_url, model, api_key_env=api_key_env, headers=headers,
                      timeout=timeout, params=params, concurrency=concurrency,
                      retry=RetryPolicy(max_attempts=retries + 1, base_delay=backoff),
                      rate_limiter=limiter, case_timeout=case_timeout)
