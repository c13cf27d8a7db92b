"""Suite configuration of the answer path: LLM, judge, embedder, generation, cache, prices, budget.

The pydantic models of :mod:`pytest_ragbench.suite.schema` validate the suite keys;
:func:`rag_config_from_model` turns them into the frozen values the pipeline is built from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..budget.limits import Adaptive
from ..errors import ComponentError, type_name, validation_message
from ..llm.cache import CacheMode
from ..llm.extractive import ExtractiveLLM
from ..llm.guard import CallLimits
from ..llm.usage import PriceTable
from ..suite.model import DEFAULT_CACHE_PATH

if TYPE_CHECKING:
    # the schema (pydantic) is imported where a suite's keys are validated, not by the
    # answer path: a worker given its suites already validated never loads it
    from ..suite import schema


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """An OpenAI-compatible endpoint and how to talk to it (no secret values, only env names).

    ``retries`` is the number of retries after the first attempt; ``backoff`` the base delay
    in seconds of the exponential backoff between them; ``rpm`` / ``tpm`` rate limits.
    ``timeout`` bounds each attempt, ``case_timeout`` one whole call (retries included, the
    waits for the run's slots not). ``concurrency`` is fixed unless ``adaptive`` is set
    (``concurrency: auto``), in which case it holds the adaptive upper bound.
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
    adaptive: Adaptive | None = None
    case_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


@dataclass(frozen=True)
class LlmConfig:
    """A chat provider: ``type`` ``"openai"`` (with ``endpoint``), ``"extractive"``, or any
    registered LLM type (built from the registry with ``params``, called under ``limits``)."""

    type: str
    endpoint: EndpointConfig | None = None
    threshold: float = 0.4  # extractive
    max_sentences: int = 1  # extractive
    concurrency: int = 16
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)  # registered types
    limits: CallLimits = field(default_factory=CallLimits)  # registered types: how called

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def registered(self) -> bool:
        """Built from the component registry (not one of the two built-in shapes)."""
        return self.type not in ("openai", "extractive")

    @property
    def paid(self) -> bool:
        return self.type == "openai"

    @property
    def model(self) -> str:
        if self.registered:
            # the name looked up in `prices`: the factory's `model` parameter, else the type
            return str(self.params.get("model") or self.type)
        return self.endpoint.model if self.endpoint is not None else ExtractiveLLM.model


@dataclass(frozen=True)
class JudgeConfig:
    """The judge: its LLM (``None`` = the generation LLM), mode, questions, call params, and
    how many items one request judges (``items_per_call``)."""

    llm: LlmConfig | None = None
    mode: str = "batched"
    n_questions: int = 3
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    items_per_call: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


@dataclass(frozen=True)
class EmbedderConfig:
    """``type`` ``"hashing"`` (offline, ``dim``), ``"openai"`` (with ``endpoint``), or any
    registered embedder type (built from the registry with ``params``, called under
    ``limits``)."""

    type: str
    dim: int = 256
    endpoint: EndpointConfig | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)  # registered types
    limits: CallLimits = field(default_factory=CallLimits)  # registered types: how called

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def registered(self) -> bool:
        return self.type not in ("openai", "hashing")


@dataclass(frozen=True)
class GenerationConfig:
    """How many retrieved contexts go into the prompt, and an optional template override.

    ``template`` is inline Jinja2 text or a path (relative to the suite's directory);
    ``template_file`` is always a path. At most one of them is set.
    """

    contexts: int = 5
    template: str | None = None
    template_file: str | None = None
    timeout: float | None = None  # seconds for one case's generation and judging


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
    # the suite's answer metrics by record name (built components of metrics/contract.py);
    # names not here are the built-ins
    metrics: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False,
                                       repr=False)
    #: False when ``llm`` is a suite of pipelines' stand-in, its judge's own LLM (it generates
    #: nothing): the file has no ``llm:`` key, so what is wrong with it is said at
    #: ``judge.llm`` alone
    llm_in_suite: bool = field(default=True, compare=False)


