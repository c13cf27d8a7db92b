"""Where pytest keeps its cache for the project a command is run in, found without starting
pytest (which would load the project's plugins and conftest files).

pytest's rules, as documented for ``rootdir`` and ``inifile``: from the current folder upwards,
the first folder holding a file with pytest configuration (``pytest.toml`` and
``.pytest.toml`` from pytest 9, ``pytest.ini`` and ``.pytest.ini`` whatever they hold, a
``pyproject.toml`` with ``[tool.pytest.ini_options]`` or ``[tool.pytest]``, a ``tox.ini`` with
``[pytest]``, a ``setup.cfg`` with ``[tool:pytest]``, in this order within a folder) is the
rootdir; without one, the folder of the nearest ``pyproject.toml``, else the nearest folder with
a ``setup.py``, else the current folder. The cache is the ini's ``cache_dir`` (``$VAR`` and
``~`` expanded, relative to the rootdir), by default ``.pytest_cache`` (under ``$TOX_ENV_DIR``
when tox runs pytest). Options given on pytest's command line (``-o cache_dir=...``,
``--rootdir``, ``-c``) are not seen here.
"""

from __future__ import annotations

import os
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
    ``inifile`` read (None: none), and ``setting``: ``cache_dir = VALUE`` as written in the
    ini, or None for pytest's default."""

    folder: Path
    rootdir: Path
    inifile: Path | None
    setting: str | None


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
    if setting is None:
        tox = os.environ.get("TOX_ENV_DIR")
        written = os.path.join(tox, _DEFAULT) if tox else _DEFAULT
    else:
        written = setting
    expanded = Path(os.path.expanduser(os.path.expandvars(written)))
    return PytestCache(rootdir / expanded, rootdir, inifile, setting)

