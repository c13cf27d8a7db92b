"""A pipeline that asks the user's own RAG service over HTTP.

Suite syntax::

    pipelines:
      prod:
        type: http
        url: http://127.0.0.1:8080/answer
        headers: {Authorization: "Bearer ${RAG_TOKEN}"}
        timeout: 30
        retries: 3

Request. For each case the pipeline sends ``POST url`` with the JSON body::

    {"query": "<query text>", "query_id": "<query id>", "metadata": {...}}

plus the fixed fields of ``params``, if given.

Response. A 200 reply whose JSON body follows the output contract of
:mod:`pytest_ragbench.pipelines.contract`::

    {"answer": "...", "contexts": [{"id": "d1", "text": "...", "score": 0.8}],
     "usage": {"prompt_tokens": 120, "completion_tokens": 30, "cost": 0.0004}}

Resilience, as the LLM client does it (:mod:`pytest_ragbench.llm.resilience`): connection
errors, timeouts, 408, 429 and 5xx are retried ``retries`` times with exponential backoff and
jitter (a ``Retry-After`` header wins); a circuit breaker fails fast after
``breaker_threshold`` consecutive failures, so a service that is down costs seconds, not
``retries`` timeouts per query. Other 4xx replies and bodies outside the contract fail the case
at once. ``concurrency`` is how many cases the pipeline is asked for at once (see
:mod:`pytest_ragbench.execution.asking`) and bounds requests in flight; built in a run, it holds
for the whole run (every xdist worker together), as an LLM endpoint's does: its requests draw
from a pool of the run's budget, which the summary's pool lines show.

Secrets: header values may reference environment variables as ``${NAME}``; they are read when
the pipeline is built (an unset variable is an error naming the variable, never its value) and
are scrubbed, with secret-named headers' literal values and URL credentials, from every message
(:mod:`pytest_ragbench.redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..budget.wiring import outcome_of
from ..datasets import Query
from ..errors import ParamValueError, exception_text
from ..http_headers import expand_env, url_and_header_problems
from ..llm import deadline
from ..llm.base import LLMError
from ..llm.identity import strip_credentials
from ..llm.resilience import (
    CircuitBreaker,
    RetryPolicy,
    attempt_timed_out,
    is_retryable_status,
    parse_retry_after,
)
from ..redact import Redactor, header_secrets
from ..registry import BuildContext
from ..tls import ssl_context_for
from .contract import OutputError, PipelineOutput, normalise_output

_BODY_EXCERPT = 200


class HTTPPipelineError(Exception):
    """The service failed for good or answered outside the JSON contract."""


_bad = ParamValueError.at  # parameter NAME refused, at its own key and line


def _validate(params: Mapping[str, Any]) -> None:
    """ParamValueError naming every parameter at fault (a bad URL hid a reserved request
    parameter until it was fixed)."""
    problems = url_and_header_problems(params.get("url"), params.get("headers"))
    for name, default in (("timeout", 60.0), ("backoff", 0.5), ("max_backoff", 8.0),
                          ("breaker_reset", 30.0)):
        value = params.get(name, default)
        if name == "timeout" and value <= 0:
            problems.append(_bad(name, f"must be > 0, got {value!r}"))
        elif value < 0:
            problems.append(_bad(name, f"must be >= 0, got {value!r}"))
    for name, default, low in (("retries", 3, 0), ("concurrency", 8, 1),
                               ("breaker_threshold", 5, 1)):
        count = params.get(name, default)
        if count < low:
            problems.append(_bad(name, f"must be >= {low}, got {count!r}"))
    extra = params.get("params")
    if extra is not None and not isinstance(extra, Mapping):
        problems.append(_bad("params", f"must be a mapping of extra JSON fields, got {extra!r}"))
    # each request sets these itself: a value given here was replaced without a word
    for key, what in (("query", "the question"), ("query_id", "the question's id"),
                      ("metadata", "the question's metadata")):
        if isinstance(extra, Mapping) and key in extra:
            detail = f"set by ragbench in each request ({what}); leave it out"
            problems.append(ParamValueError(f"params.{key} is {detail}", path=("params", key),
                                            detail=detail))
    if problems:
        raise ParamValueError.combine(problems)


class HTTPPipeline:
    """POSTs each query to a RAG service and reads its answer (see the module docs)."""

    def __init__(self, *, url: str, headers: Mapping[str, str] | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 8.0, concurrency: int = 8,
                 breaker_threshold: int = 5, breaker_reset: float = 30.0,
                 params: Mapping[str, Any] | None = None,
                 context: BuildContext | None = None) -> None:
        _validate({"url": url, "headers": headers, "params": params, "timeout": timeout,
                   "retries": retries, "backoff": backoff, "max_backoff": max_backoff,
                   "concurrency": concurrency, "breaker_threshold": breaker_threshold,
                   "breaker_reset": breaker_reset})
        secrets: list[str] = []
        resolved: dict[str, str] = {}
        for name, raw in (headers or {}).items():
            value, used = expand_env(str(raw), f"headers.{name}")
            secrets += header_secrets(name, value, used)
            resolved[name] = value
        parts = urlsplit(url)
        secrets += [s for s in (parts.username, parts.password) if s]
        self.url = url
        self.timeout = float(timeout)
        self.params = dict(params or {})
        self.concurrency = concurrency
        #: cases asked at once (see pytest_ragbench.execution.asking)
        self.ragbench_concurrency = concurrency
        self.retry = RetryPolicy(max_attempts=retries + 1, base_delay=float(backoff),
                                 max_delay=float(max_backoff))
        self.breaker = CircuitBreaker(breaker_threshold, float(breaker_reset))
        self.requests = 0
        self._headers = resolved
        self._redact = Redactor(secrets)
        # Jitter only spreads retries; seeded so a run's timing does not depend on the clock.
        self._rng = random.Random(0)
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        # in a run, the slots are the run's: each worker's own semaphore let N workers send
        # N times ``concurrency`` requests at once
        self._budget: Any = None
        self._pool = ""
        if context is not None and context.run_budget is not None:
            from ..budget.wiring import endpoint_limits, pool_key

            self._budget = context.run_budget()
            limits = endpoint_limits(concurrency)
            self._pool = pool_key(strip_credentials(url), "", limits, kind="pipeline")
            self._budget.declare(self._pool, limits)

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: URL, headers, params and limits (environment variables are read at
        build)."""
        _validate(params)

    def __repr__(self) -> str:
        return f"HTTPPipeline(url={strip_credentials(self.url)!r})"

    def _excerpt(self, text: str) -> str:
        return self._redact.excerpt(text, _BODY_EXCERPT)

    def _client_for_loop(self) -> httpx.AsyncClient:
        # Created on first use so it belongs to the event loop that runs the requests.
        if self._client is None:
            self._client = httpx.AsyncClient(headers=self._headers,
                                             timeout=httpx.Timeout(self.timeout),
                                             verify=ssl_context_for(self.url))
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._client

    @contextlib.asynccontextmanager
    async def _slot(self, waited: list[float]) -> AsyncIterator[list[str]]:
        """One request in flight: a slot of the run's pool (or of this process's semaphore
        outside a run); the caller puts the attempt's outcome into the yielded list. The
        seconds spent waiting for the slot are added to ``waited[0]``."""
        began = time.perf_counter()
        if self._budget is None:
            assert self._slots is not None
            async with self._slots:
                waited[0] += time.perf_counter() - began
                yield []
            return
        with deadline.waiting_for_slot():
            lease = await self._budget.acquire(self._pool, hold=self.timeout)
        waited[0] += time.perf_counter() - began
        outcome = ["aborted"]
        try:
            yield outcome
        finally:
            lease.release(outcome[-1])

    async def _post(self, body: dict[str, Any], waited: list[float]) -> Any:
        with deadline.call():
            return await self._posting(body, waited)

    async def _posting(self, body: dict[str, Any], waited: list[float]) -> Any:
        client = self._client_for_loop()
        assert self._slots is not None
        where = f"POST {strip_credentials(self.url)}"
        last = ""
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self.breaker.before_call(strip_credentials(self.url))
            except LLMError as exc:
                raise HTTPPipelineError(self._redact(str(exc))) from None
            retry_after: float | None = None
            try:
                async with self._slot(waited) as outcome:
                    self.requests += 1
                    try:
                        # httpx's timeout bounds each read: a reply trickling in would hold
                        # the attempt far past ``timeout``
                        reply = await asyncio.wait_for(client.post(self.url, json=body),
                                                       self.timeout)
                    except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
                        outcome.append("timeout")
                        raise
                    except httpx.TransportError:
                        outcome.append("error")
                        raise
                    outcome.append(outcome_of(reply.status_code))
            except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
                last = attempt_timed_out(self.timeout)
                await self.breaker.record_failure(last)
            except httpx.TransportError as exc:  # connection refused or reset
                last = exception_text(exc)
                await self.breaker.record_failure(last)
            except BaseException:
                self.breaker.record_abort()
                raise
            else:
                if is_retryable_status(reply.status_code):
                    last = f"HTTP {reply.status_code}: {self._excerpt(reply.text)}"
                    retry_after = parse_retry_after(reply.headers.get("retry-after"))
                    if reply.status_code == 429:
                        # a rate limit is an answer from a live service: backed off and
                        # retried, not counted towards declaring it down (as the LLM clients)
                        await self.breaker.record_success()
                    else:
                        await self.breaker.record_failure(f"HTTP {reply.status_code}")
                else:
                    # any other answer proves the service is alive
                    await self.breaker.record_success()
                    if reply.status_code != 200:
                        raise HTTPPipelineError(self._redact(
                            f"{where} answered HTTP {reply.status_code}: "
                            f"{self._excerpt(reply.text)}"))
                    try:
                        return reply.json()
                    except UnicodeDecodeError as exc:
                        raise HTTPPipelineError(self._redact(
                            f"{where} answered a body that is not valid "
                            f"{exc.encoding.upper()} ({exc.reason}: byte "
                            f"{exc.object[exc.start]:#04x}): "
                            f"{self._excerpt(repr(self._redact(reply.text)))}")) from None
                    except ValueError:
                        raise HTTPPipelineError(self._redact(
                            f"{where} answered non-JSON: "
                            f"{self._excerpt(repr(self._redact(reply.text)))}")) from None
            if attempt < attempts:
                await asyncio.sleep(self.retry.delay(attempt, retry_after, self._rng))
        raise HTTPPipelineError(self._redact(f"{where} failed after {attempts} attempt(s): "
                                             f"{last}"))

    async def answer(self, query: Query) -> PipelineOutput:
        """Ask the service about ``query``; the reply checked against the contract.

        Its ``latency_ms``, when the service reports none, is the time the service took,
        retries included: the waits for a slot of the pipeline's ``concurrency``, which under
        xdist is every worker's together, are left out, so that the same service measures the
        same at any ``-n``."""
        body = {**self.params, "query": query.text, "query_id": query.id,
                "metadata": dict(query.metadata)}
        waited = [0.0]
        began = time.perf_counter()
        data = await self._post(body, waited)
        took_ms = max(time.perf_counter() - began - waited[0], 0.0) * 1000.0
        try:
            output = normalise_output(data)
        except OutputError as exc:
            raise HTTPPipelineError(self._redact(
                f"POST {strip_credentials(self.url)}: the reply does not follow the pipeline "
                f"contract: {exc}")) from None
        if output.latency_ms is None:
            output = dataclasses.replace(output, latency_ms=took_ms)
        return output

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
