"""Settings: one table of options, one resolver, one precedence.

The `madcache` command, the pytest plugin and the Python API all resolve their
settings here, so a value means the same thing wherever it is given.
Precedence, highest first: flag > environment > ini/pyproject > default (the
plugin puts a test's mark above all of them).  Every resolved value remembers
where it came from, so an error can name the source.

No pytest here: the `madcache` command resolves the same table without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from pytest_madcache.core.context import parse_context
from pytest_madcache.core.parsers import (
    default_cache_dir,
    format_ttl,
    parse_base_key,
    parse_bool,
    parse_compress,
    parse_jobs,
    parse_optional_path,
    parse_path,
    parse_percent,
    parse_plot_path,
    parse_positive_float,
    parse_positive_int,
    parse_prefetch,
    parse_remote,
    parse_remote_compress,
    parse_ttl,
)

__all__ = [
    "Option",
    "OPTIONS",
    "Settings",
    "SettingsError",
    "parse_ttl",
    "format_ttl",
    "resolve",
    "default_cache_dir",
]


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names value and source."""


# -- additional context ------------------------------------------------------------


def parse_additional_context(text: Any, source: str) -> Dict[str, Any]:
    """`parse_context` with errors naming the value and `source` (SettingsError)."""
    try:
        return parse_context(text)
    except ValueError as exc:
        raise SettingsError(f"invalid value {str(text)!r} for --additional-context from {source}: {exc}") from None


# -- the option table ----------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting: its flag, environment variables, ini key, parser and default."""

    name: str
    flag: str
    env: Tuple[str, ...]
    ini: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: Optional[str] = None
    is_switch: bool = False
    scope: str = "cache"  # "cache": the plugin and the `madcache` command; "plugin": pytest only
    label: Optional[str] = None  # how error messages name it (default: the name, in words)

    @property
    def said(self) -> str:
        return self.label or self.name.replace("_", " ")

    def argparse_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for argparse / pytest's `addoption` (same API)."""
        kwargs: Dict[str, Any] = {"dest": f"madcache_{self.name}", "help": self.help, "default": None}
        if self.is_switch:
            kwargs["action"] = "store_const"
            kwargs["const"] = "1"
        else:
            kwargs["metavar"] = self.metavar or self.name.upper()
        return kwargs


