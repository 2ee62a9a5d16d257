"""Run folders: every run gets its own (time stamp + a short random id), and no run writes into another's.

``hydra.run.dir`` and ``hydra.sweep.dir`` end in ``${run_name:}``: the start time and six random hex digits, drawn
once per launch (the resolver is cached, so a run's folder and a sweep's jobs agree on it). Two runs started in
the same second therefore get two folders. A folder that already holds a run's results is refused unless the new
run resumes that run (``ckpt_path=last``, or a checkpoint inside the folder).

Under ``srun`` with several tasks (one DDP rank each) every task is its own Hydra app, so the name comes from
what all tasks share instead: ``slurm-<job id>.<step id>``. Only task 0 then writes ``.hydra/``, and task k logs to
``<job name>_rank<k>.log`` in the same folder (as Lightning does for the processes it starts).
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from genlab.checks import ConfigError

RUN_ID_HEX_DIGITS = 6  # 16.7 M ids: two runs started in the same second collide with odds of 1 in 16.7 M


def new_run_id() -> str:
    """A short random id from the OS entropy pool (never from the seeded RNGs, which every run of a seed shares)."""
    return secrets.token_hex(RUN_ID_HEX_DIGITS // 2)


def slurm_step_name() -> str | None:
    """``slurm-<job id>.<step id>`` (an array task: ``slurm-<array job>_<task>.<step>``) when this process is one
    of several tasks of one srun step; None otherwise (one task, no srun, or SLURM's interactive job names)."""
    env = os.environ
    if "SLURM_JOB_ID" not in env or "SLURM_STEP_ID" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    if int(env.get("SLURM_NTASKS", "1")) < 2:
        return None
    job = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return f"slurm-{job}.{env['SLURM_STEP_ID']}"


def srun_task() -> int:
    """This process's task number within a multi-task srun step (0 outside one)."""
    return int(os.environ.get("SLURM_PROCID", "0")) if slurm_step_name() else 0


def new_run_name() -> str:
    """``<YYYY-mm-dd_HH-MM-SS>_<run id>``; under a multi-task srun step :func:`slurm_step_name`, which every task
    derives alike (their clocks and random ids would differ)."""
    return slurm_step_name() or f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{new_run_id()}"


def register_run_id_resolver() -> None:
    """Register ``${run_name:}`` and ``${run_id:}`` (cached: one value per composed config, copied to a sweep's job
    configs by Hydra)."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", new_run_id, use_cache=True)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", new_run_name, use_cache=True)


def srun_rank_overrides(job_name: str, task: int) -> dict[str, Any]:
    """The Hydra settings of srun task ``task`` > 0: its own job log, and no second copy of ``.hydra/``."""
    return {"hydra.job.name": f"{job_name}_rank{task}", "hydra.output_subdir": None}


def earlier_results(folder: Path) -> list[str]:
    """The results of an earlier run in ``folder``: metrics.json, checkpoints, pictures (paths relative to it)."""
    found = ["metrics.json"] if (folder / "metrics.json").is_file() else []
    for pattern in ("checkpoints/*.ckpt", "images/*.png"):
        found += sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))
    return found


def resumes(folder: Path, ckpt_path: str | None) -> bool:
    """Whether ``ckpt_path`` continues the run in ``folder``: ``last``, or a checkpoint file inside it."""
    if ckpt_path is None:
        return False
    return ckpt_path == "last" or Path(ckpt_path).resolve().is_relative_to(folder.resolve())


def check_run_folder(folder: Path, ckpt_path: str | None, key: str = "hydra.run.dir") -> None:
    """Refuse ``folder`` when it holds another run's results and this run does not resume that run."""
    found = earlier_results(folder)
    if found and not resumes(folder, ckpt_path):
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(
            f"{key}: the run folder {folder} already holds another run ({shown}); genlab does not write over it. "
            f"Continue that run with ckpt_path=last (and the same {key}), or leave {key} out (or pick a new "
            f"folder) to start a new run."
        )


class RunFolderGuard(Callback):
    """Hydra callback: a single run checks its folder before Hydra writes its ``.hydra/`` config there.

    Sweep jobs are checked by ``genlab.train`` (Hydra names a job's folder only when the job starts).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = srun_task()
        if task:
            with read_write(config.hydra), open_dict(config.hydra):
                for key, value in srun_rank_overrides(str(config.hydra.job.name), task).items():
                    OmegaConf.update(config, key, value)
        try:
            check_run_folder(Path(str(config.hydra.run.dir)), config.get("ckpt_path"))
        except ConfigError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"genlab: error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Each job's config is composed again from these Hydra overrides (plus the job's own).
        task = srun_task()
        if task:
            with read_write(config.hydra.overrides):
                for key, value in srun_rank_overrides(str(config.hydra.job.name), task).items():
                    config.hydra.overrides.hydra.append(f"{key}={'null' if value is None else value}")
