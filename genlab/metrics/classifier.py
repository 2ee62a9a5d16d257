"""A small conv classifier trained on the run's own dataset: the feature space of the image sample metrics.

Inception weights cannot be downloaded here, so Fréchet distance, precision/recall and the class histogram
of generated images are measured in the penultimate layer of this net, trained for a few hundred steps on the
datamodule's training tensors and saved with the run (``feature_classifier.pt``) so that numbers from
different runs that share the file are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.accelerator import seeded_rng
from genlab.checks import fraction, positive, positive_int
from genlab.nets.conv import as_image_shape


class FeatureClassifier(nn.Module):
    """Two conv+pool blocks, a ReLU feature layer of ``num_features`` units, and a linear class head.

    ``features(x)`` gives the (B, num_features) representation used by the metrics; ``forward(x)`` the logits.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        num_features: int = 128,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.image_shape = as_image_shape("data_shape", self.in_shape)
        self.num_classes = positive_int("num_classes", num_classes)
        self.num_features = positive_int("num_features", num_features)
        self.channels = tuple(int(c) for c in channels)
        c, h, w = self.image_shape
        layers: list[nn.Module] = []
        for out in self.channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, self.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (B, num_features) of images (B, *in_shape)."""
        return self.body(x.reshape(x.shape[0], *self.image_shape).float())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def hparams(self) -> dict[str, Any]:
        return {
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "channels": list(self.channels),
            "num_features": self.num_features,
        }


def train_classifier(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 1e-3,
    max_samples: int | None = 20000,
    holdout: float = 0.1,
    seed: int = 0,
) -> tuple[FeatureClassifier, float]:
    """Fit a :class:`FeatureClassifier` with Adam on cross-entropy; returns it (eval mode) and its held-out accuracy.

    ``steps`` minibatch updates (shuffled epochs, the last one cut short), so the cost does not grow with the
    dataset. Uses at most ``max_samples`` examples (a seeded subset) and keeps ``holdout`` of them for accuracy.
    Runs on the device of ``x``; its own generator keeps the global RNG streams untouched.
    """
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    positive("lr", lr)
    fraction("holdout", holdout)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    if max_samples is not None:
        order = order[: positive_int("max_samples", max_samples)]
    n_hold = max(1, round(holdout * len(order)))
    hold, fit = order[:n_hold].to(x.device), order[n_hold:].to(x.device)
    with seeded_rng(seed, torch.device("cpu")):  # built on the CPU, then moved: no GPU stream is reseeded
        net = FeatureClassifier(x.shape[1:], num_classes)
    net = net.to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    done = 0
    while done < steps:
        perm = fit[torch.randperm(len(fit), generator=g).to(x.device)]
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    net.eval()
    with torch.no_grad():
        correct = sum(
            (net(x[hold[s : s + 1024]]).argmax(1) == y[hold[s : s + 1024]]).sum().item()
            for s in range(0, len(hold), 1024)
        )
    net.requires_grad_(False)
    return net, correct / len(hold)


def save_classifier(net: FeatureClassifier, path: str | Path, accuracy: float) -> Path:
    """Write the net's weights, shape hyper-parameters and held-out accuracy to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"hparams": net.hparams(), "state_dict": state, "accuracy": float(accuracy)}, path)
    return path


def load_classifier(path: str | Path) -> tuple[FeatureClassifier, float]:
    """The frozen classifier saved at ``path`` (eval mode, on CPU) and its recorded held-out accuracy."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    net = FeatureClassifier(**blob["hparams"])
    net.load_state_dict(blob["state_dict"])
    net.eval().requires_grad_(False)
    return net, float(blob["accuracy"])
