"""Summary statistics and the results CSV, from the session's events (events.py).

The controller (or the single process) adds up the events every test sent;
nothing here talks to an engine or a cache.  Column names follow madengine's performance
CSV where it has one (model, tags, args, docker_file, docker_image,
docker_sha, performance, metric, status, build_duration, test_duration,
relative_change); the comparison with a baseline comes from perf.py.

It must not reach the engine or the store: it reads events and writes text.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional

from pytest_madcache.core.events import Event, ImageEvent, RunEvent, WarningEvent
from pytest_madcache.util.progress import human_bytes

if TYPE_CHECKING:  # what a comparison found is read, never computed, here
    from pytest_madcache.perf.compare import Comparison, PerfReport

__all__ = ["Summary", "CSV_COLUMNS", "write_csv", "summary_lines", "write_summary_json", "kept_line", "kept_lines"]

CSV_COLUMNS = (
    "model", "tags", "args", "docker_file", "docker_image", "docker_sha",
    "performance", "metric", "status", "build_duration", "test_duration",
    "cache_hit", "cache_id", "params", "nodeid",
    # performance tracking (perf/compare.py): the signed change in percent against --perf-baseline, the
    # baseline's value, the spread of repeated runs (the mark's perf_repeats), and what it means
    "relative_change", "baseline_performance", "performance_min", "performance_max", "repeats", "direction",
    "perf_status",
    # the image that ran (a later --perf-ab finds it by its key), every measured run, and the change's
    # interval (perf/stats.py): from the pairs of an A/B run, else from both sides' repeats
    "cache_key", "samples", "baseline_samples", "change_low", "change_high", "perf_method",
)


@dataclass
class Summary:
    """What the cache did in one session (all workers together)."""

    enabled: bool = False
    hits: int = 0
    misses: int = 0
    present: int = 0  # hits where the engine already had the image
    builds: int = 0
    bytes_loaded: int = 0
    load_seconds: float = 0.0
    build_seconds: float = 0.0
    saved_seconds: float = 0.0  # recorded build time of the entries that hit
    waited_seconds: float = 0.0
    reused: int = 0  # images used again within the session without asking the cache
    fetched_bytes: int = 0  # from a remote cache
    pushed_bytes: int = 0  # to a remote cache
    warnings: List[str] = field(default_factory=list)
    runs: List[RunEvent] = field(default_factory=list)
    entries_hit: List[str] = field(default_factory=list)  # cache entry ids loaded (or present)
    entries_saved: List[str] = field(default_factory=list)  # cache entry ids built and saved
    engines: List[str] = field(default_factory=list)  # which engine(s) the images came from, and how
    misses_by_reason: Dict[str, int] = field(default_factory=dict)  # why.MissReason.group -> count
    images: List[Dict[str, Any]] = field(default_factory=list)  # per image asked of the cache: key, entry, why
    keys: List[str] = field(default_factory=list)  # the session's working set: every key asked of the cache
    evicted: int = 0  # entries evicted for the limits during the session and at its end
    end_lines: List[str] = field(default_factory=list)  # what the end of the session did to the cache
    ahead: int = 0  # hits a prefetch obtained before their test asked
    ahead_seconds: float = 0.0  # the time those prefetches took
    ahead_waited: float = 0.0  # the part of it tests waited for

    def add(self, event: Event) -> None:
        if isinstance(event, ImageEvent):
            self._add_image(event)
        elif isinstance(event, RunEvent):
            self.runs.append(event)
        elif isinstance(event, WarningEvent):
            if event.text not in self.warnings:
                self.warnings.append(event.text)

    def _add_image(self, e: ImageEvent) -> None:
        if e.engine and e.engine not in self.engines:
            self.engines.append(e.engine)
        if e.reused:
            self.reused += 1
            return
        if e.built:
            self.builds += 1
            self.build_seconds += e.build_seconds or 0.0
        if not e.cached:
            return
        if e.key and e.key not in self.keys:
            self.keys.append(e.key)
        self.evicted += e.evicted
        self.images.append({"model": e.model, "key": e.key, "cache_id": e.cache_id, "hit": e.hit,
                            "miss_reason": e.miss_reason, "load_seconds": round(e.load_seconds, 3),
                            "prefetched": e.ahead, "prefetch_waited_seconds": round(e.ahead_waited, 3)})
        self.waited_seconds += e.waited
        self.fetched_bytes += e.fetched_bytes
        self.pushed_bytes += e.pushed_bytes
        if e.hit:
            self.hits += 1
            self.bytes_loaded += e.bytes_loaded
            self.load_seconds += e.load_seconds
            self.saved_seconds += e.entry_build_seconds or 0.0
            if e.how == "present":
                self.present += 1
            if e.cache_id:
                self.entries_hit.append(e.cache_id)
            if e.ahead:
                self.ahead += 1
                self.ahead_seconds += e.ahead_seconds
                self.ahead_waited += min(e.ahead_waited, e.ahead_seconds)
        else:
            self.misses += 1
            if e.miss_group:
                self.misses_by_reason[e.miss_group] = self.misses_by_reason.get(e.miss_group, 0) + 1
            if e.cache_id:
                self.entries_saved.append(e.cache_id)

    def mark_failed(self, nodeid: str) -> None:
        """A test that failed after its run: its runs are not good results."""
        self.runs = [replace(r, status="FAILURE") if r.nodeid == nodeid and r.status == "SUCCESS" else r
                     for r in self.runs]

    def as_dict(self) -> Dict[str, Any]:
        """The exact counts, for --cache-summary-json (read by the CI integrations)."""
        return {
            "enabled": self.enabled, "hits": self.hits, "misses": self.misses, "present": self.present,
            "builds": self.builds, "reused": self.reused, "bytes_loaded": self.bytes_loaded,
            "load_seconds": round(self.load_seconds, 3), "build_seconds": round(self.build_seconds, 3),
            "build_time_saved_seconds": round(self.saved_seconds, 3),
            "prefetched": self.ahead, "prefetch_seconds": round(self.ahead_seconds, 3),
            "prefetch_waited_seconds": round(self.ahead_waited, 3),
            "fetched_bytes": self.fetched_bytes, "pushed_bytes": self.pushed_bytes,
            "entries_hit": sorted(set(self.entries_hit)), "entries_saved": sorted(set(self.entries_saved)),
            "misses_by_reason": dict(sorted(self.misses_by_reason.items())),
            "images": list(self.images), "evicted": self.evicted,
            "warnings": list(self.warnings),
            "kept_containers": [r.kept_container for r in self.kept_containers],
        }

    @property
    def kept_containers(self) -> List[RunEvent]:
        """Runs whose container --keep-alive left running."""
        return [r for r in self.runs if r.kept_container]

    @property
    def used(self) -> bool:
        return bool(self.hits or self.misses or self.builds or self.reused or self.runs or self.warnings)


def summary_lines(s: Summary) -> List[str]:
    """The terminal summary, one fact per line."""
    lines: List[str] = []
    if s.enabled:
        lines.append(f"cache hits: {s.hits} ({s.present} already in the engine), misses: {s.misses}"
                     + (f", reused in this session: {s.reused}" if s.reused else ""))
        if s.misses_by_reason:
            lines.append("misses by reason: " + ", ".join(
                f"{why} {n}" for why, n in sorted(s.misses_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))))
        lines.append(f"evicted in this session: {s.evicted} entr{'y' if s.evicted == 1 else 'ies'}")
        lines += s.end_lines
        lines.append(f"bytes loaded: {human_bytes(s.bytes_loaded)} in {s.load_seconds:.1f} s; "
                     f"build time: {s.build_seconds:.1f} s ({s.builds} builds)")
        net = s.saved_seconds - s.load_seconds
        lines.append(f"build time saved: {s.saved_seconds:.1f} s (recorded build durations of the hits; "
                     f"{net:.1f} s net of loading)")
        if s.fetched_bytes or s.pushed_bytes:
            lines.append(f"remote cache: fetched {human_bytes(s.fetched_bytes)}, pushed {human_bytes(s.pushed_bytes)}")
        if s.ahead:
            hidden = s.ahead_seconds - s.ahead_waited
            lines.append(f"prefetched: {s.ahead} image{'' if s.ahead == 1 else 's'} obtained before their tests "
                         f"asked, in {s.ahead_seconds:.1f} s; {hidden:.1f} s of it hidden behind tests, "
                         f"{s.ahead_waited:.1f} s waited for")
        if s.waited_seconds >= 0.05:
            lines.append(f"waited for other processes building the same image: {s.waited_seconds:.1f} s")
    else:
        lines.append(f"cache disabled (use --enable-cache): {s.builds} builds in {s.build_seconds:.1f} s")
    lines += [f"engine: {engine}" for engine in s.engines]
    if s.runs:
        good = sum(1 for r in s.runs if r.status == "SUCCESS")
        lines.append(f"model runs: {len(s.runs)} ({good} SUCCESS, {len(s.runs) - good} FAILURE)")
    lines += kept_lines(s.kept_containers)
    for w in s.warnings:
        lines.append(f"warning: {w}")
    return lines


def kept_line(container_id: str) -> str:
    """What a test says when --keep-alive left its container running."""
    short = container_id[:12]
    return f"Container {short} kept running (--keep-alive); enter it with: docker exec -it {short} sh"


def kept_lines(runs: Iterable[RunEvent]) -> List[str]:
    """The summary's list of containers --keep-alive left running, and how to remove them."""
    runs = sorted(runs, key=lambda r: (r.nodeid, r.seq_time))
    if not runs:
        return []
    lines = [f"containers kept running (--keep-alive): {len(runs)}"]
    kept = [(str(r.kept_container)[:12], r) for r in runs]
    lines += [f"  {cid}  {r.nodeid} ({r.docker_image})" for cid, r in kept]
    ids = " ".join(dict.fromkeys(cid for cid, _ in kept))
    lines.append(f"enter one with: docker exec -it ID sh; remove them with: docker rm -f {ids}")
    return lines


