"""The suite file's one schema: typed pydantic models, and the JSON Schema published from them.

Every key a suite file may hold, its type, its range and its default are declared here once;
:mod:`.loader` validates a document against :class:`SuiteModel` and turns the validation errors
into :class:`~pytest_ragbench.errors.SuiteError` messages, and :func:`suite_json_schema` gives
editors the same rules (``ragbench schema > ragbench-suite.schema.json``).

What a model cannot know without the file system or the component registry (whether a file
exists, whether ``bm25`` is a registered retriever, what ``ndcg@10`` means) is checked by the
loader after this shape check. Component parameters (a retriever's ``k1``, a metric's
``lambda``) are open here and checked against the component's own signature by
:meth:`pytest_ragbench.registry.Registry.check`.

Shorthand forms (``dataset: path/to/beir``, ``metrics: "ndcg@10, recall@100"``, ``cache: off``)
are tagged unions picked by the value's shape, so an error names the form that was meant.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from annotated_types import MinLen
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import type_name
from ..http_headers import header_name_problem, header_value_problem, is_http_url, shown_url
from ..results.gates import TESTS
from .model import DEFAULT_CACHE_PATH, KeyPath

# llm.cache.CACHE_MODES (a test keeps them equal); importing it would load numpy and sqlite3
# into `ragbench schema`.
CACHE_MODES = ("on", "off", "read-only", "refresh")

SCHEMA_FILE = "ragbench-suite.schema.json"

# Loc segments pydantic adds for the member of a tagged union; never keys of the document.
SHAPE_TAGS = frozenset({"mapping", "list", "text", "number", "flag", "openai", "extractive",
                        "hashing", "registered", "criteria_metric"})


def key_path(error: Mapping[str, Any], data: Any) -> KeyPath:
    """Where in the document ``data`` a pydantic error (an item of ``errors()``) is.

    Union members add their tag to an error's location; walking the document tells those
    apart from its keys. Our own errors (:func:`fail`) may point further down.
    """
    out: list[str | int] = []
    current = data
    for seg in error["loc"]:
        if isinstance(current, Mapping):
            match = next((k for k in current if k == seg or str(k) == seg), _ABSENT)
            if match is not _ABSENT:
                out.append(str(match))
                current = current[match]
                continue
        elif isinstance(current, list) and isinstance(seg, int) and 0 <= seg < len(current):
            out.append(seg)
            current = current[seg]
            continue
        if isinstance(seg, str) and seg in SHAPE_TAGS:
            continue
        out.append(seg)
        current = None
    if error["type"] == "ragbench":
        out += (error.get("ctx") or {}).get("path", ())
    return tuple(out)


_ABSENT = object()


def fail(message: str, *path: str | int) -> PydanticCustomError:
    """A validation error with our own message, at ``path`` below the value being validated."""
    return PydanticCustomError("ragbench", "{message}", {"message": message, "path": path})


def _shape(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, int | float):
        return "number"
    return None


def _one_of(expected: str, **members: Any) -> Any:
    """A union whose member is chosen by the value's shape (mapping, list, text, number, flag)."""

    def pick(value: Any) -> str | None:
        shape = _shape(value)
        return shape if shape in members else None

    choices = tuple(Annotated[t, Tag(name)] for name, t in members.items())
    return Annotated[Union[choices],  # noqa: UP007 - a runtime-built union needs Union[...]
                     Discriminator(pick, custom_error_type="shape",
                                   custom_error_message=f"expected {expected}")]


# -- scalar types with the messages users see -------------------------------------------------


def _wrapped(check: Callable[[Any], str | None]) -> WrapValidator:
    """Run the declared type (and its constraints) but report failures as ``check`` words them."""

    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            message = check(value)
            raise fail(message or f"invalid value {value!r}") from None

    return WrapValidator(validate)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_words(minimum: int | None) -> Callable[[Any], str | None]:
    def words(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_describe(value)}"
        return f"expected an integer >= {minimum}, got {value}"

    return words


