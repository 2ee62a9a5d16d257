"""``hydra/sweeper=jobs``: a multirun of a given list of jobs, each with its own overrides (``genlab.table``).

Hydra's basic sweeper runs a cross product of values; a table's jobs differ in which keys they set (rows of
other losses, models, budgets), so its runner writes them to a JSON file, one list of overrides per job, and this
sweeper hands them to whichever launcher is chosen (basic, ``joblib``, ``slurm``) as one batch.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class JobsSweeperConf:
    _target_: str = "hydra_plugins.genlab_jobs_sweeper.JobsSweeper"
    jobs_file: str = "???"  # a JSON list of jobs, each a list of override strings


ConfigStore.instance().store(group="hydra/sweeper", name="jobs", node=JobsSweeperConf, provider="genlab")


class JobsSweeper(Sweeper):
    """Launch the jobs of ``jobs_file`` as one batch; fail after all ran."""

    def __init__(self, jobs_file: str) -> None:
        self.jobs_file = jobs_file

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        jobs = [[*arguments, *job] for job in json.loads(Path(self.jobs_file).read_text())]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal(jobs)  # a job that does not compose fails before any job runs
        returns = self.launcher.launch(jobs, initial_job_idx=0)
        for ret in returns:
            _ = ret.return_value  # re-raises a failed job's error once every job has run
        return returns
