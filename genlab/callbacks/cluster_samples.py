"""Samples drawn from each component of a clustering prior (VaDE): one row per cluster."""

from __future__ import annotations

import lightning as L
import torch

from genlab.callbacks.images import PictureCallback, as_images, grid_figure, publish_figure


class ClusterSamples(PictureCallback):
    """Row c shows ``sample_cluster(c, n_per_cluster)``, for models with ``n_clusters`` and ``sample_cluster``."""

    def __init__(self, dirpath: str, n_per_cluster: int = 10, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_per_cluster = n_per_cluster

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "sample_cluster"):
            return
        rows = [pl_module.sample_cluster(c, self.n_per_cluster) for c in range(pl_module.n_clusters)]
        images = as_images(torch.cat(rows))
        if images is None:
            return
        title = f"samples per cluster (rows: clusters), epoch {trainer.current_epoch}"
        publish_figure(trainer, self.dirpath, "cluster_samples", grid_figure(images, title, self.n_per_cluster))
