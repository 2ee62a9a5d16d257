"""GAN pictures: a grid of samples from the same fixed noise every epoch, and 2-D samples over the true density
with each mixture mode marked covered or missed (the mode-coverage metric drawn)."""

from __future__ import annotations

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from genlab.callbacks.images import PICTURE_SEED, PictureCallback, as_images, grid_figure, publish_figure  # noqa: E402
from genlab.metrics.modes import PROTOCOL_SAMPLES, ModeCoverage, nearest_center  # noqa: E402


class FixedNoiseGrid(PictureCallback):
    """``generate(z)`` on one fixed batch of noise, every epoch: the same z, so epochs can be compared.

    Drawn for models with ``noise(n, generator)`` and ``generate(z)`` (the GAN) on image data.
    """

    def __init__(self, dirpath: str, n_images: int = 64, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_images = n_images
        self._z: Tensor | None = None

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (hasattr(pl_module, "generate") and hasattr(pl_module, "noise")):
            return
        if self._z is None:
            self._z = pl_module.noise(self.n_images, generator=torch.Generator().manual_seed(PICTURE_SEED)).cpu()
        images = as_images(pl_module.generate(self._z.to(pl_module.device)).float())
        if images is None:
            return
        fig = grid_figure(images, f"fixed-noise samples, epoch {trainer.current_epoch}")
        publish_figure(trainer, self.dirpath, "fixed_noise", fig)


def mixture_log_density(points: np.ndarray, centers: np.ndarray, std: float) -> np.ndarray:
    """log p(x) of the equal-weight isotropic Gaussian mixture at ``points`` (N, 2)."""
    d2 = ((points[:, None, :] - centers[None]) ** 2).sum(-1)
    log_comp = -d2 / (2 * std**2) - np.log(2 * np.pi * std**2)
    m = log_comp.max(1, keepdims=True)
    return (m + np.log(np.exp(log_comp - m).mean(1, keepdims=True)))[:, 0]


def mode_scatter_figure(samples: Tensor, centers: Tensor, std: float, metric: ModeCoverage, title: str) -> Figure:
    """Samples (grey: low quality, blue: high quality) over the true log-density, modes marked covered or missed."""
    values = metric.compute()
    counts = metric.counts.cpu().numpy()
    c = centers.cpu().numpy()
    s = samples.detach().float().cpu()
    _, dist = nearest_center(s, centers.cpu().float())
    hq = (dist < metric.n_std * std).numpy()
    s = s.numpy()
    pad = 1.0
    lo, hi = c.min(0) - pad, c.max(0) + pad
    xs, ys = np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300)
    gx, gy = np.meshgrid(xs, ys)
    logp = mixture_log_density(np.stack([gx.ravel(), gy.ravel()], 1), c, std).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.contourf(gx, gy, np.maximum(logp, logp.max() - 12), levels=12, cmap="Greens", alpha=0.6)
    ax.scatter(s[~hq, 0], s[~hq, 1], s=3, c="0.5", alpha=0.4, label="samples")
    ax.scatter(s[hq, 0], s[hq, 1], s=3, c="tab:blue", alpha=0.6, label=f"high quality (< {metric.n_std:g} std)")
    covered = counts >= metric.min_count
    ax.scatter(c[covered, 0], c[covered, 1], marker="o", s=90, facecolors="none", edgecolors="green", linewidths=2,
               label="mode covered")
    ax.scatter(c[~covered, 0], c[~covered, 1], marker="x", s=90, c="red", linewidths=2, label="mode missed")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.set_title(
        f"{title}: {int(values['modes'])}/{len(c)} modes, {100 * values['hq'].item():.1f}% high quality, "
        f"KL {values['mode_kl'].item():.3f}",
        fontsize=9,
    )
    return fig


class ModeScatter(PictureCallback):
    """On mixture toys (datamodules with ``centers`` and ``std``): ``sample(n)`` over the true density, modes marked."""

    def __init__(self, dirpath: str, n_samples: int = PROTOCOL_SAMPLES, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_samples = n_samples

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = getattr(trainer, "datamodule", None)
        centers = getattr(dm, "centers", None)
        if centers is None or not hasattr(pl_module, "sample"):
            return
        samples = pl_module.sample(self.n_samples).float().cpu().flatten(1)
        if samples.shape[1] != centers.shape[1]:
            return
        metric = ModeCoverage(centers, dm.std, sync_on_compute=False)
        metric.update(samples)
        fig = mode_scatter_figure(samples, centers, dm.std, metric, f"epoch {trainer.current_epoch}")
        publish_figure(trainer, self.dirpath, "modes", fig)
