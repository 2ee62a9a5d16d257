"""A table's (row, budget, seed) runs: ordinary genlab runs in fixed folders, launched as one Hydra multirun
(``hydra/sweeper=jobs``, any launcher), each recorded as one JSON line. A budget that ``continues`` a shorter one
trains on in its folder from ``last.ckpt``, so it ends where a run of the longer budget from scratch ends."""

from __future__ import annotations

import json
import os
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
from genlab.table.spec import Table, TableError, slug

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


def read_records(table: Table) -> list[dict[str, Any]]:
    path = table.records
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plan(table: Table, budget: str, rows: Sequence[str], seeds: Sequence[int], out: Path) -> list[Job]:
    """Every chosen run and its state: done (recorded), running, finished, resumable, continues, missing, taken."""
    records = {(r["row"], r["budget"], r["seed"]): r for r in read_records(table)}
    root, earlier, out = budget, table.budgets[budget].continues, out.resolve()
    while table.budgets[root].continues:
        root = table.budgets[root].continues
    jobs = []
    for row in rows:
        for seed in seeds:
            where = out / table.name / root / slug(row) / f"seed{seed}"
            owner = (where / OWNER).read_text() if (where / OWNER).is_file() else None
            shorter, ckpt = records.get((row, earlier, seed)), (where / "checkpoints" / "last.ckpt").is_file()
            if (row, budget, seed) in records:
                state = DONE
            elif _alive(where.with_suffix(".running")):
                state = RUNNING
            elif owner == budget:
                state = FINISHED if (where / "metrics.json").is_file() else RESUMABLE if ckpt else MISSING
            else:
                state = MISSING if owner is None else CONTINUES if owner == earlier and shorter and ckpt else \
                    f"folder taken by {owner}"
            start = shorter if shorter and shorter["folder"] == str(where) and state not in (DONE, MISSING) else None
            jobs.append(Job(row, budget, seed, where, state, start))
    return jobs


def _alive(marker: Path) -> bool:
    """Whether the runner that wrote ``marker`` (host, pid) still runs; one on another host counts as running."""
    try:
        host, pid = json.loads(marker.read_text())
        return host != socket.gethostname() or os.kill(pid, 0) is None
    except (OSError, ValueError):  # no marker, or no such process
        return False


def record(table: Table, job: Job, allow_dirty: bool, extra: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Append the finished run in ``job.folder`` to the table's records; one made from uncommitted code only with
    ``allow_dirty`` (its row then says so)."""
    metrics = json.loads((job.folder / "metrics.json").read_text())
    prov = {**metrics.get("provenance", {}), "cpu_matmul": metrics.get("cpu_matmul")}
    if prov.get("dirty") and not allow_dirty:
        print(f"genlab.table: not recorded: {job.row} {job.budget} seed {job.seed} ran from uncommitted changes to "
              f"commit {prov.get('commit')}; commit them and rerun, or pass --allow-dirty ({job.folder})")
        return None
    logged = logged_curves(job.folder, table.x.name)  # the index of the step or epoch: +1 counts those done
    rec = {"row": job.row, "budget": job.budget, "seed": job.seed, "command": table.command(
        job.row, job.budget, job.seed, extra), "folder": str(job.folder), "epochs": int(metrics.get("epoch", -1)) + 1,
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("val/", "test/")) and isinstance(v, float)},
        "provenance": prov, "curve": {m: [[x + 1, v] for x, v in found[1]] for m in table.curves
                                      if (found := pick(logged, m))}}
    if job.start:
        rec["continued_from"] = {"budget": job.start["budget"], "epochs": job.start["epochs"],
                                 "commit": job.start["provenance"].get("commit"),
                                 **{k: total(job.start, k) for k in ("wall_s", "cpu_s")}}
    table.records.parent.mkdir(parents=True, exist_ok=True)
    with table.records.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def total(rec: dict[str, Any], what: str) -> float:
    """Wall or CPU seconds of a recorded run with those of the run it continued."""
    return (rec["provenance"].get(what) or 0.0) + (rec.get("continued_from") or {}).get(what, 0.0)


def run(table: Table, jobs: list[Job], n_jobs: int, allow_dirty: bool, dry_run: bool, hydra: Sequence[str],
        extra: tuple[str, ...] = ()) -> int:
    """Record the finished runs, run the others as one Hydra multirun and record them; how many were not."""
    commit, dirty = git_commit()
    if dirty and not allow_dirty and not dry_run:
        raise TableError(f"the checkout has uncommitted changes to commit {commit} (git diff HEAD): a table row "
                         "must be reproducible from a commit; commit them, or pass --allow-dirty (rows then say so)")
    todo = [j for j in jobs if j.state in (MISSING, CONTINUES, RESUMABLE, FINISHED)]
    for job in (j for j in jobs if j.state == RUNNING or j.state.startswith("folder")):
        print(f"genlab.table: skipped {job.row} {job.budget} seed {job.seed}: {job.state} ({job.folder})")
    launch = [j for j in todo if j.state != FINISHED]
    for job in launch:
        print(table.command(job.row, job.budget, job.seed, extra) + " ckpt_path=last" * (job.state != MISSING) +
              f" hydra.run.dir={job.folder}" + f"  # {job.state}" * (job.state != MISSING))
    if dry_run:
        return 0
    if launch:
        _launch(table, launch, n_jobs, hydra, extra)
    recorded = [record(table, j, allow_dirty, extra) for j in todo if (j.folder / "metrics.json").is_file()]
    done = sum(r is not None for r in recorded)
    print(f"genlab.table: {done} of {len(todo)} runs recorded in {table.records}")
    return len(todo) - done


def _launch(table: Table, jobs: list[Job], n_jobs: int, hydra: Sequence[str], extra: tuple[str, ...]) -> None:
    sweep_dir = jobs[0].folder.parents[2]
    for job in jobs:
        if job.state == CONTINUES:
            (job.folder / "metrics.json").unlink()  # the shorter run's, recorded; this run writes its own
        elif job.state == MISSING and job.folder.exists():
            shutil.rmtree(job.folder)  # died before its first checkpoint: nothing to resume
        job.folder.mkdir(parents=True, exist_ok=True)
        (job.folder / OWNER).write_text(job.budget)
        job.folder.with_suffix(".running").write_text(json.dumps([socket.gethostname(), os.getpid()]))
    jobs_file = sweep_dir / f"jobs_{os.getpid()}.json"
    jobs_file.write_text(json.dumps([[*table.overrides(j.row, j.budget), *extra, f"seed={j.seed}",
                                      *["ckpt_path=last"] * (j.state != MISSING),
                                      f"hydra.sweep.subdir={j.folder.relative_to(sweep_dir)}"] for j in jobs]))
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"] if n_jobs > 1 else []
    try:
        subprocess.run([sys.executable, "-m", "genlab", "-m", "hydra/sweeper=jobs", f"hydra.sweeper.jobs_file="
                        f"{jobs_file}", f"hydra.sweep.dir={sweep_dir}", "trainer.enable_progress_bar=false",
                        *launcher, *hydra], env={"WANDB_MODE": "offline", **os.environ}, check=False)
    finally:
        jobs_file.unlink(missing_ok=True)
        for job in jobs:
            job.folder.with_suffix(".running").unlink(missing_ok=True)
