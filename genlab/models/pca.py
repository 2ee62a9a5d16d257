"""PCA as a model with the autoencoders' interface, fitted in closed form by an SVD of the training set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from genlab.checks import ConfigError, positive_int
from genlab.losses.reconstruction import squared_error
from genlab.models.base import GenerativeModule


def fit_pca(x: Tensor, n_components: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top principal directions of the rows of ``x``: (mean (D,), components (m, D), explained variance (m,)).

    The components are the right singular vectors of the centred data; the explained variance of
    component i is s_i^2 / (N - 1), as in scikit-learn. Computed in float64 for a 1e-5 match. With at
    least as many rows as dimensions (N >= D, e.g. MNIST's 60000 x 784) they come from the eigenvectors of
    the D x D covariance (X^T X - N mean mean^T) / (N - 1), as scikit-learn's ``covariance_eigh`` solver:
    one pass over X instead of an N x D SVD; in float64 its eigenvalues stay within ~1e-16 lambda_max of
    the SVD's. Otherwise the thin SVD of the centred data is used.
    """
    x64 = x.detach().reshape(x.shape[0], -1).double()
    n, d = x64.shape
    if n < d:
        mean = x64.mean(0)
        _, s, vh = torch.linalg.svd(x64 - mean, full_matrices=False)
        explained = s**2 / (n - 1)
    elif x64.device.type == "cpu":
        # numpy turns a.T @ a into one BLAS syrk (half a GEMM's work; torch.mm has no such path), and its mean
        # and eigh are ~2x torch's on CPU at this size.
        arr = x64.numpy()
        mean_np = arr.mean(0)
        evals, evecs = np.linalg.eigh((arr.T @ arr - n * np.outer(mean_np, mean_np)) / (n - 1))  # ascending
        mean, explained, vh = (torch.from_numpy(a.copy()) for a in (mean_np, evals[::-1], evecs[:, ::-1].T))
        explained = explained.clamp_min(0.0)
    else:
        mean = x64.mean(0)
        evals, evecs = torch.linalg.eigh((x64.T @ x64 - n * torch.outer(mean, mean)) / (n - 1))  # ascending
        explained, vh = evals.flip(0).clamp_min(0.0), evecs.flip(1).T
    # Fix the sign of each component (largest |loading| positive) so fits are reproducible.
    signs = torch.sign(vh[torch.arange(vh.shape[0]), vh.abs().argmax(1)])
    vh = vh * signs[:, None]
    return mean, vh[:n_components], explained[:n_components]


class PCA(GenerativeModule):
    """Linear encoder e(x) = V (x - mean), decoder d(z) = V^T z + mean, V the top-m principal directions."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int = 2,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__(data_shape, optimizer=None, monitor=monitor, monitor_mode=monitor_mode)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        if latent_dim > self.data_dim:
            raise ConfigError(
                f"latent_dim={latent_dim} is not accepted: expected at most the data dimension {self.data_dim}"
            )
        self.register_buffer("mean", torch.zeros(self.data_dim, dtype=torch.float64))
        self.register_buffer("components", torch.zeros(latent_dim, self.data_dim, dtype=torch.float64))
        self.register_buffer("explained_variance", torch.zeros(latent_dim, dtype=torch.float64))
        self.register_buffer("total_variance", torch.zeros((), dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, x: Tensor) -> PCA:
        """Fit the principal directions of the training examples ``x`` (N, *data_shape) in closed form."""
        mean, components, explained = fit_pca(x.to(self.mean.device), self.latent_dim)
        self.mean.copy_(mean)
        self.components.copy_(components)
        self.explained_variance.copy_(explained)
        self.total_variance.copy_(x.reshape(x.shape[0], -1).double().var(0, unbiased=True).sum())
        self.fitted.fill_(True)
        return self

    @property
    def explained_variance_ratio(self) -> Tensor:
        return self.explained_variance / self.total_variance

    def encode(self, x: Tensor) -> Tensor:
        return ((x.flatten(1).double() - self.mean) @ self.components.T).to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        x = z.double() @ self.components + self.mean
        return x.to(z.dtype).view(z.shape[0], *self.data_shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # The closed-form fit replaces gradient steps: fit once at the start, run one pass, stop.
    def on_train_start(self) -> None:
        if not bool(self.fitted):
            x, _ = self.trainer.datamodule.train_tensors()
            self.fit(x)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        x, _ = batch
        self.log_stage("train", {"loss": squared_error(x, self.reconstruct(x)).mean()}, batch_size=x.shape[0])

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.trainer.should_stop = True

    def evaluate(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        recon = squared_error(x, self.reconstruct(x)).mean()
        return {"loss": recon, "recon": recon, "explained_variance": self.explained_variance_ratio.sum().float()}
