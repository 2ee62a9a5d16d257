"""A learning curve of test NLL: -log p(x) (importance-weighted, k samples) on a fixed test subset every N epochs."""

from __future__ import annotations

import lightning as L
import torch

from genlab.checks import ConfigError, positive_int

# The estimate draws from its own seeded stream, so the curve never moves the training RNG (resumes stay exact)
# and two epochs' points differ only because the model did.
CURVE_SEED = 4321


class LearningCurve(L.Callback):
    """Logs ``curve/test_nll`` = -(1/n) sum_i log p(x_i), estimated with ``k`` importance samples, over the first
    ``n_images`` test images after every ``every_n_epochs``-th training epoch and the last one.

    Needs a model with ``log_marginal_likelihood(x, k, chunk)`` (the VAE family) and a datamodule with
    ``split_tensors`` (the array datamodules). The points land in csv/metrics.csv with their epoch.
    """

    def __init__(
        self, every_n_epochs: int = 10, n_images: int = 500, k: int = 5000, chunk: int = 500, batch_size: int = 100
    ) -> None:
        self.every_n_epochs = positive_int("callbacks.learning_curve.every_n_epochs", every_n_epochs)
        self.n_images = positive_int("callbacks.learning_curve.n_images", n_images)
        self.k = positive_int("callbacks.learning_curve.k", k)
        self.chunk = positive_int("callbacks.learning_curve.chunk", chunk)
        self.batch_size = positive_int("callbacks.learning_curve.batch_size", batch_size)

    def due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch >= (trainer.max_epochs or -1)

    def test_nll(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """The curve's value now: mean over the subset of -log p(x), nats."""
        datamodule = trainer.datamodule
        if not hasattr(pl_module, "log_marginal_likelihood") or not hasattr(datamodule, "split_tensors"):
            raise ConfigError(
                "callbacks.learning_curve needs a VAE-family model (log_marginal_likelihood) and an array "
                f"datamodule (split_tensors); got {type(pl_module).__name__} and {type(datamodule).__name__}. "
                "Remove it with ~callbacks.learning_curve"
            )
        x = datamodule.split_tensors("test")[0][: self.n_images]
        was_training = pl_module.training
        pl_module.eval()
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(CURVE_SEED)
            total = sum(
                pl_module.log_marginal_likelihood(xb.to(pl_module.device), self.k, self.chunk).double().sum()
                for xb in x.split(self.batch_size)
            )
        pl_module.train(was_training)
        return -total / len(x)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.due(trainer):
            pl_module.log("curve/test_nll", self.test_nll(trainer, pl_module).float(), on_epoch=True)
