"""pytest's side of the settings: the plugin's flags and ini keys, read back from a pytest Config.

settings.py holds the one table of settings and resolves it (flag > environment
> ini > default).  This module adds what only pytest has: registering the flags
and ini keys, pytest 9's typed TOML values, the options that are not settings
(--force-rebuild, --from-cache, --cache-warm-only, --cache-summary-json), file
paths taken relative to where pytest was started (flag, environment variable)
or to the rootdir (ini key), and the plain form of it all that the pytest-xdist
controller hands to its workers.

It must not open the cache, read a baseline or talk to an engine.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from pytest_madcache.core.settings import OPTIONS, Settings, SettingsError, resolve

__all__ = ["PATH_SETTINGS", "PluginConfig", "add_options", "check_path_options", "getini", "ini_source",
           "read_config"]

#: Settings that name files the session reads or writes: made absolute in the controller.
PATH_SETTINGS = ("output", "perf_baseline", "perf_report", "perf_plot", "perf_history")
_PATHS = ("dir",) + PATH_SETTINGS


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("madcache", "Docker image cache for model tests (pytest-madcache)")
    for opt in OPTIONS:
        group.addoption(opt.flag, **opt.argparse_kwargs())
        parser.addini(opt.ini, opt.help, default="")
    group.addoption("--force-rebuild", action="store_true", default=False, dest="madcache_force_rebuild",
                    help="build the images even when cached, and replace their cache entries")
    group.addoption("--from-cache", metavar="ID", default=None, dest="madcache_from_cache",
                    help="run only the tests of the model recorded in cache entry ID, with its image")
    group.addoption("--cache-warm-only", action="store_true", default=False, dest="madcache_warm_only",
                    help="fill the cache without running models: build or load the image of every collected "
                         "model test, skip the test bodies (implies --enable-cache)")
    group.addoption("--cache-summary-json", metavar="FILE.json", default=None, dest="madcache_summary_json",
                    help="write the session's exact cache counts (hits, misses, bytes loaded, build time saved, "
                         "entries) to FILE.json; default $MADCACHE_SUMMARY_JSON")


def ini_source(config: pytest.Config) -> str:
    return str(config.inipath) if config.inipath else "ini file"


def getini(config: pytest.Config, name: str) -> str:
    """An ini value; pytest 9 refuses a TOML number or boolean for our string keys (9.0 and 9.1 with a
    bare TypeError, an INTERNALERROR; 9.2 with a UsageError): say which key, which file, and how to
    write it instead, the same on every version."""
    try:
        return config.getini(name)
    except (TypeError, pytest.UsageError) as exc:
        raise pytest.UsageError(f"invalid value for ini key {name} in {ini_source(config)}: {exc}; madcache's ini "
                                f'keys are strings in TOML too: write {name} = "..." (quoted)') from None


@dataclass(frozen=True)
class PluginConfig:
    """The resolved settings with their files made absolute, and the options that are not settings."""

    settings: Settings
    force_rebuild: bool = False
    from_cache: Optional[str] = None

    def to_wire(self) -> Dict[str, Any]:
        """What the controller hands to xdist workers (plain values only)."""
        settings = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}
        for name in _PATHS:
            settings[name] = None if settings[name] is None else str(settings[name])
        settings["output"] = None  # only the controller writes it
        settings["sources"] = dict(settings["sources"])
        return {"settings": settings, "force_rebuild": self.force_rebuild, "from_cache": self.from_cache}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> "PluginConfig":
        raw = dict(wire["settings"])
        for name in _PATHS:
            raw[name] = None if raw.get(name) is None else Path(raw[name])
        return cls(settings=Settings(**raw), force_rebuild=wire["force_rebuild"], from_cache=wire["from_cache"])


def read_config(config: pytest.Config, is_worker: bool = False) -> PluginConfig:
    """Resolve the settings from the command line, the environment and the ini file; a bad value is a
    usage error naming it and its source.  In a worker there is no results file to write."""
    flags = {opt.name: getattr(config.option, f"madcache_{opt.name}", None) for opt in OPTIONS}
    ini = {opt.ini: getini(config, opt.ini) for opt in OPTIONS}
    try:
        settings = resolve(flags, os.environ, ini, ini_source(config))
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if getattr(config.option, "madcache_warm_only", False) and not settings.enabled:
        settings = dataclasses.replace(settings, enabled=True,
                                       sources={**settings.sources, "enabled": "option --cache-warm-only"})
    files: Dict[str, Any] = {}  # the path settings, made absolute: keyword arguments of replace()
    for name in PATH_SETTINGS:
        given = getattr(settings, name)
        if given is None or (name == "output" and is_worker):
            files[name] = None
            continue
        # A relative path is where the user stood for a flag or variable, beside the ini file for an ini key.
        source = settings.source(name)
        base = config.rootpath if source.startswith("ini key") else Path(config.invocation_params.dir)
        path = files[name] = Path(base) / given
        if name != "perf_baseline" and path.is_dir():
            raise pytest.UsageError(f"invalid value {str(given)!r} for --{name.replace('_', '-')} from {source}: "
                                    f"{files[name]} is a directory")
    return PluginConfig(settings=dataclasses.replace(settings, **files),
                        force_rebuild=bool(config.option.madcache_force_rebuild),
                        from_cache=config.option.madcache_from_cache)


# -- an option value that pytest took for a test path (pytest-dev/pytest#8846) ----------------------------

#: Our options that take a value, with where else it can be given: flag -> (environment variable, ini key).
_VALUED_FLAGS: Dict[str, Tuple[Optional[str], Optional[str]]] = {
    **{opt.flag: (opt.env[0], opt.ini) for opt in OPTIONS if not opt.is_switch},
    "--cache-summary-json": ("MADCACHE_SUMMARY_JSON", None),
    "--from-cache": (None, None),
}

_Setup = Tuple[Path, Optional[Path]]  # (rootdir, ini file)


def _pytest_setup(config: pytest.Config, args: Sequence[str]) -> _Setup:
    """The rootdir and ini file pytest picks for these free arguments and the run's -c/--rootdir/-o.

    pytest's own function (private: its signature differs between 7.4, 8 and 9; a failure here makes the
    caller fall back to a rule of its own)."""
    from _pytest.config.findpaths import determine_setup

    params = inspect.signature(determine_setup).parameters
    kwargs: Dict[str, Any] = {"inifile": config.option.inifilename, "args": list(args),
                              "rootdir_cmd_arg": config.option.rootdir or None}
    if "invocation_dir" in params:  # 8, 9
        kwargs["invocation_dir"] = Path(config.invocation_params.dir)
    if "config" in params:  # 7.4
        kwargs["config"] = config
    if "override_ini" in params:  # 9
        kwargs["override_ini"] = config.option.override_ini
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = determine_setup(**kwargs)
    return Path(found[0]), (Path(found[1]) if found[1] else None)


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _describe(setup: _Setup) -> str:
    root, ini = setup
    return f"rootdir {root} " + (f"with {ini}" if ini else "with no ini file")


def misread_option(config: pytest.Config) -> Optional[str]:
    """The one-line explanation when a value of ours, written after a space, changed pytest's rootdir or ini
    file; None when it did not.

    pytest picks its rootdir and ini file before entry-point plugins add their options (pytest-dev/pytest#8846):
    then `--cache-dir /x` is an unknown flag followed by a free argument, and an existing free argument counts
    as a test path.  The rule is pytest's own: what it picks with the free arguments as it saw them, against
    what it picks without our values; only a difference that matches what it did is reported."""
    invocation_dir = Path(config.invocation_params.dir)
    raw = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + [os.fspath(a) for a in config.invocation_params.args]
    free = list(getattr(config.option, "file_or_dir", None) or [])
    ours, seen = _spaced_values(raw, free, invocation_dir)
    if not ours:
        return None
    without = [a for a in seen if a not in {v for _, v in ours}]
    actual: _Setup = (Path(config.rootpath), Path(config.inipath) if config.inipath else None)
    try:
        with_ours, intended = _pytest_setup(config, seen), _pytest_setup(config, without)
    except Exception:  # pytest's private function moved: a rule of our own, looser
        with_ours, intended = actual, None
    if intended is not None and (actual == intended or with_ours == intended):
        return None  # pytest picked what it would have without our values, or they are not what moved it
    if intended is not None and actual[1] is None and intended[1] is None and _within(invocation_dir, actual[0]):
        return None  # no ini file either way, and pytest still runs inside its rootdir: nothing was misread
    guilty = _guilty(ours, invocation_dir, actual, intended)
    if not guilty:
        if intended is None:
            return None
        guilty = ours
    return _explanation(guilty[0], actual, intended)


def _spaced_values(raw: Sequence[str], free: Sequence[str],
                   invocation_dir: Path) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(flag, value) of ours given with a space whose value is an existing path, and the free
    arguments as pytest saw them first, in order, ours among them."""
    ours: List[Tuple[str, str]] = []
    seen: List[str] = []
    i = 0
    while i < len(raw):
        token = raw[i]
        if token == "--":
            seen.extend(a for a in raw[i + 1:] if a in free)
            break
        if token in _VALUED_FLAGS and i + 1 < len(raw) and not raw[i + 1].startswith("-"):
            value = raw[i + 1]
            seen.append(value)
            if (invocation_dir / value.split("::")[0]).exists():
                ours.append((token, value))
            i += 2
            continue
        if token in free:
            seen.append(token)
        i += 1
    return ours, seen


def _guilty(ours: Sequence[Tuple[str, str]], invocation_dir: Path, actual: "_Setup",
            intended: Optional["_Setup"]) -> List[Tuple[str, str]]:
    """Which of our spaced values moved the rootdir (`intended`: where it would be without them)."""
    guilty = []
    for flag, value in ours:
        path = invocation_dir / value
        directory = path if path.is_dir() else path.parent
        if intended is None:  # the fallback: the value lies outside where pytest ran, the rootdir holds it,
            # and no ini file beside or above where pytest ran was read
            if _within(directory, invocation_dir) or not _within(directory, actual[0]):
                continue
            if actual[1] is not None and _within(invocation_dir, actual[1].parent):
                continue
        elif _within(directory, intended[0]):
            continue
        guilty.append((flag, value))
    return guilty


def _explanation(guilty: Tuple[str, str], actual: "_Setup", intended: Optional["_Setup"]) -> str:
    flag, value = guilty
    env, ini = _VALUED_FLAGS[flag]
    made = f"made {actual[0]} the rootdir" + (f" (ini file {actual[1]})" if actual[1] else "")
    if intended is None:
        made += ", so the project's ini file was not read"
    elif intended[1] is not None and intended[1] != actual[1]:
        made += f", so the project's ini file {intended[1]} was not read"
    else:
        made += f" instead of {intended[0]}"
    elsewhere = " or ".join(x for x in (env and f"set {env}", ini and f"{ini} in the ini file") if x)
    return (f"pytest took the value of {flag} {value} as a test path and {made} (an existing path after a "
            f"space: pytest picks its rootdir before plugins add their options, pytest-dev/pytest#8846); "
            f"write {flag}={value}" + (f" (or {elsewhere})" if elsewhere else ""))


def check_path_options(config: pytest.Config) -> None:
    """Stop before any test runs when a value of ours written after a space moved pytest's rootdir or ini
    file (see misread_option); the remedy is the `--flag=value` form.  Workers inherit the controller's
    decision."""
    if hasattr(config, "workerinput"):
        return
    message = misread_option(config)
    if message:
        raise pytest.UsageError(message)
