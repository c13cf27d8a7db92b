"""An LLM client's side of the run's request exchange (:mod:`pytest_ragbench.budget.exchange`).

:class:`ExchangedLLM` wraps the response cache (or the provider, without a cache) of a
pipeline: outermost but for the per-case meter, so a response handed over carries the
``cached`` flag and usage the process that sent it saw, exactly what the case would have
seen at ``-n 0``. Two roles:

- ``lead`` (the xdist controller's head start): claims each request without waiting; sends
  the ones nobody has and publishes the response (or the provider's failure); a request
  already claimed by a worker is skipped (:class:`LeftToWorker`);
- ``follow`` (a worker): asks first; takes the response the controller published or waits
  for the one it is sending; sends the request itself when nobody has it (or when the
  controller gave it back).

Only the provider's own failures (:class:`~pytest_ragbench.llm.base.ProviderError`) and the
leader's circuit breaker failing fast (the endpoint is down, as it is for the one process of
``-n 0``, whose later cases fail fast too; given back, each worker's breaker tried the down
endpoint again, up to 3.9x the requests of ``-n 0``) are published; the latter only until the
breaker would let a probe through (:func:`expired`). A failure of the process
itself (a budget refusal, ``max_cost`` reached, its coordinator lost, its ``case_timeout``)
and a cancellation are not: the key goes back, and the worker meets its own budget and
limits, as it does without a head start.
"""

from __future__ import annotations

import contextlib
import keyword
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Literal

from ..budget.api import RunBudget, refusals_not_counted
from ..llm.base import LLM, Completion, LLMError, Message, ProviderError, Usage
from ..llm.cache import chat_key
from ..llm.identity import ProviderId
from ..llm.resilience import CircuitOpenError

Role = Literal["lead", "follow"]
ROLES: tuple[Role, ...] = ("lead", "follow")


class LeftToWorker(LLMError):
    """The controller's head start skips a request a worker has claimed."""


class ExchangedError(LLMError):
    """A provider failure obtained by another process, raised again where the case runs."""


_ERROR_TYPES: dict[str, type[ExchangedError]] = {}


def _error_type(name: str) -> type[ExchangedError]:
    # The failure keeps its class name, so that a message-less error reads the same
    # (``str(exc) or type(exc).__name__``) as in the process that met it.
    if not name.isidentifier() or keyword.iskeyword(name):
        return ExchangedError
    if name not in _ERROR_TYPES:
        _ERROR_TYPES[name] = type(name, (ExchangedError,), {})
    return _ERROR_TYPES[name]


def encode_completion(completion: Completion) -> dict[str, Any]:
    """A completion as plain data for the exchange."""
    usage = completion.usage
    return {"text": completion.text, "model": completion.model, "cached": completion.cached,
            "usage": [usage.prompt_tokens, usage.completion_tokens, usage.requests,
                      usage.estimated]}


def encode_error(exc: BaseException) -> dict[str, Any]:
    """A provider failure as plain data for the exchange; a breaker's fail-fast says until
    when it holds (wall clock: the workers may run on other machines)."""
    out: dict[str, Any] = {"error": str(exc), "type": type(exc).__name__}
    retry_in = getattr(exc, "retry_in", None)
    if isinstance(retry_in, int | float):
        out["until"] = time.time() + float(retry_in)
    return out


def expired(value: Any) -> bool:
    """Whether a handed-over failure no longer holds: a breaker's fail-fast read after the
    breaker would have let a probe through (the head start publishes one for every case
    left within seconds; a worker reaching one later asks the endpoint itself, as the one
    process of ``-n 0`` would, instead of failing the rest of the suite on a short outage)."""
    return (isinstance(value, dict) and isinstance(value.get("until"), int | float)
            and time.time() >= value["until"])


