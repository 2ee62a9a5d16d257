"""A LightningModule that records the batches it is served: what loader-position tests compare."""

from __future__ import annotations

import lightning as L
import torch


class BatchRecorder(L.LightningModule):
    """Records the samples of every training batch; one trivial parameter keeps the optimizer happy."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch[0].tolist())
        return (self.weight - 1.0) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)
