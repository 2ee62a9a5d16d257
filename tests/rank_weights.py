"""Test-only callbacks for DDP runs: every rank records what it did (tests/test_ddp.py reads the records)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch


class RankWeights(L.Callback):
    """Writes ``<dirpath>/rank<R>.pt`` at train end (again at test end, with the test rows) holding this rank's

    - ``state_dict`` at train end, ``rank``/``world_size`` and the run folder (``output_dir``) it wrote to;
    - ``first_batch_sum``: the sum of its first training batch (ranks must train on different data);
    - ``next_noise``: 16 standard normals the global torch stream would give next at the first training batch
      (drawn inside ``fork_rng``, so the run draws exactly what it would have);
    - ``rng_at_train_end``: the global CPU RNG state after the last training batch;
    - ``val_rows``/``test_rows``: the images of its last validation epoch and of the test stage;
    - ``activation_dtype``: the dtype of the first Linear layer's output in training (bf16 under bf16-mixed).
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.record: dict[str, Any] = {"first_batch_sum": None, "val_rows": [], "test_rows": []}
        self._hook: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        linear = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Linear))

        def note_dtype(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            if module.training and "activation_dtype" not in self.record:
                self.record["activation_dtype"] = str(output.dtype)

        self._hook = linear.register_forward_hook(note_dtype)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.record["first_batch_sum"] is None:
            self.record["first_batch_sum"] = float(batch[0].double().sum())
            with torch.random.fork_rng(devices=[]):
                self.record["next_noise"] = torch.randn(16)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["val_rows"] = []

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.record["val_rows"].append(batch[0].detach().cpu().flatten(1).clone())

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self.record["test_rows"].append(batch[0].detach().cpu().flatten(1).clone())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
        self.record.update(
            state_dict={k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            rank=trainer.global_rank, world_size=trainer.world_size, output_dir=str(trainer.default_root_dir),
            rng_at_train_end=torch.get_rng_state(),
        )
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {k: torch.cat(v) if k.endswith("_rows") and v else v for k, v in self.record.items()}
        torch.save(record, self.dirpath / f"rank{trainer.global_rank}.pt")


class SignalRank(L.Callback):
    """Sends ``signal`` to this process on global rank ``rank`` only, after its ``after_steps``-th optimizer step:
    a Ctrl+C or a SLURM preemption that reaches the ranks at different batches."""

    def __init__(self, rank: int, after_steps: int, signal_name: str = "SIGINT") -> None:
        self.rank, self.after_steps, self.signum = rank, after_steps, getattr(signal, signal_name)
        self.sent = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= self.after_steps and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
