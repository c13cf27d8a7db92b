"""Resuming a run: case keys, the earlier run's records, and which of them a new run reuses.

A case's **key** says what its record depends on; two cases with the same key get the same
record (up to timing). It hashes:

``settings``
    the suite file's document without what only aggregation reads (``gates``, ``baseline``),
    what the record is re-labelled with (``xfail``), the systems (below), and what sets only
    how or whether calls are made, not what a finished case measured: ``description``,
    ``cache``, ``max_cost`` and the endpoints' ``concurrency``, ``rpm``, ``tpm``, ``retries``
    and ``backoff`` (a run stopped by 429s or its cost cap is resumed with other limits);
``dataset``
    the dataset's content hash (corpus and selected queries with their labels);
``annotations``
    what else of the dataset a record reads: the documents' metadata (a timestamp for
    ``temporal_ndcg``, anything a custom metric reads) and the queries' type, difficulty, tags
    and metadata (the record carries them, the summary slices by them), and whether each query
    is judged (has labels, perhaps none relevant). A part of its own, so
    that the content hash baselines compare by stays what it was;
``system``
    the retriever's or pipeline's type, parameters and case timeout, with those of every
    sibling retriever it names in its parameters (a hybrid's fused retrievers); a pipeline's
    ``concurrency`` (the cases it is asked for at once) sets only how it is called, and is
    left out;
``version``
    the pytest-ragbench version;

plus the suite id, the system's name, the case id and the repetition index. Every record
carries its key and the parts (:data:`CASE_KEY_FIELD`), so a later run can say which part
changed. What a component reads from files or environment variables its parameters only name
is not part of the key.

A run resumed from an earlier one reuses each record of it that finished (status "ok" or
"failed", not "error") and whose key equals the key the case has now. Nothing here imports
pytest; the plugin side is :mod:`pytest_ragbench.resuming`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RagbenchError
from ..records import CASE_KEY_FIELD, CRASH_STAGE
from .runfolder import (
    CASES_JSONL,
    RUN_ID,
    RUN_JSON,
    SUMMARY_JSON,
    RecordsFileError,
    is_run_folder,
    is_running,
    read_jsonl,
)

if TYPE_CHECKING:
    from ..datasets import Dataset
    from ..suite.model import ComponentSpec, Suite

#: Statuses of a finished case; an errored case is run again.
REUSABLE = ("ok", "failed")
# Sections of a suite file that change no finished case's record ("$schema": the JSON Schema
# a JSON suite names for editors, which the loaded document leaves out as YAML's comment is).
_NOT_IN_SETTINGS = ("gates", "baseline", "xfail", "retrievers", "pipelines", "description",
                    "cache", "max_cost", "$schema")
# The sections holding endpoints, and their keys that set only how calls are made (the
# limits of the run's budget and the retries); a finished case measured the same under any.
_ENDPOINT_SECTIONS = ("llm", "judge", "embedder")
_CALL_KEYS = frozenset({"concurrency", "rpm", "tpm", "retries", "backoff"})

Identity = tuple[str, str, str, int]


class ResumeError(RagbenchError):
    """The run named by ``--ragbench-resume`` cannot be found or read."""


class NotOnThisHostError(ResumeError):
    """An xdist worker does not see the controller's run: its folder is missing on the
    worker's host, or the host holds another copy of it. Unlike the other resume errors,
    one that a run without workers cannot meet."""


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- case keys -----------------------------------------------------------------------------


def settings_hash(path: Path) -> str:
    """The hash of a suite file's settings (see the module docstring).

    Hashed from the parsed document, so comments and formatting change nothing.
    """
    from ..suite.loader import parse_document, read_text

    _, text = read_text(path)
    data, _ = parse_document(text, path)
    return settings_digest(data)


def settings_digest(document: Any) -> str:
    """:func:`settings_hash` of a suite file's parsed document."""
    if isinstance(document, Mapping):
        document = {k: _without_call_keys(v) if k in _ENDPOINT_SECTIONS else v
                    for k, v in document.items() if k not in _NOT_IN_SETTINGS}
    return _digest(document)


