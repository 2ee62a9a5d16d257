"""Active units: dimensions whose encoder mean varies over the data by more than the threshold."""

from __future__ import annotations

import torch

from genlab.metrics.active_units import ActiveUnits


def test_counts_dimensions_with_variance_above_the_threshold_over_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 0.2, 0.05, 0.0, 3.0])  # variances 1, 0.04, 0.0025, 0, 9
    means = torch.randn(4000, 5, generator=gen) * scales + 7.0  # a large offset must not matter
    metric = ActiveUnits(threshold=0.01)
    for batch in means.split(333):
        metric.update(batch)
    assert metric.compute().item() == 3
    assert torch.allclose(metric.variances().float(), means.var(0, unbiased=False), rtol=1e-4, atol=1e-6)
    metric.reset()
    metric.update(torch.zeros(10, 5))
    assert metric.compute().item() == 0
