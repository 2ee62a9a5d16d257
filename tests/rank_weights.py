"""A test-only callback: every DDP rank saves its weights and a fingerprint of its first training batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch


class RankWeights(L.Callback):
    """At train end, write ``<dirpath>/rank<R>.pt``: this rank's ``state_dict`` and its first batch's sum."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.first_batch_sum: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.first_batch_sum is None:
            self.first_batch_sum = float(batch[0].double().sum())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state_dict": state, "first_batch_sum": self.first_batch_sum},
                   self.dirpath / f"rank{trainer.global_rank}.pt")
