"""Cache events: what happened to a test's image, a model run, a line to show, a warning.

provide.py and the plugin make them; they reach the pytest-xdist controller
inside a report's `user_properties` as plain dicts (`to_wire`/`from_wire`:
the JSON-like form xdist can send), and report.Summary adds them up.  Typed
values, so a field read in report.py is a field written in provide.py, not a
string key that may have drifted.  Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

__all__ = ["ImageEvent", "RunEvent", "MessageEvent", "WarningEvent", "Event", "to_wire", "from_wire", "PROPERTY"]

PROPERTY = "madcache"  # the name of the user_properties entries that carry events


@dataclass(frozen=True)
class ImageEvent:
    """How one test got its model's image."""

    model: str
    key: str = ""
    cached: bool = False  # the cache was in use for this image
    hit: bool = False
    built: bool = False
    reused: bool = False  # obtained earlier in this session: the cache was not asked again
    engine: Optional[str] = None  # Engine.describe() of the engine the cache used
    cache_id: Optional[str] = None
    how: Optional[str] = None  # on a hit: "present", "delta" or "full"
    bytes_loaded: int = 0
    load_seconds: float = 0.0
    entry_build_seconds: Optional[float] = None  # the hit entry's recorded build time
    build_seconds: Optional[float] = None  # this session's build
    waited: float = 0.0  # for another process building the same key
    fetched_bytes: int = 0  # from the remote cache
    pushed_bytes: int = 0  # to the remote cache
    miss_reason: Optional[str] = None  # on a miss: why, in one line (why.MissReason.line)
    miss_group: Optional[str] = None  # on a miss: what kind of change (why.MissReason.group), for the summary
    evicted: int = 0  # entries this image's save evicted for the limits
    ahead: bool = False  # obtained by a prefetch before the test asked (--cache-prefetch)
    ahead_seconds: float = 0.0  # the prefetch's own time (lookup, fetch, load)
    ahead_waited: float = 0.0  # how long the test waited for it


@dataclass(frozen=True)
class RunEvent:
    """One model run: a row of the results CSV, in madengine's columns."""

    model: str
    tags: Tuple[str, ...]
    args: str
    params: Mapping[str, Any]
    docker_file: str
    docker_image: str
    docker_sha: str
    performance: Optional[float]
    metric: Optional[str]
    status: str  # "SUCCESS" or "FAILURE"
    build_duration: Optional[float]
    test_duration: float
    cache_hit: str  # "yes", "no", or "" with the cache off
    cache_id: Optional[str]
    nodeid: str
    seq_time: float = 0.0
    kept_container: Optional[str] = None  # --keep-alive: the container left running (not a CSV column)
    direction: str = ""  # "higher" or "lower" is better; "" leaves it to the metric (perf.default_direction)
    threshold: Optional[float] = None  # percent: a regression beyond it fails the test; None fails nothing
    samples: Tuple[float, ...] = ()  # the measured runs when the mark asked for repeats (performance: their median)
    cache_key: Optional[str] = None  # the key of the image that ran: an A/B run finds the baseline's image by it
    baseline_samples: Tuple[float, ...] = ()  # --perf-ab: the baseline image's runs, each paired with samples[i]
    ab_note: str = ""  # --perf-ab: why the run was not compared side by side (same image, baseline image gone...)

    def row(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MessageEvent:
    """A line for the terminal, said in a worker (the controller prints it)."""

    text: str


@dataclass(frozen=True)
class WarningEvent:
    """A warning for the session summary (the cache could not be used...)."""

    text: str


Event = Union[ImageEvent, RunEvent, MessageEvent, WarningEvent]
_KINDS: Dict[str, type] = {"image": ImageEvent, "run": RunEvent, "message": MessageEvent, "warning": WarningEvent}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def to_wire(event: Event, event_id: str) -> Dict[str, Any]:
    """The plain dict that crosses to the xdist controller."""
    data = dataclasses.asdict(event)
    if isinstance(event, RunEvent):
        data["tags"] = list(event.tags)
        data["samples"] = list(event.samples)
        data["baseline_samples"] = list(event.baseline_samples)
    return {"kind": _KIND_OF[type(event)], "id": event_id, **data}


def from_wire(data: Mapping[str, Any]) -> Tuple[Optional[str], Optional[Event]]:
    """(event id, event) from `to_wire`'s dict; (None, None) for what is not ours."""
    cls = _KINDS.get(str(data.get("kind")))
    if cls is None:
        return None, None
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    if cls is RunEvent:
        values["tags"] = tuple(values.get("tags") or ())
        values["samples"] = tuple(values.get("samples") or ())
        values["baseline_samples"] = tuple(values.get("baseline_samples") or ())
    return (str(data["id"]) if data.get("id") is not None else None), cls(**values)
