"""The performance history: the default branch's last N results, kept beside the baseline.

One baseline row says what the default branch did once; the history says what it has been doing
(its drift, its noise) over its last N runs.  A session that records (`--perf-record`, set by the CI
integrations on the default branch only) adds one run here; `madcache perf history` prints it, and
`--perf-plot` draws it beside each model's bars.

It lives in one small JSON document: a file (`--perf-history`, by default in the cache directory)
and, when a remote is set, a copy there, so every runner sees it.  Copies are merged by run id (a
union, newest N kept), never overwritten blindly: two runners recording at once each keep the
other's run unless both wrote the remote in the same instant.

Pure data and a file: nothing here talks to a registry (the remote's copy comes in through the
`Documents` protocol) or imports pytest.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from filelock import FileLock

from pytest_madcache.perf.compare import HIGHER, PerfReport, params_key
from pytest_madcache.util.fsutil import atomic_write

__all__ = ["HISTORY_DOCUMENT", "Point", "HistoryRun", "History", "HistoryError", "Documents", "HistoryFile",
           "Outcome", "run_from_report", "new_run_id", "gather", "record", "history_lines", "points_of"]

HISTORY_DOCUMENT = "perf-history"  # its name in the remote
FORMAT = 1


class HistoryError(ValueError):
    """A history document that is not one (named with where it came from)."""


@dataclass(frozen=True)
class Point:
    """One test's result in one run: the median, and the interval of this run's value when it had one
    (an A/B estimate turned into performance units, else the spread of its repeats)."""

    model: str
    params: str  # compare.params_key: canonical JSON
    performance: float
    metric: str
    direction: str
    low: Optional[float] = None
    high: Optional[float] = None
    samples: int = 1

    @property
    def label(self) -> str:
        values = json.loads(self.params) if self.params else {}
        return ", ".join(f"{k}={v}" for k, v in values.items()) or "(no parameters)"


@dataclass(frozen=True)
class HistoryRun:
    id: str  # run_<unix time>_<8 hex>, madengine's form
    time: float
    commit: str = ""
    ref: str = ""
    points: Tuple[Point, ...] = ()


@dataclass(frozen=True)
class History:
    runs: Tuple[HistoryRun, ...] = ()  # oldest first

    def merged(self, *others: "History") -> "History":
        """The union by run id (a run recorded twice is one), oldest first."""
        by_id: Dict[str, HistoryRun] = {}
        for history in (self, *others):
            for run in history.runs:
                by_id.setdefault(run.id, run)
        return History(tuple(sorted(by_id.values(), key=lambda r: (r.time, r.id))))

    def last(self, n: int) -> "History":
        return History(self.runs[-n:] if n > 0 else ())

    def models(self) -> List[str]:
        return list(dict.fromkeys(p.model for run in self.runs for p in run.points))

    def series(self, model: str) -> Dict[str, List[Tuple[int, Point]]]:
        """Per parameter set: (run position, point), oldest first; parameter sets in first-seen order."""
        out: Dict[str, List[Tuple[int, Point]]] = {}
        for i, run in enumerate(self.runs):
            for p in run.points:
                if p.model == model:
                    out.setdefault(p.params, []).append((i, p))
        return out


def new_run_id(now: Optional[float] = None) -> str:
    """madengine's id form: run_<unix time>_<8 hex> (as the store names its entries)."""
    return f"run_{int(now if now is not None else time.time())}_{secrets.token_hex(4)}"


# -- the document ---------------------------------------------------------------------------------


def encode(history: History) -> bytes:
    runs = [{"id": r.id, "time": r.time, "commit": r.commit, "ref": r.ref,
             "points": [{k: v for k, v in vars(p).items() if v is not None} for p in r.points]}
            for r in history.runs]
    return json.dumps({"format": FORMAT, "runs": runs}, sort_keys=True, separators=(",", ":")).encode()


def decode(body: bytes, where: str) -> History:
    """A history document back; HistoryError naming `where` when it is not one."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HistoryError(f"{where}: not a performance history of format {FORMAT}")
        runs = tuple(HistoryRun(id=str(r["id"]), time=float(r["time"]), commit=str(r.get("commit", "")),
                                ref=str(r.get("ref", "")), points=tuple(_point(p) for p in r.get("points", ())))
                     for r in data.get("runs", ()))
    except HistoryError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise HistoryError(f"{where}: not a performance history ({type(exc).__name__}: {exc})") from None
    return History(()).merged(History(runs))


def _point(data: Mapping[str, Any]) -> Point:
    def number(name: str) -> Optional[float]:
        return None if data.get(name) is None else float(data[name])

    return Point(model=str(data["model"]), params=str(data.get("params", "{}")),
                 performance=float(data["performance"]), metric=str(data.get("metric", "")),
                 direction=str(data.get("direction", HIGHER)), low=number("low"), high=number("high"),
                 samples=int(data.get("samples", 1)))


class Documents(Protocol):
    """Small named documents in the remote (remote/documents.py).  Both raise OSError when the
    remote cannot be reached; `get_document` gives None when there is no such document."""

    def get_document(self, name: str) -> Optional[bytes]: ...

    def put_document(self, name: str, body: bytes) -> None: ...


class HistoryFile:
    """The local copy: read whole, changed under a lock (several sessions may share the directory)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> History:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return History()
        return decode(body, str(self.path))

    def update(self, change: Callable[[History], History]) -> History:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            history = change(self.read())
            atomic_write(self.path, encode(history))
        return history


