"""Learning curves from the runs' own logs: METRIC against step, per run or per group (mean with a ±std band).

Read with the loggers' own formats: the CSV logger's ``metrics.csv`` (one row per logging call, a ``step``
column) and TensorBoard event files through tensorboard's ``EventAccumulator``. A metric logged with both
``on_step`` and ``on_epoch`` is found as ``METRIC_step`` when ``METRIC`` itself is not in the log.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.compare.runs import Run, run_labels

Points = list[tuple[int, float]]


def _csv_curves(folder: Path, x: str = "step") -> dict[str, Points]:
    """Every metric column of the CSV logger's metrics.csv files below ``folder``: name -> [(x, value)], ``x`` the
    ``step`` or ``epoch`` column of the row."""
    curves: dict[str, dict[int, float]] = {}
    for path in sorted(folder.rglob("metrics.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get(x):
                    continue
                step = int(float(row[x]))
                for name, text in row.items():
                    if name not in ("step", "epoch") and text not in (None, ""):
                        curves.setdefault(name, {})[step] = float(text)
    return {name: sorted(points.items()) for name, points in curves.items()}


def _tensorboard_curves(folder: Path) -> dict[str, Points]:
    """Every scalar tag of the TensorBoard event files below ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    curves: dict[str, dict[int, float]] = {}
    for events_dir in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events_dir), size_guidance={SCALARS: 0})  # 0: keep every point
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                curves.setdefault(tag, {})[event.step] = event.value
    return {name: sorted(points.items()) for name, points in curves.items()}


def logged_curves(folder: Path, x: str = "step") -> dict[str, Points]:
    """All curves a run logged, CSV first, then TensorBoard for names the CSV lacks (which has steps, no epochs)."""
    curves = _tensorboard_curves(folder) if x == "step" else {}
    curves.update(_csv_curves(folder, x))
    return curves


def pick(curves: dict[str, Points], metric: str) -> tuple[str, Points] | None:
    """(name found, points) for ``metric``, ``metric_step`` or ``metric_epoch``, in that order; None if absent."""
    for name in (metric, f"{metric}_step", f"{metric}_epoch"):
        if curves.get(name):
            return name, curves[name]
    return None


def late_change(points: Points, share: float = 0.2) -> float | None:
    """Mean value over the last ``share`` of the steps minus the mean over the ``share`` before it: within noise of
    0 once a curve has plateaued; None when either window holds no point."""
    if not points:
        return None
    end = points[-1][0]
    last = [v for x, v in points if x > end * (1 - share)]
    before = [v for x, v in points if end * (1 - 2 * share) < x <= end * (1 - share)]
    return sum(last) / len(last) - sum(before) / len(before) if last and before else None


@dataclass
class Curve:
    """One line of the plot: its label, steps, mean values, std band (zeros for one run) and runs averaged."""

    label: str
    steps: list[int]
    mean: list[float]
    std: list[float]
    n_runs: int


def mean_curve(label: str, curves: Sequence[Points]) -> Curve:
    """Mean and sample std (ddof=1) at each step over the curves that logged that step."""
    by_step: dict[int, list[float]] = {}
    for points in curves:
        for step, value in points:
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    means, stds = [], []
    for step in steps:
        xs = by_step[step]
        m = math.fsum(xs) / len(xs)
        means.append(m)
        stds.append(math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)
    return Curve(label, steps, means, stds, len(curves))


def collect_curves(runs: Sequence[Run], metric: str, groups: dict[str, list[Run]] | None = None) -> tuple[str, list[Curve]]:
    """(name found in the logs, curves): one per run, or one per group of ``groups`` (label -> runs).

    A KeyError names the metrics the logs do hold when no run logged ``metric``.
    """
    logs = {run.path: logged_curves(run.path) for run in runs}
    found = {path: pick(curves, metric) for path, curves in logs.items()}
    names = {f[0] for f in found.values() if f is not None}
    if not names:
        available = sorted({name for curves in logs.values() for name in curves})
        raise KeyError(f"metric {metric!r} is in no run's CSV or TensorBoard log; logged: {available or 'nothing'} "
                       "(curves need logger=csv or logger=tensorboard)")
    if groups is None:
        labels = dict(zip((r.path for r in runs), run_labels(runs)))
        groups = {labels[r.path]: [r] for r in runs}
    curves = []
    for label, members in groups.items():
        points = [found[r.path][1] for r in members if found[r.path] is not None]
        if points:
            curves.append(mean_curve(label, points))
    return " / ".join(sorted(names)), curves


LEGEND_INSIDE = 12  # curves a panel's own legend holds without covering them
LINE_STYLES = ("-", "--", ":", "-.")


def plot_curves(path: Path, name: str, curves: Sequence[Curve]) -> None:
    """PNG of the curves against step; a group's line is the mean with a shaded ±1 std band."""
    plot_panels(path, [(name, curves)])


def plot_panels(path: Path, panels: Sequence[tuple[str, Sequence[Curve]]], x_label: str = "step",
                title: str | None = None) -> None:
    """PNG of one panel per (metric name, curves) side by side, each drawn as :func:`plot_curves` draws one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    crowded = max((len(curves) for _, curves in panels), default=0) > LEGEND_INSIDE
    for i, (ax, (name, curves)) in enumerate(zip(axes[0], panels)):
        # a crowded legend would hide the curves: drawn once, right of the last panel (the panels share their groups)
        _draw(ax, name, curves, x_label, legend="none" if crowded and i < len(panels) - 1 else
              "outside" if crowded else "inside")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _draw(ax: Any, name: str, curves: Sequence[Curve], x_label: str, legend: str) -> None:
    from matplotlib.ticker import EngFormatter

    for i, curve in enumerate(curves):
        label = curve.label if curve.n_runs == 1 else f"{curve.label} (mean ± std of {curve.n_runs})"
        # the colour cycle has 10 colours: the 11th curve on takes the next line style, so no two curves look alike
        (line,) = ax.plot(curve.steps, curve.mean, label=label, marker="." if len(curve.steps) < 30 else None,
                          linestyle=LINE_STYLES[i // 10 % len(LINE_STYLES)])
        if curve.n_runs > 1:
            low = [m - s for m, s in zip(curve.mean, curve.std)]
            high = [m + s for m, s in zip(curve.mean, curve.std)]
            ax.fill_between(curve.steps, low, high, color=line.get_color(), alpha=0.2)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 400k, not 400000 running into its neighbours
    ax.set_xlabel(x_label)
    ax.set_ylabel(name)
    ax.set_title(f"{name} over {sum(c.n_runs for c in curves)} runs")
    if legend == "inside":
        ax.legend(fontsize=8)
    elif legend == "outside":
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
