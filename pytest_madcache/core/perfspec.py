"""What a test's `model` mark says about its performance: parsed with the rest of the mark (core),
used by perf tracking (perf/compare.py) to judge runs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

__all__ = ["HIGHER", "LOWER", "DIRECTIONS", "PERF_KWARGS", "PerfSpec", "perf_spec"]


@dataclass(frozen=True)
class PerfSpec:
    """What a test's `model` mark says about its performance."""

    direction: Optional[str] = None  # None: from the metric (default_direction)
    repeats: int = 1  # measured runs per model_run() call; the row records their median
    warmup: int = 0  # runs before them, discarded
    threshold: Optional[float] = None  # percent; above the session's --perf-fail-threshold


def _whole(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r} must be a whole number >= {least}")
    return value


def perf_spec(kw: Mapping[str, Any]) -> PerfSpec:
    """The PerfSpec of a merged mark's keywords; ValueError with the keyword and value when one is bad."""
    spec = PerfSpec()
    direction = kw.get("perf_direction")
    if direction is not None:
        if direction not in DIRECTIONS:
            raise ValueError(f"perf_direction={direction!r} must be 'higher' or 'lower' (which way is better)")
        spec = replace(spec, direction=direction)
    if kw.get("perf_repeats") is not None:
        spec = replace(spec, repeats=_whole(kw["perf_repeats"], "perf_repeats", 1))
    if kw.get("perf_warmup") is not None:
        spec = replace(spec, warmup=_whole(kw["perf_warmup"], "perf_warmup", 0))
    threshold = kw.get("perf_threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
            raise ValueError(f"perf_threshold={threshold!r} must be a percentage >= 0")
        spec = replace(spec, threshold=float(threshold))
    return spec

HIGHER, LOWER = "higher", "lower"
DIRECTIONS = (HIGHER, LOWER)

#: Keywords of the `model` mark that concern performance (model.py accepts them).
PERF_KWARGS = ("perf_direction", "perf_repeats", "perf_warmup", "perf_threshold")
