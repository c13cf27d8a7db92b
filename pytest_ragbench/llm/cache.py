"""A SQLite response cache for LLM completions and embeddings, shared safely between processes.

One file can be used by every pytest-xdist worker at once: the database runs in WAL mode
(readers never block the writer), each :class:`ResponseCache` holds one connection per
process with a busy timeout, and every write is one short transaction.

Keys are the SHA-256 of a canonical JSON document of: provider kind, base URL (credentials
stripped), model, messages (or the embedded text), effective request parameters and the
prompt-template version. API keys and headers are never part of a key or of a stored row.

Modes: ``"on"`` reads and writes, ``"off"`` does neither, ``"read-only"`` reads but never
writes (and never creates the file), ``"refresh"`` writes fresh replies without reading.

How a cache hit is reported: ``Completion(cached=True)`` whose ``usage`` keeps the stored
``prompt_tokens`` / ``completion_tokens`` of the original reply, with ``requests=0``. Token
totals therefore stay comparable between a cold and a warm run, while ``requests`` (and the
cost, see :mod:`pytest_ragbench.llm.usage`, which skips cached completions) show what was
really spent. A caller that joins an identical in-flight request of the same wrapper gets the
same treatment, since it cost no request of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import RagbenchError
from . import deadline
from .base import LLM, Completion, Embedder, LLMError, Message, Usage
from .identity import ProviderId, canonical_json

CacheMode = Literal["on", "off", "read-only", "refresh"]
CACHE_MODES: tuple[CacheMode, ...] = ("on", "off", "read-only", "refresh")

# Part of every key: bump it when the key document changes shape, to orphan old rows.
KEY_VERSION = 1
_SCHEMA_VERSION = 2  # 2: chat.estimated
_IN_CHUNK = 500  # stays under SQLite's host-parameter limit in old builds (999)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS chat (
        key TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        created REAL NOT NULL,
        estimated INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS embedding (
        key TEXT PRIMARY KEY,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        created REAL NOT NULL
    )""",
    # replies their caller rejected, dropped when its run ends (see mark_rejected)
    "CREATE TABLE IF NOT EXISTS rejected (key TEXT PRIMARY KEY)",
)


class CacheError(RagbenchError):
    """The cache file could not be opened, read or written."""


def _provider(provider_id: ProviderId | str) -> ProviderId:
    return provider_id if isinstance(provider_id, ProviderId) else ProviderId(provider_id)


