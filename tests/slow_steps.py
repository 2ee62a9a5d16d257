"""A test-only callback that sleeps after every training batch, so a test can kill a run mid-epoch on time."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class SlowSteps(L.Callback):
    """Sleep ``seconds`` after each training batch; it changes no state, only the wall-clock pace."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        time.sleep(self.seconds)
