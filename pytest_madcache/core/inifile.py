"""The ini file the `madcache` command reads outside pytest: found the way pytest finds its own
(the same names, in the same order, from the working directory up), so a project's
`madcache_*` ini keys mean the same to `pytest` and to `madcache`."""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from pytest_madcache.core.settings import SettingsError

__all__ = ["CONFIG_NAMES", "read_ini_file"]


def _load_toml(path: Path) -> Mapping[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib
    with open(path, "rb") as fh:
        return tomllib.load(fh)


# pytest 9's per-directory order (_pytest.config.findpaths.locate_config).  pytest
# 7.4/8 do not know pytest.toml/.pytest.toml; finding them anyway is harmless.
CONFIG_NAMES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def read_ini_file(start: Optional[Path] = None) -> Tuple[Dict[str, Any], str]:
    """Find pytest's config file the way pytest does and read our keys from it.

    Mirrors pytest 9's `locate_config` without importing pytest (the command
    runs without it): from `start` (default: the current directory) upwards,
    and in each directory the first of CONFIG_NAMES that pytest would take:

    - pytest.toml / .pytest.toml: always, keys under `[pytest]`;
    - pytest.ini / .pytest.ini: always, keys under `[pytest]`;
    - pyproject.toml: with `[tool.pytest]` (native TOML) or
      `[tool.pytest.ini_options]`; both at once is an error, as in pytest;
    - tox.ini: with a `[pytest]` section;
    - setup.cfg: with a `[tool:pytest]` section (a plain `[pytest]` one is an
      error, as in pytest).

    If none qualifies, the nearest pyproject.toml is the config file (without
    keys), as pytest reports it.  Returns the `madcache_*` keys and the file's
    path (for error messages), or `({}, "no ini file")`.
    """
    here = Path(os.path.abspath(start if start is not None else Path.cwd()))  # as pytest: no symlink resolution
    first_pyproject: Optional[Path] = None
    for directory in (here, *here.parents):
        for name in CONFIG_NAMES:
            path = directory / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and first_pyproject is None:
                first_pyproject = path
            found = _pytest_section(path)
            if found is not None:
                section, table = found
                ours = _ours(section)
                if table:
                    _strings_only(ours, path, table)
                return ours, str(path)
    if first_pyproject is not None:
        return {}, str(first_pyproject)
    return {}, "no ini file"


def _strings_only(values: Mapping[str, Any], path: Path, table: str) -> None:
    """In its native-TOML tables pytest 9 hands our keys (registered as strings) over
    only when they are strings: `madcache_max_entries = 7` there makes pytest stop
    with a TypeError.  Refuse it here too, so the command and the plugin agree."""
    for key, value in values.items():
        if not isinstance(value, str):
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            raise SettingsError(
                f"invalid value {value!r} for ini key {key} in {path}: pytest reads {table} with native TOML "
                f"types and wants a string for this key; write {key} = \"{text}\""
            )


def _pytest_section(path: Path) -> Optional[Tuple[Mapping[str, Any], str]]:
    """pytest's settings in `path` and, for native-TOML tables, the table's name;
    None when pytest would pass the file over."""
    name = path.name
    if path.suffix == ".toml":
        try:
            data = _load_toml(path)
        except Exception as exc:
            raise SettingsError(f"cannot read {path}: {exc}") from None
        if name in ("pytest.toml", ".pytest.toml"):
            table = data.get("pytest", {})
            return (table if isinstance(table, dict) else {}), "[pytest]"
        tool = data.get("tool", {})
        tool_pytest = tool.get("pytest", {}) if isinstance(tool, dict) else {}
        if not isinstance(tool_pytest, dict):
            return None
        native = {k: v for k, v in tool_pytest.items() if k != "ini_options"}
        ini_options = tool_pytest.get("ini_options")
        if native and ini_options is not None:
            raise SettingsError(
                f"cannot read {path}: it has both [tool.pytest] and [tool.pytest.ini_options]; "
                "pytest accepts only one of them"
            )
        if native:
            return native, "[tool.pytest]"
        return (ini_options, "") if isinstance(ini_options, dict) else None

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in pytest
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    if name == "setup.cfg":
        if parser.has_section("tool:pytest"):
            return dict(parser.items("tool:pytest")), ""
        if parser.has_section("pytest"):
            raise SettingsError(f"cannot read {path}: pytest no longer supports a [pytest] section in setup.cfg; "
                                "use [tool:pytest]")
        return None
    if parser.has_section("pytest"):
        return dict(parser.items("pytest")), ""
    return ({}, "") if name in ("pytest.ini", ".pytest.ini") else None


def _ours(section: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in section.items() if k.startswith("madcache_")}
