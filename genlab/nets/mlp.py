"""Fully connected nets with the shape contract shared by every net: ``Net(in_shape, out_shape, ...)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


def make_activation(name: str | None) -> nn.Module:
    """The activation module called ``name``; ``None`` or ``"linear"`` gives the identity."""
    if name is None or name == "linear":
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not known; accepted: {sorted(ACTIVATIONS)} or 'linear'")
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Maps a batch of shape ``(B, *in_shape)`` to ``(B, *out_shape)`` through fully connected layers."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        hidden: Sequence[int] = (256, 256),
        activation: str | None = "relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        widths = [math.prod(self.in_shape), *hidden, math.prod(self.out_shape)]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(w_in, w_out))
            if i < len(widths) - 2:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(w_out))
                layers.append(make_activation(activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1)).view(x.shape[0], *self.out_shape)