def _digest(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def chat_key(
    provider: ProviderId,
    messages: Sequence[Message],
    params: Mapping[str, Any],
    template_version: str = "",
) -> str:
    """Cache key of a chat request; ``params`` are merged over the provider's defaults."""
    return _digest(
        {
            "v": KEY_VERSION,
            "op": "chat",
            "kind": provider.kind,
            "base_url": provider.base_url,
            "model": provider.model,
            "messages": [dict(m) for m in messages],
            "params": {**provider.params, **params},
            "template_version": template_version,
        }
    )


def embedding_key(provider: ProviderId, text: str, template_version: str = "") -> str:
    """Cache key of one text's embedding."""
    return _digest(
        {
            "v": KEY_VERSION,
            "op": "embed",
            "kind": provider.kind,
            "base_url": provider.base_url,
            "model": provider.model,
            "input": text,
            "params": dict(provider.params),
            "template_version": template_version,
        }
    )


@dataclass(frozen=True)
class CachedReply:
    """A stored chat reply."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False  # the reply said no usage: the counts are an estimate

    @property
    def usage(self) -> Usage:
        """Its token counts as the usage of a reply that cost no request."""
        return Usage(self.prompt_tokens, self.completion_tokens, 0, self.estimated)


@dataclass(frozen=True)
class CacheStats:
    """Lookups that hit or missed, and rows written, by one :class:`ResponseCache`."""

    hits: int = 0
    misses: int = 0
    writes: int = 0


_SQLITE_HEADER = b"SQLite format 3\x00"


def cache_path_problem(path: Path, mode: str) -> str | None:
    """What keeps ``path`` from being the response cache in ``mode``, found without creating
    anything (None: nothing). Found at the first case instead, every case errored with the
    raw exception, and in ``refresh`` mode after its requests were paid for."""
    if mode == "off":
        return None
    if path.is_dir():
        return "is a folder; expected the response cache's SQLite file"
    if path.is_file():
        try:
            with path.open("rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if head and head != _SQLITE_HEADER:
            return "is not an SQLite file (the response cache keeps one)"
        return None
    if mode == "read-only":
        return None  # no file yet: nothing is read, nothing written
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be created: {folder} is not writable"
    return None


class ResponseCache:
    """Completions and embeddings stored in the SQLite file at ``path``.

    Methods are synchronous (each is one short query) and respect the mode: lookups return
    nothing unless the mode reads, stores do nothing unless it writes. Safe to share between
    processes; within a process it may be used from several threads.
    """

    def __init__(
        self, path: str | os.PathLike[str], mode: CacheMode = "on", *, busy_timeout: float = 30.0
    ) -> None:
        if mode not in CACHE_MODES:
            raise CacheError(f"cache mode {mode!r} is not one of {', '.join(CACHE_MODES)}")
        self.path = Path(path)
        self.mode: CacheMode = mode
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._columns_of: sqlite3.Connection | None = None  # see _chat_columns
        self._has_estimated = True
        self._pid = 0
        # connections inherited through fork(): SQLite forbids using or closing them in the
        # child, so they are only kept referenced (closing via GC would touch shared locks)
        self._inherited: list[sqlite3.Connection] = []
        self._hits = self._misses = self._writes = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r}, mode={self.mode!r})"

    @property
    def reads(self) -> bool:
        return self.mode in ("on", "read-only")

    @property
    def writes(self) -> bool:
        return self.mode in ("on", "refresh")

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._writes)

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection --------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection | None:
        """This process's connection, opened on first use; None if read-only and no file."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None
        if self.mode == "read-only":
            if not self.path.exists():
                return None
            uri = self.path.resolve().as_uri() + "?mode=ro"
            conn = self._connect(uri, uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(str(self.path), uri=False)
            self._prepare(conn)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _connect(self, target: str, *, uri: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                target,
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit; write batches use explicit BEGIN IMMEDIATE
                check_same_thread=False,  # guarded by self._lock instead
                uri=uri,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open response cache {self.path}: {exc}") from None
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock and can report "locked" without waiting
        # for the busy timeout when many workers start together, hence the bounded retry.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                for statement in _SCHEMA:
                    conn.execute(statement)
                _add_estimated(conn)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                # replies a run rejected and could not drop itself (it died first)
                conn.execute("DELETE FROM chat WHERE key IN (SELECT key FROM rejected)")
                conn.execute("DELETE FROM rejected")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise CacheError(f"cannot prepare response cache {self.path}: {exc}") from None
                time.sleep(0.05)

    def _chat_columns(self) -> str:
        """The chat columns a hit reads: a file written before ``estimated`` and opened
        read-only (never upgraded) has none, and its rows read as measured. Asked once per
        connection, not per lookup."""
        conn = self._connection()
        if conn is not None and self._columns_of is not conn:
            self._columns_of = conn
            self._has_estimated = "estimated" in _columns(conn, "chat")
        if conn is None or self._has_estimated:
            return "text, model, prompt_tokens, completion_tokens, estimated"
        return "text, model, prompt_tokens, completion_tokens, 0"

    def _read(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = self._connection()
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a read-only cache file that was never written
                return []
            raise CacheError(f"cannot read response cache {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise CacheError(f"cannot read response cache {self.path}: {exc}") from None

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn = self._connection()
        assert conn is not None  # only read-only mode lacks a connection, and it never writes
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CacheError(f"cannot write response cache {self.path}: {exc}") from None
        self._writes += len(rows)

    # -- chat ------------------------------------------------------------------------------

    def get_completion(self, key: str) -> CachedReply | None:
        """The stored reply for ``key``, or None (always None when the mode does not read)."""
        if not self.reads:
            return None
        with self._lock:
            rows = self._read(f"SELECT {self._chat_columns()} FROM chat WHERE key = ?", (key,))
            if rows:
                self._hits += 1
                text, model, prompt, completion, estimated = rows[0]
                return CachedReply(text, model, prompt, completion, bool(estimated))
            self._misses += 1
            return None

    def put_completion(self, key: str, completion: Completion) -> None:
        """Store ``completion`` under ``key`` (no-op when the mode does not write)."""
        if not self.writes:
            return
        usage = completion.usage
        row = (
            key,
            completion.text,
            completion.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            time.time(),
            int(usage.estimated),
        )
        with self._lock:
            self._write(
                "INSERT OR REPLACE INTO chat (key, text, model, prompt_tokens, completion_tokens,"
                " created, estimated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [row],
            )

    def forget_completion(self, key: str) -> bool:
        """Drop the reply stored under ``key``; False when the mode does not write."""
        if not self.writes:
            return False
        with self._lock:
            self._write("DELETE FROM chat WHERE key = ?", [(key,)])
            self._write("DELETE FROM rejected WHERE key = ?", [(key,)])
        return True

    def mark_rejected(self, key: str) -> None:
        """Note that the reply under ``key`` was rejected: kept for the run that stored it
        (an identical request gets it again), dropped when a later process opens the cache
        should that run die before dropping it (:meth:`forget_completion`)."""
        if self.writes:
            with self._lock:
                self._write("INSERT OR IGNORE INTO rejected (key) VALUES (?)", [(key,)])

    # -- embeddings ------------------------------------------------------------------------

    def get_vectors(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored float32 vectors for those ``keys`` that have one."""
        wanted = list(dict.fromkeys(keys))
        if not self.reads or not wanted:
            return {}
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._read(
                    f"SELECT key, dim, vector FROM embedding WHERE key IN ({marks})", chunk
                )
                for key, dim, blob in rows:
                    vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
                    if vector.shape != (dim,):
                        raise CacheError(f"corrupt embedding row in response cache {self.path}")
                    found[key] = vector
            self._hits += len(found)
            self._misses += len(wanted) - len(found)
        return found

    def put_vectors(self, items: Mapping[str, np.ndarray]) -> None:
        """Store vectors (as little-endian float32 bytes); no-op when the mode does not write."""
        if not self.writes or not items:
            return
        now = time.time()
        rows = []
        for key, vector in items.items():
            flat = np.asarray(vector, dtype="<f4").reshape(-1)
            rows.append((key, int(flat.shape[0]), flat.tobytes(), now))
        with self._lock:
            self._write(
                "INSERT OR REPLACE INTO embedding (key, dim, vector, created) VALUES (?, ?, ?, ?)",
                rows,
            )


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def _add_estimated(conn: sqlite3.Connection) -> None:
    """Upgrade a cache written before ``chat.estimated``: its rows read as measured (no
    older file says which of its counts were estimates)."""
    if "estimated" in _columns(conn, "chat"):
        return
    try:
        conn.execute("ALTER TABLE chat ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):  # another worker upgraded it first
            raise


def _free(completion: Completion) -> Completion:
    """The completion as reported to a caller it cost nothing: same tokens, no requests."""
    usage = completion.usage
    return Completion(
        text=completion.text,
        usage=Usage(usage.prompt_tokens, usage.completion_tokens, 0, usage.estimated),
        model=completion.model,
        cached=True,
    )


class _CachedComponent:
    """What :class:`CachedLLM` and :class:`CachedEmbedder` share: the wrapped component, the
    cache, the identity their keys are built from, and the requests in flight."""

    def __init__(
        self,
        inner: Any,
        cache: ResponseCache,
        *,
        provider_id: ProviderId | str,
        template_version: str = "",
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.provider_id = _provider(provider_id)
        self.template_version = template_version
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        # the call behind each request in flight: its waits for a slot stop the clocks of
        # the cases that join it (llm/deadline.py)
        self._sharing: dict[str, deadline.SharedCall] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, {self.cache!r})"


class CachedLLM(_CachedComponent):
    """An :class:`~pytest_ragbench.llm.base.LLM` that answers from a :class:`ResponseCache`.

    Args:
        inner: the provider asked on a miss.
        cache: where replies are stored.
        provider_id: the inner provider's identity (built-in providers expose it as
            ``inner.provider_id``); a plain string is taken as the kind.
        template_version: version of the prompt template, so that changing a template
            invalidates its cached replies.

    Identical requests in flight at the same time through this instance share one call to
    ``inner`` (whatever the cache mode, except ``"off"``, which passes every call through).
    """

    inner: LLM
    _inflight: dict[str, asyncio.Future[Completion]]

    def lookup(self, messages: Sequence[Message], params: Mapping[str, Any]) -> Completion | None:
        """The stored reply to this request (as :meth:`chat` would serve it), or None; sends
        nothing."""
        if self.cache.mode == "off":
            return None
        hit = self.cache.get_completion(
            chat_key(self.provider_id, messages, dict(params), self.template_version))
        if hit is None:
            return None
        return Completion(text=hit.text, usage=hit.usage, model=hit.model, cached=True)

    def store(self, messages: Sequence[Message], params: Mapping[str, Any],
              completion: Completion) -> None:
        """Store ``completion`` as the reply to this request (e.g. one item's entry of a
        batched judge reply, stored as the reply to the request it would make alone)."""
        if self.cache.mode != "off":
            self.cache.put_completion(
                chat_key(self.provider_id, messages, dict(params), self.template_version),
                completion)

    def mark_rejected(self, messages: Sequence[Message], params: Mapping[str, Any]) -> None:
        """Note that the stored reply to this request was rejected (see
        :meth:`ResponseCache.mark_rejected`)."""
        if self.cache.mode != "off":
            self.cache.mark_rejected(
                chat_key(self.provider_id, messages, dict(params), self.template_version))

    def forget(self, messages: Sequence[Message], params: Mapping[str, Any]) -> bool:
        """Drop the stored reply to this request (one its caller rejected), so that the next
        :meth:`chat` asks the provider; False when the cache cannot (mode off or
        read-only)."""
        if self.cache.mode == "off":
            return False
        return self.cache.forget_completion(
            chat_key(self.provider_id, messages, dict(params), self.template_version))

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """The cached reply if there is one, else the inner provider's (then stored)."""
        if self.cache.mode == "off":
            return await self.inner.chat(messages, **params)
        key = chat_key(self.provider_id, messages, params, self.template_version)
        hit = self.cache.get_completion(key)
        if hit is not None:
            return Completion(
                text=hit.text,
                usage=hit.usage,
                model=hit.model,
                cached=True,
            )
        while (pending := self._inflight.get(key)) is not None:
            with self._sharing[key].joined():
                await asyncio.wait({pending})
            if pending.cancelled():
                continue  # the leading caller was cancelled; take over or join a newer one
            error = pending.exception()
            if error is not None:
                raise error
            return _free(pending.result())
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        shared = self._sharing[key] = deadline.SharedCall()
        try:
            with shared.making():
                completion = await self.inner.chat(messages, **params)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved when nobody was waiting
            raise
        else:
            future.set_result(completion)
        finally:
            self._inflight.pop(key, None)
            self._sharing.pop(key, None)
            if not future.done():  # cancelled: joiners see it and retry themselves
                future.cancel()
        self.cache.put_completion(key, completion)
        return completion


class CachedEmbedder(_CachedComponent):
    """An :class:`~pytest_ragbench.llm.base.Embedder` caching one vector per text.

    Only the texts missing from the cache go to ``inner`` (in one call); texts being embedded
    by a concurrent call of this instance are awaited rather than requested again. Arguments
    as for :class:`CachedLLM`.
    """

    inner: Embedder
    _inflight: dict[str, asyncio.Future[np.ndarray]]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``, float32 ``(n, d)``, from the cache where possible."""
        texts = list(texts)
        if self.cache.mode == "off" or not texts:
            return await self.inner.embed(texts)
        keys = [embedding_key(self.provider_id, t, self.template_version) for t in texts]
        text_of = dict(zip(keys, texts, strict=True))
        vectors = self.cache.get_vectors(keys)
        leading: list[str] = []
        joining: dict[str, asyncio.Future[np.ndarray]] = {}
        sharing: dict[int, deadline.SharedCall] = {}
        for key in dict.fromkeys(keys):
            if key in vectors:
                continue
            if key in self._inflight:
                joining[key] = self._inflight[key]
                shared = self._sharing[key]
                sharing[id(shared)] = shared
            else:
                leading.append(key)
        if leading:
            vectors.update(await self._lead(leading, text_of))
        if joining:
            with contextlib.ExitStack() as stack:
                for shared in sharing.values():
                    stack.enter_context(shared.joined())
                await asyncio.wait(set(joining.values()))
            orphaned = []
            for key, pending in joining.items():
                if pending.cancelled():
                    orphaned.append(key)
                elif (error := pending.exception()) is not None:
                    raise error
                else:
                    vectors[key] = pending.result()
            if orphaned:  # their leader was cancelled: ask for them ourselves
                vectors.update(await self._lead(orphaned, text_of))
        dims = {vectors[key].shape[0] for key in keys}
        if len(dims) != 1:
            raise LLMError(
                f"embedding dimensions differ between cache and provider ({sorted(dims)}); "
                f"the cache {self.cache.path} holds vectors of another model setup"
            )
        return np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)

    async def _lead(self, keys: list[str], text_of: Mapping[str, str]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in keys}
        self._inflight.update(futures)
        shared = deadline.SharedCall()
        self._sharing.update(dict.fromkeys(keys, shared))
        try:
            with shared.making():
                array = await self.inner.embed([text_of[key] for key in keys])
            if array.shape[0] != len(keys):
                raise LLMError(f"embedder returned {array.shape[0]} vectors for {len(keys)} texts")
        except Exception as exc:
            for future in futures.values():
                future.set_exception(exc)
                future.exception()  # marks it retrieved when nobody was waiting
            raise
        else:
            fresh = {key: np.asarray(array[i], dtype=np.float32) for i, key in enumerate(keys)}
            for key, future in futures.items():
                future.set_result(fresh[key])
        finally:
            for key, future in futures.items():
                self._inflight.pop(key, None)
                self._sharing.pop(key, None)
                if not future.done():  # cancelled: joiners see it and ask themselves
                    future.cancel()
        self.cache.put_vectors(fresh)
        return fresh
