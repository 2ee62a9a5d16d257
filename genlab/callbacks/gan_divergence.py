"""GAN divergence: the discriminator loss stays near 0 while the generator loss grows, for ``patience`` steps.

Reported once as a Python warning naming the step, and as the metric ``train/diverged`` (0 or 1, sticky: 1
once detected), which lands in the CSV/W&B logs and in metrics.json. The run goes on: a diverged GAN can
recover, and the researcher decides.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any

import lightning as L
import torch

from genlab.checks import ConfigError, positive, positive_int

# Losses whose discriminator term is >= 0 and reaches 0 when D separates real from fake perfectly; the
# Wasserstein critic loss is unbounded below, so "near 0" says nothing there.
BOUNDED_LOSSES = ("minimax", "nonsaturating", "hinge", "lsgan")


class GANDivergenceWarning(UserWarning):
    """The discriminator has won: its loss is ~0 and the generator loss keeps growing."""


class DivergenceDetector:
    """Feeds on (d_loss, g_loss) pairs; diverged once the last ``patience`` pairs all have d_loss <= ``d_loss_max``
    and the mean g_loss of the window's second half exceeds that of its first half by more than ``min_g_growth``.
    """

    def __init__(self, patience: int = 200, d_loss_max: float = 0.05, min_g_growth: float = 0.0) -> None:
        self.patience = positive_int("patience", patience)
        if self.patience < 2:  # growth compares two halves of the window
            raise ConfigError(f"patience={patience!r} is not accepted: expected an integer >= 2")
        self.d_loss_max = float(positive("d_loss_max", d_loss_max))
        self.min_g_growth = float(positive("min_g_growth", min_g_growth, allow_zero=True))
        self.window: deque[tuple[float, float]] = deque(maxlen=self.patience)
        self.diverged = False
        self.growth = (0.0, 0.0)  # mean g_loss of the first and second half of the window at detection

    def update(self, d_loss: float, g_loss: float) -> bool:
        """Record one step; True exactly on the step divergence is first detected."""
        self.window.append((float(d_loss), float(g_loss)))
        if self.diverged or len(self.window) < self.patience:
            return False
        if any(d > self.d_loss_max for d, _ in self.window):
            return False
        g = [g for _, g in self.window]
        half = self.patience // 2
        first, second = sum(g[:half]) / half, sum(g[-half:]) / half
        if second - first > self.min_g_growth:
            self.diverged, self.growth = True, (first, second)
            return True
        return False


class GANDivergence(L.Callback):
    """Watches ``train/d_loss`` and ``train/g_loss`` of GANs trained with a bounded loss; warns and logs ``train/diverged``."""

    def __init__(self, patience: int = 200, d_loss_max: float = 0.05, min_g_growth: float = 0.0) -> None:
        super().__init__()
        self.detector = DivergenceDetector(patience, d_loss_max, min_g_growth)

    @staticmethod
    def applies_to(pl_module: L.LightningModule) -> bool:
        """Whether ``pl_module`` is a GAN whose loss is one of :data:`BOUNDED_LOSSES`."""
        return getattr(getattr(pl_module, "loss", None), "name", None) in BOUNDED_LOSSES

    @staticmethod
    def _step_value(metrics: dict[str, Any], key: str) -> float | None:
        # Logged with on_step and on_epoch, a metric appears as "<key>_step"; with on_step only, as "<key>".
        value = metrics.get(f"{key}_step", metrics.get(key))
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return float(value)
        return None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.applies_to(pl_module):
            return
        metrics = trainer.callback_metrics
        d_loss, g_loss = self._step_value(metrics, "train/d_loss"), self._step_value(metrics, "train/g_loss")
        if d_loss is None or g_loss is None:
            return
        if self.detector.update(d_loss, g_loss):
            first, second = self.detector.growth
            warnings.warn(
                f"GAN divergence at global step {trainer.global_step}: the discriminator loss stayed <= "
                f"{self.detector.d_loss_max} for {self.detector.patience} steps while the generator loss grew "
                f"from {first:.3g} to {second:.3g} (window means). Try a lower discriminator learning rate "
                f"(model.optimizer_d.lr), loss=wgan_gp, or spectral norm in the discriminator.",
                GANDivergenceWarning,
                stacklevel=1,
            )
        pl_module.log("train/diverged", float(self.detector.diverged), on_step=False, on_epoch=True,
                      reduce_fx="max", batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.detector.window), "diverged": self.detector.diverged}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.detector.window.extend(tuple(p) for p in state_dict.get("window", []))
        self.detector.diverged = bool(state_dict.get("diverged", False))
