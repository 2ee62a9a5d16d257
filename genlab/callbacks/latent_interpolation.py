"""Decoded straight lines between the latent codes of validation images: how smooth the latent space is."""

from __future__ import annotations

import lightning as L
import torch

from genlab.callbacks.images import PictureCallback, as_images, grid_figure, publish_figure


class LatentInterpolation(PictureCallback):
    """Rows of ``decode((1 - t) z_a + t z_b)`` for t in [0, 1], z = ``encode(x)``, between pairs of validation images."""

    def __init__(self, dirpath: str, n_pairs: int = 8, n_steps: int = 10, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_pairs = n_pairs
        self.n_steps = n_steps

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (hasattr(pl_module, "encode") and hasattr(pl_module, "decode")):
            return
        x, _ = self.fixed_batch(trainer, 2 * self.n_pairs)
        z = pl_module.encode(x.to(pl_module.device)).flatten(1)
        n_pairs = len(z) // 2
        start, end = z[:n_pairs], z[n_pairs : 2 * n_pairs]
        t = torch.linspace(0.0, 1.0, self.n_steps, device=z.device).view(1, -1, 1)
        path = ((1 - t) * start.unsqueeze(1) + t * end.unsqueeze(1)).reshape(n_pairs * self.n_steps, -1)
        images = as_images(pl_module.decode(path))
        if images is None:
            return
        fig = grid_figure(images, f"latent interpolations (rows: pairs), epoch {trainer.current_epoch}", self.n_steps)
        publish_figure(trainer, self.dirpath, "interpolations", fig)
