"""GAN divergence: the discriminator loss stays near 0 while the generator loss grows, for ``patience`` batches.

The losses are read on the minibatches whose training row the GAN writes (every ``trainer.log_every_n_steps``-th,
:attr:`genlab.models.base.GenerativeModule.train_log_step`), so that is the detector's resolution; ``patience``
counts minibatches.

Reported once as a Python warning naming the step, and as the metric ``train/diverged`` (0 or 1, sticky: 1
once detected), which lands in the CSV/W&B logs and in metrics.json. The run goes on: a diverged GAN can
recover, and the researcher decides.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any

import lightning as L

from genlab.checks import ConfigError, positive, positive_int

# Losses whose discriminator term is >= 0 and reaches 0 when D separates real from fake perfectly; the
# Wasserstein critic loss is unbounded below, so "near 0" says nothing there.
BOUNDED_LOSSES = ("minimax", "nonsaturating", "hinge", "lsgan")


class GANDivergenceWarning(UserWarning):
    """The discriminator has won: its loss is ~0 and the generator loss keeps growing."""


class DivergenceDetector:
    """Fed ``(batch, d_loss, g_loss)`` observations, at any cadence; diverged once the discriminator loss has stayed
    <= ``d_loss_max`` over the last ``patience`` batches and, over those batches, the mean generator loss of the
    later half of the observations exceeds that of the earlier half by more than ``min_g_growth``.
    """

    def __init__(self, patience: int = 200, d_loss_max: float = 0.05, min_g_growth: float = 0.0) -> None:
        self.patience = positive_int("patience", patience)
        if self.patience < 2:  # growth compares two halves of the window
            raise ConfigError(f"patience={patience!r} is not accepted: expected an integer >= 2")
        self.d_loss_max = float(positive("d_loss_max", d_loss_max))
        self.min_g_growth = float(positive("min_g_growth", min_g_growth, allow_zero=True))
        self.streak_start: int | None = None  # first batch of the current run of d_loss <= d_loss_max
        self.window: deque[tuple[int, float]] = deque()  # (batch, g_loss) of that run within the last patience batches
        self.diverged = False
        self.growth = (0.0, 0.0)  # mean g_loss of the earlier and the later half of the window at detection

    def update(self, batch: int, d_loss: float, g_loss: float) -> bool:
        """Record the losses observed at ``batch``; True exactly on the observation where divergence is first found."""
        if self.diverged:
            return False
        if d_loss > self.d_loss_max:
            self.streak_start, self.window = None, deque()
            return False
        if self.streak_start is None:
            self.streak_start = batch
        self.window.append((batch, float(g_loss)))
        while self.window[0][0] < batch - self.patience:  # keep the observations of the last patience batches
            self.window.popleft()
        if batch - self.streak_start + 1 < self.patience or len(self.window) < 2:
            return False
        g = [value for _, value in self.window]
        half = len(g) // 2
        earlier, later = sum(g[:half]) / half, sum(g[-half:]) / half
        if later - earlier > self.min_g_growth:
            self.diverged, self.growth = True, (earlier, later)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain data for the checkpoint (``weights_only``-safe)."""
        return {"streak_start": self.streak_start, "window": [list(o) for o in self.window], "diverged": self.diverged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streak_start = state.get("streak_start")
        self.window = deque((int(b), float(g)) for b, g in state.get("window", []))
        self.diverged = bool(state.get("diverged", False))


class GANDivergence(L.Callback):
    """Watches ``train/d_loss`` and ``train/g_loss`` of GANs trained with a bounded loss; warns and logs ``train/diverged``."""

    def __init__(self, patience: int = 200, d_loss_max: float = 0.05, min_g_growth: float = 0.0) -> None:
        super().__init__()
        self.detector = DivergenceDetector(patience, d_loss_max, min_g_growth)
        self.seen_step: int | None = None  # the module's last training row already observed

    @staticmethod
    def applies_to(pl_module: L.LightningModule) -> bool:
        """Whether ``pl_module`` is a GAN whose loss is one of :data:`BOUNDED_LOSSES`."""
        return getattr(getattr(pl_module, "loss", None), "name", None) in BOUNDED_LOSSES

    @staticmethod
    def _step_value(row: dict[str, Any], key: str) -> float | None:
        # Logged with on_step and on_epoch, a metric's row value is "<key>_step"; with on_step only, "<key>".
        value = row.get(f"{key}_step", row.get(key))
        return None if value is None else float(value)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.applies_to(pl_module):
            return
        # The module keeps the values of its last training row; a loader item (one minibatch, or a block of
        # them) holds at most one new row at its end when log_every_n_steps >= steps_per_block.
        step = getattr(pl_module, "train_log_step", None)
        if step is not None and step != self.seen_step:
            self.seen_step = step
            self._observe(trainer, pl_module.train_log_row, step + 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Logged once per epoch, not per batch: the flag is sticky, so the epoch's max is its value now, and a
        # self.log per loader item cost a small GAN ~8% of its training time.
        if self.applies_to(pl_module):
            pl_module.log("train/diverged", float(self.detector.diverged), on_step=False, on_epoch=True,
                          batch_size=1)

    def _observe(self, trainer: L.Trainer, row: dict[str, float], batch: int) -> None:
        d_loss, g_loss = self._step_value(row, "train/d_loss"), self._step_value(row, "train/g_loss")
        if d_loss is None or g_loss is None:
            return
        if self.detector.update(batch, d_loss, g_loss):
            earlier, later = self.detector.growth
            warnings.warn(
                f"GAN divergence at global step {trainer.global_step}: the discriminator loss stayed <= "
                f"{self.detector.d_loss_max} for {self.detector.patience} batches while the generator loss grew "
                f"from {earlier:.3g} to {later:.3g} (means of the observations). Try a lower discriminator learning "
                f"rate (model.optimizer_d.lr), loss=wgan_gp, or spectral norm in the discriminator.",
                GANDivergenceWarning,
                stacklevel=1,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"seen_step": self.seen_step, "detector": self.detector.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seen_step = state_dict.get("seen_step")
        self.detector.load_state_dict(state_dict.get("detector", {}))
