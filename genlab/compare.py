"""``python -m genlab.compare DIR...``: a table of the runs below DIRs — the config values that differ, and metrics.

Every folder holding a ``metrics.json`` below a DIR is a run (a run folder, a sweep folder, or a folder of
sweeps). Its config is ``.hydra/config.yaml`` flattened to dotted keys plus the config-group choices of
``.hydra/hydra.yaml`` (``model``, ``data``, ...); keys equal across all runs and path-like keys (output
folders, checkpoint paths) are dropped, so the table shows what was varied. The offline counterpart of the
W&B dashboard: sort by a metric, export CSV or Markdown, plot one metric across runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Keys whose values are locations, not experimental choices: they differ between any two runs.
PATH_LIKE = re.compile(r"(^|\.)(paths|hydra)(\.|$)|(dir|dirpath|_path|save_dir|root)$")
RUN_COLUMN = "run"


@dataclass
class Run:
    """One run folder: its flattened config (group choices included) and its metrics.json."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists stay whole values (shown as text)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _read_yaml(path: Path) -> Any:
    # Hydra writes plain YAML; interpolations (${...}) stay strings, which is what the table shows.
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def read_run(folder: Path) -> Run:
    """The run in ``folder`` (which holds metrics.json); a missing .hydra/ gives an empty config."""
    metrics = json.loads((folder / "metrics.json").read_text())
    config = flatten(_read_yaml(folder / ".hydra" / "config.yaml") or {})
    hydra_cfg = _read_yaml(folder / ".hydra" / "hydra.yaml") or {}
    choices = (hydra_cfg.get("hydra") or {}).get("runtime", {}).get("choices", {}) or {}
    for group, option in choices.items():
        if not group.startswith("hydra/"):
            config[group] = option  # the option chosen for a config group, e.g. model=vae
    return Run(folder, config, metrics)


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every run folder at or below ``dirs`` (each holding metrics.json), in path order without duplicates."""
    folders: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"{d}: no such folder")
        for metrics_file in sorted(d.rglob("metrics.json"), key=lambda p: _natural_key(str(p))):
            folders[metrics_file.parent.resolve()] = None
    return [read_run(folder) for folder in folders]


def _natural_key(text: str) -> list[Any]:
    # Sweep jobs are numbered folders: 2 before 10.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (absent counts as a value), paths excluded."""
    keys = sorted({k for run in runs for k in run.config if not PATH_LIKE.search(k)})
    if len(runs) < 2:
        return []
    return [k for k in keys if len({json.dumps(run.config.get(k), sort_keys=True, default=str) for run in runs}) > 1]


def metric_names(runs: Sequence[Run]) -> list[str]:
    """The numeric metrics of the runs (``stage/name`` keys of metrics.json), sorted."""
    return sorted({k for run in runs for k, v in run.metrics.items() if "/" in k and isinstance(v, (int, float))})


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's folder relative to the runs' common parent (a sweep job shows as e.g. ``multiruns/x/3``)."""
    paths = [run.path for run in runs]
    if len(paths) == 1:
        return [paths[0].name]
    common = Path(*[parts[0] for parts in zip(*(p.parts for p in paths)) if len(set(parts)) == 1])
    return [str(p.relative_to(common)) for p in paths]


def build_table(runs: Sequence[Run], metrics: Sequence[str] | None = None, sort: str | None = None,
                descending: bool = False) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): run label, differing config values, then the chosen metrics; sorted by ``sort`` if given."""
    available = metric_names(runs)
    chosen = list(metrics) if metrics else available
    for name in [*chosen, *([sort] if sort else [])]:
        if name not in available:
            raise KeyError(f"metric {name!r} is in no run's metrics.json; available: {available}")
    config_keys = differing_keys(runs)
    header = [RUN_COLUMN, *config_keys, *chosen]
    rows = [
        [label, *(run.config.get(k) for k in config_keys), *(run.metrics.get(m) for m in chosen)]
        for label, run in zip(run_labels(runs), runs)
    ]
    if sort:
        col = header.index(sort)

        def key(row: list[Any]) -> tuple[bool, float]:
            value = row[col]
            missing = not isinstance(value, (int, float)) or math.isnan(value)
            # Missing values last in either direction.
            return (missing, 0.0 if missing else (-value if descending else value))

        rows.sort(key=key)
    return header, rows


def format_value(value: Any) -> str:
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
    """A GitHub-flavoured Markdown table."""

    def line(values: Iterable[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(header))]
    out = [line(header), "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += [line(format_value(v) for v in row) for row in rows]
    return "\n".join(out) + "\n"


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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m genlab.compare",
        description="Compare genlab runs: the config values that differ between them, and their metrics.",
    )
    parser.add_argument("dirs", nargs="+", help="run folders or sweep folders (every metrics.json below counts)")
    parser.add_argument("--sort", metavar="METRIC", help="sort rows by this metric (ascending; missing last)")
    parser.add_argument("--desc", action="store_true", help="sort descending")
    parser.add_argument("--metrics", metavar="A,B", help="metric columns to show (default: all)")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the table as CSV")
    parser.add_argument("--markdown", metavar="FILE", type=Path, help="also write the table as Markdown")
    parser.add_argument("--plot", metavar="METRIC", help="plot this metric across runs (needs --out)")
    parser.add_argument("--out", metavar="FILE.png", type=Path, help="where --plot writes its PNG")
    args = parser.parse_args(argv)
    if args.plot and not args.out:
        parser.error("--plot needs --out FILE.png")
    if args.out and not args.plot:
        parser.error("--out is the file of --plot METRIC; add --plot")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command: print the table, write the requested files; exit status 2 with a message on bad input."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        runs = find_runs(args.dirs)
        if not runs:
            raise FileNotFoundError(f"no metrics.json below {', '.join(args.dirs)}: not genlab run or sweep folders")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        if args.plot and metrics is not None and args.plot not in metrics:
            metrics.append(args.plot)
        header, rows = build_table(runs, metrics, args.sort, args.desc)
    except (FileNotFoundError, KeyError, json.JSONDecodeError, yaml.YAMLError) as err:
        message = err.args[0] if isinstance(err, KeyError) else err
        print(f"genlab.compare: error: {message}", file=sys.stderr)
        return 2
    print(format_text(header, rows))
    if args.csv:
        write_csv(args.csv, header, rows)
        print(f"genlab.compare: wrote {args.csv}")
    if args.markdown:
        args.markdown.write_text(format_markdown(header, rows))
        print(f"genlab.compare: wrote {args.markdown}")
    if args.plot:
        kind = plot_metric(args.out, header, rows, args.plot, differing_keys(runs))
        print(f"genlab.compare: wrote {args.out} ({kind} plot of {args.plot})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
