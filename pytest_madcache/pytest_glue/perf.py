"""pytest glue of performance tracking (the comparison is perf/compare.py's, the rendering
perf/table.py's and perf/plot.py's, the history perf/history.py's).

plugin.py registers one PerfSession per pytest process.  In every process
that runs tests it fails a test whose model runs moved the wrong way by more
than the threshold, at the end of the test's call, with the value, baseline,
change and threshold in the message.  In the controller (or the single
process) it compares the session's runs once, hands the report to the
results CSV and the summary JSON (plugin.py writes those), prints the
per-model table in the terminal summary, and writes `--perf-report` and
`--perf-plot` (with the history's earlier runs beside each model), and with
`--perf-record` adds a session that passed to the history: under pytest-xdist
nothing is written or recorded twice.

It must not run containers or compute a key; it reads the run events the
`model_run` fixture attached to each test's report.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import pytest

from pytest_madcache.core.events import PROPERTY, RunEvent, from_wire
from pytest_madcache.core.perfspec import PerfSpec
from pytest_madcache.core.settings import Settings
from pytest_madcache.pytest_glue.summary import Summary

if TYPE_CHECKING:  # perf.compare loads when a baseline or a report is asked for
    from pytest_madcache.perf.compare import Baseline, PerfReport
    from pytest_madcache.perf.history import Documents, History, HistoryRun

__all__ = ["PerfSession"]


class PerfSession:
    """Performance tracking for one pytest process."""

    def __init__(self, settings: Settings, summary: Summary, is_worker: bool, warning: type) -> None:
        self.settings = settings
        self.summary = summary
        self.is_worker = is_worker
        self.warning = warning  # the plugin's MadcacheWarning
        self._baseline: Optional[Baseline] = None
        self._report: Optional[PerfReport] = None
        self.written: List[str] = []  # what the terminal summary says was written
        self.problems: List[str] = []

    @property
    def active(self) -> bool:
        """A baseline, a threshold, a report or a plot was asked for: then the table is shown."""
        s = self.settings
        return s.perf_ab or s.perf_record or any(v is not None for v in (s.perf_baseline, s.perf_fail_threshold,
                                                                          s.perf_report, s.perf_plot))

    def baseline(self) -> Optional[Baseline]:
        """The baseline, read once per process; a file that is not a results CSV is a usage error."""
        if self._baseline is None and self.settings.perf_baseline is not None:
            from pytest_madcache.perf.compare import BaselineError, load_baseline

            try:
                self._baseline = load_baseline(self.settings.perf_baseline)
            except BaselineError as exc:
                raise pytest.UsageError(f"invalid value {str(self.settings.perf_baseline)!r} for --perf-baseline from "
                                        f"{self.settings.source('perf_baseline')}: {exc}") from None
        return self._baseline

    def threshold_for(self, spec: PerfSpec) -> Optional[float]:
        """The mark's perf_threshold, else the session's --perf-fail-threshold."""
        return spec.threshold if spec.threshold is not None else self.settings.perf_fail_threshold

    def report(self) -> Optional[PerfReport]:
        """The session's comparisons, made once (controller or single process), None when nothing asked for them."""
        if self.is_worker or not self.active:
            return None
        if self._report is None:
            from pytest_madcache.perf.compare import build_report

            s = self.settings
            self._report = build_report(self.summary.runs, self.baseline(), threshold=s.perf_fail_threshold,
                                        baseline_source=s.source("perf_baseline"),
                                        threshold_source=s.source("perf_fail_threshold"))
        return self._report

    # -- hooks ------------------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> List[str]:
        s = self.settings
        if not self.active:
            return []
        parts = []
        if s.perf_baseline is not None:
            baseline = self.baseline()
            n = len(baseline.rows) if baseline is not None else 0
            rows = f"{n} row{'' if n == 1 else 's'}" if baseline is not None and baseline.exists else "no such file yet"
            parts.append(f"baseline {s.perf_baseline} ({rows}; {s.source('perf_baseline')})")
        if s.perf_fail_threshold is not None:
            parts.append(f"fail threshold {s.perf_fail_threshold:g}% ({s.source('perf_fail_threshold')})")
        if s.perf_ab:
            most = f", up to {s.perf_ab_max_pairs} when inconclusive" if s.perf_ab_max_pairs > s.perf_ab_pairs else ""
            parts.append(f"A/B side by side, {s.perf_ab_pairs} pairs{most} ({s.source('perf_ab')})" if s.perf_baseline
                         and not s.keep_alive else
                         f"--perf-ab ({s.source('perf_ab')}) does nothing "
                         + ("with --keep-alive (one container is kept to look into)" if s.keep_alive
                            else "without a baseline (--perf-baseline)"))
        return [f"madcache perf: {'; '.join(parts) or 'no baseline'}"]

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """After a test body that passed (pytest's own call ran first and did not raise):
        fail it when one of its model runs regressed beyond the threshold."""
        baseline = self.baseline()
        if baseline is None or not baseline.exists:
            return
        runs = [event for event in _run_events(item) if event.threshold is not None]
        if not runs:
            return
        from pytest_madcache.perf.compare import compare_runs

        failing = [c for c in compare_runs(runs, baseline) if c.fails]
        if failing:
            raise pytest.fail.Exception("\n".join(c.failure() for c in failing), pytrace=False)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        report = self.report()
        if report is None:
            return
        from pytest_madcache.perf.table import write_markdown

        s = self.settings
        if s.perf_report is not None:
            try:
                write_markdown(report, s.perf_report)
                self.written.append(f"performance report written to {s.perf_report}")
            except OSError as exc:
                self._warn(f"cannot write {s.perf_report}: {exc}")
        recorded = self._record(report, exitstatus) if s.perf_record else None
        if s.perf_plot is not None:
            self._plot(report, s.perf_plot, recorded)

    def _record(self, report: PerfReport, exitstatus: int) -> Optional[Tuple[HistoryRun, History]]:
        """Add this session's results to the history (both copies); the run and the history it joined
        (both copies merged: what the plot draws, without a second trip to the remote), or None."""
        from pytest_madcache.perf.history import HistoryError, HistoryFile, record

        s = self.settings
        if exitstatus != 0:
            self.written.append(f"performance history: this session is not recorded (it failed: exit status "
                                f"{exitstatus}; {s.source('perf_record')} asked for it)")
            return None
        run = this_run(report)
        if not run.points:
            self.written.append("performance history: nothing to record (no model run reported a performance)")
            return None
        remote, name = self._history_remote()
        try:
            outcome = record(HistoryFile(s.history_path), remote, name, run, s.perf_history_size)
        except (HistoryError, OSError) as exc:
            self._warn(f"the performance history is not recorded: {exc}")
            return None
        for problem in outcome.problems:
            self._warn(problem)
        size = s.history_path.stat().st_size
        where = f"{s.history_path} ({size} B)" + (f" and {name} ({outcome.remote_bytes} B)" if outcome.remote_bytes
                                                   else "")
        self.written.append(f"performance history: this run recorded as {run.id}; {len(outcome.history.runs)} of "
                            f"at most {s.perf_history_size} runs kept in {where}")
        return run, outcome.history

    def _history_remote(self) -> Tuple[Optional[Documents], str]:
        """The remote's copy of the history, when a remote is set (None with a warning when it cannot be opened)."""
        s = self.settings
        if not s.remote:
            return None, ""
        from pytest_madcache.remote import open_remote
        from pytest_madcache.remote.documents import documents_of

        try:
            return documents_of(open_remote(s.remote, settings=s)), f"remote {s.remote}"
        except (OSError, ValueError) as exc:
            self._warn(f"the performance history is kept locally only: remote {s.remote}: {exc}")
            return None, ""

    def _plot(self, report: PerfReport, path: Path, recorded: Optional[Tuple[HistoryRun, History]]) -> None:
        from pytest_madcache.perf.history import History
        from pytest_madcache.perf.plot import PlotUnavailable, write_plot

        s = self.settings
        current, history = recorded if recorded is not None else (this_run(report), self._gather())
        past = History(tuple(r for r in history.runs if r.id != current.id))
        try:
            write_plot(report, path, past, current)
            self.written.append(f"performance plot written to {s.perf_plot}"
                                + (f" (with {len(past.runs)} earlier runs of the history)" if past.runs else ""))
        except PlotUnavailable as exc:
            self._warn(f"no performance plot ({s.source('perf_plot')} asked for {s.perf_plot}): {exc}")
        except (OSError, ValueError) as exc:
            self._warn(f"cannot write {s.perf_plot}: {exc}")

    def _gather(self) -> History:
        """The history as both copies have it, merged (a copy that cannot be read is warned of)."""
        from pytest_madcache.perf.history import HistoryFile, gather

        s = self.settings
        remote, name = self._history_remote()
        outcome = gather(HistoryFile(s.history_path), remote, name, s.perf_history_size)
        for problem in outcome.problems:
            self._warn(problem)
        return outcome.history

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        report = self.report()
        if report is None:
            return
        from pytest_madcache.perf.table import terminal_lines

        terminalreporter.section("madcache performance")
        for line in terminal_lines(report):
            markup = {"bad": {"red": True, "bold": True}, "good": {"green": True}}.get(line.tone, {})
            terminalreporter.write_line(line.text, **markup)
        for text in self.written + self.problems:
            terminalreporter.write_line(text)

    def _warn(self, text: str) -> None:
        self.problems.append(f"warning: {text}")
        warnings.warn(self.warning(f"madcache: {text}"), stacklevel=2)


def this_run(report: PerfReport) -> HistoryRun:
    """The session's results as a history run, with the commit and branch CI names (GitHub, GitLab)."""
    from pytest_madcache.perf.history import new_run_id, run_from_report

    env = os.environ
    now = time.time()
    return run_from_report(report, new_run_id(now), now, commit=env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA", ""),
                           ref=env.get("GITHUB_REF_NAME") or env.get("CI_COMMIT_REF_NAME", ""))


def _run_events(item: pytest.Item) -> List[RunEvent]:
    """The model runs of this test so far, from the events attached to its report."""
    out = []
    for name, value in item.user_properties:
        if name == PROPERTY and isinstance(value, dict) and value.get("kind") == "run":
            _, event = from_wire(value)
            if isinstance(event, RunEvent):
                out.append(event)
    return out
