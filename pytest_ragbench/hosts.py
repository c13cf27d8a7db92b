"""Where an xdist worker finds the controller's suites when its working directory differs.

A worker started by a gateway with ``chdir`` (``--tx 2*popen//chdir=DIR``) or on another host
(``--tx ssh=host//python=...``) runs in a folder of its own, so paths given to the controller
(``--ragbench=suite.yaml``, the ``ragbench_suites`` ini) mean nothing there as they stand. The
controller therefore sends each worker its rootdir, its working directory and the suites
relative to that rootdir (:class:`ControllerPaths`); the worker looks for the same layout under
a few candidate roots of its own host (:func:`resolve_host`). The suites keep their
controller-side node ids, so records aggregate on the controller exactly as at ``-n 0``; the
datasets resolve against each suite file as always, so they come along with the layout.

No pytest here: the plugin calls these functions and turns :class:`HostPathError` into a
usage error.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import RagbenchError

if TYPE_CHECKING:
    from .datasets import Dataset, DatasetSpec

#: The ``workerinput`` key the controller's paths travel under.
HOSTS_INPUT = "ragbench_hosts"


class HostPathError(RagbenchError):
    """A worker cannot find a suite of the run on its host."""


@dataclass(frozen=True)
class ControllerPaths:
    """The controller's view of the run's files, as sent to workers (plain strings).

    ``suites`` holds each explicit suite relative to ``rootdir`` (POSIX separators), or its
    absolute path when it lies outside the rootdir; ``digests`` the SHA-256 of each suite
    file's bytes on the controller (the records' ``suite_hash``; ``""`` where it could not
    be read, and empty from a controller that sent none); ``datasets`` each suite's dataset
    digests on the controller (:meth:`Dataset.digests
    <pytest_ragbench.datasets.Dataset.digests>`; empty where the controller did not read it:
    its workers run in its own folder, or the suite did not load there).
    """

    rootdir: str
    cwd: str
    suites: tuple[str, ...]
    digests: tuple[str, ...] = ()
    datasets: tuple[Mapping[str, str], ...] = ()

    @classmethod
    def of(cls, rootdir: Path, cwd: Path, suites: Sequence[Path],
           datasets: Sequence[Mapping[str, str]] = ()) -> ControllerPaths:
        """The controller's paths; ``suites`` are absolute (as the plugin resolved them)."""
        return cls(str(rootdir), str(cwd), tuple(_relative(p, rootdir) for p in suites),
                   tuple(file_digest(p) for p in suites), tuple(datasets))

    def to_input(self) -> dict[str, Any]:
        """Plain values for xdist's ``workerinput`` (execnet sends only builtin types)."""
        return {"rootdir": self.rootdir, "cwd": self.cwd, "suites": list(self.suites),
                "digests": list(self.digests), "datasets": [dict(d) for d in self.datasets]}

    @classmethod
    def from_input(cls, value: Mapping[str, Any]) -> ControllerPaths:
        """The paths as the controller sent them in the worker's ``workerinput``."""
        return cls(str(value["rootdir"]), str(value["cwd"]),
                   tuple(str(s) for s in value["suites"]),
                   tuple(str(d) for d in value.get("digests") or ()),
                   tuple({str(k): str(v) for k, v in d.items()}
                         for d in value.get("datasets") or ()))


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (a suite's ``suite_hash``), ``""`` if it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


@dataclass(frozen=True)
class HostPaths:
    """The controller's rootdir as found on this worker's host (``root``).

    ``root`` equals the controller's rootdir on the same machine or a filesystem shared at the
    same path; elsewhere it is the copy the worker runs in.
    """

    controller: ControllerPaths
    root: Path

    def map(self, path: str | Path) -> Path:
        """A controller-side path on this host: under the controller's rootdir it moves with
        the rootdir, anything else (an absolute path outside it) stays as it is."""
        p = Path(path)
        if not p.is_absolute():
            return self.root / p
        rel = _relative(p, Path(self.controller.rootdir))
        return p if Path(rel).is_absolute() else self.root / rel

    @property
    def cwd(self) -> Path:
        """The controller's working directory on this host (for options relative to it)."""
        return self.map(self.controller.cwd)

    def suites(self) -> dict[Path, str]:
        """Each explicit suite's path on this host and the node id it must have (its path
        relative to the controller's rootdir, see :func:`suite_node_id`)."""
        return {self.map(s): suite_node_id(Path(s), Path(self.controller.rootdir))
                for s in self.controller.suites}


def candidate_roots(controller_root: Path, worker_root: Path, worker_cwd: Path) -> list[Path]:
    """Where a worker looks for the controller's rootdir, in order, without duplicates.

    1. its own rootdir (the gateway's folder holds the project, or is inside it);
    2. ``<working directory>/<name of the controller's rootdir>``, where ``--rsyncdir
       <rootdir>`` copies the project;
    3. the controller's rootdir at the same absolute path (same machine, a shared filesystem,
       or the same checkout path on every host).
    """
    found: list[Path] = []
    for root in (worker_root, worker_cwd / controller_root.name, controller_root):
        if root not in found:
            found.append(root)
    return found


def resolve_host(controller: ControllerPaths, worker_root: Path, worker_cwd: Path) -> HostPaths:
    """The first candidate root (:func:`candidate_roots`) holding every relative suite as the
    controller has it (the same bytes).

    Raises :class:`HostPathError` naming the first missing suite and every place tried, or a
    suite that differs from the controller's: its cases would run as this host's copy says
    (other metrics, gates or queries) while the controller aggregates them by its own.
    """
    rels = [s for s in controller.suites if not Path(s).is_absolute()]
    roots = candidate_roots(Path(controller.rootdir), worker_root, worker_cwd)
    differing: tuple[Path, Path] | None = None  # (the first copy that differs, its root)
    for root in roots:
        if not all((root / rel).is_file() for rel in rels):
            continue
        changed = _differing(controller, HostPaths(controller, root), relative=True)
        if changed is None:
            host = HostPaths(controller, root)
            break
        differing = differing or (changed, root)
    else:
        if differing is not None:
            path, root = differing
            rel = _relative(path, root)
            raise HostPathError(
                f"suite file {rel} on this worker's host ({path}) differs from the "
                f"controller's ({Path(controller.rootdir) / rel}): a stale or edited copy "
                "would run its own metrics, gates and queries. Each host needs the same "
                "suites and datasets at the same paths relative to the rootdir (see "
                "docs/many-hosts.md)")
        missing = rels[0]
        tried = ", ".join(str(r / missing) for r in roots)
        raise HostPathError(
            f"suite file {missing} (relative to the controller's rootdir "
            f"{controller.rootdir}) not found on this worker's host; tried {tried}. Each "
            "host needs the suite and its datasets at the same path relative to the rootdir "
            "(see docs/many-hosts.md)")
    for path in (host.map(s) for s in controller.suites if Path(s).is_absolute()):
        if not path.is_file():
            raise HostPathError(f"suite file {path} (outside the controller's rootdir) not "
                                "found on this worker's host: a suite outside the rootdir "
                                "must be at the same absolute path on every host")
    changed = _differing(controller, host, relative=False)
    if changed is not None:
        raise HostPathError(f"suite file {changed} (outside the controller's rootdir) on this "
                            "worker's host differs from the controller's: every host needs "
                            "the same suites and datasets (see docs/many-hosts.md)")
    return host


def _differing(controller: ControllerPaths, host: HostPaths, *, relative: bool) -> Path | None:
    """The first suite (relative to the rootdir, or outside it) whose file on this host is
    not the controller's, by digest; None when all match or the controller sent none."""
    for suite, digest in zip(controller.suites, controller.digests, strict=False):
        if Path(suite).is_absolute() is relative or not digest:
            continue
        path = host.map(suite)
        if file_digest(path) != digest:
            return path
    return None


def dataset_difference(host: HostPaths, suite: Path, dataset: Dataset,
                       spec: DatasetSpec) -> str | None:
    """Why the dataset this worker read for the explicit suite at ``suite`` is not the
    controller's (naming the part that differs, where this worker read it), or None.

    Compared by the digests the dataset already carries (computed once as it was read), so
    a host costs nothing more than the reading it does anyway.
    """
    controller = host.controller
    wanted = next((d for s, d in zip(controller.suites, controller.datasets, strict=False)
                   if host.map(s).resolve() == suite.resolve()), None)
    if not wanted or wanted.get("content") in (None, "", dataset.content_hash):
        return None
    mine = dataset.digests()
    if mine["corpus"] != wanted.get("corpus"):
        part = "corpus"
    elif mine["labels"] != wanted.get("labels") and spec.has_qrels:
        part = "qrels"
    else:
        part = "queries"
    return (f"the {spec.part_source(part)} on this worker's host differs from the "
            f"controller's (dataset {spec.name!r} of suite {suite}): its cases would be "
            "scored against other documents, queries or labels than the controller's. "
            "Each host needs the same suites and datasets (see docs/many-hosts.md)")


def suite_node_id(path: Path, rootdir: Path) -> str:
    """The node id of the suite file at ``path`` (absolute, or relative to ``rootdir``): its
    path relative to the rootdir in POSIX form, through ``..`` when it lies outside.

    pytest names a file argument outside the rootdir ``""`` (and the files of a folder
    argument outside it by their path in that folder), so two such suites had the same case
    ids and the second one's results were taken for the first's. Relative to the rootdir the
    ids differ as the files do, and read the same on every host whose layout matches. A path
    with no relative form (another Windows drive) is its own id.
    """
    full = path if path.is_absolute() else rootdir / path
    rel = _relative(full, rootdir)
    if not Path(rel).is_absolute():
        return rel
    try:
        return PurePosixPath(Path(os.path.relpath(full, rootdir))).as_posix()
    except ValueError:
        return full.as_posix()


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form, or ``path`` itself when outside it."""
    try:
        return PurePosixPath(path.relative_to(root)).as_posix()
    except ValueError:
        return str(path)


def is_remote_spec(spec: str) -> bool:
    """Whether an xdist ``--tx`` spec starts its workers on another machine (anything but
    ``popen``: ``ssh=``, ``socket=``, ...), ``2*`` counts included."""
    _, _, body = spec.rpartition("*") if "*" in spec.split("//")[0] else ("", "", spec)
    return "popen" not in body.split("//")


def parse_address(value: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` into ``(host, port)`` (port 0: any free one).

    Raises ValueError with the expected form.
    """
    text = value.strip()
    host, port = text, "0"
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r}: expected HOST, HOST:PORT or [IPv6]:PORT")
        host, port = inner, rest[1:] or "0"
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: expected HOST, HOST:PORT or [IPv6]:PORT with a port "
                         "from 0 to 65535")
    return host, int(port)


