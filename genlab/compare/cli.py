"""``python -m genlab.compare``: the command line over runs (table, groups, curves) and Optuna studies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from genlab.compare.curves import collect_curves, plot_curves
from genlab.compare.groups import build_group_table, csv_table, display_rows, group_runs, mixed_keys
from genlab.compare.runs import differing_keys, find_runs
from genlab.compare.table import build_table, format_markdown, format_text, plot_metric, write_csv


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m genlab.compare",
        description="Compare genlab runs (the config values that differ, the headline metrics; groups over seeds; "
                    "learning curves) or report an Optuna study.",
    )
    parser.add_argument("dirs", nargs="*", help="run folders or sweep folders (every metrics.json below counts)")
    parser.add_argument("--metrics", metavar="GLOB,...", help="metric columns matching these globs, e.g. "
                        "'val/*,test/nll' (default: the monitor and every test/* metric)")
    parser.add_argument("--sort", metavar="METRIC", help="sort rows by this metric (ascending; missing last)")
    parser.add_argument("--desc", action="store_true", help="sort descending")
    parser.add_argument("--by", metavar="KEY,...", help="group runs by these config keys (e.g. model,model.beta): "
                        "mean ± std (se: standard error) over each group's runs, with n")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the table as CSV")
    parser.add_argument("--markdown", metavar="FILE", type=Path, help="also write the table as Markdown")
    parser.add_argument("--plot", metavar="METRIC", help="plot this final metric across runs (needs --out)")
    parser.add_argument("--curves", metavar="METRIC", help="plot METRIC against step from the runs' CSV or "
                        "TensorBoard logs, one line per run or per --by group (mean ± std band); needs --out")
    parser.add_argument("--out", metavar="FILE.png", type=Path, help="where --plot or --curves writes its PNG")
    parser.add_argument("--study", metavar="STORAGE", help="report an Optuna study: a URL, a SQLite file or a "
                        "search's sweep folder")
    parser.add_argument("--name", metavar="STUDY", help="the study of --study (default: its only study)")
    parser.add_argument("--top", metavar="K", type=int, default=10, help="best trials shown by --study (10)")
    parser.add_argument("--plots-dir", metavar="DIR", type=Path,
                        help="where --study writes its PNGs (default: the study's folder)")
    args = parser.parse_args(argv)
    if args.study and args.dirs:
        parser.error("give run folders or --study STORAGE, not both")
    if not args.study and not args.dirs:
        parser.error("give run folders (or --study STORAGE)")
    if args.study and (args.by or args.curves or args.plot or args.sort or args.metrics):
        parser.error("--study takes --name, --top, --plots-dir, --csv, --markdown only")
    if args.name and not args.study:
        parser.error("--name is the study of --study; add --study STORAGE")
    if args.plot and args.curves:
        parser.error("give one of --plot and --curves per command (each writes --out)")
    if (args.plot or args.curves) and not args.out:
        parser.error(f"--{'plot' if args.plot else 'curves'} needs --out FILE.png")
    if args.out and not (args.plot or args.curves):
        parser.error("--out is the file of --plot METRIC or --curves METRIC; add one")
    if args.plot and args.by:
        parser.error("--plot draws single runs; with --by use --curves, or drop --by")
    if args.top < 1:
        parser.error(f"--top {args.top}: expected a number >= 1")
    return args


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _write_tables(args: argparse.Namespace, text_header: list[str], text_rows: list[list],
                  csv_header: list[str], csv_rows: list[list]) -> None:
    print(format_text(text_header, text_rows))
    if args.csv:
        write_csv(args.csv, csv_header, csv_rows)
        print(f"genlab.compare: wrote {args.csv}")
    if args.markdown:
        args.markdown.write_text(format_markdown(text_header, text_rows))
        print(f"genlab.compare: wrote {args.markdown}")


def _study(args: argparse.Namespace) -> None:
    from genlab.compare.study import report

    summary, header, rows, written, skipped = report(args.study, args.name, args.top, args.plots_dir)
    print(summary)
    _write_tables(args, header, rows, header, rows)
    for path in written:
        print(f"genlab.compare: wrote {path}")
    for reason in skipped:
        print(f"genlab.compare: no plot of {reason}")


def _runs(args: argparse.Namespace) -> None:
    runs = find_runs(args.dirs)
    if not runs:
        raise FileNotFoundError(f"no metrics.json below {', '.join(args.dirs)}: not genlab run or sweep folders")
    metrics = _split(args.metrics)
    keys = _split(args.by)
    if keys:
        header, rows = build_group_table(runs, keys, metrics, args.sort, args.desc)
        mixed = mixed_keys(group_runs(runs, keys), keys)
        if mixed:
            print(f"genlab.compare: warning: runs of one group differ in {mixed}; add them to --by to split",
                  file=sys.stderr)
        _write_tables(args, header, display_rows(header, rows), *csv_table(header, rows))
    else:
        if args.plot and metrics is not None and args.plot not in metrics:
            metrics.append(args.plot)
        header, rows = build_table(runs, metrics, args.sort, args.desc)
        _write_tables(args, header, rows, header, rows)
    if args.plot:
        kind = plot_metric(args.out, *build_table(runs, [args.plot]), args.plot, differing_keys(runs))
        print(f"genlab.compare: wrote {args.out} ({kind} plot of {args.plot})")
    if args.curves:
        groups = None
        if keys:
            groups = {", ".join(f"{k}={json.loads(v)}" for k, v in zip(keys, value)): members
                      for value, members in group_runs(runs, keys).items()}
        name, curves = collect_curves(runs, args.curves, groups)
        plot_curves(args.out, name, curves)
        print(f"genlab.compare: wrote {args.out} ({len(curves)} curves of {name})")


def main(argv: Sequence[str] | None = None) -> int:
    """The command: print the table, write the requested files; exit status 2 with a message on bad input."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.study:
            _study(args)
        else:
            _runs(args)
    except (FileNotFoundError, KeyError, json.JSONDecodeError, yaml.YAMLError) as err:
        message = err.args[0] if isinstance(err, KeyError) else err
        print(f"genlab.compare: error: {message}", file=sys.stderr)
        return 2
    return 0