def decode(value: Any) -> Completion:
    """The completion :func:`encode_completion` made; raises the failure :func:`encode_error`
    made (an :class:`ExchangedError` of the same class name and message)."""
    if not isinstance(value, dict):
        raise ExchangedError(f"the run's exchange returned {type(value).__name__}, "
                             "expected a response")
    if "error" in value:
        raise _error_type(str(value.get("type", "")))(str(value["error"]))
    prompt, completion, requests = (int(x) for x in value["usage"][:3])
    estimated = bool(value["usage"][3]) if len(value["usage"]) > 3 else False
    return Completion(text=str(value["text"]), usage=Usage(prompt, completion, requests,
                                                                estimated=estimated),
                      model=str(value["model"]), cached=bool(value["cached"]))


#: Set in a case's context (its task) once one of its requests is its own process's to send:
#: the leader then skips that case (its claim finds the key taken) and never claims the
#: case's later requests (its judge's), so those must not wait for the leader's claim: a
#: judge request parked after a generation the worker sent itself waited the whole
#: ``PARK_TIMEOUT`` for nothing.
_SENDS_ITS_OWN: ContextVar[bool] = ContextVar("ragbench_exchange_sends_its_own",
                                              default=False)


@contextlib.contextmanager
def unled_requests() -> Iterator[None]:
    """Within it, this context's requests do not wait for the leader's claim: the leader
    never asks them (an answer it did not generate, judged for a pipeline under test or by
    a test's ``ragbench_record.score``)."""
    token = _SENDS_ITS_OWN.set(True)
    try:
        yield
    finally:
        _SENDS_ITS_OWN.reset(token)


class ExchangedLLM:
    """``inner`` (a :class:`~pytest_ragbench.llm.cache.CachedLLM` or a provider) behind the
    run's exchange; requests are named by their response-cache key (``provider_id``,
    messages, parameters, ``template_version``)."""

    def __init__(self, inner: LLM, budget: RunBudget, *, role: Role, provider_id: ProviderId,
                 template_version: str = "", scope: str | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.inner = inner
        self.budget = budget
        self.role = role
        self.provider_id = provider_id
        self.template_version = template_version
        #: The exchange scope of its requests (the suite's id): a worker's request the
        #: leader has not claimed yet waits for it when the leader leads this scope.
        self.scope = scope
        #: False once the exchange said it has nothing more to hand out (the head start
        #: ended): then every request goes straight to ``inner``, without a round trip.
        self.asking = True

    def __repr__(self) -> str:
        return f"ExchangedLLM({self.inner!r}, role={self.role!r})"

    def key(self, messages: Sequence[Message], params: dict[str, Any]) -> str:
        """The exchange key of a request: within its suite (``scope``). Another suite's
        identical request is its own, paid under its own ``max_cost``, as at ``-n 0``
        (where, with the response cache on, it is read from the cache instead)."""
        where = f"{self.scope}:" if self.scope is not None else ""
        return "chat:" + where + chat_key(self.provider_id, messages, params,
                                          self.template_version)

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        lead = self.role == "lead"
        if not self.asking:
            return await self.inner.chat(messages, **params)
        claim = await self.budget.claim(
            self.key(messages, params), consume=not lead,
            scope=None if _SENDS_ITS_OWN.get() else self.scope)
        if claim.lead_over:
            self.asking = False
        if claim.state == "done":
            if expired(claim.value):
                return await self.inner.chat(messages, **params)
            return decode(claim.value)
        if not lead:
            _SENDS_ITS_OWN.set(True)
        if claim.state != "mine":
            if lead:
                raise LeftToWorker("left to the worker that claimed it")
            return await self.inner.chat(messages, **params)
        try:
            with refusals_not_counted() if lead else contextlib.nullcontext():
                completion = await self.inner.chat(messages, **params)
        except (ProviderError, CircuitOpenError) as exc:
            if lead:
                claim.publish(encode_error(exc))
            else:
                # the endpoint's answer is final; a worker's own breaker says nothing of it
                claim.release(done=isinstance(exc, ProviderError))
            raise
        except BaseException:
            claim.release(done=False)
            raise
        if lead:
            claim.publish(encode_completion(completion))
        else:
            claim.release(done=True)
        return completion


class LeftEmbedder:
    """The controller's stand-in for a remote embedder: embeddings stay with the workers
    (they are not exchanged), so the head start asks for none."""

    async def embed(self, texts: Sequence[str]) -> Any:
        raise LeftToWorker("embeddings are left to the workers")