def budget_bind(address: str | None, tx_specs: Sequence[str],
                px_specs: Sequence[str] = ()) -> tuple[str, int]:
    """Where the run budget coordinator listens: ``address`` when given, else 127.0.0.1 when
    every gateway is local, else all interfaces (workers on other hosts must reach it; the
    coordinator then advertises this machine's name, and its token keeps others out).
    ``px_specs``: xdist's ``--px`` proxies, through which ``via=`` gateways start theirs."""
    if address:
        return parse_address(address)
    remote = any(is_remote_spec(spec) or behind_remote_proxy(spec, px_specs)
                 for spec in tx_specs)
    return ("0.0.0.0" if remote else "127.0.0.1"), 0


def behind_remote_proxy(spec: str, px_specs: Sequence[str]) -> bool:
    """Whether a ``--tx ...//via=ID`` gateway starts its worker on another machine: where
    the proxy ``--px ...//id=ID`` runs (``--px ssh=host//id=ID --tx 4*popen//via=ID`` puts
    four workers on ``host``, each a ``popen`` there). A proxy not given counts as remote."""
    via = next((part[4:] for part in spec.split("//") if part.startswith("via=")), None)
    if via is None:
        return False
    proxy = next((px for px in px_specs if f"id={via}" in px.split("//")), None)
    return proxy is None or is_remote_spec(proxy)


