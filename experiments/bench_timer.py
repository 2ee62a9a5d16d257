"""A Lightning callback that times training steps inside a real ``python -m genlab`` run, start-up excluded.

    python -m genlab ... +callbacks.bench_timer._target_=experiments.bench_timer.StepTimer \
        +callbacks.bench_timer.warmup=20 +callbacks.bench_timer.out=/tmp/steps.json

The clock starts when the ``warmup``-th training batch has finished and stops when the last one has, so it
spans whole steps (data fetch, step, logging, progress bar, every per-batch callback) of the batches in
between. Validation epochs that fall inside the window (with their pictures and checkpoints) are timed apart
and left out of the steps/s, because the hand-written loops it is compared with do not validate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L


class StepTimer(L.Callback):
    """Writes ``{"steps", "seconds", "steps_per_s", "validation_seconds"}`` for the training batches after ``warmup``."""

    def __init__(self, out: str, warmup: int = 20) -> None:
        super().__init__()
        if warmup < 1:
            raise ValueError(f"warmup={warmup!r}: expected at least 1 batch before the clock starts")
        self.out = Path(out)
        self.warmup = int(warmup)
        self.batches = 0
        self.start: float | None = None
        self.stop: float | None = None
        self.validation_seconds = 0.0
        self._pending_validation = 0.0  # counted when a later batch ends: a validation after the last batch is not
        self._validation_start: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batches += 1
        now = time.perf_counter()
        if self.batches == self.warmup:
            self.start = now
        self.stop = now
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
        if self.start is None or self.stop is None or self.batches <= self.warmup:
            raise RuntimeError(f"StepTimer: {self.batches} batches ran, need more than warmup={self.warmup}")
        steps = self.batches - self.warmup
        seconds = self.stop - self.start - self.validation_seconds
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({
            "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
            "validation_seconds": self.validation_seconds,
        }))
