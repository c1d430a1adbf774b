"""The performance plot: per model, this run's bars beside the baseline's, and the history's runs.

Needs matplotlib (the `plot` extra) and draws without pyplot, so a suite's own plotting state is
left alone.  Nothing here compares, reads a file, or knows about pytest.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pytest_madcache.perf.compare import HIGHER, REGRESSED, Comparison, PerfReport
from pytest_madcache.perf.history import History, HistoryRun, Point, points_of
from pytest_madcache.perf.table import change_text, param_columns
from pytest_madcache.util.fsutil import replacing_bytes

__all__ = ["write_plot", "PlotUnavailable"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _axis(rows: Sequence[Comparison]) -> Tuple[str, List[str]]:
    """The x axis of a model's plot: the one parameter that varies (batch size...), else every label."""
    columns = param_columns(rows)
    varying = [n for n in columns if len({str(c.params[n]) for c in rows}) > 1]
    if len(varying) == 1 or (not varying and len(columns) == 1):
        name = (varying or columns)[0]
        labels = [str(c.params[name]) for c in rows]
    else:
        name, labels = "parameters", [c.label for c in rows]
    seen: Dict[str, int] = {}
    unique = []
    for label in labels:  # two runs with the same parameters get a bar each
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return name, unique


NOW, BASE, BAD, INK = "#2e86c1", "#b3b6b7", "#c0392b", "#34495e"


def _spread(c: Comparison) -> Tuple[float, float]:
    """How far the lowest and highest sample lie below and above the median (0 where unknown)."""
    if c.performance is None or c.low is None or c.high is None:
        return 0.0, 0.0
    return c.performance - c.low, c.high - c.performance


def write_plot(report: PerfReport, path: Path, history: Optional[History] = None,
               current: Optional[HistoryRun] = None) -> None:
    """Performance against the swept parameter, one row per model: the bars (the baseline beside each,
    repeats as min-max error bars, regressions in red) and, when the history has earlier runs, a
    panel of them with this run marked.  PNG or SVG by the file's suffix."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed (pip install 'pytest-madcache[plot]')") from None
    models = [(m, [c for c in rows if c.performance is not None]) for m, rows in report.by_model().items()]
    models = [(m, rows) for m, rows in models if rows]
    past = history if history is not None and history.runs else None
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    ncols = 2 if past is not None or len(models) > 1 else 1
    nrows = max(1, len(models) if past is not None else math.ceil(len(models) / ncols))
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "madcache", "font.size": 9}):
        fig = Figure(figsize=(6.0 * ncols, 3.4 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax in axes.flat:
            ax.set_visible(False)
        if not models:
            axes[0][0].set_visible(True)
            axes[0][0].text(0.5, 0.5, "no model run reported a performance", ha="center", va="center")
            axes[0][0].set_axis_off()
        cells = ([(row[0], row[1]) for row in axes] if past is not None
                 else [(ax, None) for ax in axes.flat])
        for (bars, trend), (model, rows) in zip(cells, models):
            bars.set_visible(True)
            _panel(bars, model, rows)
            if trend is not None and past is not None:
                trend.set_visible(True)
                _history_panel(trend, model, past, current)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        with replacing_bytes(path) as fh:
            fig.savefig(fh, format=fmt, metadata=metadata)


def _panel(ax: Any, model: str, rows: Sequence[Comparison]) -> None:
    """One model's bars: the baseline's beside this run's, the change above each."""
    from matplotlib.patches import Patch

    name, labels = _axis(rows)
    xs = list(range(len(rows)))
    has_baseline = any(c.baseline is not None for c in rows)
    width = 0.38 if has_baseline else 0.6
    now_x = [x + width / 2 for x in xs] if has_baseline else xs
    if has_baseline:
        ax.bar([x - width / 2 for x in xs], [c.baseline or 0.0 for c in rows], width, color=BASE)
    ax.bar(now_x, [c.performance for c in rows], width, color=[BAD if c.status == REGRESSED else NOW for c in rows])
    spread = [(x, c) for x, c in zip(now_x, rows) if len(c.samples) > 1]
    if spread:
        ax.errorbar([x for x, _ in spread], [c.performance for _, c in spread],
                    yerr=[[_spread(c)[0] for _, c in spread], [_spread(c)[1] for _, c in spread]],
                    fmt="none", capsize=3, ecolor=INK, elinewidth=1)
    for x, c in zip(now_x, rows):
        text = change_text(c).replace(" [", "\n[") if c.change is not None else (c.status if has_baseline else "")
        if text:
            ax.annotate(text, (x, c.high if len(c.samples) > 1 else c.performance), textcoords="offset points",
                        xytext=(0, 3), ha="center", va="bottom", fontsize=8,
                        color=BAD if c.status == REGRESSED else INK)
    pad = max(0, 3 - len(xs)) * 0.5  # one or two bars stay bars, not walls
    ax.set_xlim(-0.6 - pad, len(xs) - 0.4 + pad)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_xlabel(name)
    metric = rows[0].metric or ""
    ax.set_ylabel(metric)
    ax.set_title(f"{model} ({metric}, {'higher' if rows[0].direction == HIGHER else 'lower'} is better)")
    ax.margins(y=0.15)
    handles = [Patch(color=NOW, label="this run")]
    if has_baseline:
        handles.insert(0, Patch(color=BASE, label="baseline"))
    if any(c.status == REGRESSED for c in rows):
        handles.append(Patch(color=BAD, label="regressed"))
    if len(handles) > 1:
        ax.legend(handles=handles, loc="best", fontsize=8)


