"""Picture callbacks: reconstructions, latent scatter, sample grids — saved as PNG and logged to every logger."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from genlab.accelerator import seeded_rng  # noqa: E402

# Pictures use their own seed so that drawing them never moves the training RNG streams (CPU and GPU).
PICTURE_SEED = 1234


def as_images(x: Tensor) -> Tensor | None:
    """``x`` as (N, C, H, W) images in [0, 1], or None when it is not image-like (e.g. 2-D points)."""
    x = x.detach().float().cpu()
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1] or side < 4:
            return None
        x = x.view(-1, 1, side, side)
    if x.dim() != 4:
        return None
    return x.clamp(0, 1)


def image_grid(x: Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) into one (rows*(H+pad)+pad, cols*(W+pad)+pad[, C]) array."""
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i].numpy()
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def publish_figure(trainer: L.Trainer, dirpath: str | Path, key: str, fig: Figure) -> Path:
    """Save ``fig`` as ``<dirpath>/<key>_epoch<NNN>.png`` and log it as an image to W&B and TensorBoard."""
    dirpath = Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    path = dirpath / f"{key}_epoch{trainer.current_epoch:03d}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"images/{key}", images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(f"images/{key}", fig, global_step=trainer.global_step)
    plt.close(fig)
    return path


def grid_figure(x: Tensor, title: str, nrow: int | None = None) -> Figure:
    """A figure showing the image grid of ``x`` (N, C, H, W) in [0, 1]."""
    grid = image_grid(x, nrow=nrow)
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return fig


class PictureCallback(L.Callback):
    """Runs the subclass's ``draw(trainer, pl_module)`` on rank zero at the end of every ``every_n_epochs``-th
    validation epoch and of the last epoch (``trainer.max_epochs``), so a run always ends with its pictures."""

    def __init__(self, dirpath: str, every_n_epochs: int = 1) -> None:
        super().__init__()
        self.dirpath = dirpath
        self.every_n_epochs = every_n_epochs
        self._batch: tuple[Tensor, Tensor] | None = None

    def fixed_batch(self, trainer: L.Trainer, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` validation examples, gathered once and reused every epoch."""
        split_tensors = getattr(trainer.datamodule, "split_tensors", None)
        if self._batch is None and split_tensors is not None:
            # The array datamodules' CPU tensors: a new val loader would copy the whole split to the GPU again,
            # and under DDP serve rank 0's shard rather than the split's first images.
            x, y = split_tensors("val")
            self._batch = (x[:n], y[:n])
        if self._batch is None:
            xs, ys, count = [], [], 0
            for x, y in trainer.datamodule.val_dataloader():
                xs.append(x)
                ys.append(y)
                count += x.shape[0]
                if count >= n:
                    break
            self._batch = (torch.cat(xs)[:n], torch.cat(ys)[:n])
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if trainer.current_epoch % self.every_n_epochs and not last:
            return
        was_training = pl_module.training
        pl_module.eval()
        # seeded_rng forks the module's CUDA generator too: the VAE family draws its training noise there
        with seeded_rng(PICTURE_SEED, pl_module.device), torch.no_grad():
            self.draw(trainer, pl_module)
        pl_module.train(was_training)


class ReconstructionGrid(PictureCallback):
    """Rows of inputs over their reconstructions, for models with ``reconstruct(x)`` on image data."""

    def __init__(self, dirpath: str, n_images: int = 32, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_images = n_images

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "reconstruct"):
            return
        x, _ = self.fixed_batch(trainer, self.n_images)
        x = x.to(pl_module.device)
        originals, recons = as_images(x), as_images(pl_module.reconstruct(x).reshape(x.shape))
        if originals is None or recons is None:
            return
        nrow = min(8, len(originals))
        rows = []
        for start in range(0, len(originals), nrow):
            rows += [originals[start : start + nrow], recons[start : start + nrow]]
        fig = grid_figure(torch.cat(rows), "inputs (odd rows) and reconstructions (even rows)", nrow=nrow)
        publish_figure(trainer, self.dirpath, "reconstructions", fig)


class LatentScatter(PictureCallback):
    """Validation codes ``encode(x)`` coloured by label; codes above 2-D are shown on their top-2 PCs."""

    def __init__(self, dirpath: str, n_points: int = 2000, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_points = n_points

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "encode"):
            return
        x, y = self.fixed_batch(trainer, self.n_points)
        z = pl_module.encode(x.to(pl_module.device)).float().cpu().flatten(1)
        title = "latent codes"
        if z.shape[1] > 2:
            title = f"latent codes ({z.shape[1]}-D, top 2 principal components)"
            z = z - z.mean(0)
            _, _, v = torch.linalg.svd(z, full_matrices=False)
            z = z @ v[:2].T
        elif z.shape[1] == 1:
            z = torch.cat([z, torch.zeros_like(z)], 1)
        fig, ax = plt.subplots(figsize=(6, 5))
        points = ax.scatter(z[:, 0], z[:, 1], c=y.cpu().numpy(), cmap="tab10", s=4)
        fig.colorbar(points, ax=ax, label="label")
        ax.set_title(title)
        publish_figure(trainer, self.dirpath, "latent", fig)


class SampleGrid(PictureCallback):
    """Samples ``sample(n)`` from models that generate: an image grid, or a scatter over the data for 2-D."""

    def __init__(self, dirpath: str, n_images: int = 64, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_images = n_images

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "sample"):
            return
        samples = pl_module.sample(self.n_images).float().cpu()
        images = as_images(samples)
        if images is not None:
            fig = grid_figure(images, f"samples, epoch {trainer.current_epoch}")
        elif samples.flatten(1).shape[1] == 2:
            x, _ = self.fixed_batch(trainer, 2000)
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.scatter(x[:, 0].cpu(), x[:, 1].cpu(), s=2, c="lightgray", label="data")
            ax.scatter(samples[:, 0], samples[:, 1], s=4, c="tab:red", label="samples")
            ax.legend(loc="upper right")
            ax.set_title(f"samples, epoch {trainer.current_epoch}")
        else:
            return
        publish_figure(trainer, self.dirpath, "samples", fig)
