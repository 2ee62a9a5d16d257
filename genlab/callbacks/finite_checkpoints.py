"""Refuses to write a checkpoint whose weights hold NaN or Inf, so ``last.ckpt`` stays the last good state."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from genlab.models.base import NonFiniteError


def non_finite_entries(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN or an Inf."""
    return [
        name for name, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()
    ]


class FiniteCheckpoints(L.Callback):
    """Raises :class:`NonFiniteError` instead of saving a checkpoint of non-finite weights.

    The base module's guarded step checks the loss and the gradient norm, but a finite gradient times a huge
    learning rate can still overflow a weight, and a forward pass can write NaN into batch-norm statistics.
    Lightning calls ``on_save_checkpoint`` before the file is written, so raising here keeps the previous
    ``last.ckpt`` and ``best.ckpt`` on disk and stops the run with a message naming the step.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = non_finite_entries(checkpoint.get("state_dict", {}))
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"weights are not finite at global step {trainer.global_step}, epoch {trainer.current_epoch} "
                f"({shown}); no checkpoint was written, the last good one is kept. Lower the learning rate "
                f"or add gradient clipping (model.grad_clip_norm)."
            )
