"""A retriever that asks the user's own retrieval service over HTTP.

Suite syntax::

    retrievers:
      prod:
        type: http
        url: http://127.0.0.1:8080/search
        headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
        timeout: 10
        retries: 3

JSON contract. For each case the retriever sends ``POST url`` with the body::

    {"query": "<query text>", "k": 10, "query_id": "<query id>"}

(plus the fixed fields of ``params``, if given) and expects a 200 reply::

    {"results": [{"id": "<document id>", "score": 12.5}, ...]}

best first, at most ``k`` entries (the plugin checks ids, duplicates, the count and that scores
are finite, per item). ``doc_id`` is accepted for ``id``.

Header values may reference environment variables as ``${NAME}``; they are read when the
retriever is built (an unset variable is an error naming the variable, never its value) and
never appear in messages: error texts are scrubbed of every header value that came from the
environment (and of secret-named headers' literal values, and URL credentials), and of any
8-character run of one (a key the service echoes in part), before a reply body is cut to an
excerpt (:mod:`pytest_ragbench.redact`).

Failures are retried as the ``http`` pipeline and the LLM clients retry them
(:mod:`pytest_ragbench.llm.resilience`): connection errors, timeouts, 408, 429 and 5xx replies
are retried ``retries`` times with exponential backoff and jitter (up to ``backoff`` *
2^(attempt-1) seconds, at most ``max_backoff``); a ``Retry-After`` header wins (capped by
``max_backoff``). Other 4xx replies and malformed JSON fail at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..datasets import Document, Query
from ..errors import ParamValueError, exception_text
from ..http_headers import expand_env, url_and_header_problems
from ..llm.identity import strip_credentials
from ..llm.resilience import (
    RetryPolicy,
    Sleep,
    attempt_timed_out,
    is_retryable_status,
    parse_retry_after,
)
from ..redact import Redactor, header_secrets
from ..registry import BuildContext
from ..tls import ssl_context_for

_BODY_EXCERPT = 200


class HTTPRetrieverError(Exception):
    """The service failed for good or answered something outside the JSON contract."""


_bad = ParamValueError.at  # parameter NAME refused, at its own key and line


def _validate(url: Any, headers: Any, timeout: Any, retries: Any, backoff: Any,
              max_backoff: Any, params: Any) -> None:
    """ParamValueError naming every parameter at fault (a bad URL hid a reserved request
    parameter until it was fixed)."""
    problems = url_and_header_problems(url, headers)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        problems.append(_bad("timeout", f"must be a number of seconds > 0, got {timeout!r}"))
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        problems.append(_bad("retries", f"must be an integer >= 0, got {retries!r}"))
    for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(_bad(name, f"must be a number of seconds >= 0, got {value!r}"))
    if params is not None and not isinstance(params, Mapping):
        problems.append(_bad("params", f"must be a mapping of extra JSON fields, got {params!r}"))
    # each request sets these itself: a value given here was replaced without a word
    for key, what in (("query", "the query's text"), ("k", "the suite's k"),
                      ("query_id", "the query's id")):
        if isinstance(params, Mapping) and key in params:
            detail = f"set by ragbench in each request ({what}); leave it out"
            problems.append(ParamValueError(f"params.{key} is {detail}", path=("params", key),
                                            detail=detail))
    if problems:
        raise ParamValueError.combine(problems)


class HTTPRetriever:
    """POSTs each query to a retrieval service (module docs); a ``Retriever``."""

    def __init__(self, *, url: str, headers: Mapping[str, str] | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 8.0, params: Mapping[str, Any] | None = None) -> None:
        _validate(url, headers, timeout, retries, backoff, max_backoff, params)
        secrets: list[str] = []
        resolved: dict[str, str] = {}
        for name, raw in (headers or {}).items():
            value, used = expand_env(str(raw), f"headers.{name}")
            secrets += header_secrets(name, value, used)
            resolved[name] = value
        self.url = url
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.params = dict(params or {})
        self.retry = RetryPolicy(max_attempts=retries + 1, base_delay=self.backoff,
                                 max_delay=self.max_backoff)
        # Jitter only spreads retries; seeded so a run's timing does not depend on the clock.
        self._rng = random.Random(0)
        # the wait between attempts: a test's seam, so that it need not wait in real time
        self._sleep: Sleep = asyncio.sleep
        self._headers = resolved
        parts = urlsplit(url)
        secrets += [s for s in (parts.username, parts.password) if s]
        self._redact = Redactor(secrets)
        self._client: httpx.AsyncClient | None = None
        self.requests = 0

    @staticmethod
    def ragbench_check(params: Mapping[str, Any], context: BuildContext) -> None:
        """At collection: URL and option types (environment variables are read at build)."""
        _validate(params.get("url"), params.get("headers"), params.get("timeout", 30.0),
                  params.get("retries", 3), params.get("backoff", 0.5),
                  params.get("max_backoff", 8.0), params.get("params"))

    def __repr__(self) -> str:
        return f"HTTPRetriever(url={strip_credentials(self.url)!r})"

    def describe(self) -> dict[str, Any]:
        return {"retriever": "http", "url": strip_credentials(self.url),
                "timeout": self.timeout, "retries": self.retries}

    def _scrub(self, text: str) -> str:
        return self._redact(text)

    def _excerpt(self, text: str) -> str:
        # scrubbed before the cut: a key cut in half would escape the whole-key replacement
        return self._redact.excerpt(text, _BODY_EXCERPT)

    def index(self, corpus: Sequence[Document]) -> None:
        """Nothing to index: the service owns its corpus."""

    def _client_for_loop(self) -> httpx.AsyncClient:
        # Created on first use so it belongs to the event loop that runs the requests.
        if self._client is None:
            self._client = httpx.AsyncClient(headers=self._headers,
                                             timeout=httpx.Timeout(self.timeout),
                                             verify=ssl_context_for(self.url))
        return self._client

    async def _post(self, body: dict[str, Any]) -> Any:
        client = self._client_for_loop()
        where = f"POST {strip_credentials(self.url)}"
        last = ""
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            self.requests += 1
            try:
                # httpx's timeout bounds each read: a reply trickling in would hold the
                # attempt far past ``timeout``
                reply = await asyncio.wait_for(client.post(self.url, json=body), self.timeout)
            except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
                last = attempt_timed_out(self.timeout)
            except httpx.TransportError as exc:  # connection refused or reset
                last = exception_text(exc)
            else:
                if not is_retryable_status(reply.status_code):
                    return self._read(reply, where)
                last = f"HTTP {reply.status_code}: {self._excerpt(reply.text)}"
                retry_after = parse_retry_after(reply.headers.get("retry-after"))
            if attempt < attempts:
                await self._sleep(self.retry.delay(attempt, retry_after, self._rng))
        raise HTTPRetrieverError(self._scrub(
            f"{where} failed after {attempts} attempt(s): {last}"))

    def _read(self, reply: httpx.Response, where: str) -> Any:
        """The JSON of a final reply (one not worth another attempt)."""
        if reply.status_code != 200:
            raise HTTPRetrieverError(self._scrub(
                f"{where} answered HTTP {reply.status_code}: {self._excerpt(reply.text)}"))
        try:
            return reply.json()
        except ValueError:
            # scrubbed before repr too: repr could escape a secret's characters
            body = repr(self._scrub(reply.text))
            raise HTTPRetrieverError(self._scrub(
                f"{where} answered non-JSON: {self._excerpt(body)}")) from None

    async def _search(self, text: str, query_id: str | None, k: int) -> list[tuple[str, float]]:
        data = await self._post({**self.params, "query": text, "k": k, "query_id": query_id})
        results = data.get("results") if isinstance(data, Mapping) else None
        if not isinstance(results, list):
            raise HTTPRetrieverError(
                f"POST {strip_credentials(self.url)}: expected {{\"results\": [...]}}, got "
                f"{self._excerpt(repr(data))}")
        hits: list[tuple[str, float]] = []
        for i, item in enumerate(results):
            doc = item.get("id", item.get("doc_id")) if isinstance(item, Mapping) else None
            score = item.get("score") if isinstance(item, Mapping) else None
            if doc is None or isinstance(score, bool) or not isinstance(score, int | float):
                raise HTTPRetrieverError(
                    f"result {i} is {self._excerpt(repr(item))}, expected "
                    "{\"id\": ..., \"score\": <number>}")
            hits.append((str(doc), float(score)))
        return hits

    async def retrieve_case(self, query: Query, k: int) -> list[tuple[str, float]]:
        """Ask the service for ``query`` (its text and id)."""
        return await self._search(query.text, query.id, k)

    async def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        """Ask the service for a bare text (``query_id`` is null)."""
        return await self._search(query, None, k)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
