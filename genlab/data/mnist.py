"""MNIST and Fashion-MNIST from their IDX files, found under a data root or downloaded there on request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from genlab.checks import check_arg
from genlab.data.array_module import ArrayDataModule
from genlab.data.download import DownloadError, download_file
from genlab.data.idx import DataFileError, read_idx

DATA_DIR_ENV = "GENLAB_DATA_DIR"

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

IMAGE_SIZE = 28


class MNISTDataModule(ArrayDataModule):
    """MNIST or Fashion-MNIST read from ``root/<dataset>/``: x in [0, 1] of shape (1, 28, 28) (or (784,)), 10 classes.

    ``root`` defaults to ``$GENLAB_DATA_DIR``; other keyword arguments go to :class:`ArrayDataModule`.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        dataset: str = "mnist",
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_arg("dataset", dataset, dataset in MIRRORS, " | ".join(map(repr, MIRRORS)))
        check_arg("download", download, isinstance(download, bool), "true or false")
        if root is None:
            root = os.environ.get(DATA_DIR_ENV)
        self.root = Path(root) if root else None
        self.dataset = dataset
        self.download = download
        self.name = dataset
        self.data_shape = self.output_shape((1, IMAGE_SIZE, IMAGE_SIZE))

    @property
    def folder(self) -> Path:
        """Return the folder holding this dataset's IDX files, ``root/<dataset>``; raise if no root was given."""
        if self.root is None:
            raise FileNotFoundError(
                f"no data root for {self.dataset}: set the environment variable {DATA_DIR_ENV} or pass data.root=<folder>"
            )
        return self.root / self.dataset

    def prepare_data(self) -> None:
        """Download the missing IDX files when ``download`` is set; otherwise do nothing (never touches the network)."""
        if not self.download:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in FILES.values():
            if self._find(name) is None:
                self._fetch(name)

    def _fetch(self, name: str) -> None:
        try:
            download_file([mirror + name + ".gz" for mirror in MIRRORS[self.dataset]], self.folder / f"{name}.gz")
        except DownloadError as err:
            raise DownloadError(
                f"{err}. Without network, copy the four IDX files ({', '.join(FILES.values())}, optionally .gz)"
                f" into {self.folder} by hand"
            ) from err

    def _find(self, name: str) -> Path | None:
        for candidate in (self.folder / name, self.folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def _locate(self, name: str) -> Path:
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {self.root} does not exist: set the environment variable {DATA_DIR_ENV} or pass"
                f" data.root=<folder> to a folder holding {self.dataset}/"
            )
        path = self._find(name)
        if path is None:
            raise FileNotFoundError(
                f"{self.dataset} file {name}[.gz] not found in {self.folder}: pass data.download=true on a machine"
                f" with network, or copy the IDX files there"
            )
        return path

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return MNIST-style arrays: images float32 (N, 1, 28, 28) scaled to [0, 1], labels int64 (N,)."""
        if self.download and self.trainer is None:
            # Outside a Trainer nobody calls prepare_data; inside one it already ran on each node's rank 0.
            self.prepare_data()
        paths = {key: self._locate(name) for key, name in FILES.items()}
        try:
            x_train, y_train = self._read_pair(paths["train_images"], paths["train_labels"])
            x_test, y_test = self._read_pair(paths["test_images"], paths["test_labels"])
        except DataFileError as err:
            raise DataFileError(
                f"{err}. Replace the file with an intact copy of the {self.dataset} IDX files, or delete it and"
                f" run once with data.download=true"
            ) from None
        return x_train, y_train, x_test, y_test

    @staticmethod
    def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
            raise DataFileError(
                f"{images_path}: expected uint8 images of shape N x {IMAGE_SIZE} x {IMAGE_SIZE},"
                f" got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1:
            raise DataFileError(f"{labels_path}: expected labels of shape N, got {labels.shape}")
        if len(images) != len(labels):
            raise DataFileError(
                f"count mismatch: {images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
            )
        x = images[:, None].astype(np.float32) / np.float32(255.0)
        return x, labels.astype(np.int64)
