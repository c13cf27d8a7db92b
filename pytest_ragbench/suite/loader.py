"""Reading a suite file: bytes -> YAML/JSON document -> :class:`.schema.SuiteModel` -> Suite.

A suite file (YAML or JSON) names a dataset, the retrievers to run, the metrics to compute, the
per-query thresholds (an item fails below them) and the suite gates (the run fails when a mean
misses them). Paths resolve relative to the suite file. Every mistake is a
:class:`~pytest_ragbench.errors.SuiteError` naming the file, the key path and, for YAML, the line:
the bytes (encoding, readability), the document (YAML syntax, duplicate keys, nesting depth,
alias expansion), its shape (the schema) and what only the file system and the registry can
tell (files, component and metric names, templates, cutoffs against ``k``).
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..datasets import DataFileError, DatasetSpec, HfPart, HfSpec, check_file
from ..datasets.core import ANSWER_KEYS, ID_KEYS, has_control_characters
from ..errors import (
    ComponentError,
    ParamError,
    SuiteError,
    did_you_mean,
    type_name,
    validation_message,
)
from ..metrics.spec import MetricSpec, resolve_metric
from ..results.gates import (
    ERROR_RATE,
    BaselineSettings,
    Gate,
    GateCheck,
    Tolerance,
    bound_problem,
    check_key,
    parse_gate,
    parse_gate_list,
    parse_tolerance,
    scope_retriever,
    tolerance_problem,
)
from .model import ComponentSpec, Lines, Suite, key_str
from .schema import SCHEMA_KEY, KeyPath, SuiteModel, key_path, required_keys

# Bounds on the document, far above any real suite: a YAML alias bomb (a few hundred bytes that
# expand to billions of nodes) or thousands of nested brackets must fail fast, not hang or
# exhaust the stack.
MAX_DEPTH = 64
MAX_NODES = 200_000

#: PyYAML's LibYAML-backed loader where PyYAML was built with it (its wheels are), about ten
#: times faster than the pure-Python one, which still reads what LibYAML refuses (see
#: :func:`parse_document`).
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MetricResolver = Callable[[str, Mapping[str, Any]], MetricSpec]
#: Checks one system's parameters without building it: (kind, its spec, the suite's
#: retrievers) -> None, or ComponentError.
SystemChecker = Callable[[str, ComponentSpec, Sequence[ComponentSpec]], None]

# -- bytes -> text ----------------------------------------------------------------------------


def read_text(path: Path) -> tuple[bytes, str]:
    """The file's bytes and its text; SuiteError for anything that is not readable UTF-8."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SuiteError("suite file not found", file=path) from None
    except OSError as exc:
        raise SuiteError(_os_problem(exc), file=path) from None
    if not stat.S_ISREG(st.st_mode):
        # a FIFO or device would block or never end
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise SuiteError(f"is {what}; expected a suite file (.yaml, .yml or .json)", file=path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(_os_problem(exc), file=path) from None
    return raw, decode(raw, path)


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "cannot read the suite file: symbolic link loop"
    return f"cannot read the suite file: {exc.strerror or exc}"


def decode(raw: bytes, path: Path) -> str:
    """UTF-8 text (a BOM is allowed); UTF-16/32 and undecodable bytes are named precisely."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if raw.startswith(bom):
            raise SuiteError(f"the file is {name} encoded; save it as UTF-8", file=path)
    if b"\x00" in raw[:4096]:
        raise SuiteError("the file contains NUL bytes (UTF-16 without a byte order mark?); "
                         "save it as UTF-8", file=path,
                         line=raw[: raw.index(b"\x00")].count(b"\n") + 1)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SuiteError(f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {column} cannot be "
                         "decoded; save the file as UTF-8", file=path, line=line) from None


# -- text -> document -------------------------------------------------------------------------


def _yaml_error(exc: yaml.YAMLError, path: Path) -> SuiteError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return SuiteError(f"not valid YAML/JSON: {problem}", file=path,
                      line=mark.line + 1 if mark is not None else None)


def _check_size(text: str, path: Path, loader: type[yaml.SafeLoader]) -> None:
    """Bound nesting depth and node count after alias expansion, from the event stream.

    The parser is a state machine (no recursion), so this pass is safe on any input; the
    composer and constructor that follow recurse per level and expand every alias.
    """
    open_sizes: list[list[Any]] = []  # [size, anchor] per open collection
    sizes: dict[str, int] = {}
    for event in yaml.parse(text, Loader=loader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if len(open_sizes) >= MAX_DEPTH:
                raise SuiteError(f"nested more than {MAX_DEPTH} levels deep", file=path,
                                 line=line)
            open_sizes.append([1, event.anchor])
            continue
        if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            size, anchor = open_sizes.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for _, anchor in open_sizes):
                raise SuiteError(f"alias *{event.anchor} refers to a node that contains it",
                                 file=path, line=line)
            size = sizes.get(event.anchor, 1)
        else:
            continue
        if open_sizes:
            open_sizes[-1][0] += size
            if open_sizes[-1][0] > MAX_NODES:
                raise SuiteError(f"the document expands to more than {MAX_NODES} values "
                                 "(YAML aliases repeat what they point to); write the values "
                                 "out or use fewer aliases", file=path, line=line)


#: Plain numbers YAML 1.1 (PyYAML) reads otherwise than YAML 1.2 and JSON do: a leading zero
#: makes an octal number (``010`` is 8, not 10), colons a base-60 one (``1:30`` is 90).
_OCTAL = re.compile(r"[-+]?0[0-7_]+")
_BASE_60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")


def _is_id_path(where: KeyPath) -> bool:
    """Whether the node at ``where`` is a query or document id (read as written, see
    :func:`_ids_as_written`)."""
    if where[:1] == ("xfail",) or where[:2] == ("dataset", "query_ids"):
        return True
    if len(where) < 4 or where[:2] not in (("dataset", "documents"), ("dataset", "items")):
        return False
    if len(where) == 4:
        return where[3] in ID_KEYS
    # the ids a list of relevant documents names (a mapping's values are grades)
    return where[1] == "items" and where[3] == "relevant" and isinstance(where[4], int)


def _is_answer_path(where: KeyPath, answer_field: tuple[str, ...] = ()) -> bool:
    """Whether the node at ``where`` is an inline query's reference answer, or one of a list
    of them (read as written, see :func:`_ids_as_written`): under one of the answer keys, or
    under the dotted key ``answer_field`` names (its parts), which may lie under an answer
    key (``answer.text``)."""
    if len(where) < 4 or where[:2] != ("dataset", "items"):
        return False
    for key in (*((k,) for k in ANSWER_KEYS), answer_field):
        n = 3 + len(key)
        if key and where[3:n] == key and (
                len(where) == n or (len(where) == n + 1 and isinstance(where[n], int))):
            return True
    return False


def _answer_field(root: yaml.Node) -> tuple[str, ...]:
    """The parts of the suite's ``dataset.answer_field`` (none when it has no such string)."""
    node: yaml.Node | None = root
    for key in ("dataset", "answer_field"):
        node = next((v for k, v in reversed(node.value) if isinstance(k, yaml.ScalarNode)
                     and k.value == key), None) if isinstance(node, yaml.MappingNode) else None
    if isinstance(node, yaml.ScalarNode) and node.value:
        return tuple(node.value.split("."))
    return ()


def _unclear_number(node: yaml.ScalarNode, where: KeyPath, path: Path,
                    answer_field: tuple[str, ...] = ()) -> SuiteError | None:
    """The error for a plain number YAML 1.1 reads otherwise than JSON and YAML 1.2 would,
    outside ids and answers (which keep their text): a suite's ``k: 010`` would silently be
    8."""
    if node.style or node.tag not in _NOT_TEXT_TAGS or _is_id_path(where) \
            or _is_answer_path(where, answer_field):
        return None
    text = node.value
    if _OCTAL.fullmatch(text):
        digits = text.replace("_", "")
        value, decimal = int(digits, 8), int(digits, 10)
        if value == decimal:  # 007: 7 either way
            return None
        why = (f"{text} is the octal number {value} in YAML (a leading zero), not {decimal}: "
               f"write {value}, or {decimal} without the leading zero")
    elif _BASE_60.fullmatch(text):
        why = (f"{text} is a base-60 number in YAML (its colons): write the number you mean, "
               "or quote it for text")
    else:
        return None
    return SuiteError(why, file=path, key=key_str(where) or None, line=node.start_mark.line + 1)


def _map_lines(root: yaml.Node, path: Path) -> Lines:
    """Key path -> line of every node; duplicate keys are an error naming both lines, and so
    is a plain number YAML reads otherwise than JSON would (see :func:`_unclear_number`)."""
    lines: dict[KeyPath, int] = {(): root.start_mark.line + 1}
    answer_field = _answer_field(root)
    todo: list[tuple[yaml.Node, KeyPath]] = [(root, ())]
    while todo:
        node, where = todo.pop()
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k_node, v_node in node.value:
                if not isinstance(k_node, yaml.ScalarNode):
                    continue
                line = k_node.start_mark.line + 1
                if k_node.tag == "tag:yaml.org,2002:merge":
                    todo.append((v_node, where))
                    continue
                ident = (k_node.tag, k_node.value)
                if ident in first:
                    raise SuiteError(
                        f"duplicate key {k_node.value!r} (first at line {first[ident]}, again "
                        f"at line {line})", file=path, key=key_str((*where, k_node.value)),
                        line=line)
                first[ident] = line
                lines.setdefault((*where, k_node.value), line)
                todo.append((v_node, (*where, k_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*where, i), item.start_mark.line + 1)
                todo.append((item, (*where, i)))
        elif isinstance(node, yaml.ScalarNode) and (
                error := _unclear_number(node, where, path, answer_field)):
            raise error
    return Lines(lines)


def parse_document(text: str, path: Path) -> tuple[Any, Lines]:
    """The YAML/JSON document in ``text`` and its line map; SuiteError when unreadable."""
    if SAFE_LOADER is not yaml.SafeLoader:
        try:
            return _parse_document(text, path, SAFE_LOADER)
        except (yaml.YAMLError, UnicodeEncodeError):
            # LibYAML refuses some documents the pure-Python loader reads (the surrogate-pair
            # escapes JSON writers use for characters outside the BMP) and words its errors
            # its own way (its 1000-level nesting bound, lone surrogates): the pure-Python
            # loader decides, as it always has
            pass
    try:
        return _parse_document(text, path, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from None
    except RecursionError:  # cannot happen below MAX_DEPTH; a message beats a traceback
        raise SuiteError(f"nested too deeply (more than {MAX_DEPTH} levels)", file=path) from None


def _parse_document(text: str, path: Path, loader_type: type[yaml.SafeLoader]
                    ) -> tuple[Any, Lines]:
    _check_size(text, path, loader_type)
    loader = loader_type(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, Lines()
        lines = _map_lines(node, path)
        data = loader.construct_document(node)
        return _ids_as_written(node, data, lambda n: loader.construct_object(n, deep=True)), lines
    finally:
        loader.dispose()


#: Tags YAML gives a plain scalar that reads as something else than text: an id written so
#: is not the value they make of it (``007`` and ``7`` are both 7, ``010`` is 8 in YAML 1.1,
#: ``1:30`` is 90, ``1.10`` is 1.1, ``no`` is False, ``2024-1-1`` is a date).
_NOT_TEXT_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool",
                                                              "timestamp"))


def _as_written(node: yaml.Node, value: Any, keep: tuple[type, ...] = (int,)) -> Any:
    """A plain scalar's text where YAML read it as a number, boolean or date, unless it is
    of a type in ``keep`` (what the reader of the ids took before this rule: whole numbers,
    for query ids numbers) and reads back as that text: ``1`` stays the number 1, whose id
    is ``"1"`` all the same, so that the document the suite's settings hash is taken of is
    as it was. Everything else was refused as an id or read as another one."""
    # plain (unquoted): style None, or "" from LibYAML
    if isinstance(node, yaml.ScalarNode) and not node.style and node.tag in _NOT_TEXT_TAGS \
            and not (type(value) in keep and str(value) == node.value):
        return node.value
    return value


def _ids_as_written(root: yaml.Node, data: Any, construct: Callable[[yaml.Node], Any]) -> Any:
    """``data`` with every query and document id it names as the suite file writes it: the
    ids of its inline documents and queries (``dataset.documents``, ``dataset.items``), the
    document ids a query's ``relevant`` names, ``dataset.query_ids`` and ``xfail``'s query
    ids. The dataset's files keep an id's text, and so does a suite. So do an inline query's
    reference answers: a yes/no question's ``reference_answer: no`` is the answer "no", not
    YAML's False (which the reader dropped: the query had no reference), and ``1:30`` or
    ``2024-01-01`` are the answers written, not a number or a date. ``construct`` makes a
    node's value (a mapping of ids is made again from its nodes: YAML kept one of two keys it
    read as the same number). ``construct_document`` has flattened merge keys (``<<``) into
    the nodes' pairs, the merged ones first: the last of equal keys wins, as in ``data``."""
    def child(node: yaml.Node | None, key: str) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return v
        return None

    if not isinstance(data, dict):
        return data
    if "xfail" in data:
        data["xfail"] = _texts(child(root, "xfail"), data["xfail"], construct, (int, float))
    dataset = child(root, "dataset")
    if not isinstance(data.get("dataset"), dict) or dataset is None:
        return data
    if "query_ids" in data["dataset"]:
        data["dataset"]["query_ids"] = _texts(child(dataset, "query_ids"),
                                              data["dataset"]["query_ids"], construct,
                                              (int, float))
    for part in ("documents", "items"):
        records, nodes = data["dataset"].get(part), child(dataset, part)
        if not isinstance(records, list) or not isinstance(nodes, yaml.SequenceNode) \
                or len(records) != len(nodes.value):
            continue
        for record, node in zip(records, nodes.value, strict=True):
            if not isinstance(record, dict) or not isinstance(node, yaml.MappingNode):
                continue
            # the last pair of a key is the record's (a merge key's pairs come first)
            own = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            for key, v in own.items():
                if key not in record:
                    continue
                if key in ID_KEYS:
                    record[key] = _as_written(v, record[key])
                elif key == "relevant" and part == "items":
                    record[key] = _texts(v, record[key], construct)
                elif key in ANSWER_KEYS and part == "items":
                    record[key] = _answers_as_written(v, record[key], construct)
            field = data["dataset"].get("answer_field")
            if part == "items" and isinstance(field, str) and field:
                # the answers an answer_field names (metadata.answer: no), the same way
                *parents, leaf = field.split(".")
                holder, holder_node = record, node
                for name in parents:
                    holder, holder_node = holder.get(name), child(holder_node, name)
                    if not isinstance(holder, dict):
                        break
                else:
                    leaf_node = child(holder_node, leaf)
                    if leaf in holder and leaf_node is not None:
                        holder[leaf] = _answers_as_written(leaf_node, holder[leaf], construct)
    return data


def _answers_as_written(node: yaml.Node, value: Any,
                        construct: Callable[[yaml.Node], Any]) -> Any:
    """An inline query's reference answer(s) as written (see :func:`_ids_as_written`).

    Numbers that read back as written stay numbers (the suite document, whose hash the
    resume's case keys hold, is unchanged for them). YAML's ``.nan`` and ``.inf`` stay
    floats: no answer, as a NaN is in a dataset file (``datasets.core._answer_texts``), not
    the answer ".nan"."""
    def one(scalar: yaml.Node, read: Any) -> Any:
        if isinstance(read, float) and not math.isfinite(read):
            return read
        return _as_written(scalar, read, (int, float))

    if isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        return [one(n, construct(n)) for n in node.value]
    return _texts(node, one(node, value), construct, (int, float))


def _texts(node: yaml.Node | None, value: Any, construct: Callable[[yaml.Node], Any],
           keep: tuple[type, ...] = (int,)) -> Any:
    """A list of ids, or a mapping keyed by ids, with the ids as written (see
    :func:`_ids_as_written` and, for ``keep``, :func:`_as_written`); anything else as it
    is."""
    if isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        return [_as_written(n, construct(n), keep) for n in node.value]
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        return {_as_written(k, construct(k), keep): construct(v) for k, v in node.value}
    return value


# -- document -> model ------------------------------------------------------------------------


class _Ctx:
    def __init__(self, file: Path, lines: Lines) -> None:
        self.file = file
        self.lines = lines

    def error(self, path: Sequence[Any], message: str) -> SuiteError:
        return SuiteError(message, file=self.file, key=key_str(path) or None,
                          line=self.lines.get(path))


def validation_problems(exc: ValidationError, data: Any, ctx: _Ctx
                        ) -> dict[KeyPath, SuiteError]:
    """The problems of a validation error by key path: every one, not the first only (a
    user fixed one, ran again and met the next); one per key (the first pydantic names for
    it)."""
    required = required_keys()
    found: dict[tuple[Any, ...], SuiteError] = {}
    for err in exc.errors():
        path = tuple(key_path(err, data))
        if path in found:
            continue
        if err["type"] == "missing" and len(path) == 1 and path[0] in required:
            found[path] = ctx.error((), f"missing required key {path[0]!r} "
                                        f"({required[str(path[0])]})")
        else:
            found[path] = ctx.error(path, validation_message(dict(err)))
    return found


# -- load -------------------------------------------------------------------------------------


def load_dataset_spec(path: Path) -> DatasetSpec:
    """The dataset of the suite file at ``path`` alone, as :func:`load_suite` reads it, with
    nothing else of the suite checked: its components and metrics may come from a conftest
    this process has not loaded (an xdist controller reading the dataset its workers will).

    Raises :class:`SuiteError` where the file or its ``dataset`` entry cannot be read.
    """
    path = Path(path)
    _raw, text = read_text(path)
    data, lines = parse_document(text, path)
    ctx = _Ctx(path, lines)
    if not isinstance(data, Mapping) or not isinstance(data.get("dataset"), str | Mapping):
        raise ctx.error((), "expected a mapping with a 'dataset' entry at the top level")
    name = data.get("name")
    return _parse_dataset(ctx, data["dataset"], path.parent,
                          name if isinstance(name, str) and name else path.name.split(".")[0])


def suite_name(path: Path) -> str:
    """The name of the suite file at ``path`` (its ``name:``, else its file name without
    suffixes, as :func:`load_suite` gives it), read without validating the suite: for a
    baseline to match a suite this process cannot validate. SuiteError when unreadable."""
    path = Path(path)
    _, text = read_text(path)
    data, _ = parse_document(text, path)
    name = data.get("name") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) and name else path.name.split(".")[0]


def load_suite(path: Path, known_retrievers: Sequence[str] | None,
               metric_resolver: MetricResolver | None = None,
               known_pipelines: Sequence[str] | None = None,
               check_system: SystemChecker | None = None) -> Suite:
    """Load and validate the suite file at ``path``.

    ``known_retrievers`` / ``known_pipelines`` list the retriever / pipeline type names the
    registry can build, for checking names and suggesting the closest one (None: the caller
    checks them). ``metric_resolver``
    turns a metric entry (name, parameters) into a MetricSpec (default: built-ins and installed
    entry points, see :func:`~pytest_ragbench.metrics.spec.resolve_metric`).
    ``check_system`` checks each retriever's and pipeline's parameters (None: not checked).
    The metrics' and the systems' parameter problems are reported together, every one of
    them in one :class:`SuiteError` (a line each), so that a user fixes them in one go.
    """
    path = Path(path)
    raw, text = read_text(path)
    data, lines = parse_document(text, path)
    ctx = _Ctx(path, lines)
    if not isinstance(data, Mapping):
        raise ctx.error((), f"expected a mapping at the top level, got {type_name(data)}")
    if SCHEMA_KEY in data:
        # a JSON suite names its JSON Schema for editors this way (a YAML one in a comment):
        # the editor's business, not the suite's
        if not isinstance(data[SCHEMA_KEY], str):
            raise ctx.error((SCHEMA_KEY,), "expected the URL or path of the suite's JSON "
                                           f"Schema, got {type_name(data[SCHEMA_KEY])}")
        data = {k: v for k, v in data.items() if k != SCHEMA_KEY}
    resolver = metric_resolver or _default_metric_resolver()
    try:
        model = SuiteModel.model_validate(data)
    except ValidationError as exc:
        found = validation_problems(exc, data, ctx)
        # the components' checks do not wait for the schema's problems to be fixed, nor do
        # the gates', tolerances' and dataset's
        raise one_error([*found.values(), *_component_problems(
            ctx, data, found, known_retrievers, known_pipelines, resolver, check_system),
            *_section_problems(ctx, data, found, resolver, path)]) from None

    name = model.name or path.name.split(".")[0]
    problems: list[SuiteError] = []
    metrics = _parse_metrics(ctx, data["metrics"], resolver, problems)
    if problems:
        # the systems do not depend on the metrics: their problems go in the same error
        try:
            systems = _parse_systems(ctx, data, known_retrievers, known_pipelines)
        except SuiteError as exc:
            problems.append(exc)
        else:
            problems += _system_problems(ctx, *systems, check_system)
        raise one_error(problems)
    retrievers, pipelines = _parse_systems(ctx, data, known_retrievers, known_pipelines)
    # the components' checks do not wait for the rest of the suite to be right: a bad gate
    # or a missing dataset file hid a bad bm25 parameter until it was fixed (and the
    # registered LLMs', which a run checks once the suite loads)
    problems = _system_problems(ctx, retrievers, pipelines, check_system)
    by_name = {m.name: m for m in metrics}
    default_k = max([m.k for m in metrics if m.k] + [10])
    if any(m.kind in ("map", "ndcg", "r_precision", "mrr") and m.k is None for m in metrics):
        default_k = max(default_k, 1000)  # uncut measures look at trec_eval's full depth
    k = model.k if model.k is not None else default_k
    # k bounds what a retriever returns; a pipeline's contexts are scored as it gave them
    if model.k is not None and data.get("retrievers"):
        _attempt(problems, lambda: _check_cutoffs(ctx, metrics, model.k))
    rag = _attempt(problems, lambda: _parse_rag(ctx, model, metrics, path.parent,
                                                only_pipelines=not retrievers))
    sections = _parse_sections(ctx, data, by_name, [s.name for s in (*retrievers, *pipelines)],
                               path, name, problems)
    if problems:
        # the registered LLMs' problems too, which a run checks only once the suite loads
        raise one_error([*problems, *_registered_problems(ctx, data, (), check_system,
                                                          retrievers)])
    return Suite(
        name=name,
        path=path,
        dataset=sections.dataset,
        retrievers=retrievers,
        pipelines=pipelines,
        metrics=metrics,
        k=k,
        thresholds=sections.thresholds,
        gates=sections.gates,
        threshold_places=tuple(sections.threshold_places),
        gate_places=tuple(sections.gate_places),
        tolerances=sections.baseline.tolerances or {},
        baseline_settings=sections.baseline,
        seed=model.seed,
        record_depth=model.record_depth,
        suite_hash=hashlib.sha256(raw).hexdigest(),
        xfail=_parse_xfail(data.get("xfail") or {}),
        rag=rag,
        runs=rag.runs if rag is not None else 1,
        document=data,
        lines=ctx.lines,
    )


def _check_cutoffs(ctx: _Ctx, metrics: Sequence[MetricSpec], k: int) -> None:
    problems = [ctx.error(("metrics", i),
                          f"{m.name} looks at the top {m.k} documents but each retriever "
                          f"returns only k: {k}; raise k or lower the cutoff")
                for i, m in enumerate(metrics) if m.k is not None and m.k > k]
    if problems:
        raise one_error(problems)


def _check_system_names(ctx: _Ctx, retrievers: Sequence[ComponentSpec],
                        pipelines: Sequence[ComponentSpec]) -> None:
    """A name is a test id segment and the system column of every table: one per suite."""
    names = {r.name for r in retrievers}
    for p in pipelines:
        if p.name in names:
            raise ctx.error(tuple(p.key.split(".")),
                            f"pipeline name {p.name!r} is also a retriever name; names of "
                            "retrievers and pipelines must differ (they name test ids)")


def _parse_rag(ctx: _Ctx, model: SuiteModel, metrics: Sequence[MetricSpec],
               base_dir: Path, *, only_pipelines: bool = False) -> Any:
    """The generation/judging part of a suite, or None for a retrieval-only suite.

    A suite whose systems are all pipelines generates nothing: it needs no ``llm`` (lexical
    answer metrics need no model at all; judged ones need the judge's own LLM).
    """
    given = [k for k in SuiteModel.RAG_KEYS if getattr(model, k) is not None
             and k in model.model_fields_set]
    needs = [m.name for m in metrics if m.family == "rag"]
    if not given and not needs:
        return None
    from ..answers.config import ConfigError, rag_config_from_model
    from ..answers.prompt import check_template
    from ..llm.base import LLMError

    judged = {m.name for m in metrics if m.needs is not None and "judge" in m.needs}
    if model.llm is None and only_pipelines:
        model = _judge_only_model(ctx, model, metrics, judged)
    if model.llm is None:
        if needs:
            raise ctx.error(("metrics",), f"metric(s) {', '.join(needs)} need an 'llm' section "
                                          "(e.g. llm: {type: extractive} for an offline run)")
        raise ctx.error((given[0],), "needs an 'llm' section (the generation LLM), e.g. "
                                     "llm: {type: extractive}")
    if model.judge is None:
        for i, m in enumerate(metrics):
            if m.name in judged:
                raise ctx.error(("metrics", i), f"{m.name} is judged by an LLM; add a 'judge:' "
                                                "section (e.g. judge: {llm: same} with an "
                                                "openai llm)")
    if model.embedder is None:
        for i, m in enumerate(metrics):
            if m.needs is not None and "embedder" in m.needs:
                # found only once every case's generation had been paid for
                raise ctx.error(("metrics", i), f"{m.name} needs an embedder; add an "
                                                "'embedder:' section (e.g. embedder: {type: "
                                                "openai, ...}, or {type: hashing} offline)")
    config = rag_config_from_model(model)
    # the pipeline scores the suite's answer metrics by their names in records
    config = replace(config, metrics={m.name: m.component for m in metrics
                                      if m.needs is not None and m.component is not None})
    if config.prices is not None:  # max_cost without prices is a schema error for paid models
        for where, llm_model in model.paid_models():
            try:
                config.prices.price(llm_model)
            except LLMError as exc:
                raise ctx.error(("prices",), f"{exc} (used by {key_str(where[:-1])}); "
                                             "add it to prices") from None
    try:
        check_template(config.generation, base_dir)
    except ConfigError as exc:
        raise ctx.error(tuple(exc.key.split(".")), exc.detail) from None
    return config


def _judge_only_model(ctx: _Ctx, model: SuiteModel, metrics: Sequence[MetricSpec],
                      judged: Any) -> SuiteModel:
    """``model`` with a stand-in ``llm`` for a pipelines-only suite: the judge's own LLM, or
    the offline extractive one when nothing is judged. It never generates anything."""
    from .schema import ExtractiveLlm

    judge_llm = model.judge.llm if model.judge is not None else None
    if judge_llm == "same":
        raise ctx.error(("judge", "llm"), "'same' means the generation LLM, and a suite of "
                                          "pipelines has none; give the judge its own llm "
                                          "(e.g. judge: {llm: {base_url: ..., model: ...}})")
    if judge_llm is None:
        for i, m in enumerate(metrics):
            if m.name in judged:
                raise ctx.error(("metrics", i), f"{m.name} is judged by an LLM; add a 'judge:' "
                                                "section with its own llm")
    stand_in = judge_llm if judge_llm is not None else ExtractiveLlm(type="extractive")
    return model.model_copy(update={"llm": stand_in})


def _parse_xfail(value: Any) -> Mapping[str, str]:
    if isinstance(value, list):
        return {str(q): "known failure" for q in value}
    return {str(qid): reason for qid, reason in value.items()}


def _default_metric_resolver() -> MetricResolver:
    """Resolve a suite's metrics against built-ins and installed entry points, scanned once
    for the suite rather than once per metric."""
    from ..registry import Registry

    registry = Registry()

    def resolve(name: str, params: Mapping[str, Any]) -> MetricSpec:
        return resolve_metric(name, params, registry=registry)

    return resolve


def one_error(problems: Sequence[SuiteError]) -> SuiteError:
    """Problems of one suite as its one error: a line each, in the order of the file."""
    flat = [part for p in problems for part in (p.parts or (p,))]
    if len(flat) == 1:
        return flat[0]
    ordered = sorted(flat, key=lambda p: (p.line is None, p.line or 0))
    error = SuiteError("\n".join(str(p) for p in ordered))
    error.parts = tuple(ordered)
    return error


def _parse_systems(ctx: _Ctx, data: Mapping[str, Any], known_retrievers: Sequence[str] | None,
                   known_pipelines: Sequence[str] | None, held: frozenset[KeyPath] = frozenset(),
                   ) -> tuple[tuple[ComponentSpec, ...], tuple[ComponentSpec, ...]]:
    """The ``retrievers:`` and ``pipelines:`` sections (``held``: see
    :func:`_parse_retrievers`; a section held as a whole is left out)."""
    retrievers = (_parse_retrievers(ctx, data["retrievers"], known_retrievers, held=held)
                  if data.get("retrievers") is not None and ("retrievers",) not in held
                  else ())
    pipelines = (_parse_retrievers(ctx, data["pipelines"], known_pipelines, kind="pipeline",
                                   held=held)
                 if data.get("pipelines") is not None and ("pipelines",) not in held else ())
    _check_system_names(ctx, retrievers, pipelines)
    return retrievers, pipelines


#: The sections whose entries the registry checks (each entry on its own).
_COMPONENT_SECTIONS = ("metrics", "retrievers", "pipelines")


def _component_problems(ctx: _Ctx, data: Mapping[str, Any], refused: Iterable[KeyPath],
                        known_retrievers: Sequence[str] | None,
                        known_pipelines: Sequence[str] | None, resolve: MetricResolver,
                        check: SystemChecker | None) -> list[SuiteError]:
    """What the metrics' and the systems' checks find in a document the schema refused at
    ``refused`` (key paths): every entry the schema accepted is checked, so that its
    problems are listed beside the schema's, not met a run later. An entry (or a section
    as a whole) the schema refused is not, but for a system's ``case_timeout``, which is not
    a parameter of the component: what it holds is not what the checks expect."""
    held = frozenset(tuple(p[:2]) for p in refused if p and p[0] in _COMPONENT_SECTIONS and (
        # a system's case_timeout is the schema's alone: the rest of the entry is checkable
        p[0] == "metrics" or len(p) < 3 or p[2] != "case_timeout"))
    problems: list[SuiteError] = []
    if data.get("metrics") is not None and ("metrics",) not in held:
        try:
            _parse_metrics(ctx, data["metrics"], resolve, problems, held)
        except SuiteError as exc:
            problems.append(exc)
    try:
        retrievers, pipelines = _parse_systems(ctx, data, known_retrievers, known_pipelines,
                                               held)
    except SuiteError as exc:
        return [*problems, exc]
    except (AttributeError, TypeError, ValueError):
        # an entry the schema refused read as one it accepted: the schema's problems say it
        return problems
    problems += _system_problems(ctx, [r for r in retrievers if r.path not in held],
                                 [p for p in pipelines if p.path not in held], check,
                                 retrievers)
    return problems + _registered_problems(ctx, data, refused, check, retrievers)


def _attempt(problems: list[SuiteError], parse: Callable[[], Any],
             refused: bool = False) -> Any:
    """``parse()``, its SuiteError put in ``problems`` (None then): each part of a suite is
    checked whatever the others hold (a bad gate hid a bad tolerance or a missing dataset
    file until it was fixed, a run at a time). ``refused``: the schema refused part of the
    document, and a shape it refused elsewhere that ``parse`` cannot read is its to say."""
    try:
        return parse()
    except SuiteError as exc:
        problems.append(exc)
    except (AttributeError, KeyError, TypeError, ValueError):
        if not refused:
            raise
    return None


@dataclass
class _Sections:
    """The thresholds, gates, baseline settings and dataset of a suite (None where one had
    a problem)."""

    thresholds: tuple[Gate, ...]
    threshold_places: list[tuple[str, int | None]]
    gates: tuple[GateCheck, ...]
    gate_places: list[tuple[str, int | None]]
    baseline: Any
    dataset: Any


def _parse_sections(ctx: _Ctx, data: Mapping[str, Any], metrics: Mapping[str, MetricSpec],
                    systems: Sequence[str], path: Path, name: str, problems: list[SuiteError],
                    refused: frozenset[str] = frozenset()) -> _Sections:
    """The ``thresholds``, ``gates``, ``baseline`` and ``dataset`` sections, each one's
    problems put in ``problems``; ``refused``: the top-level keys the schema refused, whose
    sections are left out (as is the dataset when the suite's ``name`` was refused)."""
    tolerant = bool(refused)

    def part(section: str, parse: Callable[[], Any]) -> Any:
        if section in refused or (section == "dataset" and "name" in refused):
            return None
        return _attempt(problems, parse, tolerant)

    threshold_places: list[tuple[str, int | None]] = []
    gate_places: list[tuple[str, int | None]] = []
    checks = part("thresholds", lambda: _parse_gates(
        ctx, data.get("thresholds") or {}, ("thresholds",), metrics, systems,
        threshold_places)) or ()
    gates = part("gates", lambda: _parse_gates(ctx, data.get("gates") or {}, ("gates",),
                                               metrics, systems, gate_places)) or ()
    # per-query thresholds parse to plain bounds only (a query has no baseline to drop from)
    return _Sections(
        thresholds=tuple(g for g in checks if isinstance(g, Gate)),
        threshold_places=[p for g, p in zip(checks, threshold_places, strict=True)
                          if isinstance(g, Gate)],
        gates=gates, gate_places=gate_places,
        baseline=part("baseline", lambda: _parse_baseline(ctx, data.get("baseline") or {},
                                                          metrics)),
        dataset=part("dataset", lambda: _parse_dataset(ctx, data["dataset"], path.parent,
                                                       name)))


def _section_problems(ctx: _Ctx, data: Mapping[str, Any], refused: Iterable[KeyPath],
                      resolve: MetricResolver, path: Path) -> list[SuiteError]:
    """What the gates, thresholds, tolerances and dataset of a document the schema refused
    at ``refused`` hold wrong, for each of them the schema accepted (with the metrics: a
    gate names one): a bad gate showed only once an unknown key elsewhere was fixed."""
    tops = frozenset(p[0] for p in refused if p)
    if "metrics" in tops or not isinstance(data.get("metrics"), list | str):
        return []
    try:
        metrics = {m.name: m for m in _parse_metrics(ctx, data["metrics"], resolve, [])}
    except SuiteError:
        return []  # the components' checks report the metrics
    systems = [str(n) for key in ("retrievers", "pipelines")
               if isinstance(data.get(key), Mapping) for n in data[key]]
    problems: list[SuiteError] = []
    _parse_sections(ctx, data, metrics, systems, path,
                    str(data.get("name") or path.name.split(".")[0]), problems,
                    refused=tops)
    return problems


#: Where a suite names an LLM or embedder, which may be of a registered type.
_PROVIDERS = ((("llm",), "llm"), (("judge", "llm"), "llm"), (("embedder",), "embedder"))


def _registered_problems(ctx: _Ctx, data: Mapping[str, Any], refused: Iterable[KeyPath],
                         check: SystemChecker | None,
                         retrievers: Sequence[ComponentSpec]) -> list[SuiteError]:
    """What ``check`` finds wrong with each LLM or embedder of a registered type the suite
    names (a run checks them once the suite loads, which a schema error stops), where the
    schema accepted its section."""
    from ..answers.config import split_call_keys
    from .schema import BUILTIN_EMBEDDERS, BUILTIN_LLMS

    if check is None:
        return []
    refused = list(refused)
    problems: list[SuiteError] = []
    for where, kind in _PROVIDERS:
        spec: Any = data
        for key in where:
            spec = spec.get(key) if isinstance(spec, Mapping) else None
        type_name = spec.get("type") if isinstance(spec, Mapping) else None
        builtins = BUILTIN_LLMS if kind == "llm" else BUILTIN_EMBEDDERS
        if (not isinstance(type_name, str) or type_name in builtins
                or any(p[:len(where)] == where for p in refused)):
            continue
        try:
            params, _ = split_call_keys(kind, type_name,
                                        {k: v for k, v in spec.items() if k != "type"})
        except ComponentError:
            continue  # the schema's to say
        component = ComponentSpec(name=where[-1], type=type_name, params=params,
                                  key=key_str(where), line=ctx.lines.get(where), path=where,
                                  lines=ctx.lines)
        try:
            check(kind, component, retrievers)
        except ComponentError as exc:
            problems += component.errors(ctx.file, exc)
    return problems


def _system_problems(ctx: _Ctx, retrievers: Sequence[ComponentSpec],
                     pipelines: Sequence[ComponentSpec], check: SystemChecker | None,
                     siblings: Sequence[ComponentSpec] | None = None) -> list[SuiteError]:
    """What ``check`` finds wrong with each system's parameters: every parameter at fault
    the registry's checks name, and what each factory's own ``ragbench_check`` raises (the
    built-ins' name every one; a user's may stop at its first). ``siblings``: the suite's
    retrievers a check may look up (default: ``retrievers``)."""
    if check is None:
        return []
    problems: list[SuiteError] = []
    for kind, spec in [*(("retriever", r) for r in retrievers),
                       *(("pipeline", p) for p in pipelines)]:
        try:
            check(kind, spec, retrievers if siblings is None else siblings)
        except ComponentError as exc:
            problems += spec.errors(ctx.file, exc)
    return problems


def _parse_metrics(ctx: _Ctx, value: Any, resolve: MetricResolver,
                   problems: list[SuiteError] | None = None,
                   held: frozenset[KeyPath] = frozenset()) -> tuple[MetricSpec, ...]:
    """The ``metrics:`` section; each entry's problem goes into ``problems`` when given (the
    rest are still read), else the first is raised. The entries at ``held`` (refused by the
    schema) are left out."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
        if not value:
            raise ctx.error(("metrics",), "expected a non-empty list of metric names, "
                                          "e.g. [ndcg@10]")
    out: list[MetricSpec] = []
    for i, item in enumerate(value):
        if ("metrics", i) in held:
            continue
        # A mapping entry carries parameters: {name: temporal_ndcg@10, lambda: 0.5}.
        params: Mapping[str, Any] = {}
        if isinstance(item, Mapping):
            params = {str(k): v for k, v in item.items() if k != "name"}
            item = item["name"]
        try:
            spec = resolve(item, params)
        except ValueError as exc:
            if isinstance(exc, ParamError) and exc.path and isinstance(value[i], Mapping):
                # each parameter at fault: its own key and line (the mapping form names them)
                found = [ctx.error(("metrics", i, *p.path), p.detail or str(p)) if p.path
                         else ctx.error(("metrics", i), str(p)) for p in exc.each()]
            else:
                found = [ctx.error(("metrics", i), str(exc))]
            if problems is None:
                raise one_error(found) from None
            problems += found
            continue
        if spec.name in {m.name for m in out}:
            problem = ctx.error(("metrics", i), f"metric {spec.name!r} is listed twice")
            if problems is None:
                raise problem
            problems.append(problem)
            continue
        out.append(spec)
    return tuple(out)


def _parse_retrievers(
    ctx: _Ctx, value: Any, known: Sequence[str] | None, kind: str = "retriever",
    held: frozenset[KeyPath] = frozenset(),
) -> tuple[ComponentSpec, ...]:
    """The ``retrievers:`` (or, with ``kind="pipeline"``, ``pipelines:``) section.

    The entries at ``held`` are those the schema refused: what can be read of them is kept
    (a hybrid retriever's check looks its siblings up), unchecked; the rest are dropped.
    """
    section = f"{kind}s"
    entries: list[tuple[str, Mapping[str, Any], tuple[Any, ...]]] = []
    if isinstance(value, str):
        entries = [(value, {}, (section,))]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                if "name" not in item:  # only where the schema refused the entry
                    continue
                params = {k: v for k, v in item.items() if k != "name"}
                entries.append((str(item["name"]), params, (section, i)))
            else:
                entries.append((str(item), {}, (section, i)))
    else:
        for rname, params in value.items():
            entries.append((str(rname), params if params is not None else {},
                            (section, str(rname))))
    if not entries and not held:
        raise ctx.error((section,), f"expected at least one {kind}")

    out: list[ComponentSpec] = []
    seen: set[str] = set()
    for rname, params, path in entries:
        if held and not isinstance(params, Mapping):
            # refused by the schema, though not found at this path (a key pydantic reads
            # otherwise, a lone surrogate)
            continue
        if (not rname or has_control_characters(rname)
                or any(c in ":/[]" or c.isspace() for c in rname)):
            if path in held:
                continue
            raise ctx.error(path, f"{kind} name {rname!r} must be non-empty and contain no "
                                  "':', '/', '[', ']', spaces or control characters (it is "
                                  "part of test ids)")
        if rname in seen:
            raise ctx.error(path, f"{kind} name {rname!r} is used twice")
        seen.add(rname)
        rtype = str(params.get("type") or rname).strip()
        if (known is not None and ":" not in rtype and rtype not in known
                and path not in held):
            raise ctx.error(
                (*path, "type") if "type" in params else path,
                f"unknown {kind} {rtype!r}{did_you_mean(rtype, known)} "
                f"(known: {', '.join(sorted(known))}; or 'package.module:Factory')",
            )
        timeout = params.get("case_timeout")
        out.append(
            ComponentSpec(
                name=rname,
                type=rtype,
                params={k: v for k, v in params.items() if k not in ("type", "case_timeout")},
                key=key_str(path),
                line=ctx.lines.get(path),
                path=path,
                lines=ctx.lines,
                # a case_timeout the schema refused is its problem, not this one's
                timeout=float(timeout) if isinstance(timeout, int | float)
                and not isinstance(timeout, bool) else None,
            )
        )
    return tuple(out)


def _item_lines(ctx: _Ctx, where: tuple[Any, ...], items: Any) -> tuple[int | None, ...]:
    """The line of each entry of an inline list (``dataset.items``, ``dataset.documents``)."""
    if not isinstance(items, (list, tuple)):
        return ()
    return tuple(ctx.lines.get((*where, i)) for i in range(len(items)))


def _parse_dataset(ctx: _Ctx, value: Any, base: Path, suite_name: str) -> DatasetSpec:
    path_key: tuple[Any, ...] = ("dataset",)
    data: Mapping[str, Any] = {"path": value} if isinstance(value, str) else value

    def as_path(key: str) -> Path | None:
        v = data.get(key)
        if v is None:
            return None
        where = (*path_key, key)
        if "\x00" in str(v):
            raise ctx.error(where, f"{v!r} is not a path (it holds a NUL character)")
        # Not resolved: a symlink keeps the name it was given (its suffix picks the reader, so
        # corpus.jsonl -> a content-addressed blob stays JSONL), and a loop or an unreadable
        # target is reported by check_file below as what it is.
        # '~' as a run retriever's path and the hf entries read it
        p = Path(v).expanduser()
        p = p if p.is_absolute() else base.absolute() / p
        if key == "path":
            try:
                mode = p.stat().st_mode
            except FileNotFoundError:
                raise ctx.error(where, f"dataset folder not found: {p}") from None
            except OSError as exc:
                raise ctx.error(where, f"dataset folder {p}: {exc.strerror or exc}") from None
            if not stat.S_ISDIR(mode):
                raise ctx.error(where, f"dataset folder {p} is a file (expected a BEIR "
                                       "folder with corpus.jsonl, queries.jsonl, qrels/)")
        else:
            try:
                check_file(p, key)
            except DataFileError as exc:
                # The dataset reader's own wording, placed at the suite entry that names it.
                raise ctx.error(where, f"{exc.detail}: {p}" if exc.line is None
                                else exc.detail) from None
        return p

    qids = data.get("query_ids")
    hf = _parse_hf(ctx, data["hf"], base) if data.get("hf") is not None else None
    library_id = data.get("ir_datasets")
    inline_docs = data.get("documents")
    inline_items = data.get("items")
    ds_path = as_path("path")
    qrels = as_path("qrels")
    split = data.get("split")
    if ds_path is not None and qrels is None:
        _check_split(ctx, ds_path, split, "split" in data)
    default_name = (ds_path.name if ds_path else library_id if library_id
                    else hf.corpus.path if hf is not None and not hf.corpus.local
                    else suite_name)
    name = data.get("name") or default_name
    return DatasetSpec(
        name=str(name),
        source=ctx.file,
        key="dataset",
        path=ds_path,
        corpus=as_path("corpus"),
        queries=as_path("queries"),
        qrels=qrels,
        split=split,
        query_ids=tuple(str(q) for q in qids) if qids is not None else None,
        max_queries=data.get("max_queries"),
        answer_field=data.get("answer_field"),
        inline_corpus=tuple(inline_docs) if inline_docs is not None else None,
        inline_queries=tuple(inline_items) if inline_items is not None else None,
        inline_corpus_lines=_item_lines(ctx, (*path_key, "documents"), inline_docs),
        inline_query_lines=_item_lines(ctx, (*path_key, "items"), inline_items),
        # the schema requires a corpus when retrievers run; pipelines may do without
        corpus_optional=True,
        unknown_documents=str(data.get("unknown_documents") or "error"),
        hf=hf,
        ir_datasets=library_id,
        key_lines=_dataset_lines(ctx, data),
    )


def _dataset_lines(ctx: _Ctx, data: Mapping[str, Any]) -> dict[str, int]:
    """The line of ``dataset`` and of each key below it (and below ``hf``) by key string."""
    hf = data.get("hf")
    paths = [("dataset",), *(("dataset", k) for k in data),
             *(("dataset", "hf", k) for k in (hf if isinstance(hf, Mapping) else ()))]
    found = {key_str(p): ctx.lines.get(p) for p in paths}
    return {k: line for k, line in found.items() if line is not None}


# A hub id: "name" or "namespace/name" (what the hub accepts), never a path-like "./x" or "a/b/c".
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# Parts omitted under ``hf`` read the BEIR layout on the hub: configs "corpus" and "queries"
# (each with one split of the same name); a local folder holds them as splits.
_HF_PARTS = ("corpus", "queries", "qrels")


def _parse_hf(ctx: _Ctx, value: Any, base: Path) -> HfSpec:
    top: Mapping[str, Any] = {"path": value} if isinstance(value, str) else value

    def location(where: tuple[Any, ...], text: str) -> tuple[str, bool]:
        """A local path when one exists relative to the suite file, else a hub name."""
        candidate = Path(text).expanduser()
        candidate = candidate if candidate.is_absolute() else base / candidate
        if candidate.exists():
            return str(candidate.resolve()), True
        if _HUB_ID.fullmatch(text) and not text.endswith((".parquet", ".arrow", ".jsonl",
                                                          ".json", ".csv")):
            return text, False
        raise ctx.error(where, f"not found: {candidate} (expected a local folder or file, or "
                               "a hub name such as BeIR/nfcorpus)")

    default = None
    if top.get("path") is not None:
        where = ("dataset", "hf") if isinstance(value, str) else ("dataset", "hf", "path")
        default = location(where, str(top["path"]))
    parts: dict[str, HfPart | None] = {}
    for part in _HF_PARTS:
        raw = top.get(part)
        where = ("dataset", "hf", part)
        key = key_str(where)
        if raw is None:
            if part == "qrels" or default is None:
                parts[part] = None
                continue
            path, local = default
            parts[part] = HfPart(path=path, local=local, config=None if local else part,
                                 split=part, key=key)
            continue
        spec: Mapping[str, Any] = {"path": raw} if isinstance(raw, str) else raw
        if spec.get("path") is not None:
            path, local = location((*where, "path") if isinstance(raw, Mapping) else where,
                                   str(spec["path"]))
        else:
            assert default is not None  # the schema requires hf.path then
            path, local = default
        parts[part] = HfPart(
            path=path, local=local, config=spec.get("config"), split=spec.get("split"),
            columns=tuple((str(k), str(v)) for k, v in (spec.get("columns") or {}).items()),
            key=key)
    cache_dir = top.get("cache_dir")
    corpus, queries = parts["corpus"], parts["queries"]
    assert corpus is not None and queries is not None  # the schema requires them
    return HfSpec(
        corpus=corpus, queries=queries, qrels=parts["qrels"],
        cache_dir=None if cache_dir is None else (base / Path(cache_dir).expanduser()),
    )


def _check_split(ctx: _Ctx, folder: Path, split: str | None, given: bool) -> None:
    """A BEIR folder with qrels needs a split naming one of them (before any item runs)."""
    qrels_dir = folder / "qrels"
    try:
        available = sorted(p.stem for p in qrels_dir.glob("*.tsv"))
    except OSError:
        available = []
    if split is None:
        if available:
            raise ctx.error(("dataset", "path"),
                            f"a BEIR folder with qrels needs 'split' (available splits: "
                            f"{', '.join(available)})")
        return
    qrels = qrels_dir / f"{split}.tsv"
    if not qrels.is_file():
        raise ctx.error(("dataset", "split") if given else ("dataset",),
                        f"no qrels for split {split!r} at {qrels} "
                        f"(available splits: {', '.join(available) or 'none'})")


def _parse_gates(
    ctx: _Ctx, value: Any, path: tuple[Any, ...], metrics: Mapping[str, MetricSpec],
    systems: Sequence[str] = (), places: list[tuple[str, int | None]] | None = None,
) -> tuple[GateCheck, ...]:
    """``{metric: expr | [expr, ...]}`` or, for gates, a list of whole expressions.

    Per-query thresholds (``path == ("thresholds",)``) accept only ``>=``-style bounds: a query
    has no baseline of its own to drop from. A ``retriever=`` scope must name one of
    ``systems``. ``places`` gets the key path and line of each check returned, in order.
    """
    allow_baseline = path == ("gates",)
    out: list[GateCheck] = []
    where: list[tuple[Any, ...]] = []
    problems: list[SuiteError] = []  # every bad gate, not the first only
    # the same check stated twice (a copy whose metric or bound was not changed) was judged
    # and listed twice in every output: check key -> where it was first, as written there
    stated: dict[tuple[Any, ...], tuple[tuple[Any, ...], str]] = {}

    def restated(check: GateCheck, at: tuple[Any, ...], written: str) -> str | None:
        first = stated.get(check_key(check))
        if first is None:
            stated[check_key(check)] = (at, written)
            return None
        return (f"{written!r} states the same check as {key_str(first[0])} ({first[1]!r}): "
                "one of them is enough")

    if isinstance(value, list):
        for i, item in enumerate(value):
            try:
                checks = parse_gate_list([item], metrics)
                for check in checks:
                    _check_per_query(check, allow_baseline)
                    _check_bound(check, metrics)
                    _check_scope(check, systems)
                    problem = restated(check, (*path, i), str(item).strip())
                    if problem:
                        raise ValueError(problem)
            except ValueError as exc:
                problems.append(ctx.error((*path, i), str(exc)))
                continue
            out += checks
            where += [(*path, i)] * len(checks)
    else:
        for key, expr in value.items():
            exprs = expr if isinstance(expr, list) and allow_baseline else [expr]
            for e in exprs:
                try:
                    gate = parse_gate(str(key), e, metrics, allow_baseline=allow_baseline)
                    _check_per_query(gate, allow_baseline)
                    _check_bound(gate, metrics)
                    _check_scope(gate, systems)
                    problem = restated(gate, (*path, str(key)), gate.text)
                    if problem:
                        raise ValueError(problem)
                except ValueError as exc:
                    problems.append(ctx.error((*path, str(key)), str(exc)))
                    break  # a key is one line: its first problem says what is wrong there
                out.append(gate)
                where.append((*path, str(key)))
    if problems:
        raise one_error(problems)
    if places is not None:
        places += [(key_str(p), ctx.lines.get(p)) for p in where]
    return tuple(out)


def _check_per_query(check: GateCheck, run_level: bool) -> None:
    """A per-query threshold (not ``run_level``) on the error rate, a figure of the run:
    each case recorded it as checked with no value, and nothing was checked."""
    if not run_level and check.metric == ERROR_RATE:
        raise ValueError(f"error_rate is the share of a system's cases that errored, a figure "
                         f"of the run, not of one query: write '{check.text}' under gates, "
                         "not thresholds")


def _check_scope(check: GateCheck, systems: Sequence[str]) -> None:
    """A ``retriever=`` scope naming no system of the suite: the check would apply to none
    and vanish from every output (a typo that let a run pass)."""
    only = scope_retriever(check.scope)
    if only is not None and only not in systems:
        raise ValueError(f"'{check.text}' is scoped to retriever={only}, which is not a "
                         f"system of this suite{did_you_mean(only, systems)} (systems: "
                         f"{', '.join(systems) or 'none'})")


def _check_bound(check: GateCheck, metrics: Mapping[str, MetricSpec]) -> None:
    spec = metrics.get(check.metric)
    problem = bound_problem(check, spec.kind if spec is not None else None)
    if problem:
        raise ValueError(problem)


def _parse_baseline(ctx: _Ctx, data: Mapping[str, Any],
                    metrics: Mapping[str, MetricSpec]) -> BaselineSettings:
    """The ``baseline:`` section. A tolerance names a metric the baseline comparison has a
    row for: one for another name (a typo, an alias, latency_ms not listed under metrics)
    was never applied."""
    out: dict[str, Tolerance] = {}
    tol = data.get("tolerance")
    items = [] if tol is None else tol.items() if isinstance(tol, Mapping) else [("*", tol)]
    problems: list[SuiteError] = []
    for metric, spec in items:
        key = (("baseline", "tolerance") if not isinstance(tol, Mapping)
               else ("baseline", "tolerance", str(metric)))
        if metric != "*" and str(metric) not in metrics:
            problems.append(ctx.error(key, f"a tolerance for {str(metric)!r}, which is not "
                                           f"among the suite's metrics ({', '.join(metrics)})"
                                           f"{did_you_mean(str(metric), metrics)}"))
            continue
        try:
            tolerance = parse_tolerance(spec)
        except ValueError as exc:
            problems.append(ctx.error(key, str(exc)))
            continue
        spec_of = metrics.get(str(metric))
        problem = tolerance_problem(str(metric), tolerance,
                                    spec_of.kind if spec_of is not None else None)
        if problem:
            problems.append(ctx.error(key, problem))
        out[str(metric)] = tolerance
    if problems:
        raise one_error(problems)
    return BaselineSettings(out, bool(data.get("require_same_dataset", False)),
                            str(data.get("test", "permutation")),
                            float(data.get("alpha", 0.05)))


def finite_or_none(value: float) -> float | None:
    """NaN and infinities become None so records stay strict JSON."""
    return value if math.isfinite(value) else None
