"""Datasets as LightningDataModules serving ``(x float32, y int64)`` batches, and the pieces they are built from."""

from genlab.data.array_module import ArrayDataModule
from genlab.data.binarize import BINARIZE_MODES, bernoulli_transform, binarize_once
from genlab.data.digits import DigitsDataModule
from genlab.data.download import DownloadError, download_file
from genlab.data.idx import DataFileError, read_idx, write_idx
from genlab.data.mnist import DATA_DIR_ENV, MNISTDataModule
from genlab.data.seeding import Stream, derive_seed
from genlab.data.tensor_loader import InMemoryLoader
from genlab.data.toy2d import (
    Toy2DDataModule,
    grid25_centers,
    make_moons,
    make_swissroll,
    ring8_centers,
    sample_mixture,
)

__all__ = [
    "BINARIZE_MODES",
    "DATA_DIR_ENV",
    "ArrayDataModule",
    "DataFileError",
    "DigitsDataModule",
    "DownloadError",
    "InMemoryLoader",
    "MNISTDataModule",
    "Stream",
    "Toy2DDataModule",
    "bernoulli_transform",
    "binarize_once",
    "derive_seed",
    "download_file",
    "grid25_centers",
    "make_moons",
    "make_swissroll",
    "read_idx",
    "ring8_centers",
    "sample_mixture",
    "write_idx",
]
