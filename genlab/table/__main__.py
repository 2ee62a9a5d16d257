"""``python -m genlab.table list | run TABLE | status TABLE | render TABLE``; TABLE: a name in conf/table/ or a path."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from genlab.table.render import render
from genlab.table.runner import DONE, plan, read_records, run
from genlab.table.spec import TableError, load_table, table_names

OUT = Path(os.environ.get("GENLAB_LOG_DIR", "outputs")) / "tables"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genlab.table", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the tables of conf/table/")
    sub.add_parser("render", help="rewrite the table's section of its results file").add_argument("table")
    for name in ("run", "status"):
        p = sub.add_parser(name, help="run (and record) the runs still to do" if name == "run" else "what is done")
        p.add_argument("table")
        p.add_argument("--budget", help="a budget of the table (default: its first)")
        p.add_argument("--rows", nargs="+", metavar="ROW", help="row labels (default: all)")
        p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="default: the budget's")
        p.add_argument("--out", type=Path, default=OUT, help=f"run folders go below OUT/TABLE (default: {OUT})")
    runner = sub.choices["run"]
    runner.add_argument("--jobs", type=int, default=1, help="runs at once (Hydra's joblib launcher)")
    runner.add_argument("--dry-run", action="store_true", help="print the runs' commands, run nothing")
    runner.add_argument("--allow-dirty", action="store_true", help="run and record from uncommitted code")
    runner.add_argument("overrides", nargs="*", help="for every run, e.g. trainer=gpu (hydra.*, hydra/launcher=slurm: "
                        "for Hydra only)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; exit status 2 with a one-line message on bad input, 1 when runs were left unrecorded."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "list":
            for table in map(load_table, table_names()):
                print(f"{table.name}: {table.title}; budgets {', '.join(table.budgets)}; {len(read_records(table))} runs")
            return 0
        table = load_table(args.table)
        if args.command == "render":
            print(f"genlab.table: wrote the {table.name} section of {render(table)}")
            return 0
        budget = args.budget or next(iter(table.budgets))
        if budget not in table.budgets:
            raise TableError(f"--budget {budget!r}: not a budget of {table.name}; budgets: {', '.join(table.budgets)}")
        if set(args.rows or ()) - set(table.rows):
            raise TableError(f"--rows {sorted(set(args.rows) - set(table.rows))}: not rows of {table.name}; rows: "
                             f"{list(table.rows)}")
        jobs = plan(table, budget, args.rows or list(table.rows), args.seeds or table.budgets[budget].seeds, args.out)
        if args.command == "status":
            print("\n".join(f"{j.row} | {budget} | seed {j.seed}: {j.state}  {j.folder}" for j in jobs))
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
