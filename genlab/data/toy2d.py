"""Two-dimensional toy distributions: the ring and grid Gaussian mixtures of the mode-collapse benchmarks, moons, swiss roll."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab.checks import check_arg
from genlab.data.array_module import ArrayDataModule, is_int
from genlab.data.seeding import Stream, derive_seed

KINDS = ("ring8", "grid25", "moons", "swissroll")

# Defaults of the VEEGAN / PacGAN mode-collapse protocol, and noise levels that keep moons/roll visibly structured.
DEFAULT_NOISE = {"ring8": 0.02, "grid25": 0.05, "moons": 0.05, "swissroll": 0.5}
# Ring radius / grid spacing of the mixtures: VEEGAN's (radius 2; coordinates {-4, -2, 0, 2, 4}).
MIXTURE_SCALE = {"ring8": 2.0, "grid25": 2.0}
NUM_CLASSES = {"ring8": 8, "grid25": 25, "moons": 2, "swissroll": 1}

# sklearn's roll spans about +-14 with per-axis std near 7; dividing by 7 brings it to about unit scale.
SWISSROLL_SCALE = 7.0


def ring8_centers(radius: float = 2.0) -> Tensor:
    """Return the (8, 2) centres equally spaced on a circle of ``radius``, the first at angle 0."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid25_centers(spacing: float = 2.0) -> Tensor:
    """Return the (25, 2) centres of the 5x5 grid with coordinates in {-2, -1, 0, 1, 2} * ``spacing``, row-major."""
    axis = (torch.arange(5, dtype=torch.float32) - 2) * spacing
    return torch.cartesian_prod(axis, axis)


def sample_mixture(centers: Tensor, std: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return ``n`` points of the equal-weight isotropic Gaussian mixture (float32 (n, 2)) and their components (int64)."""
    component = torch.randint(len(centers), (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator)
    return centers.float()[component] + std * noise, component


def _sklearn_state(generator: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


def make_moons(n: int, noise: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return ``n`` points of sklearn's two moons (float32 (n, 2)) and which moon each lies on (int64)."""
    from sklearn import datasets as sk_datasets  # here: ~0.5 s of start-up for runs on other data

    x, y = sk_datasets.make_moons(n, noise=noise, random_state=_sklearn_state(generator))
    return torch.from_numpy(x).float(), torch.from_numpy(y).long()


def make_swissroll(n: int, noise: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return ``n`` points (float32 (n, 2)): the (x, z) plane of sklearn's swiss roll scaled to about unit scale, and 0s."""
    from sklearn import datasets as sk_datasets

    x, _ = sk_datasets.make_swiss_roll(n, noise=noise, random_state=_sklearn_state(generator))
    return torch.from_numpy(x[:, [0, 2]] / SWISSROLL_SCALE).float(), torch.zeros(n, dtype=torch.long)


class Toy2DDataModule(ArrayDataModule):
    """Samples of a 2-D toy distribution drawn from ``seed``; y is the generating component (mixtures) or moon.

    ``noise`` is the component std for ring8/grid25 (default 0.02 / 0.05) and sklearn's noise for moons/swissroll
    (default 0.05 / 0.5). ``scale`` is the ring's radius or the grid's spacing (default 2, the VEEGAN toys; the
    PacGAN ring has radius 1); it applies to the mixtures only. Other keyword arguments go to
    :class:`ArrayDataModule`.
    """

    data_shape = (2,)

    def __init__(
        self,
        kind: str = "ring8",
        n_train: int = 20000,
        n_val: int = 2000,
        n_test: int = 2000,
        noise: float | None = None,
        scale: float | None = None,
        **kwargs: Any,
    ) -> None:
        check_arg("kind", kind, kind in KINDS, " | ".join(map(repr, KINDS)))
        for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            check_arg(key, value, is_int(value) and value >= 1, "a positive int")
        binarize = kwargs.get("binarize", "none")
        check_arg("binarize", binarize, binarize == "none", "'none' (toy 2-D data is real-valued)")
        check_arg("val_size", kwargs.get("val_size"), "val_size" not in kwargs, "unset (toy 2-D data uses n_val)")
        check_arg("noise", noise, noise is None or (isinstance(noise, (int, float)) and noise >= 0), "null or >= 0")
        if kind in MIXTURE_SCALE:
            ok = scale is None or (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0)
            check_arg("scale", scale, ok, "null or a number > 0 (ring radius / grid spacing)")
        else:
            check_arg("scale", scale, scale is None, f"null (kind={kind!r} has no ring radius or grid spacing)")
        super().__init__(val_size=int(n_val), **kwargs)
        self.kind = kind
        self.name = f"toy2d-{kind}"
        self.n_train, self.n_val, self.n_test = int(n_train), int(n_val), int(n_test)
        self.noise = float(DEFAULT_NOISE[kind] if noise is None else noise)
        self.num_classes = NUM_CLASSES[kind]
        centers = {"ring8": ring8_centers, "grid25": grid25_centers}.get(kind)
        self.scale = float(MIXTURE_SCALE[kind] if scale is None else scale) if centers is not None else None
        self.centers: Tensor | None = centers(self.scale) if centers is not None else None
        self.std: float | None = self.noise if centers is not None else None

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return ``n`` fresh points of this distribution (float32 (n, 2)) with their labels (int64)."""
        if self.centers is not None and self.std is not None:
            return sample_mixture(self.centers, self.std, n, generator)
        if self.kind == "moons":
            return make_moons(n, self.noise, generator)
        return make_swissroll(n, self.noise, generator)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``n_train + n_val`` fitting points and ``n_test`` test points, independent streams of ``seed``."""
        fit = self.sample(self.n_train + self.n_val, self._generator(0))
        test = self.sample(self.n_test, self._generator(1))
        return fit[0].numpy(), fit[1].numpy(), test[0].numpy(), test[1].numpy()

    def _generator(self, part: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(Stream.SYNTHESIZE, self.seed, part))