def write_summary_json(path: Path, s: Summary, perf: Optional[PerfReport] = None) -> None:
    """Write `s.as_dict()` to `path` atomically; with `perf`, its table under "perf"."""
    data = s.as_dict()
    if perf is not None:
        from pytest_madcache.perf.table import report_json

        data["perf"] = report_json(perf)
    from pytest_madcache.util.fsutil import replacing

    with replacing(path) as fh:
        fh.write(json.dumps(data, indent=2) + "\n")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _perf_cells(run: RunEvent, comparison: Optional[Comparison]) -> Dict[str, Any]:
    cells: Dict[str, Any] = {
        "performance_min": min(run.samples) if run.samples else None,
        "performance_max": max(run.samples) if run.samples else None,
        "repeats": len(run.samples) or (1 if run.performance is not None else None),
        "samples": run.samples or ((run.performance,) if run.performance is not None else ()),  # one run: itself
    }
    if comparison is not None:
        cells.update(relative_change=comparison.change, baseline_performance=comparison.baseline,
                     direction=comparison.direction, perf_status=comparison.status,
                     change_low=comparison.low_change, change_high=comparison.high_change,
                     perf_method=comparison.method)
    return cells


def write_csv(path: Path, runs: Iterable[RunEvent], comparisons: Iterable[Comparison] = ()) -> int:
    """One row per model run, written atomically; `comparisons` (perf.compare_runs) fill relative_change."""
    by_run = {(c.nodeid, c.seq_time): c for c in comparisons}
    rows = [{**r.row(), **_perf_cells(r, by_run.get((r.nodeid, r.seq_time)))}
            for r in sorted(runs, key=lambda r: (r.nodeid, r.seq_time))]
    from pytest_madcache.util.fsutil import replacing

    with replacing(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _cell(r.get(c)) for c in CSV_COLUMNS})
    return len(rows)


