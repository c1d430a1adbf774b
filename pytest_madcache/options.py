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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import pytest

from .settings import OPTIONS, Settings, SettingsError, resolve

__all__ = ["PATH_SETTINGS", "PluginConfig", "add_options", "getini", "ini_source", "read_config"]

#: Settings that name files the session reads or writes: made absolute in the controller.
PATH_SETTINGS = ("output", "perf_baseline", "perf_report", "perf_plot")
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
    files: Dict[str, Optional[Path]] = {}
    for name in PATH_SETTINGS:
        given = getattr(settings, name)
        if given is None or (name == "output" and is_worker):
            files[name] = None
            continue
        # A relative path is where the user stood for a flag or variable, beside the ini file for an ini key.
        source = settings.source(name)
        base = config.rootpath if source.startswith("ini key") else Path(config.invocation_params.dir)
        files[name] = Path(base) / given
        if name != "perf_baseline" and files[name].is_dir():
            raise pytest.UsageError(f"invalid value {str(given)!r} for --{name.replace('_', '-')} from {source}: "
                                    f"{files[name]} is a directory")
    return PluginConfig(settings=dataclasses.replace(settings, **files),
                        force_rebuild=bool(config.option.madcache_force_rebuild),
                        from_cache=config.option.madcache_from_cache)
