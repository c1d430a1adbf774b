"""The files a pytest session itself writes or keeps, to keep out of every model's build context.

With `context="."` next to the tests, pytest's cache directory, the plugin's
own results (`--output`, `--perf-report`, `--perf-plot`, the summary JSON),
the performance baseline and history CI rewrites on the default branch, and
pytest's `--junitxml` or `--basetemp` land inside the context: hashed into the
key, the next run (even the next test) would miss because of them.  They are
left out of the key and of what the build is sent (model.excluding), so the
image and its key agree.

It must not open the cache or talk to an engine: a Config in, paths out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from pytest_madcache.core.settings import Settings

__all__ = ["session_outputs"]


def _absolute(value: Optional[object], base: Path) -> Optional[Path]:
    if not value:
        return None
    path = Path(os.path.expanduser(os.path.expandvars(str(value))))
    return path if path.is_absolute() else base / path


def session_outputs(config: pytest.Config, settings: Settings) -> Tuple[Path, ...]:
    """Absolute paths of what this session writes (files or directories, existing or not).  Under
    pytest-xdist the controller's answer is handed to the workers (their --output is not theirs to
    write, and their --basetemp is a subdirectory of the one the user gave)."""
    here = Path(config.invocation_params.dir)
    found: List[Optional[Path]] = []
    # pytest's own cache, also with -p no:cacheprovider: a run with it and one without share their keys
    try:
        cache_dir = config.getini("cache_dir")
    except ValueError:  # the key is the cache provider's: unknown without it
        cache_dir = ".pytest_cache"
    found.append(_absolute(cache_dir, config.rootpath))
    # and where pytest ran: `--cache-dir DIR` after a space moves the rootdir once DIR exists (options.py,
    # misread_option lets it be when no ini file is involved), and the cache an earlier run left here stays
    found.append(here / ".pytest_cache")
    for name in ("output", "perf_report", "perf_plot", "perf_history", "perf_baseline"):
        found.append(_absolute(getattr(settings, name, None), here))
    option = config.option
    found.append(_absolute(getattr(option, "madcache_summary_json", None)
                           or os.environ.get("MADCACHE_SUMMARY_JSON", "").strip(), here))
    for name in ("xmlpath", "basetemp", "report_log", "htmlpath", "json_report_file"):  # pytest's and plugins'
        found.append(_absolute(getattr(option, name, None), here))
    storage = str(getattr(option, "benchmark_storage", "") or "")  # pytest-benchmark's, made at every start
    if storage.startswith("file://"):
        found.append(_absolute(storage[len("file://"):], here))
    return tuple(dict.fromkeys(Path(os.path.normpath(p)) for p in found if p is not None))
