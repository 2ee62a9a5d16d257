"""``python -m genlab.table list | run TABLE | status TABLE | render TABLE``; TABLE: a name in conf/table/ or a path.

A table's (row, budget, seed) runs are ordinary genlab runs in fixed folders, launched as one Hydra multirun
(``hydra/sweeper=jobs``, any launcher), each recorded as one JSON line. A budget that ``continues`` a shorter one
trains on in its folder from ``last.ckpt``, so it ends where a run of the longer budget from scratch ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.compare.curves import logged_curves, pick
from genlab.provenance import git_commit
from genlab.table import Table, TableError, load_table, table_names, total
from genlab.table.render import render

OUT = Path(os.environ.get("GENLAB_LOG_DIR", "outputs")) / "tables"
DONE, RUNNING, FINISHED, RESUMABLE, CONTINUES, MISSING = (
    "done", "running", "finished, not recorded", "resumable", "missing, continues", "missing")
OWNER = "table_budget.txt"  # in a run folder: which budget's run it holds


@dataclass
class Job:
    row: str
    budget: str
    seed: int
    folder: Path
    state: str  # one of the above, or "folder taken by BUDGET"
    start: dict[str, Any] | None = None  # the record of the shorter run this one continues


def plan(table: Table, budget: str, rows: Sequence[str], seeds: Sequence[int], out: Path) -> list[Job]:
    """Every chosen run and its state: done (recorded), running, finished, resumable, continues, missing, taken."""
    records = {(r["row"], r["budget"], r["seed"]): r for r in table.recorded()}
    root, earlier = budget, table.budgets[budget].continues
    while table.budgets[root].continues:  # the runs of a budget and of those continuing it share their folders
        root = table.budgets[root].continues
    jobs = []
    for row in rows:
        for seed in seeds:
            where = out.resolve() / table.name / root / re.sub(r"[^A-Za-z0-9.]+", "_", row).strip("_") / f"seed{seed}"
            owner = (where / OWNER).read_text() if (where / OWNER).is_file() else None
            shorter, ckpt = records.get((row, earlier, seed)), (where / "checkpoints" / "last.ckpt").is_file()
            if (row, budget, seed) in records:
                state = DONE
            elif owner == budget and (where / "metrics.json").is_file():
                state = FINISHED  # a multirun records its runs when the last one ends
            elif alive(where.with_suffix(".running")):
                state = RUNNING
            elif owner == budget:
                state = RESUMABLE if ckpt else MISSING
            else:
                state = MISSING if owner is None else CONTINUES if owner == earlier and shorter and ckpt else \
                    f"folder taken by {owner}"
            continued = shorter if shorter and shorter["folder"] == str(where) and state != MISSING else None
            jobs.append(Job(row, budget, seed, where, state, continued))
    return jobs


def alive(marker: Path) -> bool:
    """Whether the runner that wrote ``marker`` (host, pid) still runs; one on another host counts as running."""
    try:
        host, pid = json.loads(marker.read_text())
        return host != socket.gethostname() or os.kill(pid, 0) is None
    except (OSError, ValueError):  # no marker, or no such process
        return False


def record(table: Table, job: Job, allow_dirty: bool, extra: Sequence[str] = ()) -> dict[str, Any] | None:
    """Append the finished run in ``job.folder`` to the records; from uncommitted code only with ``allow_dirty``."""
    if earlier := [r for r in table.recorded() if (r["row"], r["budget"], r["seed"]) == (job.row, job.budget, job.seed)]:
        return earlier[0]  # recorded meanwhile by another runner (a finished run shows as such while its own runs)
    metrics = json.loads((job.folder / "metrics.json").read_text())
    prov = {**metrics.get("provenance", {}), "cpu_matmul": metrics.get("cpu_matmul")}
    if prov.get("dirty") and not allow_dirty:
        print(f"genlab.table: not recorded: {job.row} {job.budget} seed {job.seed} ran from uncommitted changes to "
              f"commit {prov.get('commit')}; commit them and rerun, or pass --allow-dirty ({job.folder})")
        return None
    logged = logged_curves(job.folder, table.x.name)  # the index of the step or epoch: +1 counts those done
    rec = {"row": job.row, "budget": job.budget, "seed": job.seed,
           "command": "python -m genlab " + shlex.join(table.args(job.row, job.budget, job.seed, extra)),
           "folder": str(job.folder), "epochs": int(metrics.get("epoch", -1)) + 1,
           "metrics": {k: v for k, v in metrics.items() if k.startswith(("val/", "test/")) and isinstance(v, float)},
           "provenance": prov,
           "curve": {m: [[x + 1, v] for x, v in found[1]] for m in table.curves if (found := pick(logged, m))}}
    if job.start:
        rec["continued_from"] = {"budget": job.start["budget"], "epochs": job.start["epochs"],
                                 "commit": job.start["provenance"].get("commit"),
                                 **{k: total(job.start, k) for k in ("wall_s", "cpu_s")}}
    table.records.parent.mkdir(parents=True, exist_ok=True)
    with table.records.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def run(table: Table, jobs: list[Job], n_jobs: int, allow_dirty: bool, dry_run: bool,
        overrides: Sequence[str] = ()) -> int:
    """Record the finished runs, run the others as one Hydra multirun and record them; how many were not."""
    commit, dirty = git_commit()
    if dirty and not allow_dirty and not dry_run:
        raise TableError(f"the checkout has uncommitted changes to commit {commit} (git diff HEAD): a table row "
                         "must be reproducible from a commit; commit them, or pass --allow-dirty (rows then say so)")
    hydra = [o for o in overrides if o.startswith("hydra")]  # hydra.*, hydra/launcher=...: the multirun's
    extra = [o for o in overrides if o not in hydra]
    for job in (j for j in jobs if j.state == RUNNING or j.state.startswith("folder")):
        print(f"genlab.table: skipped {job.row} {job.budget} seed {job.seed}: {job.state} ({job.folder})")
    todo = [j for j in jobs if j.state in (MISSING, CONTINUES, RESUMABLE, FINISHED)]
    trains = [j for j in todo if j.state != FINISHED]
    args = [[*table.args(j.row, j.budget, j.seed, extra), *["ckpt_path=last"] * (j.state != MISSING)] for j in trains]
    for job, a in zip(trains, args):
        note = "" if job.state == MISSING else f"  # {job.state}"
        print("python -m genlab", shlex.join(a), f"hydra.run.dir={job.folder}{note}")
    if dry_run:
        return 0
    if trains:
        sweep_dir = trains[0].folder.parents[2]
        jobs_file = sweep_dir / f"jobs_{os.getpid()}.json"
        for job in trains:
            if job.state == CONTINUES:
                (job.folder / "metrics.json").unlink()  # the shorter run's, recorded; this run writes its own
            elif job.state == MISSING and job.folder.exists():
                shutil.rmtree(job.folder)  # died before its first checkpoint: nothing to resume
            job.folder.mkdir(parents=True, exist_ok=True)
            (job.folder / OWNER).write_text(job.budget)
            job.folder.with_suffix(".running").write_text(json.dumps([socket.gethostname(), os.getpid()]))
        jobs_file.write_text(json.dumps([[*a, f"hydra.sweep.subdir={j.folder.relative_to(sweep_dir)}"]
                                         for j, a in zip(trains, args)]))
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"] if n_jobs > 1 else []
        try:
            subprocess.run([sys.executable, "-m", "genlab", "-m", f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper=jobs",
                            f"hydra.sweeper.jobs_file={jobs_file}", "trainer.enable_progress_bar=false", *launcher,
                            *hydra], env={"WANDB_MODE": "offline", **os.environ}, check=False)
        finally:
            jobs_file.unlink(missing_ok=True)
            for job in trains:
                job.folder.with_suffix(".running").unlink(missing_ok=True)
    recorded = [record(table, j, allow_dirty, extra) for j in todo if (j.folder / "metrics.json").is_file()]
    done = sum(r is not None for r in recorded)
    print(f"genlab.table: {done} of {len(todo)} runs recorded in {table.records}")
    return len(todo) - done


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; ``run``'s unknown trailing words are overrides for every run (hydra.*: the multirun's)."""
    parser = argparse.ArgumentParser(prog="python -m genlab.table", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["list", "run", "status", "render"])
    parser.add_argument("table", nargs="?", help="a name in conf/table/ or the path of a table file")
    parser.add_argument("--budget", help="a budget of the table (default: its first)")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="row labels (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="default: the budget's")
    parser.add_argument("--out", type=Path, default=OUT, help=f"run folders go below OUT/TABLE (default: {OUT})")
    parser.add_argument("--jobs", type=int, default=1, help="run: runs at once (Hydra's joblib launcher)")
    parser.add_argument("--dry-run", action="store_true", help="run: print the runs' commands, run nothing")
    parser.add_argument("--allow-dirty", action="store_true", help="run: run and record from uncommitted code")
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    if args.overrides and (args.command != "run" or any(o.startswith("-") for o in args.overrides)):
        parser.error(f"unrecognized arguments: {' '.join(args.overrides)}")
    if (args.table is None) != (args.command == "list"):
        parser.error("list takes no TABLE" if args.table else f"{args.command} needs a TABLE: {', '.join(table_names())}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command; exit status 2 with a one-line message on bad input, 1 when runs were left unrecorded."""
    args = parse_args(argv)
    try:
        if args.command == "list":
            for t in map(load_table, table_names()):
                print(f"{t.name}: {t.title}; budgets {', '.join(t.budgets)}; {len(t.recorded())} runs")
            return 0
        table = load_table(args.table)
        if args.command == "render":
            print(f"genlab.table: wrote the {table.name} section of {render(table)}")
            return 0
        budget, rows = args.budget or next(iter(table.budgets)), args.rows or list(table.rows)
        for flag, chosen, known in (("--budget", [budget], table.budgets), ("--rows", rows, table.rows)):
            if unknown := [c for c in chosen if c not in known]:
                raise TableError(f"{flag} {', '.join(map(repr, unknown))}: not in table {table.name}; choices: "
                                 f"{', '.join(map(repr, known))}")
        jobs = plan(table, budget, rows, args.seeds or table.budgets[budget].seeds, args.out)
        if args.command == "status":
            print("\n".join(f"{j.row} | {budget} | seed {j.seed}: {j.state}  {j.folder}" for j in jobs))
            print(f"{sum(j.state == DONE for j in jobs)} of {len(jobs)} runs recorded in {table.records}")
            return 0
        return 1 if run(table, jobs, args.jobs, args.allow_dirty, args.dry_run, args.overrides) else 0
    except TableError as err:
        print(f"genlab.table: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
