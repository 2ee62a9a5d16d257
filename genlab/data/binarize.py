"""Bernoulli binarization of [0,1] data: fixed once (static, evaluation sets) or redrawn per batch (dynamic)."""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.data.seeding import Stream, derive_seed

BINARIZE_MODES = ("none", "dynamic", "static")


def bernoulli_transform(x: Tensor, generator: torch.Generator) -> Tensor:
    """Return a {0,1} sample of ``x`` (probabilities in [0,1]) drawn with ``generator``; the batch hook of dynamic mode."""
    return torch.bernoulli(x, generator=generator)


def binarize_once(x: Tensor, stream: int) -> Tensor:
    """Return a {0,1} sample of CPU tensor ``x`` whose bits depend only on ``stream`` (the same for every run seed)."""
    generator = torch.Generator().manual_seed(derive_seed(Stream.BINARIZE, stream))
    return torch.bernoulli(x, generator=generator)
