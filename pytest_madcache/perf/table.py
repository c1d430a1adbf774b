"""The performance table, rendered: terminal lines, Markdown and JSON (the plot is plot.py's).

Input is a perf.PerfReport (comparisons already made); output is text or a
JSON-ready dict.  Per model, one row per parameter set
(batch size, precision...): performance (the median and min-max spread when
the mark asked for repeats), metric, baseline, change and status; regressions
stand out.

Nothing here compares, reads a baseline, or knows about pytest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from pytest_madcache.perf.compare import BETTER, REGRESSED, STATUSES, Comparison, PerfReport
from pytest_madcache.perf.stats import PAIRED
from pytest_madcache.util.fsutil import replacing

__all__ = ["TableLine", "terminal_lines", "markdown", "report_json", "write_markdown", "headline", "undecided",
           "change_text", "param_columns"]


@dataclass(frozen=True)
class TableLine:
    """A line of the terminal table; `tone` is "bad" (a regression), "good" (better) or ""."""

    text: str
    tone: str = ""


def _num(value: Optional[float]) -> str:
    if value is None:
        return ""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def _performance(c: Comparison) -> str:
    if c.performance is None:
        return "-"
    if len(c.samples) > 1:
        return f"{_num(c.performance)} ({_num(c.low)}-{_num(c.high)})"
    return _num(c.performance)


def change_text(c: Comparison) -> str:
    """`-12.0%`, or with an interval `-12.0% [-15.1, -8.8]` (perf/stats.py)."""
    if c.change is None:
        return ""
    if c.low_change is None or c.high_change is None:
        return f"{c.change:+.1f}%"
    return f"{c.change:+.1f}% [{c.low_change:+.1f}, {c.high_change:+.1f}]"


def undecided(c: Comparison) -> str:
    """Why an inconclusive run is not judged, and what would judge it."""
    if c.method != PAIRED:
        more = ("the baseline's repeats are fixed: --perf-ab, which runs the baseline's image beside this one in "
                "pairs, may")
    elif c.more:
        more = (f"at the same spread, about {c.pairs + c.more} pairs in all (--perf-ab-max-pairs, with "
                "--perf-ab-pairs or the mark's perf_repeats) would")
    else:
        more = "the change sits on the threshold: no reasonable number of pairs would"
    return (f"inconclusive: {c.model} [{c.label}]: {c.change:+.1f}% ({c.interval}) straddles the threshold of "
            f"{c.threshold:g}%; {more} decide it")


def param_columns(rows: Sequence[Comparison]) -> List[str]:
    """One column per parameter when every row has the same ones, else one `parameters` column."""
    names = [tuple(c.params) for c in rows]
    if names and all(n == names[0] for n in names) and names[0]:
        return list(names[0])
    return []


def _cells(c: Comparison, columns: Sequence[str]) -> List[str]:
    params = [str(c.params[n]) for n in columns] if columns else [c.label]
    return params + [_performance(c), c.metric or "", _num(c.baseline), change_text(c), c.status]


def _headers(columns: Sequence[str]) -> List[str]:
    return (list(columns) or ["parameters"]) + ["performance", "metric", "baseline", "change", "status"]


def _model_title(model: str, rows: Sequence[Comparison]) -> str:
    directions = {c.direction for c in rows}
    say = ", ".join(f"{d} is better" for d in sorted(directions))
    repeats = {len(c.samples) for c in rows if len(c.samples) > 1}
    spread = f"; median of {'/'.join(str(n) for n in sorted(repeats))} runs (min-max)" if repeats else ""
    return f"{model} ({say}{spread})"


def headline(report: PerfReport) -> str:
    """One line: what was compared with what, and what came of it."""
    if report.baseline is None:
        against = "; no baseline (--perf-baseline)"
    elif not report.baseline_exists:
        against = f"; baseline {report.baseline} ({report.baseline_source}) does not exist yet: every run is new"
    else:
        against = f" against baseline {report.baseline} ({report.baseline_source})"
    threshold = (f"fail threshold {report.threshold:g}% ({report.threshold_source})" if report.threshold is not None
                 else "no fail threshold: regressions fail nothing")
    counts = [f"{report.count(s)} {s}" for s in STATUSES if report.count(s)]
    n = len(report.comparisons)
    return f"{n} run{'' if n == 1 else 's'}{against}; {threshold}" + (f": {', '.join(counts)}" if counts else "")


def _tone(c: Comparison) -> str:
    return "bad" if c.status == REGRESSED else ("good" if c.status == BETTER else "")


def terminal_lines(report: PerfReport) -> List[TableLine]:
    """The table for the terminal summary: a headline, then per model an aligned table."""
    lines = [TableLine(headline(report))]
    for model, rows in report.by_model().items():
        columns = param_columns(rows)
        table = [_headers(columns)] + [_cells(c, columns) for c in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        first = len(columns) or 1  # performance, metric, baseline, change, status follow the parameters
        numeric = {first, first + 2, first + 3}

        def fmt(cells: Sequence[str], widths: List[int] = widths, numeric: Set[int] = numeric) -> str:
            return "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                             for i, cell in enumerate(cells)).rstrip()

        lines.append(TableLine(""))
        lines.append(TableLine(_model_title(model, rows)))
        lines.append(TableLine("  " + fmt(table[0])))
        for c, cells in zip(rows, table[1:]):
            lines.append(TableLine("  " + fmt(cells), _tone(c)))
    for c in report.regressions:
        lines.append(TableLine(f"{c.nodeid}: {c.failure()}", "bad"))
    for c in report.undecided:
        lines.append(TableLine(f"{c.nodeid}: {undecided(c)}"))
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: PerfReport, title: str = "Performance") -> str:
    """The table as Markdown (a job summary, a merge request note, a docs page)."""
    out = [f"### {title}", "", _md_escape(headline(report)), ""]
    for model, rows in report.by_model().items():
        columns = param_columns(rows)
        headers = _headers(columns)
        out.append(f"#### {_md_escape(_model_title(model, rows))}")
        out.append("")
        out.append("| " + " | ".join(headers) + " |")
        align = ["---"] * len(columns or [0]) + ["---:", "---", "---:", "---:", "---"]
        out.append("|" + "|".join(align) + "|")
        for c in rows:
            cells = [_md_escape(x) for x in _cells(c, columns)]
            if c.status == REGRESSED:
                cells[-2], cells[-1] = f"**{cells[-2]}**", f"**{cells[-1]}**"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if report.regressions:
        out.append("Regressions beyond the threshold (these tests failed):")
        out.append("")
        out += [f"- `{c.nodeid}`: {_md_escape(c.failure())}" for c in report.regressions]
        out.append("")
    if report.undecided:
        out.append("Not decided (these tests passed):")
        out.append("")
        out += [f"- `{c.nodeid}`: {_md_escape(undecided(c))}" for c in report.undecided]
        out.append("")
    return "\n".join(out)


def _row_json(c: Comparison) -> Dict[str, Any]:
    return {
        "params": dict(c.params), "nodeid": c.nodeid, "performance": c.performance, "metric": c.metric,
        "samples": list(c.samples), "min": c.low, "max": c.high, "baseline": c.baseline,
        "relative_change": c.change, "direction": c.direction, "threshold": c.threshold, "status": c.status,
        "note": c.note, "change_low": c.low_change, "change_high": c.high_change, "method": c.method,
        "pairs": c.pairs, "more": c.more, "confidence": c.confidence if c.method else None,
    }


def report_json(report: PerfReport) -> Dict[str, Any]:
    """The table for the summary JSON (the CI integrations read `markdown` and `regressions`)."""
    statuses = sorted({c.status for c in report.comparisons})
    return {
        "baseline": str(report.baseline) if report.baseline is not None else None,
        "baseline_exists": report.baseline_exists,
        "baseline_source": report.baseline_source,
        "threshold": report.threshold,
        "counts": {s: report.count(s) for s in statuses},
        "regressions": len(report.regressions),
        "inconclusive": len(report.undecided),
        "models": {m: [_row_json(c) for c in rows] for m, rows in report.by_model().items()},
        "markdown": markdown(report),
    }


def write_markdown(report: PerfReport, path: Path) -> None:
    with replacing(path) as fh:
        fh.write(markdown(report))