def _path(prefix: str, *parts: str) -> str:
    return prefix + ".".join(parts)


class ConfigError(ValueError):
    """A bad configuration value: ``key`` is its key path, ``detail`` what is wrong.

    ``str()`` reads ``key: detail``, as every ValueError of this module always has.
    """

    def __init__(self, key: str, detail: str,
                 problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail
        #: Every ``(key, detail)`` at fault when there are several (a component's
        #: parameters), each at its own key.
        self.problems = tuple(problems) or ((key, detail),)


def component_error(key: str, exc: ComponentError) -> ConfigError:
    """What is wrong with the registered component at ``key``, with each of its parameters
    at fault at its own key (``llm.temperature``), as a retriever's are."""
    problems = [(".".join([key, *map(str, p.path)]) if p.path else key, p.detail or str(p))
                for p in exc.each()]
    return ConfigError(key, str(exc), problems)


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(key, message)


def _concurrency(value: Any) -> tuple[int, Adaptive | None]:
    """A validated ``concurrency`` value as (fixed level or adaptive bound, adaptive)."""
    from ..suite import schema

    if isinstance(value, schema.ConcurrencyAutoModel):
        adaptive = Adaptive(max=value.max, start=value.start)
        return adaptive.max, adaptive
    if value == "auto":
        adaptive = Adaptive()
        return adaptive.max, adaptive
    return int(value), None


def _endpoint(model: schema.EndpointModel, *, batch_size: int = 128) -> EndpointConfig:
    concurrency, adaptive = _concurrency(model.concurrency)
    return EndpointConfig(
        base_url=model.base_url,
        model=model.model,
        api_key_env=model.api_key_env,
        params=dict(model.params or {}),
        headers=dict(model.headers or {}),
        timeout=float(model.timeout),
        concurrency=concurrency,
        adaptive=adaptive,
        case_timeout=None if model.case_timeout is None else float(model.case_timeout),
        retries=model.retries,
        backoff=float(model.backoff),
        rpm=None if model.rpm is None else float(model.rpm),
        tpm=None if model.tpm is None else float(model.tpm),
        batch_size=batch_size,
    )


def _limits(model: schema.RegisteredLlm | schema.RegisteredEmbedder) -> CallLimits:
    concurrency, adaptive = _concurrency(model.concurrency)
    return CallLimits(
        concurrency=concurrency, adaptive=adaptive, retries=model.retries,
        backoff=float(model.backoff),
        rpm=None if model.rpm is None else float(model.rpm),
        tpm=None if model.tpm is None else float(model.tpm),
        timeout=None if model.timeout is None else float(model.timeout),
        case_timeout=None if model.case_timeout is None else float(model.case_timeout))


def _llm(model: schema.OpenAILlm | schema.ExtractiveLlm | schema.RegisteredLlm) -> LlmConfig:
    from ..suite import schema

    if isinstance(model, schema.RegisteredLlm):
        limits = _limits(model)
        return LlmConfig(model.type, params=dict(model.model_extra or {}), limits=limits,
                         concurrency=limits.concurrency)
    if isinstance(model, schema.ExtractiveLlm):
        return LlmConfig("extractive", threshold=float(model.threshold),
                         max_sentences=model.max_sentences, concurrency=model.concurrency)
    endpoint = _endpoint(model)
    return LlmConfig("openai", endpoint, concurrency=endpoint.concurrency)


def rag_config_from_model(model: schema.RagFields, *, key_prefix: str = "") -> RagConfig:
    """The :class:`RagConfig` of validated suite keys (``model.llm`` must be set)."""
    from ..suite import schema

    assert model.llm is not None
    judge = None
    if model.judge is not None:
        j = model.judge
        judge = JudgeConfig(llm=None if j.llm == "same" else _llm(j.llm), mode=j.mode,
                            n_questions=j.n_questions, params=dict(j.params or {}),
                            items_per_call=j.items_per_call)
    embedder = None
    if isinstance(model.embedder, schema.RegisteredEmbedder):
        embedder = EmbedderConfig(model.embedder.type,
                                  params=dict(model.embedder.model_extra or {}),
                                  limits=_limits(model.embedder))
    elif isinstance(model.embedder, schema.HashingEmbedderModel):
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
    # the loader's stand-in is the judge's own model object, a key of the file never is
    stand_in = model.judge is not None and model.llm is model.judge.llm
    return RagConfig(
        llm=_llm(model.llm),
        llm_in_suite=not stand_in,
        judge=judge,
        embedder=embedder,
        generation=GenerationConfig(contexts=gen.contexts, template=gen.template,
                                    template_file=gen.template_file,
                                    timeout=None if gen.timeout is None else float(gen.timeout)),
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

    from ..suite import schema

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
    config = rag_config_from_model(model, key_prefix=key_prefix)
    _check_registered(config, key_prefix)
    return config


def registered_components(config: RagConfig) -> list[tuple[str, str, str, Mapping[str, Any]]]:
    """(key path, kind, type, parameters) of each registered-type provider ``config`` uses."""
    out: list[tuple[str, str, str, Mapping[str, Any]]] = []
    judge_llm = config.judge.llm if config.judge is not None else None
    generation = config.llm if config.llm_in_suite else None
    for key, llm in (("llm", generation), ("judge.llm", judge_llm)):
        if llm is not None and llm.registered:
            out.append((key, "llm", llm.type, llm.params))
    if config.embedder is not None and config.embedder.registered:
        out.append(("embedder", "embedder", config.embedder.type, config.embedder.params))
    return out


def _check_registered(config: RagConfig, key_prefix: str) -> None:
    """Registered provider types against built-ins and installed entry points (the plugin
    checks them against its own registry, conftest registrations included)."""
    from ..registry import Registry

    registry = Registry()
    for key, kind, name, params in registered_components(config):
        try:
            registry.resolve(kind, name)
        except ComponentError:
            raise _fail(_path(key_prefix, f"{key}.type"),
                        unknown_provider_message(kind, name, registry.names(kind))) from None
        try:
            registry.check(kind, name, params)
        except ComponentError as exc:
            raise component_error(_path(key_prefix, key), exc) from None


def unknown_provider_message(kind: str, type_name: str, known: list[str]) -> str:
    """``unknown LLM type 'x' (did you mean 'y'?); known: ...``."""
    from ..errors import did_you_mean

    label = "LLM" if kind == "llm" else kind
    return (f"unknown {label} type {type_name!r}{did_you_mean(type_name, known)}; known: "
            f"{', '.join(known)} (or 'package.module:Factory')")




def split_call_keys(kind: str, type_name: str, params: Mapping[str, Any],
                    ) -> tuple[dict[str, Any], CallLimits | None]:
    """A registered provider's spec as a suite reads it: (the factory's parameters, how it is
    called), for the ``ragbench_llm`` / ``ragbench_embedder`` fixtures. Other kinds and the
    built-in provider types keep every key and get ``None``. Raises ``ComponentError`` for
    a bad value of a call key."""
    from pydantic import ValidationError

    from ..errors import ComponentError
    from ..suite import schema

    builtins = {"llm": schema.BUILTIN_LLMS, "embedder": schema.BUILTIN_EMBEDDERS}.get(kind)
    if builtins is None or type_name in builtins:
        return dict(params), None
    model_class = schema.RegisteredLlm if kind == "llm" else schema.RegisteredEmbedder
    try:
        model = model_class.model_validate({**params, "type": type_name})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or kind
        raise ComponentError(f"{kind} {type_name!r} {where}: "
                             f"{validation_message(dict(err))}") from None
    return dict(model.model_extra or {}), _limits(model)