def _spec_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A system's parameters without the call keys of the endpoints it nests (a dense
    retriever's ``embedder``)."""
    return {k: _without_call_keys(v) if k in _ENDPOINT_SECTIONS else v
            for k, v in params.items()}


def _without_call_keys(section: Any) -> Any:
    """An endpoint section (``judge`` holds its own ``llm`` and ``embedder``) without
    :data:`_CALL_KEYS`."""
    if not isinstance(section, Mapping):
        return section
    return {k: _without_call_keys(v) if k in _ENDPOINT_SECTIONS else v
            for k, v in section.items() if k not in _CALL_KEYS}


_SCALARS = (str, int, float, bool, type(None))


def _stable(value: Any) -> str:
    """A text of ``value`` the same in every process: its ``repr`` when it is a mapping of
    plain values (a document's metadata, nearly always), else canonical JSON, with sets
    sorted (YAML's ``!!set``: a set's ``repr`` follows the process's hash seed)."""
    if isinstance(value, dict) and all(type(v) in _SCALARS for v in value.values()):
        return repr(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_jsonish)
    except (TypeError, ValueError):  # keys of mixed types cannot be sorted
        return repr(_ordered(value))


def _jsonish(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(_stable(v) for v in value)
    return repr(value)


def _ordered(value: Any) -> Any:
    """``value`` with its sets as sorted lists and its mappings as sorted pairs (sorted by
    their texts: keys of mixed types), for a ``repr`` the same in every process."""
    if isinstance(value, set | frozenset):
        return sorted((_ordered(v) for v in value), key=repr)
    if isinstance(value, dict):
        return sorted(((repr(k), _ordered(v)) for k, v in value.items()), key=lambda kv: kv[0])
    if isinstance(value, list | tuple):
        return [_ordered(v) for v in value]
    return value


def annotations_hash(dataset: Dataset) -> str:
    """The ``annotations`` part of the key of a dataset's cases (see the module docstring).

    Every process of every run computes it (each record carries its key), so a document's
    metadata of plain values is fed as its ``repr`` (a file that lists its keys in another
    order reruns the cases), four times faster than JSON on a million documents."""
    h = hashlib.sha256()
    for d in dataset.corpus:
        # most corpora carry no metadata: those documents cost one check each
        if d.metadata:
            h.update(f"d{d.id!r}{_stable(d.metadata)}".encode("utf-8", "surrogatepass"))
    for q in dataset.queries:
        if q.type is not None or q.difficulty is not None or q.tags or q.metadata:
            h.update(f"q{(q.id, q.type, q.difficulty, q.tags)!r}{_stable(q.metadata)}"
                     .encode("utf-8", "surrogatepass"))
    # a query without labels is not scored by label metrics; one with an empty set of labels
    # scores 0 (the content hash sees no labels either way)
    h.update(bytes(q.judged for q in dataset.queries))
    return h.hexdigest()


def _names_in(value: Any, names: Iterable[str]) -> set[str]:
    """The strings among ``names`` that occur anywhere in ``value`` (a parameter tree)."""
    wanted = set(names)
    found: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if v in wanted:
                found.add(v)
        elif isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return found


#: The built-in pipeline types whose ``concurrency`` sets only how they are called.
CALLED_CONCURRENTLY = frozenset({"http", "langchain", "llamaindex"})


def system_hashes(systems: Iterable[ComponentSpec],
                  pipelines: Collection[str] = ()) -> dict[str, str]:
    """The ``system`` part of the key of each system, by name (``pipelines``: the names of
    those that are pipelines; the ``concurrency`` of a built-in one, ``http``, ``langchain``
    or ``llamaindex``, is left out: the cases it is asked for at once, and an http
    pipeline's requests in flight, set only how it is called. A user's own pipeline's
    ``concurrency`` parameter is its own, which may change its answers: it stays in).

    A system's hash covers the specs of the siblings its parameters name, transitively, so a
    hybrid retriever's cases are not reused when a retriever it fuses changed.
    """
    specs = {s.name: s for s in systems}

    def params(name: str) -> dict[str, Any]:
        found = _spec_params(specs[name].params)
        if name in pipelines and specs[name].type in CALLED_CONCURRENTLY:
            found.pop("concurrency", None)
        return found

    out: dict[str, str] = {}
    for name in specs:
        closure: set[str] = set()
        todo = [name]
        while todo:
            n = todo.pop()
            if n in closure:
                continue
            closure.add(n)
            todo.extend(_names_in(dict(specs[n].params), set(specs) - {n}))
        out[name] = _digest([[n, specs[n].type, params(n), specs[n].timeout]
                             for n in sorted(closure)])
    return out


@dataclass(frozen=True)
class SuiteKeys:
    """The parts of the case keys of one suite, computed once per process."""

    suite_id: str
    suite_name: str
    suite_hash: str
    settings: str
    dataset: str | None
    version: str
    systems: Mapping[str, str]
    annotations: str | None = None
    pipelines: frozenset[str] = field(default_factory=frozenset)
    #: With ``--ragbench-save-run``, how many retrieved documents a reused record must hold
    #: (``k``: the run files hold every record's documents); 0 without it.
    depth: int = 0

    @classmethod
    def of(cls, suite: Suite, suite_id: str, dataset_hash: str | None,
           version: str, *, annotations: str | None = None, depth: int = 0) -> SuiteKeys:
        return cls(suite_id=suite_id, suite_name=suite.name, suite_hash=suite.suite_hash,
                   settings=(settings_hash(suite.path) if suite.document is None
                             else settings_digest(suite.document)),
                   dataset=dataset_hash, version=version, annotations=annotations,
                   systems=system_hashes(suite.systems,
                                         pipelines={p.name for p in suite.pipelines}),
                   pipelines=frozenset(p.name for p in suite.pipelines),
                   depth=depth)

    def case_key(self, system: str, case_id: str, run: int) -> dict[str, Any]:
        """The value of a record's :data:`CASE_KEY_FIELD`."""
        parts = {"settings": self.settings, "dataset": self.dataset,
                 "annotations": self.annotations, "system": self.systems.get(system),
                 "version": self.version}
        key = _digest([parts, self.suite_id, system, case_id, int(run)])
        return {"key": key, **parts}

    def change(self, system: str, old: Mapping[str, Any] | None) -> str:
        """Why a record with key parts ``old`` cannot be reused for a case of ``system``."""
        if not isinstance(old, Mapping):
            return "recorded without a case key"
        if old.get("version") != self.version:
            return "pytest-ragbench version changed"
        if old.get("settings") != self.settings:
            return f"suite {self.suite_name!r} settings changed"
        if old.get("dataset") != self.dataset:
            return f"suite {self.suite_name!r} dataset changed"
        if old.get("annotations") != self.annotations:
            if "annotations" not in old:
                return "recorded without the dataset's metadata in its case key"
            return (f"suite {self.suite_name!r} dataset metadata changed (documents' metadata, "
                    "queries' type, difficulty, tags, metadata or whether they have "
                    "labels)")
        if old.get("system") != self.systems.get(system):
            kind = "pipeline" if system in self.pipelines else "retriever"
            return f"{kind} {system!r} parameters changed"
        return "case key changed"


# -- the earlier run -----------------------------------------------------------------------


def run_suites(folder: Path) -> set[str]:
    """The suite ids a run folder holds (from ``run.json``; from its records without one)."""
    try:
        doc = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
        suites = doc.get("suites") if isinstance(doc, dict) else None
        if isinstance(suites, dict) and suites:
            return {str(s) for s in suites}
    except (OSError, ValueError):
        pass
    try:
        return {str(r.get("suite")) for r in read_jsonl(folder / CASES_JSONL)
                if isinstance(r, dict)}
    except (OSError, ValueError):  # a damaged folder is no earlier run of these suites
        return set()


def is_unfinished(folder: Path) -> bool:
    """Whether a run folder holds a run that did not run all its cases: it has no readable
    ``summary.json`` (killed), or its summary says it is partial."""
    try:
        summary = json.loads((folder / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    run = summary.get("run") if isinstance(summary, dict) else None
    return not isinstance(run, dict) or bool(run.get("partial"))


def crashed_cases(folder: Path) -> int:
    """How many cases of the run in ``folder`` a crash left unfinished: their record is an
    error of stage ``crash`` and the run holds no finished record of them. Under xdist a
    worker that dies in a case (``os._exit``, a segfault, the OOM killer) leaves that error
    and the run goes on to its end; without workers the same crash kills the run, which then
    has no summary (:func:`is_unfinished`). Either way the case never ran to its end."""
    return _unfinished_cases(folder, _CRASHED, _is_crash)


def errored_cases(folder: Path) -> int:
    """How many cases of the run in ``folder`` ended in an error (a retriever's exception, a
    time limit, the cost cap, a crash) with no finished record of them: the cases a resume
    of that run runs again."""
    return _unfinished_cases(folder, _ERRORED, lambda rec: rec.get("status") == "error")


_ERRORED = re.compile(r'"status"\s*:\s*"error"')
_CRASHED = re.compile(re.escape(f'"{CRASH_STAGE}"'))


def _is_crash(rec: Mapping[str, Any]) -> bool:
    error = rec.get("error")
    return isinstance(error, Mapping) and error.get("stage") == CRASH_STAGE


def _unfinished_cases(folder: Path, marker: re.Pattern[str],
                      kind: Callable[[Mapping[str, Any]], bool]) -> int:
    """Cases with a record of ``kind`` (not a finished one) and no finished record in the
    run in ``folder``. Read line by line, parsing only the lines ``marker`` is found in: a
    finished run of a million cases is parsed whole only when it holds such an error, which
    nearly none does."""
    unfinished: set[Identity] = set()
    try:
        for line in _lines(folder / CASES_JSONL):
            rec = _record(line) if marker.search(line) else None
            if rec is not None and rec.get("status") not in REUSABLE and kind(rec):
                ident = _identity(rec)
                if ident is not None:
                    unfinished.add(ident)
        if unfinished:
            # a case the run finished afterwards (put back, run again) is done
            for line in _lines(folder / CASES_JSONL):
                rec = _record(line)
                if rec is not None and rec.get("status") in REUSABLE:
                    ident = _identity(rec)
                    if ident is not None:
                        unfinished.discard(ident)
    except OSError:
        return 0
    return len(unfinished)


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        yield from fh


def _record(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None  # a torn last line
    return rec if isinstance(rec, dict) else None


def _identity(rec: Mapping[str, Any]) -> Identity | None:
    try:
        return (str(rec["suite"]), str(rec["retriever"]), str(rec["case_id"]),
                int(rec.get("run", 0)))
    except (KeyError, TypeError, ValueError):
        return None


def left_unfinished(folder: Path) -> bool:
    """Whether the default resume takes the run in ``folder``: it did not run all its cases
    (:func:`is_unfinished`), or a crash left some of them unfinished (:func:`crashed_cases`),
    so that a crash is resumed alike with and without xdist workers."""
    return is_unfinished(folder) or crashed_cases(folder) > 0


def _age_key(folder: Path) -> tuple[str, int]:
    # Run ids start with their UTC second; within one second the later write wins.
    try:
        mtime = (folder / CASES_JSONL).stat().st_mtime_ns
    except OSError:
        mtime = 0
    return folder.name[:16], mtime


def run_folders(runs_root: Path) -> list[Path]:
    """Run folders under ``runs_root`` that hold case records, newest first. Only folders
    named as runs are (a run id): a copy kept under a name of its own (``release-1.0``)
    sorted after every run id and was taken for the newest run; named on purpose
    (``--ragbench-resume=FOLDER``), it is resumed from as any folder is."""
    try:
        entries = list(runs_root.iterdir())
    except OSError:
        return []
    folders = [p for p in entries if RUN_ID.fullmatch(p.name) and is_run_folder(p)
               and (p / CASES_JSONL).is_file()]
    return sorted(folders, key=_age_key, reverse=True)


def resolve_run_folder(ref: str, runs_root: Path, cwd: Path, *,
                       history: Path | None = None) -> Path:
    """The run folder ``ref`` names, as every run reference is read
    (:func:`~pytest_ragbench.results.runref.resolve_run_ref`: a folder, ``latest``, a run
    number, ``last``, ``best`` or a run id), that holds finished cases to resume from."""
    # Here, not at the top: run references may need the history (sqlite3), which a run
    # that resumes nothing never loads.
    from .runref import RunRefError, resolve_run_ref

    given = cwd / ref
    # "--ragbench-resume suite.yaml" reads the path as the run: say how to write both.
    hint = (" (the option takes the argument after it as the run: write "
            "--ragbench-resume=RUN, or put the option after the paths)")
    if given.exists() and not given.is_dir():
        raise ResumeError(f"cannot resume from {given}: a file, not a run folder" + hint)
    try:
        folder = resolve_run_ref(ref, runs_root, history=history, cwd=cwd)
    except RunRefError as exc:
        raise ResumeError(f"cannot resume from {ref!r}: {exc}") from None
    if not (folder / CASES_JSONL).is_file():
        raise ResumeError(f"cannot resume from {folder}: it holds no {CASES_JSONL} (not a "
                          "ragbench run folder, or a run that finished no case)" + hint)
    return folder.resolve()


#: How many resumed runs :meth:`EarlierRun.load` follows back.
MAX_RESUME_CHAIN = 100


def _run_doc(folder: Path) -> dict[str, Any]:
    """The run's ``run.json`` (empty when it is missing or unreadable)."""
    try:
        doc = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _resumed_from(doc: Mapping[str, Any], folder: Path) -> Path | None:
    """The folder of the run the run in ``folder`` resumed, if any (from its run.json): the
    absolute folder it names or, when that is gone, the folder of that name beside
    ``folder`` (the runs folder was moved: a CI artifact unpacked in another workspace)."""
    value = doc.get("resumed_from")
    if not isinstance(value, str) or not value:
        return None
    named = Path(value)
    if named.name not in ("", ".", "..") and not named.is_dir():
        beside = folder.parent / named.name
        if beside.is_dir():
            return beside.resolve()
    return named.resolve()


def resumed_from_folder(folder: Path) -> Path | None:
    """The folder of the run the run in ``folder`` resumed, if any (resolved)."""
    return _resumed_from(_run_doc(folder), folder)


def _run_clock(doc: Mapping[str, Any]) -> float | None:
    """The clock a run scored against (its run.json's ``clock``), if known."""
    value = doc.get("clock")
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return None
    return float(value)


def _whole(retrieved: list[Any], record: Mapping[str, Any]) -> bool:
    """Whether ``retrieved`` is the record's whole ranking: shorter than the depth it was
    kept at (unknown in records written before ``record_depth`` was: never whole)."""
    depth = record.get("record_depth")
    return isinstance(depth, int) and not isinstance(depth, bool) and len(retrieved) < depth


@dataclass
class EarlierRun:
    """The finished records of a run folder, by case identity."""

    run_id: str
    folder: Path
    records: dict[Identity, dict[str, Any]]
    #: The clock its time-dependent metrics scored against: a resumed run scores its new
    #: cases against it too, so old and new records are those of one run (None: unknown).
    clock: float | None = None

    @classmethod
    def load(cls, folder: Path, *,
             chain: Sequence[Sequence[Any]] | None = None,
             suites: Iterable[str] | None = None) -> EarlierRun:
        """The records of the run in ``folder`` and, when it was itself a resume, those of
        the runs it resumed (:func:`resume_chain`): a resumed run stopped before it replayed
        every reused record still holds them all. A run's own finished record of a case wins
        over an earlier run's.

        ``chain``: the chain as the process that resolved the run saw it (an xdist
        controller; :func:`chain_sizes`), read instead of this host's: an older run of it
        missing here, or of another size than there, is a ResumeError, as for the run
        itself in :func:`pick_run`.

        ``suites``: only the records of these suite ids (the others' newest run is
        another)."""
        only = None if suites is None else set(suites)
        records: dict[Identity, dict[str, Any]] = {}
        if chain is None:
            runs = resume_chain(folder)
        else:
            # the run itself at the path it was found at here (resolved there, it may lead
            # through a link this host does not have)
            runs = [folder, *(Path(str(path)) for path, _ in chain[1:])]
            for (_, expected), run in zip(chain, runs, strict=True):
                if isinstance(expected, int) and records_size(run) != expected:
                    _not_the_controllers(run, expected, resumed_by=folder)
        own_clock = _run_clock(_run_doc(folder))
        for index, run in enumerate(reversed(runs)):
            try:
                rows = read_jsonl(run / CASES_JSONL)
            except (OSError, RecordsFileError) as exc:
                if index < len(runs) - 1:
                    continue  # an older run of the chain that is gone or unreadable
                raise ResumeError(f"cannot resume from {folder}: cannot read {CASES_JSONL}: "
                                  f"{exc}") from None
            own: dict[Identity, dict[str, Any]] = {}
            for rec in rows:
                try:
                    ident = (str(rec["suite"]), str(rec["retriever"]), str(rec["case_id"]),
                             int(rec.get("run", 0)))
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue
                if only is not None and ident[0] not in only:
                    continue
                old = own.get(ident)
                # A finished record is kept over an error record of the same case.
                if old is None or old.get("status") not in REUSABLE:
                    own[ident] = rec
            for ident, rec in own.items():
                old = records.get(ident)
                if old is None or rec.get("status") in REUSABLE \
                        or old.get("status") not in REUSABLE:
                    records[ident] = rec
        return cls(run_id=folder.name, folder=folder, records=records,
                   clock=own_clock)

    def reusable(self, keys: SuiteKeys, system: str, case_id: str, run: int
                 ) -> tuple[dict[str, Any] | None, str | None]:
        """(the record to reuse, None) or (None, why not); (None, None) when this run has no
        record of the case."""
        old = self.records.get((keys.suite_id, system, case_id, int(run)))
        if old is None:
            return None, None
        if old.get("status") not in REUSABLE:
            return None, "errored"
        stored = old.get(CASE_KEY_FIELD)
        if not isinstance(stored, Mapping) or stored.get("key") != \
                keys.case_key(system, case_id, run)["key"]:
            return None, keys.change(system, stored)
        retrieved = old.get("retrieved")
        if (isinstance(retrieved, list) and len(retrieved) < keys.depth
                and not _whole(retrieved, old)):
            # kept at a smaller depth: run files written from it would hold fewer documents
            # than the ranking had (a pipeline's contexts as a retriever's documents)
            n = len(retrieved)
            return None, (f"recorded with {n} document{'' if n == 1 else 's'}, the run files "
                          f"keep {keys.depth}")
        # The file may differ in what the key leaves out (gates, comments): the record is
        # valid for the file as it is now.
        return {**old, "suite_hash": keys.suite_hash}, None


def resume_chain(folder: Path) -> list[Path]:
    """The run in ``folder`` and the runs it resumed (``run.json``'s ``resumed_from``,
    followed back), newest first, resolved. The chain stops at a run whose clock differs from
    the newer one's: that one kept none of its records, so they were scored against another
    clock."""
    chain: list[Path] = []
    at: Path | None = folder.resolve()
    doc = _run_doc(folder)
    clock = _run_clock(doc)
    while at is not None and at not in chain and len(chain) < MAX_RESUME_CHAIN:
        chain.append(at)
        at = _resumed_from(doc, at)
        if at is not None:
            doc = _run_doc(at)
            older = _run_clock(doc)
            if clock is not None and older is not None and older != clock:
                # the newer run kept none of its records (it took a clock of its own):
                # those records were scored against another clock than this run's
                break
            clock = clock if clock is not None else older
    return chain


def chain_sizes(folder: Path) -> list[list[Any]]:
    """``[path, size of its cases.jsonl or None]`` for each run of :func:`resume_chain`:
    what a process on another host must find to resume from ``folder`` as this one would
    (see :meth:`EarlierRun.load` and :func:`pick_run`)."""
    return [[str(run), records_size(run)] for run in resume_chain(folder)]


def records_size(folder: Path) -> int | None:
    """The size of a run folder's ``cases.jsonl`` in bytes (None: there is none)."""
    try:
        return (folder / CASES_JSONL).stat().st_size
    except OSError:
        return None


def pick_run(folders: Iterable[Path], suite_ids: Iterable[str], *,
             unfinished_only: bool = False,
             chains: Sequence[Sequence[Sequence[Any]]] | None = None,
             running: Sequence[bool] | None = None,
             finished: list[Path] | None = None,
             passed_over: list[tuple[Path, list[str]]] | None = None) -> EarlierRun | None:
    """The first of ``folders`` (newest first) holding one of ``suite_ids``, loaded; None
    when there is none.

    With ``unfinished_only`` (the bare option) each suite takes the newest run of it, and
    only when that run did not finish every case (:func:`left_unfinished`: the newest run of
    a suite is the one to finish, not an older one it superseded; a case errored in its own
    right finished): the newest of the runs so taken is loaded, with the records of the
    suites that took it alone. A newer run holding some of the suites (one of them resumed
    alone) no longer hides an older unfinished run of the others; None when every suite's
    newest run finished.

    ``chains``: each folder's :func:`chain_sizes` where the run was resolved (an xdist
    controller). A folder missing here, or the one picked or a run it resumed being of
    another size, is a ResumeError: this host does not see the controller's runs (no shared
    filesystem), and resuming from what it sees would run cases again, or mix another run
    in. (Another folder may have grown since: a run of other suites still going.)

    ``running``: whether each folder's run was still going there, which decides instead of
    this host's view: a run's process is known alive only on its own host (a host sharing
    the runs folder took a run going on the controller's for a stopped one), and every
    worker must pick the same run.

    ``finished``: given, the newest run of these suites is appended to it when
    ``unfinished_only`` passes every suite's newest run over as finished (what the run says
    instead of resuming). ``passed_over``: given, each other unfinished run some suites took
    is appended to it, with those suites: a run resumes one run (one clock, one
    ``resumed_from``), and says which it left."""
    left = set(suite_ids)
    taken: list[tuple[Path, Sequence[Sequence[Any]] | None, set[str]]] = []
    newest_finished: Path | None = None
    for index, folder in enumerate(folders):
        if not left:
            break
        going = running[index] if running is not None and index < len(running) \
            else is_running(folder)
        if going:
            continue  # another run of these suites, still going beside this one
        chain = chains[index] if chains is not None and index < len(chains) else None
        expected = chain[0][1] if chain else None
        if isinstance(expected, int) and records_size(folder) is None:
            _not_the_controllers(folder, expected)
        held = run_suites(folder) & left
        if not held:
            continue
        if isinstance(expected, int) and records_size(folder) != expected:
            _not_the_controllers(folder, expected)
        if not unfinished_only:
            return EarlierRun.load(folder, chain=chain or None)
        left -= held
        if left_unfinished(folder):
            taken.append((folder, chain, held))
        elif newest_finished is None:
            newest_finished = folder
    if not taken:
        if finished is not None and newest_finished is not None:
            finished.append(newest_finished)
        return None
    if passed_over is not None:
        passed_over += [(folder, sorted(held)) for folder, _, held in taken[1:]]
    folder, chain, held = taken[0]
    return EarlierRun.load(folder, chain=chain or None, suites=held)


def _not_the_controllers(folder: Path, expected: int, *,
                         resumed_by: Path | None = None) -> None:
    """Raise the ResumeError of a run folder that this host lacks or holds another copy
    of (``resumed_by``: the run being resumed, when ``folder`` is a run it resumed)."""
    import socket

    size = records_size(folder)
    host = f"the host of this worker ({socket.gethostname()})"
    if size is None:
        what = f"its run folder is not on {host}"
    else:
        try:
            n: int | None = len(read_jsonl(folder / CASES_JSONL))
        except (OSError, RecordsFileError):
            n = None
        held = f"{n} record{'' if n == 1 else 's'}, " if n is not None else ""
        what = (f"{host} holds another copy of it ({held}{size} bytes of {CASES_JSONL} "
                f"against the controller's {expected})")
    run = folder.name if resumed_by is None or resumed_by.name == folder.name else (
        f"{resumed_by.name}: it resumed {folder.name}, whose records it holds")
    raise NotOnThisHostError(
        f"cannot resume from {run}: {what}; a resume reads the run in {folder} on "
        "every host its workers run on: put the runs folder at that path on each (a shared "
        "filesystem, or a copy made after the run stopped), or resume without gateways to "
        "other hosts")


# -- what the controller says ----------------------------------------------------------------


@dataclass
class ResumeTally:
    """The controller's count of a resumed run, fed from the case reports."""

    run_id: str | None = None
    #: Nothing resumed by the bare option: the newest run of these suites, which finished,
    #: and how many of its cases errored (a resume of it by name runs them again).
    finished: tuple[str, int] | None = None
    #: Older unfinished runs the bare option left, each with the suites whose newest run it
    #: is (a run resumes one run).
    passed_over: list[tuple[str, list[str]]] = field(default_factory=list)
    seen: bool = False
    #: A reused record of a case not run now failed: the run fails as if it had run.
    failed: bool = False
    reused: set[str] = field(default_factory=set)
    why: dict[str, str] = field(default_factory=dict)

    def item(self, nodeid: str, info: Mapping[str, Any]) -> None:
        if info.get("reused"):
            self.reused.add(nodeid)
        elif info.get("why"):
            self.why[nodeid] = str(info["why"])

    def as_dict(self, n_records: int) -> dict[str, Any]:
        """What ``summary.json`` keeps under ``run.resumed``."""
        out = {"from": self.run_id, "reused": len(self.reused),
               "run": max(0, n_records - len(self.reused)),
               "not_reused": dict(sorted(Counter(self.why.values()).items()))}
        if self.run_id is None and self.finished is not None:
            out["newest"] = {"run": self.finished[0], "errors": self.finished[1]}
        if self.passed_over:
            out["passed_over"] = [{"run": run, "suites": suites}
                                  for run, suites in self.passed_over]
        return out


def resume_line(info: Mapping[str, Any]) -> str:
    """``"resumed from RUN: 812 cases reused, 188 run (12 not reused: retriever 'bm25'
    parameters changed)"``, then the unfinished runs of other suites the bare option left
    (``"; not resumed: RUN, the newest run of b.yaml, unfinished too (...)"``)."""
    reused, ran = int(info.get("reused", 0)), int(info.get("run", 0))
    if info.get("from") is None:
        # not "every case ran": the run may be interrupted or narrowed (it says so below)
        newest = info.get("newest")
        reason = "no run of these suites, or the newest one finished"
        if isinstance(newest, Mapping) and newest.get("run"):
            errors = int(newest.get("errors") or 0)
            reason = f"the newest run of these suites, {newest['run']}, finished"
            if errors:
                reason += (f"; --ragbench-resume={newest['run']} runs its {errors} errored "
                           f"case{'' if errors == 1 else 's'} again")
        return (f"ragbench: nothing to resume ({reason}): {ran} case{'' if ran == 1 else 's'} "
                "ran, none reused")
    text = (f"resumed from {info['from']}: {reused} case{'' if reused == 1 else 's'} reused, "
            f"{ran} run")
    why: Mapping[str, int] = info.get("not_reused") or {}
    if why:
        total = sum(why.values())
        if len(why) == 1:
            detail = next(iter(why))
        else:
            detail = "; ".join(f"{n} {reason}" for reason, n in
                               sorted(why.items(), key=lambda kv: (-kv[1], kv[0])))
        text += f" ({total} not reused: {detail})"
    for left in info.get("passed_over") or []:
        run, suites = left.get("run"), ", ".join(left.get("suites") or [])
        text += (f"; not resumed: {run}, the newest run of {suites}, unfinished too (a run "
                 f"resumes one run: resume those suites alone with --ragbench-resume={run})")
    return text