def _run_label(run: HistoryRun) -> str:
    return run.commit[:7] if run.commit else time.strftime("%m-%d %H:%M", time.gmtime(run.time))


def _history_panel(ax: Any, model: str, past: History, current: Optional[HistoryRun]) -> None:
    """The model's last runs, oldest left, one line per parameter set; this run at the right, marked,
    with its interval (the A/B estimate's, else its repeats' spread)."""
    series = points_of(past, model)
    now_x = len(past.runs)
    mine: Dict[str, Point] = {p.label: p for p in (current.points if current is not None else ()) if p.model == model}
    colors = ["#2e86c1", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"]
    labels = list(dict.fromkeys([label for label, _ in series] + list(mine)))
    metric = ""
    for i, label in enumerate(labels):
        color = colors[i % len(colors)]
        points = next((pts for name, pts in series if name == label), [])
        xs, ys = [x for x, _ in points], [p.performance for _, p in points]
        metric = metric or (points[0][1].metric if points else mine[label].metric)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color=color, label=label)
        point = mine.get(label)
        if point is not None:
            if xs:
                ax.plot([xs[-1], now_x], [ys[-1], point.performance], linestyle=":", linewidth=1, color=color)
            low = point.performance - point.low if point.low is not None else 0.0
            high = point.high - point.performance if point.high is not None else 0.0
            ax.errorbar([now_x], [point.performance], yerr=[[max(low, 0.0)], [max(high, 0.0)]], fmt="*",
                        markersize=9, capsize=3, color=color, ecolor=INK)
    runs = list(past.runs) + ([current] if current is not None else [])
    step = max(1, math.ceil(len(runs) / 10))
    ticks = list(range(0, len(runs), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([_run_label(runs[i]) if runs[i] is not current else "this run" for i in ticks],
                       rotation=30, ha="right", fontsize=7)
    if current is not None:
        ax.axvline(now_x, color=BASE, linewidth=0.8, linestyle="--")
    ax.set_ylabel(metric)
    ax.set_title(f"{model}: the last {len(past.runs)} recorded run{'' if len(past.runs) == 1 else 's'}"
                 + (" and this one" if current is not None else ""))
    ax.margins(y=0.15)
    if 1 < len(labels) <= 8:
        ax.legend(loc="best", fontsize=7)