def gateway_count(tx_specs: Sequence[str]) -> int:
    """How many workers ``--tx`` specs start (``3*popen`` counts 3)."""
    total = 0
    for spec in tx_specs:
        head = spec.split("//")[0]
        count, star, _ = head.partition("*")
        total += int(count) if star and count.isdigit() else 1
    return total


def moves_workers(tx_specs: Sequence[str]) -> bool:
    """Whether some ``--tx`` gateway runs its worker in another folder (``chdir=``) or on
    another machine: pytest-xdist then rewrites the path arguments it sends the workers."""
    return any(is_remote_spec(spec) or "//chdir=" in f"//{spec}" for spec in tx_specs)


def separate_suite_args(args: Sequence[str]) -> list[str]:
    """The values of ``--ragbench PATH`` given as two arguments (not ``--ragbench=PATH``).

    pytest-xdist rewrites every argument naming an existing path relative to its rsync roots
    before sending it to a moved worker, and stops with an internal error for one outside
    them, such as ``suite.yaml`` in ``--ragbench suite.yaml``.
    """
    return [value for flag, value in itertools.pairwise(args) if flag == "--ragbench"]


def unsendable_args(args: Sequence[str], cwd: Path,
                    roots: Sequence[Path]) -> list[tuple[str | None, str]]:
    """The arguments pytest-xdist stops on when it sends the command line to a worker in
    another folder, each with the argument before it (the option it may be the value of).

    xdist rewrites every argument naming an existing path (the part before ``::``) relative
    to one of its rsync ``roots`` and raises an internal error for any other: a relative path
    (``--ragbench-baseline base.json``, a test folder ``suites``) is under none of them.
    ``cwd`` is the folder relative arguments name paths in.
    """
    out: list[tuple[str | None, str]] = []
    for before, arg in zip([None, *args], args, strict=False):
        path = Path(arg.split("::")[0])
        try:
            exists = (path if path.is_absolute() else cwd / path).exists()
        except (OSError, ValueError):
            exists = False
        if not exists:
            continue
        if path.is_absolute() and any(path == r or path.is_relative_to(r) for r in roots):
            continue
        out.append((before, arg))
    return out
