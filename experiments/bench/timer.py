"""The bench's one step timer: a Lightning callback inside a real ``python -m genlab`` run, start-up excluded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch


class StepTimer(L.Callback):
    """Writes ``{"steps", "seconds", "steps_per_s", "validation_seconds", "first_step"}`` to ``out`` after training.

    Minibatches are ``global_step // optimizer_steps_per_batch``, so a loader item of one minibatch and a block of
    several count alike. ``clock`` runs from the end of the first item by which ``warmup`` minibatches are done to the
    end of the last item, less the validations in between (the hand-written loops do not validate). ``first_step`` is
    the clock at the first item's end (on ``time.time``, the start-up of a process whose launch the caller knows).
    """

    def __init__(self, out: str, warmup: int = 20, optimizer_steps_per_batch: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if warmup < 1 or optimizer_steps_per_batch < 1:
            raise ValueError(f"warmup={warmup!r}, optimizer_steps_per_batch={optimizer_steps_per_batch!r}: "
                             "expected at least 1 each")
        self.out, self.warmup, self.per_batch, self.clock = Path(out), int(warmup), int(optimizer_steps_per_batch), clock
        self.start: tuple[float, int] | None = None
        self.stop: tuple[float, int] | None = None
        self.first_step: float | None = None
        self.validation_seconds = 0.0
        self._pending = 0.0  # a validation counts once a later item ends: one after the last item is outside
        self._validation_start: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the clock then counts the queued kernels (once per item)
        now, batches = self.clock(), trainer.global_step // self.per_batch
        self.first_step = now if self.first_step is None else self.first_step
        if self.start is None:
            self.start = (now, batches) if batches >= self.warmup else None
            return
        self.stop = (now, batches)
        self.validation_seconds, self._pending = self.validation_seconds + self._pending, 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is not None and not trainer.sanity_checking:
            self._validation_start = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self._pending += self.clock() - self._validation_start
            self._validation_start = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is None or self.stop is None:
            raise RuntimeError(f"StepTimer: {trainer.global_step // self.per_batch} minibatches ran, need more than "
                               f"warmup={self.warmup} and one more loader item")
        steps, seconds = self.stop[1] - self.start[1], self.stop[0] - self.start[0] - self.validation_seconds
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
                                        "validation_seconds": self.validation_seconds, "first_step": self.first_step}))
