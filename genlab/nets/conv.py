"""DCGAN-style conv nets with the shared shape contract ``Net(in_shape, out_shape, ...)``.

``ConvEncoder``: image (C, H, W) -> vector (discriminator, AE/VAE encoder): stride-2 4x4 convolutions halve
H and W once per entry of ``channels`` (28 -> 14 -> 7, 8 -> 4 -> 2), then one linear layer.
``ConvDecoder``: vector -> image (generator, AE/VAE decoder): one linear layer to a (channels[0], H/2^n, W/2^n)
map, then stride-2 4x4 transposed convolutions doubling it back; the last one outputs ``out_shape``'s channels.
``hidden`` adds fully connected [linear, norm, activation] layers: after the convolutions of the encoder, before
the projection of the decoder (the InfoGAN MNIST nets' FC 1024 layers). ``init_std`` draws every conv and linear
weight from N(0, init_std^2) with zero biases (DCGAN's initialisation); null keeps PyTorch's.
Outputs are unbounded (logits); the model decides on a squashing function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from genlab.checks import ConfigError, one_of, positive, positive_int
from genlab.nets.mlp import make_activation

NORMS = (None, "none", "batch", "layer", "instance")


def make_norm(kind: str | None, channels: int) -> nn.Module:
    """A 2-D normalisation over ``channels``: batch, layer (one group), instance, or the identity."""
    one_of("norm", kind, NORMS)
    if kind in (None, "none"):
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.GroupNorm(channels, channels)


def make_norm_1d(kind: str | None, features: int) -> nn.Module:
    """The normalisation of a fully connected layer: batch, layer, or the identity (instance has no 1-D form)."""
    one_of("norm", kind, NORMS)
    if kind == "instance":
        raise ConfigError(
            "norm='instance' has no fully connected form: with hidden layers use norm batch, layer or none"
        )
    if kind == "batch":
        return nn.BatchNorm1d(features)
    return nn.LayerNorm(features) if kind == "layer" else nn.Identity()


def hidden_layers(
    key: str, widths: Sequence[int], n_in: int, norm: str | None, activation: str | None, wrap: Callable = lambda m: m
) -> tuple[list[nn.Module], int]:
    """[linear, norm, activation] per entry of ``widths`` from ``n_in`` features; returns the layers and the last width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            wrap(nn.Linear(n_in, positive_int(key, width))),
            make_norm_1d(norm, width),
            make_activation(activation),
        ]
        n_in = int(width)
    return layers, n_in


def normal_init(layer: nn.Module, std: float | None) -> nn.Module:
    """``layer`` with its weight ~ N(0, std^2) and bias 0 (DCGAN's initialisation); None leaves PyTorch's init."""
    if std is not None:
        nn.init.normal_(layer.weight, 0.0, positive("init_std", std))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return layer


def as_image_shape(key: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as (C, H, W); a flat square length n*n is read as (1, n, n) so flattened images also work."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        return (1, side, side)
    raise ConfigError(f"{key}={shape!r} is not accepted by a conv net: expected (C, H, W) or a flat (n*n,)")


def _bottom_size(key: str, hw: tuple[int, int], depth: int) -> tuple[int, int]:
    """H and W after ``depth`` halvings; each halving needs an even size so the decoder can mirror it exactly."""
    h, w = hw
    for _ in range(depth):
        if h % 2 or w % 2 or h < 2 or w < 2:
            raise ConfigError(
                f"{key}: an image of {hw[0]}x{hw[1]} cannot be halved {depth} times (one per entry of channels); "
                f"use fewer channels entries"
            )
        h, w = h // 2, w // 2
    return h, w


class ConvEncoder(nn.Module):
    """Image ``(B, *in_shape)`` -> ``(B, *out_shape)``: [conv 4x4 stride 2, norm, activation] per channel entry, linear.

    ``spectral_norm`` wraps every conv and linear layer (Miyato et al. 2018), a common discriminator choice.
    The first block has no normalisation (DCGAN). ``hidden`` widths add [linear, norm, activation] layers before the
    head (InfoGAN's MNIST discriminator: FC 1024 with batch norm).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        channels: Sequence[int] = (64, 128),
        activation: str | None = "leaky_relu",
        norm: str | None = "batch",
        spectral_norm: bool = False,
        hidden: Sequence[int] = (),
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        c, h, w = as_image_shape("in_shape", self.in_shape)
        self.image_shape = (c, h, w)
        h, w = _bottom_size("in_shape", (h, w), len(channels))
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)

        def wrap(layer: nn.Module) -> nn.Module:
            # Initialised before spectral norm wraps it, so that its power iteration starts from the final weight.
            return sn(normal_init(layer, init_std))

        layers: list[nn.Module] = []
        for i, out in enumerate(channels):
            layers += [
                wrap(nn.Conv2d(c, out, 4, stride=2, padding=1)),
                make_norm(None if i == 0 else norm, out),
                make_activation(activation),
            ]
            c = out
        fc, n_out = hidden_layers("hidden", hidden, c * h * w, norm, activation, wrap)
        self.features = nn.Sequential(*layers, nn.Flatten(), *fc)
        self.head = wrap(nn.Linear(n_out, math.prod(self.out_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(x)).view(x.shape[0], *self.out_shape)


class ConvDecoder(nn.Module):
    """Vector ``(B, *in_shape)`` -> image ``(B, *out_shape)``: linear to a small map, then transposed convs.

    ``channels`` lists the widths from the bottom map upwards (e.g. (128, 64) for 28x28: 7x7x128 -> 14x14x64
    -> 28x28xC); each block is [transposed conv 4x4 stride 2, norm, activation] except the last, which maps to
    the output channels with no norm and no activation. ``hidden`` widths add [linear, norm, activation] layers
    before the projection (InfoGAN's MNIST generator: FC 1024, then FC to 7x7x128).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        channels: Sequence[int] = (128, 64),
        activation: str | None = "relu",
        norm: str | None = "batch",
        hidden: Sequence[int] = (),
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        c_out, h, w = as_image_shape("out_shape", self.out_shape)
        if len(channels) < 1:
            raise ConfigError(f"channels={list(channels)!r} is not accepted: expected at least one width")
        h0, w0 = _bottom_size("out_shape", (h, w), len(channels))
        self.bottom = (int(channels[0]), h0, w0)
        fc, n_in = hidden_layers("hidden", hidden, math.prod(self.in_shape), norm, activation)
        self.project = nn.Sequential(
            *fc,
            nn.Linear(n_in, math.prod(self.bottom)),
            nn.Unflatten(1, self.bottom),
            make_norm(norm, self.bottom[0]),
            make_activation(activation),
        )
        layers: list[nn.Module] = []
        widths = [*channels, c_out]
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1))
            if i < len(widths) - 2:
                layers += [make_norm(norm, w_out), make_activation(activation)]
        self.upsample = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
                normal_init(m, init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.upsample(self.project(z.flatten(1)))
        return x.reshape(z.shape[0], *self.out_shape)
