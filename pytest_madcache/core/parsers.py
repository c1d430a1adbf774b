"""The parsers of the settings' raw text, one per kind of value.

Each takes the text given (a flag, an environment variable, an ini key) and returns the value, or
raises ValueError with a short reason ("expected ..."); settings.py adds the value and its source.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional

from pytest_madcache.util.codecs import REMOTE_CODECS, STORE_CODECS, parse_codec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def parse_positive_int(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a whole number >= 1") from None
    if value < 1:
        raise ValueError("expected a whole number >= 1")
    return value


PREFETCH_MODES = ("off", "loads")


def parse_prefetch(text: str) -> str:
    """`--cache-prefetch`: off or loads (the default)."""
    low = str(text).strip().lower()
    if low not in PREFETCH_MODES:
        raise ValueError(f"expected one of {', '.join(PREFETCH_MODES)}")
    return low


def parse_jobs(text: str) -> Optional[int]:
    """A count of things at once: a whole number >= 1, or `auto` (None: the caller chooses)."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        return parse_positive_int(text)
    except ValueError:
        raise ValueError("expected a whole number >= 1, or 'auto'") from None


def parse_positive_float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError("expected a number > 0 (gigabytes, e.g. 100 or 0.5)") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("expected a number > 0 (gigabytes, e.g. 100 or 0.5)")
    return value


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_ttl(text: str) -> Optional[float]:
    """`30m`, `48h`, `7d` (also s, w) -> seconds; `off`/`none`/`0` -> None."""
    low = str(text).strip().lower()
    if low in ("", "0", "off", "none", "never"):
        return None
    match = _TTL_RE.match(low)
    if not match:
        raise ValueError("expected a duration such as 30m, 48h or 7d (units s, m, h, d, w), or 'off'")
    seconds = float(match.group(1)) * _TTL_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("expected a duration > 0, or 'off'")
    return seconds


def format_ttl(seconds: Optional[float]) -> str:
    if seconds is None:
        return "off"
    for unit in ("w", "d", "h", "m"):
        size = _TTL_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_path(text: str) -> Path:
    if not str(text).strip():
        raise ValueError("expected a directory path, got an empty string")
    return Path(os.path.expanduser(str(text).strip()))


def parse_remote(text: str) -> Optional[str]:
    """`REGISTRY/REPOSITORY` (e.g. `127.0.0.1:5000/madcache`), or a directory (`file:///path`, an absolute
    path); `off`/empty -> None."""
    low = str(text).strip()
    if low.lower() in ("", "off", "none"):
        return None
    from pytest_madcache.util.refs import directory_of

    path = directory_of(low)
    if path is not None:
        if not os.path.isabs(path):
            raise ValueError("expected file:///ABSOLUTE/PATH for a directory remote")
        return low
    from pytest_madcache.util.refs import RemoteRef

    RemoteRef.parse(low)  # raises ValueError with the reason
    return low


def parse_compress(text: str) -> str:
    return parse_codec(text, STORE_CODECS)


def parse_remote_compress(text: str) -> str:
    return parse_codec(text, REMOTE_CODECS)


def parse_optional_path(text: str) -> Optional[Path]:
    """A file path; empty or `off` -> None.  Whether it exists is for its user to say."""
    raw = str(text).strip()
    if raw.lower() in ("", "off", "none"):
        return None
    return Path(os.path.expanduser(raw))


PLOT_FORMATS = (".png", ".svg")


def parse_plot_path(text: str) -> Optional[Path]:
    path = parse_optional_path(text)
    if path is not None and path.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"expected a file name ending in {' or '.join(PLOT_FORMATS)}")
    return path


def parse_percent(text: str) -> Optional[float]:
    """`10`, `10%` or `2.5` (percent, >= 0) -> the number; `off`/empty -> None."""
    raw = str(text).strip().rstrip("%").strip()
    if raw.lower() in ("", "off", "none"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a percentage >= 0 such as 10 or 2.5, or 'off'") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a percentage >= 0 such as 10 or 2.5, or 'off'")
    return value


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """XDG: $XDG_CACHE_HOME/madcache, else ~/.cache/madcache."""
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path(os.path.expanduser("~")) / ".cache"
    return base / "madcache"


def parse_base_key(text: str) -> str:
    from pytest_madcache.core.bases import parse_base_key as parse

    return parse(text)