OPTIONS: Tuple[Option, ...] = (
    Option(
        "enabled", "--enable-cache", ("MADCACHE_ENABLED", "MADENGINE_CACHE_ENABLED"), "madcache_enabled",
        parse_bool, False, "look images up in the cache before building, save them after", is_switch=True,
    ),
    Option(
        "dir", "--cache-dir", ("MADCACHE_DIR", "MADENGINE_CACHE_DIR"), "madcache_dir",
        parse_path, None, "cache directory (default: $XDG_CACHE_HOME/madcache or ~/.cache/madcache)", "DIR",
    ),
    Option(
        "max_entries", "--cache-max-entries", ("MADCACHE_MAX_ENTRIES",), "madcache_max_entries",
        parse_positive_int, 5, "keep at most N entries, least recently used evicted first (default 5)", "N",
    ),
    Option(
        "max_size_gb", "--cache-max-size-gb", ("MADCACHE_MAX_SIZE_GB", "MADENGINE_CACHE_MAX_SIZE_GB"),
        "madcache_max_size_gb", parse_positive_float, 100.0,
        "keep at most this many GB of unique blobs (default 100)", "GB",
    ),
    Option(
        "ttl", "--cache-ttl", ("MADCACHE_TTL",), "madcache_ttl",
        parse_ttl, None, "evict entries unused for this long: 30m, 48h, 7d, or off (default off)", "TTL",
    ),
    Option(
        "remote", "--cache-remote", ("MADCACHE_REMOTE",), "madcache_remote",
        parse_remote, None, "share entries through an OCI registry: REGISTRY/REPOSITORY (default off)",
        "REGISTRY/REPO",
    ),
    Option(
        "remote_compress", "--cache-remote-compress", ("MADCACHE_REMOTE_COMPRESS",), "madcache_remote_compress",
        parse_remote_compress, "gzip",
        "how layers travel to the remote cache: gzip (any registry and engine), zstd (smaller, faster; "
        "pullable by newer engines only) or none (default gzip)", "METHOD",
    ),
    Option(
        "compress", "--cache-compress", ("MADCACHE_COMPRESS",), "madcache_compress",
        parse_compress, "none", "store layer blobs compressed: none or zstd (default none; see the Performance page)",
        "METHOD",
    ),
    Option(
        "shared", "--cache-shared", ("MADCACHE_SHARED",), "madcache_shared", parse_bool, False,
        "create the cache group-writable (dirs 2770 with setgid, files 0660) for several users; "
        "default: private to the user (0700)", is_switch=True,
    ),
    Option(
        "base_key", "--cache-base-key", ("MADCACHE_BASE_KEY",), "madcache_base_key", parse_base_key, "tag",
        "how base images (FROM) join the key: tag (as written, default), local (the engine's image id) or "
        "registry (the registry's digest)", "MODE",
    ),
    Option(
        "prefetch", "--cache-prefetch", ("MADCACHE_PREFETCH",), "madcache_prefetch", parse_prefetch, "loads",
        "obtain cached images (local or remote) in the background, in test order, before their tests ask: "
        "loads (default) or off; misses are built by their tests", "MODE", scope="plugin",
        label="--cache-prefetch",
    ),
    Option(
        "prefetch_jobs", "--cache-prefetch-jobs", ("MADCACHE_PREFETCH_JOBS",), "madcache_prefetch_jobs",
        parse_jobs, None, "images obtained in the background at once (default auto: one at a time)", "N",
        scope="plugin", label="--cache-prefetch-jobs",
    ),
    Option(
        "additional_context", "--additional-context", ("MADCACHE_ADDITIONAL_CONTEXT",), "madcache_additional_context",
        parse_context, None,
        "madengine-style context, e.g. \"{'guest_os': 'UBUNTU'}\" (JSON accepted); joins the key", "DICT",
        scope="plugin", label="--additional-context",
    ),
    Option(
        "live_output", "--live-output", ("MADCACHE_LIVE_OUTPUT",), "madcache_live_output", parse_bool, False,
        "stream build and container output as it comes", is_switch=True, scope="plugin", label="--live-output",
    ),
    Option(
        "keep_alive", "--keep-alive", ("MADCACHE_KEEP_ALIVE",), "madcache_keep_alive", parse_bool, False,
        "keep each model's container running after the model ran, for debugging (madengine's --keep-alive): "
        "the test prints its id and the `docker exec` line to enter it, the summary how to remove them",
        is_switch=True, scope="plugin", label="--keep-alive",
    ),
    Option(
        "output", "--output", ("MADCACHE_OUTPUT",), "madcache_output", parse_path, None,
        "write one CSV row per model run (madengine's performance columns)", "FILE.csv",
        scope="plugin", label="--output",
    ),
    # Performance tracking (perf.py): the baseline a run is compared with, and what to write.
    Option(
        "perf_baseline", "--perf-baseline", ("MADCACHE_PERF_BASELINE",), "madcache_perf_baseline",
        parse_optional_path, None, "compare each model run's performance with this results CSV (an earlier "
        "--output) and fill relative_change; a missing file makes every run new", "FILE.csv",
        scope="plugin", label="--perf-baseline",
    ),
    Option(
        "perf_fail_threshold", "--perf-fail-threshold", ("MADCACHE_PERF_FAIL_THRESHOLD",),
        "madcache_perf_fail_threshold", parse_percent, None,
        "fail a test whose performance moved the wrong way by more than PCT percent against the baseline "
        "(default off: regressions are reported, nothing fails)", "PCT",
        scope="plugin", label="--perf-fail-threshold",
    ),
    Option(
        "perf_report", "--perf-report", ("MADCACHE_PERF_REPORT",), "madcache_perf_report",
        parse_optional_path, None, "write the per-model performance table as Markdown to this file", "FILE.md",
        scope="plugin", label="--perf-report",
    ),
    Option(
        "perf_plot", "--perf-plot", ("MADCACHE_PERF_PLOT",), "madcache_perf_plot",
        parse_plot_path, None, "plot performance against the swept parameter, baseline beside it, to this "
        ".png or .svg file (needs matplotlib: pip install 'pytest-madcache[plot]')", "FILE",
        scope="plugin", label="--perf-plot",
    ),
    Option(
        "perf_ab", "--perf-ab", ("MADCACHE_PERF_AB",), "madcache_perf_ab", parse_bool, False,
        "when a test's image differs from the one its baseline row ran, run both, alternately, on this "
        "machine (the baseline's image from the cache) and judge the change from the pairs", is_switch=True,
        scope="plugin", label="--perf-ab",
    ),
    Option(
        "perf_ab_pairs", "--perf-ab-pairs", ("MADCACHE_PERF_AB_PAIRS",), "madcache_perf_ab_pairs",
        parse_positive_int, 10, "baseline/candidate pairs per model run with --perf-ab, unless the mark's "
        "perf_repeats says (default 10)", "N", scope="plugin", label="--perf-ab-pairs",
    ),
    Option(
        "perf_ab_max_pairs", "--perf-ab-max-pairs", ("MADCACHE_PERF_AB_MAX_PAIRS",), "madcache_perf_ab_max_pairs",
        parse_positive_int, 30, "when the first pairs leave a test inconclusive, run the pairs they ask for, "
        "once, up to this many in all (default 30; at most --perf-ab-pairs: never more)", "N", scope="plugin",
        label="--perf-ab-max-pairs",
    ),
    # The history (perf/history.py): the default branch's last N results, beside the baseline.
    Option(
        "perf_record", "--perf-record", ("MADCACHE_PERF_RECORD",), "madcache_perf_record", parse_bool, False,
        "add this session's results to the performance history (the CI integrations set it on the default "
        "branch only); a session that fails adds nothing", is_switch=True, scope="plugin", label="--perf-record",
    ),
    Option(
        "perf_history", "--perf-history", ("MADCACHE_PERF_HISTORY",), "madcache_perf_history",
        parse_optional_path, None, "the performance history's file (default: perf/history.json in the cache "
        "directory); a remote (--cache-remote) keeps a copy every runner sees", "FILE.json",
        label="--perf-history",
    ),
    Option(
        "perf_history_size", "--perf-history-size", ("MADCACHE_PERF_HISTORY_SIZE",), "madcache_perf_history_size",
        parse_positive_int, 20, "runs the performance history keeps, newest first (default 20)", "N",
        label="--perf-history-size",
    ),
)

