"""The experiment: config -> data, model, loggers, callbacks, trainer -> fit -> test -> metrics.json."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from genlab import console, cpu_matmul, provenance
from genlab.accelerator import check_accelerator
from genlab.callbacks.interrupt import Interrupted, resume_command
from genlab.checkpoint_check import check_resumable
from genlab.checkpoints import LoaderEpoch, ResumableRNG, RunClock
from genlab.checks import ConfigError
from genlab.config import instantiate_checked, validate_config
from genlab.data.idx import DataFileError
from genlab.ddp import build_trainer
from genlab.loggers.wandb_run import publish_summary, sync_hints
from genlab.models.base import NonFiniteError
from genlab.run_folder import check_run_folder, register_run_id_resolver

log = logging.getLogger("genlab")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Errors a user can fix from the message alone: shown without a traceback (HYDRA_FULL_ERROR=1 shows it).
USER_ERRORS = (ConfigError, DataFileError, NonFiniteError, FileNotFoundError, Interrupted)
register_run_id_resolver()  # at import, before Hydra composes: the run folders end in ${run_id:}


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``null`` -> None; ``last`` -> this run folder's checkpoints/last.ckpt; a path must exist."""
    if ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path!r}: no checkpoint at {path}. Pass an existing .ckpt file, or "
            f"ckpt_path=last with hydra.run.dir set to the folder of the run to resume."
        )
    return str(path)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Tensors and numbers of a Lightning metrics dict as plain floats."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.item())
        elif isinstance(value, (int, float)):
            out[name] = float(value)
    return out


def choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (e.g. ``vae`` for ``model``)."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint's path; written now for closed-form fits (PCA), which ModelCheckpoint skips."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or trainer.fast_dev_run:
        return None
    if callback.best_model_path:
        return callback.best_model_path
    if trainer.global_step == 0 and callback.dirpath:
        # ModelCheckpoint saves only after an optimizer step; a closed-form fit takes none.
        path = str(Path(callback.dirpath) / f"{callback.filename or 'best'}{callback.FILE_EXTENSION}")
        trainer.save_checkpoint(path)
        return path
    return None


def instantiate_group(cfg: DictConfig, group: str) -> list[Any]:
    """Instantiate every node of a dict group (``callbacks``, ``logger``); ``NAME: null`` nodes are left out."""
    nodes = cfg.get(group) or {}
    return [instantiate_checked(node, f"{group}.{name}") for name, node in nodes.items() if node is not None]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; return the metrics also written to ``<output_dir>/metrics.json``."""
    started = provenance.start()
    console.drop_notices()
    resolved = validate_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    check_run_folder(output_dir, cfg.get("ckpt_path"), "hydra.sweep.dir" if multirun else "hydra.run.dir")
    accelerator = cfg.trainer.get("accelerator")
    check_accelerator(accelerator, "trainer=gpu" if choice("trainer") == "gpu" else f"trainer.accelerator={accelerator}",
                      cfg.trainer.get("precision"))
    matmul = cpu_matmul.select_for(accelerator, cfg.get("cpu_matmul", "auto"))  # GPU runs leave CPU matmuls alone
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate_checked(cfg.data, "data")
    model = instantiate_checked(cfg.model, "model", data_shape=datamodule.data_shape)
    model.run_config = resolved
    if rank_zero_only.rank == 0:  # before the loggers start, so that the header is the run's first line
        n_params = sum(p.numel() for p in model.parameters())
        print(console.header(choice("data") or type(datamodule).__name__, choice("model") or type(model).__name__,
                             n_params, cfg.seed, output_dir), flush=True)
    callbacks = instantiate_group(cfg, "callbacks")
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback when bars are off
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    clock = RunClock(started)  # the time of earlier processes, carried in the checkpoints
    callbacks += [ResumableRNG(), LoaderEpoch(), clock]  # RNG states in checkpoints, the loader's epoch: exact resume
    loggers = instantiate_group(cfg, "logger")
    # DDP: a parameter-free model runs in one process; a local sweep of DDP jobs, or plain ddp where some
    # parameters get no gradient, is refused (genlab/ddp.py)
    trainer = build_trainer(cfg.trainer, model, choice("model") or type(model).__name__, callbacks, loggers, multirun)
    # The training rows come every log_every_n_steps minibatches; Lightning counts loader items, blocks of
    # data.steps_per_block minibatches, so it gets the interval in items (else it takes an epoch of enough
    # minibatches in fewer blocks for one too short to log).
    model.log_every_n_minibatches = trainer.log_every_n_steps
    trainer.log_every_n_steps = math.ceil(trainer.log_every_n_steps / getattr(datamodule, "steps_per_block", 1))
    for logger in loggers:
        logger.log_hyperparams(resolved)

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None:
        check_resumable(ckpt_path, model)  # a short message instead of Lightning's unpickling traceback
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    earlier = dict(clock.earlier)  # restored by fit from ckpt_path's checkpoint, if any
    metrics: dict[str, Any] = {"model": choice("model"), "data": choice("data"), "seed": cfg.seed, "cpu_matmul": matmul}
    metrics.update(scalar_metrics(trainer.callback_metrics))

    best = best_checkpoint(trainer)
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
        metrics.update({k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test/")})

    if trainer.is_global_zero:
        metrics["provenance"] = provenance.finish(started, trainer.strategy.root_device, earlier)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        hints = sync_hints(trainer.loggers)  # before publish_summary, which finishes the W&B runs
        publish_summary(trainer.loggers, metrics)  # W&B: final metrics table, then finish the run
        if (output_dir / "checkpoints" / "last.ckpt").is_file():
            hints.insert(0, f"genlab: continue this run (with a larger trainer.max_epochs): {resume_command(output_dir)}")
        print(console.final_report(metrics, [*hints, f"genlab: run folder {output_dir}"]), flush=True)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The Hydra task: train, then return ``optimized_metric`` for sweepers."""
    try:
        metrics = train(cfg)
    except USER_ERRORS as err:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or multirun:
            raise  # in a sweep the launcher records the failed job and the finished ones stay
        print(f"genlab: error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))  # Interrupted: 128 + the signal number
    value = metrics.get(cfg.get("optimized_metric"))
    return None if value is None or math.isnan(value) else float(value)
