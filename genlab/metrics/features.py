"""Sample-quality metrics for images in a classifier's feature space: Fréchet distance, k-NN precision/recall,
and the histogram of predicted classes (how many classes a generator produces, and its entropy)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from genlab.checks import fraction, positive_int
from genlab.metrics.classifier import FeatureClassifier


class FrozenFeatures(nn.Module):
    """The classifier's penultimate features as a frozen module with ``num_features`` (torchmetrics' FID contract).

    Takes images as float tensors in [0, 1], the same as the data (``normalize=True`` in FID); stays in eval
    mode whatever ``train()`` the enclosing module asks for, so the features never change during a run.
    """

    def __init__(self, classifier: FeatureClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.num_features

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.float())


def knn_radii(features: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distance from each row of ``features`` (N, F) to its k-th nearest other row (N,)."""
    radii = []
    for s in range(0, len(features), chunk):
        d = torch.cdist(features[s : s + chunk], features)
        # The k+1-th smallest: the smallest is the point itself at distance 0. topk rather than kthvalue: CUDA's
        # kthvalue has no deterministic implementation, so trainer.deterministic=true would stop the run here.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)


def fraction_inside(points: Tensor, centers: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    """Fraction of ``points`` inside at least one ball ``||p - centers_j|| <= radii_j`` (the k-NN manifold)."""
    inside = []
    for s in range(0, len(points), chunk):
        d = torch.cdist(points[s : s + chunk], centers)
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside).double().mean()


def knn_precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) of ``fake`` against ``real`` features.

    precision = share of fakes inside the real manifold (union of balls around each real point of radius its
    k-th nearest-neighbour distance among reals); recall = share of reals inside the fake manifold.
    """
    real, fake = real.double(), fake.double()
    precision = fraction_inside(fake, real, knn_radii(real, k))
    recall = fraction_inside(real, fake, knn_radii(fake, k))
    return precision.float(), recall.float()


class KNNPrecisionRecall(Metric):
    """Kynkäänniemi et al.'s precision and recall on the features of ``feature``; ``update(imgs, real)`` like FID.

    With ``reset_real_features=False`` the real features survive ``reset()``, so a fixed real set is
    embedded once per run.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, feature: nn.Module, k: int = 3, reset_real_features: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature = feature
        self.k = positive_int("k", k)
        self.reset_real_features = reset_real_features
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, imgs: Tensor, real: bool) -> None:
        feats = self.feature(imgs).double()
        (self.real_features if real else self.fake_features).append(feats)

    def compute(self) -> dict[str, Tensor]:
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        if len(real) <= self.k or len(fake) <= self.k:
            raise RuntimeError(f"precision/recall with k={self.k} needs more than {self.k} real and fake samples")
        precision, recall = knn_precision_recall(real, fake, self.k)
        return {"precision": precision, "recall": recall}

    def reset(self) -> None:
        kept = list(self.real_features) if not self.reset_real_features else None
        super().reset()
        if kept is not None:
            self.real_features = kept


def class_histogram_stats(counts: Tensor, min_share: float) -> dict[str, Tensor]:
    """Number of classes holding at least ``min_share`` of the predictions, and the histogram's entropy (nats)."""
    total = counts.sum().clamp(min=1).double()
    p = counts.double() / total
    entropy = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum()
    return {"classes": (p >= min_share).sum().float(), "class_entropy": entropy.float()}


class ClassHistogram(Metric):
    """Histogram of the classifier's predicted classes on generated images: classes produced and their entropy.

    A class counts as produced when it receives at least ``min_share`` of the samples (default: a fifth of
    its uniform share, 1 / (5 K)); the entropy is at most log K when the classes are balanced.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, classifier: FeatureClassifier, min_share: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier.eval().requires_grad_(False)
        k = classifier.num_classes
        self.min_share = fraction("min_class_share", 1 / (5 * k) if min_share is None else min_share, open_high=False)
        self.add_state("counts", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, imgs: Tensor) -> None:
        with torch.no_grad():
            pred = self.classifier(imgs.float()).argmax(dim=1)
        self.counts += torch.bincount(pred, minlength=self.counts.numel())

    def compute(self) -> dict[str, Tensor]:
        return class_histogram_stats(self.counts, self.min_share)


class ClassifierSampleMetrics:
    """Fréchet distance, precision/recall and class histogram of generated images, all in one classifier's space.

    Keyword arguments (e.g. ``sync_on_compute=False``) go to every torchmetrics ``Metric`` inside.

    ``update_real`` once with held-out data (kept across resets), ``update_fake`` with samples every
    evaluation, then ``compute()`` -> ``{"fd", "precision", "recall", "classes", "class_entropy"}`` and ``reset()``.
    """

    def __init__(
        self, classifier: FeatureClassifier, k: int = 3, min_class_share: float | None = None, **kwargs: Any
    ) -> None:
        features = FrozenFeatures(classifier)
        self.fd = FrechetInceptionDistance(feature=features, normalize=True, reset_real_features=False, **kwargs)
        self.pr = KNNPrecisionRecall(features, k=k, reset_real_features=False, **kwargs)
        self.classes = ClassHistogram(classifier, min_share=min_class_share, **kwargs)
        self.has_real = False

    def metrics(self) -> tuple[Metric, ...]:
        return (self.fd, self.pr, self.classes)

    def to(self, device: torch.device | str) -> ClassifierSampleMetrics:
        for m in self.metrics():
            m.to(device)
        return self

    def update_real(self, imgs: Tensor) -> None:
        self.fd.update(imgs.float(), real=True)
        self.pr.update(imgs, real=True)
        self.has_real = True

    def update_fake(self, imgs: Tensor) -> None:
        self.fd.update(imgs.float(), real=False)
        self.pr.update(imgs, real=False)
        self.classes.update(imgs)

    def compute(self) -> dict[str, Tensor]:
        fd = self.fd.compute().float()
        # Rounding can leave tiny negative FDs between identical distributions; the distance is >= 0.
        out = {"fd": fd.clamp(min=0), **self.pr.compute(), **self.classes.compute()}
        return {k: v.float() for k, v in out.items()}

    def reset(self) -> None:
        for m in self.metrics():
            m.reset()