# -- a session's run, and the two copies --------------------------------------------------------------


def run_from_report(report: PerfReport, run_id: str, now: float, commit: str = "", ref: str = "") -> HistoryRun:
    """The session's results as one history run: every test that reported a performance."""
    points = []
    for rows in report.by_model().values():
        for c in rows:
            if c.performance is None:
                continue
            low, high = c.low, c.high
            if c.low_change is not None and c.high_change is not None and c.baseline:
                base = c.baseline  # the interval of the change, in this run's units
                low, high = base * (1 + c.low_change / 100.0), base * (1 + c.high_change / 100.0)
            elif len(c.samples) < 2:
                low = high = None
            points.append(Point(model=c.model, params=params_key(c.params), performance=c.performance,
                                metric=c.metric or "", direction=c.direction, low=_round(low), high=_round(high),
                                samples=max(1, len(c.samples))))
    return HistoryRun(id=run_id, time=round(now, 3), commit=commit, ref=ref, points=tuple(points))


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(f"{value:.6g}")


@dataclass
class Outcome:
    history: History
    problems: List[str] = field(default_factory=list)  # what could not be read or written, said once each
    remote_bytes: int = 0  # the document's size as the remote holds it (0: no remote, or not written)


def _remote(remote: Optional[Documents], where: str, problems: List[str]) -> History:
    if remote is None:
        return History()
    try:
        body = remote.get_document(HISTORY_DOCUMENT)
        return decode(body, where) if body is not None else History()
    except (OSError, HistoryError) as exc:
        problems.append(f"the performance history in {where} could not be read ({exc}); using the local copy")
        return History()


def gather(local: HistoryFile, remote: Optional[Documents], remote_name: str, size: int) -> Outcome:
    """Both copies merged, the newest `size` runs (what `madcache perf history` and the plot show)."""
    problems: List[str] = []
    try:
        mine = local.read()
    except HistoryError as exc:
        problems.append(f"{exc}: left out")
        mine = History()
    return Outcome(mine.merged(_remote(remote, remote_name, problems)).last(size), problems)


def record(local: HistoryFile, remote: Optional[Documents], remote_name: str, run: HistoryRun,
           size: int) -> Outcome:
    """Add `run` to both copies (each merged with the other first), keeping the newest `size` runs.
    A local file that is not a history is an error (HistoryError): it is not overwritten."""
    problems: List[str] = []
    theirs = _remote(remote, remote_name, problems)
    history = local.update(lambda mine: mine.merged(theirs, History((run,))).last(size))
    outcome = Outcome(history, problems)
    if remote is not None and not problems:
        body = encode(history)
        try:
            remote.put_document(HISTORY_DOCUMENT, body)
            outcome.remote_bytes = len(body)
        except OSError as exc:
            problems.append(f"the performance history could not be written to {remote_name} ({exc}); "
                            "the local copy has this run")
    return outcome


# -- text -----------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


def history_lines(history: History, model: Optional[str] = None) -> List[str]:
    """Per model, one row per run (oldest first) and one column per parameter set."""
    models = [m for m in history.models() if model is None or m == model]
    if not history.runs:
        return ["no runs recorded yet (a session with --perf-record adds one)"]
    if not models:
        return [f"no run of model {model!r} in the history (models: {', '.join(history.models()) or 'none'})"]
    out: List[str] = []
    for name in models:
        series = history.series(name)
        first = next(iter(series.values()))[0][1]
        better = "higher" if first.direction == HIGHER else "lower"
        out += ["", f"{name} ({first.metric}, {better} is better)"]
        labels = [points[0][1].label for points in series.values()]
        table = [["run", "date", "commit", *labels]]
        for i, run in enumerate(history.runs):
            cells = {key: p for key, points in series.items() for j, p in points if j == i}
            if not cells:
                continue
            date = time.strftime("%Y-%m-%d %H:%M", time.gmtime(run.time))
            table.append([run.id, date, run.commit[:10] or "-",
                          *(_num(cells[k].performance) if k in cells else "-" for k in series)])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        out += ["  " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                .rstrip() for row in table]
    return out[1:]


def points_of(history: History, model: str) -> Sequence[Tuple[str, List[Tuple[int, Point]]]]:
    """The plot's input: (label, [(run position, point)]) per parameter set."""
    return [(points[0][1].label, points) for points in history.series(model).values()]
