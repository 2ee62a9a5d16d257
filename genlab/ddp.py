"""Runs of several processes (DDP): what genlab adapts or refuses before any process starts training.

- A model without trained parameters (PCA, fitted in closed form) has nothing for DDP to synchronise, and torch's
  DistributedDataParallel refuses to wrap it: such a run is fitted in one process instead (Lightning would start
  the others), or refused when a launcher (srun, torchrun) has already started several.
- A sweep (``-m``, ``hparams_search=...``) whose jobs would each start their own DDP processes with Lightning is
  refused: Lightning starts the other ranks with this process's command line, ``-m`` and the sweep lists
  included, so every rank would run the whole sweep again (an Optuna rank would even sample other values).
  Sweeping through ``hydra/launcher=slurm``, or processes started by srun / torchrun, are fine: there every rank
  walks the same job list.
- Plain ``ddp`` (``find_unused_parameters=False``) is refused for models that leave some parameters without a
  gradient in some steps (the GAN's alternating steps, VaDE's pretraining), which it would crash on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback
from lightning.fabric.plugins.environments import (
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from genlab.checks import ConfigError
from genlab.config import instantiate_checked

log = logging.getLogger("genlab")
FIND_UNUSED = "ddp_find_unused_parameters_true"
# Hydra launchers that run a sweep's jobs on this machine, from this command line.
LOCAL_LAUNCHERS = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher",
                   "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")


def launched_externally() -> bool:
    """Whether a launcher started this process as one rank of several (srun, torchrun, mpirun, LSF, or Lightning's
    own start of the ranks > 0, which sets ``LOCAL_RANK``), as Lightning's cluster environments detect them."""
    if "LOCAL_RANK" in os.environ:
        return True
    return any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment, MPIEnvironment))


def sweep_error(processes: int) -> ConfigError:
    """The refusal of a sweep whose jobs would each start ``processes`` DDP processes through Lightning."""
    return ConfigError(
        f"a sweep (-m or hparams_search) with {processes} DDP processes per job (trainer.devices x trainer.num_nodes) "
        f"is not supported: Lightning starts a job's other processes with this command line, so each would run "
        f"the whole sweep again. Run the jobs one at a time without -m, sweep on SLURM (hydra/launcher=slurm), or "
        f"start the processes yourself (srun, torchrun)"
    )


def processes_per_job(trainer_cfg: Mapping[str, Any]) -> int | None:
    """trainer.devices x trainer.num_nodes when the config states them as counts or lists; None when Lightning
    decides (``auto``, -1)."""
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        count = len(devices)
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        count = int(devices)
    elif isinstance(devices, int) and not isinstance(devices, bool):
        count = devices
    else:
        return None
    return count * nodes if count > 0 and isinstance(nodes, int) else None


class SweepGuard(Callback):
    """Hydra callback: refuse, before its first job, a local sweep whose jobs would start DDP processes (see above)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        processes = processes_per_job(config.get("trainer") or {})
        if launcher not in LOCAL_LAUNCHERS or processes is None or processes < 2 or launched_externally():
            return
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise sweep_error(processes)
        print(f"genlab: error: {sweep_error(processes)}", flush=True, file=sys.stderr)
        raise SystemExit(2)


def finds_unused_parameters(strategy: Any) -> bool:
    """Whether a ``trainer.strategy`` value asks DDP to find unused parameters (by name, or as a strategy node)."""
    if isinstance(strategy, str):
        return strategy.endswith("find_unused_parameters_true")
    if isinstance(strategy, Mapping):
        return bool(strategy.get("find_unused_parameters", False))
    return False


def build_trainer(trainer_cfg: DictConfig, model: L.LightningModule, model_name: str, callbacks: list[Any],
                  loggers: list[Any], sweep: bool) -> L.Trainer:
    """The run's Trainer from ``trainer_cfg``, adapted to the model, or a ConfigError for a run DDP cannot do.

    ``sweep``: this run is a job of a Hydra sweep. See the module docstring for what is adapted and refused.
    """
    trainer = instantiate_checked(trainer_cfg, "trainer", callbacks=list(callbacks), logger=loggers or False)
    if not isinstance(trainer.strategy, DDPStrategy):
        return trainer
    external = trainer.strategy.cluster_environment is not None and \
        trainer.strategy.cluster_environment.creates_processes_externally
    if sweep and trainer.world_size > 1 and not external:
        raise sweep_error(trainer.world_size)
    if not any(p.requires_grad for p in model.parameters()):
        if external and trainer.world_size > 1:
            raise ConfigError(
                f"model={model_name} has no trained parameters (it is fitted in closed form), which DDP cannot wrap: "
                f"start it as one process (srun --ntasks=1, no torchrun), not {trainer.world_size}"
            )
        if rank_zero_only.rank == 0:
            print(f"genlab: model={model_name} has no trained parameters, so DDP has nothing to synchronise: fitted "
                  f"in one process (trainer.strategy=auto, trainer.devices=1)", flush=True)
        return instantiate_checked(trainer_cfg, "trainer", callbacks=list(callbacks), logger=loggers or False,
                                   strategy="auto", devices=1, num_nodes=1)
    reason = getattr(model, "ddp_unused_parameters", None)
    if reason and not finds_unused_parameters(trainer_cfg.get("strategy")):
        raise ConfigError(
            f"trainer.strategy={trainer_cfg.get('strategy')!r} is DDP without find_unused_parameters, which needs a "
            f"gradient for every parameter at every step, but with model={model_name} {reason}: use "
            f"trainer.strategy={FIND_UNUSED} (trainer=ddp's default)"
        )
    return trainer
