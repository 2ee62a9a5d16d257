"""Marginal likelihood estimates: log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), in memory-bounded chunks."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from genlab.checks import positive_int


def importance_weighted_log_likelihood(log_weights: Callable[[int], Tensor], k: int, chunk: int) -> Tensor:
    """The k-sample importance-weighted estimate of log p(x) per example, (B,), drawing at most ``chunk`` samples at a time.

    ``log_weights(n)`` must return fresh log-weights of shape (n, B). The chunks' log-sum-exps are merged
    with logaddexp, so the result equals the one-shot log-mean-exp over all k samples.
    """
    positive_int("k", k)
    positive_int("chunk", chunk)
    total: Tensor | None = None
    with torch.inference_mode():
        for start in range(0, k, chunk):
            lse = torch.logsumexp(log_weights(min(chunk, k - start)), dim=0)
            total = lse if total is None else torch.logaddexp(total, lse)
    assert total is not None  # k >= 1 was checked above
    return total - math.log(k)
