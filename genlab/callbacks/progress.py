"""A progress bar that counts minibatches when the training loader serves blocks of them (``data.steps_per_block``),
shows the model's last training row (genlab models write it to the loggers themselves, not through Lightning), and
redraws at most every ``min_interval`` seconds."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from genlab.checks import positive, positive_int
from genlab.data.tensor_loader import Block


class MinibatchProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, whose training bar counts minibatches ("batch") rather than loader items.

    With ``data.steps_per_block=S > 1`` a loader item is a block of S minibatches, and Lightning's bar would count
    blocks. This one reads the loader's ``batches_per_epoch`` and ``position`` instead, so the bar, its total and
    its rate are in minibatches whatever S is; with plain batches it counts as Lightning's bar does. Its metrics
    are Lightning's plus the module's ``progress_bar_values`` (the training values logged with ``prog_bar``).

    The training bar is redrawn when the count crosses a multiple of ``refresh_rate`` minibatches and at least
    ``min_interval`` seconds after its last redraw (tqdm's own default pace), and always at the epoch's last
    minibatch and at an epoch cut short, with one terminal write per redraw. Lightning's bar redraws twice per ``refresh_rate`` batches
    whatever their pace: for a small model stepping ~500 minibatches/s that was ~8% of its training time.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False,
                 min_interval: float = 0.1) -> None:
        super().__init__(positive_int("refresh_rate", refresh_rate, allow_zero=True), process_position, leave)  # 0: off
        self.min_interval = float(positive("min_interval", min_interval, allow_zero=True))
        self._last_draw = -float("inf")  # the run's first crossing is drawn
        self._seen = 0  # minibatches of the epoch done, drawn or not

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict]:
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "progress_bar_values", {})}

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._seen = 0
        loader = trainer.train_dataloader
        if getattr(loader, "steps_per_block", 1) > 1 and self.train_progress_bar is not None:
            self.train_progress_bar.total = loader.batches_per_epoch
            self.train_progress_bar.unit = "batch"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._seen > bar.n:
            bar.n = self._seen  # an epoch cut short (max_steps, a signal) ends on its true count; Lightning redraws
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is None or not self.is_enabled or bar.disable:
            return
        # A block moves the count by several minibatches: draw when it crosses a multiple of refresh_rate.
        n = trainer.train_dataloader.position if isinstance(batch, Block) else batch_idx + 1
        self._seen = n
        last = n == bar.total
        if not (last or n // self.refresh_rate > bar.n // self.refresh_rate):
            return
        now = time.monotonic()
        if not last and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()