OPTIONS_BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings plus, for each, a description of where it came from."""

    enabled: bool
    dir: Path
    max_entries: int
    max_size_gb: float
    ttl: Optional[float]
    remote: Optional[str] = None
    remote_compress: str = "gzip"
    compress: str = "none"
    shared: bool = False
    base_key: str = "tag"
    prefetch: str = "loads"
    prefetch_jobs: Optional[int] = None  # None: auto
    additional_context: Optional[Mapping[str, Any]] = None
    live_output: bool = False
    keep_alive: bool = False
    output: Optional[Path] = None  # as given; the plugin makes it absolute by where it came from
    perf_baseline: Optional[Path] = None
    perf_fail_threshold: Optional[float] = None
    perf_report: Optional[Path] = None
    perf_plot: Optional[Path] = None
    perf_ab: bool = False
    perf_ab_pairs: int = 10
    perf_ab_max_pairs: int = 30
    perf_record: bool = False
    perf_history: Optional[Path] = None  # None: perf/history.json in the cache directory (history_path)
    perf_history_size: int = 20
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def max_size_bytes(self) -> int:
        return int(self.max_size_gb * 1024**3)

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    @property
    def history_path(self) -> Path:
        return self.perf_history if self.perf_history is not None else Path(self.dir) / "perf" / "history.json"


def _flag_source(opt: Option) -> str:
    return f"option {opt.flag}"


def resolve(
    flags: Optional[Mapping[str, Any]] = None,
    env: Optional[Mapping[str, str]] = None,
    ini: Optional[Mapping[str, Any]] = None,
    ini_source: str = "ini file",
    flag_names: Optional[Mapping[str, str]] = None,
    scopes: Sequence[str] = ("cache", "plugin"),
) -> Settings:
    """Resolve every option: flag > environment > ini > default.

    `flags` maps option names (or `madcache_<name>` dests) to raw strings or
    None; `ini` maps ini keys (`madcache_max_entries`) to raw values; `env`
    defaults to `os.environ`; `flag_names` overrides the flag named in
    messages (for aliases such as `prune --ttl`).  Raises SettingsError
    naming value and source.  Options outside `scopes` keep their defaults
    (the `madcache` command does not read the plugin's).
    """
    flags = dict(flags or {})
    env = os.environ if env is None else env
    ini = dict(ini or {})
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for opt in OPTIONS:
        if opt.scope not in scopes:
            values[opt.name] = opt.default
            sources[opt.name] = "default"
            continue
        candidates: list = []
        raw_flag = flags.get(opt.name, flags.get(f"madcache_{opt.name}"))
        if raw_flag is not None:
            label = (flag_names or {}).get(opt.name)
            candidates.append((raw_flag, f"option {label}" if label else _flag_source(opt)))
        for var in opt.env:
            # Set but empty counts as unset: CI templates pass empty inputs through `env:`.
            if env.get(var, "").strip():
                candidates.append((env[var], f"environment variable {var}"))
                break
        raw_ini = ini.get(opt.ini)
        if raw_ini not in (None, ""):
            candidates.append((raw_ini, f"ini key {opt.ini} in {ini_source}"))
        if candidates:
            raw, source = candidates[0]
            values[opt.name] = _parse(opt, raw, source)
            sources[opt.name] = source
        else:
            values[opt.name] = opt.default
            sources[opt.name] = "default"
    if values["dir"] is None:
        values["dir"] = default_cache_dir(env)
    return Settings(sources=sources, **values)


def _parse(opt: Option, raw: Any, source: str) -> Any:
    if isinstance(raw, bool) and opt.parse is parse_bool:
        return raw
    try:
        return opt.parse(str(raw))
    except ValueError as exc:
        raise SettingsError(f"invalid value {str(raw)!r} for {opt.said} from {source}: {exc}") from None


def describe(settings: Settings, names: Sequence[str] = ("dir", "max_entries", "max_size_gb", "ttl")) -> str:
    parts = []
    for name in names:
        value = getattr(settings, name)
        if name == "ttl":
            value = format_ttl(value)
        parts.append(f"{name}={value} ({settings.source(name)})")
    return ", ".join(parts)