def _range_words(low: float, high: float, what: str) -> Callable[[Any], str]:
    def shown(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    def words(value: Any) -> str:
        if not _is_number(value):
            return f"expected {what}, got {_describe(value)}"
        return f"expected {what} from {shown(low)} to {shown(high)}, got {value!r}"

    return words


#: Far above any use (a hashing embedder's vectors are held per document and query): 2e9
#: asked for 30 GiB at the first case, after the cases' requests were paid for.
MAX_HASHING_DIM = 1 << 20
#: Questions a judge writes per answer for answer relevancy (RAGAS asks for 3).
MAX_QUESTIONS = 50
#: USD per 1M tokens, far above any model's; an absurd one overflowed the cost to infinity.
MAX_PRICE = 1e6


def _positive_words(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected a positive integer, got {value!r}"
    return f"must be a positive integer, got {value}"


#: A number with an exponent that YAML 1.1 (PyYAML) reads as text: it wants a dot in the
#: mantissa and a sign in the exponent (``6.0e+4``), so ``6e4`` and ``1e-3`` are strings.
_EXPONENT_TEXT = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+")


def _as_yaml_number(value: float) -> str:
    """``value`` written so that YAML 1.1 reads it as a number."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent if exponent[0] in '+-' else '+' + exponent}"


def _describe(value: Any) -> str:
    if _is_number(value):
        return repr(value)
    if isinstance(value, str) and _EXPONENT_TEXT.fullmatch(value.strip()):
        number = float(value)
        if math.isfinite(number):
            return (f"the text {value!r} (YAML reads a number in this form as text: "
                    f"write {_as_yaml_number(number)})")
    if isinstance(value, str):
        # the value itself, as the schema's other messages quote it (not "got string")
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return type_name(value)


def _number_words(bound: str) -> Callable[[Any], str]:
    def words(value: Any) -> str:
        if not _is_number(value):
            return f"expected a number, got {_describe(value)}"
        return f"expected a finite number {bound}, got {value!r}"

    return words


def _non_empty(value: Any) -> str:
    return f"expected a non-empty string, got {_describe(value)}"


PositiveInt = Annotated[int, Field(gt=0), _wrapped(_positive_words)]
"""The top-level counts (``k``, ``record_depth``, ``max_queries``)."""
AtLeastOne = Annotated[int, Field(ge=1), _wrapped(_int_words(1))]
AtLeastZero = Annotated[int, Field(ge=0), _wrapped(_int_words(0))]
AnyInt = Annotated[int, _wrapped(_int_words(None))]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False), _wrapped(_number_words(">= 0"))]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False), _wrapped(_number_words("> 0"))]
Share = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False),
                  _wrapped(lambda v: (f"expected a share in (0, 1], got {v!r}" if _is_number(v)
                                      else f"expected a number, got {_describe(v)}"))]
Alpha = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False),
                  _wrapped(lambda v: f"expected a number strictly between 0 and 1, got {v!r}")]
NonEmptyStr = Annotated[str, Field(min_length=1, pattern=r"\S"), _wrapped(_non_empty),
                        AfterValidator(str.strip)]
# Scalars written where a string is meant (query ids, metric names as YAML keys) read as text.
IdText = Annotated[str, BeforeValidator(lambda v: str(v) if _is_number(v) else v),
                 WithJsonSchema({"type": ["string", "number"]})]


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise fail("expected a JSON value (number, string, list, mapping)") from None
    return value


#: Request parameters of OpenAI-compatible chat and embedding APIs that take a number.
_NUMERIC_PARAMS = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p",
                             "seed", "presence_penalty", "frequency_penalty", "dimensions"})


#: What the client builds itself in the keys it refuses from ``params``.
_BUILT = {"messages": "prompt, from generation.template or the judge's own",
          "input": "texts to embed"}


def _request_params(params: dict[str, Any]) -> dict[str, Any]:
    # the client builds each request's model, messages and input itself, and reads one whole
    # JSON reply with one choice: these keys in ``params`` were overridden or broke every reply
    for key, value in params.items():
        if key == "model":
            raise fail("set by ragbench for each request; give the model as the endpoint's "
                       "`model` (llm.model, embedder.model)", key)
        if key in ("messages", "input"):
            # not the model's advice: these are the prompt and the texts each request carries
            raise fail(f"set by ragbench for each request (the {_BUILT[key]}); remove the "
                       "key", key)
        if key == "stream" and value is not False:
            raise fail("streamed replies are not supported: ragbench reads each reply whole "
                       "(remove the key)", key)
        if key == "n" and (isinstance(value, bool) or value != 1):
            raise fail(f"only the first of the choices is read, and each one is paid for: "
                       f"remove the key (got {value!r})", key)
        if key in _NUMERIC_PARAMS and isinstance(value, str):
            # sent as the text, every request was refused (400)
            raise fail(f"expected a number, got {_describe(value)}", key)
    return params


def _http_url(url: str) -> str:
    if not is_http_url(url):
        raise fail(f"expected an http(s) URL with a host, e.g. https://api.openai.com/v1, "
                   f"got {shown_url(url)!r}")
    return url


HttpUrl = Annotated[NonEmptyStr, AfterValidator(_http_url)]


def _headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        problem = header_name_problem(name)
        if problem:
            raise fail(problem)
        problem = header_value_problem(value)
        if problem:
            raise fail(f"the value {problem}", name)
    return headers


Headers = Annotated[dict[str, str], AfterValidator(_headers)]


JsonParams = Annotated[dict[str, Annotated[Any, AfterValidator(_json_value)]],
                       AfterValidator(_request_params)]


def _string_keys(value: Any) -> Any:
    # YAML reads `101:` as an integer key; ids and names are text.
    if isinstance(value, Mapping):
        return {str(k) if _is_number(k) else k: v for k, v in value.items()}
    return value


# -- models -----------------------------------------------------------------------------------


class _Model(BaseModel):
    """Closed mappings: an unknown key is an error naming the closest known key."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and cls.model_config.get("extra") == "forbid" and any(
                key not in cls.model_fields for key in data):
            # not raised here: that ended the mapping's validation, so a typo of one key
            # hid every other problem of the document until it was fixed; pydantic reports
            # each unknown key (extra_forbidden) beside them, its value saying what was meant
            known = list(cls.model_fields)
            return {key: value if key in cls.model_fields
                    else UnknownKey(unknown_key_message(key, known))
                    for key, value in data.items()}
        return data


class UnknownKey:
    """Stands for an unknown key's value while a closed mapping is validated: the input of
    pydantic's error for the key, whose ``unknown_key_message`` names the keys expected."""

    def __init__(self, message: str) -> None:
        self.unknown_key_message = message

    def __repr__(self) -> str:
        return "<unknown key>"


def unknown_key_message(key: Any, known: list[str]) -> str:
    """``unknown key 'x' (did you mean 'y'?) (expected one of: ...)``."""
    match = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    return f"unknown key {key!r}{hint} (expected one of: {', '.join(sorted(known))})"


class _Open(_Model):
    """A mapping whose other keys are a component's parameters, checked by the registry."""

    model_config = ConfigDict(extra="allow")


# dataset ---------------------------------------------------------------------------------------


HF_COLUMNS = {"corpus": ("id", "title", "text"), "queries": ("id", "text"),
              "qrels": ("query_id", "doc_id", "grade")}
"""The fields each part of a Hugging Face dataset may map to a column of its own name."""


class HfPartModel(_Model):
    """One part (corpus, queries or qrels) of a Hugging Face dataset."""

    path: NonEmptyStr | None = Field(
        None, description="a hub name already in the local cache, or a local folder or file "
                          "(parquet, arrow, jsonl, csv, or a save_to_disk folder); default: "
                          "hf.path")
    config: NonEmptyStr | None = Field(None, description="the dataset configuration (name)")
    split: NonEmptyStr | None = Field(
        None, description="the split to read (default: the only split, or the one named "
                          "like the part)")
    columns: dict[str, NonEmptyStr] | None = Field(
        None, description="our field -> the dataset's column, e.g. {id: query-id}")


HfPart = _one_of("a mapping (path, config, split, columns) or a hub name / path",
                 mapping=HfPartModel, text=NonEmptyStr)


class HfModel(_Model):
    """A dataset read with the Hugging Face ``datasets`` library (offline: local files and the
    local cache only)."""

    path: NonEmptyStr | None = Field(
        None, description="hub name (e.g. BeIR/nfcorpus, read from the local cache) or local "
                          "folder; the default path of every part")
    cache_dir: NonEmptyStr | None = Field(
        None, description="the datasets cache folder (default: HF_DATASETS_CACHE)")
    corpus: HfPart | None = Field(
        None, description="the corpus part (default: config corpus, split corpus)")
    queries: HfPart | None = Field(
        None, description="the queries part (default: config queries, split queries)")
    qrels: HfPart | None = Field(
        None, description="the relevance labels, e.g. {path: BeIR/nfcorpus-qrels, split: test}")

    @model_validator(mode="after")
    def _paths(self) -> HfModel:
        if self.path is None:
            for part in ("corpus", "queries"):
                value = getattr(self, part)
                if value is None or (isinstance(value, HfPartModel) and value.path is None):
                    raise fail(f"expected 'path' (the default of every part) or a path for "
                               f"{part!r}")
        for part, known in HF_COLUMNS.items():
            value = getattr(self, part)
            if isinstance(value, HfPartModel) and value.columns:
                for key in value.columns:
                    if key not in known:
                        raise fail(f"unknown field {key!r} (expected one of: "
                                   f"{', '.join(known)})", part, "columns", key)
        return self


HfField = _one_of("a mapping (path, corpus, queries, qrels, cache_dir) or a dataset name/path",
                  mapping=HfModel, text=NonEmptyStr)


UNKNOWN_DOCUMENTS = ("error", "keep", "drop")  # datasets.core.UNKNOWN_DOCUMENTS
UnknownDocuments = Annotated[Literal["error", "keep", "drop"], _wrapped(
    lambda v: f"expected one of {', '.join(UNKNOWN_DOCUMENTS)}, got {v!r}")]


class DatasetModel(_Model):
    """Where the corpus, queries and labels are; paths are relative to the suite file."""

    name: IdText | None = Field(None, description="the dataset's name in reports")
    path: NonEmptyStr | None = Field(
        None, description="a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    split: NonEmptyStr | None = Field(None, description="which qrels/<split>.tsv of `path` to use")
    corpus: NonEmptyStr | None = Field(
        None, description="the corpus file (JSONL, JSON, CSV or TSV); optional when only "
                          "pipelines run")
    queries: NonEmptyStr | None = Field(None, description="the queries file")
    qrels: NonEmptyStr | None = Field(None, description="a qrels file (TREC or BEIR TSV)")
    hf: HfField | None = Field(
        None, description="a Hugging Face dataset (needs the 'hf' extra)")
    ir_datasets: NonEmptyStr | None = Field(
        None, description="an ir_datasets id such as beir/nfcorpus/test, already downloaded "
                          "(needs the 'ir_datasets' extra)")
    query_ids: list[IdText] | None = Field(None, description="run only these queries")
    max_queries: PositiveInt | None = Field(None, description="run at most this many queries")
    answer_field: str | None = Field(
        None, description="dotted key of a query record holding its reference answer")
    unknown_documents: UnknownDocuments = Field(
        "error", description="a label naming a document the corpus lacks: error (the "
                             "default), keep (scored as trec_eval and BEIR do: relevant, never "
                             "retrieved) or drop (the label ignored)")
    documents: list[dict[str, Any]] | None = Field(None, description="the corpus, inline")
    items: list[dict[str, Any]] | None = Field(None, description="the queries, inline")

    @model_validator(mode="after")
    def _sources(self) -> DatasetModel:
        library = "hf" if self.hf is not None else (
            "ir_datasets" if self.ir_datasets is not None else None)
        if library is not None:
            if self.hf is not None and self.ir_datasets is not None:
                raise fail("give either 'hf' or 'ir_datasets', not both", "ir_datasets")
            for key in ("path", "split", "corpus", "queries", "documents", "items"):
                if getattr(self, key) is not None:
                    raise fail(f"{key!r} cannot be combined with {library!r}, which gives the "
                               "corpus and the queries", key)
            if (self.qrels is not None and isinstance(self.hf, HfModel)
                    and self.hf.qrels is not None):
                raise fail("give the labels either as 'qrels' (a file) or as 'hf.qrels', not "
                           "both", "qrels")
            return self
        # Each was ignored without a word: the inline data replaced the file, and 'split'
        # reads only a folder's qrels/<split>.tsv.
        for file_key, inline_key, what in (("corpus", "documents", "corpus"),
                                           ("queries", "items", "queries")):
            if getattr(self, file_key) is not None and getattr(self, inline_key) is not None:
                raise fail(f"give the {what} either as {file_key!r} (a file) or as "
                           f"{inline_key!r} (inline), not both", inline_key)
        if self.split is not None and self.path is None:
            raise fail("'split' picks qrels/<split>.tsv of a BEIR folder given with 'path'; "
                       "name a qrels file with 'qrels'", "split")
        if self.split is not None and self.qrels is not None:
            raise fail("give the labels either as 'split' (qrels/<split>.tsv of 'path') or "
                       "as 'qrels' (a file), not both", "split")
        # the corpus may be left out when only pipelines run (SuiteModel checks that)
        if self.queries is None and self.path is None and self.items is None:
            raise fail("expected 'queries' (a file) or 'items' (inline queries)")
        return self


# components ------------------------------------------------------------------------------------


class RetrieverParams(_Open):
    """A retriever's parameters; ``type`` defaults to the retriever's name."""

    type: NonEmptyStr | None = Field(
        None, description="a registered retriever name or 'package.module:Factory'")
    case_timeout: Positive | None = Field(
        None, description="seconds one retrieval may take; a case past it is an error naming "
                          "the retriever and the limit, and the run goes on")


class RetrieverEntry(RetrieverParams):
    """A retriever in list form: ``{name: ..., type: ..., <parameters>}``."""

    name: IdText = Field(description="the retriever's name in reports and test ids")


class PipelineParams(_Open):
    """A pipeline's parameters; ``type`` defaults to the pipeline's name."""

    type: NonEmptyStr | None = Field(
        None, description="http, recorded, a registered pipeline name or "
                          "'package.module:factory'")
    case_timeout: Positive | None = Field(
        None, description="seconds one answer may take; a case past it is an error naming "
                          "the pipeline and the limit, and the run goes on")


class PipelineEntry(PipelineParams):
    """A pipeline in list form: ``{name: ..., type: ..., <parameters>}``."""

    name: IdText = Field(description="the pipeline's name in reports and test ids")


class MetricEntry(_Open):
    """A metric with parameters: ``{name: temporal_ndcg@10, lambda: 0.5, as: label}``."""

    # editors: a criteria entry has a name too, and matched both members of the oneOf
    model_config = ConfigDict(json_schema_extra={
        "not": {"required": ["type"], "properties": {"type": {"const": "criteria"}}}})
    name: NonEmptyStr = Field(description="a metric name such as ndcg@10")


class CriterionExampleModel(_Model):
    """A scored example shown to the judge with a custom criterion."""

    answer: str = Field(description="an example answer")
    score: AnyInt = Field(description="its score on the criterion's scale")
    question: str | None = Field(None, description="the question it answers")
    why: str | None = Field(None, description="why it gets that score")


CRITERIA_INPUT_NAMES = ("question", "answer", "contexts", "reference")  # judge.CRITERIA_INPUTS
CriteriaInput = Annotated[Literal["question", "answer", "contexts", "reference"], _wrapped(
    lambda v: f"expected one of {', '.join(CRITERIA_INPUT_NAMES)}, got {v!r}")]


def _scale(value: Any) -> Any:
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise fail(f"expected two integers [low, high], got {value!r}")
    if value[0] >= value[1]:
        raise fail(f"expected low < high, got {value!r}")
    return value


Scale = Annotated[list[int], WrapValidator(lambda v, handler: handler(_scale(v))),
                  WithJsonSchema({"type": "array", "items": {"type": "integer"},
                                  "minItems": 2, "maxItems": 2})]


class CriteriaMetricEntry(_Model):
    """A custom-criteria metric graded by the suite's judge in the item's one judge request
    (G-Eval / ``llm-rubric`` style); its score is the judge's grade normalised to 0-1."""

    name: NonEmptyStr = Field(description="the metric's name in records, reports and gates")
    type: Literal["criteria"] = Field(description="criteria")
    criteria: NonEmptyStr = Field(description="the rubric: what the judge grades the answer on")
    scale: Scale = Field([1, 5], description="the integer range [low, high] the judge grades "
                                            "on; low scores 0, high scores 1")
    examples: list[CriterionExampleModel] | None = Field(
        None, description="scored examples that calibrate the judge")
    inputs: list[CriteriaInput] | None = Field(
        None, description="what the judge is shown: question, answer, contexts, reference "
                          "(default: question and answer)")
    direction: Literal["higher", "lower"] = Field(
        "higher", description="whether a higher grade is better")

    @model_validator(mode="after")
    def _examples_on_scale(self) -> CriteriaMetricEntry:
        low, high = self.scale
        for i, example in enumerate(self.examples or ()):
            if not low <= example.score <= high:
                raise fail(f"expected a score from {low} to {high}, got {example.score}",
                           "examples", i, "score")
        return self


def _metric_tag(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    return "criteria_metric" if value.get("type") == "criteria" else "mapping"


MetricMapping = Annotated[
    Union[Annotated[MetricEntry, Tag("mapping")],  # noqa: UP007
          Annotated[CriteriaMetricEntry, Tag("criteria_metric")]],
    Discriminator(_metric_tag, custom_error_type="shape",
                  custom_error_message="expected a mapping with a 'name' key"),
]

MetricName = Annotated[NonEmptyStr, Field(examples=["ndcg@10", "recall@100", "mrr@10"])]

Retrievers = _one_of(
    "a mapping of name -> parameters, a list or a name",
    mapping=Annotated[dict[IdText, RetrieverParams | None], BeforeValidator(_string_keys)],
    list=Annotated[list[_one_of("a retriever name or a mapping with a 'name' key",
                                text=IdText, mapping=RetrieverEntry)], MinLen(1)],
    text=NonEmptyStr,
)

Pipelines = _one_of(
    "a mapping of name -> parameters, a list or a name",
    mapping=Annotated[dict[IdText, PipelineParams | None], BeforeValidator(_string_keys)],
    list=Annotated[list[_one_of("a pipeline name or a mapping with a 'name' key",
                                text=IdText, mapping=PipelineEntry)], MinLen(1)],
    text=NonEmptyStr,
)

Metrics = _one_of(
    "a non-empty list of metric names, e.g. [ndcg@10]",
    list=Annotated[list[_one_of("a metric name or a mapping with a 'name' key",
                                text=MetricName, mapping=MetricMapping)], MinLen(1)],
    text=NonEmptyStr,
)

GateValue = _one_of("a number or an expression like '>= 0.5'",
                    number=float, text=str, flag=bool)
Gates = _one_of(
    "a mapping of metric -> expression, or a list of expressions",
    mapping=Annotated[dict[IdText, _one_of("a number, an expression or a list of them",
                                           number=float, text=str, flag=bool,
                                           list=list[GateValue])],
                      BeforeValidator(_string_keys)],
    list=list[str],
)
Thresholds = Annotated[dict[IdText, GateValue], BeforeValidator(_string_keys)]

Tolerance = _one_of("a tolerance like 0.02 or '5%'", number=float, text=str, flag=bool)


Tolerances = _one_of("a tolerance like 0.02 or '5%', or a mapping of metric -> tolerance",
                     number=float, text=str, flag=bool,
                     mapping=Annotated[dict[IdText, Tolerance], BeforeValidator(_string_keys)])
TestName = Annotated[Literal[TESTS], _wrapped(  # type: ignore[valid-type]
    lambda v: f"unknown test {v!r}: expected one of {', '.join(TESTS)}")]


class BaselineModel(_Model):
    """How runs are compared against a saved baseline."""

    tolerance: Tolerances | None = Field(
        None, description="allowed drop: absolute (0.02) or relative ('5%'), or per metric; "
                          "not applied to latency_ms (or any *_ms), which varies from run to run: "
                          "give it a tolerance by name")
    require_same_dataset: bool = Field(
        False, description="refuse to compare against a baseline of another dataset")
    test: TestName = Field(
        "permutation", description="the paired significance test")
    alpha: Alpha = Field(0.05, description="significance level of the paired test")


Xfail = _one_of(
    "a mapping of query id -> reason, or a list of query ids",
    mapping=Annotated[dict[IdText, Annotated[str, _wrapped(
        lambda v: f"expected a reason string, got {_describe(v)}")]],
        BeforeValidator(_string_keys)],
    list=list[IdText],
)


# the generation / judging part -----------------------------------------------------------------


def _auto_word(value: str) -> str:
    if value.strip().lower() != "auto":
        raise fail(f"expected a whole number >= 1, 'auto' or {{auto: true, max: N}}, "
                   f"got {value!r}")
    return "auto"


AutoWord = Annotated[str, AfterValidator(_auto_word), WithJsonSchema({"const": "auto"})]


class ConcurrencyAutoModel(_Model):
    """Adaptive concurrency: grows while the endpoint keeps up, backs off on 429s, timeouts
    and Retry-After; shared by the whole run (all workers)."""

    auto: Literal[True] = Field(description="must be true")
    max: AtLeastOne = Field(64, description="the upper bound of the level")
    start: AtLeastOne = Field(4, description="the level to start at (at most max)")

    @model_validator(mode="after")
    def _start_within_max(self) -> ConcurrencyAutoModel:
        # the level never leaves [1, max]; only the default start gives way to a lower max
        if "start" in self.model_fields_set and self.start > self.max:
            bound = str(self.max) if "max" in self.model_fields_set else \
                f"{self.max}, the default"
            raise fail(f"expected at most max ({bound}), got {self.start}", "start")
        return self


Concurrency = _one_of("a whole number >= 1, 'auto' or {auto: true, max: N}",
                      number=AtLeastOne, text=AutoWord, mapping=ConcurrencyAutoModel)


class EndpointModel(_Model):
    """An OpenAI-compatible endpoint (secrets only by environment variable name)."""

    base_url: HttpUrl = Field(description="e.g. https://api.openai.com/v1")
    model: NonEmptyStr = Field(description="the model name sent with each request")
    api_key_env: NonEmptyStr | None = Field(
        None, description="the environment variable holding the API key")
    params: JsonParams | None = Field(None, description="request parameters (temperature, ...)")
    headers: Headers | None = Field(
        None, description="extra request headers; ${VAR} expands environment variables")
    timeout: Positive = Field(60.0, description="seconds per request attempt")
    case_timeout: Positive | None = Field(
        None, description="seconds one call may take, retries included; waiting for one of "
                          "the run's slots is not counted")
    concurrency: Concurrency = Field(
        16, description="requests in flight at once for the whole run (all workers): a "
                        "number, 'auto' (adaptive up to 64) or {auto: true, max: N, start: N}")
    retries: AtLeastZero = Field(4, description="retries after the first attempt")
    backoff: NonNegative = Field(0.5, description="base delay of the exponential backoff, s")
    rpm: Positive | None = Field(None, description="requests per minute limit")
    tpm: Positive | None = Field(None, description="tokens per minute limit")


class OpenAILlm(EndpointModel):
    """A chat model behind an OpenAI-compatible endpoint."""

    type: Literal["openai"] = "openai"


class ExtractiveLlm(_Model):
    """The offline provider: answers with the best-matching context sentence."""

    type: Literal["extractive"]
    threshold: Share = Field(0.4, description="share of question words a sentence must hold")
    max_sentences: AtLeastOne = 1
    concurrency: AtLeastOne = 16


class OpenAIEmbedderModel(EndpointModel):
    """Embeddings from an OpenAI-compatible endpoint."""

    type: Literal["openai"] = "openai"
    batch_size: AtLeastOne = Field(128, description="texts per request")


class HashingEmbedderModel(_Model):
    """The offline embedder (signed feature hashing)."""

    type: Literal["hashing"]
    dim: Annotated[int, Field(ge=2, le=MAX_HASHING_DIM),
                   _wrapped(_range_words(2, MAX_HASHING_DIM, "an integer"))] = 256


BUILTIN_LLMS = ("openai", "extractive")
BUILTIN_EMBEDDERS = ("openai", "hashing")


def _other_type(builtins: tuple[str, ...]) -> WithJsonSchema:
    # editors: a built-in type name selects the built-in's own (closed) schema instead
    return WithJsonSchema({"type": "string", "minLength": 1, "not": {"enum": list(builtins)}})


class _CallKeys(_Open):
    """The keys of a registered provider that set how it is called (retries, limits), the
    same as an openai endpoint's; they are not passed to its factory."""

    concurrency: Concurrency = Field(
        16, description="calls in flight at once for the whole run (all workers): a number, "
                        "'auto' or {auto: true, max: N, start: N}")
    retries: AtLeastZero = Field(
        4, description="retries after the first attempt of a call that failed with a "
                       "retryable error (ProviderError, status 408/429/5xx, timeouts)")
    backoff: NonNegative = Field(0.5, description="base delay of the exponential backoff, s")
    rpm: Positive | None = Field(None, description="calls per minute limit")
    tpm: Positive | None = Field(None, description="tokens per minute limit")
    timeout: Positive | None = Field(None, description="seconds per attempt (default: none)")
    case_timeout: Positive | None = Field(
        None, description="seconds one call may take, retries included; waiting for one of "
                          "the run's slots is not counted")


class RegisteredLlm(_CallKeys):
    """An LLM of any registered type: a conftest registration, an installed package's
    ``ragbench.llms`` entry point or ``'package.module:Factory'``; the other keys are the
    factory's parameters (checked against its signature when the suite is collected)."""

    type: Annotated[NonEmptyStr, _other_type(BUILTIN_LLMS)] = Field(
        description="a registered LLM name or 'package.module:Factory'")


class RegisteredEmbedder(_CallKeys):
    """An embedder of any registered type (``ragbench.embedders`` entry point, conftest,
    ``'package.module:Factory'``); the other keys are the factory's parameters."""

    type: Annotated[NonEmptyStr, _other_type(BUILTIN_EMBEDDERS)] = Field(
        description="a registered embedder name or 'package.module:Factory'")


def _registered_tag(default: str, builtins: tuple[str, ...]) -> Callable[[Any], str | None]:
    """The union member of a provider mapping: a built-in by its type, else 'registered'."""

    def tag(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return None
        chosen = value.get("type", default)
        return chosen if chosen in builtins else "registered"

    return tag


def _typed(kind: str, known: tuple[str, ...], default: str) -> Callable[[Any], Any]:
    """Name an unknown ``type`` of a provider before the union would list its tags."""

    def check(value: Any) -> Any:
        if isinstance(value, Mapping):
            chosen = value.get("type", default)
            if chosen not in known:
                match = difflib.get_close_matches(str(chosen), known, n=1, cutoff=0.6)
                hint = f" (did you mean {match[0]!r}?)" if match else ""
                raise fail(f"unknown {kind} type {chosen!r}{hint}; known: {', '.join(known)}",
                           "type")
        return value

    return check


def _type_tag(default: str) -> Callable[[Any], str | None]:
    def tag(value: Any) -> str | None:
        return value.get("type", default) if isinstance(value, Mapping) else None

    return tag


# Any other type is a registered component, checked against the registry by whoever holds
# it (the plugin at collection, parse_rag_config against built-ins and entry points).
Llm = Annotated[
    Union[Annotated[OpenAILlm, Tag("openai")],  # noqa: UP007
          Annotated[ExtractiveLlm, Tag("extractive")],
          Annotated[RegisteredLlm, Tag("registered")]],
    Discriminator(_registered_tag("openai", BUILTIN_LLMS), custom_error_type="shape",
                  custom_error_message="expected a mapping with a 'type' (openai, extractive "
                                       "or a registered LLM)"),
]

Embedder = Annotated[
    Union[Annotated[OpenAIEmbedderModel, Tag("openai")],  # noqa: UP007
          Annotated[HashingEmbedderModel, Tag("hashing")],
          Annotated[RegisteredEmbedder, Tag("registered")]],
    Discriminator(_registered_tag("openai", BUILTIN_EMBEDDERS), custom_error_type="shape",
                  custom_error_message="expected a mapping with a 'type' (openai, hashing or "
                                       "a registered embedder)"),
]


def _same(value: Any) -> Any:
    if value != "same":
        raise fail(f"expected 'same' or a mapping, got {value!r}")
    return value


MAX_ITEMS_PER_CALL = 50  # judge.MAX_ITEMS_PER_CALL
ItemsPerCall = Annotated[
    int, Field(ge=1, le=MAX_ITEMS_PER_CALL),
    _wrapped(lambda v: f"expected an integer from 1 to {MAX_ITEMS_PER_CALL}, got "
                       f"{_describe(v)}")]

JudgeMode = Annotated[Literal["batched", "per_metric"], _wrapped(
    lambda v: f"expected 'batched' or 'per_metric', got {v!r}")]
JudgeLlm = _one_of("'same' or a mapping",
                   text=Annotated[Literal["same"], BeforeValidator(_same)], mapping=Llm)


class JudgeModel(_Model):
    """The LLM judge of faithfulness, context precision/recall, answer correctness, ..."""

    llm: JudgeLlm = Field(
        "same", description="'same' (the generation LLM) or an LLM of its own")
    mode: JudgeMode = Field(
        "batched", description="one call for all judged metrics of a case, or one per metric")
    # a judge asked for 1e20 questions answered with fewer: every case's reply was refused
    n_questions: Annotated[int, Field(ge=1, le=MAX_QUESTIONS),
                           _wrapped(_range_words(1, MAX_QUESTIONS, "an integer"))] = Field(
        3, description="questions generated for answer relevancy")
    params: JsonParams | None = Field(None, description="request parameters of judge calls")
    items_per_call: ItemsPerCall = Field(
        1, description="items judged in one request (several items judged at the same time "
                       "share a call; each item's verdicts are validated on their own)")

    @model_validator(mode="after")
    def _can_judge(self) -> JudgeModel:
        if isinstance(self.llm, ExtractiveLlm):
            raise fail("the extractive provider cannot judge (it does not write the judge's "
                       "JSON); use an openai endpoint", "llm", "type")
        return self


class GenerationModel(_Model):
    """How answers are generated."""

    contexts: AtLeastOne = Field(5, description="retrieved contexts put into the prompt")
    template: NonEmptyStr | None = Field(
        None, description="inline Jinja2 prompt, or the path of a template file")
    template_file: NonEmptyStr | None = Field(None, description="path of a Jinja2 prompt file")
    timeout: Positive | None = Field(
        None, description="seconds one case's generation and judging may take in all (the "
                          "time all its calls wait for the run's slots is not counted); a "
                          "case past it is an error naming the stage and the limit")

    @model_validator(mode="after")
    def _one_template(self) -> GenerationModel:
        if self.template is not None and self.template_file is not None:
            raise fail("give either 'template' or 'template_file', not both")
        return self


def _cache_mode(value: Any) -> str:
    # YAML 1.1 reads bare on/off as booleans
    if value is True:
        return "on"
    if value is False:
        return "off"
    if value in CACHE_MODES:
        return str(value)
    raise fail(f"expected one of {', '.join(CACHE_MODES)}, got {value!r}")


CacheMode = Annotated[
    Any, AfterValidator(_cache_mode),
    WithJsonSchema({"oneOf": [{"enum": list(CACHE_MODES)}, {"type": "boolean"}]}),
]


class CacheModel(_Model):
    """The LLM response cache."""

    path: NonEmptyStr = Field(DEFAULT_CACHE_PATH, description="relative to the suite file")
    mode: CacheMode = Field("on", description="on, off, read-only or refresh")


Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False),
                  _wrapped(_range_words(0, MAX_PRICE, "a number (USD per 1M tokens)"))]


class PriceModel(_Model):
    """USD per 1M tokens."""

    prompt: Price
    completion: Price


CacheField = _one_of("a mapping (path, mode) or a mode", mapping=CacheModel, text=CacheMode,
                     flag=CacheMode)

Prices = Annotated[dict[str, PriceModel], BeforeValidator(_string_keys)]


class RagFields(_Model):
    """The generation and judging keys of a suite.

    Also the input of :func:`~pytest_ragbench.answers.config.parse_rag_config`.
    """

    llm: Llm | None = Field(
        None, description="the generation LLM (openai-compatible endpoint or the offline "
                          "extractive one)")
    judge: JudgeModel | None = Field(
        None, description="the LLM judge for faithfulness, context precision/recall, ...")
    embedder: Embedder | None = Field(None, description="the embedder for answer relevancy")
    generation: GenerationModel | None = Field(
        None, description="how answers are generated (contexts, prompt template)")
    cache: CacheField | None = Field(
        None, description="the LLM response cache (path, mode)")
    prices: Prices | None = Field(
        None, description="USD per 1M prompt/completion tokens, per model")
    max_cost: NonNegative | None = Field(
        None, description="stop paid LLM calls once this many USD are spent")
    runs: AtLeastOne = Field(1, description="repeat generation and judging this many times")
    seed: AnyInt = Field(0, description="seed for LLM calls and bootstrap confidence intervals")

    RAG_KEYS: ClassVar[tuple[str, ...]] = (
        "llm", "judge", "embedder", "generation", "cache", "prices", "max_cost", "runs")

    @model_validator(mode="after")
    def _consistent(self) -> RagFields:
        judge_llm = self.judge.llm if self.judge is not None else None
        if judge_llm == "same" and isinstance(self.llm, ExtractiveLlm):
            raise fail("'same' would make the extractive provider judge, and it cannot write "
                       "the judge's JSON; give the judge an openai endpoint", "judge", "llm")
        paid = isinstance(self.llm, OpenAILlm) or isinstance(judge_llm, OpenAILlm)
        if self.max_cost is not None and paid and self.prices is None:
            raise fail("needs 'prices' to know what the LLM calls cost", "max_cost")
        return self

    def paid_models(self) -> list[tuple[tuple[str, ...], str]]:
        """(key path, model) of each paid chat model the suite uses."""
        out: list[tuple[tuple[str, ...], str]] = []
        if isinstance(self.llm, OpenAILlm):
            out.append((("llm", "model"), self.llm.model))
        if self.judge is not None and isinstance(self.judge.llm, OpenAILlm):
            out.append((("judge", "llm", "model"), self.judge.llm.model))
        return out


DatasetField = _one_of("a mapping or the path of a BEIR-layout folder",
                       mapping=DatasetModel, text=NonEmptyStr)


class SuiteModel(RagFields):
    """A suite file: a dataset, the retrievers to run, the metrics, thresholds and gates."""

    model_config = ConfigDict(title="pytest-ragbench suite")

    name: str | None = Field(None, description="a short name for reports (default: the file "
                                               "name without its suffixes)")
    description: str | None = Field(None, description="free text")
    dataset: DatasetField = Field(
        description="where the corpus, queries and labels are")
    retrievers: Retrievers | None = Field(
        None, description="the retrievers to run, by name (a suite needs retrievers, "
                          "pipelines or both)")
    pipelines: Pipelines | None = Field(
        None, description="the RAG systems under test (http, recorded, a Python factory), by "
                          "name: each answers every question")
    metrics: Metrics = Field(description="metric names such as ndcg@10")
    k: PositiveInt | None = Field(
        None, description="how many documents each retriever returns (default: the largest "
                          "metric cutoff, 1000 for uncut measures)")
    thresholds: Thresholds | None = Field(
        None, description="per-query minimums: an item fails below them")
    gates: Gates | None = Field(None, description="suite gates on the means")
    baseline: BaselineModel | None = Field(
        None, description="baseline comparison settings (tolerance, require_same_dataset, "
                          "test, alpha)")
    record_depth: PositiveInt = Field(
        20, description="how many retrieved documents each record keeps for reports")
    xfail: Xfail | None = Field(
        None, description="known failures: query id -> reason (reported as xfailed)")

    @model_validator(mode="after")
    def _systems(self) -> SuiteModel:
        if self.retrievers is None and self.pipelines is None:
            raise fail("expected 'retrievers' or 'pipelines' (the systems to test), or both")
        dataset = self.dataset
        if (self.retrievers is not None and isinstance(dataset, DatasetModel)
                and dataset.path is None and dataset.corpus is None
                and dataset.documents is None and dataset.hf is None
                and dataset.ir_datasets is None):
            raise fail("expected 'path' (a BEIR-layout folder), 'corpus' (a file), "
                       "'documents' (inline), 'hf' or 'ir_datasets': retrievers search a "
                       "corpus", "dataset")
        return self


def required_keys() -> dict[str, str]:
    """Required top-level keys and what they hold, for 'missing required key' messages."""
    return {name: f.description or "" for name, f in SuiteModel.model_fields.items()
            if f.is_required()}


#: The top-level key by which a JSON suite names its JSON Schema for editors (the loader
#: reads nothing from it; a YAML suite names it in a ``# yaml-language-server:`` comment).
SCHEMA_KEY = "$schema"


def suite_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a suite file, generated from :class:`SuiteModel`."""
    schema = SuiteModel.model_json_schema(mode="validation")
    schema["properties"] = {
        SCHEMA_KEY: {"type": "string", "description": "the URL or path of this JSON Schema, "
                                                      "for editors (the plugin ignores it)"},
        **schema["properties"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "description": "A pytest-ragbench suite file (YAML or JSON). Paths are relative to "
                       "the suite file.",
    }
