"""The per-run table: run label, the config values that differ, the chosen metrics; text, Markdown, CSV, a plot."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from genlab.compare.runs import RUN_COLUMN, Run, differing_keys, finite, metric_names, run_labels, select_metrics


def sort_rows(rows: list[list[Any]], col: int, descending: bool, number: Callable[[Any], Any] = lambda v: v) -> None:
    """Sort ``rows`` in place by ``number(cell)`` of column ``col``; missing or NaN values last either way."""

    def key(row: list[Any]) -> tuple[bool, float]:
        value = number(row[col])
        missing = not finite(value)
        return (missing, 0.0 if missing else (-value if descending else value))

    rows.sort(key=key)


def build_table(runs: Sequence[Run], metrics: Sequence[str] | None = None, sort: str | None = None,
                descending: bool = False) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): run label, differing config values, then the metrics matching the globs ``metrics``
    (default: the headline metrics, see :func:`select_metrics`); sorted by the metric ``sort`` if given."""
    chosen = select_metrics(runs, metrics)
    if sort and sort not in metric_names(runs):
        raise KeyError(f"metric {sort!r} is in no run's metrics.json; available: {metric_names(runs)}")
    if sort and sort not in chosen:
        chosen.append(sort)
    config_keys = differing_keys(runs)
    header = [RUN_COLUMN, *config_keys, *chosen]
    rows = [
        [label, *(run.config.get(k) for k in config_keys), *(run.metrics.get(m) for m in chosen)]
        for label, run in zip(run_labels(runs), runs)
    ]
    if sort:
        sort_rows(rows, header.index(sort), descending)
    return header, rows


def format_value(value: Any) -> str:
    """A cell: 6 significant digits for floats, JSON for lists and dicts, ``-`` for missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def format_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table."""
    cells = [list(header), *([format_value(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned)."""

    def line(values: Iterable[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(header))]
    out = [line(header), "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += [line(format_value(v) for v in row) for row in rows]
    return "\n".join(out) + "\n"


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``<!-- NAME -->`` and ``<!-- /NAME -->`` lines of the Markdown file ``path`` (the
    file and the markers are added when missing); the rest of the file stays as written."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text() if path.is_file() else ""
    block = f"{start}\n{text.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pattern.sub(lambda _: block, old, count=1) if pattern.search(old) else f"{old.rstrip()}\n\n{block}\n"
    path.write_text(new.lstrip("\n"))


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """CSV with full-precision numbers (empty cell for missing)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for v in row])


def plot_metric(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]], metric: str,
                config_keys: Sequence[str]) -> str:
    """PNG of ``metric`` across runs: a line over the varied value when the runs differ in exactly one numeric
    config key (a sweep over lr, say), else one bar per run. Returns the kind drawn ("line" or "bar")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = header.index(metric)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(rows) + 2), 4))
    x_col = header.index(config_keys[0]) if len(config_keys) == 1 else None
    if x_col is not None and all(isinstance(r[x_col], (int, float)) and not isinstance(r[x_col], bool) for r in rows):
        points = sorted((r[x_col], r[col]) for r in rows if r[col] is not None)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_xlabel(header[x_col])
        kind = "line"
    else:
        ax.bar(range(len(rows)), [math.nan if r[col] is None else r[col] for r in rows])
        ax.set_xticks(range(len(rows)), [str(r[0]) for r in rows], rotation=45, ha="right", fontsize=8)
        kind = "bar"
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} across {len(rows)} runs")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return kind
