"""Retry with backoff, a circuit breaker and a rate limiter for calls to model endpoints.

All three take an injectable clock (a ``() -> float`` of monotonic seconds) so tests can drive
time by hand; the rate limiter also takes an injectable async ``sleep``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

from .base import LLMError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
BreakerState = Literal["closed", "open", "half_open"]


def attempt_timed_out(seconds: float) -> str:
    """What a failed attempt says when it ran past its ``timeout`` (every HTTP client's
    wording, so that messages and logs read alike)."""
    return f"timed out after {seconds:g} s (the per-attempt timeout)"


def is_retryable_status(status: int) -> bool:
    """429 (rate limited), 408 (request timeout) and every 5xx are worth another attempt."""
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns ``None`` when the header is absent or unreadable, and never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a naive result means the zone was omitted
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    rng: random.Random,
    *,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    jitter: bool = True,
) -> float:
    """Seconds to sleep after failed attempt number ``attempt`` (1-based).

    A server's ``Retry-After`` wins when given (it knows when it will have capacity), capped
    by ``max_delay``. Otherwise exponential backoff ``base_delay * 2**(attempt-1)`` capped by
    ``max_delay``, with full jitter (uniform in ``[0, cap]``) so concurrent clients that failed
    together do not retry together.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if retry_after is not None:
        return min(max_delay, max(0.0, retry_after))
    # exponent capped so that huge attempt numbers cannot overflow a float
    cap = min(max_delay, base_delay * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, cap) if jitter else cap


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed request.

    Retried: HTTP 408/429/5xx, connection errors, timeouts and unreadable (malformed or
    truncated) reply bodies. ``max_attempts`` counts the first attempt too.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """:func:`backoff_delay` with this policy's settings."""
        return backoff_delay(
            attempt,
            retry_after,
            rng,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            jitter=self.jitter,
        )


class CircuitOpenError(LLMError):
    """Raised without sending a request because the endpoint's circuit breaker is open.

    ``retry_in``: seconds until the breaker lets a probe through (None: unknown)."""

    def __init__(self, message: str, retry_in: float | None = None) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class CircuitBreaker:
    """Stops calling an endpoint that keeps failing, and probes it again after a while.

    Closed: calls go through; ``failure_threshold`` consecutive failures open it. Open: calls
    fail fast with :class:`CircuitOpenError`. After ``reset_timeout`` seconds one probe call is
    let through (half-open); its success closes the breaker, its failure reopens it. What
    counts as a failure is the caller's decision (the OpenAI client counts 5xx, 408,
    connection errors, timeouts and unreadable replies; any other HTTP answer proves the
    endpoint is alive and counts as a success).

    Callers must pair every successful :meth:`before_call` with exactly one of
    :meth:`record_success`, :meth:`record_failure` or :meth:`record_abort`.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._last_error = ""
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half_open"`` (as of the last call or record)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state!r}, failures={self._failures}, "
            f"threshold={self.failure_threshold}, reset_timeout={self.reset_timeout})"
        )

    async def before_call(self, endpoint: str = "") -> None:
        """Return if a call may go out now; raise :class:`CircuitOpenError` if not."""
        async with self._lock:
            if self._state == "closed":
                return
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout:
                self._state = "half_open"
            if self._state == "half_open" and not self._probe_in_flight:
                self._probe_in_flight = True
                return
            raise CircuitOpenError(
                f"circuit open: {self._last_error}, {self._failures} consecutive failures; "
                f"endpoint {endpoint or '(unnamed)'}",
                retry_in=max(0.0, self._opened_at + self.reset_timeout - self._clock()),
            )

    async def record_success(self) -> None:
        """The call reached a healthy endpoint: close the breaker."""
        async with self._lock:
            self._state = "closed"
            self._failures = 0
            self._probe_in_flight = False

    async def record_failure(self, reason: str) -> None:
        """The call failed because of the endpoint; ``reason`` is quoted when failing fast."""
        async with self._lock:
            self._failures += 1
            self._last_error = reason
            # a failed half-open probe reopens at once; a closed breaker opens at the threshold
            threshold_hit = self._state == "closed" and self._failures >= self.failure_threshold
            if self._state == "half_open" or threshold_hit:
                self._open()

    def record_abort(self) -> None:
        """The call ended without telling anything about the endpoint (e.g. cancelled).

        Synchronous so it can run while a task is being cancelled; it is a single assignment,
        which no other coroutine can interleave with.
        """
        self._probe_in_flight = False

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probe_in_flight = False


class _Bucket:
    """A token bucket holding at most ``capacity``, refilled at ``capacity`` per minute."""

    def __init__(self, capacity: float, now: float) -> None:
        if capacity <= 0:
            raise ValueError(f"a per-minute limit must be > 0, got {capacity}")
        self.capacity = float(capacity)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.stamp)
        self.level = min(self.capacity, self.level + elapsed * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 if it is now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits as token buckets.

    Each bucket holds one minute's allowance and refills continuously, which matches how
    providers account their per-minute limits. Waiters are served in arrival order (the lock
    is held while sleeping). A token request larger than the bucket is clamped to the bucket
    size so it cannot wait forever; :meth:`adjust` settles estimates against real usage, and
    the token bucket may go negative after an underestimate, which delays later calls.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._requests = _Bucket(requests_per_minute, now) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, now) if tokens_per_minute else None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        rpm = self._requests.capacity if self._requests else None
        tpm = self._tokens.capacity if self._tokens else None
        return f"RateLimiter(requests_per_minute={rpm}, tokens_per_minute={tpm})"

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request and ``tokens`` tokens fit under the limits, then take them."""
        if self._requests is None and self._tokens is None:
            return
        async with self._lock:
            while True:
                now = self._clock()
                wait = 0.0
                if self._requests is not None:
                    self._requests.refill(now)
                    wait = max(wait, self._requests.wait_for(1.0))
                want = 0.0
                if self._tokens is not None:
                    self._tokens.refill(now)
                    want = min(float(max(tokens, 0)), self._tokens.capacity)
                    wait = max(wait, self._tokens.wait_for(want))
                # a hair of tolerance: float refill arithmetic must not cause a spin of tiny sleeps
                if wait <= 1e-9:
                    if self._requests is not None:
                        self._requests.level -= 1.0
                    if self._tokens is not None:
                        self._tokens.level -= want
                    return
                await self._sleep(wait)

    def adjust(self, token_delta: int) -> None:
        """Debit (positive) or credit (negative) tokens once the real usage is known."""
        if self._tokens is None or token_delta == 0:
            return
        self._tokens.refill(self._clock())
        self._tokens.level = min(self._tokens.capacity, self._tokens.level - token_delta)
