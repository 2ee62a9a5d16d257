"""A Lightning callback that times training steps inside a real ``python -m genlab`` run, start-up excluded.

    python -m genlab ... +callbacks.bench_timer._target_=experiments.bench_timer.StepTimer \
        +callbacks.bench_timer.warmup=20 +callbacks.bench_timer.out=/tmp/steps.json

It counts minibatches as ``trainer.global_step / optimizer_steps_per_batch`` (a GAN takes two optimizer steps
per minibatch), so it counts the same with one minibatch per loader item and with the fast path's blocks of
several minibatches per item. The clock starts at the end of the first loader item by which ``warmup``
minibatches are done and stops at the end of the last one, so it spans whole steps (data fetch, step, logging,
progress bar, every per-batch callback) of the items in between. Validation epochs that fall inside the
window (with their pictures and checkpoints) are timed apart and left out of the steps/s, because the
hand-written loops it is compared with do not validate. It also writes the wall-clock time (``time.time()``)
at which the first item ended, so the harness, which knows when it launched the process, gets the start-up
time to the first optimizer step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class StepTimer(L.Callback):
    """Writes ``{"steps", "seconds", "steps_per_s", "validation_seconds", "first_step_unix"}`` after ``warmup``."""

    def __init__(self, out: str, warmup: int = 20, optimizer_steps_per_batch: int = 1) -> None:
        super().__init__()
        if warmup < 1 or optimizer_steps_per_batch < 1:
            raise ValueError(f"warmup={warmup!r}, optimizer_steps_per_batch={optimizer_steps_per_batch!r}: "
                             "expected at least 1 each")
        self.out = Path(out)
        self.warmup = int(warmup)
        self.per_batch = int(optimizer_steps_per_batch)
        self.start: float | None = None
        self.start_batches = 0
        self.stop: float | None = None
        self.stop_batches = 0
        self.first_step_unix: float | None = None
        self.validation_seconds = 0.0
        self._pending_validation = 0.0  # counted when a later item ends: a validation after the last one is not
        self._validation_start: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the clock then counts the queued kernels (once per item)
        now = time.perf_counter()
        if self.first_step_unix is None:
            self.first_step_unix = time.time()
        batches = trainer.global_step // self.per_batch
        if self.start is None:
            if batches >= self.warmup:
                self.start, self.start_batches = now, batches
            return
        self.stop, self.stop_batches = now, batches
        self.validation_seconds += self._pending_validation
        self._pending_validation = 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is not None and not trainer.sanity_checking:
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self._pending_validation += time.perf_counter() - self._validation_start
            self._validation_start = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is None or self.stop is None:
            raise RuntimeError(f"StepTimer: {trainer.global_step // self.per_batch} minibatches ran, need more "
                               f"than warmup={self.warmup} and one more loader item")
        steps = self.stop_batches - self.start_batches
        seconds = self.stop - self.start - self.validation_seconds
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({
            "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
            "validation_seconds": self.validation_seconds, "first_step_unix": self.first_step_unix,
        }))
