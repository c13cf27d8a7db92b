"""Suites validated once, by the xdist controller, and handed to its workers on the same host.

Validating a suite imports PyYAML and pydantic and builds the schema's models: about 0.2 s
of CPU in every process that loads one. When the controller leads a suite's LLM work (its
head start) it has validated the suite before any worker starts, and each worker would
validate the same file again while the cores are busy with the LLM phase. The controller
sends the :class:`~.model.Suite` it built instead (pickled, one blob per suite file); a
worker uses it only when it would have built the same one itself:

- it names the very file the worker collects: the same resolved path and the same bytes
  (their SHA-256 is the suite's ``suite_hash``);
- the worker's registry names the same components from the same places as the
  controller's did (:func:`registry_fingerprint`): a conftest only the worker loaded, or a
  plugin that registered late, may resolve a metric or retriever name differently;
- it loads here: a class defined in a ``conftest.py`` is refused (pickle names it by the
  module name ``conftest``, which may be another conftest in this process), as is any blob
  that does not unpickle.

Anything else and the worker validates the file itself, with the same result and the same
errors as without a hand-over. The blobs travel from the controller to its own workers over
the channel that also carries their code, so unpickling them trusts nothing new.
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import json
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..registry import KINDS, Registry
from .model import Suite

#: Modules whose names do not say which file they are: a class pickled from one of them may
#: load as another file's class of the same name.
_AMBIGUOUS_MODULES = frozenset({"conftest", "__main__"})


def _frozen(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    # the suite's read-only mappings come back read-only
    return MappingProxyType(mapping)


def _reduce_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _frozen, (dict(proxy),)


def registry_fingerprint(registry: Registry) -> str:
    """What the registry resolves each component name to (name, origin, target, conflicts),
    as a digest: equal in two processes that would build the same suite."""
    rows = [[kind, name, info.origin, info.target, list(info.conflict), list(info.overrides)]
            for kind in KINDS for name, info in registry.infos(kind).items()]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def pack(suites: Iterable[Suite]) -> dict[str, bytes]:
    """Each suite that pickles, by its resolved path (a suite holding something that does not
    pickle, such as a plugin's closure, is left out: its workers validate it themselves)."""
    out: dict[str, bytes] = {}
    for suite in suites:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        # a private table: the interpreter's own (copyreg) stays as it is
        pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_proxy}
        try:
            pickler.dump(suite)
        except Exception:  # whatever a component's __reduce__ raises: the worker validates
            continue
        out[str(suite.path)] = buf.getvalue()
    return out


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in _AMBIGUOUS_MODULES:
            raise pickle.UnpicklingError(f"{module}.{name} may name another file's class here")
        return super().find_class(module, name)


def handed_over(suites: Iterable[Suite], registry: Registry) -> dict[str, Any]:
    """What a controller hands its workers: the suites that pickle, and what its registry
    resolves component names to (see :func:`take`)."""
    return {"registry": registry_fingerprint(registry), "suites": pack(suites)}


def take(handed: Mapping[str, Any], registry: Registry, path: Path) -> Suite | None:
    """The handed suite for ``path`` (resolved) when this process would have built the same
    one (see the module docstring); None otherwise."""
    if handed.get("registry") != registry_fingerprint(registry):
        return None
    suites = handed.get("suites")
    blob = suites.get(str(path)) if isinstance(suites, Mapping) else None
    if not isinstance(blob, bytes):
        return None
    try:
        raw = path.read_bytes()
    except OSError:
        return None  # the loader reports it
    try:
        suite = _Unpickler(io.BytesIO(blob)).load()
    except Exception:  # a class this process cannot import or must not guess: validate
        return None
    # the blob is filed under the path it was validated at (pack): only the bytes can differ
    if not isinstance(suite, Suite) or suite.suite_hash != hashlib.sha256(raw).hexdigest():
        return None
    return suite
