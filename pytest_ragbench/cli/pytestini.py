"""Where pytest keeps its cache for the project a command is run in, found without starting
pytest (which would load the project's plugins and conftest files).

pytest's rules, as documented for ``rootdir`` and ``inifile``: from the current folder upwards,
the first folder holding a file with pytest configuration (``pytest.toml`` and
``.pytest.toml`` from pytest 9, ``pytest.ini`` and ``.pytest.ini`` whatever they hold, a
``pyproject.toml`` with ``[tool.pytest.ini_options]`` or ``[tool.pytest]``, a ``tox.ini`` with
``[pytest]``, a ``setup.cfg`` with ``[tool:pytest]``, in this order within a folder) is the
rootdir; without one, the folder of the nearest ``pyproject.toml``, else the nearest folder with
a ``setup.py``, else the current folder (``--rootdir`` in ``PYTEST_ADDOPTS`` names it
instead). The cache is the ini's ``cache_dir``, unless a ``-o cache_dir=...`` in the ini's
``addopts`` (pytest releases that apply it) or in ``PYTEST_ADDOPTS`` overrides it (``$VAR``
and ``~`` expanded, relative to the rootdir), by default ``.pytest_cache`` (under
``$TOX_ENV_DIR`` when tox runs pytest). Options given on pytest's command line
(``-o cache_dir=...``, ``--rootdir``, ``-c``), and ``-c`` in ``PYTEST_ADDOPTS``, are not seen
here.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["IniError", "PytestCache", "pytest_cache"]

_DEFAULT = ".pytest_cache"


class IniError(Exception):
    """A configuration file pytest would read cannot be read (pytest would stop on it too)."""


@dataclass(frozen=True)
class PytestCache:
    """pytest's cache folder for a project: ``folder``, the ``rootdir`` it was found for, the
    ``inifile`` read (None: none), and ``setting``: ``cache_dir``'s value as written in the
    ini or an ``-o cache_dir=VALUE`` of its ``addopts`` or ``PYTEST_ADDOPTS``, or None for
    pytest's default; ``origin`` says which of those, for a message."""

    folder: Path
    rootdir: Path
    inifile: Path | None
    setting: str | None
    origin: str | None = None


