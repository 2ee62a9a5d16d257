"""The deterministic autoencoder: x -> e(x) = z -> d(z), trained to minimise a reconstruction error."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from genlab.checks import one_of, positive_int
from genlab.losses.reconstruction import bernoulli_nll, squared_error
from genlab.models.base import GenerativeModule, OptimizerFactory

NetFactory = Callable[..., nn.Module]
RECONSTRUCTION = ("mse", "bce")


class Autoencoder(GenerativeModule):
    """Encoder and decoder nets from config; ``reconstruction=mse`` (sum of squares) or ``bce`` (Bernoulli, logits)."""

    def __init__(
        self,
        data_shape: Sequence[int],
        encoder: NetFactory,
        decoder: NetFactory,
        optimizer: OptimizerFactory,
        latent_dim: int = 2,
        reconstruction: str = "mse",
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        grad_clip_norm: float | None = None,
    ) -> None:
        super().__init__(data_shape, optimizer, monitor, monitor_mode, grad_clip_norm)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.reconstruction = one_of("reconstruction", reconstruction, RECONSTRUCTION)
        self.encoder = encoder(in_shape=self.data_shape, out_shape=(latent_dim,))
        self.decoder = decoder(in_shape=(latent_dim,), out_shape=self.data_shape)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        out = self.decoder(z)
        return out.sigmoid() if self.reconstruction == "bce" else out

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """Per-example error of d(e(x)) against x: squared error or Bernoulli NLL, summed over dims."""
        out = self.decoder(self.encoder(x))
        return bernoulli_nll(x, out) if self.reconstruction == "bce" else squared_error(x, out)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        x, _ = batch
        loss = self.reconstruction_error(x).mean()
        self.optimize(self.optimizers(), loss)
        self.log_stage("train", {"loss": loss}, batch_size=x.shape[0], on_step=True, on_epoch=True, prog_bar=True)

    def evaluate(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        recon = self.reconstruction_error(x).mean()
        return {"loss": recon, "recon": recon}
