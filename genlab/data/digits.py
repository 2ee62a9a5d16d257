"""scikit-learn's bundled 8x8 handwritten digits: a tiny image dataset that needs no files."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genlab.checks import check_arg
from genlab.data.array_module import ArrayDataModule
from genlab.data.seeding import Stream, derive_seed

# Pixel values in load_digits are counts of set pixels in 4x4 blocks, hence 0..16.
MAX_PIXEL = 16.0


class DigitsDataModule(ArrayDataModule):
    """The 1797 sklearn digits scaled to [0, 1], x of shape (1, 8, 8) (or (64,)); a seeded ``test_size`` share is test.

    Other keyword arguments go to :class:`ArrayDataModule`.
    """

    name = "digits"
    num_classes = 10

    def __init__(
        self,
        test_size: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_arg(
            "test_size", test_size, isinstance(test_size, float) and 0.0 < test_size < 1.0, "a fraction in (0, 1)"
        )
        self.test_size = test_size
        self.data_shape = self.output_shape((1, 8, 8))

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the digits split into train and test by a permutation seeded with ``seed``; x float32 (N, 1, 8, 8)."""
        # imported here: sklearn.datasets costs ~0.5 s of start-up to every run that never reads digits
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / MAX_PIXEL).astype(np.float32)[:, None]
        y = digits.target.astype(np.int64)
        generator = torch.Generator().manual_seed(derive_seed(Stream.SPLIT, self.seed, 1))
        order = torch.randperm(len(x), generator=generator).numpy()
        n_test = round(self.test_size * len(x))
        test, train = order[:n_test], order[n_test:]
        return x[train], y[train], x[test], y[test]