def _pytest_major() -> int:
    try:
        return int(version("pytest").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


def _ini_section(path: Path, section: str) -> dict[str, str] | None:
    import iniconfig  # pytest's own ini parser (a dependency of pytest's)

    try:
        parsed = iniconfig.IniConfig(str(path))
    except (iniconfig.ParseError, OSError, UnicodeDecodeError) as exc:
        raise IniError(f"{path}: {exc}") from None
    if section not in parsed:
        return None
    return dict(parsed[section].items())


def _toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the CI runs 3.11+; pytest requires tomli below
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise IniError(f"{path}: {exc}") from None


def _pytest_ini(path: Path) -> dict[str, Any] | None:
    return _ini_section(path, "pytest") or {}


def _tox_ini(path: Path) -> dict[str, Any] | None:
    return _ini_section(path, "pytest")


def _setup_cfg(path: Path) -> dict[str, Any] | None:
    return _ini_section(path, "tool:pytest")


def _pytest_toml(path: Path) -> dict[str, Any] | None:
    table = _toml(path).get("pytest")
    return table if isinstance(table, dict) else {}


def _pyproject(path: Path) -> dict[str, Any] | None:
    tool = _toml(path).get("tool")
    table = tool.get("pytest") if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        return None
    ini = table.get("ini_options")
    if isinstance(ini, dict):
        return ini
    native = {k: v for k, v in table.items() if k != "ini_options"}
    return native if native and _pytest_major() >= 9 else None


def _loaders() -> list[tuple[str, Callable[[Path], dict[str, Any] | None]]]:
    toml = [("pytest.toml", _pytest_toml), (".pytest.toml", _pytest_toml)] \
        if _pytest_major() >= 9 else []
    return [*toml, ("pytest.ini", _pytest_ini), (".pytest.ini", _pytest_ini),
            ("pyproject.toml", _pyproject), ("tox.ini", _tox_ini), ("setup.cfg", _setup_cfg)]


def pytest_cache(cwd: Path) -> PytestCache:
    """pytest's cache folder for a run started in ``cwd`` with no paths or options (see the
    module docstring). Raises :class:`IniError` for a configuration file that cannot be read."""
    here = Path(os.path.abspath(cwd))  # as pytest does: symbolic links kept
    rootdir: Path | None = None
    inifile: Path | None = None
    config: dict[str, Any] = {}
    pyproject: Path | None = None
    loaders = _loaders()
    for folder in (here, *here.parents):
        for name, load in loaders:
            path = folder / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and pyproject is None:
                pyproject = path
            found = load(path)
            if found is not None:
                rootdir, inifile, config = folder, path, found
                break
        if rootdir is not None:
            break
    if rootdir is None and pyproject is not None:
        rootdir, inifile = pyproject.parent, pyproject
    if rootdir is None:
        rootdir = next((f for f in (here, *here.parents) if (f / "setup.py").is_file()), here)
    value = config.get("cache_dir")
    setting = None if value is None else str(value)
    origin = None if setting is None else f"cache_dir = {setting} in {inifile}"
    # pytest reads the overrides of its ini's addopts and then of PYTEST_ADDOPTS (the last
    # -o of a name wins); only the environment's --rootdir counts, the ini being found by then
    given = config.get("addopts") if _overrides_from_ini_addopts() else None
    ini_args = _split(given, f"addopts in {inifile}") if given is not None else []
    env_args = _split(os.environ.get("PYTEST_ADDOPTS", ""), "PYTEST_ADDOPTS")
    for args, where in ((ini_args, f"the addopts of {inifile}"), (env_args, "PYTEST_ADDOPTS")):
        override = _option(args, ("-o", "--override-ini"), "cache_dir=")
        if override is not None:
            setting, origin = override, f"-o cache_dir={override} in {where}"
    named = _option(env_args, ("--rootdir",))
    if named:
        rootdir = Path(os.path.abspath(os.path.join(here, os.path.expandvars(named))))
    if setting is None:
        tox = os.environ.get("TOX_ENV_DIR")
        written = os.path.join(tox, _DEFAULT) if tox else _DEFAULT
    else:
        written = setting
    expanded = Path(os.path.expanduser(os.path.expandvars(written)))
    return PytestCache(rootdir / expanded, rootdir, inifile, setting, origin)


def _overrides_from_ini_addopts() -> bool:
    """Whether this pytest applies an ``-o`` of the ini's ``addopts`` (pytest 8, and 9 before
    its fix of pytest-dev/pytest#14442, read the ini's values before adding those; that fix
    brought ``parse_override_ini`` into ``_pytest.config``, which no release says otherwise)."""
    try:
        import _pytest.config
    except ImportError:  # pragma: no cover - pytest is a dependency
        return False
    return hasattr(_pytest.config, "parse_override_ini")


def _split(value: Any, where: str) -> list[str]:
    """Arguments as pytest takes them from an ``args`` ini value or ``PYTEST_ADDOPTS``."""
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as exc:
        raise IniError(f"{where}: {exc}") from None


def _option(args: list[str], names: tuple[str, ...], prefix: str = "") -> str | None:
    """The value of the last of ``names`` in ``args`` whose value starts with ``prefix``
    (``-o X``, ``-oX``, ``--override-ini X``, ``--override-ini=X``), ``prefix`` cut off."""
    found = None
    for index, arg in enumerate(args):
        value = None
        for name in names:
            if arg == name and index + 1 < len(args):
                value = args[index + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                value = arg[len(name) + 1:]
            elif not name.startswith("--") and arg.startswith(name) and arg != name:
                value = arg[len(name):]
        if value is not None and value.startswith(prefix):
            found = value[len(prefix):]
    return found

