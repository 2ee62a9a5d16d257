"""Unsupervised clustering scores: accuracy under the best cluster-to-label matching (Hungarian), NMI and ARI."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def cluster_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """max over one-to-one maps m of (1/N) sum_i 1[m(pred_i) = true_i], solved with linear_sum_assignment."""
    pred, true = np.asarray(pred, dtype=np.int64), np.asarray(true, dtype=np.int64)
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(f"cluster_accuracy needs two equal, non-empty label arrays; got {pred.shape} and {true.shape}")
    _, pred_idx = np.unique(pred, return_inverse=True)
    _, true_idx = np.unique(true, return_inverse=True)
    counts = np.zeros((pred_idx.max() + 1, true_idx.max() + 1), dtype=np.int64)
    np.add.at(counts, (pred_idx, true_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / pred.size)


def clustering_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``acc`` (Hungarian-matched accuracy), ``nmi`` and ``ari`` (scikit-learn) of cluster ids against labels."""
    return {
        "acc": cluster_accuracy(pred, true),
        "nmi": float(normalized_mutual_info_score(true, pred)),
        "ari": float(adjusted_rand_score(true, pred)),
    }


class ClusteringScores(Metric):
    """Gathers (cluster id, label) pairs over an epoch; ``compute()`` gives ``{"acc", "nmi", "ari"}`` as tensors."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.preds.append(pred.detach().flatten().long())
        self.targets.append(target.detach().flatten().long())

    def compute(self) -> dict[str, Tensor]:
        pred = dim_zero_cat(self.preds).cpu().numpy()
        true = dim_zero_cat(self.targets).cpu().numpy()
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in clustering_scores(pred, true).items()}
