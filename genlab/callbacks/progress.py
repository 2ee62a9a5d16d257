"""A progress bar that counts minibatches when the training loader serves blocks of them (``data.steps_per_block``)
and shows the model's last training row (genlab models write it to the loggers themselves, not through Lightning)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from genlab.data.tensor_loader import Block


class MinibatchProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, whose training bar counts minibatches ("batch") rather than loader items.

    With ``data.steps_per_block=S > 1`` a loader item is a block of S minibatches, and Lightning's bar would count
    blocks. This one reads the loader's ``batches_per_epoch`` and ``position`` instead, so the bar, its total and
    its rate are in minibatches whatever S is; with plain batches it counts as Lightning's bar does. Its metrics
    are Lightning's plus the module's ``progress_bar_values`` (the training values logged with ``prog_bar``).
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict]:
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "progress_bar_values", {})}

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        loader = trainer.train_dataloader
        if getattr(loader, "steps_per_block", 1) > 1 and self.train_progress_bar is not None:
            self.train_progress_bar.total = loader.batches_per_epoch
            self.train_progress_bar.unit = "batch"

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if not isinstance(batch, Block) or bar is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        n = trainer.train_dataloader.position
        # A block moves the count by several minibatches: refresh when it crosses a multiple of refresh_rate.
        if self.is_enabled and not bar.disable and (n // self.refresh_rate > bar.n // self.refresh_rate
                                                    or n == bar.total):
            bar.n = n
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))
