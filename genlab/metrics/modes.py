"""Mode coverage of samples from a known isotropic Gaussian mixture (the 2-D ring and grid benchmarks).

Protocol of VEEGAN (Srivastava et al., NeurIPS 2017, §5.1) as re-used by PacGAN (Lin et al., NeurIPS 2018,
§5.1, Table 1; reference code ``fjxmlzn/PacGAN``, ``synthetic_data_experiments/PacGAN/pacgan/extensions.py``,
class ``MetricLogger``): draw 2,500 samples from the generator; assign each to its nearest mixture centre; a
sample is *high quality* when it lies within 3 standard deviations of that centre; a mode is *covered* when it
receives at least ``min_count`` high-quality samples (the reference code counts a mode as soon as it has one,
``min_count=1``); the mode histogram of the high-quality samples is compared with the uniform one by
KL(histogram || uniform) (PacGAN's "reverse KL").
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from genlab.checks import positive, positive_int

# The published protocol's evaluation size (VEEGAN and PacGAN both use 2,500 samples).
PROTOCOL_SAMPLES = 2500


def nearest_center(samples: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the nearest centre of each sample (N,) and the Euclidean distance to it (N,)."""
    dist = torch.cdist(samples.flatten(1).to(centers.dtype), centers)
    d, idx = dist.min(dim=1)
    return idx, d


def mode_histogram_kl(counts: Tensor) -> Tensor:
    """KL(p || uniform) = sum_k p_k log(K p_k) of the histogram ``counts`` (K,), in nats; log K when it is empty.

    An empty histogram (no high-quality sample at all) is scored log K, the value of a histogram with a single
    occupied mode: no better than total collapse.
    """
    k = counts.numel()
    total = counts.sum()
    if total <= 0:
        return torch.tensor(math.log(k), dtype=torch.float32, device=counts.device)
    p = counts.double() / total
    terms = torch.where(p > 0, p * torch.log(p * k), torch.zeros_like(p))
    return terms.sum().float()


class ModeCoverage(Metric):
    """Modes covered, fraction of high-quality samples and KL(mode histogram || uniform) of generated 2-D samples.

    ``compute()`` returns ``{"modes": covered count, "hq": fraction in [0, 1], "mode_kl": nats}``.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(
        self, centers: Tensor, std: float, n_std: float = 3.0, min_count: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        centers = torch.as_tensor(centers, dtype=torch.float32)
        if centers.dim() != 2 or centers.shape[0] < 1:
            raise ValueError(f"centers must be a (K, D) tensor with K >= 1, got shape {tuple(centers.shape)}")
        self.std = float(positive("std", std))
        self.n_std = float(positive("n_std", n_std))
        self.min_count = positive_int("min_count", min_count)
        self.register_buffer("centers", centers, persistent=False)
        k = centers.shape[0]
        self.add_state("counts", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        """Add a batch of generated samples (N, D)."""
        idx, d = nearest_center(samples.detach().float(), self.centers)
        hq = d < self.n_std * self.std
        # Out of place: after a `trainer.validate` (inference mode) the states are inference tensors, which a
        # later fit's validation (no_grad only) may not update in place.
        self.counts = self.counts + torch.bincount(idx[hq], minlength=self.counts.numel())
        self.total = self.total + samples.shape[0]

    def compute(self) -> dict[str, Tensor]:
        counts = self.counts
        total = self.total.clamp(min=1)
        return {
            "modes": (counts >= self.min_count).sum().float(),
            "hq": counts.sum().float() / total.float(),
            "mode_kl": mode_histogram_kl(counts),
        }
