"""Per-example reconstruction errors, summed over data dimensions: each returns a tensor of shape (B,)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """sum_d (x_d - x_hat_d)^2 per example."""
    return (x - x_hat).pow(2).flatten(1).sum(1)


def bernoulli_nll(x: Tensor, logits: Tensor) -> Tensor:
    """-sum_d [x_d log sigmoid(l_d) + (1 - x_d) log(1 - sigmoid(l_d))] per example, from logits."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
