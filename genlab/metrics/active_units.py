"""Active units (Burda et al., 2016): latent dimension u is active when Cov_x(E_q[z_u | x]) > threshold."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from genlab.checks import positive


def count_active_units(means: Tensor, threshold: float = 0.01) -> Tensor:
    """Number of dims u with Var_n means[n, u] > threshold (population variance over the N rows of (N, J))."""
    return (means.detach().double().var(0, correction=0) > threshold).sum().float()


class ActiveUnits(Metric):
    """Counts the latent dimensions whose encoder mean E_q[z_u|x] varies over the data by more than ``threshold``.

    ``update(mean)`` takes encoder means (B, J); the variance is accumulated as float64 sums of the
    mean and its square so it can be synced across processes and merged over any number of batches.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = positive("active_threshold", threshold)
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor([], dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.tensor([], dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, mean: Tensor) -> None:
        mean = mean.detach().flatten(1).to(torch.float64)
        if self.total.numel() == 0:
            self.total = torch.zeros(mean.shape[1], dtype=torch.float64, device=mean.device)
            self.total_sq = torch.zeros_like(self.total)
        self.count += mean.shape[0]
        self.total += mean.sum(0)
        self.total_sq += mean.pow(2).sum(0)

    def variances(self) -> Tensor:
        """The per-dimension variance of the encoder mean over everything seen (population variance)."""
        mu = self.total / self.count
        return (self.total_sq / self.count - mu.pow(2)).clamp_min(0.0)

    def compute(self) -> Tensor:
        return (self.variances() > self.threshold).sum().to(torch.float32)
