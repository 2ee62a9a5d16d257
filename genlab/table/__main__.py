"""The command line: ``python -m genlab.table list | run TABLE | status TABLE | render TABLE``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from genlab.table.render import render
from genlab.table.runner import DONE, plan, read_records, run
from genlab.table.spec import Table, TableError, load_table, table_names


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genlab.table", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the tables of conf/table/")
    out = Path(os.environ.get("GENLAB_LOG_DIR", "outputs")) / "tables"
    for name in ("run", "status"):
        p = sub.add_parser(name, help="run the runs still to do" if name == "run" else "what is done, what is not")
        p.add_argument("table", help="a name in conf/table/ or the path of a table file")
        p.add_argument("--budget", help="a budget of the table (default: its first)")
        p.add_argument("--rows", nargs="+", metavar="ROW", help="row labels (default: all)")
        p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="default: the budget's")
        p.add_argument("--out", type=Path, default=out, help=f"run folders go to OUT/TABLE/... (default: {out})")
    runner = sub.choices["run"]
    runner.add_argument("--jobs", type=int, default=1, help="runs at once (Hydra's joblib launcher)")
    runner.add_argument("--dry-run", action="store_true", help="print the runs' commands, run nothing")
    runner.add_argument("--allow-dirty", action="store_true", help="run and record from uncommitted code")
    runner.add_argument("overrides", nargs="*", help="for every run, e.g. trainer=gpu; hydra.* / hydra/launcher=slurm "
                        "go to Hydra (not recorded in the command)")
    renderer = sub.add_parser("render", help="rewrite the table's section of its results file and its curves")
    renderer.add_argument("table")
    renderer.add_argument("--results", type=Path, help="the Markdown file (default: the table's)")
    return parser.parse_args(argv)


def chosen(table: Table, args: argparse.Namespace) -> tuple[str, list[str], list[int]]:
    """The budget, rows and seeds asked for, each checked against the table."""
    budget = args.budget or next(iter(table.budgets))
    if budget not in table.budgets:
        raise TableError(f"--budget {budget!r}: not a budget of {table.name}; budgets: {', '.join(table.budgets)}")
    rows = args.rows or list(table.rows)
    unknown = [r for r in rows if r not in table.rows]
    if unknown:
        raise TableError(f"--rows {unknown}: not rows of {table.name}; rows: {list(table.rows)}")
    return budget, rows, args.seeds or list(table.budgets[budget].seeds)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; exit status 2 with a one-line message on bad input, 1 when runs were left unrecorded."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "list":
            for name in table_names():
                table = load_table(name)
                print(f"{name}: {table.title} (budgets {', '.join(table.budgets)}; "
                      f"{len(read_records(table))} runs recorded)")
            return 0
        table = load_table(args.table)
        if args.command == "render":
            print(f"genlab.table: wrote the {table.name} section of {render(table, args.results)}")
            return 0
        budget, rows, seeds = chosen(table, args)
        jobs = plan(table, budget, rows, seeds, args.out)
        if args.command == "status":
            for job in jobs:
                print(f"{job.row} | {job.budget} | seed {job.seed}: {job.state}" +
                      (f" ({job.start['budget']}'s run)" if job.start else "") + ("" if job.state == DONE else
                                                                                 f"  {job.folder}"))
            print(f"{sum(j.state == DONE for j in jobs)} of {len(jobs)} runs recorded in {table.records}")
            return 0
        hydra = tuple(o for o in args.overrides if o.startswith("hydra"))
        extra = tuple(o for o in args.overrides if not o.startswith("hydra"))
        return 1 if run(table, jobs, args.jobs, args.allow_dirty, args.dry_run, hydra, extra) else 0
    except TableError as err:
        print(f"genlab.table: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
