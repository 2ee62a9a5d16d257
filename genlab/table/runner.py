"""Running a table: its (row, budget, seed) runs as ordinary genlab runs in fixed folders, and their records.

A run lives in ``<out>/<table>/<budget>/<row>/seed<N>``. All the runs still to do go to Hydra as one multirun
(``hydra/sweeper=jobs``, any launcher: joblib for ``--jobs``, slurm, ...). A run whose folder holds a
``last.ckpt`` resumes it (``ckpt_path=last``); a run of a budget that ``continues`` a shorter one starts from a
copy of that recorded run's folder, so it ends where a run of the longer budget from scratch ends. Each finished
run is appended to the table's record file (JSON lines): row, budget, seed, command, final metrics, provenance,
curves.
"""

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

DONE, RUNNING, FINISHED, RESUMABLE, CONTINUES, MISSING, TAKEN = (
    "done", "running", "finished, not recorded", "resumable", "missing, continues", "missing", "folder taken by")
OWNER = "table_budget.txt"  # which budget's run a folder holds


@dataclass
class Job:
    row: str
    budget: str
    seed: int
    folder: Path
    state: str
    start: dict[str, Any] | None = None  # the record this run continues


def read_records(table: Table) -> list[dict[str, Any]]:
    path = table.records
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def folder(table: Table, out: Path, row: str, budget: str, seed: int) -> Path:
    """A run's folder; a budget that continues another trains on in that budget's folder."""
    while table.budgets[budget].continues:
        budget = table.budgets[budget].continues
    return out / table.name / budget / slug(row) / f"seed{seed}"


def plan(table: Table, budget: str, rows: Sequence[str], seeds: Sequence[int], out: Path) -> list[Job]:
    """Every chosen run and its state: done (recorded), running, finished, resumable, continues, missing, taken."""
    records = {(r["row"], r["budget"], r["seed"]): r for r in read_records(table)}
    earlier = table.budgets[budget].continues
    jobs = []
    for row in rows:
        for seed in seeds:
            where = folder(table, out, row, budget, seed)
            owner = (where / OWNER).read_text().strip() if (where / OWNER).is_file() else None
            shorter = records.get((row, earlier, seed))
            ckpt = (where / "checkpoints" / "last.ckpt").is_file()
            if (row, budget, seed) in records:
                state = DONE
            elif _alive(where.with_suffix(".running")):
                state = RUNNING
            elif owner == budget:
                state = FINISHED if (where / "metrics.json").is_file() else RESUMABLE if ckpt else MISSING
            elif owner is None:
                state = MISSING
            else:
                state = CONTINUES if owner == earlier and shorter and ckpt else f"{TAKEN} {owner}"
            start = shorter if state in (CONTINUES, RESUMABLE) and shorter and shorter["folder"] == str(where) else None
            jobs.append(Job(row, budget, seed, where, state, start))
    return jobs


def _alive(marker: Path) -> bool:
    """Whether the runner that wrote ``marker`` (its host and pid) still runs; another host's counts as running."""
    try:
        host, pid = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def record(table: Table, job: Job, allow_dirty: bool, extra: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Append the finished run in ``job.folder`` to the table's records; a run made from uncommitted code only
    with ``allow_dirty`` (the row then says so)."""
    metrics = json.loads((job.folder / "metrics.json").read_text())
    prov = {**metrics.get("provenance", {}), "cpu_matmul": metrics.get("cpu_matmul")}
    if prov.get("dirty") and not allow_dirty:
        print(f"genlab.table: not recorded: {job.row} {job.budget} seed {job.seed} ran from uncommitted changes to "
              f"commit {prov.get('commit')}; commit them and rerun, or pass --allow-dirty ({job.folder})")
        return None
    # The CSV logs the index of the step and epoch a validation ran at: +1 counts those done.
    logged = logged_curves(job.folder, table.x.name)
    curve = {m: [[x + 1, float(f"{v:.6g}")] for x, v in found[1]] for m in table.curves if (found := pick(logged, m))}
    rec = {"row": job.row, "budget": job.budget, "seed": job.seed, "command": table.command(
        job.row, job.budget, job.seed, extra), "folder": str(job.folder), "epochs": int(metrics.get("epoch", -1)) + 1,
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("val/", "test/")) and isinstance(v, float)},
        "provenance": prov, "curve": curve}
    if job.start:
        rec["continued_from"] = {"budget": job.start["budget"], "epochs": job.start["epochs"],
                                 "commit": job.start["provenance"].get("commit"),
                                 **{k: _total(job.start, k) for k in ("wall_s", "cpu_s")}}
    table.records.parent.mkdir(parents=True, exist_ok=True)
    with table.records.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def _total(rec: dict[str, Any], what: str) -> float:
    """Wall or CPU seconds of a recorded run, with those of the runs it continued."""
    return (rec["provenance"].get(what) or 0.0) + (rec.get("continued_from") or {}).get(what, 0.0)


def run(table: Table, jobs: list[Job], n_jobs: int, allow_dirty: bool, dry_run: bool, hydra: Sequence[str],
        extra: tuple[str, ...] = ()) -> int:
    """Record the finished runs, run the others as one Hydra multirun, record them; the number not recorded."""
    commit, dirty = git_commit()
    if dirty and not allow_dirty and not dry_run:
        raise TableError(f"the checkout has uncommitted changes to commit {commit} (git diff HEAD): a table row "
                         "must be reproducible from a commit; commit them, or pass --allow-dirty (rows then say so)")
    todo = [j for j in jobs if j.state in (MISSING, CONTINUES, RESUMABLE, FINISHED)]
    for job in [j for j in jobs if j.state == RUNNING or j.state.startswith(TAKEN)]:
        print(f"genlab.table: skipped {job.row} {job.budget} seed {job.seed}: {job.state} ({job.folder})")
    overrides = []
    for job in [j for j in todo if j.state != FINISHED]:
        resume = job.state != MISSING
        overrides.append([*table.overrides(job.row, job.budget), *extra, f"seed={job.seed}",
                          *(["ckpt_path=last"] if resume else []),
                          f"hydra.sweep.subdir={job.folder.relative_to(job.folder.parents[2])}"])
        note = f"  # {job.state}" * resume
        print(f"{table.command(job.row, job.budget, job.seed, extra)}{' ckpt_path=last' * resume} "
              f"hydra.run.dir={job.folder}{note}")
    if dry_run:
        return 0
    if overrides:
        _launch(table, [j for j in todo if j.state != FINISHED], overrides, n_jobs, hydra)
    recorded = [record(table, j, allow_dirty, extra) for j in todo if (j.folder / "metrics.json").is_file()]
    missed = len(todo) - sum(r is not None for r in recorded)
    print(f"genlab.table: {len(todo) - missed} of {len(todo)} runs recorded in {table.records}")
    return missed


def _launch(table: Table, jobs: list[Job], overrides: list[list[str]], n_jobs: int, hydra: Sequence[str]) -> None:
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
    jobs_file.write_text(json.dumps(overrides, indent=1))
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"] if n_jobs > 1 else []
    env = {"WANDB_MODE": "offline", **os.environ}
    try:
        subprocess.run([sys.executable, "-m", "genlab", "-m", "hydra/sweeper=jobs", f"hydra.sweeper.jobs_file="
                        f"{jobs_file}", f"hydra.sweep.dir={sweep_dir}", "trainer.enable_progress_bar=false",
                        *launcher, *hydra], env=env, check=False)
    finally:
        jobs_file.unlink(missing_ok=True)
        for job in jobs:
            job.folder.with_suffix(".running").unlink(missing_ok=True)