def run_row(*, model: str, tags: Iterable[str], params: Mapping[str, Any], dockerfile: str, image: str,
            image_id: str, performance: Optional[float], metric: Optional[str], status: str,
            build_duration: Optional[float], duration: float, cache_hit: Optional[bool],
            cache_id: Optional[str], nodeid: str, seq_time: float,
            kept_container: Optional[str] = None, direction: str = "",
            threshold: Optional[float] = None, samples: Iterable[float] = (), cache_key: Optional[str] = None,
            baseline_samples: Iterable[float] = (), ab_note: str = "") -> RunEvent:
    """The run event of one model run (plain values only: it crosses process boundaries)."""
    return RunEvent(
        model=model, tags=tuple(tags),
        args=" ".join(f"{k}={v}" for k, v in params.items()),
        params={str(k): (v if isinstance(v, (str, int, float, bool)) or v is None else repr(v))
                for k, v in params.items()},
        docker_file=dockerfile, docker_image=image, docker_sha=image_id,
        performance=performance, metric=metric, status=status,
        build_duration=build_duration, test_duration=duration,
        cache_hit="" if cache_hit is None else ("yes" if cache_hit else "no"),
        cache_id=cache_id, nodeid=nodeid, seq_time=seq_time, kept_container=kept_container,
        direction=direction, threshold=threshold, samples=tuple(samples), cache_key=cache_key,
        baseline_samples=tuple(baseline_samples), ab_note=ab_note,
    )
